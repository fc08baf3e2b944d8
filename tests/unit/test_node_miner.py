"""node.miner: the block's transactions are re-checked with the block checks before mining.

A transaction that a block may not hold (here one with no operations, which only an older
version could have pooled) is dropped from the mempool instead of failing every later block;
the block built from the rest connects. Real in-process node parts on a SQLite store.
"""

from __future__ import annotations

import time

import pytest
from node_helpers import fresh_node

from ledger.blocks import Block
from ledger.transactions import DataFormat, Publish, Transaction
from node.miner import Miner


@pytest.fixture
def ctx(tmp_path):
    with fresh_node(tmp_path, "mn", 3) as ctx:
        yield ctx


async def _never(block: Block) -> None:
    raise AssertionError("not submitted in this test")


def test_node_miner_drops_a_pooled_transaction_a_block_may_not_hold(ctx):
    chain, key = ctx.chain, ctx.wallet.default
    root = next(iter(chain.state.streams))
    bad = Transaction(key.pubkey, 1, int(time.time()), ())
    bad.signature = key.sign(bad.sighash(chain.chain_id))
    ctx.mempool._insert(bad, time.time())  # as if pooled by a version without the check
    good = Transaction.create(key, [Publish(root, ("k",), DataFormat.TEXT, b"ok")],
                              chain.chain_id, int(time.time()))
    ctx.mempool.add(good, verified=True, local=True)
    miner = Miner(chain, ctx.mempool, ctx.wallet, _never, turnover=0.0, empty_rounds=-1,
                  requires_peers=False)
    tip = chain.tip_header
    txs = miner._block_txs(tip.height + 1)
    assert [t.txid for t in txs] == [good.txid]
    assert bad.txid not in ctx.mempool and good.txid in ctx.mempool
    block = Block.build(key, chain.chain_id, tip.height + 1, tip.hash, tip.time_ms + 1, txs)
    chain.connect(block)
    assert Block.decode(ctx.store.block_raw(block.height)).hash == block.hash
