"""--reindex rebuilds the derived tables from the stored blocks and survives a crash part-way.

The chain is built in-process on a real SQLite store: a genesis from NodeApp, then blocks
made from locally signed transactions and connected through Chain.connect.
"""

from __future__ import annotations

import json
import time

import pytest
from node_helpers import open_fresh_node

from ledger.blocks import Block
from ledger.errors import DecodeError
from ledger.store import SCHEMA_VERSION, ChainStore
from ledger.transactions import DataFormat, Publish, Transaction
from node.app import NodeApp, store_url
from node.chain import Chain


def _snapshot(store: ChainStore, stream: str) -> tuple:
    items = store.items(stream, 0, 10_000)
    return (
        [(i.txid, i.vout, i.keys, i.data, i.height) for i in items],
        store.key_counts(stream, None),
        [(p.kind, p.address, p.perm, p.start_block, p.end_block) for p in store.perm_log()],
        [s.createtxid for s in store.streams()],
    )


@pytest.fixture
def chain_with_blocks(tmp_path):
    ctx = open_fresh_node(tmp_path, "rx", 7)
    chain, key = ctx.chain, ctx.wallet.default
    root = next(iter(chain.state.streams))
    for h in range(1, 8):
        txs = [Transaction.create(key, [Publish(root, (f"k{h}", "all"), DataFormat.TEXT,
                                                f"item {h}.{i}".encode())],
                                  chain.chain_id, int(time.time())) for i in range(3)]
        tip = chain.tip_header
        chain.connect(Block.build(key, chain.chain_id, h, tip.hash, tip.time_ms + 1, txs))
    yield ctx, root.hex(), tmp_path
    ctx.chain.close()
    ctx.store.close()


def test_node_reindex_rebuilds_the_same_derived_state(chain_with_blocks):
    ctx, root, _ = chain_with_blocks
    before = _snapshot(ctx.store, root)
    height = ctx.chain.reindex()
    assert height == 7
    assert _snapshot(ctx.store, root) == before
    assert not ctx.chain.reindex_pending()


def test_node_reindex_interrupted_part_way_loses_no_block_and_resumes(chain_with_blocks):
    ctx, root, tmp_path = chain_with_blocks
    before = _snapshot(ctx.store, root)
    store = ctx.store
    real_put = store.put_block
    calls = []

    def crash_after_three(write, **kw):
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated crash")
        calls.append(write.block.height)
        return real_put(write, **kw)

    store.put_block = crash_after_three
    with pytest.raises(KeyboardInterrupt):
        ctx.chain.reindex()
    store.put_block = real_put
    assert store.tip().height == 7, "the stored blocks must survive an interrupted reindex"
    reopened = Chain(ChainStore(store_url(tmp_path / "rx", None)), ctx.params, ctx.codec)
    assert reopened.reindex_pending()
    assert reopened.reindex() == 7
    assert _snapshot(reopened.store, root) == before
    reopened.close()
    reopened.store.close()


def _store_unchecked_block(chain: Chain, key, txs: list[Transaction]) -> Block:
    """Write a block to the store without validating it, as an older version let through."""
    from consensus.blocks import BlockEffects

    tip = chain.tip_header
    block = Block.build(key, chain.chain_id, tip.height + 1, tip.hash, tip.time_ms + 1, txs)
    write, _ = chain._write_for(block, BlockEffects(key.pubkey_hash, [], []))
    chain.store.put_block(write)
    return block


def _zero_op_tx(key, chain_id: bytes) -> Transaction:
    """A transaction with no operations, signed directly (Transaction.create refuses it)."""
    tx = Transaction(sender=key.pubkey, nonce=1, time=int(time.time()), ops=())
    tx.signature = key.sign(tx.sighash(chain_id))
    return tx


def test_node_reindex_stops_at_an_undecodable_block_and_the_node_opens_again(chain_with_blocks):
    ctx, root, tmp_path = chain_with_blocks
    chain, key = ctx.chain, ctx.wallet.default
    before = _snapshot(ctx.store, root)
    _store_unchecked_block(chain, key, [_zero_op_tx(key, chain.chain_id)])
    assert ctx.store.tip().height == 8
    reopened = Chain(ChainStore(store_url(tmp_path / "rx", None)), ctx.params, ctx.codec)
    assert reopened.height == 8, "a tip whose body does not decode must not stop the opening"
    quarantine = tmp_path / "rx"
    assert reopened.reindex(quarantine=quarantine) == 7
    assert reopened.store.tip().height == 7
    assert not reopened.reindex_pending()
    saved = (quarantine / "invalid-blocks-8-8.hex").read_text().split()
    assert len(saved) == 1  # the refused block is kept for the operator
    with pytest.raises(DecodeError):
        Block.decode(bytes.fromhex(saved[0]))
    assert _snapshot(reopened.store, root) == before
    again = Chain(ChainStore(store_url(tmp_path / "rx", None)), ctx.params, ctx.codec)
    assert again.height == 7 and not again.reindex_pending()
    for c in (reopened, again):
        c.close()
        c.store.close()


def test_node_reindex_without_a_quarantine_says_what_failed_and_what_to_run(chain_with_blocks):
    from ledger.errors import StoreError

    ctx, _, _ = chain_with_blocks
    chain, key = ctx.chain, ctx.wallet.default
    _store_unchecked_block(chain, key, [_zero_op_tx(key, chain.chain_id)])
    with pytest.raises(StoreError, match=r"stored block 8 .*chainmill start CHAIN --reindex"):
        chain.reindex()
    assert chain.reindex_pending(), "the next start must finish the reindex"
    assert chain.reindex(quarantine=chain_with_blocks[2]) == 7


SCHEMA_1_TABLES = """
CREATE TABLE transactions (txid CHAR(64) NOT NULL, height INTEGER NOT NULL,
    blockindex INTEGER NOT NULL, sender VARCHAR(64) NOT NULL, time_s BIGINT NOT NULL,
    raw BLOB NOT NULL, PRIMARY KEY (txid));
CREATE INDEX ix_transactions_height ON transactions (height);
CREATE TABLE items (id BIGINT NOT NULL, stream CHAR(64) NOT NULL, txid CHAR(64) NOT NULL,
    vout INTEGER NOT NULL, height INTEGER NOT NULL, blockindex INTEGER NOT NULL,
    publisher VARCHAR(64) NOT NULL, keys_json TEXT NOT NULL, format SMALLINT NOT NULL,
    data BLOB NOT NULL, offchain BOOLEAN NOT NULL, time_s BIGINT NOT NULL, PRIMARY KEY (id));
CREATE INDEX ix_items_stream ON items (stream, id);
CREATE INDEX ix_items_txid ON items (txid);
CREATE TABLE item_keys (item_id BIGINT NOT NULL, stream CHAR(64) NOT NULL,
    item_key VARCHAR(256) NOT NULL, height INTEGER NOT NULL);
CREATE INDEX ix_item_keys ON item_keys (stream, item_key, item_id);
"""
"""The derived tables of schema 1 whose layout schema 2 changed (each byte copied)."""


def _make_schema_1(db_path, stored) -> None:
    """Turn a store into a schema-1 store holding the same rows, as the older version wrote."""
    import sqlite3

    db = sqlite3.connect(db_path)
    with db:
        for t in ("transactions", "items", "item_keys", "names"):
            db.execute(f"DROP TABLE {t}")
        db.executescript(SCHEMA_1_TABLES)
        db.executemany("INSERT INTO transactions VALUES (?, ?, ?, ?, ?, ?)",
                       [(t.txid, t.height, t.blockindex, t.sender, t.time_s, t.raw)
                        for t in stored.txs])
        db.executemany("INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       [(i.id, i.stream, i.txid, i.vout, i.height, i.blockindex, i.publisher,
                         json.dumps(list(i.keys)), i.format, i.data, i.offchain,
                         i.time_s) for i in stored.items])
        db.executemany("INSERT INTO item_keys VALUES (?, ?, ?, ?)", stored.item_keys)
        db.execute("UPDATE meta SET value = '1' WHERE name = 'schema'")
    db.close()


def test_node_reindex_upgrades_a_schema_1_store_at_open(chain_with_blocks):
    import sqlite3

    ctx, root, tmp_path = chain_with_blocks
    before = _snapshot(ctx.store, root)
    stored = ctx.store.stored_range(0, ctx.store.tip().height)
    ctx.chain.close()
    ctx.store.close()
    db_path = tmp_path / "rx" / "chain.db"
    _make_schema_1(db_path, stored)
    size_1 = db_path.stat().st_size

    upgraded, _ = NodeApp(tmp_path, "rx", {})._open()
    try:
        assert upgraded.store.get_meta("schema") == SCHEMA_VERSION
        assert not upgraded.chain.reindex_pending(), "the upgrade's reindex ran to its end"
        assert upgraded.chain.height == 7
        assert _snapshot(upgraded.store, root) == before
        # The rebuilt positions and counts page the stream as before the upgrade.
        store = upgraded.store
        everything = before[0]
        assert store.count_items(root) == len(everything)
        for offset, limit in ((0, 4), (5, 7), (len(everything) - 3, 10)):
            assert [(i.txid, i.vout) for i in store.items(root, offset, limit)] == [
                (t, v) for t, v, *_ in everything[offset:offset + limit]]
        assert store.count_problems() == []
        txid = before[0][-1][0]
        assert upgraded.store.tx_row(txid).raw == stored.txs[-1].raw
    finally:
        upgraded.chain.close()
        upgraded.store.close()
    db = sqlite3.connect(db_path)
    columns = {r[1] for r in db.execute("PRAGMA table_info(items)")}
    db.close()
    assert "data" not in columns and {"data_start", "data_size"} <= columns
    assert db_path.stat().st_size < size_1, "the old tables' pages were given back"
