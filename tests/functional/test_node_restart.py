"""Restarting a node: clean stop, SIGTERM, SIGKILL with a stale pid file, and --reindex.

What: after a clean restart every item, stream, permission and block is still there and the
chain continues from the same tip; after SIGKILL the node starts again without manual repair
(the pid file left behind is recognised as stale) and keeps what was confirmed; a second
node process on the same chain is refused while the first runs; `--reindex` rebuilds the
same items, keys, publishers and permissions from the stored blocks.

How: one node per test with mine-empty-rounds=0, so blocks are mined only for transactions
and the height is stable across restarts.
"""

from __future__ import annotations

import logging
import subprocess

import pytest
from framework import chain_snapshot, chainmill_command, child_env, scaled

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.node_restart")


def publish_some(node, stream: str, n: int, prefix: str) -> list[str]:
    return [node.publish(stream, [f"{prefix}{i}", prefix], {"json": {"i": i}}) for i in range(n)]


def test_restart_keeps_data_and_continues_the_chain(harness):
    node = harness.start_node()
    user = node.getnewaddress()
    node.create("stream", "orders", True)
    node.create("stream", "closed", False)
    node.grant(user, "send")
    node.grant(user, "closed.write")
    txids = publish_some(node, "orders", 5, "po")
    txids.append(node.publishfrom(user, "closed", "audit", {"text": "ok"}))
    node.wait_for_confirmation(*txids)
    before = chain_snapshot(node, ["orders", "closed"])

    log.info("clean stop via RPC and start again: everything is still there")
    node.restart()
    assert chain_snapshot(node, ["orders", "closed"]) == before
    assert node.getaddresses() == before_addresses(node, user)

    log.info("SIGTERM stops cleanly too (exit 0, pid file removed)")
    assert node.pid_path.exists()
    assert node.terminate() == 0
    assert not node.pid_path.exists()
    node.start()
    assert chain_snapshot(node, ["orders", "closed"]) == before

    log.info("the chain continues from the same tip")
    tip, height = before["tip"], before["height"]
    nxt = node.publish("orders", "po-next", {"text": "after restart"})
    node.wait_for_confirmation(nxt)
    block = node.getblock(node.getrawtransaction(nxt, 1)["blockhash"])
    assert block["height"] == height + 1
    assert block["previousblockhash"] == tip
    assert node.verifypermission(user, "send") is True
    node.publishfrom(user, "closed", "audit", {"text": "still allowed"})


def before_addresses(node, user: str) -> list[str]:
    addresses = node.getaddresses()
    assert user in addresses and len(addresses) == 2
    return addresses


def test_sigkill_then_restart_without_repair(harness):
    node = harness.start_node()
    node.create("stream", "orders", True)
    confirmed = publish_some(node, "orders", 10, "c")
    node.wait_for_confirmation(*confirmed)
    height = node.getblockcount()

    log.info("a second node process for the same chain is refused while the first runs")
    second = subprocess.run(
        [*chainmill_command(), "start", node.chain, "--datadir", str(node.datadir),
         "--rpcport", str(harness.port_factory()), "--port", str(harness.port_factory())],
        capture_output=True, text=True, env=child_env(), timeout=scaled(60))
    assert second.returncode != 0
    assert "already running" in second.stderr + second.stdout
    assert node.getblockcount() >= height  # the first node is unaffected

    log.info("SIGKILL while transactions are arriving")
    publish_some(node, "orders", 20, "lost-or-kept")
    node.kill()
    assert node.pid_path.exists()  # stale: its process is gone

    log.info("start again: no repair needed, confirmed items are there")
    node.start()
    items = node.liststreamitems("orders", False, 1000)
    assert [i["txid"] for i in items[:10]] == confirmed
    pooled = set(node.getrawmempool())
    assert all(i["confirmations"] >= 1 or i["txid"] in pooled for i in items)
    assert node.getblockcount() >= height
    assert len(node.listblocks(f"0-{node.getblockcount()}")) == node.getblockcount() + 1

    log.info("and it keeps mining")
    nxt = node.publish("orders", "after-kill", {"text": "new"})
    node.wait_for_confirmation(nxt)
    node.stop()
    assert not node.pid_path.exists()


def test_reindex_rebuilds_the_same_state(harness):
    node = harness.start_node()
    user = node.getnewaddress()
    node.create("stream", "orders", True)
    node.create("stream", "Parts", {"restrict": "write"}, {"owner": "mes"})
    node.grant(user, "send")
    node.grant(user, "parts.write")
    txids = publish_some(node, "orders", 8, "o")
    txids.append(node.publishmulti("parts", [
        {"keys": ["p1", "bolt"], "data": {"json": {"n": 1}}},
        {"key": "p2", "data": "cafe"},
    ]))
    txids.append(node.publishfrom(user, "parts", "p3", {"text": "by user"}))
    node.wait_for_confirmation(*txids)
    node.revoke(user, "parts.write")
    node.wait_for_empty_mempool()
    before = chain_snapshot(node, ["orders", "parts"])

    log.info("restart with --reindex: the same items, keys, publishers and permissions")
    node.stop()
    node.start(["--reindex"])
    assert node.getinfo()["reindex"] is True
    assert chain_snapshot(node, ["orders", "parts"]) == before

    log.info("a normal start after the reindex still has it all")
    node.restart([])
    assert chain_snapshot(node, ["orders", "parts"]) == before
