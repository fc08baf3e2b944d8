"""Partition and heal: both halves publish, the network ends on one tip, no item is lost.

What: four nodes, all miners, mining-diversity 0.75 (the default), so the spacing is
ceil(4 x 0.75) = 3 and a miner may sign one block in three. The links between two halves are
cut (addnode remove + disconnectnode both ways, so nobody redials); items are published on
every node on both sides; then the links are restored. Two splits, one after the other on
the same network:

- 3 + 1: the three-node side keeps rotating and confirms its items; the single node has no
  peer and, with mining-requires-peers, mines nothing: its items wait in its mempool.
- 2 + 2: each side has two miners and stalls by the diversity rule after at most two blocks
  (its two miners signed the last spacing - 1 = 2 blocks) — by design, a side without
  enough miners cannot keep growing. Both sides may confirm a block or two first, so after
  the heal one side's blocks lose (longest chain, then lower tip hash) and their items go
  back to the mempool.

After each heal every node is on the same tip, every item published on either side is
confirmed on every node (back on the chain after a reorganisation or mined from the
mempool), and the mempools are empty.

How: 0.2 s blocks, no empty blocks. A side is "done" when its items are confirmed on its
nodes or it is stalled by the diversity rule (checked from the miners of its last blocks,
never by sleeping).
"""

from __future__ import annotations

import logging

import pytest
from framework import TestNode, sync_blocks, wait_until
from network_support import (
    confirmations,
    heal_link,
    log_lines,
    miners_by_height,
    partition,
    peer_addresses,
    start_network,
    stream_digest,
    wait_all_confirmed,
    wait_confirmed,
    wait_for_mesh,
)

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.p2p_partition")


def publish_on(nodes: list[TestNode], tag: str, per_node: int = 3) -> dict[str, int]:
    """`per_node` items on each node; txid -> node index."""
    out = {}
    for n in nodes:
        for i in range(per_node):
            out[n.publish("parts", f"{tag}-n{n.index}-{i}", {"json": {"tag": tag, "i": i}})] = \
                n.index
    return out


def grow(nodes: list[TestNode], blocks: int, tag: str) -> dict[str, int]:
    """Publish one item at a time, rotating over `nodes`, until they have mined `blocks`
    more blocks; txid -> node index."""
    out: dict[str, int] = {}
    target = nodes[0].getblockcount() + blocks
    i = 0
    while nodes[0].getblockcount() < target:
        n = nodes[i % len(nodes)]
        txid = n.publish("parts", f"{tag}-{i}", {"json": {"tag": tag, "i": i}})
        out[txid] = n.index
        wait_confirmed(nodes, txid)
        i += 1
    return out


def stalled_by_diversity(side: list[TestNode]) -> bool:
    """True when no miner of `side` may sign the next block on its tip: each of them
    signed one of the last spacing - 1 blocks."""
    node = side[0]
    tip = node.getblockcount()
    spacing = node.getinfo()["finaldepth"]
    recent = set(miners_by_height(node, tip - spacing + 2, tip).values())
    return {n.getaddresses()[0] for n in side} <= recent


def side_done(side: list[TestNode], txids: set[str]) -> bool:
    tips = {n.getbestblockhash() for n in side}
    if len(tips) != 1:
        return False
    confirmed = all(confirmations(n, t) >= 1 for n in side for t in txids)
    return confirmed or stalled_by_diversity(side)


def heal(left: list[TestNode], right: list[TestNode]) -> None:
    for a in left:
        for b in right:
            heal_link(a, b)


def reorg_count(nodes: list[TestNode]) -> int:
    return sum(len(log_lines(n, "reorganisation: replacing")) for n in nodes)


def converge(nodes: list[TestNode], published: dict[str, int]) -> None:
    """Every published item confirmed on every node, one tip, empty mempools."""
    wait_all_confirmed(nodes, "parts", set(published), timeout=60)
    for n in nodes:
        n.wait_for_empty_mempool()
    sync_blocks(nodes)
    digests = [stream_digest(n, "parts") for n in nodes]
    assert all(d == digests[0] for d in digests)


def test_partitions_heal_onto_one_tip_without_losing_items(harness):
    nodes = start_network(harness, 4)
    assert nodes[0].getinfo()["finaldepth"] == 3
    wait_confirmed(nodes, nodes[0].create("stream", "parts", True))
    for n in nodes[1:]:
        n.subscribe("parts")
    log.info("grow the chain past setup-first-blocks with every miner taking turns")
    warm_from = nodes[0].getblockcount() + 1
    published = grow(nodes, 12, "warm-up")
    # Every miner signed some of the warm-up blocks. (Not "each of the last few": under load a
    # slow miner may sit out a round while three others keep the spacing of 3.)
    miners = set(miners_by_height(nodes[0], warm_from, nodes[0].getblockcount()).values())
    assert miners == {n.getaddresses()[0] for n in nodes}

    log.info("split 3 + 1")
    major, minor = nodes[:3], nodes[3:]
    partition(major, minor)
    assert minor[0].getinfo()["connections"] == 0
    minor_height = minor[0].getblockcount()
    split_height = major[0].getblockcount()
    on_major = publish_on(major, "3v1")
    on_minor = publish_on(minor, "3v1")
    wait_all_confirmed(major, "parts", set(on_major), timeout=30)
    on_major |= grow(major, 4, "3v1-more")  # three of four miners keep rotating
    published |= on_major | on_minor
    log.info("the three-node side confirmed its items, height %d -> %d", split_height,
             major[0].getblockcount())
    assert major[0].getblockcount() >= split_height + 4
    assert minor[0].getblockcount() == minor_height  # no peer: it does not mine
    assert set(minor[0].getrawmempool()) == set(on_minor)

    log.info("heal 3 + 1")
    heal(minor, major)
    wait_for_mesh(nodes)
    converge(nodes, published)
    log.info("one tip at height %d; the single node's items are confirmed everywhere",
             nodes[0].getblockcount())

    log.info("split 2 + 2")
    left, right = nodes[:2], nodes[2:]
    partition(left, right)
    for n in nodes:
        assert peer_addresses(n) == {o.getaddresses()[0] for o in (left if n in left else right)
                                     if o is not n}
    split_height = nodes[0].getblockcount()
    reorgs_before = reorg_count(nodes)
    on_left = publish_on(left, "2v2")
    on_right = publish_on(right, "2v2")
    published |= on_left | on_right
    for side, txids in ((left, set(on_left)), (right, set(on_right))):
        wait_until(lambda side=side, txids=txids: side_done(side, txids), timeout=30,
                   msg=f"side {[n.index for n in side]} to confirm its items or stall")
    heights = [left[0].getblockcount(), right[0].getblockcount()]
    log.info("halves at heights %s (split at %d); stalled by diversity: %s", heights,
             split_height, [stalled_by_diversity(left), stalled_by_diversity(right)])
    assert max(heights) <= split_height + 2  # a side of 2 of 4 miners cannot go further

    log.info("heal 2 + 2")
    heal(left, right)
    wait_for_mesh(nodes)
    converge(nodes, published)
    reorgs = reorg_count(nodes) - reorgs_before
    log.info("one tip at height %d after %d reorganisation(s); %d items published in all, "
             "none lost", nodes[0].getblockcount(), reorgs, len(published))
    if min(heights) > split_height:
        assert reorgs >= 1, "both halves grew, so the losing half must have reorganised"
