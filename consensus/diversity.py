"""The mining-diversity rule and the finality depth it implies.

spacing = max(1, ceil(miners x diversity)), clamped to the number of miners; a block at height
h signed by A is invalid if A signed any of the previous spacing - 1 blocks. With diversity
d > 0.5 fewer than s = spacing colluding miners cannot outpace the rest, so an item s blocks
deep is final.
"""

MILLION = 1_000_000


def millionths(value: float) -> int:
    """A fraction as the integer millionths MultiChain computes with (round half up)."""
    return int(value * MILLION + 0.5)


def spacing(miners: int, diversity: float) -> int:
    """Blocks a miner must wait: 20 miners at 0.75 give 15."""
    d = millionths(diversity)
    if miners <= 0 or d <= 0:
        return 1
    s = (miners * d - 1) // MILLION + 1
    return max(1, min(s, miners))


def violates_diversity(height: int, last_signed: int | None, miners: int, diversity: float,
                       setup_first_blocks: int) -> bool:
    """True when a block at `height` by a miner who last signed `last_signed` breaks the rule."""
    if height < setup_first_blocks or last_signed is None:
        return False
    return height - last_signed <= spacing(miners, diversity) - 1


def final_depth(miners: int, diversity: float) -> int:
    """Confirmations after which an item counts as final (the `finaldepth` extension)."""
    return spacing(miners, diversity)


def required_votes(admins: int, consensus: float, height: int, setup_first_blocks: int) -> int:
    """Admin votes needed for a change: ceil(admins x consensus), at least 1, 1 during setup."""
    if height < setup_first_blocks:
        return 1
    v = millionths(consensus)
    if v <= 0 or admins <= 0:
        return 1
    return (admins * v - 1) // MILLION + 1
