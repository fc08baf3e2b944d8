"""Mining diversity across a network: every block of a 4-miner chain obeys the rule.

What: four nodes, all granted mine, mining-diversity 0.75 (the default), setup-first-blocks
5. The chain grows 45 blocks past the grant of mine to the three joiners; then,
for every block at a height h >= setup-first-blocks, with `miners` = the addresses holding
mine for h (the grant counts from the block after the one confirming it) and
spacing = ceil(miners x 0.75) by the spec's integer formula (§5.3), the block's miner signed
none of the previous spacing - 1 blocks. All four miners took part, each several times;
`getinfo` reports finaldepth = spacing = 3; every node holds the same block list.

How: 0.15 s blocks with mine-empty-rounds=-1 (never stop mining empty blocks), so the chain
grows without a load; the rule is checked from `listblocks` (miner field) and the height at
which the mine grant was confirmed.
"""

from __future__ import annotations

import logging
from collections import Counter

import pytest
from framework import sync_blocks, wait_until
from network_support import start_network

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.p2p_diversity")

DIVERSITY = 0.75
SETUP_FIRST_BLOCKS = 5
BLOCKS_AFTER_GRANT = 45


def spacing(miners: int, diversity: float) -> int:
    """The spec's integer form: (miners x d_millionths - 1) div 1,000,000 + 1, in 1..miners."""
    d = int(diversity * 1_000_000 + 0.5)
    if d == 0 or miners <= 1:
        return 1
    return max(1, min(miners, (miners * d - 1) // 1_000_000 + 1))


def test_four_miners_take_turns_within_the_diversity_rule(harness):
    nodes = start_network(harness, 4, block_time=0.15, params={
        "mining-diversity": DIVERSITY, "setup-first-blocks": SETUP_FIRST_BLOCKS,
        "mine-empty-rounds": -1})
    seed = nodes[0]
    addresses = [n.getaddresses()[0] for n in nodes]
    grant = seed.getrawtransaction(seed.grant_txid, 1)
    grant_height = seed.getblock(grant["blockhash"])["height"]
    log.info("mine granted to the 3 joiners in block %d", grant_height)

    log.info("let the chain grow %d blocks past the grant", BLOCKS_AFTER_GRANT)
    target = grant_height + BLOCKS_AFTER_GRANT
    wait_until(lambda: min(n.getblockcount() for n in nodes) >= target, timeout=90,
               interval=0.2, msg=f"all nodes at height {target}")
    for n in nodes:
        n.pause("mining")  # a fixed chain to compare and check
    tip = sync_blocks(nodes, timeout=60)
    height = seed.getblock(tip)["height"]
    blocks = seed.listblocks(f"0-{height}")
    for n in nodes[1:]:
        assert n.listblocks(f"0-{height}") == blocks

    log.info("check every block from height %d to %d", SETUP_FIRST_BLOCKS, height)
    miner_at = {b["height"]: b["miner"] for b in blocks}
    checked = 0
    for h in range(SETUP_FIRST_BLOCKS, height + 1):
        miners = 1 if h <= grant_height else 4
        s = spacing(miners, DIVERSITY)
        previous = {miner_at[k] for k in range(max(0, h - s + 1), h)}
        assert miner_at[h] not in previous, \
            f"block {h} by {miner_at[h]} breaks diversity (spacing {s}, previous {previous})"
        checked += 1
    assert spacing(4, DIVERSITY) == 3
    assert seed.getinfo()["finaldepth"] == 3

    after = Counter(miner_at[h] for h in range(grant_height + 1, height + 1))
    log.info("%d blocks checked; blocks per miner after the grant: %s", checked,
             sorted(after.values()))
    assert set(after) == set(addresses), "not every miner took part"
    assert min(after.values()) >= 3
