"""Shared test fixtures: free loopback ports and the external database services.

The SQL services (PostgreSQL, MariaDB) are real servers on this machine. In CI (``CI=true``)
a test that needs one fails when it is unreachable, so a broken CI setup cannot pass as a row
of skips; elsewhere such a test is skipped with the reason.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

# -- free ports ------------------------------------------------------------------------------

_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` now (the kernel's choice for port 0).

    Ports are not handed out twice in one test session, so two nodes started by one test
    never get the same port even when the kernel would reuse a just-released one.
    """
    with _ports_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("no free port found")


@pytest.fixture(scope="session")
def free_port_factory():
    """The `free_port` function, for fixtures and harnesses that allocate ports."""
    return free_port


# -- external services -----------------------------------------------------------------------


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def service_unavailable(name: str, reason: str) -> None:
    """Fail (in CI) or skip (elsewhere) a test whose external service is unreachable."""
    if in_ci():
        pytest.fail(f"{name} is required in CI but unreachable: {reason}", pytrace=False)
    pytest.skip(f"{name} not reachable: {reason}")


@dataclass(frozen=True)
class Database:
    """A freshly created, uniquely named database on a real server."""

    name: str
    url: str
    """SQLAlchemy URL (driver included) for --db-url and for direct checks."""


def _unique_db_name() -> str:
    return f"chainmill_test_{os.getpid()}_{secrets.token_hex(4)}"


PG_HOST = os.environ.get("CHAINMILL_TEST_PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("CHAINMILL_TEST_PGPORT", "5432"))
PG_USER = os.environ.get("CHAINMILL_TEST_PGUSER", "postgres")
MARIADB_HOST = os.environ.get("CHAINMILL_TEST_MARIADBHOST", "127.0.0.1")
MARIADB_PORT = int(os.environ.get("CHAINMILL_TEST_MARIADBPORT", "3306"))
MARIADB_USER = os.environ.get("CHAINMILL_TEST_MARIADBUSER", "root")


@pytest.fixture
def postgres_db() -> Iterator[Database]:
    """A new PostgreSQL database (user postgres, trust auth), dropped after the test."""
    try:
        import psycopg
    except ImportError as e:
        service_unavailable("PostgreSQL", f"psycopg is not installed ({e})")
    conninfo = f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname=postgres"
    try:
        admin = psycopg.connect(conninfo, autocommit=True, connect_timeout=5)
    except psycopg.Error as e:
        service_unavailable("PostgreSQL", f"{PG_HOST}:{PG_PORT}: {e}")
    name = _unique_db_name()
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        yield Database(name, f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}")
    finally:
        # FORCE: a node killed by a failing test may have left a connection behind.
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def mariadb_db() -> Iterator[Database]:
    """A new MariaDB database (user root, no password), dropped after the test."""
    try:
        import pymysql
    except ImportError as e:
        service_unavailable("MariaDB", f"PyMySQL is not installed ({e})")
    def connect():
        return pymysql.connect(host=MARIADB_HOST, port=MARIADB_PORT, user=MARIADB_USER,
                               password="", connect_timeout=5, autocommit=True)

    try:
        admin = connect()
    except pymysql.Error as e:
        service_unavailable("MariaDB", f"{MARIADB_HOST}:{MARIADB_PORT}: {e}")
    name = _unique_db_name()
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    finally:
        admin.close()
    try:
        yield Database(name, f"mysql+pymysql://{MARIADB_USER}@{MARIADB_HOST}:{MARIADB_PORT}/"
                             f"{name}?charset=utf8mb4")
    finally:
        admin = connect()  # a fresh one: the server may have closed an idle connection
        try:
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        finally:
            admin.close()
