"""Tables of the sharing service, in the MES database next to `cnc_data`.

`sharing_outbox` is the exactly-once record: an observation is captured into it (with its
readers decided and the `cnc_data` cursor advanced in the same transaction), then moved
through PREPARED (envelope and wrapped keys stored, about to be published) -> SENT (txid
known, access entries pending) -> PUBLISHED. After a crash, a PREPARED row is looked up on
the stream by its key before anything is published again.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.engine import Engine

__all__ = ["metadata", "systems", "shares", "cursors", "outbox", "downsample", "create_tables",
           "PENDING", "PREPARED", "SENT", "PUBLISHED"]

PENDING, PREPARED, SENT, PUBLISHED = "PENDING", "PREPARED", "SENT", "PUBLISHED"

metadata = MetaData()

systems = Table(
    "sharing_system", metadata,
    Column("name", String(32), primary_key=True),
    Column("owner_address", String(64), nullable=False),
    Column("description", String(200), nullable=False, default=""),
)

shares = Table(
    "sharing_share", metadata,
    Column("share_id", Integer, primary_key=True, autoincrement=True),
    Column("system", String(32), ForeignKey("sharing_system.name"), nullable=False),
    Column("partner", String(64), nullable=False),
    Column("filter", String(1000), nullable=False, default=""),
    Column("every_seconds", Integer, nullable=False, default=0),
    Column("active", Boolean, nullable=False, default=True),
)

cursors = Table(
    "sharing_cursor", metadata,
    Column("system", String(32), primary_key=True),
    Column("last_cnc_data_id", Integer, nullable=False),
)

outbox = Table(
    "sharing_outbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("obs_id", String(64), nullable=False, unique=True),
    Column("system", String(32), nullable=False, index=True),
    Column("observation", Text, nullable=False),
    Column("readers", Text, nullable=False),
    Column("status", String(10), nullable=False, index=True),
    Column("envelope", Text),
    Column("access", Text),
    Column("txid", String(64)),
)

downsample = Table(
    "sharing_downsample", metadata,
    Column("share_id", Integer, primary_key=True),
    Column("datastream", String(200), primary_key=True),
    Column("last_time", Integer, nullable=False),
)


def create_tables(engine: Engine) -> None:
    """Create the sharing tables (and `cnc_data`, which they read) when missing."""
    from mes.collector.store import metadata as collector_metadata

    collector_metadata.create_all(engine)
    metadata.create_all(engine)
