"""The `cnc_data` table (spec 3.4) and the narrow store the default plug-in writes through.

One row per distinct message. QoS 1 means "at least once": the broker may deliver a message
again after a reconnect, so the unique index on (cnc_id, timestamp, part_program,
payload_hash) turns a redelivery into a no-op instead of a second row. The payload hash is
SHA-256 of the canonical payload text, because `json_data` itself (TEXT) cannot be indexed
on MariaDB.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator

from sqlalchemy import (
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    select,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from mes.collector.message import MAX_ID_CHARS, CncMessage

__all__ = ["metadata", "cnc_data", "CncStore", "open_store"]

log = logging.getLogger(__name__)

metadata = MetaData()

cnc_data = Table(
    "cnc_data",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("cnc_id", String(MAX_ID_CHARS), nullable=False),
    Column("part_program", String(MAX_ID_CHARS), nullable=False),
    Column("timestamp", Integer, nullable=False),
    Column("json_data", Text, nullable=False),
    Column("payload_hash", String(64), nullable=False),
    Index("uq_cnc_data_message", "cnc_id", "timestamp", "part_program", "payload_hash",
          unique=True),
    Index("ix_cnc_data_machine_time", "cnc_id", "timestamp"),
)


def _insert_ignoring_duplicates(dialect: str) -> object:
    """INSERT that skips a row already present under the unique index. On SQLite and
    PostgreSQL it returns the new id (no row for a skipped one): psycopg reports rowcount -1
    for such an insert, so the returned rows are what is counted."""
    if dialect == "sqlite":
        return sqlite.insert(cnc_data).on_conflict_do_nothing().returning(cnc_data.c.id)
    if dialect == "postgresql":
        return postgresql.insert(cnc_data).on_conflict_do_nothing().returning(cnc_data.c.id)
    if dialect in ("mysql", "mariadb"):
        return mysql.insert(cnc_data).prefix_with("IGNORE")
    raise ValueError(f"cnc_data is not supported on {dialect}")


def _row(message: CncMessage) -> dict:
    return {
        "cnc_id": message.cnc_id,
        "part_program": message.part_program,
        "timestamp": message.timestamp,
        "json_data": message.json_data,
        "payload_hash": message.payload_hash,
    }


class CncStore:
    """Writes validated messages into `cnc_data`; a redelivered message is stored once.

    Outside `deferred()` each `store()` is its own transaction. Inside it, rows are kept and
    written by `flush()` in one transaction: one commit (one fsync) per batch instead of per
    message, which is what lets SQLite keep up with a plant's machines.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = _insert_ignoring_duplicates(engine.dialect.name)
        self._pending: list[dict] | None = None

    def create_tables(self) -> None:
        """Create `cnc_data` and its indexes when missing."""
        metadata.create_all(self.engine)

    def _write(self, conn: Connection, rows: Iterable[dict]) -> int:
        new = 0
        for row in rows:
            result = conn.execute(self._insert, row)
            new += len(result.all()) if result.returns_rows else max(result.rowcount, 0)
        return new

    def store(self, message: CncMessage) -> bool:
        """Insert one row; False when the same message was stored before (a redelivery).
        While deferred, the row is queued and True returned; `flush()` counts duplicates."""
        if self._pending is not None:
            self._pending.append(_row(message))
            return True
        with self.engine.begin() as conn:
            new = self._write(conn, [_row(message)])
        if not new:
            log.debug("duplicate message from %s at %d ignored", message.cnc_id,
                      message.timestamp)
        return bool(new)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Queue the rows of `store()` calls until `flush()` (single-threaded use)."""
        self._pending = []
        try:
            yield
        finally:
            if self._pending:
                log.debug("%d queued rows dropped unflushed", len(self._pending))
            self._pending = None

    def flush(self) -> tuple[int, int]:
        """Write the queued rows in one transaction; (new rows, duplicates). On a database
        error the rows stay queued and the error propagates, so the caller can retry."""
        rows = self._pending or []
        if not rows:
            return 0, 0
        with self.engine.begin() as conn:
            new = self._write(conn, rows)
        self._pending = [] if self._pending is not None else None
        return new, len(rows) - new

    def store_many(self, messages: Iterable[CncMessage]) -> int:
        """Store several messages in one transaction; the number of new rows."""
        with self.engine.begin() as conn:
            return self._write(conn, [_row(m) for m in messages])

    def rows(self, cnc_id: str | None = None) -> list[dict]:
        """All rows (of one machine), oldest first: for reports and tests."""
        query = select(cnc_data).order_by(cnc_data.c.timestamp, cnc_data.c.id)
        if cnc_id is not None:
            query = query.where(cnc_data.c.cnc_id == cnc_id)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]


def open_store(url: str) -> CncStore:
    """A store on the SQLAlchemy URL `url`, tables created."""
    engine = create_engine(url, pool_pre_ping=True)
    store = CncStore(engine)
    store.create_tables()
    return store
