"""The active chain: validates blocks with consensus/, writes them to the store, keeps state.

The one place where a block becomes part of the chain (`connect`) or leaves it (`rollback_to`);
everything else (mempool, miner, RPC, P2P) goes through here.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from consensus.blocks import BlockEffects, connect_block
from consensus.diversity import final_depth
from consensus.forks import locked_change
from consensus.rules import PermChange, Rules, replay_perm_log
from consensus.state import ChainState, StreamInfo
from ledger.addresses import AddressCodec
from ledger.blocks import Block, BlockHeader
from ledger.codec import Reader
from ledger.errors import ChainmillError, InvalidBlock, StoreError
from ledger.store import REINDEX_MARK as STORE_REINDEX_MARK
from ledger.store import BlockRow, BlockWrite, ChainStore, ItemRow, PermRow, StreamRow, TxRow
from ledger.transactions import Publish
from node.verifier import ParallelVerifier

log = logging.getLogger(__name__)


def now_ms() -> int:
    return int(time.time() * 1000)


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a block's store rows are made and
    written, or a sync batch is decoded. A block of 10,000 items makes some 30,000 container
    objects (rows, row tuples; decoded transactions and ops) that all live until its commit
    and form no cycles; made with the collector on, they trigger collections that walk the
    node's whole heap (measured in-process: 45-60 ms on every other block of 10,000 items,
    for 30 ms of row making; decoding and connecting a sync batch under a heap of 300,000
    objects: 4.7 % of its instructions). They are collected with the rest at the next
    collection after this; the previous setting is restored, so pauses on two threads at
    once end with the collector on."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass(slots=True)
class Connected:
    """What connecting a block did, for the mempool, hooks and logs."""

    block: Block
    effects: BlockEffects
    items: list[ItemRow]


@dataclass(slots=True)
class Checked:
    """A block validated on the tip, with its store rows: what `Chain.commit` appends."""

    block: Block
    state: ChainState
    """The chain state after the block."""
    effects: BlockEffects
    write: BlockWrite
    items: list[ItemRow]
    on_tip: BlockHeader | None
    """The tip the block was validated on: `commit` refuses it once the tip has moved."""


@dataclass(slots=True)
class ConnectedMany:
    """What `Chain.connect_many` connected, and the reason it stopped early (or None)."""

    connected: list[Connected]
    error: InvalidBlock | None


class Chain:
    """The active chain and its derived state."""

    def __init__(self, store: ChainStore, params: Mapping, codec: AddressCodec) -> None:
        self.store = store
        self.params = params
        self.codec = codec
        self.chain_id = bytes(params["chain-params-hash"])
        self.rules = Rules.from_params(params, self.chain_id)
        self.verifier = ParallelVerifier(self.chain_id)
        self.state = ChainState()
        self.tip_header: BlockHeader | None = None
        self.load_state()

    # -- state ------------------------------------------------------------------------------
    def load_state(self) -> None:
        """Rebuild the in-memory state from the store (start-up, after a rollback)."""
        s = ChainState()
        dec = self.codec.decode
        for r in self.store.streams():
            txid = bytes.fromhex(r.createtxid)
            s.streams[txid] = StreamInfo(txid, r.name, r.restrictions, r.salted,
                                         r.details.encode(), dec(r.creator), r.height,
                                         r.streamref)
            if r.name:
                s.stream_names[r.name.lower()] = txid
        replay_perm_log(s, [
            PermChange(p.kind, dec(p.address), bytes.fromhex(p.entity), p.perm, p.start_block,
                       p.end_block, dec(p.admin), p.time_s, bytes.fromhex(p.txid), p.height)
            for p in self.store.perm_log()])
        s.last_mined = {dec(a): h for a, h in self.store.last_mined().items()}
        tip = self.store.tip()
        if tip is not None:
            raw = self.store.block_raw(tip.height)
            assert raw is not None
            # The header alone: a tip whose body does not decode must not stop the node from
            # opening the store (a reindex then finds and removes it).
            self.tip_header = BlockHeader.decode_from(Reader(raw))
            s.height, s.tip_hash = tip.height, bytes.fromhex(tip.hash)
        else:
            self.tip_header = None
        self.state = s

    @property
    def height(self) -> int:
        return self.state.height

    def final_depth(self) -> int:
        h = self.state.height + 1
        return final_depth(max(1, len(self.state.holders("mine", h))), self.rules.mining_diversity)

    def permitted_miners(self) -> int:
        return len(self.state.holders("mine", self.state.height + 1))

    # -- connecting -------------------------------------------------------------------------
    def validate(self, block: Block, preverified: set[bytes] | frozenset = frozenset(),
                 unconfirmed: set[bytes] | frozenset = frozenset(),
                 ) -> tuple[ChainState, BlockEffects]:
        """Check a block on top of the tip without changing anything.

        `unconfirmed`: txids known not to be on the chain (the mempool's: it refuses a txid
        the store has and drops each one that a block confirms); the replay check asks the
        store about the others only."""
        return self._validate_on(self.state, self.tip_header, block, preverified, unconfirmed)

    def _validate_on(self, state: ChainState, tip: BlockHeader, block: Block,
                     preverified: set[bytes] | frozenset, unconfirmed: set[bytes] | frozenset,
                     ) -> tuple[ChainState, BlockEffects]:
        def known(ids: Iterable[bytes]) -> set[bytes]:
            ask = [x.hex() for x in ids if x not in unconfirmed]
            return {bytes.fromhex(t) for t in self.store.known_txids(ask)} if ask else set()

        return connect_block(
            state, self.rules, block, tip, now_ms(),
            already_known=known, verify_many=self.verifier, preverified=preverified)

    def connect(self, block: Block, preverified: set[bytes] | frozenset = frozenset(),
                unconfirmed: set[bytes] | frozenset = frozenset()) -> Connected:
        """Validate and append a block; raises InvalidBlock and then changes nothing.
        `preverified` and `unconfirmed` as for `validate` and `connect_block`."""
        return self.commit(self.check(block, preverified, unconfirmed))

    def check(self, block: Block, preverified: set[bytes] | frozenset = frozenset(),
              unconfirmed: set[bytes] | frozenset = frozenset()) -> Checked:
        """The first half of `connect`: validate the block on the tip and make its store
        rows, changing nothing (so readers may go on meanwhile); raises InvalidBlock."""
        tip = self.tip_header  # the state and tip the block is checked on, read once
        new_state, effects = self._validate_on(self.state, tip, block, preverified,
                                               unconfirmed)
        with collector_paused():
            write, items = self._write_for(block, effects)
        return Checked(block, new_state, effects, write, items, tip)

    def commit(self, checked: Checked) -> Connected:
        """The second half of `connect`: append a block that `check` validated on this tip."""
        if checked.on_tip is not self.tip_header:
            # Callers hold the node's connect lock, so the tip cannot move between the two
            # halves; this is the node's own error, not the block's (no peer is blamed).
            raise RuntimeError(f"block {checked.block.height} was checked on another tip")
        with collector_paused():
            self.store.put_block(checked.write)
        self.state = checked.state
        self.tip_header = checked.block.header
        return Connected(checked.block, checked.effects, checked.items)

    def connect_many(self, blocks: Sequence[Block],
                     preverified: Sequence[set[bytes] | frozenset]) -> ConnectedMany:
        """Validate consecutive blocks on top of the tip and append those that are valid,
        up to the first invalid one, in one store transaction (initial sync).

        Each block is validated exactly as `connect` does, on the state after the blocks
        before it; a txid of an earlier block of the batch counts as confirmed. The state
        moves only after the store committed: a store error changes nothing (and raises),
        an invalid block leaves the blocks before it connected and is returned in `error`.
        """
        state, tip = self.state, self.tip_header
        batch: set[bytes] = set()  # txids of the valid blocks so far

        def known(ids: Iterable[bytes]) -> set[bytes]:
            # The store is asked about every txid, those of the batch too: it has none of
            # them (the batch is written after this loop), and filtering them out first
            # cost two passes over each block's txids.
            ids = list(ids)
            return self.store.confirmed_txids(ids) | batch.intersection(ids)

        done: list[tuple[Block, ChainState, BlockEffects]] = []
        error: InvalidBlock | None = None
        for block, pre in zip(blocks, preverified, strict=True):
            try:
                state, effects = connect_block(
                    state, self.rules, block, tip, now_ms(), already_known=known,
                    verify_many=self.verifier, preverified=pre)
            except InvalidBlock as e:
                error = e
                break
            done.append((block, state, effects))
            tip = block.header
            batch.update(t.txid for t in block.txs)
        out = ConnectedMany([], error)
        writes = []
        with collector_paused():  # as in check and commit: a chunk's rows form no cycles
            for block, _, effects in done:
                write, items = self._write_for(block, effects)
                writes.append(write)
                out.connected.append(Connected(block, effects, items))
            if writes:
                self.store.put_blocks(writes)
        if writes:
            self.state = done[-1][1]
            self.tip_header = done[-1][0].header
        return out

    def _write_for(self, block: Block, fx: BlockEffects) -> tuple[BlockWrite, list[ItemRow]]:
        """The store rows of a block validated with effects `fx`, and its item rows.

        Runs for every transaction a node connects: one pass, local names, each stream id
        put in hex and each sender's address looked up once per block. The rows are made
        with `tuple.__new__(Row, fields)`, which is what a named tuple's generated
        `__new__` does after taking its fields as Python arguments (that call cost about
        0.7 us for an item row of 12 fields, against 0.25 without it)."""
        enc = self.codec.encode
        h = block.height
        t = block.header.time
        txs: list[TxRow] = []
        items: list[ItemRow] = []
        add_tx, add_item = txs.append, items.append
        new_row = tuple.__new__
        stream_hex: dict[bytes, str] = {}
        senders: dict[bytes, str] = {}
        for i, tx in enumerate(block.txs):
            txid = tx.txid.hex()
            sender_hash = tx.sender_hash
            sender = senders.get(sender_hash)
            if sender is None:
                sender = senders[sender_hash] = enc(sender_hash)
            add_tx(new_row(TxRow, (txid, h, i, sender, tx.time, tx.raw)))
            for vout, op in enumerate(tx.ops):
                if isinstance(op, Publish):
                    stream = stream_hex.get(op.stream)
                    if stream is None:
                        stream = stream_hex[op.stream] = op.stream.hex()
                    add_item(new_row(ItemRow, (0, stream, txid, vout, h, i, sender, op.keys,
                                               int(op.fmt), op.data, op.offchain, t)))
        streams = [StreamRow(s.createtxid.hex(), s.name, s.streamref, s.restrict, s.salted,
                             s.details.decode(), enc(s.creator), s.height) for s in fx.streams]
        perms = [PermRow(p.kind, enc(p.address), p.entity.hex(), p.perm, p.start, p.end,
                         enc(p.admin), p.time, p.txid.hex(), p.height) for p in fx.perm_log]
        row = BlockRow(h, block.hash.hex(), block.header.prev_hash.hex(), t,
                       block.header.time_ms, enc(fx.miner), len(block.txs), block.size)
        return BlockWrite(row, block.raw, txs, items, streams, perms), items

    def reorg_lock(self, fork_height: int, lock_rounds: int) -> int | None:
        """The height of an admin/mine change that forbids rolling back to `fork_height`
        (lock-admin-mine-rounds), or None."""
        changes = [(p.height, p.perm) for p in self.store.perm_log() if p.kind == "set"]
        return locked_change(changes, fork_height, self.state.height, lock_rounds,
                             self.permitted_miners())

    def rollback_to(self, height: int) -> list[Block]:
        """Remove the blocks above `height`; returns them, newest last."""
        removed = []
        for h in range(height + 1, self.state.height + 1):
            raw = self.store.block_raw(h)
            if raw is not None:
                removed.append(Block.decode(raw))
        self.store.rollback_to(height)
        self.load_state()
        log.info("rolled back to height %d (%d blocks removed)", height, len(removed))
        return removed

    REINDEX_MARK = STORE_REINDEX_MARK

    def reindex_pending(self) -> bool:
        """True when a reindex was interrupted: the next start must finish it."""
        return self.store.get_meta(self.REINDEX_MARK) == "in progress"

    def reindex(self, quarantine: Path | None = None) -> int:
        """Rebuild every derived table by replaying the stored blocks; returns the height.

        The blocks stay in the store throughout and a mark in the store says a reindex is
        under way, so a crash part-way loses nothing: the next start sees the mark and
        replays again from genesis.

        A stored block that no longer decodes or connects (one mined by a version that let
        an over-limit transaction through) ends the replay there, as Bitcoin Core's reindex
        stops at the first invalid block: with `quarantine` (a directory), that block and
        those above it are written to a file there and removed from the store, the chain
        ends at the last valid block and peers supply the rest; without it, StoreError says
        which block failed and what to run, and the next start reindexes again."""
        tip = self.store.tip()
        if tip is None:
            return -1
        self.store.set_meta(self.REINDEX_MARK, "in progress")
        log.info("reindex: replaying %d stored blocks", tip.height + 1)
        self.store.clear_derived()
        self.state = ChainState()
        self.tip_header = None
        for h in range(tip.height + 1):
            try:
                block = self.block_at(h)
                new_state, effects = self.validate(block)
            except ChainmillError as e:
                return self._reindex_failed(h, tip.height, e, quarantine)
            write, _ = self._write_for(block, effects)
            self.store.put_block(write, block_stored=True)
            self.state = new_state
            self.tip_header = block.header
        self.store.set_meta(self.REINDEX_MARK, "done")
        return self.state.height

    def _reindex_failed(self, h: int, top: int, err: Exception, quarantine: Path | None) -> int:
        what = f"stored block {h} cannot be replayed ({type(err).__name__}: {err})"
        if h == 0 or quarantine is None:
            # The mark stays: the derived rows end below the stored tip, so the next start
            # must reindex again (and the node's own start passes a quarantine directory).
            if h == 0:
                fix = ("the store does not hold this chain's valid genesis: move the chain "
                       "store aside and start again to fetch the chain from a peer")
            else:
                fix = ("run `chainmill start CHAIN --reindex`: the node's reindex moves blocks "
                       f"{h}-{top} aside and continues from block {h - 1}")
            self.load_state()
            raise StoreError(f"reindex stopped: {what}; {fix}")
        quarantine.mkdir(parents=True, exist_ok=True)
        path = quarantine / f"invalid-blocks-{h}-{top}.hex"
        with path.open("w") as f:
            for k in range(h, top + 1):
                raw = self.store.block_raw(k)
                if raw is not None:
                    f.write(raw.hex() + "\n")
        self.store.rollback_to(h - 1)
        self.store.set_meta(self.REINDEX_MARK, "done")
        self.load_state()
        log.error("reindex: %s; blocks %d-%d were moved to %s and the chain now ends at block "
                  "%d; later blocks are fetched from peers", what, h, top, path, h - 1)
        return self.state.height

    def block_at(self, height: int) -> Block:
        raw = self.store.block_raw(height)
        if raw is None:
            raise StoreError(f"block {height} missing from the store")
        return Block.decode(raw)

    def close(self) -> None:
        self.verifier.close()
