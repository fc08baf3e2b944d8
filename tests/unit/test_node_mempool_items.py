"""node.mempool: the pooled items of each stream, in pool order, as the RPC readers see them.

The rows of a pooled transaction are made when first read, not on arrival; what a reader
gets is the same either way: every Publish of every pooled transaction on that stream, in
arrival order and then output order, with no id, height or block index yet, the sender as
publisher and the arrival second as time. Real in-process node parts on a SQLite store.
"""

from __future__ import annotations

import time

import pytest
from node_helpers import fresh_node

from ledger.store import ItemRow
from ledger.transactions import CreateStream, DataFormat, Publish, Transaction


@pytest.fixture
def ctx(tmp_path):
    with fresh_node(tmp_path, "mp", 5) as ctx:
        yield ctx


def test_node_mempool_lists_each_streams_pooled_items_in_pool_order(ctx):
    chain, key, pool = ctx.chain, ctx.wallet.default, ctx.mempool
    root = next(iter(chain.state.streams))
    now = int(time.time())
    make = Transaction.create(key, [CreateStream("other", 0)], chain.chain_id, now)
    pool.add(make, verified=True, local=True)
    other = make.txid
    first = Transaction.create(key, [
        Publish(root, ("a",), DataFormat.TEXT, b"1"),
        Publish(other, ("b", "c"), DataFormat.JSON, b"{}"),
        Publish(root, (), DataFormat.RAW, b"\x02"),
    ], chain.chain_id, now)
    second = Transaction.create(key, [Publish(root, ("d",), DataFormat.TEXT, b"3")],
                                chain.chain_id, now)
    entries = [pool.add(tx, verified=True, local=True) for tx in (first, second)]
    sender = ctx.codec.encode(key.pubkey_hash)

    def row(tx, vout, stream, keys, fmt, data, entry):
        return ItemRow(-1, stream.hex(), tx.txid.hex(), vout, -1, -1, sender, keys, int(fmt),
                       data, False, int(entry.received))

    assert pool.stream_items(root.hex()) == [
        row(first, 0, root, ("a",), DataFormat.TEXT, b"1", entries[0]),
        row(first, 2, root, (), DataFormat.RAW, b"\x02", entries[0]),
        row(second, 0, root, ("d",), DataFormat.TEXT, b"3", entries[1]),
    ]
    assert pool.stream_items(other.hex()) == [
        row(first, 1, other, ("b", "c"), DataFormat.JSON, b"{}", entries[0])]
    assert pool.entries[first.txid].items == [*pool.stream_items(root.hex())[:1],
                                              *pool.stream_items(other.hex()),
                                              pool.stream_items(root.hex())[1]]
    assert pool.stream_items("00" * 32) == []
    assert pool.entries[make.txid].items == []
