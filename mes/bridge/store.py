"""The bridge's own tables (spec 3.2 token store, 3.5.4 response store), in its database.

Tokens are bearer secrets of 256 random bits; only their SHA-256 is stored, so a copy of the
database gives nobody a usable token (a slow password hash buys nothing against 256 random
bits, and a token is checked on every request). A token is shown once, when it is issued.

- ``mesbridge_tokens``: one row per live token: its hash, kind (``Master`` for the MES's own
  identity, ``Reporter`` for one production unit) and, for a reporter, the record it reports on.
- ``mesbridge_reporters``: per record, the reporter identity the bridge made for it (a wallet
  address of the node and its public key) and the properties it was authorised for. Written
  before the first transaction of `ensure_reporter`, so a bridge killed half-way resumes
  with the same identity instead of making a second one.
- ``mesbridge_responses``: the response to each (client_id, interaction_id) for the dedup
  window; a row is ``started`` before the request is executed and ``done`` with the response
  bytes after, so a re-delivered request is answered from here and never executed twice.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from erp.schema import key_string

__all__ = ["MASTER", "REPORTER", "DEDUP_WINDOW", "Token", "Reporter", "BridgeStore",
           "hash_token", "new_token", "open_engine"]

MASTER = "Master"
REPORTER = "Reporter"
DEDUP_WINDOW = 600.0
"""Seconds a response is kept per (client_id, interaction_id) (spec 3.5.4 item 5)."""

metadata = MetaData()

tokens = Table(
    "mesbridge_tokens", metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("name", String(200), nullable=False),
    Column("record_id", key_string(128), nullable=True),
    Column("created", Float, nullable=False),
)

reporters = Table(
    "mesbridge_reporters", metadata,
    Column("record_id", key_string(128), primary_key=True),
    Column("address", String(64), nullable=False),
    Column("public_key", String(66), nullable=False),
    Column("properties", Text, nullable=False),
    Column("created", Float, nullable=False),
)

responses = Table(
    "mesbridge_responses", metadata,
    Column("client_id", key_string(64), primary_key=True),
    Column("interaction_id", BigInteger, primary_key=True, autoincrement=False),
    Column("state", String(8), nullable=False),
    Column("request_hash", String(64), nullable=False, server_default=""),
    Column("response", LargeBinary().with_variant(LargeBinary(2**24), "mysql", "mariadb"),
           nullable=True),
    Column("created", Float, nullable=False),
)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL: one fsync per commit instead of the rollback journal's several; FULL keeps that
    # fsync, since a response row lost to a power cut could let a request run twice.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def open_engine(url: str) -> Engine:
    """The engine of the bridge's database (SQLite in WAL mode; any SQLAlchemy URL)."""
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh bearer token (43 URL-safe characters)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Token:
    """What a presented token stands for."""

    kind: str
    name: str
    record_id: str | None = None


@dataclass(frozen=True, slots=True)
class Reporter:
    """The reporter identity of one record."""

    record_id: str
    address: str
    public_key: str
    properties: tuple[str, ...]


class BridgeStore:
    """Token, reporter and response rows in one SQLAlchemy database."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time,
                 window: float = DEDUP_WINDOW) -> None:
        self.engine = engine
        self.clock = clock
        self.window = window

    def create(self) -> None:
        """Create the tables that do not exist yet (idempotent)."""
        metadata.create_all(self.engine)

    # -- tokens ---------------------------------------------------------------------------

    def issue_master(self, name: str) -> str:
        """A new Master token for the MES called ``name``; shown only now."""
        token = new_token()
        with self.engine.begin() as conn:
            conn.execute(insert(tokens).values(token_hash=hash_token(token), kind=MASTER,
                                               name=name[:200], created=self.clock()))
        return token

    def issue_reporter(self, record_id: str) -> str:
        """A new Reporter token for ``record_id``; earlier tokens of that record stop working."""
        token = new_token()
        with self.engine.begin() as conn:
            conn.execute(delete(tokens).where(tokens.c.kind == REPORTER,
                                              tokens.c.record_id == record_id))
            conn.execute(insert(tokens).values(token_hash=hash_token(token), kind=REPORTER,
                                               name=f"reporter {record_id}"[:200],
                                               record_id=record_id, created=self.clock()))
        return token

    def lookup(self, token: str) -> Token | None:
        """What ``token`` stands for, or None for an unknown one."""
        with self.engine.connect() as conn:
            row = conn.execute(select(tokens.c.kind, tokens.c.name, tokens.c.record_id)
                               .where(tokens.c.token_hash == hash_token(token))).first()
        return None if row is None else Token(row.kind, row.name, row.record_id)

    # -- reporters ------------------------------------------------------------------------

    def reporter(self, record_id: str) -> Reporter | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(reporters).where(reporters.c.record_id == record_id)).first()
        if row is None:
            return None
        return Reporter(row.record_id, row.address, row.public_key,
                        tuple(json.loads(row.properties)))

    def save_reporter(self, reporter: Reporter) -> None:
        """Insert or update the reporter of a record."""
        values = {"address": reporter.address, "public_key": reporter.public_key,
                  "properties": json.dumps(list(reporter.properties))}
        with self.engine.begin() as conn:
            done = conn.execute(update(reporters).where(
                reporters.c.record_id == reporter.record_id).values(**values))
            if done.rowcount == 0:
                conn.execute(insert(reporters).values(record_id=reporter.record_id,
                                                      created=self.clock(), **values))

    # -- responses ------------------------------------------------------------------------

    def begin(self, client_id: str, interaction_id: int,
              request_hash: str = "") -> tuple[str, bytes | None]:
        """Claim (client_id, interaction_id) for execution.

        ``("new", None)``: not seen in the window, now ``started``; execute it.
        ``("done", response)``: answered already; send that response again.
        ``("started", None)``: an earlier delivery began executing and did not finish (the
        bridge was killed); execute it again with care for what may already be done.
        ``("reused", None)``: the pair was claimed in the window by a request with another
        `request_hash` (topic, token and body): neither executed nor answered from the store.
        """
        now = self.clock()
        key = (responses.c.client_id == client_id) & (responses.c.interaction_id == interaction_id)
        with self.engine.begin() as conn:
            row = conn.execute(select(responses.c.state, responses.c.response, responses.c.created,
                                      responses.c.request_hash).where(key)).first()
            if row is not None and row.created >= now - self.window:
                if row.request_hash != request_hash:
                    return "reused", None
                return ("done", bytes(row.response)) if row.state == "done" else ("started", None)
            if row is not None:
                conn.execute(delete(responses).where(key))
            try:
                conn.execute(insert(responses).values(client_id=client_id,
                                                      interaction_id=interaction_id,
                                                      state="started", created=now,
                                                      request_hash=request_hash))
            except IntegrityError:  # pragma: no cover - one bridge per database
                return "started", None
        return "new", None

    def finish(self, client_id: str, interaction_id: int, response: bytes) -> None:
        """Store the response of a claimed request."""
        with self.engine.begin() as conn:
            conn.execute(update(responses).where(
                (responses.c.client_id == client_id)
                & (responses.c.interaction_id == interaction_id)).values(
                state="done", response=response))

    def purge(self) -> int:
        """Drop responses older than the window; how many."""
        with self.engine.begin() as conn:
            return conn.execute(delete(responses).where(
                responses.c.created < self.clock() - self.window)).rowcount
