"""Catch-up: a node that joins late syncs a chain of more than 10,000 items exactly.

What: two nodes build a chain carrying 10,240 stream items (publishmulti transactions of 32
items sent in JSON-RPC batches to node0, plus a few items published on node1); a third node
then joins through node0, is granted connect,send,receive and catches up. Its stream contents
equal the others' item for item (txid, vout, keys, publisher, data, block), its tip is
theirs, and its log shows the sync progress lines (height reached / peer height, items/s).
Items published after the catch-up reach it by relay like on any other node.

How: 0.2 s blocks, no empty blocks; the late joiner is not a miner, so it does not change
the mining rotation of the two others.
"""

from __future__ import annotations

import logging
import re
import time

import pytest
from framework import sync_blocks, wait_until
from network_support import (
    add_joiner,
    log_lines,
    publish_items,
    start_network,
    stream_digest,
    wait_all_confirmed,
    wait_confirmed,
)

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.p2p_catchup")

ITEMS = 10_240
ROUND = 640
SYNC_LINE = re.compile(r"sync: height (\d+) / peer height (\d+) \((\d+) blocks, (\d+) items/s\)")


def test_late_joiner_catches_up_ten_thousand_items_exactly(harness):
    a, b = start_network(harness, 2, block_time=0.2)
    wait_confirmed([a, b], a.create("stream", "serials", True))
    b.subscribe("serials")

    log.info("publish %d items on node0 (publishmulti in batches) and a few on node1", ITEMS)
    t0 = time.monotonic()
    txids = []
    for first in range(0, ITEMS, ROUND):  # in rounds, so the items span many blocks
        txids += publish_items(a, "serials", ROUND, prefix="SN", start=first)
        wait_until(lambda: a.getmempoolinfo()["size"] == 0, msg="node0's mempool to empty")
    txids += publish_items(b, "serials", 64, prefix="B")
    wait_all_confirmed([a, b], "serials", set(txids), timeout=120)
    log.info("%d transactions confirmed on both nodes after %.1f s (height %d)",
             len(txids), time.monotonic() - t0, a.getblockcount())
    expected = stream_digest(a, "serials")
    assert len(expected) == ITEMS + 64
    assert stream_digest(b, "serials") == expected

    log.info("a third node joins late and is granted connect,send,receive")
    late = add_joiner(harness, a)
    late.start()
    t0 = time.monotonic()
    a.grant(late.address, "connect,send,receive")
    sync_blocks([a, b, late], timeout=120)
    log.info("late joiner at the tip (height %d) %.1f s after the grant",
             late.getblockcount(), time.monotonic() - t0)
    late.subscribe("serials")
    assert stream_digest(late, "serials") == expected
    assert late.getstreaminfo("serials")["items"] == ITEMS + 64

    log.info("its log shows the sync progress")
    progress = [SYNC_LINE.search(line) for line in log_lines(late, "sync: height")]
    progress = [p for p in progress if p]
    assert progress, "no sync progress lines in the late joiner's debug.log"
    heights = [int(p.group(1)) for p in progress]
    assert heights == sorted(heights)
    assert max(int(p.group(2)) for p in progress) >= heights[-1]
    assert sum(int(p.group(3)) for p in progress) >= late.getblockcount()
    log.info("%d sync lines, last: %s", len(progress), progress[-1].group(0))

    log.info("new items still reach it by relay")
    new = publish_items(b, "serials", 5, prefix="after-")
    wait_confirmed([a, b, late], *new)
    wait_until(lambda: stream_digest(late, "serials") == stream_digest(a, "serials"),
               msg="the late joiner's stream to equal node0's after new items")
