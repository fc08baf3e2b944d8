"""The `cnc_data` table (spec 3.4) and the narrow store the default plug-in writes through.

One row per distinct message. QoS 1 means "at least once": the broker may deliver a message
again after a reconnect, so the unique index on (cnc_id, timestamp, part_program,
payload_hash) turns a redelivery into a no-op instead of a second row. The payload hash is
SHA-256 of the canonical payload text, because `json_data` itself (TEXT) cannot be indexed
on MariaDB.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

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
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

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


class CncStore:
    """Writes validated messages into `cnc_data`; a redelivered message is stored once."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create_tables(self) -> None:
        """Create `cnc_data` and its indexes when missing."""
        metadata.create_all(self.engine)

    def store(self, message: CncMessage) -> bool:
        """Insert one row; False when the same message was stored before (a redelivery)."""
        row = {
            "cnc_id": message.cnc_id,
            "part_program": message.part_program,
            "timestamp": message.timestamp,
            "json_data": message.json_data,
            "payload_hash": message.payload_hash,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(cnc_data.insert().values(**row))
        except IntegrityError:
            log.debug("duplicate message from %s at %d ignored", message.cnc_id, message.timestamp)
            return False
        return True

    def store_many(self, messages: Iterable[CncMessage]) -> int:
        """Store several messages; the number of new rows."""
        return sum(1 for m in messages if self.store(m))

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
