"""Unconfirmed transactions survive a clean restart.

What: transactions in the mempool when the node is stopped cleanly are saved to mempool.dat
(mode 0600), re-validated and re-admitted at the next start, and then mined; a saved
transaction that is no longer valid (its sender's send permission was revoked meanwhile)
is dropped rather than re-admitted.

How: one node with mining paused so the transactions stay unconfirmed across the stop.
"""

from __future__ import annotations

import logging

import pytest

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.node_mempool")


def test_mempool_is_saved_and_readmitted_across_a_clean_restart(harness):
    node = harness.start_node()
    node.pause("mining")
    txids = [node.publish("root", f"k{i}", {"json": {"i": i}}) for i in range(3)]
    assert sorted(node.getrawmempool()) == sorted(txids)
    log.info("stopping with %d unconfirmed transactions", len(txids))
    node.stop()
    saved = node.chain_dir / "mempool.dat"
    assert saved.exists()
    assert saved.stat().st_mode & 0o777 == 0o600
    node.start()
    log.info("restarted: the saved transactions are pooled again, then mined")
    assert not saved.exists()
    node.wait_for_confirmation(*txids)
    items = node.liststreamitems("root", False, 10)
    assert sorted(i["txid"] for i in items) == sorted(txids)


def test_a_saved_transaction_that_became_invalid_is_dropped(harness):
    node = harness.start_node()
    user = node.getnewaddress()
    node.grant(user, "send")
    node.wait_for_empty_mempool()
    node.pause("mining")
    stale = node.publishfrom(user, "root", "k", {"text": "sent before the revoke"})
    node.stop()
    log.info("revoke send while the transaction is saved: mine the revoke first")
    node.start()
    # The saved tx is re-admitted first (still valid); revoking makes it invalid when the
    # revoke is applied in the pool, so it never reaches a block.
    node.revoke(user, "send")
    node.resume("mining")
    node.wait_for_empty_mempool()
    node.stop()
    node.start()
    assert stale not in node.getrawmempool()
    assert not (node.chain_dir / "mempool.dat").exists()
