"""The chain store: blocks, transactions, stream items and derived state in one SQL database.

SQLAlchemy Core over a SQLite file (WAL) by default; any SQLAlchemy URL (PostgreSQL, MariaDB)
works. Each block is written in one database transaction (`put_blocks`: a run of blocks of
initial sync in one); `rollback_to` deletes everything above a height in one transaction.
Only the active chain is stored.

Each byte of a transaction is stored once, in its raw block (`blocks.raw`): a transaction row
says where its bytes are in the block (`raw_start`, `raw_size`), an item row where its data
is (`data_start`, `data_size`), and the readers slice them out (on SQLite with incremental
blob I/O, which reads only the pages of the slice). Txids are stored as 32 bytes, stream ids
and addresses as small integers through the `names` table; the rows index what the queries
need and nothing more (schema 2; about 510 instead of 1,500 bytes per one-item transaction,
bench/storage.py; schema 3 indexes a txid's first 8 bytes instead of all 32, see txs_t).
Block hashes, stream and permission rows stay as readable text.

Each item has its place in its stream (`seq`, 1..n in id order, index ix_items_seq), and
`item_counts` holds each stream's and each (stream, publisher)'s item count and first item
id, written in the block's transaction: a window anywhere in a stream is an index seek, and
counting a stream's items or publishers reads a few rows.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import sqlite3
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from ledger.errors import StoreError

log = logging.getLogger(__name__)

SCHEMA_VERSION = "3"
REBUILT_SCHEMAS = {"1": ("item_keys", "items", "transactions", "item_counts"),
                   "2": ("transactions",)}
"""Older schemas upgraded at open: their derived tables of another layout are dropped, made
again empty, and the node rebuilds them from the kept blocks (the reindex mark is set)."""
REINDEX_MARK = "reindex"
"""The meta row that says a reindex is under way (node.chain.Chain.REINDEX_MARK)."""

_Blob = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
_Text = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
_Hash = sa.LargeBinary(32).with_variant(mysql.BINARY(32), "mysql", "mariadb")
_RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
"""A BIGINT key, which on SQLite is `INTEGER PRIMARY KEY`: the rowid itself, not a copy."""
_Name = sa.String(64).with_variant(mysql.VARCHAR(64, charset="ascii", collation="ascii_bin"),
                                   "mysql", "mariadb")
"""Case matters in addresses: MariaDB's default collation would make two of them one name."""
_NO_ID = -1
"""Stands for a name the store has never seen: matches no row."""

metadata = sa.MetaData()

meta_t = sa.Table(
    "meta", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", _Text, nullable=False),
)
names_t = sa.Table(
    "names", metadata,
    sa.Column("id", _RowId, primary_key=True, autoincrement=False),
    sa.Column("name", _Name, nullable=False, unique=True),
)
"""Stream ids (createtxid hex) and addresses, each stored once; the other tables hold its id.
Never deleted: a name left by a rolled-back block is harmless."""
blocks_t = sa.Table(
    "blocks", metadata,
    sa.Column("height", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("hash", sa.CHAR(64), nullable=False, unique=True),
    sa.Column("prev_hash", sa.CHAR(64), nullable=False),
    sa.Column("time_s", sa.BigInteger, nullable=False),
    sa.Column("time_ms", sa.BigInteger, nullable=False),
    sa.Column("miner", sa.String(64), nullable=False, index=True),
    sa.Column("txcount", sa.Integer, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("raw", _Blob, nullable=False),
)
txs_t = sa.Table(
    "transactions", metadata,
    sa.Column("height", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("blockindex", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("txid", _Hash, nullable=False),
    sa.Column("sender", sa.Integer, nullable=False),
    sa.Column("time_s", sa.BigInteger, nullable=False),
    sa.Column("raw_start", sa.Integer, nullable=False),
    sa.Column("raw_size", sa.Integer, nullable=False),
    # The txid's first 8 bytes as a signed integer (_txkey), indexed in place of the txid.
    sa.Column("txkey", sa.BigInteger, nullable=False),
    sa.Index("ix_transactions_txkey", "txkey"),
    sqlite_with_rowid=False,
)
"""Lookups by txid seek `txkey` and compare the whole txid (`txkey = ? AND txid = ?`).

Txids are random, so each transaction's index entry lands on a page of its own: once the
index outgrows the few pages a block touches, every transaction dirties one index page
that the commit writes to the WAL and the checkpoint again. An entry of 32 bytes of txid
made that index 2.6 times the size of the 8-byte one and the cost of a block's commit grew
with it (measured: replaying the rows of 100,000 one-item transactions in blocks of 1,000
into SQLite, 28-30 us per tx with the txid index against 22-24 with this one, 38 against
27 us over the last 10,000). Two txids may share a key; the txid column tells them apart.
Txids are unique by consensus (the replay check), which the unique txid index repeated."""
items_t = sa.Table(
    "items", metadata,
    sa.Column("id", _RowId, primary_key=True, autoincrement=False),
    sa.Column("stream", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("blockindex", sa.Integer, nullable=False),
    sa.Column("vout", sa.Integer, nullable=False),
    sa.Column("publisher", sa.Integer, nullable=False),
    sa.Column("keys_json", _Text, nullable=False),
    sa.Column("format", sa.SmallInteger, nullable=False),
    sa.Column("offchain", sa.Boolean, nullable=False),
    sa.Column("data_start", sa.Integer, nullable=False),
    sa.Column("data_size", sa.Integer, nullable=False),
    sa.Column("time_s", sa.BigInteger, nullable=False),
    # The item's place in its stream (1, 2, ...; dense, in id order): liststreamitems'
    # window at any position is an index seek on ix_items_seq, not an OFFSET scan.
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Index("ix_items_stream", "stream", "id"),
    sa.Index("ix_items_publisher", "stream", "publisher", "id"),
    sa.Index("ix_items_tx", "height", "blockindex", "vout"),
    sa.Index("ix_items_seq", "stream", "seq", unique=True),
)
item_keys_t = sa.Table(
    "item_keys", metadata,
    sa.Column("item_id", sa.BigInteger, nullable=False),
    sa.Column("stream", sa.Integer, nullable=False),
    sa.Column("item_key", sa.String(256), nullable=False),
    sa.Column("height", sa.Integer, nullable=False, index=True),
    sa.Index("ix_item_keys", "stream", "item_key", "item_id"),
)
streams_t = sa.Table(
    "streams", metadata,
    sa.Column("createtxid", sa.CHAR(64), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("name_lower", sa.String(64), nullable=False, index=True),
    sa.Column("streamref", sa.String(64), nullable=False),
    sa.Column("restrictions", sa.Integer, nullable=False),
    sa.Column("salted", sa.Boolean, nullable=False),
    sa.Column("details", _Text, nullable=False),
    sa.Column("creator", sa.String(64), nullable=False),
    sa.Column("height", sa.Integer, nullable=False, index=True),
)
perm_log_t = sa.Table(
    "permission_log", metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("address", sa.String(64), nullable=False),
    sa.Column("entity", sa.String(64), nullable=False),
    sa.Column("perm", sa.String(16), nullable=False),
    sa.Column("start_block", sa.BigInteger, nullable=False),
    sa.Column("end_block", sa.BigInteger, nullable=False),
    sa.Column("admin", sa.String(64), nullable=False),
    sa.Column("time_s", sa.BigInteger, nullable=False),
    sa.Column("txid", sa.CHAR(64), nullable=False),
    sa.Column("height", sa.Integer, nullable=False, index=True),
)
item_counts_t = sa.Table(
    # Confirmed items per stream (publisher _ALL) and per stream and publisher (name ids),
    # with the id of the first one: kept by put_block and rollback_to in the same database
    # transaction as the items, so counting a stream's items or listing its publishers reads
    # a few rows.
    "item_counts", metadata,
    sa.Column("stream", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("publisher", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("item_count", sa.BigInteger, nullable=False),
    sa.Column("first_id", sa.BigInteger, nullable=False),
)
_ALL = 0
"""item_counts' publisher for the row of the whole stream (name ids start at 1)."""
subscriptions_t = sa.Table(
    "subscriptions", metadata,
    sa.Column("stream", sa.CHAR(64), primary_key=True),
)


@dataclass(frozen=True, slots=True)
class BlockRow:
    height: int
    hash: str
    prev_hash: str
    time_s: int
    time_ms: int
    miner: str
    txcount: int
    size: int


class TxRow(NamedTuple):
    """One stored transaction. TxRow and ItemRow are named tuples rather than frozen
    dataclasses: a block makes one of each per transaction and item, and a frozen
    dataclass's `__init__` sets each field through `object.__setattr__` (~2 µs for an item
    against ~0.4 µs for the tuple), while both stay immutable."""

    txid: str
    height: int
    blockindex: int
    sender: str
    time_s: int
    raw: bytes


class ItemRow(NamedTuple):
    """One stream item as stored (confirmed), or as held in the mempool (height -1)."""

    id: int
    stream: str
    txid: str
    vout: int
    height: int
    blockindex: int
    publisher: str
    keys: tuple[str, ...]
    format: int
    data: bytes
    offchain: bool
    time_s: int


@dataclass(frozen=True, slots=True)
class StreamRow:
    createtxid: str
    name: str
    streamref: str
    restrictions: int
    salted: bool
    details: str
    creator: str
    height: int


@dataclass(frozen=True, slots=True)
class PermRow:
    kind: str
    address: str
    entity: str
    perm: str
    start_block: int
    end_block: int
    admin: str
    time_s: int
    txid: str
    height: int


@dataclass(slots=True)
class BlockWrite:
    """Everything one block adds to the store, prepared by the node from consensus effects."""

    block: BlockRow
    raw: bytes
    txs: list[TxRow]
    items: list[ItemRow]
    streams: list[StreamRow]
    perms: list[PermRow]


@dataclass(slots=True)
class StoredRange:
    """The stored rows of a range of heights (ChainStore.stored_range)."""

    blocks: list[tuple[BlockRow, bytes]]
    txs: list[TxRow]
    items: list[ItemRow]
    item_keys: list[tuple]
    streams: list[StreamRow]
    perms: list[PermRow]
    rows_above: int
    block_count: int
    bad_txkeys: list[int] = field(default_factory=list)
    """Heights of the transaction rows whose `txkey` is not their txid's (found by no
    lookup by txid)."""


_SQLITE_MAX_VARS = 999
_TX_INSERT = ("height", "blockindex", "txid", "sender", "time_s", "raw_start", "raw_size",
              "txkey")
_ITEM_INSERT = ("id", "stream", "height", "blockindex", "vout", "publisher", "keys_json",
                "format", "offchain", "data_start", "data_size", "time_s", "seq")
_KEY_INSERT = ("item_id", "stream", "item_key", "height")
_BLOCK_COLS = [blocks_t.c[n] for n in (
    "height", "hash", "prev_hash", "time_s", "time_ms", "miner", "txcount", "size")]
_ITEM_COLS = [items_t.c.id, items_t.c.stream, txs_t.c.txid, items_t.c.vout, items_t.c.height,
              items_t.c.blockindex, items_t.c.publisher, items_t.c.keys_json, items_t.c.format,
              items_t.c.offchain, items_t.c.time_s, items_t.c.data_start, items_t.c.data_size]
_TX_COLS = [txs_t.c.txid, txs_t.c.height, txs_t.c.blockindex, txs_t.c.sender, txs_t.c.time_s,
            txs_t.c.raw_start, txs_t.c.raw_size]
_ITEMS_WITH_TX = items_t.join(txs_t, sa.and_(txs_t.c.height == items_t.c.height,
                                             txs_t.c.blockindex == items_t.c.blockindex))
_COUNT_UPDATE = sa.update(item_counts_t).where(
    item_counts_t.c.stream == sa.bindparam("b_stream"),
    item_counts_t.c.publisher == sa.bindparam("b_publisher"),
).values(item_count=sa.bindparam("b_count"))
_COUNT_INSERT = item_counts_t.insert()
_BLOCK_INSERT = blocks_t.insert()
_STREAM_INSERT = streams_t.insert()
_PERM_INSERT = perm_log_t.insert()
"""put_blocks' statements, made once: SQLAlchemy finds their compiled forms by a key it
computes from the statement object, which a statement built for each call must compute
again."""
_WINDOW_INDEX = {
    "key": (item_keys_t.c.item_id, (item_keys_t.c.stream == sa.bindparam("sid"),
                                    item_keys_t.c.item_key == sa.bindparam("name"))),
    "publisher": (items_t.c.id, (items_t.c.stream == sa.bindparam("sid"),
                                 items_t.c.publisher == sa.bindparam("name"))),
}
"""The item id column and the filter (stream `sid`, key or publisher `name`) of the index a
key's or a publisher's window is read from (ChainStore._window_ids)."""


def _txid_bytes(txid_hex: str) -> bytes | None:
    """The 32 bytes of a txid in hex, or None for a string that is not one (matches nothing)."""
    try:
        b = bytes.fromhex(txid_hex)
    except (ValueError, TypeError):
        return None
    return b if len(b) == 32 else None


def _txids_bytes(txids_hex: Iterable[str]) -> list[bytes]:
    return [b for b in map(_txid_bytes, txids_hex) if b is not None]


_TXKEY = struct.Struct(">q")
"""A txid's first 8 bytes as a signed big-endian integer: `_TXKEY.unpack_from(txid)[0]`
reads them without the slice and the keyword arguments of int.from_bytes (about half the
cost; the writes and the replay check take one for every transaction)."""


def _txkey(txid: bytes) -> int:
    """The transactions row's `txkey` of a txid: its first 8 bytes as a signed integer."""
    return _TXKEY.unpack_from(txid)[0]


def _find(raw: bytes, part: bytes, start: int, end: int, what: str) -> int:
    """Where `part` is in raw[start:end]: any place holding the same bytes will do."""
    at = raw.find(part, start, end)
    if at < 0:
        raise StoreError(f"cannot store {what}: its bytes are not in the raw block")
    return at


class ChainStore:
    """The narrow storage interface of the node: append a block, roll back, look things up."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        try:
            self.engine = sa.create_engine(url, echo=echo, future=True)
        except Exception as e:  # an unusable URL or a missing driver
            raise StoreError(f"cannot use chain store {url!r}: {e}") from None
        self._sqlite = self.engine.dialect.name == "sqlite"
        if self._sqlite:
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            metadata.create_all(self.engine)
            if self.engine.dialect.name == "postgresql":
                _raw_stored_external(self.engine)
        except sa.exc.SQLAlchemyError as e:
            raise StoreError(f"cannot open chain store: {e}") from None
        self._lock = threading.Lock()
        self._insert_plans: dict[str, tuple[str, list[int] | str | None]] = {}
        self._sqlite_inserts: dict[str, dict[int, str]] = {}  # table -> rows -> statement
        self._select_plans: dict[str, tuple[str, bool]] = {}
        self._txkeys_selects: dict[int, str] = {}
        self._queries: dict[str, sa.Select] = {}
        self._items_select = self._select_items()  # built once: it is the same each time
        self._txs_select = self._select_txs()
        self._ids: dict[str, int] = {}
        self._names: dict[int, str] = {}
        # The writer's copy of item_counts: (stream id, publisher id) -> (items, first id).
        self._counts: dict[tuple[int, int], tuple[int, int]] = {}
        # distinct_count's memory of key counts: stream id -> (distinct keys, the item id up
        # to which they are counted); dropped, and the generation moved on, whenever items are removed.
        self._key_totals: dict[int, tuple[int, int]] = {}
        self._key_generation = 0
        try:
            with self.engine.connect() as c:
                ver = c.scalar(sa.select(meta_t.c.value).where(meta_t.c.name == "schema"))
            if ver in REBUILT_SCHEMAS:
                self._upgrade(ver)
            with self.engine.connect() as c:
                self._next_item_id = (c.scalar(sa.select(sa.func.max(items_t.c.id))) or 0) + 1
                self._next_perm_id = (c.scalar(sa.select(sa.func.max(perm_log_t.c.id)))
                                      or 0) + 1
                self._load_names(c)
                self._counts = _read_counts(c)
        except sa.exc.DatabaseError as e:
            raise StoreError(f"the chain store file is damaged ({str(e.orig or e).strip()}); "
                             "restore it from a backup, or remove it and start again to "
                             "fetch the chain from peers") from None
        if ver is None:
            self.set_meta("schema", SCHEMA_VERSION)
        elif ver != SCHEMA_VERSION and ver not in REBUILT_SCHEMAS:
            raise StoreError(f"chain store schema {ver} is not supported (need {SCHEMA_VERSION})")

    def _upgrade(self, ver: str) -> None:
        """Make a schema-`ver` store a current one: its blocks stay, the derived tables whose
        layout changed are made again (empty), and the reindex mark makes the node rebuild
        every derived row from the blocks at its start (and again after a crash part-way)."""
        log.warning("the chain store has schema %s: upgrading it to %s; the derived rows are "
                    "rebuilt from the stored blocks (a reindex)", ver, SCHEMA_VERSION)
        q = self.engine.dialect.identifier_preparer.quote
        with self.engine.begin() as c:
            c.execute(meta_t.delete().where(meta_t.c.name == REINDEX_MARK))
            c.execute(meta_t.insert().values(name=REINDEX_MARK, value="in progress"))
        with self.engine.begin() as c:
            for name in REBUILT_SCHEMAS[ver]:
                c.exec_driver_sql(f"DROP TABLE IF EXISTS {q(name)}")
        metadata.create_all(self.engine)
        if self._sqlite:  # give the old tables' pages back to the file system
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.exec_driver_sql("VACUUM")
        self.set_meta("schema", SCHEMA_VERSION)

    def close(self) -> None:
        self.engine.dispose()

    def _query(self, name: str, build: Callable[[], sa.Select]) -> sa.Select:
        """The read statement `name`, made by `build` on first use and kept; its values are
        `sa.bindparam`s, given at each execution.

        SQLAlchemy finds a statement's compiled form in its cache by a key computed from the
        statement object. Building the select (its filters, the page-of-ids join) and its
        key again on every call cost more than running it: `last_item` by key took 650-1,100
        us on SQLite, of which about 120 the execution. A statement object built once keeps
        its cache key, so a call costs the cache hit, the execution and the rows. (Two
        threads asking first at once may each build it: either copy does.)"""
        q = self._queries.get(name)
        if q is None:
            q = self._queries[name] = build()
        return q

    # -- meta -------------------------------------------------------------------------------
    def get_meta(self, name: str) -> str | None:
        q = self._query("meta", lambda: sa.select(meta_t.c.value).where(
            meta_t.c.name == sa.bindparam("name")))
        with self.engine.connect() as c:
            return c.scalar(q, {"name": name})

    def set_meta(self, name: str, value: str) -> None:
        with self.engine.begin() as c:
            c.execute(meta_t.delete().where(meta_t.c.name == name))
            c.execute(meta_t.insert().values(name=name, value=value))

    # -- names ------------------------------------------------------------------------------
    def _load_names(self, c: sa.Connection) -> None:
        for i, name in c.execute(sa.select(names_t.c.id, names_t.c.name)):
            self._ids[name] = i
            self._names[i] = name

    def _name(self, c: sa.Connection, i: int) -> str:
        name = self._names.get(i)
        if name is None:  # written by another store object on the same database
            self._load_names(c)
            name = self._names.get(i, "")
        return name

    def _id(self, name: str) -> int:
        """The id of a stream id or address, or _NO_ID when the store has none for it."""
        i = self._ids.get(name)
        if i is None:
            if not name.isascii() or len(name) > 64:  # no stream id or address looks so
                return _NO_ID
            q = self._query("name_id", lambda: sa.select(names_t.c.id).where(
                names_t.c.name == sa.bindparam("name")))
            with self.engine.connect() as c:
                i = c.scalar(q, {"name": name})
            if i is None:
                return _NO_ID
            self._ids[name], self._names[i] = i, name
        return i

    def _ensure_names(self, names: Iterable[str]) -> dict[str, int]:
        """Ids for every name, adding the new ones in a transaction of their own (a name
        row that no block row uses is harmless, so they need not wait for the block's)."""
        new = [n for n in dict.fromkeys(names) if n not in self._ids]
        if new:
            with self.engine.begin() as c:
                known = dict(c.execute(sa.select(names_t.c.name, names_t.c.id)
                                       .where(names_t.c.name.in_(new))).all())
                add = [n for n in new if n not in known]
                nid = (c.scalar(sa.select(sa.func.max(names_t.c.id))) or 0) + 1
                if add:
                    c.execute(names_t.insert(), [{"id": nid + k, "name": n}
                                                 for k, n in enumerate(add)])
            known.update((n, nid + k) for k, n in enumerate(add))
            for n, i in known.items():
                self._ids[n], self._names[i] = i, n
        return self._ids

    # -- writing ----------------------------------------------------------------------------
    @property
    def next_item_id(self) -> int:
        return self._next_item_id

    def put_block(self, w: BlockWrite, *, block_stored: bool = False) -> None:
        """Append one block and everything derived from it, atomically.

        `block_stored`: the block row is already there (a reindex rebuilding derived rows)."""
        self.put_blocks([w], block_stored=block_stored)

    def put_blocks(self, writes: Sequence[BlockWrite], *, block_stored: bool = False) -> None:
        """Append consecutive blocks and everything derived from them in ONE database
        transaction: all of them or, on any error, none (the counters stay as they were).

        Initial sync connects a batch of blocks this way: one commit, one insert statement
        per table and one update per (stream, publisher) count for the whole batch instead
        of per block."""
        if not writes:
            return
        with self._lock:
            try:
                nid, counts, tx_rows, rows, keys = self._rows(writes, self._ids)
            except KeyError:
                # A sender, stream or publisher without an id yet (a chain's first blocks, a
                # new stream or address): new names get ids in order of appearance, and the
                # rows are made again. Finding out by the lookup that failed costs nothing
                # for the writes that have no new name, where collecting every write's names
                # first to compare them with the known ones cost a pass over all its rows.
                ids = self._ensure_names([n for w in writes for n in (
                    *(t.sender for t in w.txs),
                    *(x for it in w.items for x in (it.stream, it.publisher)))])
                nid, counts, tx_rows, rows, keys = self._rows(writes, ids)
            pid = self._next_perm_id
            perms = [{"id": pid + i, "kind": p.kind, "address": p.address,
                      "entity": p.entity, "perm": p.perm, "start_block": p.start_block,
                      "end_block": p.end_block, "admin": p.admin, "time_s": p.time_s,
                      "txid": p.txid, "height": p.height}
                     for i, p in enumerate(p for w in writes for p in w.perms)]
            streams = [{"createtxid": s.createtxid, "name": s.name, "name_lower": s.name.lower(),
                        "streamref": s.streamref, "restrictions": s.restrictions,
                        "salted": s.salted, "details": s.details, "creator": s.creator,
                        "height": s.height} for w in writes for s in w.streams]
            with self.engine.begin() as c:
                if not block_stored:
                    c.execute(_BLOCK_INSERT, [
                        {"height": b.height, "hash": b.hash, "prev_hash": b.prev_hash,
                         "time_s": b.time_s, "time_ms": b.time_ms, "miner": b.miner,
                         "txcount": b.txcount, "size": b.size, "raw": w.raw}
                        for w in writes for b in (w.block,)])
                if tx_rows:
                    self._insert_many(c, txs_t, _TX_INSERT, tx_rows)
                if rows:
                    self._insert_many(c, items_t, _ITEM_INSERT, rows)
                if keys:
                    self._insert_many(c, item_keys_t, _KEY_INSERT, keys)
                if counts:
                    self._write_counts(c, counts)
                if streams:
                    c.execute(_STREAM_INSERT, streams)
                if perms:
                    c.execute(_PERM_INSERT, perms)
            # Counters move only after the commit succeeded.
            self._next_item_id = nid
            self._next_perm_id += len(perms)
            self._counts.update(counts)

    def _rows(self, writes: Sequence[BlockWrite], ids: dict[str, int]) -> tuple[
            int, dict[tuple[int, int], tuple[int, int]], list[tuple], list[tuple], list[tuple]]:
        """The rows of `writes` (`_block_rows` of each): the next item id, the item counts
        after them, the tx, item and key rows; KeyError for a name `ids` does not hold."""
        counts: dict[tuple[int, int], tuple[int, int]] = {}  # after the batch
        tx_rows: list[tuple] = []
        rows: list[tuple] = []
        keys: list[tuple] = []
        nid = self._next_item_id
        for w in writes:
            nid = self._block_rows(w, ids, nid, counts, tx_rows, rows, keys)
        return nid, counts, tx_rows, rows, keys

    def _block_rows(self, w: BlockWrite, ids: dict[str, int], nid: int,
                    counts: dict[tuple[int, int], tuple[int, int]], tx_rows: list[tuple],
                    rows: list[tuple], keys: list[tuple]) -> int:
        """Add one block's tx, item and key rows to the lists and its item counts to
        `counts` (which holds the counts after the earlier blocks of the same write, on top
        of the stored ones); returns the next item id.

        This runs for every transaction and item a node connects (mined, relayed or synced),
        so it is written as one pass with local names. A transaction's bytes are looked for
        right after their length prefix first, where an encoded block has them (a compare
        instead of a search); anywhere after the previous one otherwise."""
        raw = w.raw
        startswith, find = raw.startswith, raw.find
        txkey = _TXKEY.unpack_from
        spans, pos = [], 0
        add_tx = tx_rows.append
        # Rows are unpacked in the loop headers (TxRow's and ItemRow's field order): one
        # step instead of an attribute lookup per field.
        for txid_hex, height, index, sender, time_s, traw in w.txs:
            n = len(traw)
            at = pos + (1 if n < 0xFD else 3 if n <= 0xFFFF else 5)  # ledger varint_size
            if not startswith(traw, at):
                at = find(traw, pos)
                if at < 0:  # _find's error, without making its message for every tx
                    _find(raw, traw, pos, len(raw), f"transaction {txid_hex}")
            pos = at + n
            spans.append([at, pos])  # where the tx's next item's data may start, its end
            txid = bytes.fromhex(txid_hex)
            add_tx((height, index, txid, ids[sender], time_s, at, n,
                    txkey(txid)[0]))  # _txkey

        def had(key: tuple[int, int], first: int) -> tuple[int, int]:
            got = counts.get(key)
            return got if got is not None else self._counts.get(key, (0, first))

        dumps = orjson.dumps
        seq: dict[int, int] = {}  # stream -> the last position given
        first_new: dict[int, int] = {}  # stream -> its first item id in this block
        by_pub: dict[tuple[int, int], list[int]] = {}  # -> [items, first id]
        add_row, add_key = rows.append, keys.append
        for (_, stream, txid_hex, vout, h, index, publisher, ks, fmt, data, offchain,
             time_s) in w.items:
            span = spans[index]
            at = find(data, span[0], span[1])
            if at < 0:  # _find's error, without making its message for every item
                _find(raw, data, span[0], span[1], f"item {txid_hex}:{vout}")
            span[0] = at + len(data)
            sid, pid = ids[stream], ids[publisher]
            n = seq.get(sid)
            if n is None:
                n = had((sid, _ALL), 0)[0]
                first_new[sid] = nid
            seq[sid] = n = n + 1
            group = by_pub.get((sid, pid))
            if group is None:
                by_pub[sid, pid] = [1, nid]
            else:
                group[0] += 1
            add_row((nid, sid, h, index, vout, pid, dumps(ks).decode(), fmt, offchain, at,
                     len(data), time_s, n))
            if len(ks) == 1:
                add_key((nid, sid, ks[0], h))
            elif ks:
                for k in dict.fromkeys(ks):  # each distinct key once
                    add_key((nid, sid, k, h))
            nid += 1
        for sid, n in seq.items():
            counts[sid, _ALL] = (n, had((sid, _ALL), first_new[sid])[1])
        for group, (n, first) in by_pub.items():
            before, before_first = had(group, first)
            counts[group] = (before + n, before_first)
        return nid

    def _write_counts(self, c: sa.Connection, counts: dict[tuple[int, int], tuple[int, int]]
                      ) -> None:
        """Store the new item counts of one write: an update of each (stream, publisher)
        row that exists, one insert of those that are new (statements made once: building
        an update for each row cost more than the update)."""
        old, new = [], []
        for (stream, publisher), (n, first) in counts.items():
            if (stream, publisher) in self._counts:
                old.append({"b_stream": stream, "b_publisher": publisher, "b_count": n})
            else:
                new.append({"stream": stream, "publisher": publisher, "item_count": n,
                            "first_id": first})
        if old:
            c.execute(_COUNT_UPDATE, old)
        if new:
            c.execute(_COUNT_INSERT, new)

    def _insert_many(self, c: sa.Connection, table: sa.Table, cols: tuple[str, ...],
                     rows: list[tuple]) -> None:
        """One executemany of `rows` (tuples in `cols` order) handed straight to the driver.

        SQLAlchemy's per-row parameter processing cost more than SQLite's own insert work
        for a block of thousands of items (about 40 of 60 us per item). The values are plain
        str, int, bytes and bool, which every supported driver takes as they are, so the
        per-row type processing is not needed. The statement is compiled once per table for
        the engine's dialect and parameter style."""
        if self.engine.dialect.name == "sqlite":
            self._insert_sqlite(c, table, cols, rows)
            return
        plan = self._insert_plans.get(table.name)
        if plan is None:
            compiled = table.insert().compile(dialect=self.engine.dialect, column_keys=list(cols))
            if compiled.positional:
                order = list(compiled.positiontup or ())
                if sorted(order) != sorted(cols):
                    raise StoreError(f"cannot prepare the insert into {table.name}")
                idx = [cols.index(name) for name in order]
                plan = (compiled.string, None if idx == list(range(len(cols))) else idx)
            else:
                plan = (compiled.string, "named")
            self._insert_plans[table.name] = plan
        sql, how = plan
        if how is None:
            params: list = rows
        elif how == "named":
            params = [dict(zip(cols, r, strict=True)) for r in rows]
        else:
            params = [tuple(r[i] for i in how) for r in rows]
        c.exec_driver_sql(sql, params)

    def _insert_sqlite(self, c: sa.Connection, table: sa.Table, cols: tuple[str, ...],
                       rows: list[tuple]) -> None:
        """SQLite: multi-row `INSERT ... VALUES (...), (...)` statements instead of an
        executemany.

        The sqlite3 module releases the GIL around every statement step, so an executemany
        of N rows hands the GIL to the busy RPC event loop and waits to get it back N
        times: with the event loop serving publishes, a block's inserts took 5-30 times
        their own CPU (a GIL convoy; measured 150-200 instead of 25 us per tx). One
        statement per up to 999 bound values (SQLite's smallest compile-time limit) steps
        once per 80-250 rows.

        `OR ROLLBACK`: a row that breaks a constraint rolls back the whole transaction
        (what put_blocks does on any error anyway) instead of only its statement. So SQLite
        keeps no statement journal, which it otherwise writes to a temporary file for a
        multi-row insert: the old content of every page the statement changes, a page per
        transaction for the random txkey index (measured on 60,000 one-item transactions
        in blocks of 1,000: 157,000 -> 47,000 pwrite calls, 6.3 -> 3.0 us of system time
        per transaction).

        Every statement has `per` rows or a power of two fewer, so the few texts recur and
        stay prepared in the statement cache of each pooled connection. The last, shorter
        statement of a block used to have the block's own row count, a new text whenever
        block sizes differ (a running node's do): SQLite parsed it again, about a million
        instructions for 70 rows of 13 values, some 8k per item in blocks of ~300. The
        price is a few more statements per block (one per set bit of the remainder)."""
        per = max(1, _SQLITE_MAX_VARS // len(cols))
        sqls = self._sqlite_inserts.get(table.name)
        if sqls is None:
            q = self.engine.dialect.identifier_preparer.quote
            head = f"INSERT OR ROLLBACK INTO {q(table.name)} ({', '.join(q(n) for n in cols)}) VALUES "
            one = "(" + ", ".join("?" * len(cols)) + ")"
            sizes = {per, *(1 << k for k in range(per.bit_length()) if 1 << k < per)}
            sqls = self._sqlite_inserts[table.name] = {
                n: head + ", ".join([one] * n) for n in sizes}
        flat = itertools.chain.from_iterable
        # The driver's cursor on the transaction's own connection: SQLAlchemy's execution
        # context per statement cost about as much as SQLite's parse of a cached one. Its
        # errors are raised as SQLAlchemy's, as a statement run through SQLAlchemy raises.
        cur = c.connection.driver_connection.cursor()
        sql, params = sqls[per], ()
        pos, left = 0, len(rows)
        try:
            while left:
                n = per if left >= per else 1 << (left.bit_length() - 1)
                sql = sqls[n]
                params = tuple(flat(rows[pos:pos + n]))
                cur.execute(sql, params)
                pos += n
                left -= n
        except sqlite3.Error as e:
            raise sa.exc.DBAPIError.instance(sql, params, e, sqlite3.Error) from e
        finally:
            cur.close()

    def rollback_to(self, height: int) -> None:
        """Delete every block above `height` and everything derived from them."""
        with self._lock:
            try:
                with self.engine.begin() as c:
                    # Items leave in whole blocks from the top, so the removed ones are the
                    # last of each stream: the positions of those kept stay 1..n.
                    self._uncount_items_above(c, height)
                    for t in (item_keys_t, items_t, txs_t, streams_t, perm_log_t, blocks_t):
                        c.execute(t.delete().where(t.c.height > height))
                    self._next_item_id = (c.scalar(sa.select(sa.func.max(items_t.c.id)))
                                          or 0) + 1
                    self._next_perm_id = (c.scalar(sa.select(sa.func.max(perm_log_t.c.id)))
                                          or 0) + 1
            finally:
                self._forget_key_totals()
                with self.engine.connect() as c:
                    self._counts = _read_counts(c)

    def _uncount_items_above(self, c: sa.Connection, height: int) -> None:
        gone = c.execute(sa.select(items_t.c.stream, items_t.c.publisher, sa.func.count())
                         .where(items_t.c.height > height)
                         .group_by(items_t.c.stream, items_t.c.publisher)).all()
        per_stream: dict[int, int] = {}
        for stream, _publisher, n in gone:
            per_stream[stream] = per_stream.get(stream, 0) + n
        for stream, publisher, n in [*gone, *((s, _ALL, n) for s, n in per_stream.items())]:
            where = (item_counts_t.c.stream == stream, item_counts_t.c.publisher == publisher)
            c.execute(item_counts_t.update().where(*where).values(
                item_count=item_counts_t.c.item_count - n))
            c.execute(item_counts_t.delete().where(*where, item_counts_t.c.item_count <= 0))

    def clear_derived(self) -> None:
        """Drop every row derived from the blocks, keeping the blocks themselves (--reindex)."""
        with self._lock, self.engine.begin() as c:
            for t in (item_keys_t, items_t, item_counts_t, txs_t, streams_t, perm_log_t):
                c.execute(t.delete())
            self._next_item_id = 1
            self._next_perm_id = 1
            self._counts = {}
        self._forget_key_totals()

    def _forget_key_totals(self) -> None:
        self._key_generation += 1
        self._key_totals = {}

    # -- blocks -----------------------------------------------------------------------------
    def tip(self) -> BlockRow | None:
        q = self._query("tip", lambda: sa.select(*_BLOCK_COLS)
                        .order_by(blocks_t.c.height.desc()).limit(1))
        with self.engine.connect() as c:
            r = c.execute(q).first()
        return BlockRow(*r) if r else None

    def block_row(self, height: int | None = None, hash_hex: str | None = None) -> BlockRow | None:
        if hash_hex is None:
            q = self._query("block_by_height", lambda: sa.select(*_BLOCK_COLS).where(
                blocks_t.c.height == sa.bindparam("v")))
        else:
            q = self._query("block_by_hash", lambda: sa.select(*_BLOCK_COLS).where(
                blocks_t.c.hash == sa.bindparam("v")))
        with self.engine.connect() as c:
            r = c.execute(q, {"v": height if hash_hex is None else hash_hex}).first()
        return BlockRow(*r) if r else None

    def block_rows(self, heights: Sequence[int]) -> list[BlockRow]:
        q = self._query("blocks_of_heights", lambda: sa.select(*_BLOCK_COLS).where(
            blocks_t.c.height.in_(sa.bindparam("heights", expanding=True)))
            .order_by(blocks_t.c.height))
        with self.engine.connect() as c:
            rs = c.execute(q, {"heights": list(heights)}).all()
        return [BlockRow(*r) for r in rs]

    def blocks_in_time(self, start: int, end: int) -> list[BlockRow]:
        q = self._query("blocks_in_time", lambda: sa.select(*_BLOCK_COLS).where(
            blocks_t.c.time_s >= sa.bindparam("start"), blocks_t.c.time_s <= sa.bindparam("end")
        ).order_by(blocks_t.c.height))
        with self.engine.connect() as c:
            rs = c.execute(q, {"start": start, "end": end}).all()
        return [BlockRow(*r) for r in rs]

    def block_raw(self, height: int) -> bytes | None:
        q = self._query("block_raw", lambda: sa.select(blocks_t.c.raw).where(
            blocks_t.c.height == sa.bindparam("height")))
        with self.engine.connect() as c:
            return c.scalar(q, {"height": height})

    def blocks_raw(self, start: int, count: int) -> list[bytes]:
        q = self._query("blocks_raw", lambda: sa.select(blocks_t.c.raw).where(
            blocks_t.c.height >= sa.bindparam("lo"), blocks_t.c.height < sa.bindparam("hi")
        ).order_by(blocks_t.c.height))
        with self.engine.connect() as c:
            return list(c.scalars(q, {"lo": start, "hi": start + count}))

    def last_mined(self) -> dict[str, int]:
        q = self._query("last_mined", lambda: sa.select(
            blocks_t.c.miner, sa.func.max(blocks_t.c.height)).group_by(blocks_t.c.miner))
        with self.engine.connect() as c:
            rs = c.execute(q).all()
        return {m: h for m, h in rs}

    # -- reading ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        """A connection for reads that take rows and then the block bytes they point into.

        On SQLite one read transaction holds both steps: the rows and the blob reads see the
        same snapshot, so a rollback in between cannot hand out the bytes of another block
        at the same height. The other databases read both in one statement."""
        with self.engine.connect() as c:
            if self._sqlite:
                c.exec_driver_sql("BEGIN")
            yield c

    def _slices(self, c: sa.Connection, spans: Sequence[tuple[int, int, int]]) -> list[bytes]:
        """The bytes of blocks.raw at each (height, start, size), on SQLite: incremental blob
        I/O reads only the pages of the slice, where SQL's substr() would load the whole
        block for each one (measured: 9 against 190 us per slice of a 2 MB block). A span
        outside its block (a damaged row) gives the part inside it, which the start-up
        check then finds different from the block."""
        conn = c.connection.driver_connection
        out: list[bytes] = []
        blob, blob_height = None, None
        try:
            for height, start, size in spans:
                if height != blob_height:
                    if blob is not None:
                        blob.close()
                    blob_height = height
                    try:
                        blob = conn.blobopen("blocks", "raw", height, readonly=True)
                    except sqlite3.OperationalError:  # no such block (a damaged store)
                        blob = None
                if blob is None or size <= 0:
                    out.append(b"")
                    continue
                blob.seek(max(0, min(start, len(blob))))
                out.append(blob.read(size))
        finally:
            if blob is not None:
                blob.close()
        return out

    def _with_raw(self, q: sa.Select, start: sa.Column, size: sa.Column,
                  height: sa.Column) -> sa.Select:
        """`q` with the raw bytes at (start, size) of block `height` as the column `raw`,
        where the database reads them in the same statement (not SQLite: see _slices)."""
        if self._sqlite:
            return q
        return q.add_columns(sa.func.substr(blocks_t.c.raw, start + 1, size).label("raw")) \
            .join(blocks_t, blocks_t.c.height == height)

    def _raws(self, c: sa.Connection, rows: Sequence[sa.Row], start: str, size: str
              ) -> list[bytes]:
        if self._sqlite:
            return self._slices(c, [(r.height, r._mapping[start], r._mapping[size]) for r in rows])
        return [bytes(r.raw) for r in rows]

    def _select_items(self) -> sa.Select:
        return self._with_raw(sa.select(*_ITEM_COLS).select_from(_ITEMS_WITH_TX),
                              items_t.c.data_start, items_t.c.data_size, items_t.c.height)

    def _item_page(self, ids: sa.Select) -> sa.Select:
        """The statement of the items whose ids `ids` selects (filtered, ordered and paged),
        in id order.

        The page of ids is chosen first and only its rows are joined to their transaction
        and block: an OFFSET skips index entries, not joined rows (paging 100 items deep
        into 20,000 cost 10 instead of 3.6 ms per page when the join came first)."""
        page = ids.subquery("page")
        return self._items_select.join(page, page.c.id == items_t.c.id).order_by(items_t.c.id)

    def _page_query(self, name: str, ids: Callable[[], sa.Select]) -> sa.Select:
        """The kept `_item_page` statement `name` of the ids that `ids()` selects."""
        return self._query(name, lambda: self._item_page(ids()))

    def _items(self, c: sa.Connection, q: sa.Select, params: dict | None = None
               ) -> list[ItemRow]:
        """The items of an `_item_page` statement run with `params`."""
        rows = c.execute(q, params).all()
        datas = self._raws(c, rows, "data_start", "data_size")
        name = self._name
        return [ItemRow(r.id, name(c, r.stream), bytes(r.txid).hex(), r.vout, r.height,
                        r.blockindex, name(c, r.publisher), tuple(orjson.loads(r.keys_json)),
                        r.format, data, bool(r.offchain), r.time_s)
                for r, data in zip(rows, datas, strict=True)]

    def _select_txs(self) -> sa.Select:
        return self._with_raw(sa.select(*_TX_COLS), txs_t.c.raw_start, txs_t.c.raw_size,
                              txs_t.c.height)

    def _txs(self, c: sa.Connection, q: sa.Select, params: dict | None = None) -> list[TxRow]:
        rows = c.execute(q, params).all()
        raws = self._raws(c, rows, "raw_start", "raw_size")
        return [TxRow(bytes(r.txid).hex(), r.height, r.blockindex, self._name(c, r.sender),
                      r.time_s, raw) for r, raw in zip(rows, raws, strict=True)]

    # -- transactions -----------------------------------------------------------------------
    def tx_row(self, txid_hex: str) -> TxRow | None:
        txid = _txid_bytes(txid_hex)
        if txid is None:
            return None
        q = self._query("tx_by_txid", lambda: self._txs_select.where(
            txs_t.c.txkey == sa.bindparam("txkey"), txs_t.c.txid == sa.bindparam("txid")))
        with self._read() as c:
            rows = self._txs(c, q, {"txkey": _txkey(txid), "txid": txid})
        return rows[0] if rows else None

    def known_txids(self, txids_hex: Iterable[str]) -> set[str]:
        ids = _txids_bytes(txids_hex)
        if len(ids) == 1:
            return self._known_txid(ids[0])
        if self.engine.dialect.name == "sqlite":
            return {t.hex() for t in self._known_txids_sqlite(ids)}
        q = self._query("known_txids", lambda: sa.select(txs_t.c.txid).where(
            txs_t.c.txkey.in_(sa.bindparam("txkeys", expanding=True)),
            txs_t.c.txid.in_(sa.bindparam("txids", expanding=True))))
        out: set[str] = set()
        with self.engine.connect() as c:
            for i in range(0, len(ids), 500):
                part = ids[i:i + 500]
                out.update(bytes(t).hex() for t in c.scalars(
                    q, {"txkeys": [_txkey(t) for t in part], "txids": part}))
        return out

    def confirmed_txids(self, txids: Sequence[bytes]) -> set[bytes]:
        """Those of `txids` (32 bytes each) that are stored: `known_txids` without the hex.

        A synced block's replay check asks about every one of its transactions, and for a
        catching-up node the answer is nearly always none: putting each txid in hex for
        the question and checking the hex back (`known_txids`' interface) cost about 2.5k
        instructions per synced item (bench.sync_work: 188.5k -> 186.0k)."""
        ids = [t for t in txids if type(t) is bytes and len(t) == 32]
        if not ids:
            return set()
        if len(ids) > 1 and self._sqlite:
            return self._known_txids_sqlite(ids)
        return {bytes.fromhex(t) for t in self.known_txids([t.hex() for t in ids])}

    def _known_txids_sqlite(self, ids: list[bytes]) -> set[bytes]:
        """known_txids for many txids on SQLite (a synced block's replay check): plain
        `IN (?, ...)` selects on a pooled driver connection. The SQLAlchemy select with an
        expanding IN list cost about 8 us per txid, a few % of a catching-up node's CPU.

        The select asks for the txids of the txkeys only, up to 999 at once, and the few
        rows it finds are compared with the txids here: a second `txid IN (...)` list made
        SQLite build and search another temporary index of the txids for every query, and
        halved the txids a query could take (measured per synced item: 11.2k -> 6.2k
        instructions)."""
        wanted = set(ids)
        out: set[bytes] = set()
        txkey = _TXKEY.unpack_from
        conn = self.engine.raw_connection()
        try:
            cur = conn.cursor()
            for i in range(0, len(ids), _SQLITE_MAX_VARS):
                part = ids[i:i + _SQLITE_MAX_VARS]
                cur.execute(self._txkeys_select(len(part)),
                            [txkey(t)[0] for t in part])  # _txkey
                out.update(t for t in map(bytes, (r[0] for r in cur.fetchall()))
                           if t in wanted)
            cur.close()
        finally:
            conn.close()  # back to the pool
        return out

    def _txkeys_select(self, n: int) -> str:
        """The SQL of `_known_txids_sqlite` for `n` txkeys (made once per count)."""
        sql = self._txkeys_selects.get(n)
        if sql is None:
            q = self.engine.dialect.identifier_preparer.quote
            sql = self._txkeys_selects[n] = (
                f"SELECT {q('txid')} FROM {q(txs_t.name)} WHERE {q('txkey')} IN "
                f"({', '.join('?' * n)})")
        return sql

    def _known_txid(self, txid: bytes) -> set[str]:
        """known_txids for one txid, the mempool's question for every transaction a peer
        relays: one pre-compiled statement run on a pooled driver connection (about 20 us on
        SQLite) instead of building and caching an IN-list select through a SQLAlchemy
        Connection (about 240 us), which had made this lookup the largest single cost of
        relaying a transaction (profile of a 3-node cluster under load)."""
        plan = self._select_plans.get("known_txid")
        if plan is None:
            compiled = sa.select(txs_t.c.txid).where(
                txs_t.c.txkey == sa.bindparam("k"), txs_t.c.txid == sa.bindparam("t")
            ).compile(dialect=self.engine.dialect)
            if compiled.positional and list(compiled.positiontup or ()) != ["k", "t"]:
                raise StoreError("cannot prepare the txid lookup")
            plan = (compiled.string, compiled.positional)
            self._select_plans["known_txid"] = plan
        sql, positional = plan
        key = _txkey(txid)
        conn = self.engine.raw_connection()
        try:
            cur = conn.cursor()
            cur.execute(sql, (key, txid) if positional else {"k": key, "t": txid})
            row = cur.fetchone()
            cur.close()
        finally:
            conn.close()  # back to the pool
        return {bytes(row[0]).hex()} if row is not None else set()

    def tx_rows_involving(self, addresses: Sequence[str]) -> list[TxRow]:
        """Confirmed transactions signed by, or changing a permission of, any of `addresses`
        (encoded), in chain order: the wallet-transaction listings."""
        if not addresses:
            return []
        wanted = list(addresses)
        senders = [i for i in map(self._id, wanted) if i != _NO_ID]
        granted_q = self._query("txids_granted", lambda: sa.select(perm_log_t.c.txid)
                                .distinct().where(perm_log_t.c.address.in_(
                                    sa.bindparam("addresses", expanding=True))))
        with self.engine.connect() as c:
            granted = _txids_bytes(c.scalars(granted_q, {"addresses": wanted}))
        q = self._query("txs_involving", lambda: self._txs_select.where(sa.or_(
            txs_t.c.sender.in_(sa.bindparam("senders", expanding=True)),
            txs_t.c.txid.in_(sa.bindparam("txids", expanding=True)))
        ).order_by(txs_t.c.height, txs_t.c.blockindex))
        with self._read() as c:
            return self._txs(c, q, {"senders": senders, "txids": granted})

    def tx_count(self) -> int:
        q = self._query("tx_count", lambda: sa.select(sa.func.count()).select_from(txs_t))
        with self.engine.connect() as c:
            return c.scalar(q) or 0

    # -- streams and items ------------------------------------------------------------------
    def streams(self) -> list[StreamRow]:
        q = self._query("streams", lambda: sa.select(
            streams_t.c.createtxid, streams_t.c.name, streams_t.c.streamref,
            streams_t.c.restrictions, streams_t.c.salted, streams_t.c.details,
            streams_t.c.creator, streams_t.c.height).order_by(
            streams_t.c.height, streams_t.c.streamref))
        with self.engine.connect() as c:
            rs = c.execute(q).all()
        return [StreamRow(*r) for r in rs]

    @staticmethod
    def _item_filter(q: sa.Select, key: bool, publisher: bool) -> sa.Select:
        """`q` kept to the items of the stream `sid`, and to those by the publisher `pid`
        and with the key `key` when asked (bound parameters: see _filter_params)."""
        q = q.where(items_t.c.stream == sa.bindparam("sid"))
        if publisher:
            q = q.where(items_t.c.publisher == sa.bindparam("pid"))
        if key:
            q = q.where(items_t.c.id.in_(sa.select(item_keys_t.c.item_id).where(
                item_keys_t.c.stream == sa.bindparam("sid"),
                item_keys_t.c.item_key == sa.bindparam("key"))))
        return q

    def _filter_params(self, stream: str, key: str | None, publisher: str | None) -> dict:
        """The values of an `_item_filter` statement."""
        params: dict = {"sid": self._id(stream)}
        if publisher is not None:
            params["pid"] = self._id(publisher)
        if key is not None:
            params["key"] = key
        return params

    def count_items(self, stream: str, key: str | None = None,
                    publisher: str | None = None) -> int:
        """Confirmed items of `stream`, of those with `key` and/or by `publisher` when given.

        Without a key, one row of item_counts; with one, the key's entries in ix_item_keys."""
        if key is None:
            pid = _ALL if publisher is None else self._id(publisher)
            if pid == _NO_ID:
                return 0
            q = self._query("item_count", lambda: sa.select(item_counts_t.c.item_count).where(
                item_counts_t.c.stream == sa.bindparam("sid"),
                item_counts_t.c.publisher == sa.bindparam("pid")))
            with self.engine.connect() as c:
                return c.scalar(q, {"sid": self._id(stream), "pid": pid}) or 0
        by_publisher = publisher is not None
        q = self._query(f"count_key:{by_publisher}", lambda: self._item_filter(
            sa.select(sa.func.count()).select_from(items_t), True, by_publisher))
        with self.engine.connect() as c:
            return c.scalar(q, self._filter_params(stream, key, publisher)) or 0

    def items(self, stream: str, offset: int, limit: int, key: str | None = None,
              publisher: str | None = None) -> list[ItemRow]:
        """The confirmed items at places offset .. offset+limit-1 (0 = the first) of
        `stream`, or of its items with `key` and/or by `publisher`, in chain order.

        A whole stream's window is a range of item positions (ix_items_seq). A key's or a
        publisher's window walks their index from the nearer end, reading item ids only, so
        the newest page of a key or publisher costs what the first page does."""
        offset = max(0, offset)
        if limit <= 0:
            return []
        sid = self._id(stream)
        with self._read() as c:
            if key is None and publisher is None:
                q = self._page_query("window", lambda: sa.select(items_t.c.id).where(
                    items_t.c.stream == sa.bindparam("sid"),
                    items_t.c.seq > sa.bindparam("after"), items_t.c.seq <= sa.bindparam("to")))
                return self._items(c, q, {"sid": sid, "after": offset, "to": offset + limit})
            if key is not None and publisher is not None:
                q = self._page_query("window_key_publisher", lambda: self._item_filter(
                    sa.select(items_t.c.id), True, True).order_by(items_t.c.id)
                    .offset(sa.bindparam("offset")).limit(sa.bindparam("limit")))
                return self._items(c, q, {**self._filter_params(stream, key, publisher),
                                          "offset": offset, "limit": limit})
            pid = None if publisher is None else self._id(publisher)
            ids = self._window_ids(c, sid, offset, limit, key, pid)
            if not ids:
                return []
            if pid is not None:  # the publisher's items from the first id to the last
                q = self._page_query("publisher_span", lambda: sa.select(items_t.c.id).where(
                    items_t.c.stream == sa.bindparam("sid"),
                    items_t.c.publisher == sa.bindparam("pid"),
                    items_t.c.id.between(sa.bindparam("first"), sa.bindparam("last"))))
                return self._items(c, q, {"sid": sid, "pid": pid, "first": ids[0],
                                          "last": ids[-1]})
            return self._items_of_ids(c, ids)

    def _window_ids(self, c: sa.Connection, sid: int, offset: int, limit: int,
                    key: str | None, pid: int | None) -> list[int]:
        """The ids of the items at places offset .. offset+limit-1 with `key` (or by the
        publisher `pid`): counted, then read from the nearer end of their index."""
        kind = "key" if key is not None else "publisher"
        col, where = _WINDOW_INDEX[kind]
        params: dict = {"sid": sid, "name": key if key is not None else pid}
        if key is not None:
            total, last = c.execute(self._query("key_total", lambda: sa.select(
                sa.func.count(), sa.func.max(col)).where(*where)), params).one()
        else:
            found = c.execute(self._query("publisher_total", lambda: sa.select(
                item_counts_t.c.item_count,
                sa.select(sa.func.max(col)).where(*where).scalar_subquery()).where(
                item_counts_t.c.stream == sa.bindparam("sid"),
                item_counts_t.c.publisher == sa.bindparam("name"))), params).first()
            total, last = found if found is not None else (0, None)
        if offset >= total or last is None:
            return []
        n = min(limit, total - offset)
        from_end = total - offset - n
        if from_end < offset:
            # Items added after the count above have larger ids: `col <= last` keeps the
            # places counted from the end the places counted from the start.
            q = self._query(f"{kind}_ids_from_end", lambda: sa.select(col).where(
                *where, col <= sa.bindparam("last")).order_by(col.desc())
                .offset(sa.bindparam("offset")).limit(sa.bindparam("limit")))
            ids = list(c.scalars(q, {**params, "last": last, "offset": from_end, "limit": n}))
            return ids[::-1]
        q = self._query(f"{kind}_ids", lambda: sa.select(col).where(*where).order_by(col)
                        .offset(sa.bindparam("offset")).limit(sa.bindparam("limit")))
        return list(c.scalars(q, {**params, "offset": offset, "limit": n}))

    def items_by_txids(self, stream: str, txids: Sequence[str]) -> list[ItemRow]:
        # Selected by txid alone and the stream checked here: given `stream = ?` too, SQLite
        # may walk the whole stream by ix_items_stream instead of seeking each txid
        # (measured 140 ms on a stream of 270,000 items, against well under 1 ms).
        sid = self._id(stream)
        wanted = list(dict.fromkeys(_txids_bytes(txids)))
        with self._read() as c:
            ids = [i for i, s in self._ids_and_streams(c, txs_t.c.txid, wanted, join=True)
                   if s == sid]  # (by txkey and txid: see _ids_and_streams)
            return self._items_of_ids(c, ids)

    def items_by_tx(self, txid: str) -> list[ItemRow]:
        tid = _txid_bytes(txid)
        if tid is None:
            return []
        # A transaction's items have ids in vout order.
        q = self._page_query("items_of_tx", lambda: sa.select(items_t.c.id).select_from(
            _ITEMS_WITH_TX).where(txs_t.c.txkey == sa.bindparam("txkey"),
                                  txs_t.c.txid == sa.bindparam("txid")))
        with self._read() as c:
            return self._items(c, q, {"txkey": _txkey(tid), "txid": tid})

    def items_in_heights(self, stream: str, heights: Sequence[int]) -> list[ItemRow]:
        # By height alone, the stream checked here (as items_by_txids, for the same reason).
        sid = self._id(stream)
        wanted = list(dict.fromkeys(heights))
        with self._read() as c:
            ids = [i for i, s in self._ids_and_streams(c, items_t.c.height, wanted, join=False)
                   if s == sid]
            return self._items_of_ids(c, ids)

    def _ids_and_streams(self, c: sa.Connection, col: sa.Column, values: list, *, join: bool
                         ) -> list[tuple[int, int]]:
        """(item id, stream id) of the items whose `col` is one of `values`, 500 at a time
        (by txid: their txkeys select the rows, as the index is on those)."""
        by_txid = col is txs_t.c.txid

        def build() -> sa.Select:
            q = sa.select(items_t.c.id, items_t.c.stream).where(
                col.in_(sa.bindparam("values", expanding=True)))
            if by_txid:
                q = q.where(txs_t.c.txkey.in_(sa.bindparam("txkeys", expanding=True)))
            return q.select_from(_ITEMS_WITH_TX) if join else q

        q = self._query(f"ids_and_streams:{col.table.name}.{col.name}", build)
        out: list[tuple[int, int]] = []
        for i in range(0, len(values), 500):
            params: dict = {"values": values[i:i + 500]}
            if by_txid:
                params["txkeys"] = [_txkey(v) for v in params["values"]]
            out.extend((r[0], r[1]) for r in c.execute(q, params))
        return out

    def _items_of_ids(self, c: sa.Connection, ids: list[int]) -> list[ItemRow]:
        ids.sort()
        q = self._page_query("items_of_ids", lambda: sa.select(items_t.c.id).where(
            items_t.c.id.in_(sa.bindparam("ids", expanding=True))))
        out: list[ItemRow] = []
        for i in range(0, len(ids), 500):
            out.extend(self._items(c, q, {"ids": ids[i:i + 500]}))
        return out

    def query_items(self, stream: str, keys: Sequence[str], publishers: Sequence[str],
                    limit: int) -> list[ItemRow]:
        """Items having every key and a publisher among `publishers` (when given); AND-ed."""
        sid = self._id(stream)
        q = sa.select(items_t.c.id).where(items_t.c.stream == sid)
        for k in keys:
            q = q.where(items_t.c.id.in_(sa.select(item_keys_t.c.item_id).where(
                item_keys_t.c.stream == sid, item_keys_t.c.item_key == k)))
        if publishers:
            q = q.where(items_t.c.publisher.in_([self._id(p) for p in publishers]))
        q = q.order_by(items_t.c.id).limit(limit)
        with self._read() as c:  # as many key filters as keys: built for each call
            return self._items(c, self._item_page(q))

    def key_counts(self, stream: str, keys: Sequence[str] | None) -> list[tuple[str, int, int]]:
        """(key, item count, first item id) in order of first appearance."""
        def build() -> sa.Select:
            k = item_keys_t
            q = sa.select(k.c.item_key, sa.func.count(), sa.func.min(k.c.item_id)).where(
                k.c.stream == sa.bindparam("sid"))
            if keys is not None:
                q = q.where(k.c.item_key.in_(sa.bindparam("keys", expanding=True)))
            return q.group_by(k.c.item_key)

        params: dict = {"sid": self._id(stream)}
        if keys is not None:
            params["keys"] = list(keys)
        with self.engine.connect() as c:
            rs = c.execute(self._query(f"key_counts:{keys is not None}", build), params).all()
        return sorted(((k, n, first) for k, n, first in rs), key=lambda r: r[2])

    def publisher_counts(self, stream: str,
                         publishers: Sequence[str] | None) -> list[tuple[str, int, int]]:
        """(publisher, item count, first item id) in order of first appearance, from
        item_counts."""
        def build() -> sa.Select:
            t = item_counts_t
            q = sa.select(t.c.publisher, t.c.item_count, t.c.first_id).where(
                t.c.stream == sa.bindparam("sid"), t.c.publisher != _ALL)
            if publishers is not None:
                q = q.where(t.c.publisher.in_(sa.bindparam("pids", expanding=True)))
            return q

        params: dict = {"sid": self._id(stream)}
        if publishers is not None:
            params["pids"] = [self._id(p) for p in publishers]
        q = self._query(f"publisher_counts:{publishers is not None}", build)
        with self.engine.connect() as c:
            rs = [(self._name(c, p), n, first) for p, n, first in c.execute(q, params)]
        return sorted(rs, key=lambda r: r[2])

    def name_window(self, stream: str, kind: str, offset: int, limit: int
                    ) -> list[tuple[str, int, int]]:
        """Rows offset..offset+limit of `key_counts(stream, None)` (kind "key") or
        `publisher_counts(stream, None)` (kind "publisher"): (name, item count, first item id)
        in order of first appearance, ties by name. The database orders and cuts the list, so
        a window of a stream with a million keys does not load them all."""
        if limit <= 0:
            return []
        def build() -> sa.Select:
            if kind == "key":
                name, item_id = item_keys_t.c.item_key, item_keys_t.c.item_id
                q = sa.select(name, sa.func.count(), sa.func.min(item_id)).where(
                    item_keys_t.c.stream == sa.bindparam("sid"))
                q = q.group_by(name).order_by(sa.func.min(item_id), name)
            else:  # item_counts' rows: one per publisher, no grouping
                t = item_counts_t
                q = (sa.select(names_t.c.name, t.c.item_count, t.c.first_id)
                     .select_from(t.join(names_t, names_t.c.id == t.c.publisher))
                     .where(t.c.stream == sa.bindparam("sid"), t.c.publisher != _ALL)
                     .order_by(t.c.first_id, names_t.c.name))
            return q.offset(sa.bindparam("offset")).limit(sa.bindparam("limit"))

        if kind not in ("key", "publisher"):
            raise ValueError(kind)
        params = {"sid": self._id(stream), "offset": offset, "limit": limit}
        with self.engine.connect() as c:
            return [(n, k, f) for n, k, f in c.execute(self._query(f"name_window:{kind}", build),
                                                       params)]

    def distinct_counts(self, stream: str, keys: Iterable[str] = (),
                        publishers: Iterable[str] = ()) -> tuple[int, int]:
        """(distinct keys, distinct publishers) of the stream's confirmed items, also counting
        those of `keys` and `publishers` (the pending items') that no confirmed item has.

        Counted by the database: getstreaminfo and liststreams ask this of every subscribed
        stream, and loading every key of a stream with a million keys into Python for a
        count held hundreds of MiB at each call."""
        return (self.distinct_count(stream, "key", keys),
                self.distinct_count(stream, "publisher", publishers))

    def distinct_count(self, stream: str, kind: str, extra: Iterable[str] = ()) -> int:
        """Distinct keys (kind "key") or publishers (kind "publisher") of the stream's
        confirmed items, plus those of `extra` that no confirmed item has.

        Publishers are item_counts' rows of the stream; keys are counted once over the index
        and then kept up to date (_distinct_keys)."""
        self._name_columns(kind)
        names = set(extra)
        sid = self._id(stream)
        with self.engine.connect() as c:
            if kind == "key":
                n = self._distinct_keys(c, sid)
            else:
                q = self._query("publishers_count", lambda: sa.select(sa.func.count())
                                .select_from(item_counts_t).where(
                                    item_counts_t.c.stream == sa.bindparam("sid"),
                                    item_counts_t.c.publisher != _ALL))
                n = c.scalar(q, {"sid": sid}) or 0
            names -= self._present(c, kind, stream, names)
        return n + len(names)

    def _distinct_keys(self, c: sa.Connection, sid: int) -> int:
        """Distinct keys of the stream's confirmed items.

        The first count walks the stream's part of ix_item_keys (index only: about 200 ms for
        a million keys on SQLite); it is remembered with the stream's last item id, and later
        counts add only the keys of the items stored since (read by height, then one index
        seek per new key), so getstreaminfo on a big, busy stream stays cheap. A rollback or
        a reindex forgets the counts."""
        k = item_keys_t
        generation = self._key_generation
        cached = self._key_totals.get(sid)
        if cached is None:
            # One statement, one snapshot: the count is that of the items up to `last`.
            n, last = c.execute(self._query("distinct_keys", lambda: sa.select(
                sa.func.count(sa.distinct(k.c.item_key)), sa.func.max(k.c.item_id)).where(
                k.c.stream == sa.bindparam("sid"))), {"sid": sid}).one()
            n = n or 0
        else:
            n, last = cached
            since = c.scalar(self._query("item_height", lambda: sa.select(items_t.c.height)
                                         .where(items_t.c.id == sa.bindparam("id"))),
                             {"id": last})
            if since is None:  # that item is gone (rolled back by another store object)
                self._key_totals.pop(sid, None)
                return self._distinct_keys(c, sid)
            # By height (the height index; given `stream = ?` too, SQLite would walk the
            # stream's keys instead), the stream checked here; ids grow with height, so
            # `item_id > last` is what came since. `last` moves past the other streams' keys
            # too: a stream that no longer gets keyed items does not read them again.
            fresh: set[str] = set()
            keys_since = self._query("keys_since", lambda: sa.select(
                k.c.stream, k.c.item_key, k.c.item_id).where(
                k.c.height >= sa.bindparam("since"), k.c.item_id > sa.bindparam("last")))
            for row_stream, key, item_id in c.execute(keys_since, {"since": since,
                                                                    "last": last}):
                last = max(last, item_id)
                if row_stream == sid:
                    fresh.add(key)
            listed = list(fresh)
            known = self._query("keys_known", lambda: sa.select(k.c.item_key).where(
                k.c.stream == sa.bindparam("sid"),
                k.c.item_key.in_(sa.bindparam("keys", expanding=True)),
                k.c.item_id <= sa.bindparam("last")).distinct())
            for i in range(0, len(listed), 500):
                fresh.difference_update(c.scalars(known, {"sid": sid,
                                                          "keys": listed[i:i + 500],
                                                          "last": cached[1]}))
            n += len(fresh)
        if last is not None and generation == self._key_generation:
            self._key_totals[sid] = (n, last)
        return n

    @staticmethod
    def _name_columns(kind: str) -> tuple[sa.Column, sa.Column]:
        if kind == "key":
            return item_keys_t.c.item_key, item_keys_t.c.stream
        if kind == "publisher":  # item_counts: one row per (stream, publisher)
            return item_counts_t.c.publisher, item_counts_t.c.stream
        raise ValueError(kind)

    def _present(self, c: sa.Connection, kind: str, stream: str, values: set[str]) -> set[str]:
        """Those of `values` that occur as the stream's keys or publishers."""
        column, stream_col = self._name_columns(kind)
        sid = self._id(stream)
        if kind == "publisher":  # stored as name ids
            by_stored = {self._id(v): v for v in values}
            by_stored.pop(_NO_ID, None)
        else:
            by_stored = {v: v for v in values}
        wanted = list(by_stored)
        q = self._query(f"present:{kind}", lambda: sa.select(column).distinct().where(
            stream_col == sa.bindparam("sid"), column.in_(sa.bindparam("names", expanding=True))))
        found: set[str] = set()
        for i in range(0, len(wanted), 500):
            found.update(by_stored[h] for h in c.scalars(q, {"sid": sid,
                                                             "names": wanted[i:i + 500]}))
        return found

    def present_names(self, stream: str, kind: str, names: Iterable[str]) -> set[str]:
        """Those of `names` that some confirmed item of the stream has as a key (kind "key")
        or as its publisher (kind "publisher")."""
        with self.engine.connect() as c:
            return self._present(c, kind, stream, set(names))

    def item_by_id(self, item_id: int) -> ItemRow | None:
        q = self._page_query("item_by_id", lambda: sa.select(items_t.c.id).where(
            items_t.c.id == sa.bindparam("id")))
        with self._read() as c:
            rows = self._items(c, q, {"id": item_id})
        return rows[0] if rows else None

    def last_item(self, stream: str, key: str | None = None,
                  publisher: str | None = None) -> ItemRow | None:
        by_key, by_publisher = key is not None, publisher is not None
        q = self._page_query(f"last_item:{by_key}:{by_publisher}", lambda: self._item_filter(
            sa.select(items_t.c.id), by_key, by_publisher).order_by(items_t.c.id.desc()).limit(1))
        with self._read() as c:
            rows = self._items(c, q, self._filter_params(stream, key, publisher))
        return rows[0] if rows else None

    # -- permissions ------------------------------------------------------------------------
    def perm_log(self) -> list[PermRow]:
        q = self._query("perm_log", lambda: sa.select(
            perm_log_t.c.kind, perm_log_t.c.address, perm_log_t.c.entity, perm_log_t.c.perm,
            perm_log_t.c.start_block, perm_log_t.c.end_block, perm_log_t.c.admin,
            perm_log_t.c.time_s, perm_log_t.c.txid, perm_log_t.c.height).order_by(
            perm_log_t.c.id))
        with self.engine.connect() as c:
            rs = c.execute(q).all()
        return [PermRow(*r) for r in rs]

    # -- local subscriptions ----------------------------------------------------------------
    def subscriptions(self) -> set[str]:
        q = self._query("subscriptions", lambda: sa.select(subscriptions_t.c.stream))
        with self.engine.connect() as c:
            return set(c.scalars(q))

    # -- start-up checks ---------------------------------------------------------------
    def quick_check(self) -> list[str] | None:
        """SQLite's `PRAGMA quick_check`: [] when the file is sound, else its complaints;
        None for other databases (their servers keep their own files consistent)."""
        if self.engine.dialect.name != "sqlite":
            return None
        try:
            with self.engine.connect() as c:
                rows = [r[0] for r in c.exec_driver_sql("PRAGMA quick_check").fetchall()]
        except sa.exc.DatabaseError as e:
            return [str(e.orig or e).splitlines()[0]]
        return [] if rows == ["ok"] else rows

    def stored_range(self, lo: int, hi: int) -> StoredRange:
        """Every stored row of the blocks lo..hi (raw blocks and derived rows), for checking
        them against each other; rows of heights above `hi` are counted too (there should
        be none when `hi` is the tip)."""
        def between(t: sa.Table) -> sa.ColumnElement[bool]:
            return t.c.height.between(lo, hi)
        with self._read() as c:
            blocks = [(BlockRow(*r[:-1]), r[-1]) for r in c.execute(
                sa.select(*_BLOCK_COLS, blocks_t.c.raw).where(between(blocks_t))
                .order_by(blocks_t.c.height))]
            txs = self._txs(c, self._txs_select.where(between(txs_t))
                            .order_by(txs_t.c.height, txs_t.c.blockindex))
            items = self._items(c, self._item_page(sa.select(items_t.c.id)
                                                   .where(between(items_t))))
            keys = [(r.item_id, self._name(c, r.stream), r.item_key, r.height) for r in c.execute(
                sa.select(item_keys_t.c.item_id, item_keys_t.c.stream, item_keys_t.c.item_key,
                          item_keys_t.c.height).where(between(item_keys_t)))]
            streams = [StreamRow(r.createtxid, r.name, r.streamref, r.restrictions,
                                 bool(r.salted), r.details, r.creator, r.height)
                       for r in c.execute(sa.select(streams_t).where(between(streams_t)))]
            perms = [PermRow(r.kind, r.address, r.entity, r.perm, r.start_block, r.end_block,
                             r.admin, r.time_s, r.txid, r.height)
                     for r in c.execute(sa.select(perm_log_t).where(between(perm_log_t)))]
            above = sum(c.scalar(sa.select(sa.func.count()).select_from(t)
                                 .where(t.c.height > hi)) or 0
                        for t in (blocks_t, txs_t, items_t, item_keys_t, streams_t, perm_log_t))
            block_count = c.scalar(sa.select(sa.func.count()).select_from(blocks_t)) or 0
            bad_txkeys = sorted({h for h, txid, key in c.execute(
                sa.select(txs_t.c.height, txs_t.c.txid, txs_t.c.txkey).where(between(txs_t)))
                if _txkey(bytes(txid)) != key})
        return StoredRange(blocks, txs, items, keys, streams, perms, above, block_count,
                           bad_txkeys)

    def count_problems(self) -> list[str]:
        """Streams whose item count (item_counts) is not the position of their last item:
        the start-up check's look at the paging rows, one index seek per stream."""
        out = []
        with self.engine.connect() as c:
            counted = {s: n for (s, p), (n, _) in _read_counts(c).items() if p == _ALL}
            made = {self._id(s) for s in c.scalars(sa.select(streams_t.c.createtxid))}
            made.discard(_NO_ID)  # a stream without items has no name row
            for sid in sorted(made | set(counted)):
                last = c.scalar(sa.select(items_t.c.seq).where(items_t.c.stream == sid)
                                .order_by(items_t.c.seq.desc()).limit(1)) or 0
                if counted.get(sid, 0) != last:
                    out.append(f"stream {self._name(c, sid)}: {counted.get(sid, 0)} items "
                               f"counted, its last item is number {last}")
        return out

    def set_subscribed(self, stream: str, on: bool) -> None:
        with self.engine.begin() as c:
            c.execute(subscriptions_t.delete().where(subscriptions_t.c.stream == stream))
            if on:
                c.execute(subscriptions_t.insert().values(stream=stream))


def _raw_stored_external(engine: sa.Engine) -> None:
    """PostgreSQL: keep `blocks.raw` out of line uncompressed (STORAGE EXTERNAL), set at every
    open where it is not yet (a new store, or one made before this setting).

    The readers slice transactions and items out of the raw block with `substr`. Of a
    compressed (TOAST EXTENDED, the default) value PostgreSQL must decompress everything up
    to the end of the slice, a whole block for its last transaction; of an uncompressed one
    it fetches only the TOAST chunks (about 2 kB each) that hold the slice ("Use of
    EXTERNAL will make substring operations on very large text and bytea values run faster",
    PostgreSQL's CREATE TABLE, STORAGE). Measured on a 1.8 MB block of 8,000 JSON items
    (bench/store_reads.py): the server's substr of the last transaction 1.1-1.2 ms -> 19-28
    us. The price is the compression given up: that block took 0.82 MB compressed and takes
    its 1.8 MB now. The setting applies to the blocks stored from then on; blocks stored
    before stay compressed and read as before.

    MariaDB has nothing like it: InnoDB hands a BLOB to the server whole (its partial LOB
    fetch is MySQL 8's, not MariaDB's), so `substr` there reads the whole block."""
    with engine.begin() as c:
        storage = c.scalar(sa.text(
            "SELECT attstorage FROM pg_attribute "
            "WHERE attrelid = CAST(:table AS regclass) AND attname = 'raw'"),
            {"table": blocks_t.name})
        if storage != "e":
            log.info("chain store: blocks.raw set to STORAGE EXTERNAL (uncompressed, so a "
                     "slice reads only its own chunks)")
            c.exec_driver_sql(f"ALTER TABLE {blocks_t.name} ALTER COLUMN raw SET STORAGE EXTERNAL")


def _read_counts(c: sa.Connection) -> dict[tuple[int, int], tuple[int, int]]:
    t = item_counts_t
    return {(r.stream, r.publisher): (r.item_count, r.first_id) for r in c.execute(
        sa.select(t.c.stream, t.c.publisher, t.c.item_count, t.c.first_id))}


WAL_SIZE_LIMIT = 16 * 1024 * 1024
"""Bytes the -wal file is cut back to after a checkpoint: without a limit it keeps the size
of the largest burst of writes (a big block) for good."""


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - DBAPI connection
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
    cur.close()
