"""A reorganisation that fails part-way restores the old blocks and gives back the
transactions that the branch's connected blocks had taken out of the pool and the journal:
the node's own are unconfirmed again, not lost."""

from __future__ import annotations

import asyncio
import time

from test_node_reindex import chain_with_blocks  # noqa: F401 - the fixture

from ledger.blocks import Block
from ledger.transactions import DataFormat, Publish, Transaction
from node.journal import JOURNAL_FILE, OwnTxJournal


def test_failed_reorganisation_returns_the_branch_transactions(chain_with_blocks):  # noqa: F811
    ctx, root_hex, tmp_path = chain_with_blocks
    chain, key = ctx.chain, ctx.wallet.default
    ctx.journal = OwnTxJournal(tmp_path / JOURNAL_FILE)
    ctx.journal.open([])
    old_tip = chain.tip_header.hash
    own = Transaction.create(key, [Publish(bytes.fromhex(root_hex), ("mine",), DataFormat.TEXT,
                                           b"returned after the failed switch")],
                             chain.chain_id, int(time.time()))
    ctx.submit_tx(own, local=True, relay=False)
    assert own.txid in ctx.journal.live

    # From block 5: 6' holds the node's own pooled tx and is valid; 7' claims height 9.
    fork = chain.block_at(5).header
    first = Block.build(key, chain.chain_id, 6, fork.hash, fork.time_ms + 1000, [own])
    bad = Block.build(key, chain.chain_id, 9, first.hash, fork.time_ms + 1001, [])

    ok, removed = asyncio.run(ctx.reorganise(5, [first, bad]))

    assert (ok, removed) == (False, [])
    assert chain.height == 7 and chain.tip_header.hash == old_tip
    assert own.txid in ctx.mempool.entries, "the node's own tx is back in the pool"
    assert own.txid in ctx.journal.live, "and journaled again"
    assert not ctx.store.known_txids([own.txid.hex()])
    ctx.journal.close()
