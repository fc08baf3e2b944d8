"""lock-admin-mine-rounds: a reorganisation may not undo old admin/mine permission changes."""

from __future__ import annotations

from consensus.forks import locked_change


def test_consensus_forks_old_mine_change_locks_a_deep_reorganisation():
    changes = [(0, "admin"), (5, "mine"), (6, "send")]
    # 2 miners, 10 rounds: a change at least 20 blocks deep cannot be undone.
    assert locked_change(changes, fork_height=4, tip=25, lock_rounds=10, miners=2) == 5
    assert locked_change(changes, fork_height=4, tip=24, lock_rounds=10, miners=2) is None


def test_consensus_forks_changes_below_the_fork_or_other_permissions_do_not_lock():
    assert locked_change([(5, "mine")], fork_height=5, tip=100, lock_rounds=1, miners=1) is None
    assert locked_change([(7, "send"), (8, "create")], fork_height=1, tip=100, lock_rounds=1,
                         miners=1) is None


def test_consensus_forks_zero_rounds_switch_the_lock_off():
    assert locked_change([(5, "admin")], fork_height=0, tip=1000, lock_rounds=0,
                         miners=3) is None
