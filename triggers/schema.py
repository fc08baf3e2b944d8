"""The trigger subsystem's own tables (spec 1.2, 1.4, 1.10), as SQLAlchemy Core metadata.

Created in the application database by `chainmill triggers init`. Configuration tables keep
the spec's names and columns; the working tables (outbox, inbox, applied events, receiver
cursor, key sequences, instance identity) carry the `blockchain_` prefix so that all of them
are refused as root tables and as targets of received documents.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Engine

__all__ = [
    "metadata",
    "chain",
    "stream",
    "node",
    "trigger",
    "related_table",
    "outbox",
    "inbox",
    "applied_event",
    "receiver_cursor",
    "row_version",
    "key_sequence",
    "instance",
    "OWN_TABLES",
    "DISTRIBUTION_TYPES",
    "SYSTEM_STREAMS",
    "create_all",
]

metadata = MetaData()

NAME = 64  # table, column, stream and chain names
ADDRESS = 64  # node addresses (Base58, ~34 chars; room for longer version prefixes)
TXID = 64
EVENT = 96  # "<origin>-<sequence>"
PATH = 512

DISTRIBUTION_TYPES = ("all nodes", "party in record", "database table")
SYSTEM_STREAMS = ("pubkeys", "access")

chain = Table(
    "blockchain_chain",
    metadata,
    Column("chain_id", String(NAME), primary_key=True, doc="chain name, as on the node"),
    Column("chain_desc", String(255), nullable=False),
    Column("rpc_host", String(255), nullable=False),
    Column("rpc_port", Integer, nullable=False),
    Column("cipher_method", String(32), nullable=False, default="aes-256-cbc"),
    Column("public_key", String(PATH), nullable=False, doc="path of this instance's PEM public key"),
    Column("private_key", String(PATH), nullable=False, doc="path of the PEM private key"),
    Column("parent_node", String(ADDRESS), nullable=True),
    Column("start_date", Date, nullable=False),
    Column("end_date", Date, nullable=True),
)

stream = Table(
    "blockchain_stream",
    metadata,
    Column("chain_id", String(NAME), primary_key=True),
    Column("stream_id", String(NAME), primary_key=True),
    Column("stream_ref", String(64), nullable=True, doc="read-only, from the node"),
    Column("stream_desc", String(255), nullable=False, default=""),
    Column("create_txid", String(TXID), nullable=True, doc="read-only, from the node"),
    Column("is_open", Boolean, nullable=False, default=True),
    Column("start_date", Date, nullable=True),
    Column("end_date", Date, nullable=True),
    ForeignKeyConstraint(["chain_id"], ["blockchain_chain.chain_id"]),
)

_PERMISSIONS = ("connect", "send", "receive", "create", "issue", "mine", "activate", "admin")

node = Table(
    "blockchain_node",
    metadata,
    Column("chain_id", String(NAME), primary_key=True),
    Column("node_address", String(ADDRESS), primary_key=True),
    Column("ip_address", String(255), nullable=False, default=""),
    Column("is_mine", Boolean, nullable=False, default=False),
    Column("node_label", String(255), nullable=True),
    Column("party_id", String(40), nullable=True),
    *[Column(f"perm_{p}", Boolean, nullable=False, default=False) for p in _PERMISSIONS],
    Column("start_date", Date, nullable=True),
    Column("end_date", Date, nullable=True),
    ForeignKeyConstraint(["chain_id"], ["blockchain_chain.chain_id"]),
)

trigger = Table(
    "blockchain_trigger",
    metadata,
    Column("trigger_id", Integer, primary_key=True, autoincrement=True),
    Column("subsys_dir", String(NAME), nullable=False),
    Column("table_id", String(NAME), nullable=False),
    Column("table_id_alias", String(NAME), nullable=True),
    Column("chain_id", String(NAME), nullable=False),
    Column("stream_id", String(NAME), nullable=False),
    Column("start_date", Date, nullable=True),
    Column("end_date", Date, nullable=True),
    Column("trigger_column", String(NAME), nullable=True),
    Column("trigger_value", String(255), nullable=True),
    Column("distribution_type", String(32), nullable=False, default="all nodes"),
    Column("distribution_table", String(NAME), nullable=True),
    ForeignKeyConstraint(
        ["chain_id", "stream_id"], ["blockchain_stream.chain_id", "blockchain_stream.stream_id"]
    ),
)

related_table = Table(
    "related_table",
    metadata,
    Column("node_id", Integer, primary_key=True, autoincrement=True),
    Column("trigger_id", Integer, nullable=False),
    Column("subsys_dir", String(NAME), nullable=False),
    Column("table_id", String(NAME), nullable=False),
    Column("table_id_alias", String(NAME), nullable=True),
    Column("node_id_snr", Integer, nullable=True),
    Column("parent_or_child", String(8), nullable=False),
    Column("fk_columns", String(255), nullable=True),
    ForeignKeyConstraint(["trigger_id"], ["blockchain_trigger.trigger_id"], ondelete="CASCADE"),
    Index("ix_related_table_trigger", "trigger_id"),
)

instance = Table(
    "blockchain_instance",
    metadata,
    Column("instance_key", Integer, primary_key=True, autoincrement=False, doc="always 1"),
    Column("origin", String(48), nullable=False, doc="first part of every event id"),
    Column("participant_id", BigInteger, nullable=True),
    Column("created_at", DateTime, nullable=False),
)

outbox = Table(
    "blockchain_outbox",
    metadata,
    # Decision: the spec makes the UUID the key; chainmill keys the outbox by an
    # auto-increment sequence instead, because the event id is "origin-sequence" and the
    # database's own counter hands out sequence numbers without a lock (a counter row would
    # serialise every capturing transaction). The UUID stays, unique.
    Column(
        "sequence",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
        doc="second part of the event id; the relay's order",
    ),
    Column("outbox_id", String(36), nullable=False, doc="UUID"),
    Column("message_id", String(EVENT), nullable=True, doc="event id = origin-sequence; item key"),
    Column("trigger_id", Integer, nullable=False),
    Column("subsys_dir", String(NAME), nullable=False),
    Column("table_id", String(NAME), nullable=False),
    Column("table_id_alias", String(NAME), nullable=True),
    Column("operation", String(8), nullable=False),
    Column("pkey", Text, nullable=False, doc="JSON object column -> value"),
    Column("created_at", DateTime, nullable=False),
    Column("status", String(10), nullable=False, default="PENDING"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("txid", String(TXID), nullable=True),
    Column("payload", Text, nullable=True, doc="the exact item data, fixed before first publish"),
    Column("access_keys", Text, nullable=True, doc="JSON list of wrapped passwords per reader"),
    Column("recipients", Text, nullable=True, doc="delete of a private row: reader contact ids"),
    Column("sent_at", DateTime, nullable=True),
    UniqueConstraint("outbox_id", name="uq_blockchain_outbox_uuid"),
    Index("ix_blockchain_outbox_status", "status", "sequence"),
)

inbox = Table(
    "blockchain_inbox",
    metadata,
    Column("chain_id", String(NAME), primary_key=True),
    Column("txid", String(TXID), primary_key=True),
    Column("item_index", Integer, primary_key=True, autoincrement=False),
    Column("stream_id", String(NAME), nullable=False),
    Column("publisher", String(ADDRESS), nullable=True),
    Column("message_id", String(EVENT), nullable=True),
    Column("block_height", BigInteger, nullable=True),
    Column("block_index", Integer, nullable=True),
    Column("status", String(10), nullable=False),
    Column("root_element", String(140), nullable=True),
    Column("error", Text, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime, nullable=True),
    Column("received_at", DateTime, nullable=False),
    Column("applied_at", DateTime, nullable=True),
    Index("ix_blockchain_inbox_status", "status"),
)

applied_event = Table(
    "blockchain_applied_event",
    metadata,
    Column("message_id", String(EVENT), primary_key=True),
    Column("chain_id", String(NAME), nullable=False),
    Column("txid", String(TXID), nullable=False),
    Column("applied_at", DateTime, nullable=False),
)

receiver_cursor = Table(
    "blockchain_receiver_cursor",
    metadata,
    Column("chain_id", String(NAME), primary_key=True),
    Column("stream_id", String(NAME), primary_key=True),
    Column("position", BigInteger, nullable=False, doc="items of the stream done, chain order"),
    Column("updated_at", DateTime, nullable=False),
)

row_version = Table(
    "blockchain_row_version",
    metadata,
    # The chain position of the newest item applied to each root row, so that an older item
    # retried after a newer one was applied (a failure, then back-off) cannot overwrite it.
    Column("chain_id", String(NAME), primary_key=True),
    Column("table_id", String(NAME), primary_key=True),
    Column("row_key", String(64), primary_key=True, doc="sha256 of the key's JSON text"),
    Column("block_height", BigInteger, nullable=False),
    Column("block_index", Integer, nullable=False),
    Column("item_index", Integer, nullable=False),
    Column("message_id", String(EVENT), nullable=True),
    Column("updated_at", DateTime, nullable=False),
)

key_sequence = Table(
    "blockchain_key_sequence",
    metadata,
    Column("sequence_name", String(NAME), primary_key=True),
    Column("counter", BigInteger, nullable=False),
)

OWN_TABLES = frozenset(t.name for t in metadata.sorted_tables)


def create_all(engine: Engine) -> None:
    """Create every table of the subsystem that does not exist yet (idempotent)."""
    metadata.create_all(engine, checkfirst=True)
