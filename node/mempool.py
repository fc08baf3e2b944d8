"""The mempool: transactions validated on arrival, in arrival order, waiting for a block.

It keeps its own scratch state (the tip's state plus every pooled transaction applied), so a
transaction that depends on a pooled one (publishing to a stream created a moment ago) is
accepted, and one that conflicts with it is refused at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from consensus.rules import Unchanged, apply_tx
from consensus.state import ChainState
from ledger.errors import AlreadyInChain, ChainmillError, InvalidTransaction
from ledger.store import ItemRow
from ledger.transactions import Publish, Transaction, publishes_only
from node.chain import Chain, Connected

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 512 * 1024 * 1024


@dataclass(slots=True)
class PoolEntry:
    tx: Transaction
    received: float
    sender: str
    """The sender's address (the items' publisher)."""
    publishes_only: bool = True
    """Every operation is a Publish: admitting it read the pool's state and changed nothing."""
    _items: list[ItemRow] | None = None

    @property
    def items(self) -> list[ItemRow]:
        """The transaction's items as the pool shows them (no id, height or block yet).

        Made when first read, not on arrival: a publishmulti of 32 items would otherwise
        build 32 rows on the event loop that nothing reads unless a client lists the
        stream's unconfirmed items before the next block."""
        if self._items is None:
            txid_hex = self.tx.txid.hex()
            t = int(self.received)
            self._items = [ItemRow(-1, op.stream.hex(), txid_hex, vout, -1, -1, self.sender,
                                   op.keys, int(op.fmt), op.data, op.offchain, t)
                           for vout, op in enumerate(self.tx.ops) if isinstance(op, Publish)]
        return self._items

    def streams(self) -> list[bytes]:
        """The streams (creation txids) the transaction publishes to, in the order of their
        first item."""
        ops = self.tx.ops
        if len(ops) == 1:  # one item per call: no order of several streams to keep
            return [ops[0].stream] if isinstance(ops[0], Publish) else []
        return list(dict.fromkeys(op.stream for op in ops if isinstance(op, Publish)))


class Mempool:
    def __init__(self, chain: Chain, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.chain = chain
        self.max_bytes = max_bytes
        self.entries: dict[bytes, PoolEntry] = {}
        self.by_stream: dict[bytes, list[PoolEntry]] = {}
        """Stream (creation txid) -> the pooled entries with items on it, in pool order. Keyed
        by the txid's bytes, not its hex: every item of a stream carries the one bytes object
        of its StreamInfo, whose hash is computed once, where a hex key is made and hashed
        again for each transaction pooled."""
        self.state = chain.state.copy()
        self.height = chain.height + 1
        """The height the pooled transactions were checked for (the next block's)."""
        self.stateful = 0
        """Pooled entries with an operation other than Publish (they changed `state`)."""
        self.bytes = 0
        self.seen: set[bytes] = set()
        """Txids this node has seen unconfirmed (for walletnotify's first-seen flag)."""
        self._unchanged = Unchanged()
        self._unchanged_on: tuple[ChainState, int] = (self.state, self.height)
        """The state and height `_unchanged` describes (see `_checks_on`)."""

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, txid: bytes) -> bool:
        return txid in self.entries

    def add(self, tx: Transaction, *, verified: bool, local: bool = False,
            not_in_chain: bool = False) -> PoolEntry:
        """Validate and pool a transaction; raises and changes nothing when it is refused.

        `verified`: its signature was already checked (or made here). `local`: made by this
        node with a fresh random nonce, so it cannot already be on the chain.
        `not_in_chain`: the caller asked the store about it (with others, in one query) and
        no block has been connected since.
        """
        txid = tx.txid
        if txid in self.entries:
            raise AlreadyInChain("transaction already in the mempool")
        size = tx.size
        if self.bytes + size > self.max_bytes:
            raise InvalidTransaction("mempool full")
        if not local and not not_in_chain and self.chain.store.known_txids([txid.hex()]):
            raise AlreadyInChain("transaction already in the chain")
        if not verified and not tx.signature_valid(self.chain.chain_id):
            raise InvalidTransaction("bad transaction signature")
        only_publishes = self._apply(tx, self.chain.height + 1)
        return self._insert(tx, time.time(), only_publishes, txid, size)

    def _apply(self, tx: Transaction, height: int) -> bool:
        """Apply `tx` on the pool's state at `height` (raises if it does not apply); True if
        it holds publishes only, which read the state and change nothing."""
        if publishes_only(tx.ops):
            apply_tx(self.state, self.chain.rules, tx, height,
                     unchanged=self._checks_on(self.state, height))
            return True
        scratch = self.state.copy()
        apply_tx(scratch, self.chain.rules, tx, height)
        self.state = scratch
        return False

    def _checks_on(self, state: ChainState, height: int) -> Unchanged:
        """The permission checks publish-only transactions passed on `state` at `height`
        (consensus's `Unchanged`): a Publish changes nothing, so the next item of the same
        sender on the same stream needs no permission lookup (two of them, about a sixth of
        admitting a one-item transaction). Forgotten when the pool's state is replaced (a
        stateful transaction, a block) or the height moves."""
        if self._unchanged_on[0] is not state or self._unchanged_on[1] != height:
            self._unchanged = Unchanged()
            self._unchanged_on = (state, height)
        return self._unchanged

    def _insert(self, tx: Transaction, received: float, only_publishes: bool | None = None,
                txid: bytes | None = None, size: int | None = None) -> PoolEntry:
        """Pool a transaction that passed on the pool's state. `txid` and `size`, when the
        caller has them, are the transaction's own (read once per admission, not per use)."""
        if only_publishes is None:
            only_publishes = publishes_only(tx.ops)
        if txid is None:
            txid = tx.txid
        entry = PoolEntry(tx, received, self.chain.codec.encode(tx.sender_hash),
                          only_publishes)
        self._put(entry, txid, tx.size if size is None else size)
        self.seen.add(txid)
        return entry

    def _put(self, entry: PoolEntry, txid: bytes, size: int) -> None:
        by_stream = self.by_stream
        for stream in entry.streams():
            pooled = by_stream.get(stream)
            if pooled is None:
                by_stream[stream] = [entry]
            else:
                pooled.append(entry)
        self.entries[txid] = entry
        self.bytes += size
        if not entry.publishes_only:
            self.stateful += 1

    def take(self, max_bytes: int) -> list[Transaction]:
        """Transactions for the next block, in arrival order, within a byte budget."""
        out, size = [], 0
        for e in self.entries.values():
            n = e.tx.size + 5
            if size + n > max_bytes:
                break
            out.append(e.tx)
            size += n
        return out

    def on_connected(self, connected: Connected) -> None:
        """Drop what the block confirmed and re-check the rest against the new tip."""
        confirmed = {tx.txid for tx in connected.block.txs}
        self.seen.difference_update(confirmed)
        if self._still_valid():
            self._drop_confirmed(confirmed)
        else:
            self.readmit([], confirmed=confirmed)

    def _still_valid(self) -> bool:
        """True when every pooled transaction passes on the new tip exactly as it did when
        it was admitted, so the pool need not check each again (8 us per entry, for every
        entry after every block: the pool of a busy node holds a few thousand).

        A Publish-only transaction reads the send permission of its sender, its streams'
        existence and restrictions and the write permissions on them, at the pool's height.
        With only such transactions pooled, the pool's state is the chain state it was
        rebuilt on; if the chain's permissions and streams are still the same and no grant
        that held at the old height has ended by the new one, every check gives the same
        answer. Anything else (a block that changed a permission or created a stream, a
        pooled create or grant) rebuilds the pool as before."""
        if self.stateful:
            return False
        tip, mine = self.chain.state, self.state
        if tip.perms != mine.perms or tip.streams != mine.streams:
            return False
        old, new = self.height, self.chain.height + 1
        if new < old:  # rolled back (a reorganisation): a grant may not have started yet
            return False
        return not any(old < end <= new for _, end in tip.perms.values())

    def _drop_confirmed(self, confirmed: set[bytes]) -> None:
        """The pool without the confirmed txs, each kept entry where it was (as `readmit`
        leaves it when every entry passes again)."""
        old = self.entries
        gone = [old[t] for t in confirmed if t in old]
        if len(gone) == len(old):
            # The block took the whole pool (a miner that keeps up takes all of it): nothing
            # to filter entry by entry.
            self.entries, self.by_stream, self.bytes = {}, {}, 0
        elif gone:
            self.entries = {t: e for t, e in old.items() if t not in confirmed}
            self.bytes -= sum(e.tx.size for e in gone)
            by_stream = {}
            for stream, entries in self.by_stream.items():
                kept = [e for e in entries if e.tx.txid not in confirmed]
                if kept:
                    by_stream[stream] = kept
            self.by_stream = by_stream
        self.state = self.chain.state.copy()
        self.height = self.chain.height + 1

    def readmit(self, returned: Iterable[Transaction],
                confirmed: set[bytes] | None = None) -> list[Transaction]:
        """Rebuild the pool on the current tip: pooled txs not yet confirmed, then `returned`
        (txs of blocks a reorganisation removed). Returns the txs that no longer fit.

        `confirmed`: the txids that just became confirmed (the connected block's); a pooled
        tx can be on the chain only through that block, since `add` refuses txs the store
        already has. None (after a reorganisation): ask the store about every pooled tx."""
        if confirmed is None:
            known = self.chain.store.known_txids(t.hex() for t in self.entries)
            confirmed = {bytes.fromhex(t) for t in known}
        old = [e for txid, e in self.entries.items() if txid not in confirmed]
        self.entries, self.by_stream, self.bytes, self.stateful = {}, {}, 0, 0
        self.state = self.chain.state.copy()
        dropped: list[Transaction] = []
        height = self.height = self.chain.height + 1
        for e in old:  # still valid: keep the entry as it is (its item rows do not change)
            if self._recheck(e.tx, height, dropped):
                self._put(e, e.tx.txid, e.tx.size)
        now = time.time()
        for tx in returned:
            if tx.txid not in self.entries and self._recheck(tx, height, dropped):
                self._insert(tx, now)
        return dropped

    def _recheck(self, tx: Transaction, height: int, dropped: list[Transaction]) -> bool:
        try:
            self._apply(tx, height)
            return True
        except ChainmillError as e:
            log.info("dropping transaction %s from the mempool: %s", tx.txid.hex(), e)
            dropped.append(tx)
            return False

    def stream_items(self, stream_hex: str) -> list[ItemRow]:
        """The pooled items on a stream (its creation txid in hex), in pool order."""
        try:
            stream = bytes.fromhex(stream_hex)
        except ValueError:  # not a txid: no stream has it
            return []
        return [it for e in self.by_stream.get(stream, ()) for it in e.items
                if it.stream == stream_hex]
