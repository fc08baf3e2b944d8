"""Relay: an item published on any node is visible on every node within a few block times.

What: in a network of three nodes (full mesh, all miners), an item published on each node in
turn appears in the other two nodes' `liststreamitems` first unconfirmed or confirmed, and
then confirmed in the same block on all three; a stream created on one node is known to the
others. Each item must reach every node within a few block times (measured and logged).

How: 0.2 s blocks, mine-empty-rounds=0 (blocks only for transactions), so each publish is
announced by inventory, fetched by the peers and mined by whichever node's turn it is.
"""

from __future__ import annotations

import logging
import time

import pytest
from framework import sync_blocks, wait_until
from network_support import start_network, wait_confirmed

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.p2p_propagation")

BLOCK_TIME = 0.2
FEW_BLOCK_TIMES = 10 * BLOCK_TIME + 2.0
"""The relay budget per item: ten block times plus slack for a loaded 2-core machine."""


def item_on(node, stream: str, txid: str) -> dict | None:
    for item in node.liststreamitems(stream, False, 100, -100):
        if item["txid"] == txid:
            return item
    return None


def test_items_published_anywhere_reach_every_node(harness):
    nodes = start_network(harness, 3, block_time=BLOCK_TIME)
    a = nodes[0]

    log.info("a stream created on node0 becomes known to every node")
    stream_txid = a.create("stream", "parts", True)
    wait_confirmed(nodes, stream_txid)
    for n in nodes:
        n.subscribe("parts")

    log.info("publish on each node in turn; every node sees every item")
    seen_after: list[float] = []
    published: list[str] = []
    for round_ in range(2):
        for src in nodes:
            t0 = time.monotonic()
            txid = src.publish("parts", f"from-node{src.index}-{round_}",
                               {"json": {"node": src.index, "round": round_}})
            published.append(txid)
            for dst in nodes:
                wait_until(lambda dst=dst, txid=txid: item_on(dst, "parts", txid),
                           timeout=FEW_BLOCK_TIMES,
                           msg=f"item {txid[:12]} from node{src.index} on node{dst.index}")
            seen_after.append(time.monotonic() - t0)
            log.info("item from node%d visible on all 3 after %.2f s", src.index, seen_after[-1])

    log.info("and confirmed in the same block everywhere")
    wait_confirmed(nodes, *published, timeout=FEW_BLOCK_TIMES)
    sync_blocks(nodes)
    views = [{i["txid"]: (i["blockhash"], i["keys"], i["data"])
              for i in n.liststreamitems("parts", True, 100)} for n in nodes]
    assert views[0] == views[1] == views[2]
    assert set(views[0]) == set(published)
    for n in nodes:
        assert n.getmempoolinfo()["size"] == 0
    log.info("relay latency: max %.2f s over %d items", max(seen_after), len(seen_after))
