"""The chain store: blocks, transactions, stream items and derived state in one SQL database.

SQLAlchemy Core over a SQLite file (WAL) by default; any SQLAlchemy URL (PostgreSQL, MariaDB)
works. Hashes are lowercase hex and addresses their Base58 strings, so auditors can read the
store with plain SQL. Each block is written in one database transaction; `rollback_to` deletes
everything above a height in one transaction. Only the active chain is stored.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from ledger.errors import StoreError

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"

_Blob = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
_Text = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

metadata = sa.MetaData()

meta_t = sa.Table(
    "meta", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", _Text, nullable=False),
)
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
    sa.Column("txid", sa.CHAR(64), primary_key=True),
    sa.Column("height", sa.Integer, nullable=False, index=True),
    sa.Column("blockindex", sa.Integer, nullable=False),
    sa.Column("sender", sa.String(64), nullable=False),
    sa.Column("time_s", sa.BigInteger, nullable=False),
    sa.Column("raw", _Blob, nullable=False),
)
items_t = sa.Table(
    "items", metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("stream", sa.CHAR(64), nullable=False),
    sa.Column("txid", sa.CHAR(64), nullable=False, index=True),
    sa.Column("vout", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False, index=True),
    sa.Column("blockindex", sa.Integer, nullable=False),
    sa.Column("publisher", sa.String(64), nullable=False),
    sa.Column("keys_json", _Text, nullable=False),
    sa.Column("format", sa.SmallInteger, nullable=False),
    sa.Column("data", _Blob, nullable=False),
    sa.Column("offchain", sa.Boolean, nullable=False),
    sa.Column("time_s", sa.BigInteger, nullable=False),
    # The item's place in its stream (1, 2, ...; dense, in id order): liststreamitems'
    # window at any position is an index seek on ix_items_seq, not an OFFSET scan.
    sa.Column("seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Index("ix_items_stream", "stream", "id"),
    sa.Index("ix_items_publisher", "stream", "publisher", "id"),
    sa.Index("ix_items_seq", "stream", "seq", unique=True),
)
item_keys_t = sa.Table(
    "item_keys", metadata,
    sa.Column("item_id", sa.BigInteger, nullable=False),
    sa.Column("stream", sa.CHAR(64), nullable=False),
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
    # Confirmed items per stream (publisher "") and per stream and publisher, with the id
    # of the first one: kept by put_block and rollback_to in the same database transaction
    # as the items, so counting a stream's items or listing its publishers reads a few rows.
    "item_counts", metadata,
    sa.Column("stream", sa.CHAR(64), primary_key=True),
    sa.Column("publisher", sa.String(64), primary_key=True),
    sa.Column("item_count", sa.BigInteger, nullable=False),
    sa.Column("first_id", sa.BigInteger, nullable=False),
)
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


@dataclass(frozen=True, slots=True)
class TxRow:
    txid: str
    height: int
    blockindex: int
    sender: str
    time_s: int
    raw: bytes


@dataclass(frozen=True, slots=True)
class ItemRow:
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


def _item(r: sa.Row) -> ItemRow:
    return ItemRow(r.id, r.stream, r.txid, r.vout, r.height, r.blockindex, r.publisher,
                   tuple(orjson.loads(r.keys_json)), r.format, r.data, bool(r.offchain),
                   r.time_s)


_ITEM_COLS = [items_t.c[n] for n in (
    "id", "stream", "txid", "vout", "height", "blockindex", "publisher", "keys_json", "format",
    "data", "offchain", "time_s")]
_SQLITE_MAX_VARS = 999
_TX_INSERT = ("txid", "height", "blockindex", "sender", "time_s", "raw")
_ITEM_INSERT = ("id", "stream", "txid", "vout", "height", "blockindex", "publisher", "keys_json",
                "format", "data", "offchain", "time_s", "seq")
_KEY_INSERT = ("item_id", "stream", "item_key", "height")
_BLOCK_COLS = [blocks_t.c[n] for n in (
    "height", "hash", "prev_hash", "time_s", "time_ms", "miner", "txcount", "size")]


class ChainStore:
    """The narrow storage interface of the node: append a block, roll back, look things up."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        try:
            self.engine = sa.create_engine(url, echo=echo, future=True)
        except Exception as e:  # an unusable URL or a missing driver
            raise StoreError(f"cannot use chain store {url!r}: {e}") from None
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            metadata.create_all(self.engine)
        except sa.exc.SQLAlchemyError as e:
            raise StoreError(f"cannot open chain store: {e}") from None
        self._lock = threading.Lock()
        self._insert_plans: dict[str, tuple[str, list[int] | str | None]] = {}
        self._select_plans: dict[str, tuple[str, bool]] = {}
        # The writer's copy of item_counts: (stream, publisher) -> (items, first id).
        self._counts: dict[tuple[str, str], tuple[int, int]] = {}
        # count_keys' memory: stream -> (distinct keys, the last item id they include);
        # dropped, and the generation moved on, whenever items are removed.
        self._key_totals: dict[str, tuple[int, int]] = {}
        self._key_generation = 0
        try:
            _add_item_positions(self.engine)
            with self.engine.connect() as c:
                self._counts = _read_counts(c)
                self._next_item_id = (c.scalar(sa.select(sa.func.max(items_t.c.id))) or 0) + 1
                self._next_perm_id = (c.scalar(sa.select(sa.func.max(perm_log_t.c.id)))
                                      or 0) + 1
                ver = c.scalar(sa.select(meta_t.c.value).where(meta_t.c.name == "schema"))
        except sa.exc.DatabaseError as e:
            raise StoreError(f"the chain store file is damaged ({str(e.orig or e).strip()}); "
                             "restore it from a backup, or remove it and start again to "
                             "fetch the chain from peers") from None
        if ver is None:
            self.set_meta("schema", SCHEMA_VERSION)
        elif ver != SCHEMA_VERSION:
            raise StoreError(f"chain store schema {ver} is not supported (need {SCHEMA_VERSION})")

    def close(self) -> None:
        self.engine.dispose()

    # -- meta -------------------------------------------------------------------------------
    def get_meta(self, name: str) -> str | None:
        with self.engine.connect() as c:
            return c.scalar(sa.select(meta_t.c.value).where(meta_t.c.name == name))

    def set_meta(self, name: str, value: str) -> None:
        with self.engine.begin() as c:
            c.execute(meta_t.delete().where(meta_t.c.name == name))
            c.execute(meta_t.insert().values(name=name, value=value))

    # -- writing ----------------------------------------------------------------------------
    @property
    def next_item_id(self) -> int:
        return self._next_item_id

    def put_block(self, w: BlockWrite, *, block_stored: bool = False) -> None:
        """Append one block and everything derived from it, atomically.

        `block_stored`: the block row is already there (a reindex rebuilding derived rows)."""
        with self._lock, self.engine.begin() as c:
            b = w.block
            if not block_stored:
                c.execute(blocks_t.insert().values(
                    height=b.height, hash=b.hash, prev_hash=b.prev_hash, time_s=b.time_s,
                    time_ms=b.time_ms, miner=b.miner, txcount=b.txcount, size=b.size,
                    raw=w.raw))
            if w.txs:
                self._insert_many(c, txs_t, _TX_INSERT, [
                    (t.txid, t.height, t.blockindex, t.sender, t.time_s, t.raw) for t in w.txs])
            counts: dict[tuple[str, str], tuple[int, int]] | None = None
            if w.items:
                rows, keys = [], []
                nid = self._next_item_id
                dumps = orjson.dumps
                seq: dict[str, int] = {}  # stream -> the last position given
                first_new: dict[str, int] = {}  # stream -> its first item id in this block
                by_pub: dict[tuple[str, str], list[int]] = {}  # -> [items, first id]
                for it in w.items:
                    stream = it.stream
                    n = seq.get(stream)
                    if n is None:
                        n = self._counts.get((stream, ""), (0, 0))[0]
                        first_new[stream] = nid
                    seq[stream] = n = n + 1
                    group = by_pub.get((stream, it.publisher))
                    if group is None:
                        by_pub[stream, it.publisher] = [1, nid]
                    else:
                        group[0] += 1
                    rows.append((nid, stream, it.txid, it.vout, it.height, it.blockindex,
                                 it.publisher, dumps(it.keys).decode(), it.format, it.data,
                                 it.offchain, it.time_s, n))
                    for k in dict.fromkeys(it.keys):
                        keys.append((nid, stream, k, it.height))
                    nid += 1
                counts = {}
                for stream, n in seq.items():
                    first = self._counts.get((stream, ""), (0, first_new[stream]))[1]
                    counts[stream, ""] = (n, first)
                for group, (n, first) in by_pub.items():
                    had, had_first = self._counts.get(group, (0, first))
                    counts[group] = (had + n, had_first)
                self._insert_many(c, items_t, _ITEM_INSERT, rows)
                if keys:
                    self._insert_many(c, item_keys_t, _KEY_INSERT, keys)
                self._write_counts(c, counts)
            if w.streams:
                c.execute(streams_t.insert(), [
                    {"createtxid": s.createtxid, "name": s.name, "name_lower": s.name.lower(),
                     "streamref": s.streamref, "restrictions": s.restrictions,
                     "salted": s.salted, "details": s.details, "creator": s.creator,
                     "height": s.height} for s in w.streams])
            if w.perms:
                pid = self._next_perm_id
                c.execute(perm_log_t.insert(), [
                    {"id": pid + i, "kind": p.kind, "address": p.address, "entity": p.entity,
                     "perm": p.perm, "start_block": p.start_block, "end_block": p.end_block,
                     "admin": p.admin, "time_s": p.time_s, "txid": p.txid, "height": p.height}
                    for i, p in enumerate(w.perms)])
        # Counters move only after the commit succeeded.
        self._next_item_id += len(w.items)
        self._next_perm_id += len(w.perms)
        if counts:
            self._counts.update(counts)

    def _write_counts(self, c: sa.Connection, counts: dict[tuple[str, str], tuple[int, int]]
                      ) -> None:
        """Store the new item counts of one block: an update of each (stream, publisher)
        row that exists, one insert of those that are new."""
        new = []
        for (stream, publisher), (n, first) in counts.items():
            if (stream, publisher) in self._counts:
                c.execute(item_counts_t.update().where(
                    item_counts_t.c.stream == stream, item_counts_t.c.publisher == publisher
                ).values(item_count=n))
            else:
                new.append({"stream": stream, "publisher": publisher, "item_count": n,
                            "first_id": first})
        if new:
            c.execute(item_counts_t.insert(), new)

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
        once per 80-250 rows."""
        q = self.engine.dialect.identifier_preparer.quote
        per = max(1, _SQLITE_MAX_VARS // len(cols))
        head = f"INSERT INTO {q(table.name)} ({', '.join(q(n) for n in cols)}) VALUES "
        one = "(" + ", ".join("?" * len(cols)) + ")"
        for i in range(0, len(rows), per):
            part = rows[i:i + per]
            c.exec_driver_sql(head + ", ".join([one] * len(part)),
                              tuple(v for r in part for v in r))

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
        per_stream: dict[str, int] = {}
        for stream, _publisher, n in gone:
            per_stream[stream] = per_stream.get(stream, 0) + n
        for stream, publisher, n in [*gone, *((s, "", n) for s, n in per_stream.items())]:
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
        with self.engine.connect() as c:
            r = c.execute(sa.select(*_BLOCK_COLS).order_by(blocks_t.c.height.desc())
                          .limit(1)).first()
        return BlockRow(*r) if r else None

    def block_row(self, height: int | None = None, hash_hex: str | None = None) -> BlockRow | None:
        q = sa.select(*_BLOCK_COLS)
        q = q.where(blocks_t.c.height == height) if hash_hex is None else q.where(
            blocks_t.c.hash == hash_hex)
        with self.engine.connect() as c:
            r = c.execute(q).first()
        return BlockRow(*r) if r else None

    def block_rows(self, heights: Sequence[int]) -> list[BlockRow]:
        with self.engine.connect() as c:
            rs = c.execute(sa.select(*_BLOCK_COLS).where(blocks_t.c.height.in_(list(heights)))
                           .order_by(blocks_t.c.height)).all()
        return [BlockRow(*r) for r in rs]

    def blocks_in_time(self, start: int, end: int) -> list[BlockRow]:
        with self.engine.connect() as c:
            rs = c.execute(sa.select(*_BLOCK_COLS).where(
                blocks_t.c.time_s >= start, blocks_t.c.time_s <= end).order_by(
                blocks_t.c.height)).all()
        return [BlockRow(*r) for r in rs]

    def block_raw(self, height: int) -> bytes | None:
        with self.engine.connect() as c:
            return c.scalar(sa.select(blocks_t.c.raw).where(blocks_t.c.height == height))

    def blocks_raw(self, start: int, count: int) -> list[bytes]:
        with self.engine.connect() as c:
            return list(c.scalars(sa.select(blocks_t.c.raw).where(
                blocks_t.c.height >= start, blocks_t.c.height < start + count).order_by(
                blocks_t.c.height)))

    def last_mined(self) -> dict[str, int]:
        with self.engine.connect() as c:
            rs = c.execute(sa.select(blocks_t.c.miner, sa.func.max(blocks_t.c.height))
                           .group_by(blocks_t.c.miner)).all()
        return {m: h for m, h in rs}

    # -- transactions -----------------------------------------------------------------------
    def tx_row(self, txid_hex: str) -> TxRow | None:
        with self.engine.connect() as c:
            r = c.execute(sa.select(txs_t).where(txs_t.c.txid == txid_hex)).first()
        return TxRow(r.txid, r.height, r.blockindex, r.sender, r.time_s, r.raw) if r else None

    def known_txids(self, txids_hex: Iterable[str]) -> set[str]:
        ids = list(txids_hex)
        if len(ids) == 1:
            return self._known_txid(ids[0])
        out: set[str] = set()
        with self.engine.connect() as c:
            for i in range(0, len(ids), 500):
                out.update(c.scalars(sa.select(txs_t.c.txid).where(
                    txs_t.c.txid.in_(ids[i:i + 500]))))
        return out

    def _known_txid(self, txid_hex: str) -> set[str]:
        """known_txids for one txid, the mempool's question for every transaction a peer
        relays: one pre-compiled statement run on a pooled driver connection (about 20 us on
        SQLite) instead of building and caching an IN-list select through a SQLAlchemy
        Connection (about 240 us), which had made this lookup the largest single cost of
        relaying a transaction (profile of a 3-node cluster under load)."""
        plan = self._select_plans.get("known_txid")
        if plan is None:
            compiled = sa.select(txs_t.c.txid).where(txs_t.c.txid == sa.bindparam("t")) \
                .compile(dialect=self.engine.dialect)
            plan = (compiled.string, compiled.positional)
            self._select_plans["known_txid"] = plan
        sql, positional = plan
        conn = self.engine.raw_connection()
        try:
            cur = conn.cursor()
            cur.execute(sql, (txid_hex,) if positional else {"t": txid_hex})
            row = cur.fetchone()
            cur.close()
        finally:
            conn.close()  # back to the pool
        return {row[0]} if row is not None else set()

    def tx_rows_involving(self, addresses: Sequence[str]) -> list[TxRow]:
        """Confirmed transactions signed by, or changing a permission of, any of `addresses`
        (encoded), in chain order: the wallet-transaction listings."""
        if not addresses:
            return []
        wanted = list(addresses)
        granted = sa.select(perm_log_t.c.txid).where(perm_log_t.c.address.in_(wanted))
        q = sa.select(txs_t).where(sa.or_(txs_t.c.sender.in_(wanted), txs_t.c.txid.in_(granted)))
        with self.engine.connect() as c:
            rs = c.execute(q.order_by(txs_t.c.height, txs_t.c.blockindex)).all()
        return [TxRow(r.txid, r.height, r.blockindex, r.sender, r.time_s, r.raw) for r in rs]

    def tx_count(self) -> int:
        with self.engine.connect() as c:
            return c.scalar(sa.select(sa.func.count()).select_from(txs_t)) or 0

    # -- streams and items ------------------------------------------------------------------
    def streams(self) -> list[StreamRow]:
        with self.engine.connect() as c:
            rs = c.execute(sa.select(
                streams_t.c.createtxid, streams_t.c.name, streams_t.c.streamref,
                streams_t.c.restrictions, streams_t.c.salted, streams_t.c.details,
                streams_t.c.creator, streams_t.c.height).order_by(
                streams_t.c.height, streams_t.c.streamref)).all()
        return [StreamRow(*r) for r in rs]

    def _item_filter(self, q: sa.Select, stream: str, key: str | None,
                     publisher: str | None) -> sa.Select:
        q = q.where(items_t.c.stream == stream)
        if publisher is not None:
            q = q.where(items_t.c.publisher == publisher)
        if key is not None:
            q = q.where(items_t.c.id.in_(sa.select(item_keys_t.c.item_id).where(
                item_keys_t.c.stream == stream, item_keys_t.c.item_key == key)))
        return q

    def count_items(self, stream: str, key: str | None = None,
                    publisher: str | None = None) -> int:
        """Confirmed items of `stream`, of those with `key` and/or by `publisher` when given.

        Without a key, one row of item_counts; with one, the key's entries in ix_item_keys."""
        if key is None:
            if publisher == "":
                return 0  # no item has an empty publisher; "" is the whole stream's row
            with self.engine.connect() as c:
                return c.scalar(sa.select(item_counts_t.c.item_count).where(
                    item_counts_t.c.stream == stream,
                    item_counts_t.c.publisher == (publisher or ""))) or 0
        q = self._item_filter(sa.select(sa.func.count()).select_from(items_t), stream, key,
                              publisher)
        with self.engine.connect() as c:
            return c.scalar(q) or 0

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
        with self.engine.connect() as c:
            if key is None and publisher is None:
                q = sa.select(*_ITEM_COLS).where(
                    items_t.c.stream == stream, items_t.c.seq > offset,
                    items_t.c.seq <= offset + limit).order_by(items_t.c.seq)
                return [_item(r) for r in c.execute(q)]
            if key is not None and publisher is not None:
                q = self._item_filter(sa.select(*_ITEM_COLS), stream, key, publisher)
                q = q.order_by(items_t.c.id).offset(offset).limit(limit)
                return [_item(r) for r in c.execute(q)]
            ids = self._window_ids(c, stream, offset, limit, key, publisher)
            if not ids:
                return []
            if publisher is not None:  # the publisher's items from the first id to the last
                q = self._item_filter(sa.select(*_ITEM_COLS), stream, None, publisher).where(
                    items_t.c.id.between(ids[0], ids[-1])).order_by(items_t.c.id)
                return [_item(r) for r in c.execute(q)]
            out = []
            for i in range(0, len(ids), 500):
                out.extend(_item(r) for r in c.execute(sa.select(*_ITEM_COLS).where(
                    items_t.c.id.in_(ids[i:i + 500])).order_by(items_t.c.id)))
            return out

    def _window_ids(self, c: sa.Connection, stream: str, offset: int, limit: int,
                    key: str | None, publisher: str | None) -> list[int]:
        """The ids of the items at places offset .. offset+limit-1 with `key` (or by
        `publisher`): counted, then read from the nearer end of their index."""
        if key is not None:
            col = item_keys_t.c.item_id
            where = (item_keys_t.c.stream == stream, item_keys_t.c.item_key == key)
            total, last = c.execute(sa.select(sa.func.count(), sa.func.max(col))
                                    .where(*where)).one()
        else:
            col = items_t.c.id
            where = (items_t.c.stream == stream, items_t.c.publisher == publisher)
            last_id = sa.select(sa.func.max(col)).where(*where).scalar_subquery()
            found = c.execute(sa.select(item_counts_t.c.item_count, last_id).where(
                item_counts_t.c.stream == stream,
                item_counts_t.c.publisher == publisher)).first()
            total, last = found if found is not None else (0, None)
        if offset >= total or last is None:
            return []
        n = min(limit, total - offset)
        from_end = total - offset - n
        if from_end < offset:
            # Items added after the count above have larger ids: `col <= last` keeps the
            # places counted from the end the places counted from the start.
            ids = list(c.scalars(sa.select(col).where(*where, col <= last)
                                 .order_by(col.desc()).offset(from_end).limit(n)))
            return ids[::-1]
        return list(c.scalars(sa.select(col).where(*where).order_by(col)
                              .offset(offset).limit(n)))

    def items_by_txids(self, stream: str, txids: Sequence[str]) -> list[ItemRow]:
        # Selected by txid alone and the stream checked here: given `stream = ?` too, SQLite
        # walked the whole stream by ix_items_stream instead of seeking each txid (measured
        # 140 ms on a stream of 270,000 items, against well under 1 ms).
        wanted = list(dict.fromkeys(txids))
        rows: list[ItemRow] = []
        with self.engine.connect() as c:
            for i in range(0, len(wanted), 500):
                rows.extend(_item(r) for r in c.execute(sa.select(*_ITEM_COLS).where(
                    items_t.c.txid.in_(wanted[i:i + 500]))) if r.stream == stream)
        return sorted(rows, key=lambda r: r.id)

    def items_by_tx(self, txid: str) -> list[ItemRow]:
        with self.engine.connect() as c:
            rs = c.execute(sa.select(*_ITEM_COLS).where(items_t.c.txid == txid).order_by(
                items_t.c.vout)).all()
        return [_item(r) for r in rs]

    def items_in_heights(self, stream: str, heights: Sequence[int]) -> list[ItemRow]:
        # By height alone, the stream checked here (as items_by_txids, for the same reason).
        wanted = list(dict.fromkeys(heights))
        rows: list[ItemRow] = []
        with self.engine.connect() as c:
            for i in range(0, len(wanted), 500):
                rows.extend(_item(r) for r in c.execute(sa.select(*_ITEM_COLS).where(
                    items_t.c.height.in_(wanted[i:i + 500]))) if r.stream == stream)
        return sorted(rows, key=lambda r: r.id)

    def count_keys(self, stream: str, also: Iterable[str] = ()) -> int:
        """The number of distinct keys of the stream's confirmed items and of `also` (the
        keys of its pending items), for getstreaminfo."""
        extra = set(also)
        with self.engine.connect() as c:
            n = self._distinct_keys(c, stream)
            listed = list(extra)
            for i in range(0, len(listed), 500):
                extra.difference_update(c.scalars(sa.select(item_keys_t.c.item_key).where(
                    item_keys_t.c.stream == stream,
                    item_keys_t.c.item_key.in_(listed[i:i + 500])).distinct()))
        return n + len(extra)

    def _distinct_keys(self, c: sa.Connection, stream: str) -> int:
        """Distinct keys of the stream's confirmed items.

        The first count walks the stream's part of ix_item_keys (index only: about 200 ms for
        a million keys on SQLite, where key_counts' per-key summary took seconds); it is
        remembered with the stream's last item id, and later counts add only the keys of the
        items stored since (read by height, then one index seek per new key), so
        getstreaminfo on a big, busy stream stays cheap. A rollback forgets the counts."""
        k = item_keys_t
        generation = self._key_generation
        cached = self._key_totals.get(stream)
        if cached is None:
            # One statement, one snapshot: the count is that of the items up to `last`.
            n, last = c.execute(sa.select(sa.func.count(sa.distinct(k.c.item_key)),
                                          sa.func.max(k.c.item_id))
                                .where(k.c.stream == stream)).one()
            n = n or 0
        else:
            n, last = cached
            since = c.scalar(sa.select(items_t.c.height).where(items_t.c.id == last))
            if since is None:
                return self._recount_keys(c, stream)
            # By height (the height index; given `stream = ?` too, SQLite would walk the
            # stream's keys instead), the stream checked here; ids grow with height, so
            # `item_id > last` is what came since.
            fresh: set[str] = set()
            for row_stream, key, item_id in c.execute(
                    sa.select(k.c.stream, k.c.item_key, k.c.item_id)
                    .where(k.c.height >= since, k.c.item_id > last)):
                if row_stream == stream:
                    fresh.add(key)
                    last = max(last, item_id)
            listed = list(fresh)
            for i in range(0, len(listed), 500):
                fresh.difference_update(c.scalars(sa.select(k.c.item_key).where(
                    k.c.stream == stream, k.c.item_key.in_(listed[i:i + 500]),
                    k.c.item_id <= cached[1]).distinct()))
            n += len(fresh)
        if last is not None and generation == self._key_generation:
            self._key_totals[stream] = (n, last)
        return n

    def _recount_keys(self, c: sa.Connection, stream: str) -> int:
        self._key_totals.pop(stream, None)
        return self._distinct_keys(c, stream)

    def query_items(self, stream: str, keys: Sequence[str], publishers: Sequence[str],
                    limit: int) -> list[ItemRow]:
        """Items having every key and a publisher among `publishers` (when given); AND-ed."""
        q = sa.select(*_ITEM_COLS).where(items_t.c.stream == stream)
        for k in keys:
            q = q.where(items_t.c.id.in_(sa.select(item_keys_t.c.item_id).where(
                item_keys_t.c.stream == stream, item_keys_t.c.item_key == k)))
        if publishers:
            q = q.where(items_t.c.publisher.in_(list(publishers)))
        q = q.order_by(items_t.c.id).limit(limit)
        with self.engine.connect() as c:
            return [_item(r) for r in c.execute(q)]

    def key_counts(self, stream: str, keys: Sequence[str] | None) -> list[tuple[str, int, int]]:
        """(key, item count, first item id) in order of first appearance."""
        q = sa.select(item_keys_t.c.item_key, sa.func.count(), sa.func.min(item_keys_t.c.item_id)
                      ).where(item_keys_t.c.stream == stream)
        if keys is not None:
            q = q.where(item_keys_t.c.item_key.in_(list(keys)))
        q = q.group_by(item_keys_t.c.item_key)
        with self.engine.connect() as c:
            rs = c.execute(q).all()
        return sorted(((k, n, first) for k, n, first in rs), key=lambda r: r[2])

    def publisher_counts(self, stream: str,
                         publishers: Sequence[str] | None) -> list[tuple[str, int, int]]:
        """(publisher, item count, first item id) in order of first appearance, from
        item_counts."""
        t = item_counts_t
        q = sa.select(t.c.publisher, t.c.item_count, t.c.first_id).where(t.c.stream == stream,
                                                                     t.c.publisher != "")
        if publishers is not None:
            q = q.where(t.c.publisher.in_(list(publishers)))
        with self.engine.connect() as c:
            rs = c.execute(q).all()
        return sorted(((p, n, first) for p, n, first in rs), key=lambda r: r[2])

    def item_by_id(self, item_id: int) -> ItemRow | None:
        with self.engine.connect() as c:
            r = c.execute(sa.select(*_ITEM_COLS).where(items_t.c.id == item_id)).first()
        return _item(r) if r else None

    def last_item(self, stream: str, key: str | None = None,
                  publisher: str | None = None) -> ItemRow | None:
        q = self._item_filter(sa.select(*_ITEM_COLS), stream, key, publisher)
        with self.engine.connect() as c:
            r = c.execute(q.order_by(items_t.c.id.desc()).limit(1)).first()
        return _item(r) if r else None

    # -- permissions ------------------------------------------------------------------------
    def perm_log(self) -> list[PermRow]:
        with self.engine.connect() as c:
            rs = c.execute(sa.select(
                perm_log_t.c.kind, perm_log_t.c.address, perm_log_t.c.entity, perm_log_t.c.perm,
                perm_log_t.c.start_block, perm_log_t.c.end_block, perm_log_t.c.admin,
                perm_log_t.c.time_s, perm_log_t.c.txid, perm_log_t.c.height).order_by(
                perm_log_t.c.id)).all()
        return [PermRow(*r) for r in rs]

    # -- local subscriptions ----------------------------------------------------------------
    def subscriptions(self) -> set[str]:
        with self.engine.connect() as c:
            return set(c.scalars(sa.select(subscriptions_t.c.stream)))

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
        with self.engine.connect() as c:
            blocks = [(BlockRow(*r[:-1]), r[-1]) for r in c.execute(
                sa.select(*_BLOCK_COLS, blocks_t.c.raw).where(between(blocks_t))
                .order_by(blocks_t.c.height))]
            txs = [TxRow(*r) for r in c.execute(
                sa.select(*[txs_t.c[n] for n in _TX_INSERT]).where(between(txs_t))
                .order_by(txs_t.c.height, txs_t.c.blockindex))]
            items = [_item(r) for r in c.execute(
                sa.select(*_ITEM_COLS).where(between(items_t)).order_by(items_t.c.id))]
            keys = [tuple(r) for r in c.execute(
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
        return StoredRange(blocks, txs, items, keys, streams, perms, above, block_count)

    def count_problems(self) -> list[str]:
        """Streams whose item count (item_counts) is not the position of their last item:
        the start-up check's look at the paging rows, one index seek per stream."""
        out = []
        with self.engine.connect() as c:
            counted = {s: n for (s, p), (n, _) in _read_counts(c).items() if p == ""}
            for stream in sorted(set(c.scalars(sa.select(streams_t.c.createtxid)))
                                 | set(counted)):
                last = c.scalar(sa.select(items_t.c.seq).where(items_t.c.stream == stream)
                                .order_by(items_t.c.seq.desc()).limit(1)) or 0
                if counted.get(stream, 0) != last:
                    out.append(f"stream {stream}: {counted.get(stream, 0)} items counted, "
                               f"its last item is number {last}")
        return out

    def set_subscribed(self, stream: str, on: bool) -> None:
        with self.engine.begin() as c:
            c.execute(subscriptions_t.delete().where(subscriptions_t.c.stream == stream))
            if on:
                c.execute(subscriptions_t.insert().values(stream=stream))


def _read_counts(c: sa.Connection) -> dict[tuple[str, str], tuple[int, int]]:
    return {(r.stream, r.publisher): (r.item_count, r.first_id) for r in c.execute(
        sa.select(item_counts_t.c.stream, item_counts_t.c.publisher, item_counts_t.c.item_count,
                  item_counts_t.c.first_id))}


def _add_item_positions(engine: sa.Engine) -> None:
    """Give a store made before items had positions (`seq`) and counts its positions and
    counts: a one-off upgrade of the items already stored, in one database transaction."""
    inspector = sa.inspect(engine)
    if "ix_items_seq" in {ix["name"] for ix in inspector.get_indexes("items")}:
        return  # the index is made last: with it, the upgrade is complete
    log.info("chain store: numbering the stored stream items (one-off upgrade)")
    has_seq = "seq" in {col["name"] for col in inspector.get_columns("items")}
    with engine.begin() as c:
        # (MariaDB commits at each ALTER TABLE: after a crash in between, the next open
        # finds the column without the index and numbers the items again.)
        if not has_seq:
            c.exec_driver_sql("ALTER TABLE items ADD COLUMN seq BIGINT NOT NULL DEFAULT 0")
        c.execute(item_counts_t.delete())
        counts: dict[tuple[str, str], list[int]] = {}
        numbered: dict[str, int] = {}
        updates = []
        rows = c.execute(sa.select(items_t.c.id, items_t.c.stream, items_t.c.publisher)
                         .order_by(items_t.c.id)).all()
        for item_id, stream, publisher in rows:
            numbered[stream] = numbered.get(stream, 0) + 1
            updates.append({"i": item_id, "n": numbered[stream]})
            for group in ((stream, ""), (stream, publisher)):
                counts.setdefault(group, [0, item_id])[0] += 1
        for i in range(0, len(updates), 10_000):
            c.execute(items_t.update().where(items_t.c.id == sa.bindparam("i"))
                      .values(seq=sa.bindparam("n")), updates[i:i + 10_000])
        if counts:
            c.execute(item_counts_t.insert(), [
                {"stream": s, "publisher": p, "item_count": n, "first_id": first}
                for (s, p), (n, first) in counts.items()])
        next(ix for ix in items_t.indexes if ix.name == "ix_items_seq").create(c)
    log.info("chain store: %d stream items numbered", len(updates))


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - DBAPI connection
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()
