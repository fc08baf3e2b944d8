"""Throw-away application databases on SQLite, PostgreSQL and MariaDB for tests and benchmarks.

Each call makes a uniquely named database on the real server and drops it afterwards. When
the environment variable CI is "true" an unreachable server is a failure, not a skip: the
trigger subsystem must be proven on all three in CI.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

__all__ = ["KINDS", "ServerUnavailable", "PG_URL", "MARIADB_URL", "temporary_database", "in_ci"]

KINDS = ("sqlite", "postgres", "mariadb")
PG_URL = os.environ.get("CHAINMILL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get("CHAINMILL_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


class ServerUnavailable(Exception):
    """The database server cannot be reached."""


def in_ci() -> bool:
    """Whether tests run in CI, where every database server must be there."""
    return os.environ.get("CI", "").lower() == "true"


def _admin(url: str) -> Engine:
    engine = create_engine(url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any driver error means "not reachable"
        engine.dispose()
        raise ServerUnavailable(f"{engine.url.render_as_string(hide_password=True)}: {exc}") from exc
    return engine


@contextlib.contextmanager
def temporary_database(kind: str, directory: Path | None = None, **engine_kw: object) -> Iterator[Engine]:
    """Yield an engine on a fresh, empty database of `kind`; drop it afterwards."""
    name = f"cm_trg_{uuid.uuid4().hex[:12]}"
    if kind == "sqlite":
        if directory is None:
            raise ValueError("sqlite needs a directory")
        engine = create_engine(f"sqlite:///{directory / (name + '.db')}", **engine_kw)
        try:
            yield engine
        finally:
            engine.dispose()
        return
    if kind == "postgres":
        admin = _admin(PG_URL)
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = admin.url.set(database=name)
    elif kind == "mariadb":
        admin = _admin(MARIADB_URL)
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        url = admin.url.set(database=name)
    else:
        raise ValueError(f"unknown database kind {kind!r}")
    engine = create_engine(url, **engine_kw)
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            if kind == "postgres":
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()
