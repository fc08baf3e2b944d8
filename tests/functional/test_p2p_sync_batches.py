"""Catch-up in several sync batches: a chain larger than one batch syncs exactly, with the
next batch asked for while one is connected (pipelined).

What: two nodes build a chain of about 6 MB (items of 200 kB of raw data, a few per block),
three times the bytes one sync batch carries; a late joiner catches up through node0. Its
log shows several sync batches, in height order, and its stream contents and tip equal the
others'. Items published afterwards still reach it.

How: 0.2 s blocks, no empty blocks; the items are published a few at a time so that they
span many blocks.
"""

from __future__ import annotations

import logging
import re

import pytest
from framework import sync_blocks
from network_support import (
    add_joiner,
    log_lines,
    publish_blobs,
    start_network,
    stream_digest,
    wait_all_confirmed,
    wait_confirmed,
)

from node.p2p.network import SYNC_BYTES

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.p2p_sync_batches")

ITEM_BYTES = 200_000
ITEMS = 3 * SYNC_BYTES // ITEM_BYTES + 2
SYNC_LINE = re.compile(r"sync: height (\d+) / peer height (\d+) \((\d+) blocks")


def test_late_joiner_syncs_a_chain_of_several_batches_exactly(harness):
    a, b = start_network(harness, 2, block_time=0.2)
    wait_confirmed([a, b], a.create("stream", "blobs", True))
    b.subscribe("blobs")

    log.info("publish %d items of %d bytes, a few per block", ITEMS, ITEM_BYTES)
    txids = publish_blobs(a, "blobs", ITEMS, ITEM_BYTES)
    wait_all_confirmed([a, b], "blobs", set(txids), timeout=120)
    expected = stream_digest(a, "blobs")
    assert len(expected) == ITEMS

    log.info("a late joiner catches up through node0")
    late = add_joiner(harness, a)
    late.start()
    a.grant(late.address, "connect,send,receive")
    sync_blocks([a, b, late], timeout=120)
    late.subscribe("blobs")
    assert stream_digest(late, "blobs") == expected
    assert late.getbestblockhash() == a.getbestblockhash()

    progress = [m for line in log_lines(late, "sync: height") if (m := SYNC_LINE.search(line))]
    heights = [int(m.group(1)) for m in progress]
    log.info("%d sync batches: heights %s", len(progress), heights)
    assert len(progress) >= 3, "the chain was expected to take several sync batches"
    assert heights == sorted(heights) and len(set(heights)) == len(heights)
    assert sum(int(m.group(3)) for m in progress) >= late.getblockcount()
    assert not log_lines(late, "misbehaved")

    log.info("and it follows the chain by relay afterwards")
    after = a.publish("blobs", "after", "00")
    wait_confirmed([a, b, late], after)
