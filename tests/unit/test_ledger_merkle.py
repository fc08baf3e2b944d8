"""ledger.merkle: domain-separated leaves and nodes, odd nodes carried up (not duplicated),
so [a, b, c] and [a, b, c, c] have different roots (no CVE-2012-2459 ambiguity)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.merkle import merkle_root
from ledger.types import ZERO_HASH

A, B, C, D, E = (bytes([i]) * 32 for i in range(1, 6))


def leaf(t: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + t).digest()


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


@pytest.mark.parametrize(("txids", "expected"), [
    ([], ZERO_HASH),
    ([A], leaf(A)),
    ([A, B], node(leaf(A), leaf(B))),
    ([A, B, C], node(node(leaf(A), leaf(B)), leaf(C))),
    ([A, B, C, D, E], node(node(node(leaf(A), leaf(B)), node(leaf(C), leaf(D))), leaf(E))),
], ids=["0", "1", "2", "3", "5"])
def test_merkle_root_shapes(txids, expected):
    assert merkle_root(txids) == expected


def test_merkle_duplicated_last_leaf_changes_the_root():
    assert merkle_root([A, B, C]) != merkle_root([A, B, C, C])
    assert merkle_root([A, B]) != merkle_root([A, B, B])
    assert merkle_root([A]) != merkle_root([A, A])


def test_merkle_a_leaf_is_not_a_node():
    # A one-transaction block whose txid happens to be an inner node's preimage half.
    assert merkle_root([A]) != A
    assert merkle_root([node(leaf(A), leaf(B))]) != merkle_root([A, B])


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=20, unique=True))
def test_merkle_root_depends_on_content_and_order(txids):
    root = merkle_root(txids)
    assert len(root) == 32
    if len(txids) > 1:
        assert merkle_root(txids[::-1]) != root
        assert merkle_root(txids[:-1]) != root
    assert merkle_root([*txids, txids[-1]]) != root
