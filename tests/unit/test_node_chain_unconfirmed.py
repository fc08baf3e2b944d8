"""Chain.connect with `unconfirmed`: the replay check asks the store only about the other txids.

A block built from this node's own mempool holds txids known not to be on the chain, so
connecting it costs no replay query; a confirmed txid is refused all the same, whether or not
the other transactions of the block are pooled. Real in-process node parts on a SQLite store.
"""

from __future__ import annotations

import asyncio

import pytest
from node_helpers import fresh_node, root_publish

from ledger.blocks import Block
from ledger.errors import InvalidBlock
from ledger.transactions import Transaction


@pytest.fixture
def ctx(tmp_path):
    with fresh_node(tmp_path, "uc", 5) as ctx:
        yield ctx


def _tx(ctx, tag: str) -> Transaction:
    return root_publish(ctx, tag, tag.encode())


def _block(ctx, txs: list[Transaction]) -> Block:
    chain, tip = ctx.chain, ctx.chain.tip_header
    return Block.build(ctx.wallet.default, chain.chain_id, tip.height + 1, tip.hash,
                       tip.time_ms + 1, txs)


@pytest.fixture
def asked(ctx, monkeypatch):
    """The txids the chain asks the store about (the real store still answers)."""
    out: list[list[str]] = []
    real = ctx.store.known_txids

    def known_txids(txids_hex):
        ids = list(txids_hex)
        out.append(ids)
        return real(ids)

    monkeypatch.setattr(ctx.store, "known_txids", known_txids)
    return out


def test_node_chain_unconfirmed_txids_are_not_looked_up(ctx, asked):
    a, b = _tx(ctx, "a"), _tx(ctx, "b")
    ctx.chain.connect(_block(ctx, [a, b]), unconfirmed={a.txid, b.txid})
    assert asked == []
    c, d = _tx(ctx, "c"), _tx(ctx, "d")
    ctx.chain.connect(_block(ctx, [c, d]), unconfirmed={c.txid})
    assert asked == [[d.txid.hex()]]


def test_node_chain_unconfirmed_a_confirmed_txid_is_still_refused(ctx, asked):
    a, b = _tx(ctx, "a"), _tx(ctx, "b")
    ctx.chain.connect(_block(ctx, [a]))
    height = ctx.chain.height
    with pytest.raises(InvalidBlock, match="repeats confirmed transaction"):
        ctx.chain.connect(_block(ctx, [b, a]), unconfirmed={b.txid})
    assert ctx.chain.height == height
    assert asked[-1] == [a.txid.hex()]


def test_node_chain_unconfirmed_a_block_of_the_own_pool_costs_no_replay_query(ctx, asked):
    txs = [_tx(ctx, f"p{i}") for i in range(3)]
    for tx in txs:
        ctx.mempool.add(tx, verified=True, local=True)

    async def connect() -> None:
        await ctx.connect_block(_block(ctx, txs))

    asyncio.run(connect())
    assert asked == []
    assert len(ctx.mempool) == 0
    assert ctx.store.known_txids([t.txid.hex() for t in txs]) == {t.txid.hex() for t in txs}
