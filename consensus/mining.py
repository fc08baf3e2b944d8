"""Mining turnover: which eligible miner should try first for the next block.

Not a validity rule (any eligible miner's block is valid); it decides how long this node waits
before it mines, so that miners take turns instead of racing. Eligible miners are ranked by a
blend of a stable rotation (the one that waited longest goes first) and a pseudo-random order
seeded by the parent hash: turnover 0 gives the stable rotation, 1 a fair random draw.
"""

from __future__ import annotations

import hashlib

from consensus.diversity import violates_diversity
from consensus.rules import Rules, has_permission
from consensus.state import ChainState

BACKUP_STEP = 0.5
"""Each rank waits this many target block times more than the one before it."""


def eligible_miners(state: ChainState, rules: Rules, height: int,
                    extra: tuple[bytes, ...] = ()) -> list[bytes]:
    """Addresses that may sign the block at `height` (mine permission, diversity respected)."""
    candidates = set(state.holders("mine", height)) | {
        a for a in extra if has_permission(state, rules, a, "mine", height)
    }
    miners = max(1, len(state.holders("mine", height)))
    return sorted(
        a for a in candidates
        if not violates_diversity(height, state.last_mined.get(a), miners,
                                  rules.mining_diversity, rules.setup_first_blocks)
    )


def mining_order(state: ChainState, rules: Rules, height: int, prev_hash: bytes,
                 turnover: float, extra: tuple[bytes, ...] = ()) -> list[bytes]:
    """The eligible miners for `height` in the order they try (first = whose turn it is):
    the rotation (longest wait first) and the draw seeded by `prev_hash`, blended by
    `turnover`. `extra`: addresses to consider beside the holders of mine (see
    eligible_miners)."""
    eligible = eligible_miners(state, rules, height, extra)
    by_wait = sorted(eligible, key=lambda a: (state.last_mined.get(a, -1), a))
    by_luck = sorted(eligible, key=lambda a: hashlib.sha256(prev_hash + a).digest())
    t = min(1.0, max(0.0, turnover))
    score = {a: (1 - t) * by_wait.index(a) + t * by_luck.index(a) for a in eligible}
    return sorted(eligible, key=lambda a: (score[a], a))


def mining_rank(state: ChainState, rules: Rules, me: bytes, height: int, prev_hash: bytes,
                turnover: float) -> int | None:
    """This miner's place in line for `height` (0 = first), or None if it may not mine it."""
    order = mining_order(state, rules, height, prev_hash, turnover, (me,))
    return order.index(me) if me in order else None


def mining_delay(rank: int, target_block_time: float) -> float:
    """Extra seconds a miner of this rank waits beyond the target time before mining."""
    return rank * BACKUP_STEP * target_block_time
