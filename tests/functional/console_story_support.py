"""A three-node trigger story for the console tests: a private RFQ from a buyer to one supplier.

Node 1 (buyer A's database) sends a request_header row, with its party as a parent table, as
an encrypted document readable by A and supplier B only. Node 2 is B's node; B's database
gets its application tables only after the first receive, so the document first FAILS in B's
inbox, with an error, and can be retried once the tables exist. Node 3 is a partner node
with no key for the document. Each node's triggers.conf names its database, as
`chainmill triggers init` would, so `chainmill console` finds it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from framework import Harness, TestNode
from network_support import add_joiner
from sqlalchemy import select
from sqlalchemy.engine import Engine
from trigger_support import (
    PARTNER_GRANTS,
    db_url,
    log,
    make_instance,
    outbox_statuses,
    pin_ports,
    register_nodes,
    two_nodes,
    wait_confirmed,
    wait_linked,
    wait_until,
)

from triggers import capture, configure, schema, settings
from triggers.catalog import Catalog
from triggers.receiver import Receiver
from triggers.relay import Relay
from triggers.tools import rfq
from triggers.tools.fixtures import open_database


@dataclass
class Story:
    n1: TestNode
    n2: TestNode
    n3: TestNode
    buyer_db: Engine
    supplier_db: Engine
    txid: str
    buyer_address: str
    supplier_address: str
    supplier_receiver: Receiver


@contextlib.contextmanager
def private_rfq_story(harness: Harness, tmp_path: Path) -> Iterator[Story]:
    n1, n2 = two_nodes(harness, "cmtrg")
    n3 = add_joiner(harness, n1)
    n3.start()
    pin_ports(n3)
    grant = n1.grant(n3.address, PARTNER_GRANTS)
    wait_linked(n1, n3)
    wait_confirmed([n1, n3], grant)
    n3.subscribe(["rfq", "access"])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with open_database("sqlite", tmp_path / "a") as app_db, \
            open_database("sqlite", tmp_path / "b") as second_db:
        md_a = rfq.create(app_db)
        a = make_instance("buyer", app_db, n1, tmp_path / "ka", 4711,
                          address=n1.getaddresses()[0])
        b = make_instance("supplier-b", second_db, n2, tmp_path / "kb", 202020,
                          address=n2.address)
        register_nodes([a, b])
        catalog = Catalog(app_db)
        trigger_id = configure.add_trigger(
            app_db, catalog, subsys_dir="proc", table_id="request_header", chain_id=n1.chain,
            stream_id="rfq", trigger_column="status", trigger_value="Sent to Supplier",
            distribution_type="database table", distribution_table="request_supplier")
        configure.add_related(app_db, catalog, trigger_id, "party", "parent",
                              fk_columns="party_id_buyer")
        capture.enable(app_db)
        settings.write(n1.datadir, n1.chain, db_url(app_db), None)
        settings.write(n2.datadir, n2.chain, db_url(second_db), None)

        log.info("buyer asks supplier B only, then sends the RFQ")
        rows = rfq.sample_rows()
        header = md_a.tables["request_header"]
        with app_db.begin() as conn:
            conn.execute(md_a.tables["party"].insert(), rows["party"])
            conn.execute(header.insert(), rows["request_header"])
            conn.execute(md_a.tables["request_supplier"].insert(), [
                {"request_id": rows["request_header"][0]["request_id"], "supplier_seq": 1,
                 "contact_mech_id_blockchain": b.address}])
        with app_db.begin() as conn:
            conn.execute(header.update().values(status="Sent to Supplier"))
        relay = Relay(app_db, lambda chain: a.client)
        wait_until(lambda: relay.run_once() >= 0 and outbox_statuses(app_db) == ["SENT"], 30,
                   "the relay to send and the node to confirm")
        with app_db.connect() as conn:
            txid = conn.execute(select(schema.outbox.c.txid)).scalar()
        wait_confirmed([n1, n2, n3], txid)

        log.info("B receives before its application tables exist: the document FAILS")
        receiver = Receiver(second_db, b.client, n2.chain)
        wait_until(lambda: receiver.follow_once() >= 0
                   and receiver.inbox_counts().get("FAILED") == 1, 30,
                   "the document to fail in B's inbox")
        yield Story(n1, n2, n3, app_db, second_db, txid, a.address, b.address, receiver)


def create_supplier_tables(story: Story) -> None:
    """What B's operator fixes before pressing Retry."""
    rfq.create(story.supplier_db)


def supplier_headers(story: Story) -> list:
    md = rfq.create(story.supplier_db)
    with story.supplier_db.connect() as conn:
        return conn.execute(select(md.tables["request_header"])).all()
