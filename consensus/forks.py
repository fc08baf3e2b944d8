"""Fork choice limits: lock-admin-mine-rounds.

A reorganisation may not undo admin or mine permission changes that are older than
lock-admin-mine-rounds mining rounds (a round being one block per permitted miner): a branch
built in private long ago cannot take back who administers and who mines the chain.
"""

from __future__ import annotations

from collections.abc import Iterable

LOCKED_PERMS = frozenset({"admin", "mine"})


def locked_change(changes: Iterable[tuple[int, str]], fork_height: int, tip: int,
                  lock_rounds: int, miners: int) -> int | None:
    """Height of an admin/mine change that a reorganisation back to `fork_height` would undo
    although it is at least `lock_rounds` rounds deep; None when the reorganisation may go on.

    `changes` are (height, permission) of permission changes that took effect.
    """
    if lock_rounds <= 0:
        return None
    depth = lock_rounds * max(1, miners)
    for height, perm in changes:
        if perm in LOCKED_PERMS and height > fork_height and tip - height >= depth:
            return height
    return None
