"""Reads during a block: every RPC read sees the chain either before or after a block.

What (issue 14.4): while a block's store commit runs, its items used to be both confirmed (in
the store) and pending (still in the mempool): `liststreams` counted them twice and
`liststreamitems` returned them twice. A reader thread hammering both while items are
published over several blocks must never see a duplicate txid or more items than were published.

How: one node with 0.2 s blocks; a publisher thread sends `publishmulti` calls of 30 items
(so each block's commit takes a while) and counts the items it has sent before each call; a
reader thread with its own RPC connection reads `liststreams` and `liststreamitems` in a loop
until the publisher is done and every item is confirmed.
"""

from __future__ import annotations

import logging
import threading

import pytest
from framework import wait_until

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.rpc_consistent_reads")

BATCH = 30
"""Items per publishmulti (max-std-op-returns-count is 32)."""
BLOCKS = 6
"""Publishing goes on until this many blocks have been mined meanwhile."""


def test_reads_during_blocks_never_see_an_item_twice(harness):
    node = harness.start_node()
    node.create("stream", "flow", True)
    node.wait_for_empty_mempool()
    sent = [0]  # items sent or being sent: an upper bound for any read
    done = threading.Event()
    problems: list[str] = []
    reads = [0]

    def publisher() -> None:
        client = node.client()
        first = client.call("getblockcount")
        try:
            c = 0
            while client.call("getblockcount") < first + BLOCKS:
                c += 1
                sent[0] += BATCH
                client.call("publishmulti", "flow", [
                    {"key": f"c{c}-{i}", "data": {"json": {"c": c, "i": i}}}
                    for i in range(BATCH)])
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            problems.append(f"publisher failed: {e!r}")
        finally:
            done.set()

    def reader() -> None:
        client = node.client()
        while not done.is_set() or reads[0] < 5:
            count = client.call("liststreams", "flow")[0]["items"]
            items = client.call("liststreamitems", "flow", False, 100_000)
            bound = sent[0]
            txids = [(i["txid"], i["keys"][0]) for i in items]
            reads[0] += 1
            if count > bound:
                problems.append(f"liststreams counted {count} items, {bound} sent")
            if len(set(txids)) != len(txids):
                problems.append(f"liststreamitems returned {len(txids) - len(set(txids))} "
                                "items twice")
            if len(items) > bound:
                problems.append(f"liststreamitems returned {len(items)} items, {bound} sent")

    threads = [threading.Thread(target=publisher), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.info("%d reads over %d published items", reads[0], sent[0])
    assert not problems, problems[:5]
    wait_until(lambda: node.getmempoolinfo()["size"] == 0, msg="every item confirmed")
    heights = {i["blockhash"] for i in node.liststreamitems("flow", True, 100_000)}
    assert len(heights) > 3, "the items must have been spread over several blocks"
    assert node.liststreams("flow")[0]["items"] == sent[0]
