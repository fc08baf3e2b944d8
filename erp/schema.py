"""The projection's SQL tables (SQLAlchemy Core; SQLite, PostgreSQL, MariaDB).

Each state table of erp.rules has its key columns, a few indexed columns the lists filter
on, and `body`: the row as canonical JSON. Key columns compare byte-wise on MariaDB too
(`utf8mb4_bin`), so `SN-1` and `sn-1` are two records everywhere, as in the rules.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Engine
from sqlalchemy.types import TypeEngine

from erp import rules

__all__ = ["metadata", "STATE", "KEY_COLUMNS", "INDEXED", "actions",
           "cursor", "pending", "create_all"]

metadata = MetaData()


def key_string(length: int) -> TypeEngine:
    """A key column: byte-wise comparison on every backend."""
    return String(length).with_variant(
        mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb")


def long_text() -> TypeEngine:
    """JSON bodies: MariaDB's TEXT stops at 64 KiB."""
    return Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")


KEY_COLUMNS: dict[str, tuple[tuple[str, int | None], ...]] = {
    "agents": (("public_key", 66),),
    "record_types": (("name", rules.MAX_NAME),),
    "records": (("record_id", rules.MAX_NAME),),
    "properties": (("record_id", rules.MAX_NAME), ("name", rules.MAX_PROPERTY_NAME)),
    "property_values": (("record_id", rules.MAX_NAME), ("name", rules.MAX_PROPERTY_NAME),
                        ("seq", None)),
    "proposals": (("record_id", rules.MAX_NAME), ("receiving_agent", 66), ("role", 16)),
    "partnerships": (("agent_a", 66), ("agent_b", 66)),
    "partner_requests": (("partner_request_id", 32),),
    "action_requests": (("abs_action_id", 32),),
}
"""Key columns of each state table, in the order of erp.rules' key tuples (None: integer)."""

INDEXED: dict[str, tuple[str, ...]] = {
    "agents": ("address",),
    "partner_requests": ("issuing_agent", "receiving_agent", "status", "timestamp"),
    "action_requests": ("issuing_agent", "receiving_agent", "status", "timestamp"),
}
"""Body fields copied into their own columns for lookups and lists."""


def _indexed_column(name: str) -> Column:
    if name == "timestamp":
        return Column(name, BigInteger, nullable=False)
    return Column(name, key_string(64 if name == "address" else 66), nullable=False)


def _state_table(name: str) -> Table:
    columns = [
        Column(col, key_string(length) if length else BigInteger, primary_key=True,
               autoincrement=False)
        for col, length in KEY_COLUMNS[name]
    ]
    columns += [_indexed_column(c) for c in INDEXED.get(name, ())]
    table = Table(f"erp_{name}", metadata, *columns, Column("body", long_text(), nullable=False))
    if name in ("partner_requests", "action_requests"):
        Index(f"ix_erp_{name}_received", table.c.receiving_agent, table.c.timestamp)
        Index(f"ix_erp_{name}_issued", table.c.issuing_agent, table.c.timestamp)
    if name == "agents":
        Index("ix_erp_agents_address", table.c.address)
    return table


STATE: dict[str, Table] = {name: _state_table(name) for name in rules.TABLES}

actions = Table(
    "erp_actions", metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False,
           doc="position of the item in the stream (chain order), 0-based"),
    Column("txid", String(64), nullable=False),
    Column("vout", Integer, nullable=False),
    Column("height", BigInteger, nullable=False),
    Column("blockindex", Integer, nullable=False),
    Column("blocktime", BigInteger, nullable=False),
    Column("publisher", String(64), nullable=False),
    Column("kind", String(32)),
    Column("signer", String(66)),
    Column("object_key", key_string(200)),
    Column("status", String(8), nullable=False, doc="applied | rejected"),
    Column("reason", Text),
    Column("body", long_text(), doc="the action as canonical JSON; NULL when unreadable"),
    UniqueConstraint("txid", "vout", name="uq_erp_actions_item"),
)
Index("ix_erp_actions_object", actions.c.object_key, actions.c.seq)

cursor = Table(
    "erp_cursor", metadata,
    Column("stream", String(64), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("height", BigInteger, nullable=False),
    Column("blockindex", Integer, nullable=False),
    Column("vout", Integer, nullable=False),
)

pending = Table(
    "erp_pending", metadata,
    Column("txid", String(64), primary_key=True),
    Column("created", BigInteger, nullable=False),
    Column("publisher", String(64), nullable=False),
    Column("body", long_text(), nullable=False),
)


def create_all(engine: Engine) -> None:
    """Create the tables that do not exist yet (idempotent)."""
    metadata.create_all(engine)
