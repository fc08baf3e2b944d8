"""Limits: RPC calls that would build a transaction beyond the encoding's limits are refused.

What: the three calls that used to brick a node (issue 14.1): `grant " " send` (a transaction
with no operations), `publish root` with 1,025 keys and `create stream x true` with 70 KB of
custom fields get -8 with a message naming the limit and change nothing; the node keeps
mining, every block still decodes (getblock verbose) and `start --reindex` succeeds; on a
2-node cluster the peers stay connected and both keep mining.

How: real node processes with 0.2 s blocks; a publish after the refused calls must be
confirmed, on a cluster through both nodes.
"""

from __future__ import annotations

import logging

import pytest
from framework import assert_raises_rpc_error, sync_blocks, wait_until
from network_support import start_network, wait_confirmed

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.rpc_limits")

RPC_INVALID_PARAMETER = -8
ROOT = "root"


def bricking_calls(node) -> None:
    """The three calls of issue 14.1; each must be refused with -8 and change nothing."""
    before = node.getmempoolinfo()["size"]
    assert_raises_rpc_error(RPC_INVALID_PARAMETER, "operations", node.grant, " ", "send")
    keys = [f"k{i}" for i in range(1025)]
    assert_raises_rpc_error(RPC_INVALID_PARAMETER, "keys", node.publish, ROOT, keys,
                            {"text": "x"})
    assert_raises_rpc_error(RPC_INVALID_PARAMETER, "custom fields", node.create, "stream",
                            "x", True, {"blob": "a" * 70_000})
    assert node.getmempoolinfo()["size"] == before
    assert all(s["name"] != "x" for s in node.liststreams())


def test_rpc_limits_refused_and_node_keeps_mining_and_reindexes(harness):
    node = harness.start_node()
    log.info("the three bricking calls are refused with -8")
    bricking_calls(node)

    log.info("at the limits themselves the calls are accepted and mined")
    at_limit = node.publish(ROOT, [f"k{i}" for i in range(1024)], {"text": "x"})
    streamed = node.create("stream", "y" * 32, True, {"blob": "a" * 60_000})
    ok = node.publish(ROOT, "after", {"text": "still mining"})
    node.wait_for_confirmation(at_limit, streamed, ok)

    log.info("every block decodes")
    height = node.getblockcount()
    for h in range(height + 1):
        assert node.getblock(str(h), 1)["height"] == h

    log.info("a reindex replays every block")
    node.stop()
    node.start(["--reindex"])
    assert node.getblockcount() >= height
    assert node.getstreaminfo("y" * 32)["createtxid"] == streamed
    again = node.publish(ROOT, "after-reindex", {"text": "mining"})
    node.wait_for_confirmation(again)


def test_rpc_limits_refused_on_a_cluster_which_keeps_mining(harness):
    nodes = start_network(harness, 2, block_time=0.2)
    a, b = nodes
    log.info("the bricking calls on node0 are refused; nothing is relayed")
    bricking_calls(a)
    log.info("both nodes still mine each other's transactions")
    t_a = a.publish(ROOT, "from-a", {"text": "a"})
    t_b = b.publish(ROOT, "from-b", {"text": "b"})
    wait_confirmed(nodes, t_a, t_b)
    sync_blocks(nodes)
    wait_until(lambda: a.getpeerinfo() and b.getpeerinfo(), msg="peers still connected")
