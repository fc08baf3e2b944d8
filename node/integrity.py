"""Start-up checks of the chain store, as Bitcoin Core's -checkblocks: a damaged store must
not start silently and serve data that disagrees with its blocks.

`check_store` runs SQLite's quick_check, then takes the last N stored blocks (all of them
with N = 0) and checks each raw block (decodes strictly, hash, height, link to its parent,
Merkle root, miner signature, the block row's columns) and every row derived from it
(transactions, items, item keys, streams, permission changes) against what the raw block
says. Any disagreement raises StoreDamaged with one line that names the fix.

`TipMarker` remembers the best height the node reached (a small file beside the store), so a
store that comes back lower (its -wal file lost after a crash) is reported, not served as if
nothing happened; the lost blocks come back from peers.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from ledger.addresses import AddressCodec
from ledger.blocks import Block
from ledger.errors import ChainmillError, StoreError
from ledger.merkle import merkle_root
from ledger.store import ChainStore, StoredRange
from ledger.transactions import CreateStream, Permission, Publish

log = logging.getLogger(__name__)

TIP_FILE = "tip.dat"
DEFAULT_CHECKBLOCKS = 6


class StoreDamaged(StoreError):
    """The chain store disagrees with itself; the message names the fix."""


def check_store(store: ChainStore, codec: AddressCodec, chain_id: bytes, chain_name: str,
                checkblocks: int = DEFAULT_CHECKBLOCKS) -> int:
    """Check the store (see the module docstring); returns the number of blocks checked."""
    problems = store.quick_check()
    if problems:
        raise StoreDamaged(f"the chain store file is damaged (SQLite quick_check: "
                           f"{problems[0]}); restore it from a backup, or remove it and "
                           f"start again to fetch the chain from peers")
    tip = store.tip()
    if tip is None:
        return 0
    lo = 0 if checkblocks <= 0 else max(0, tip.height - checkblocks + 1)
    try:
        stored = store.stored_range(max(0, lo - 1), tip.height)
    except sa.exc.DatabaseError as e:
        raise StoreDamaged(f"the chain store file is damaged ({str(e.orig or e).strip()}); "
                           "restore it from a backup, or remove it and start again to fetch "
                           "the chain from peers") from None
    problem = next(_problems(stored, lo, tip.height, codec, chain_id), None)
    if problem is not None:
        height, what, derived = problem
        if derived:
            raise StoreDamaged(
                f"the chain store disagrees with block {height}: {what}; rebuild the derived "
                f"rows from the raw blocks with `chainmill start {chain_name} --reindex`")
        raise StoreDamaged(
            f"block {height} in the chain store is damaged: {what}; "
            f"`chainmill start {chain_name} --reindex` moves it and the blocks above it aside "
            f"(to invalid-blocks-*.hex) and fetches them again from peers, or restore the "
            f"store from a backup")
    counted = store.count_problems()
    if counted:
        raise StoreDamaged(
            f"the chain store's item counts disagree with its items ({counted[0]}); rebuild "
            f"the derived rows from the raw blocks with `chainmill start {chain_name} "
            f"--reindex`")
    return tip.height - lo + 1


def _problems(s: StoredRange, lo: int, hi: int, codec: AddressCodec, chain_id: bytes
              ) -> Iterator[tuple[int, str, bool]]:
    """(height, what is wrong, whether only derived rows are wrong), oldest first."""
    if s.block_count != hi + 1:
        yield hi, f"{s.block_count} blocks stored for heights 0..{hi}", False
    if s.rows_above:
        yield hi, f"{s.rows_above} rows above the tip", True
    bad_txkeys = set(s.bad_txkeys)
    enc = codec.encode
    rows = {r.height: (r, raw) for r, raw in s.blocks}
    txs = defaultdict(list)
    for t in s.txs:
        txs[t.height].append(t)
    items = defaultdict(list)
    for it in s.items:
        items[it.height].append(it)
    keys = defaultdict(set)
    for item_id, stream, key, height in s.item_keys:
        keys[item_id].add((stream, key, height))
    streams = defaultdict(list)
    for st in s.streams:
        streams[st.height].append(st)
    perms = defaultdict(list)
    for p in s.perms:
        perms[p.height].append(p)
    for h in range(lo, hi + 1):
        if h not in rows:
            yield h, "the block is missing", False
            return
        row, raw = rows[h]
        try:
            block = Block.decode(raw)
            miner = enc(block.miner_hash(chain_id))
        except ChainmillError as e:
            yield h, f"the raw block does not decode ({e})", False
            return
        hd = block.header
        if block.hash.hex() != row.hash:
            yield h, "the raw block's hash differs from the block row's", False
        elif hd.height != h:
            yield h, f"the raw block says height {hd.height}", False
        elif merkle_root([t.txid for t in block.txs]) != hd.merkle_root:
            yield h, "bad Merkle root", False
        elif h > 0 and (h - 1 not in rows or rows[h - 1][0].hash != hd.prev_hash.hex()):
            yield h, "not linked to the stored block below it", False
        elif row.prev_hash != hd.prev_hash.hex():
            yield h, "the block row's previous hash differs from the raw block's", True
        elif (row.miner, row.txcount, row.size, row.time_ms, row.time_s) != (
                miner, len(block.txs), block.size, hd.time_ms, hd.time):
            yield h, "the block row's columns differ from the raw block", True
        elif h in bad_txkeys:
            yield h, "a transaction row's txkey is not that of its txid", True
        else:
            yield from ((h, what, True) for what in _derived_problems(
                block, txs[h], items[h], keys, streams[h], perms[h], codec))


def _derived_problems(block: Block, txs: list, items: list, keys: dict, streams: list,
                      perms: list, codec: AddressCodec) -> Iterator[str]:
    enc = codec.encode
    h, t = block.height, block.header.time
    want_txs = [(tx.txid.hex(), h, i, enc(tx.sender_hash), tx.time, tx.raw)
                for i, tx in enumerate(block.txs)]
    have_txs = [(r.txid, r.height, r.blockindex, r.sender, r.time_s, bytes(r.raw)) for r in txs]
    if have_txs != want_txs:
        yield "its transaction rows differ from its transactions"
        return
    want_items, creates, perm_ops = [], {}, defaultdict(set)
    creator_grants = defaultdict(set)  # a stream's creator gets its admin-type permissions
    for i, tx in enumerate(block.txs):
        for vout, op in enumerate(tx.ops):
            if isinstance(op, Publish):
                want_items.append((op.stream.hex(), tx.txid.hex(), vout, h, i,
                                   enc(tx.sender_hash), tuple(op.keys), int(op.fmt),
                                   bytes(op.data), bool(op.offchain), t))
            elif isinstance(op, CreateStream):
                creates[tx.txid.hex()] = (op.name, op.restrict, bool(op.salted),
                                          op.details.decode(), enc(tx.sender_hash))
                creator_grants[tx.txid.hex()].add((enc(tx.sender_hash), tx.txid.hex()))
            elif isinstance(op, Permission):
                perm_ops[tx.txid.hex()].add((enc(op.address), op.entity.hex()))
    have_items = [(r.stream, r.txid, r.vout, r.height, r.blockindex, r.publisher, tuple(r.keys),
                   r.format, bytes(r.data), bool(r.offchain), r.time_s) for r in items]
    if sorted(have_items) != sorted(want_items):
        yield "its stream item rows differ from its transactions' items"
        return
    for r in items:
        if keys.get(r.id, set()) != {(r.stream, k, h) for k in r.keys}:
            yield f"the key rows of item {r.txid}:{r.vout} differ from its keys"
            return
    have_streams = {r.createtxid: (r.name, r.restrictions, r.salted, r.details, r.creator)
                    for r in streams}
    if have_streams != creates:
        yield "its stream rows differ from its stream creations"
        return
    if h == 0:
        return  # genesis grants are derived from the parameters, not from operations
    for p in perms:
        if ((p.address, p.entity) not in perm_ops.get(p.txid, ())
                and (p.address, p.entity) not in creator_grants.get(p.txid, ())):
            yield f"a permission row ({p.perm} of {p.address}) matches no permission operation"
            return
    for txid in perm_ops:
        if not any(p.txid == txid for p in perms):
            yield f"the permission operations of {txid} have no permission rows"
            return


class TipMarker:
    """`tip.dat` in the chain directory: the best height the node has had, and its hash."""

    def __init__(self, chain_dir: Path) -> None:
        self.path = chain_dir / TIP_FILE

    def read(self) -> tuple[int, str] | None:
        try:
            height, block_hash = self.path.read_text().split()
            return int(height), block_hash
        except (OSError, ValueError):
            return None

    def write(self, height: int, block_hash: str) -> None:
        """Replace the file (no fsync: it must survive a process crash, which the page cache
        does; after a power cut it is at worst old, and the check only warns)."""
        tmp = self.path.with_name(TIP_FILE + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"{height} {block_hash}\n")
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning("cannot record the tip in %s: %s", self.path.name, e)
            with contextlib.suppress(OSError):
                tmp.unlink()
