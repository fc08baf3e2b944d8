"""A node stopped in the middle of a catch-up stops promptly and loses nothing.

What: node0 holds a chain of several sync batches (items of 200 kB of raw data); a late
joiner starts catching up through it and is stopped as soon as its log shows the first
batch connected, while later batches are on their way, being checked and connected. It
must exit by itself within the harness's stop timeout; started again, it carries on from
the blocks it kept and ends with node0's tip and stream contents.

How: 0.2 s blocks, no empty blocks; the items are published a few at a time so that they
span many blocks (as test_p2p_sync_batches).
"""

from __future__ import annotations

import logging
import time

import pytest
from framework import sync_blocks
from network_support import (
    add_joiner,
    publish_blobs,
    start_network,
    stream_digest,
    wait_all_confirmed,
    wait_confirmed,
    wait_for_log,
)

from node.p2p.network import SYNC_BYTES

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.p2p_sync_stop")

ITEM_BYTES = 200_000
ITEMS = 2 * SYNC_BYTES // ITEM_BYTES + 4


def test_late_joiner_stopped_mid_sync_exits_and_resumes(harness):
    (a,) = start_network(harness, 1, block_time=0.2)
    wait_confirmed([a], a.create("stream", "blobs", True))

    log.info("publish %d items of %d bytes, a few per block", ITEMS, ITEM_BYTES)
    txids = publish_blobs(a, "blobs", ITEMS, ITEM_BYTES)
    wait_all_confirmed([a], "blobs", set(txids), timeout=120)
    expected = stream_digest(a, "blobs")

    log.info("a late joiner starts catching up and is stopped after its first batch")
    late = add_joiner(harness, a)
    late.start()
    a.grant(late.address, "connect,send,receive")
    wait_for_log(late, "sync: height", timeout=60)
    t0 = time.monotonic()
    late.stop(timeout=10)
    log.info("stopped in %.2f s", time.monotonic() - t0)

    log.info("started again, it resumes from what it kept")
    late.start()
    sync_blocks([a, late], timeout=120)
    late.subscribe("blobs")
    assert stream_digest(late, "blobs") == expected
    assert late.getbestblockhash() == a.getbestblockhash()
