"""node.mempool after a block: a pool of Publish-only transactions that the block changed
nothing for keeps its entries as they were, without confirmed ones, exactly as rebuilding it
would; a block that changes a permission, or a grant that ends at the new height, still
re-checks every entry and drops the ones that no longer pass.

Real in-process node parts on a SQLite store (tests/unit/node_helpers.py)."""

from __future__ import annotations

import time

import pytest
from node_helpers import fresh_node, root_publish

from ledger.blocks import Block
from ledger.errors import PermissionDenied
from ledger.keys import KeyPair
from ledger.transactions import PERM_BITS, DataFormat, Permission, Publish, Transaction


@pytest.fixture
def ctx(tmp_path):
    with fresh_node(tmp_path, "mb", 7) as ctx:
        yield ctx


def _connect(ctx, txs: list[Transaction]) -> None:
    """Mine `txs` into the next block on the tip and tell the pool, as the node does."""
    chain = ctx.chain
    tip = chain.tip_header
    block = Block.build(ctx.wallet.default, chain.chain_id, tip.height + 1, tip.hash,
                        tip.time_ms + 1, txs)
    ctx.mempool.on_connected(chain.connect(block, {t.txid for t in txs}))


def _pool_view(pool) -> tuple:
    return (list(pool.entries), {s: [e.tx.txid for e in es] for s, es in pool.by_stream.items()},
            pool.bytes, pool.state.perms, pool.state.streams, pool.state.height)


def _grant_send(ctx, key: KeyPair, end: int) -> Transaction:
    chain = ctx.chain
    return Transaction.create(ctx.wallet.default, [Permission(
        key.pubkey_hash, b"", PERM_BITS["send"], 0, end)], chain.chain_id, int(time.time()))


def _publish_as(ctx, key: KeyPair, k: str) -> Transaction:
    chain = ctx.chain
    root = next(iter(chain.state.streams))
    return Transaction.create(key, [Publish(root, (k,), DataFormat.TEXT, b"x")],
                              chain.chain_id, int(time.time()))


def test_node_mempool_after_a_publish_block_keeps_the_rest_as_a_rebuild_would(ctx):
    pool = ctx.mempool
    txs = [root_publish(ctx, f"k{i}", b"x") for i in range(8)]
    for tx in txs:
        pool.add(tx, verified=True, local=True)
    _connect(ctx, txs[2:5])
    kept = _pool_view(pool)
    assert kept[0] == [t.txid for t in txs[:2] + txs[5:]]
    pool.readmit([], confirmed=set())  # the full re-check, for comparison
    assert _pool_view(pool) == kept
    assert pool.state.height == ctx.chain.height


def test_node_mempool_drops_a_tx_whose_senders_grant_ends_at_the_new_height(ctx):
    pool, chain = ctx.mempool, ctx.chain
    temp = KeyPair.generate()
    _connect(ctx, [_grant_send(ctx, temp, chain.height + 3)])  # send up to the next block
    doomed = _publish_as(ctx, temp, "last-chance")
    other = root_publish(ctx, "stays", b"x")
    pool.add(doomed, verified=True, local=True)
    pool.add(other, verified=True, local=True)
    _connect(ctx, [root_publish(ctx, "filler", b"x")])  # the grant's last block passes
    assert doomed.txid not in pool
    assert other.txid in pool


def test_node_mempool_drops_a_tx_whose_sender_a_block_revoked(ctx):
    pool, chain = ctx.mempool, ctx.chain
    temp = KeyPair.generate()
    _connect(ctx, [_grant_send(ctx, temp, 1_000_000)])
    pooled = _publish_as(ctx, temp, "revoked-soon")
    pool.add(pooled, verified=True, local=True)
    revoke = Transaction.create(ctx.wallet.default, [Permission(
        temp.pubkey_hash, b"", PERM_BITS["send"], 0, 0)], chain.chain_id, int(time.time()))
    _connect(ctx, [revoke])
    assert pooled.txid not in pool


def test_node_mempool_refuses_a_publish_once_a_pooled_revoke_took_its_senders_permission(ctx):
    # The pool remembers the permission checks publish-only transactions passed on its state;
    # a pooled permission change replaces that state, and the next publish is checked again.
    pool, chain = ctx.mempool, ctx.chain
    temp = KeyPair.generate()
    _connect(ctx, [_grant_send(ctx, temp, 1_000_000)])
    pool.add(_publish_as(ctx, temp, "before"), verified=True, local=True)
    revoke = Transaction.create(ctx.wallet.default, [Permission(
        temp.pubkey_hash, b"", PERM_BITS["send"], 0, 0)], chain.chain_id, int(time.time()))
    pool.add(revoke, verified=True, local=True)
    with pytest.raises(PermissionDenied):
        pool.add(_publish_as(ctx, temp, "after"), verified=True, local=True)


def test_node_mempool_refuses_a_publish_once_its_senders_grant_ended_at_the_new_height(ctx):
    pool, chain = ctx.mempool, ctx.chain
    temp = KeyPair.generate()
    _connect(ctx, [_grant_send(ctx, temp, chain.height + 3)])  # send up to the next block
    pool.add(_publish_as(ctx, temp, "in-time"), verified=True, local=True)
    _connect(ctx, [root_publish(ctx, "filler", b"x")])  # the grant's last block passes
    with pytest.raises(PermissionDenied):
        pool.add(_publish_as(ctx, temp, "too-late"), verified=True, local=True)
