"""Replication of insert, update and delete between two application databases through a node.

How: a real chainmill node process; instance A (the buyer) has a trigger on request_header
with a related-table tree (party as parent, request_item as child with product as its parent)
and a file body travelling as rdc_file_body; instance B applies what arrives. Each phase
commits on A through SQLAlchemy with capture enabled, lets the relay publish and B's receiver
apply, and ends when B's rows equal A's. B has the same trigger and capture enabled too, and
its outbox must stay empty (no echo). Runs on SQLite, PostgreSQL and MariaDB.

Until multi-node networking exists both instances share one node (each with its own address);
the same test runs unchanged across two nodes once `connect_nodes` is available.
"""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session
from trigger_support import (
    TestNode,
    log,
    make_instance,
    register_nodes,
    seed,
    wait_until,
)

from triggers import capture, configure, schema
from triggers.catalog import Catalog
from triggers.receiver import Receiver
from triggers.relay import Relay
from triggers.tools import rfq
from triggers.tools.fixtures import app_db, db_kind, second_db  # noqa: F401

pytestmark = pytest.mark.functional
TABLES = ("party", "product", "request_header", "request_item")


def _foreign_keys_on(engine) -> None:
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA foreign_keys=ON"))


def _rows(engine, md) -> dict[str, list]:
    with engine.connect() as conn:
        return {
            t: conn.execute(select(md.tables[t]).order_by(*md.tables[t].primary_key.columns)).all()
            for t in TABLES
        }


def _configure_trigger(inst, with_tree: bool = True) -> int:
    catalog = Catalog(inst.engine)
    trigger_id = configure.add_trigger(
        inst.engine, catalog, subsys_dir="proc", table_id="request_header",
        chain_id=inst.node.chain, stream_id="rfq",
    )
    if with_tree:
        configure.add_related(inst.engine, catalog, trigger_id, "party", "parent",
                              fk_columns="party_id_buyer")
        item = configure.add_related(inst.engine, catalog, trigger_id, "request_item", "child")
        configure.add_related(inst.engine, catalog, trigger_id, "product", "parent", node_id_snr=item)
    return trigger_id


def test_replication_insert_update_delete(app_db, second_db, tmp_path: Path) -> None:  # noqa: F811
    seed()
    node = TestNode("trgrepl", tmp_path / "node0")
    node.create()
    node.start()
    try:
        node.wait_mined(node.rpc("create", "stream", "rfq", True))
        for engine in (app_db, second_db):
            _foreign_keys_on(engine)
        md_a = rfq.create(app_db)
        md_b = rfq.create(second_db)
        a = make_instance("buyer", app_db, node, tmp_path / "keys-a", 4711,
                          address=node.rpc("getaddresses")[0])
        b = make_instance("supplier", second_db, node, tmp_path / "keys-b", 202020)
        register_nodes([a, b])
        _configure_trigger(a)
        _configure_trigger(b)  # B could send too; it must not echo what it receives
        capture.enable(app_db)
        capture.enable(second_db)

        stop = threading.Event()
        relay = Relay(app_db, lambda chain: node.client, hooks=rfq.file_hooks())
        receiver = Receiver(second_db, node.client, node.chain, hooks=rfq.file_hooks())
        workers = [
            threading.Thread(target=relay.run_forever, args=(stop, 0.05), daemon=True),
            threading.Thread(target=receiver.follow_forever, args=(stop, 0.1), daemon=True),
        ]
        for worker in workers:
            worker.start()
        try:
            log.info("phase 1: insert a header with two items (ORM session, one transaction)")
            rows = rfq.sample_rows()
            with app_db.begin() as conn:
                conn.execute(md_a.tables["party"].insert(), rows["party"])
                conn.execute(md_a.tables["product"].insert(), rows["product"])
            with Session(app_db) as session, session.begin():
                session.execute(md_a.tables["request_header"].insert(), rows["request_header"])
                session.execute(md_a.tables["request_item"].insert(), rows["request_item"])
            wait_until(lambda: _rows(second_db, md_b) == _rows(app_db, md_a), 60, "insert replicated")

            log.info("phase 2: update status and attach the specification file")
            header = md_a.tables["request_header"]
            with app_db.begin() as conn:
                conn.execute(
                    header.update()
                    .where(header.c.request_id == rows["request_header"][0]["request_id"])
                    .values(status="Sent to Supplier", spec_file_body=rfq.SPEC_PDF,
                            revised_date=dt.datetime(2024, 3, 5, 8, 0, 0))
                )
            wait_until(lambda: _rows(second_db, md_b) == _rows(app_db, md_a), 60, "update replicated")
            with second_db.connect() as conn:
                body = conn.execute(select(md_b.tables["request_header"].c.spec_file_body)).scalar()
            assert body == rfq.SPEC_PDF

            log.info("phase 3: delete the header; the partner's foreign keys cascade to items")
            with app_db.begin() as conn:
                conn.execute(header.delete().where(
                    header.c.request_id == rows["request_header"][0]["request_id"]))
            wait_until(lambda: _rows(second_db, md_b) == _rows(app_db, md_a), 60, "delete replicated")
            with second_db.connect() as conn:
                assert conn.execute(select(func.count()).select_from(md_b.tables["request_item"])).scalar() == 0
                assert conn.execute(select(func.count()).select_from(schema.outbox)).scalar() == 0
                assert conn.execute(select(func.count()).select_from(schema.applied_event)).scalar() == 3
            def statuses() -> list[str]:
                with app_db.connect() as conn:
                    return conn.execute(select(schema.outbox.c.status)).scalars().all()

            wait_until(lambda: statuses() == ["SENT"] * 3, 30, "the outbox rows to be confirmed")
        finally:
            stop.set()
            for worker in workers:
                worker.join(10)
    finally:
        node.stop()
