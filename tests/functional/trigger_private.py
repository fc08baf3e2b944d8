"""A private document for one of two partners: the recipient applies it, the other cannot.

How: two real nodes. Instance A (buyer) is bound to node 1 and sends request_header rows with
distribution type `database table` (readers listed in request_supplier). B, the recipient,
is bound to node 2; C, who is not listed, is bound to node 1 with an address of its own: the
recipient and the non-recipient are on different nodes. The item on the chain is an
encrypted envelope (what reaches node 2 is ciphertext); the ACCESS stream holds wrapped
passwords for B and for A itself. B decodes and applies the row from what node 2 received;
C applies nothing and keeps the item DEFERRED (it becomes NOT_FOR_ME after the configured
number of blocks, which is normal, not an error).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select
from trigger_support import (
    count,
    log,
    make_instance,
    outbox_statuses,
    register_nodes,
    two_nodes,
    wait_confirmed,
    wait_until,
)

from triggers import capture, configure, crypto, nodes, schema
from triggers.catalog import Catalog
from triggers.receiver import Receiver
from triggers.relay import Relay
from triggers.tools import rfq
from triggers.tools.fixtures import app_db, db_kind, open_database, second_db  # noqa: F401

pytestmark = pytest.mark.functional


def _headers(engine, md) -> list:
    with engine.connect() as conn:
        return conn.execute(select(md.tables["request_header"])).all()


def test_private_document_only_for_its_recipient(app_db, second_db, harness,  # noqa: F811
                                                 tmp_path: Path) -> None:
    n1, n2 = two_nodes(harness, "trgpriv")
    (tmp_path / "c").mkdir()
    with open_database("sqlite", tmp_path / "c") as third_db:
        md_a, md_b, md_c = rfq.create(app_db), rfq.create(second_db), rfq.create(third_db)
        a = make_instance("buyer", app_db, n1, tmp_path / "ka", 4711,
                          address=n1.getaddresses()[0])
        b = make_instance("supplier-b", second_db, n2, tmp_path / "kb", 202020,
                          address=n2.address)
        c = make_instance("supplier-c", third_db, n1, tmp_path / "kc", 303030)
        register_nodes([a, b, c])
        catalog = Catalog(app_db)
        trigger_id = configure.add_trigger(
            app_db, catalog, subsys_dir="proc", table_id="request_header", chain_id=n1.chain,
            stream_id="rfq", trigger_column="status", trigger_value="Sent to Supplier",
            distribution_type="database table", distribution_table="request_supplier",
        )
        configure.add_related(app_db, catalog, trigger_id, "party", "parent",
                              fk_columns="party_id_buyer")
        capture.enable(app_db)

        log.info("buyer asks supplier B only, then sends the RFQ")
        rows = rfq.sample_rows()
        header = md_a.tables["request_header"]
        with app_db.begin() as conn:
            conn.execute(md_a.tables["party"].insert(), rows["party"])
            conn.execute(header.insert(), rows["request_header"])
            conn.execute(md_a.tables["request_supplier"].insert(), [
                {"request_id": rows["request_header"][0]["request_id"], "supplier_seq": 1,
                 "contact_mech_id_blockchain": b.address},
            ])
        with app_db.begin() as conn:
            conn.execute(header.update().values(status="Sent to Supplier"))
        relay = Relay(app_db, lambda chain: a.client)
        wait_until(lambda: relay.run_once() >= 0 and outbox_statuses(app_db) == ["SENT"], 30,
                   "the relay to send and the node to confirm")

        log.info("what reached node 2 is ciphertext, with access entries for A and B only")
        with app_db.connect() as conn:
            txid = conn.execute(select(schema.outbox.c.txid)).scalar()
        wait_confirmed([n1, n2], txid)
        item = n2.getstreamitem("rfq", txid, True)
        data = nodes.item_bytes(n2.rpc, item)
        assert crypto.is_envelope(data) and b"request_header" not in data
        readers = {
            json.loads(nodes.item_bytes(n2.rpc, e))["address"]
            for e in n2.liststreamkeyitems("access", item["txid"], False, 100)
        }
        assert readers == {a.address, b.address}

        log.info("B decodes and applies via node 2; C, on node 1, applies nothing")
        receiver_b = Receiver(second_db, b.client, n2.chain)
        receiver_c = Receiver(third_db, c.client, n1.chain)
        wait_until(lambda: receiver_b.follow_once() >= 0 and len(_headers(second_db, md_b)) == 1,
                   30, "B to apply the private document")
        receiver_c.follow_once()
        assert _headers(third_db, md_c) == []
        assert receiver_c.inbox_counts() == {"DEFERRED": 1}
        assert count(third_db, schema.applied_event) == 0
        assert _headers(second_db, md_b)[0].status == "Sent to Supplier"
        with second_db.connect() as conn:
            assert conn.execute(select(func.count()).select_from(schema.applied_event)).scalar() == 1
