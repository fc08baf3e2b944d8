"""Capture (spec 1.3, 1.4): committed DML becomes one outbox row in the same transaction.

Runs on SQLite, PostgreSQL and MariaDB, through the ORM Session and Core connections.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import DeclarativeBase, Session

from triggers import capture, configure, crypto, schema
from triggers.capture import PrimaryKeyUpdateRefused
from triggers.catalog import Catalog
from triggers.tools import rfq
from triggers.tools.fixtures import app_db, db_kind  # noqa: F401

HEADER_ID = 471100000000000000000000000015


def _setup(engine, tmp_path: Path, **trigger):
    md = rfq.create(engine)
    configure.init(engine, 4711)
    pair = crypto.write_keypair(tmp_path / "keys", crypto.generate_keypair())
    configure.add_chain(engine, "chain1", chain_desc="c", rpc_host="127.0.0.1", rpc_port=1,
                        public_key=str(pair.public_path), private_key=str(pair.private_path))
    configure.add_stream(engine, "chain1", "rfq")
    fields = dict(subsys_dir="proc", table_id="request_header", chain_id="chain1", stream_id="rfq")
    fields.update(trigger)
    configure.add_trigger(engine, Catalog(engine), **fields)
    rows = rfq.sample_rows()
    with engine.begin() as conn:
        conn.execute(md.tables["party"].insert(), rows["party"])
        conn.execute(md.tables["product"].insert(), rows["product"])
    return md, rows


def _outbox(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(schema.outbox).order_by(schema.outbox.c.sequence)).mappings()]


def test_capture_orm_insert_writes_one_outbox_row(app_db, tmp_path: Path) -> None:  # noqa: F811
    md, rows = _setup(app_db, tmp_path)
    cap = capture.enable(app_db)

    class Base(DeclarativeBase):
        metadata = md

    class Header(Base):
        __table__ = md.tables["request_header"]

    with Session(app_db) as session, session.begin():
        session.add(Header(**rows["request_header"][0]))
    out = _outbox(app_db)
    assert len(out) == 1 and cap.captured_count == 1
    assert out[0]["operation"] == "insert" and out[0]["status"] == "PENDING"
    assert json.loads(out[0]["pkey"]) == {"request_id": str(HEADER_ID)}
    with Session(app_db) as session, session.begin():
        header = session.get(Header, HEADER_ID)
        header.currency_code = "USD"
    assert [r["operation"] for r in _outbox(app_db)] == ["insert", "update"]
    with Session(app_db) as session, session.begin():
        session.delete(session.get(Header, HEADER_ID))
    assert [r["operation"] for r in _outbox(app_db)] == ["insert", "update", "delete"]


def test_capture_rollback_leaves_no_outbox_row(app_db, tmp_path: Path) -> None:  # noqa: F811
    md, rows = _setup(app_db, tmp_path)
    capture.enable(app_db)
    with pytest.raises(RuntimeError), app_db.begin() as conn:
        conn.execute(md.tables["request_header"].insert(), rows["request_header"])
        assert len(conn.execute(select(schema.outbox)).all()) == 1  # inside: written
        raise RuntimeError("the application fails")
    assert _outbox(app_db) == []
    with app_db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(md.tables["request_header"])).scalar() == 0


def test_capture_one_trigger_per_transaction(app_db, tmp_path: Path) -> None:  # noqa: F811
    md, rows = _setup(app_db, tmp_path)
    configure.add_trigger(app_db, Catalog(app_db), subsys_dir="proc", table_id="request_item",
                          chain_id="chain1", stream_id="rfq")
    capture.enable(app_db)
    second = dict(rows["request_header"][0], request_id=HEADER_ID + 1)
    with app_db.begin() as conn:
        conn.execute(md.tables["request_header"].insert(), [rows["request_header"][0], second])
        conn.execute(md.tables["request_item"].insert(), rows["request_item"])
    out = _outbox(app_db)
    assert len(out) == 1 and out[0]["table_id"] == "request_header"
    assert json.loads(out[0]["pkey"]) == {"request_id": str(HEADER_ID)}
    with app_db.begin() as conn:  # a new transaction captures again
        conn.execute(delete(md.tables["request_item"]).where(md.tables["request_item"].c.item_seq_no == 2))
    assert [r["table_id"] for r in _outbox(app_db)] == ["request_header", "request_item"]


def test_capture_case3_fires_on_update_to_the_value_only(app_db, tmp_path: Path) -> None:  # noqa: F811
    md, rows = _setup(app_db, tmp_path, trigger_column="status", trigger_value="Sent to Supplier")
    capture.enable(app_db)
    header = md.tables["request_header"]
    with app_db.begin() as conn:
        conn.execute(header.insert(), rows["request_header"])
    with app_db.begin() as conn:
        conn.execute(update(header).where(header.c.request_id == HEADER_ID).values(currency_code="USD"))
    assert _outbox(app_db) == []
    with app_db.begin() as conn:
        conn.execute(update(header).where(header.c.status == "Pending").values(status="Sent to Supplier"))
    with app_db.begin() as conn:  # the value is tested, not the transition (spec 1.3)
        conn.execute(update(header).where(header.c.request_id == HEADER_ID).values(currency_code="CHF"))
    out = _outbox(app_db)
    assert [r["operation"] for r in out] == ["update", "update"]
    with app_db.begin() as conn:
        conn.execute(delete(header).where(header.c.request_id == HEADER_ID))
    assert len(_outbox(app_db)) == 2


def test_capture_alias_and_blockchain_mode(app_db, tmp_path: Path) -> None:  # noqa: F811
    md, rows = _setup(app_db, tmp_path, table_id_alias="rfq_header")
    capture.enable(app_db)
    header = md.tables["request_header"]
    with app_db.begin() as conn:
        conn.execute(header.insert(), rows["request_header"])
    assert _outbox(app_db) == []
    with app_db.begin() as conn, capture.using_alias(conn, "rfq_header"):
        conn.execute(update(header).values(currency_code="USD"))
    assert len(_outbox(app_db)) == 1 and _outbox(app_db)[0]["table_id_alias"] == "rfq_header"
    with app_db.begin() as conn, capture.using_alias(conn, "rfq_header"), capture.blockchain_mode(conn):
        conn.execute(update(header).values(currency_code="CHF"))
    assert len(_outbox(app_db)) == 1


def test_capture_refuses_primary_key_update_of_root_table(app_db, tmp_path: Path) -> None:  # noqa: F811
    md, rows = _setup(app_db, tmp_path)
    capture.enable(app_db)
    header = md.tables["request_header"]
    with app_db.begin() as conn:
        conn.execute(header.insert(), rows["request_header"])
    with pytest.raises(PrimaryKeyUpdateRefused), app_db.begin() as conn:
        conn.execute(update(header).values(request_id=HEADER_ID + 5))
    assert len(_outbox(app_db)) == 1


def test_capture_new_trigger_is_seen_without_restart(app_db, tmp_path: Path) -> None:  # noqa: F811
    md, rows = _setup(app_db, tmp_path)
    cap = capture.enable(app_db)
    with app_db.begin() as conn:
        conn.execute(md.tables["product"].update().values(uom_id="PC"))
    assert _outbox(app_db) == []
    configure.add_trigger(app_db, Catalog(app_db), subsys_dir="proc", table_id="product",
                          chain_id="chain1", stream_id="rfq")
    cap.invalidate()
    with app_db.begin() as conn:
        conn.execute(md.tables["product"].update().values(uom_id="EA"))
    assert [r["table_id"] for r in _outbox(app_db)] == ["product"]
    cap.disable()
