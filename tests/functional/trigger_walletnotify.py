"""Rows arrive through node 2's walletnotify hook alone: no follower, no receiver in the test.

How: two real nodes. Instance A (the buyer) is bound to node 1, its relay publishes there.
Instance B (the supplier) is set up on node 2 the way an administrator would, with the
chainmill commands only: `keys generate` (key pair, public key published from node 2's
address), `triggers init --chain --db URL --hooks ...` (which records the database URL and
the hooks in node 2's triggers.conf), `triggers import-streams` and `import-nodes`. Node 2's
chainmill.conf gets `walletnotify=chainmill receive CHAIN %s %n --datadir DIR`; the node runs
that line without a shell, split shell-style, whenever a transaction touching a subscribed
stream is first seen and again when it is confirmed. Insert, update (with a file body) and
delete on A must end with equal rows on B, and every item must be APPLIED in B's inbox.
Runs on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from trigger_support import (
    Instance,
    RfqStory,
    chainmill_cli,
    count,
    db_url,
    foreign_keys_on,
    log,
    make_instance,
    outbox_statuses,
    pin_ports,
    receive_hook,
    restart,
    rfq_trigger,
    set_walletnotify,
    two_nodes,
    wait_until,
)

from triggers import capture, configure, crypto, schema
from triggers.receiver import Receiver
from triggers.relay import Relay
from triggers.tools import rfq
from triggers.tools.fixtures import app_db, db_kind, second_db  # noqa: F401

pytestmark = pytest.mark.functional


def test_rows_arrive_through_walletnotify_alone(app_db, second_db, harness,  # noqa: F811
                                                tmp_path: Path) -> None:
    n1, n2 = two_nodes(harness, "trgwn")
    for engine in (app_db, second_db):
        foreign_keys_on(engine)
    md_a, md_b = rfq.create(app_db), rfq.create(second_db)
    a = make_instance("buyer", app_db, n1, tmp_path / "keys-a", 4711,
                      address=n1.getaddresses()[0])

    log.info("B is configured with the chainmill commands, against node 2's data directory")
    datadir = str(n2.datadir)
    keys = tmp_path / "keys-b"
    chainmill_cli("keys", "generate", n2.chain, "--datadir", datadir, "--dir", str(keys))
    chainmill_cli("triggers", "init", "--db", db_url(second_db), "--datadir", datadir,
                  "--participant-id", "202020", "--chain", n2.chain,
                  "--public-key", str(keys / "public_key.pub"),
                  "--private-key", str(keys / "private_key.pem"),
                  "--hooks", "triggers.tools.rfq:file_hooks")
    chainmill_cli("triggers", "import-streams", n2.chain, "--datadir", datadir)
    chainmill_cli("triggers", "import-nodes", n2.chain, "--datadir", datadir)
    b = Instance("supplier", second_db, n2, n2.address,
                 crypto.KeyPair(keys / "private_key.pem", keys / "public_key.pub", ""))
    configure.add_node(app_db, n1.chain, a.address, is_mine=True)
    configure.add_node(app_db, n1.chain, b.address)
    rfq_trigger(app_db, n1.chain)
    capture.enable(app_db)

    log.info("node 2 restarts with walletnotify running chainmill receive")
    hook = receive_hook(n2)
    log.info("walletnotify=%s", hook)
    n2.stop()
    set_walletnotify(n2, hook)
    restart(n2, n1)
    pin_ports(n2)

    stop = threading.Event()
    relay = Relay(app_db, lambda chain: a.client, hooks=rfq.file_hooks())
    worker = threading.Thread(target=relay.run_forever, args=(stop, 0.05), daemon=True)
    worker.start()
    story = RfqStory(app_db, md_a, second_db, md_b)
    try:
        story.insert()
        story.replicated("insert (through walletnotify)")
        story.update()
        story.replicated("update (through walletnotify)")
        story.file_arrived()
        story.delete()
        story.replicated("delete (through walletnotify)")
        wait_until(lambda: outbox_statuses(app_db) == ["SENT"] * 3, 30,
                   "the outbox rows to be confirmed")
    finally:
        stop.set()
        worker.join(10)
    assert count(second_db, schema.applied_event) == 3
    counts = Receiver(second_db, b.client, n2.chain).inbox_counts()  # reads the inbox only
    assert counts == {"APPLIED": 3}
    assert "Traceback" not in n2.output(), "a hook run failed (see node 2's output)"
    failures = [line for line in n2.debug_log().splitlines() if "walletnotify:" in line]
    assert not failures, failures
