"""Hooks fire on every node, also for transactions first seen from a peer.

What: on a node that did not make the transaction, walletnotify runs once when the
transaction arrives from a peer (%c = 1, %n = -1) and once when it is confirmed (%c = 0, the
block's height), with the subscribed stream in %e; blocknotify runs for the new tip.

How: two real nodes; the second one's chainmill.conf gets the hooks (a script that appends
its argv as a JSON line), mining is paused on both while the transaction travels, so its
unconfirmed arrival is observable, then resumed on one of them, so no fork moves the
transaction to another block while the test reads it.
"""

from __future__ import annotations

import logging

import pytest
from framework import json_lines, wait_until
from network_support import start_network, wait_confirmed
from test_node_hooks import ZERO_HASH, hook_line, write_hook

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.p2p_hooks")


def test_wallet_and_block_hooks_fire_for_a_peers_transaction(harness):
    a, b = start_network(harness, 2)
    script = write_hook(harness.base_dir)
    wallet_rec, block_rec = harness.base_dir / "wallet.jsonl", harness.base_dir / "block.jsonl"
    b.stop()
    b.set_conf(walletnotify=hook_line(script, wallet_rec, "%s", "%c", "%n", "%b", "%e"),
               blocknotify=hook_line(script, block_rec, "%s"))
    b.start()
    wait_until(lambda: b.getinfo()["connections"] == 1, msg="b reconnected")

    stream = a.create("stream", "orders", True)
    wait_confirmed([a, b], stream)
    b.subscribe("orders")
    for node in (a, b):
        node.pause("mining")
    txid = a.publish("orders", "PO-7", {"json": {"qty": 7}})
    log.info("the transaction reaches b unconfirmed: first-seen call")
    first = wait_until(lambda: [r for r in json_lines(wallet_rec) if r[0] == txid],
                       msg="walletnotify on b for the relayed transaction")
    assert first == [[txid, "1", "-1", ZERO_HASH, stream]]

    # One miner resumes: the one that did not sign the tip, so the diversity rule lets it sign
    # the next block. Both at once could fork, and the reorganisation would move the
    # transaction to another block between the reads below.
    tip_miner = a.getblock(a.getbestblockhash())["miner"]
    miner = b if tip_miner == a.getaddresses()[0] else a
    miner.resume("mining")
    wait_confirmed([a, b], txid)
    tx = b.getrawtransaction(txid, 1)
    height = b.getblock(tx["blockhash"])["height"]
    calls = wait_until(lambda: (lambda rs: rs if len(rs) == 2 else None)(
        [r for r in json_lines(wallet_rec) if r[0] == txid]), msg="confirmation call on b")
    assert calls[1] == [txid, "0", str(height), tx["blockhash"], stream]
    log.info("blocknotify on b named the block that confirmed it")
    wait_until(lambda: [tx["blockhash"]] in json_lines(block_rec), msg="blocknotify on b")
