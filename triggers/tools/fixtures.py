"""Pytest fixtures for trigger tests: `db_kind` over the three databases, fresh engines.

Import the fixtures into a test module (`from triggers.tools.fixtures import db_kind, app_db`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from triggers.tools.databases import ServerUnavailable, in_ci, temporary_database

__all__ = ["db_kind", "app_db", "second_db", "open_database"]

DB_PARAMS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("mariadb", id="mariadb", marks=pytest.mark.mariadb),
]


@contextlib.contextmanager
def open_database(kind: str, directory: Path) -> Iterator[Engine]:
    """A fresh database; skip (outside CI) or fail (in CI) when the server is unreachable."""
    try:
        manager = temporary_database(kind, directory)
        engine = manager.__enter__()
    except ServerUnavailable as exc:
        message = f"{kind} server unreachable: {exc}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield engine
    finally:
        manager.__exit__(None, None, None)


@pytest.fixture(params=DB_PARAMS)
def db_kind(request: pytest.FixtureRequest) -> str:
    """"sqlite", "postgres" or "mariadb"."""
    return str(request.param)


@pytest.fixture
def app_db(db_kind: str, tmp_path: Path) -> Iterator[Engine]:
    """A fresh application database of `db_kind`."""
    with open_database(db_kind, tmp_path) as engine:
        yield engine


@pytest.fixture
def second_db(db_kind: str, tmp_path: Path) -> Iterator[Engine]:
    """Another fresh database of the same kind (the partner's)."""
    with open_database(db_kind, tmp_path) as engine:
        yield engine
