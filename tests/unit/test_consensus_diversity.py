"""consensus.diversity: the spacing table of spec §5.3, the diversity rule, and the admin
vote counts of §4.4's worked examples."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.diversity import (
    final_depth,
    millionths,
    required_votes,
    spacing,
    violates_diversity,
)


@pytest.mark.parametrize(("miners", "diversity", "expected"), [
    (20, 0.75, 15),   # chainmill's default: one block in every 15
    (10, 0.3, 3),
    (4, 0.3, 2),
    (3, 0.3, 1),
    (5, 1.0, 5),      # strict round robin
    (7, 0.0, 1),      # no restriction
    (1, 0.75, 1),
    (0, 0.75, 1),
])
def test_diversity_spacing_table(miners, diversity, expected):
    assert spacing(miners, diversity) == expected


@given(st.integers(1, 10_000), st.integers(0, 1_000_000))
def test_diversity_spacing_is_clamped_ceiling(miners, d_millionths):
    d = d_millionths / 1_000_000
    s = spacing(miners, d)
    assert 1 <= s <= miners
    if d_millionths:
        assert s == max(1, math.ceil(miners * d_millionths / 1_000_000))


def test_diversity_millionths_rounds_like_multichain():
    assert millionths(0.3) == 300_000
    assert millionths(0.75) == 750_000
    assert millionths(1.0) == 1_000_000
    assert millionths(0.0000005) == 1


def test_diversity_rule_twenty_miners():
    # spacing 15: after block 100, this miner may sign block 115 at the earliest
    for h in range(101, 115):
        assert violates_diversity(h, 100, 20, 0.75, setup_first_blocks=60)
    assert not violates_diversity(115, 100, 20, 0.75, setup_first_blocks=60)
    assert not violates_diversity(200, 100, 20, 0.75, setup_first_blocks=60)


def test_diversity_rule_exemptions():
    assert not violates_diversity(101, None, 20, 0.75, 60)   # never signed a block
    assert not violates_diversity(59, 58, 20, 0.75, 60)      # setup phase
    assert violates_diversity(60, 59, 20, 0.75, 60)          # first block after setup
    assert not violates_diversity(11, 10, 3, 0.3, 0)         # spacing 1: no restriction
    assert violates_diversity(11, 10, 4, 0.3, 0)             # spacing 2: no two in a row
    assert not violates_diversity(12, 10, 4, 0.3, 0)


def test_diversity_final_depth_is_the_spacing():
    assert final_depth(20, 0.75) == 15
    assert final_depth(1, 0.75) == 1


@pytest.mark.parametrize(("admins", "consensus", "expected"), [
    (5, 0.6, 3),   # §4.4: ceil(3.0)
    (4, 0.5, 2),   # ceil(2.0)
    (3, 0.5, 2),   # ceil(1.5)
    (1, 0.5, 1),
    (2, 0.5, 1),
    (10, 1.0, 10),
    (10, 0.0, 1),  # zero: a single admin suffices
    (0, 0.5, 1),   # at least one
])
def test_diversity_required_votes_worked_examples(admins, consensus, expected):
    assert required_votes(admins, consensus, height=100, setup_first_blocks=60) == expected


def test_diversity_required_votes_during_setup_is_one():
    assert required_votes(5, 0.6, height=59, setup_first_blocks=60) == 1
    assert required_votes(5, 0.6, height=60, setup_first_blocks=60) == 3
