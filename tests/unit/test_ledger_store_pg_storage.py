"""The chain store on PostgreSQL keeps raw blocks uncompressed out of line (STORAGE EXTERNAL).

What: a new store's `blocks.raw` column has storage EXTERNAL, so a compressible block is
stored at its full size and a slice at its end is read without decompressing the block; a
store made with the default storage (EXTENDED, compressed) is switched at its next open,
its old blocks still read back exactly, and the blocks stored from then on are uncompressed.

How: a database of its own on the local PostgreSQL server (tests/conftest.py); blocks of one
transaction with a large, very compressible item are written with `put_block`.
"""

from __future__ import annotations

import hashlib

import pytest
import sqlalchemy as sa

from ledger.store import BlockRow, BlockWrite, ChainStore, ItemRow, TxRow

pytestmark = pytest.mark.postgres

STREAM = "c" * 64
PUBLISHER = "1Alice" + "x" * 20


def _block(height: int, size: int) -> tuple[BlockWrite, str]:
    """A block of one transaction whose one item is `size` bytes of repeated text."""
    txid = hashlib.sha256(f"tx {height}".encode()).hexdigest()
    data = f"block {height} ".encode() * (size // 8)
    item = ItemRow(0, STREAM, txid, 0, height, 0, PUBLISHER, ("k",), 0, data, False,
                   1_700_000_000 + height)
    tx = TxRow(txid, height, 0, PUBLISHER, item.time_s, b"tx" + data)
    row = BlockRow(height, hashlib.sha256(f"block {height}".encode()).hexdigest(),
                   hashlib.sha256(f"block {height - 1}".encode()).hexdigest(), item.time_s, 0,
                   PUBLISHER, 1, 0)
    return BlockWrite(row, b"header" + tx.raw, [tx], [item], [], []), txid


def _storage(url: str) -> str:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            return c.scalar(sa.text("SELECT attstorage FROM pg_attribute WHERE attrelid = "
                                    "CAST('blocks' AS regclass) AND attname = 'raw'"))
    finally:
        engine.dispose()


def _stored_vs_raw(store: ChainStore, height: int) -> tuple[int, int]:
    with store.engine.connect() as c:
        return c.execute(sa.text("SELECT pg_column_size(raw), octet_length(raw) FROM blocks "
                                 "WHERE height = :h"), {"h": height}).one()


def test_pg_store_keeps_raw_blocks_uncompressed(postgres_db):
    store = ChainStore(postgres_db.url)
    try:
        assert _storage(postgres_db.url) == "e"
        write, txid = _block(0, 200_000)
        store.put_block(write)
        stored, raw = _stored_vs_raw(store, 0)
        assert stored >= raw == len(write.raw)  # not compressed
        assert store.tx_row(txid).raw == write.txs[0].raw
        assert store.items_by_tx(txid)[0].data == write.items[0].data
    finally:
        store.close()


def test_pg_store_made_with_compressed_blocks_is_switched_at_open(postgres_db):
    store = ChainStore(postgres_db.url)
    with store.engine.begin() as c:  # as a store made before the setting
        c.exec_driver_sql("ALTER TABLE blocks ALTER COLUMN raw SET STORAGE EXTENDED")
    old, old_txid = _block(0, 200_000)
    store.put_block(old)
    stored, raw = _stored_vs_raw(store, 0)
    assert stored < raw / 10  # compressed
    store.close()

    store = ChainStore(postgres_db.url)
    try:
        assert _storage(postgres_db.url) == "e"
        assert store.tx_row(old_txid).raw == old.txs[0].raw
        new, new_txid = _block(1, 200_000)
        store.put_block(new)
        stored, raw = _stored_vs_raw(store, 1)
        assert stored >= raw
        assert store.items_by_tx(new_txid)[0].data == new.items[0].data
    finally:
        store.close()
