"""Chain.connect_many / ChainStore.put_blocks: several blocks in one store transaction.

A real SQLite store under a chain built in-process (as tests/unit/test_ledger_store.py). The
database failure is real too: a trigger makes SQLite abort an insert part-way through the
batch's transaction.
"""

from __future__ import annotations

import gc
import time

import pytest
import sqlalchemy as sa
from node_helpers import fresh_node

from ledger.blocks import Block
from ledger.transactions import DataFormat, Publish, Transaction


@pytest.fixture
def node_ctx(tmp_path):
    with fresh_node(tmp_path, "cm", 12) as ctx:
        yield ctx


def _txs(ctx, tag: str, n: int) -> list[Transaction]:
    chain, key = ctx.chain, ctx.wallet.default
    root = next(iter(chain.state.streams))
    return [Transaction.create(key, [Publish(root, (f"{tag}-{i}", "all"), DataFormat.RAW,
                                             f"{tag} item {i}".encode())],
                               chain.chain_id, int(time.time())) for i in range(n)]


def _blocks(ctx, batches: list[list[Transaction]]) -> list[Block]:
    """Consecutive blocks on the tip, built without connecting them."""
    chain, key = ctx.chain, ctx.wallet.default
    tip, out = chain.tip_header, []
    height, prev, t = tip.height, tip.hash, tip.time_ms
    for txs in batches:
        height, t = height + 1, t + 1
        b = Block.build(key, chain.chain_id, height, prev, t, txs)
        out.append(b)
        prev = b.hash
    return out


def _snapshot(ctx):
    store, root = ctx.store, next(iter(ctx.chain.state.streams)).hex()
    return (ctx.chain.height, ctx.chain.state.tip_hash, store.tip(), store.tx_count(),
            [(i.txid, i.data) for i in store.items(root, 0, 1000)],
            store.count_items(root), store.next_item_id, dict(store._counts),
            store.key_counts(root, None), store.publisher_counts(root, None))


def test_connect_many_stores_what_connecting_one_by_one_stores(node_ctx):
    ctx = node_ctx
    batches = [_txs(ctx, f"b{k}", 3 + k) for k in range(4)]
    blocks = _blocks(ctx, batches)
    done = ctx.chain.connect_many(blocks, [frozenset()] * len(blocks))
    assert done.error is None
    assert [c.block.height for c in done.connected] == [b.height for b in blocks]
    root = next(iter(ctx.chain.state.streams)).hex()
    items = ctx.store.items(root, 0, 1000)
    assert [i.data for i in items] == [op.data for txs in batches for t in txs for op in t.ops]
    assert ctx.store.count_items(root) == len(items)
    assert ctx.store.count_problems() == []
    assert ctx.chain.height == blocks[-1].height
    assert ctx.store.tip().hash == blocks[-1].hash.hex()
    # Rolled back and connected one by one, the same blocks give the same store.
    batched = _snapshot(ctx)
    ctx.chain.rollback_to(blocks[0].height - 1)
    for b in blocks:
        ctx.chain.connect(b)
    assert _snapshot(ctx) == batched


def test_put_blocks_is_all_or_nothing_when_the_database_fails_mid_batch(node_ctx):
    ctx = node_ctx
    ctx.chain.connect_many(_blocks(ctx, [_txs(ctx, "before", 2)]), [frozenset()])
    before = _snapshot(ctx)
    blocks = _blocks(ctx, [_txs(ctx, "ok", 3), _txs(ctx, "boom", 2), _txs(ctx, "late", 2)])
    with ctx.store.engine.begin() as c:
        # A real failure inside the batch's transaction, after its blocks, transactions and
        # items were inserted: the key rows come later.
        c.exec_driver_sql("CREATE TRIGGER fail_boom BEFORE INSERT ON item_keys "
                          "WHEN NEW.item_key = 'boom-1' "
                          "BEGIN SELECT RAISE(ABORT, 'refused mid-batch'); END")
    with pytest.raises(sa.exc.DBAPIError, match="refused mid-batch"):
        ctx.chain.connect_many(blocks, [frozenset()] * 3)
    assert _snapshot(ctx) == before, "a failed batch changed the store or the node's state"
    with ctx.store.engine.begin() as c:
        c.exec_driver_sql("DROP TRIGGER fail_boom")
    done = ctx.chain.connect_many(blocks, [frozenset()] * 3)
    assert done.error is None and ctx.chain.height == blocks[-1].height
    root = next(iter(ctx.chain.state.streams)).hex()
    assert ctx.store.count_items(root) == before[5] + 7
    assert ctx.store.count_problems() == []


def test_connect_many_stops_at_an_invalid_block_and_keeps_those_before(node_ctx):
    ctx = node_ctx
    first = _txs(ctx, "first", 2)
    # The third block repeats a transaction of the first one of the same batch: only the
    # batch itself knows it is confirmed (the store does not have it yet).
    blocks = _blocks(ctx, [first, _txs(ctx, "second", 2), [first[1]], _txs(ctx, "x", 1)])
    start = ctx.chain.height
    done = ctx.chain.connect_many(blocks, [frozenset()] * 4)
    assert [c.block.height for c in done.connected] == [start + 1, start + 2]
    assert done.error is not None and "repeats confirmed transaction" in str(done.error)
    assert ctx.chain.height == start + 2
    assert ctx.store.tip().hash == blocks[1].hash.hex()
    assert ctx.chain.state.tip_hash == blocks[1].hash
    assert ctx.store.tx_row(blocks[3].txs[0].txid.hex()) is None
    # The node goes on from there: a valid block on the new tip connects.
    nxt = _blocks(ctx, [_txs(ctx, "after", 1)])
    assert ctx.chain.connect_many(nxt, [frozenset()]).error is None
    assert ctx.chain.height == start + 3


def test_connect_many_refuses_a_transaction_stored_by_an_earlier_batch(node_ctx):
    ctx = node_ctx
    first = _txs(ctx, "stored", 3)
    assert ctx.chain.connect_many(_blocks(ctx, [first]), [frozenset()]).error is None
    start = ctx.chain.height
    # Two txids asked at once (the store's many-txid lookup), one of them stored.
    blocks = _blocks(ctx, [_txs(ctx, "new", 1) + [first[2]]])
    done = ctx.chain.connect_many(blocks, [frozenset()])
    assert done.connected == [] and ctx.chain.height == start
    assert done.error is not None and first[2].txid.hex() in str(done.error)
    stored = [t.txid for t in first]
    assert ctx.store.confirmed_txids([*stored, b"\x00" * 32, b"short"]) == set(stored)
    assert ctx.store.confirmed_txids([stored[0]]) == {stored[0]}
    assert ctx.store.confirmed_txids([b"\x00" * 32]) == set()
    assert ctx.store.confirmed_txids([]) == set()


def test_connect_many_rows_made_and_written_with_the_collector_paused(node_ctx):
    ctx = node_ctx
    chain, seen = ctx.chain, {}
    write_for, put_blocks = chain._write_for, ctx.store.put_blocks

    def watched_write_for(*args):
        seen["rows"] = gc.isenabled()
        return write_for(*args)

    def watched_put_blocks(*args, **kwargs):
        seen["write"] = gc.isenabled()
        return put_blocks(*args, **kwargs)

    chain._write_for, ctx.store.put_blocks = watched_write_for, watched_put_blocks
    blocks = _blocks(ctx, [_txs(ctx, "gc", 3), _txs(ctx, "gc2", 2)])
    assert gc.isenabled()
    done = chain.connect_many(blocks, [frozenset()] * len(blocks))
    assert done.error is None and len(done.connected) == 2
    assert seen == {"rows": False, "write": False}
    assert gc.isenabled()  # restored
