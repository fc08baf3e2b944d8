"""The chain store keeps each transaction byte once and slices it back out exactly.

A real SQLite store under a chain built in-process (as tests/unit/test_node_reindex.py): a
genesis from NodeApp, then blocks of locally signed transactions through Chain.connect.
"""

from __future__ import annotations

import time

import pytest
from node_helpers import fresh_node

from ledger.blocks import Block
from ledger.transactions import DataFormat, Publish, Transaction


@pytest.fixture
def node_ctx(tmp_path):
    with fresh_node(tmp_path, "st", 11) as ctx:
        yield ctx, tmp_path / "st" / "chain.db"


def _connect(ctx, payloads: list[list[bytes]], height: int | None = None) -> list[Transaction]:
    """One block of one transaction per list of payloads (one item each) on the tip."""
    chain, key = ctx.chain, ctx.wallet.default
    root = next(iter(chain.state.streams))
    txs = [Transaction.create(key, [Publish(root, (f"k{i}", "all"), DataFormat.RAW, p)
                                    for p in ps], chain.chain_id, int(time.time()))
           for i, ps in enumerate(payloads)]
    tip = chain.tip_header
    chain.connect(Block.build(key, chain.chain_id, tip.height + 1, tip.hash,
                              tip.time_ms + 1, txs))
    return txs


def test_ledger_store_keeps_each_transaction_byte_once(node_ctx):
    ctx, db_path = node_ctx
    payloads = [[f"payload-{b}-{i}-unique".encode()] for i in range(5) for b in range(3)]
    txs = []
    for b in range(3):
        txs += _connect(ctx, payloads[b * 5:(b + 1) * 5])
    root = next(iter(ctx.chain.state.streams)).hex()
    items = ctx.store.items(root, 0, 100)
    assert [i.data for i in items] == [p[0] for p in payloads]
    assert [ctx.store.tx_row(t.txid.hex()).raw for t in txs] == [t.raw for t in txs]
    ctx.store.close()  # the last connection checkpoints the WAL into chain.db
    data = db_path.read_bytes()
    for p in payloads:
        assert data.count(p[0]) == 1, "an item's data is stored in its raw block only"
    for t in txs:
        assert data.count(t.raw) == 1, "a transaction's bytes are stored in its block only"


def test_ledger_store_reads_the_new_block_after_a_rollback(node_ctx):
    ctx, _ = node_ctx
    root = next(iter(ctx.chain.state.streams)).hex()
    _connect(ctx, [[b"first"], [b"x" * 300]])
    height = ctx.chain.height
    ctx.chain.rollback_to(height - 1)
    other = _connect(ctx, [[b"y" * 50, b"second, at other offsets"]])
    assert ctx.chain.height == height
    assert [i.data for i in ctx.store.items(root, 0, 10)] == [
        b"y" * 50, b"second, at other offsets"]
    assert [i.vout for i in ctx.store.items_by_tx(other[0].txid.hex())] == [0, 1]
    assert ctx.store.last_item(root, key="k0").data == b"second, at other offsets"
    assert ctx.store.tx_row(other[0].txid.hex()).raw == other[0].raw


def test_ledger_store_unknown_names_and_bad_txids_match_nothing(node_ctx):
    ctx, _ = node_ctx
    txs = _connect(ctx, [[b"one"]])
    root = next(iter(ctx.chain.state.streams)).hex()
    sender = ctx.store.tx_row(txs[0].txid.hex()).sender
    assert ctx.store.count_items(root, publisher=sender) == 1
    assert ctx.store.count_items("00" * 32) == 0
    assert ctx.store.count_items(root, publisher="1NotAnAddressWeKnow") == 0
    assert ctx.store.items(root, 0, 10, publisher="1NotAnAddressWeKnow") == []
    assert ctx.store.query_items(root, [], ["1NotAnAddressWeKnow"], 10) == []
    assert ctx.store.publisher_counts(root, None) == [(sender, 1, ctx.store.next_item_id - 1)]
    for bad in ("zz", "00", "ab" * 33, ""):
        assert ctx.store.tx_row(bad) is None
        assert ctx.store.items_by_tx(bad) == []
        assert ctx.store.known_txids([bad]) == set()
    assert ctx.store.known_txids([txs[0].txid.hex(), "zz"]) == {txs[0].txid.hex()}
