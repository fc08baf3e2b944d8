"""ledger.blocks: strict round trip, header hash, and recovery of the miner's key from the
block signature (bound to the chain id)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_ledger_transactions import CHAIN_A, CHAIN_B, KEY, OTHER_KEY, sample_tx, transactions

from ledger.blocks import HEADER_SIZE, Block, varint_size
from ledger.codec import encode_varint
from ledger.errors import DecodeError, InvalidSignature
from ledger.merkle import merkle_root
from ledger.types import ZERO_HASH


def blocks() -> st.SearchStrategy[Block]:
    return st.builds(
        lambda h, prev, t, txs: Block.build(OTHER_KEY, CHAIN_A, h, prev, t, txs),
        st.integers(0, 2**32 - 1), st.binary(min_size=32, max_size=32),
        st.integers(0, 2**64 - 1), st.lists(transactions(), max_size=3))


@settings(max_examples=60, deadline=None)
@given(blocks())
def test_ledger_block_round_trip(block):
    decoded = Block.decode(block.raw)
    assert decoded.header == block.header
    assert decoded.signature == block.signature
    assert decoded.txs == block.txs
    assert decoded.raw == block.raw
    assert decoded.hash == block.hash
    assert decoded.header.merkle_root == merkle_root([t.txid for t in block.txs])
    assert decoded.miner_pubkey(CHAIN_A) == OTHER_KEY.pubkey


@settings(max_examples=15, deadline=None)
@given(blocks())
def test_ledger_block_refuses_truncated_input_and_trailing_bytes(block):
    raw = block.raw
    for cut in range(len(raw)):
        with pytest.raises(DecodeError):
            Block.decode(raw[:cut])
    with pytest.raises(DecodeError, match="trailing"):
        Block.decode(raw + b"\x00")


def test_ledger_block_refuses_oversize_and_unknown_version():
    block = Block.build(KEY, CHAIN_A, 1, ZERO_HASH, 1000, [sample_tx()])
    with pytest.raises(DecodeError, match="exceeds"):
        Block.decode(block.raw, max_size=len(block.raw) - 1)
    assert Block.decode(block.raw, max_size=len(block.raw)).hash == block.hash
    with pytest.raises(DecodeError, match="version"):
        Block.decode(b"\x02" + block.raw[1:])


def test_ledger_block_miner_is_recovered_from_the_signature():
    block = Block.decode(Block.build(KEY, CHAIN_A, 7, b"\x01" * 32, 1234, []).raw)
    assert block.miner_pubkey(CHAIN_A) == KEY.pubkey
    assert block.miner_hash(CHAIN_A) == KEY.pubkey_hash
    # The same signature checked for another chain names someone else (or nobody).
    elsewhere = Block.decode(block.raw)
    try:
        assert elsewhere.miner_pubkey(CHAIN_B) != KEY.pubkey
    except InvalidSignature:
        pass


def test_ledger_block_hash_covers_the_header_and_the_signature_covers_the_hash():
    block = Block.build(KEY, CHAIN_A, 7, b"\x01" * 32, 1234, [sample_tx()])
    assert block.hash == Block.decode(block.raw).header.hash
    raw = bytearray(block.raw)
    raw[HEADER_SIZE - 1] ^= 1  # the last byte of the header's time
    tampered = Block.decode(bytes(raw))
    assert tampered.hash != block.hash
    try:
        assert tampered.miner_pubkey(CHAIN_A) != KEY.pubkey
    except InvalidSignature:
        pass


def test_ledger_block_tx_offsets_point_at_each_transaction():
    txs = [sample_tx(), sample_tx(nonce=1)]
    block = Block.build(KEY, CHAIN_A, 3, ZERO_HASH, 99, txs)
    for tx, off in zip(txs, block.tx_offsets(), strict=True):
        assert block.raw[off:off + len(tx.raw)] == tx.raw


@given(st.one_of(st.integers(0, 2**16 + 5), st.integers(0, 2**64 - 1),
                 st.sampled_from([0xFC, 0xFD, 0xFFFF, 0x10000, 2**32 - 1, 2**32])))
def test_ledger_block_varint_size_matches_the_encoding(n):
    assert varint_size(n) == len(encode_varint(n))



@settings(max_examples=30, deadline=None)
@given(blocks(), st.lists(transactions(), max_size=3))
def test_ledger_block_merkle_root_matches_only_the_txids_of_its_root(block, other):
    """A built block keeps the txids of its root; it still answers as a received one."""
    ids, others = [t.txid for t in block.txs], [t.txid for t in other]
    for b in (block, Block.decode(block.raw)):
        assert b.merkle_root_matches(ids)
        assert b.merkle_root_matches(others) == (merkle_root(others) == merkle_root(ids))
    block.header = dataclasses.replace(block.header, merkle_root=b"\x05" * 32)
    assert not block.merkle_root_matches(ids)
