"""The MES token store (spec 3.2, the reference's ``KafkaToken``), secrets encrypted at rest.

``token`` and ``password`` are stored as Fernet tokens (AES-128-CBC + HMAC-SHA256 from
`cryptography`), so a copy of the database alone does not let anyone speak to the bridge as
the MES or as a unit's reporter. The key comes from the environment (``CHAINMILL_MES_KEY``) or
from a key file that only its owner can read (mode 0600; a wider mode is refused).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from config.errors import ChainmillError
from config.paths import write_private_file
from mes import schema

__all__ = ["KEY_ENV", "MASTER", "REPORTER", "TokenError", "Token", "load_key", "create_key_file",
           "TokenStore"]

log = logging.getLogger(__name__)

KEY_ENV = "CHAINMILL_MES_KEY"
MASTER = "Master"
REPORTER = "Reporter"
_MAX_FIELD = 200
_MAX_TOKEN = 300


class TokenError(ChainmillError):
    """No usable key, a secret that cannot be decrypted, or a value the store refuses."""


@dataclass(frozen=True, slots=True)
class Token:
    """One row of the token store, secrets in clear (never logged: see __repr__)."""

    tipo_instancia: str
    token: str | None
    public_key: str | None = None
    password: str | None = None
    record_id: str | None = None
    topic: str | None = None
    name: str | None = None
    unit_id: int | None = None

    def __repr__(self) -> str:
        return (f"Token({self.tipo_instancia!r}, public_key={self.public_key!r}, "
                f"record_id={self.record_id!r}, unit_id={self.unit_id!r})")


def load_key(key_file: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None) -> bytes:
    """The Fernet key: ``CHAINMILL_MES_KEY`` if set, else the 0600 ``key_file``."""
    env = os.environ if env is None else env
    text = env.get(KEY_ENV)
    if text:
        key = text.strip().encode()
        where = KEY_ENV
    else:
        if key_file is None:
            raise TokenError(f"no MES key: set {KEY_ENV} or give a key file")
        path = Path(key_file)
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise TokenError(f"key file {path} does not exist (chainmill mes init creates it)") from None
        if stat.S_IMODE(mode) & 0o077:
            raise TokenError(f"key file {path} is readable by others (mode "
                             f"{stat.S_IMODE(mode):o}); chmod 600 it")
        key = path.read_bytes().strip()
        where = str(path)
    try:
        Fernet(key)
    except ValueError:
        raise TokenError(f"{where} does not hold a Fernet key (32 url-safe base64 bytes)") from None
    return key


def create_key_file(path: str | os.PathLike[str]) -> bool:
    """Write a new key to ``path`` (mode 0600) unless it exists; True when written."""
    target = Path(path)
    if target.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    write_private_file(target, Fernet.generate_key().decode() + "\n")
    return True


def _field(value: object, what: str, limit: int = _MAX_FIELD) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise TokenError(f"{what} must be a string of at most {limit} characters")
    return value


class TokenStore:
    """Read and write ``mes_token`` rows, encrypting ``token`` and ``password``."""

    def __init__(self, engine: Engine, key: bytes) -> None:
        self.engine = engine
        self._fernet = Fernet(key)

    def _seal(self, secret: str | None) -> str | None:
        return None if secret is None else self._fernet.encrypt(secret.encode()).decode()

    def _open(self, sealed: str | None) -> str | None:
        if sealed is None:
            return None
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise TokenError("a stored secret does not decrypt with this key "
                             "(another deployment's key, or the row was altered)") from None

    def _row(self, row: Mapping[str, object]) -> Token:
        return Token(tipo_instancia=row["tipo_instancia"], token=self._open(row["token"]),
                     public_key=row["public_key"], password=self._open(row["password"]),
                     record_id=row["record_id"], topic=row["topic"], name=row["name"],
                     unit_id=row["unit_id"])

    def _values(self, entry: Token) -> dict[str, object]:
        return {
            "tipo_instancia": _field(entry.tipo_instancia, "tipoInstancia"),
            "token": self._seal(_field(entry.token, "token", _MAX_TOKEN)),
            "public_key": _field(entry.public_key, "publicKey"),
            "password": self._seal(_field(entry.password, "password")),
            "record_id": _field(entry.record_id, "record_id"),
            "topic": _field(entry.topic, "topic"),
            "name": _field(entry.name, "name"),
            "unit_id": entry.unit_id,
        }

    def master(self, conn: Connection | None = None) -> Token | None:
        """The MES's own identity, if stored."""
        query = select(schema.token).where(schema.token.c.tipo_instancia == MASTER)
        with self._conn(conn) as c:
            row = c.execute(query.order_by(schema.token.c.id)).mappings().first()
        return None if row is None else self._row(row)

    def set_master(self, token: str, public_key: str | None = None, name: str | None = None) -> None:
        """Store (or replace) the Master token."""
        values = self._values(Token(MASTER, token, public_key=public_key, name=name))
        with self.engine.begin() as c:
            c.execute(schema.token.delete().where(schema.token.c.tipo_instancia == MASTER))
            c.execute(schema.token.insert().values(**values))
        log.info("master token stored (public key %s)", public_key)

    def reporter(self, unit_id: int, conn: Connection | None = None) -> Token | None:
        """The reporter identity of ``unit_id``, if stored."""
        query = select(schema.token).where(schema.token.c.unit_id == unit_id)
        with self._conn(conn) as c:
            row = c.execute(query).mappings().first()
        return None if row is None else self._row(row)

    def add_reporter(self, unit_id: int, token: str, public_key: str, record_id: str) -> Token:
        """Store the reporter the bridge returned for ``unit_id`` (replacing an older one)."""
        entry = Token(REPORTER, token, public_key=public_key, record_id=record_id,
                      name=f"unit {unit_id}", unit_id=unit_id)
        values = self._values(entry)
        with self.engine.begin() as c:
            c.execute(schema.token.delete().where(schema.token.c.unit_id == unit_id))
            c.execute(schema.token.insert().values(**values))
        log.info("reporter %s stored for unit %d (record %s)", public_key, unit_id, record_id)
        return entry

    def list(self) -> list[Token]:
        """Every row, secrets decrypted (callers show only the non-secret fields)."""
        with self.engine.connect() as c:
            rows = c.execute(select(schema.token).order_by(schema.token.c.id)).mappings().all()
        return [self._row(r) for r in rows]

    def _conn(self, conn: Connection | None) -> Any:
        return nullcontext(conn) if conn is not None else self.engine.connect()
