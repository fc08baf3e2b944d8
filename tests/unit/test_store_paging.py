"""The chain store's item windows and counts against a plain list, on SQLite, PostgreSQL and
MariaDB.

What: `items` (a whole stream's window by item position, a key's or a publisher's window from
the nearer end), `count_items`, `publisher_counts`, `distinct_count`, `name_window` of publishers,
`items_by_txids` and `items_in_heights` answer exactly what a list of the stored items in
chain order says, for windows at the start, in the middle, at the end and past it; after
blocks are rolled back (the positions of the kept items stay 1..n and new items follow on),
after a reindex (`clear_derived` and the blocks written again), and after a schema-1 store
(no positions, no counts) is upgraded at open and rebuilt from its blocks.

How: blocks of items are written with `put_block` straight into a real store (a SQLite file,
or a database of its own on the local PostgreSQL or MariaDB server); a seeded random chooses
streams, publishers and keys, and the seed is logged.
"""

from __future__ import annotations

import hashlib
import logging
import random

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from ledger.store import (
    REINDEX_MARK,
    SCHEMA_VERSION,
    BlockRow,
    BlockWrite,
    ChainStore,
    ItemRow,
    TxRow,
)

log = logging.getLogger("unit.store_paging")

STREAMS = ["a" * 64, "b" * 64]
PUBLISHERS = ["1Alice" + "x" * 20, "1Bob" + "y" * 20, "1Carol" + "z" * 20]
KEYS = ["k0", "k1", "k2", "rare"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres),
                        pytest.param("mariadb", marks=pytest.mark.mariadb)])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'chain.db'}"
    return request.getfixturevalue(f"{request.param}_db").url


def _block(height: int, items: list[ItemRow]) -> BlockWrite:
    digest = hashlib.sha256(f"block {height}".encode()).hexdigest()
    parent = hashlib.sha256(f"block {height - 1}".encode()).hexdigest()
    row = BlockRow(height, digest, parent, 1_700_000_000 + height, 0, PUBLISHERS[0],
                   len(items), 100)
    # One transaction per item (blockindex = vout), its data inside the tx's bytes, the
    # txs inside the raw block: what schema 2 stores as slices of the block.
    txs = [TxRow(it.txid, height, it.blockindex, it.publisher, it.time_s, b"tx" + it.data)
           for it in items]
    return BlockWrite(row, b"header" + b"".join(t.raw for t in txs), txs, items, [], [])


class Chain:
    """Blocks of random items, and the list of what the store should hold."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.blocks: list[list[ItemRow]] = []

    def make_block(self, height: int) -> list[ItemRow]:
        rng = self.rng
        items = []
        for vout in range(rng.choice([0, 1, 3, 7, 20])):
            keys = tuple(rng.sample(KEYS[:3], rng.randint(0, 2)))
            if rng.random() < 0.05:
                keys += ("rare",)
            items.append(ItemRow(0, rng.choice(STREAMS), hashlib.sha256(
                f"tx {height} {vout}".encode()).hexdigest(), vout, height, vout,
                rng.choice(PUBLISHERS), keys, 0, f"{height}.{vout}".encode(), False,
                1_700_000_000 + height))
        return items

    def add(self, store: ChainStore, count: int) -> None:
        for _ in range(count):
            items = self.make_block(len(self.blocks))
            store.put_block(_block(len(self.blocks), items))
            self.blocks.append(items)

    def rollback_to(self, store: ChainStore, height: int) -> None:
        store.rollback_to(height)
        del self.blocks[height + 1:]

    def expected(self, stream: str, key: str | None = None,
                 publisher: str | None = None) -> list[tuple[str, int]]:
        return [(it.txid, it.vout) for items in self.blocks for it in items
                if it.stream == stream and (key is None or key in it.keys)
                and (publisher is None or it.publisher == publisher)]


def _got(rows: list[ItemRow]) -> list[tuple[str, int]]:
    return [(r.txid, r.vout) for r in rows]


def assert_store_matches(store: ChainStore, chain: Chain) -> None:
    """Every kind of window and count equals what the list of items says."""
    selections = [{}] + [{"key": k} for k in KEYS] + [{"publisher": p} for p in PUBLISHERS] \
        + [{"key": "k1", "publisher": PUBLISHERS[1]}, {"key": "none"},
           {"publisher": "1Nobody" + "w" * 20}]
    for stream in STREAMS:
        for sel in selections:
            want = chain.expected(stream, **sel)
            n = len(want)
            assert store.count_items(stream, **sel) == n, (stream, sel)
            windows = {(0, 1), (0, 10), (0, n + 5), (max(0, n - 1), 1), (max(0, n - 10), 10),
                       (n // 2, 7), (n // 3, 3), (max(0, n - 3), 10), (n, 5), (n + 10, 5)}
            for offset, limit in sorted(windows):
                got = _got(store.items(stream, offset, limit, **sel))
                assert got == want[offset:offset + limit], (stream, sel, offset, limit)
        assert store.items(stream, 0, 0) == []
        by_pub = {}
        for i, (txid, vout) in enumerate(chain.expected(stream)):
            pub = next(it.publisher for items in chain.blocks for it in items
                       if (it.txid, it.vout) == (txid, vout))
            by_pub.setdefault(pub, [0, i])[0] += 1
        counts = store.publisher_counts(stream, None)
        assert [(p, n) for p, n, _ in counts] == [(p, n) for p, (n, _) in by_pub.items()]
        first_ids = [first for _, _, first in counts]
        assert first_ids == sorted(first_ids)
        assert [p for p, _, _ in store.publisher_counts(stream, [PUBLISHERS[2], "1No"])] == (
            [PUBLISHERS[2]] if PUBLISHERS[2] in by_pub else [])
        for p, n, first in counts:
            assert store.item_by_id(first).publisher == p
            assert store.count_items(stream, publisher=p) == n
        assert store.count_items(stream, publisher="") == 0
        keys = {k for items in chain.blocks for it in items if it.stream == stream
                for k in it.keys}
        assert store.distinct_count(stream, "key") == len(keys)
        assert store.distinct_count(stream, "key", ["k0", "pending-only", "pending-only"]) \
            == len(keys | {"k0", "pending-only"})
        assert store.distinct_count(stream, "publisher", [PUBLISHERS[0], "1Pending"]) == len(
            set(by_pub) | {PUBLISHERS[0], "1Pending"})
        assert store.name_window(stream, "publisher", 0, 10) == counts
        assert store.name_window(stream, "publisher", 1, 1) == counts[1:2]
        everything = [it for items in chain.blocks for it in items]
        some = everything[::4]
        assert _got(store.items_by_txids(stream, [it.txid for it in some])) == [
            (it.txid, it.vout) for it in everything
            if it.stream == stream and it.txid in {s.txid for s in some}]
        heights = list(range(0, len(chain.blocks), 3))
        assert _got(store.items_in_heights(stream, heights)) == [
            (it.txid, it.vout) for it in everything
            if it.stream == stream and it.height in heights]


def test_store_paging_matches_the_item_list_through_rollback_and_reindex(store_url):
    seed = random.randrange(2**32)
    log.info("seed %d", seed)
    chain = Chain(random.Random(seed))
    store = ChainStore(store_url)
    try:
        chain.add(store, 40)
        assert_store_matches(store, chain)

        log.info("roll back the top blocks: the kept items keep their places")
        chain.rollback_to(store, 25)
        assert_store_matches(store, chain)
        chain.add(store, 10)
        assert_store_matches(store, chain)
        chain.rollback_to(store, -1)
        assert_store_matches(store, chain)
        chain.add(store, 30)
        assert_store_matches(store, chain)

        log.info("a new ChainStore on the same database carries on numbering")
        store.close()
        store = ChainStore(store_url)
        chain.add(store, 5)
        assert_store_matches(store, chain)

        log.info("reindex: derived rows dropped and written again")
        store.clear_derived()
        assert store.count_items(STREAMS[0]) == 0
        assert store.publisher_counts(STREAMS[0], None) == []
        for height, items in enumerate(chain.blocks):
            store.put_block(_block(height, items), block_stored=True)
        assert_store_matches(store, chain)
    finally:
        store.close()


def test_store_positions_are_dense_per_stream_in_sql(store_url):
    """Read with plain SQL: each stream's positions are 1..n in item id order, and the
    count rows say n; a count row changed by hand is reported by count_problems (the
    start-up check)."""
    chain = Chain(random.Random(5))
    store = ChainStore(store_url)
    try:
        chain.add(store, 30)
        chain.rollback_to(store, 20)
        chain.add(store, 5)
        with store.engine.connect() as c:
            for stream in STREAMS:
                sid = c.scalar(sa.text("SELECT id FROM names WHERE name = :s"), {"s": stream})
                seqs = list(c.scalars(sa.text(
                    "SELECT seq FROM items WHERE stream = :s ORDER BY id"), {"s": sid}))
                assert seqs == list(range(1, len(seqs) + 1))
                total = c.scalar(sa.text("SELECT item_count FROM item_counts WHERE stream = :s "
                                         "AND publisher = 0"), {"s": sid})
                assert total == len(seqs) == len(chain.expected(stream))
            sid1 = c.scalar(sa.text("SELECT id FROM names WHERE name = :s"), {"s": STREAMS[1]})
        assert store.count_problems() == []
        with store.engine.begin() as c:
            c.execute(sa.text("UPDATE item_counts SET item_count = item_count + 1 "
                              "WHERE stream = :s AND publisher = 0"), {"s": sid1})
        assert store.count_problems() == [
            f"stream {STREAMS[1]}: {len(chain.expected(STREAMS[1])) + 1} items counted, its "
            f"last item is number {len(chain.expected(STREAMS[1]))}"]
    finally:
        store.close()


SCHEMA_1 = sa.MetaData()
"""The derived tables of schema 1 whose layout schema 2 changed (no positions, no counts;
stream ids, addresses and txids as text, each byte copied)."""
sa.Table("transactions", SCHEMA_1,
         sa.Column("txid", sa.CHAR(64), primary_key=True),
         sa.Column("height", sa.Integer, nullable=False, index=True),
         sa.Column("blockindex", sa.Integer, nullable=False),
         sa.Column("sender", sa.String(64), nullable=False),
         sa.Column("time_s", sa.BigInteger, nullable=False),
         sa.Column("raw", sa.LargeBinary, nullable=False))
sa.Table("items", SCHEMA_1,
         sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
         sa.Column("stream", sa.CHAR(64), nullable=False),
         sa.Column("txid", sa.CHAR(64), nullable=False),
         sa.Column("vout", sa.Integer, nullable=False),
         sa.Column("height", sa.Integer, nullable=False),
         sa.Column("publisher", sa.String(64), nullable=False),
         sa.Column("data", sa.LargeBinary, nullable=False),
         sa.Index("ix_items_stream_1", "stream", "id"))
sa.Table("item_keys", SCHEMA_1,
         sa.Column("item_id", sa.BigInteger, nullable=False),
         sa.Column("stream", sa.CHAR(64), nullable=False),
         sa.Column("item_key", sa.String(256), nullable=False),
         sa.Column("height", sa.Integer, nullable=False))


SCHEMA_2 = sa.MetaData()
sa.Table("transactions", SCHEMA_2,
         sa.Column("height", sa.Integer, primary_key=True, autoincrement=False),
         sa.Column("blockindex", sa.Integer, primary_key=True, autoincrement=False),
         sa.Column("txid", sa.LargeBinary(32).with_variant(mysql.BINARY(32), "mysql",
                                                           "mariadb"), nullable=False),
         sa.Column("sender", sa.Integer, nullable=False),
         sa.Column("time_s", sa.BigInteger, nullable=False),
         sa.Column("raw_start", sa.Integer, nullable=False),
         sa.Column("raw_size", sa.Integer, nullable=False),
         sa.Index("ix_transactions_txid", "txid", unique=True),
         sqlite_with_rowid=False)
"""Schema 2's transactions table (indexed by the whole txid; schema 3 indexes its txkey)."""


def test_store_of_schema_1_is_upgraded_at_open_and_pages_after_the_rebuild(store_url):
    """A schema-1 store (its items without positions, no item_counts) has its derived tables
    made again at open with the reindex mark set; rebuilt from its blocks, as the node's
    reindex does, it pages and counts as a new one, and new blocks follow on."""
    url = store_url
    chain = Chain(random.Random(11))
    store = ChainStore(url)
    chain.add(store, 25)
    stored = store.stored_range(0, len(chain.blocks) - 1)
    store.close()
    engine = sa.create_engine(url)
    with engine.begin() as c:
        for name in ("item_keys", "items", "transactions", "item_counts"):
            c.exec_driver_sql(f"DROP TABLE {name}")
        SCHEMA_1.create_all(c)
        c.execute(SCHEMA_1.tables["items"].insert(), [
            {"id": i.id, "stream": i.stream, "txid": i.txid, "vout": i.vout,
             "height": i.height, "publisher": i.publisher, "data": i.data}
            for i in stored.items])
        c.execute(sa.text("UPDATE meta SET value = '1' WHERE name = 'schema'"))
    engine.dispose()

    store = ChainStore(url)
    try:
        assert store.get_meta("schema") == SCHEMA_VERSION
        assert store.get_meta(REINDEX_MARK) is not None
        assert store.count_items(STREAMS[0]) == 0 and store.items(STREAMS[0], 0, 10) == []
        store.clear_derived()
        for height, items in enumerate(chain.blocks):
            store.put_block(_block(height, items), block_stored=True)
        assert_store_matches(store, chain)
        assert store.count_problems() == []
        chain.add(store, 5)
        assert_store_matches(store, chain)
    finally:
        store.close()


def test_store_readers_answer_each_call_with_its_own_values(store_url):
    """The store builds each read statement once and binds the values of every call
    (ChainStore._query): asked in turn about different streams, keys, publishers, txids
    and heights, each reader answers what the list of items says for those values, not
    for the first ones it was asked about."""
    chain = Chain(random.Random(7))
    store = ChainStore(store_url)
    try:
        chain.add(store, 20)
        everything = [it for items in chain.blocks for it in items]
        for stream in [*STREAMS, STREAMS[0]]:
            for sel in [{}, *({"key": k} for k in KEYS), *({"publisher": p} for p in PUBLISHERS),
                        {"key": "k0", "publisher": PUBLISHERS[0]}, {"key": "none"}]:
                want = chain.expected(stream, **sel)
                last = store.last_item(stream, **sel)
                assert (last.txid, last.vout) == want[-1] if want else last is None, (
                    stream, sel)
            for keys in (["k0"], ["k1", "rare", "none"], ["k2"]):
                counts = store.key_counts(stream, keys)
                assert [(k, n) for k, n, _ in counts] == sorted(
                    ((k, len(chain.expected(stream, key=k))) for k in keys
                     if chain.expected(stream, key=k)),
                    key=lambda kn: next(i for i, it in enumerate(everything)
                                        if it.stream == stream and kn[0] in it.keys))
        for it in everything[::5]:
            assert store.tx_row(it.txid).raw == b"tx" + it.data
            assert [(i.txid, i.vout) for i in store.items_by_tx(it.txid)] == [(it.txid, it.vout)]
        assert store.known_txids([everything[0].txid, everything[-1].txid, "00" * 32]) == {
            everything[0].txid, everything[-1].txid}
        for height in (3, 0, len(chain.blocks) - 1):
            row = store.block_row(height)
            assert row.height == height
            assert store.block_row(hash_hex=row.hash).height == height
            assert store.block_raw(height) == _block(height, chain.blocks[height]).raw
        assert [r.height for r in store.block_rows([5, 2, 9])] == [2, 5, 9]
        assert [r.height for r in store.block_rows([1])] == [1]
        first = 1_700_000_000
        assert [r.height for r in store.blocks_in_time(first + 4, first + 6)] == [4, 5, 6]
        assert [r.height for r in store.blocks_in_time(first + 10, first + 10)] == [10]
        assert len(store.blocks_raw(2, 3)) == 3 and len(store.blocks_raw(18, 5)) == 2
        for p in (PUBLISHERS[1], PUBLISHERS[2]):
            assert {t.txid for t in store.tx_rows_involving([p])} == {
                it.txid for it in everything if it.publisher == p}
    finally:
        store.close()


def test_store_txids_sharing_their_first_8_bytes_are_told_apart(store_url):
    """Lookups by txid seek the txid's first 8 bytes (`txkey`) and compare the whole txid:
    transactions whose txids share those bytes are each found by their own txid, and a
    txid of those bytes that is not stored is not found."""
    prefix = "ab" * 8
    txids = [prefix + f"{i:02x}" * 24 for i in range(4)]
    stored, absent = txids[:3], txids[3]
    store = ChainStore(store_url)
    try:
        for height, txid in enumerate(stored):
            item = ItemRow(0, STREAMS[0], txid, 0, height, 0, PUBLISHERS[0], (f"k{height}",),
                           0, f"data {height}".encode(), False, 1_700_000_000)
            store.put_block(_block(height, [item]))
        for height, txid in enumerate(stored):
            assert store.tx_row(txid).raw == f"txdata {height}".encode()
            assert store.tx_row(txid).height == height
            assert [i.txid for i in store.items_by_tx(txid)] == [txid]
            assert store.known_txids([txid]) == {txid}
        assert store.tx_row(absent) is None and store.items_by_tx(absent) == []
        assert store.known_txids([absent]) == set()
        assert store.known_txids([*txids, "00" * 32]) == set(stored)
        assert [i.txid for i in store.items_by_txids(STREAMS[0], [txids[2], absent,
                                                                   txids[0]])] == [
            txids[0], txids[2]]
    finally:
        store.close()


def test_store_of_schema_2_is_upgraded_at_open_and_finds_its_txids_after_the_rebuild(
        store_url):
    """A schema-2 store (transactions indexed by the whole txid, no txkey) has its
    transactions table made again at open with the reindex mark set; rebuilt from its
    blocks, as the node's reindex does, it finds every transaction by txid again."""
    url = store_url
    chain = Chain(random.Random(12))
    store = ChainStore(url)
    chain.add(store, 10)
    store.close()
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.exec_driver_sql("DROP TABLE transactions")
        SCHEMA_2.create_all(c)
        c.execute(sa.text("UPDATE meta SET value = '2' WHERE name = 'schema'"))
    engine.dispose()

    store = ChainStore(url)
    try:
        assert store.get_meta("schema") == SCHEMA_VERSION
        assert store.get_meta(REINDEX_MARK) is not None
        store.clear_derived()
        for height, items in enumerate(chain.blocks):
            store.put_block(_block(height, items), block_stored=True)
        assert_store_matches(store, chain)
        everything = [it for items in chain.blocks for it in items]
        for it in everything[::3]:
            assert store.tx_row(it.txid).raw == b"tx" + it.data
        assert store.known_txids([it.txid for it in everything]) == {
            it.txid for it in everything}
        chain.add(store, 3)
        assert_store_matches(store, chain)
    finally:
        store.close()


def test_store_write_failing_on_a_row_leaves_the_store_as_it_was(store_url):
    """A write whose rows break a constraint part-way (two transactions at one place in
    their block) raises the database's IntegrityError and stores none of its rows: not its
    block, not the rows before the bad one, no item count; the next write numbers its items
    on from the last stored ones, as if the failed one had not been tried."""
    chain = Chain(random.Random(13))
    store = ChainStore(store_url)
    try:
        chain.add(store, 6)
        height = len(chain.blocks)
        items = [ItemRow(0, STREAMS[0], hashlib.sha256(f"bad {v}".encode()).hexdigest(), v,
                         height, v, PUBLISHERS[0], ("k0",), 0, f"bad {v}".encode(), False,
                         1_700_000_000) for v in range(3)]
        bad = _block(height, items)
        bad.txs[2] = bad.txs[2]._replace(blockindex=1)
        with pytest.raises(sa.exc.IntegrityError):
            store.put_block(bad)
        assert store.tip().height == height - 1
        assert store.tx_row(items[0].txid) is None
        assert store.known_txids([it.txid for it in items]) == set()
        assert_store_matches(store, chain)
        assert store.count_problems() == []
        chain.add(store, 3)
        assert_store_matches(store, chain)
        assert store.count_problems() == []
    finally:
        store.close()
