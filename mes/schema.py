"""The reference MES schema (SQLAlchemy Core; SQLite, PostgreSQL, MariaDB).

For plants without a MES database of their own (`chainmill mes init --db URL`); a plant with
one maps its tables onto these (docs/mes.md). Tables:

- ``mes_production_unit``: the units (dynamic data, spec 3.2);
- ``mes_shift_record``: per unit, day and shift the inputs of the indicator formulas (3.3.4);
- ``mes_day_report``: one row per unit and production day, ``finished`` once all shifts are in;
- ``mes_token``: the token store (``KafkaToken``), secrets encrypted at rest (mes.tokens);
- ``mes_publication``: the publication ledger of day reports, keyed by flow id (3.3.5);
- ``mes_scheduler_lock``: the lease that keeps one day-report scheduler per deployment, and
  the instant of its last run;
- ``mes_job_run``: one row per day-report run (when, how many reports published);
- ``mes_unit_outbox``: unit changes committed by the MES and waiting for the sender;
- ``mes_unit_sent``: per unit the values last confirmed by the bridge (change detection).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    ForeignKey,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Engine
from sqlalchemy.types import TypeEngine

__all__ = ["metadata", "production_unit", "shift_record", "day_report", "token", "publication",
           "scheduler_lock", "job_run", "unit_outbox", "unit_sent", "create_all", "TABLES"]

metadata = MetaData()


def _key(length: int) -> TypeEngine:
    """A key column compared byte-wise on every backend (`PT10` and `pt10` are two units)."""
    return String(length).with_variant(
        mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb")


def _minutes() -> Numeric:
    # Exact decimals: the indicator formulas are exact, a float column would not be.
    return Numeric(12, 3, asdecimal=True)


production_unit = Table(
    "mes_production_unit", metadata,
    Column("unit_id", Integer, primary_key=True, autoincrement=False),
    Column("code", _key(64), nullable=False, unique=True,
           doc="the unit's code, e.g. PT10: its record id on the chain"),
    Column("status", String(200), nullable=True),
    Column("process_name", String(200), nullable=True),
    Column("updated_at", BigInteger, nullable=False, default=0, doc="Unix ms of the last change"),
)

shift_record = Table(
    "mes_shift_record", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("unit_id", Integer, ForeignKey("mes_production_unit.unit_id"), nullable=False),
    Column("day", Date, nullable=False, doc="the production day the shift belongs to"),
    Column("shift", String(1), nullable=False, doc="A, B or C"),
    Column("shift_length", _minutes(), nullable=False),
    Column("planned_stop", _minutes(), nullable=False, default=0),
    Column("unplanned_stop", _minutes(), nullable=False, default=0),
    Column("failures", Integer, nullable=False, default=0,
           doc="breakdowns that began in this shift"),
    Column("repair_time", _minutes(), nullable=False, default=0,
           doc="failure downtime, a part of the unplanned stop time"),
    Column("total_count", Integer, nullable=False, default=0),
    Column("good_count", Integer, nullable=False, default=0),
    Column("ideal_time", _minutes(), nullable=False, default=0,
           doc="sum over products of ideal cycle time x count"),
    UniqueConstraint("unit_id", "day", "shift", name="uq_mes_shift_record"),
)

day_report = Table(
    "mes_day_report", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("unit_id", Integer, ForeignKey("mes_production_unit.unit_id"), nullable=False),
    Column("day", Date, nullable=False),
    Column("report_id", String(64), nullable=True,
           doc="an immutable id (e.g. a 24-hex ObjectId); empty: the flow id is used"),
    Column("finished", Boolean, nullable=False, default=False,
           doc="all three shifts are recorded; only finished reports are published"),
    UniqueConstraint("unit_id", "day", name="uq_mes_day_report"),
)

token = Table(
    "mes_token", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tipo_instancia", String(200), nullable=False, doc="Master or Reporter"),
    Column("name", String(200), nullable=True),
    Column("token", Text, nullable=True, doc="encrypted (Fernet)"),
    Column("public_key", String(200), nullable=True),
    Column("password", Text, nullable=True, doc="encrypted (Fernet)"),
    Column("record_id", String(200), nullable=True, doc="the record a reporter reports on"),
    Column("topic", String(200), nullable=True),
    Column("unit_id", Integer, nullable=True, unique=True, doc="a reporter's production unit"),
)

publication = Table(
    "mes_publication", metadata,
    Column("flow_id", _key(100), primary_key=True),
    Column("status", String(16), nullable=False, doc="PENDING, PUBLISHED or CONFLICT"),
    Column("txids", Text, nullable=False, default="[]", doc="JSON list"),
    Column("detail", Text, nullable=True, doc="conflicts, for a human"),
    Column("updated_at", BigInteger, nullable=False, doc="Unix ms"),
)

scheduler_lock = Table(
    "mes_scheduler_lock", metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(200), nullable=True),
    Column("lease_until", BigInteger, nullable=False, default=0, doc="Unix ms"),
    Column("last_run", BigInteger, nullable=True, doc="Unix ms of the last finished run"),
)

job_run = Table(
    "mes_job_run", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job", String(64), nullable=False),
    Column("holder", String(200), nullable=False),
    Column("started_at", BigInteger, nullable=False, doc="Unix ms (the job's clock)"),
    Column("published", Integer, nullable=False, default=0),
    Column("reason", String(32), nullable=False, doc="schedule, startup or manual"),
)

unit_outbox = Table(
    "mes_unit_outbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("unit_id", Integer, nullable=False, index=True),
    Column("status", String(200), nullable=True, doc="NULL: not part of this change"),
    Column("process_name", String(200), nullable=True, doc="NULL: not part of this change"),
    Column("created_at", BigInteger, nullable=False),
    Column("sent_at", BigInteger, nullable=True, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("error", Text, nullable=True),
    Column("interaction_id", BigInteger, nullable=True,
           doc="drawn before the first send and reused by every resend, so the bridge's "
               "duplicate check sees a resend after a timeout as the same request"),
)

unit_sent = Table(
    "mes_unit_sent", metadata,
    Column("unit_id", Integer, primary_key=True, autoincrement=False),
    Column("status", String(200), nullable=True),
    Column("process_name", String(200), nullable=True),
    Column("txid", String(128), nullable=True),
)

TABLES = tuple(metadata.sorted_tables)


def create_all(engine: Engine) -> None:
    """Create the tables that do not exist yet (idempotent)."""
    metadata.create_all(engine)
