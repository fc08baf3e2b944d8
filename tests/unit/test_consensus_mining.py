"""consensus.mining: the order in which eligible miners try for the next block ("whose turn").

`mining_order` is what the node reports (getmininginfo's `nextminers`, the console's
overview); `mining_rank` is what each miner acts on. These tests pin that the two agree for
every miner, that the order holds exactly the miners the diversity rule allows, and what
turnover 0 (a stable rotation: the longest wait first) and 1 (a draw seeded by the parent
hash) mean.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from consensus.diversity import violates_diversity
from consensus.mining import eligible_miners, mining_order, mining_rank
from consensus.rules import Rules
from consensus.state import ChainState

RULES = Rules(chain_id=b"c" * 32, anyone_can=frozenset(), admin_consensus={},
              setup_first_blocks=1, mining_diversity=0.75, max_block_size=1 << 20,
              max_tx_size=1 << 20, max_items_per_tx=32, max_item_size=1 << 16,
              genesis_pubkey=b"", root_stream_name="root", root_stream_open=True,
              target_block_time=1.0)
MINERS = [bytes([i]) * 20 for i in range(1, 7)]


def _state(height: int, last: dict[bytes, int], miners: list[bytes] = MINERS) -> ChainState:
    perms = {(a, b"", "mine"): (0, 2**31) for a in miners}
    return ChainState(height=height, perms=perms, last_mined=dict(last))


@given(st.integers(2, 6), st.lists(st.integers(-1, 40), min_size=6, max_size=6),
       st.sampled_from([0.0, 0.3, 0.5, 0.75, 1.0]), st.floats(0.0, 1.0), st.binary(min_size=32,
                                                                                max_size=32))
def test_mining_order_is_the_miners_ranks_and_the_diversity_rule(n, lasts, diversity, turnover,
                                                                 prev_hash):
    miners = MINERS[:n]
    height = 41
    rules = replace(RULES, mining_diversity=diversity)
    last = {a: h for a, h in zip(miners, lasts, strict=False) if h >= 0}
    state = _state(height - 1, last, miners)
    order = mining_order(state, rules, height, prev_hash, turnover)
    allowed = [a for a in miners
               if not violates_diversity(height, last.get(a), n, diversity, 1)]
    assert sorted(order) == sorted(allowed) == eligible_miners(state, rules, height)
    for a in miners:
        rank = mining_rank(state, rules, a, height, prev_hash, turnover)
        assert rank == (order.index(a) if a in order else None)


def test_mining_order_turnover_zero_is_the_longest_wait_first():
    a, b, c = MINERS[:3]
    state = _state(10, {a: 9, b: 4, c: 7}, [a, b, c])
    rules = replace(RULES, mining_diversity=0.3)  # spacing 1: everyone may mine
    assert mining_order(state, rules, 11, b"h" * 32, 0.0) == [b, c, a]
    never = MINERS[3]
    state = _state(10, {a: 9, b: 4, c: 7}, [a, b, c, never])
    assert mining_order(state, rules, 11, b"h" * 32, 0.0)[0] == never


def test_mining_order_turnover_one_is_the_draw_seeded_by_the_parent_hash():
    state = _state(10, {a: i for i, a in enumerate(MINERS)})
    rules = replace(RULES, mining_diversity=0.0)
    for seed in (b"x" * 32, b"y" * 32):
        assert mining_order(state, rules, 11, seed, 1.0) == sorted(
            MINERS, key=lambda a: hashlib.sha256(seed + a).digest())


def test_mining_order_with_strict_diversity_names_the_one_miner_allowed():
    """Three miners at 0.75 (spacing 3): only the one that signed neither of the last two
    blocks may sign the next, whatever the turnover."""
    a, b, c = MINERS[:3]
    state = _state(20, {a: 20, b: 19, c: 18}, [a, b, c])
    for turnover in (0.0, 0.5, 1.0):
        assert mining_order(state, RULES, 21, b"p" * 32, turnover) == [c]
