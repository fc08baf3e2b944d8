"""Replication of insert, update and delete between two application databases on two nodes,
and a receiving node that is down for a while.

How: two real chainmill nodes of one chain; instance A (the buyer) is bound to node 1 and has
a trigger on request_header with a related-table tree (party as parent, request_item as
child with product as its parent) and a file body travelling as rdc_file_body; its relay
publishes on node 1. Instance B (the supplier) is bound to node 2: its receiver reads what
node 2 received from node 1 over the network and applies it. Each phase commits on A through
SQLAlchemy with capture enabled and ends when B's rows equal A's. B has the same trigger and
capture enabled too, and its outbox must stay empty (no echo).

Then node 2 stops; A commits more changes, which node 1 confirms alone (node 2 does not
mine); node 2 starts again, catches up with the blocks, and B's receiver (running all along,
failing its passes while the node was away) applies everything. Runs on SQLite, PostgreSQL
and MariaDB.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import select
from trigger_support import (
    RfqStory,
    count,
    foreign_keys_on,
    log,
    make_instance,
    outbox_statuses,
    register_nodes,
    restart,
    rfq_rows,
    rfq_trigger,
    two_nodes,
    wait_until,
)

from triggers import capture, schema
from triggers.receiver import Receiver
from triggers.relay import Relay
from triggers.tools import rfq
from triggers.tools.fixtures import app_db, db_kind, second_db  # noqa: F401

pytestmark = pytest.mark.functional


def test_replication_across_two_nodes_and_a_node_down(app_db, second_db, harness,  # noqa: F811
                                                      tmp_path: Path) -> None:
    n1, n2 = two_nodes(harness, "trgrepl")
    for engine in (app_db, second_db):
        foreign_keys_on(engine)
    md_a, md_b = rfq.create(app_db), rfq.create(second_db)
    a = make_instance("buyer", app_db, n1, tmp_path / "keys-a", 4711,
                      address=n1.getaddresses()[0])
    b = make_instance("supplier", second_db, n2, tmp_path / "keys-b", 202020, address=n2.address)
    register_nodes([a, b])
    rfq_trigger(app_db, n1.chain)
    rfq_trigger(second_db, n2.chain)  # B could send too; it must not echo what it receives
    capture.enable(app_db)
    capture.enable(second_db)

    stop = threading.Event()
    relay = Relay(app_db, lambda chain: a.client, hooks=rfq.file_hooks())
    receiver = Receiver(second_db, b.client, n2.chain, hooks=rfq.file_hooks())
    workers = [
        threading.Thread(target=relay.run_forever, args=(stop, 0.05), daemon=True),
        threading.Thread(target=receiver.follow_forever, args=(stop, 0.1), daemon=True),
    ]
    for worker in workers:
        worker.start()
    story = RfqStory(app_db, md_a, second_db, md_b)
    try:
        story.insert()
        story.replicated("insert")
        story.update()
        story.replicated("update")
        story.file_arrived()
        story.delete()
        story.replicated("delete")
        assert count(second_db, md_b.tables["request_item"]) == 0
        wait_until(lambda: outbox_statuses(app_db) == ["SENT"] * 3, 30,
                   "the outbox rows to be confirmed")

        log.info("node 2 down for a while; A keeps committing and node 1 confirms alone")
        before = rfq_rows(second_db, md_b)
        n2.stop()
        first, second = story.more(1, 2)
        # (A delete right after its insert would find the insert's row gone when the relay
        # builds its document: the spec makes that insert FAILED, "row vanished".)
        wait_until(lambda: outbox_statuses(app_db) == ["SENT"] * 5, 60,
                   "node 1 to confirm the inserts made while node 2 is down")
        story.set_status(first, "Sent to Supplier")
        story.delete(second)
        wait_until(lambda: outbox_statuses(app_db) == ["SENT"] * 7, 60,
                   "node 1 to confirm the changes made while node 2 is down")
        assert rfq_rows(second_db, md_b) == before
        restart(n2, n1)
        story.replicated("everything committed while node 2 was down")
    finally:
        stop.set()
        for worker in workers:
            worker.join(10)
    with second_db.connect() as conn:
        header = md_b.tables["request_header"]
        assert conn.execute(select(header.c.status)).scalars().all() == ["Sent to Supplier"]
    assert count(second_db, schema.outbox) == 0
    assert count(second_db, schema.applied_event) == 7
    assert receiver.inbox_counts() == {"APPLIED": 7}
