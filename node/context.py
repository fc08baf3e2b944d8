"""What the RPC handlers, the miner and the P2P layer share: the node's parts and its events.

Built once by the composition root (node/app.py) and passed down; there are no globals.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

from consensus.state import StreamInfo
from ledger.addresses import AddressCodec
from ledger.blocks import Block
from ledger.errors import ChainmillError, EntityNotFound
from ledger.transactions import CreateStream, Permission, Publish, Transaction
from node.chain import Chain, Checked, Connected, ConnectedMany
from node.hooks import HookRunner
from node.journal import OwnTxJournal
from node.mempool import Mempool, PoolEntry
from node.rpc.errors import RPC_INVALID_PARAMETER, RPC_NOT_SUBSCRIBED, RpcError
from node.views import ChainFacts
from node.wallet import Wallet

log = logging.getLogger(__name__)
T = TypeVar("T")

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_STREAMREF = re.compile(r"^\d+-\d+-\d+$")
ZERO_HASH_HEX = "0" * 64
HASH_CACHE_MAX = 10_000
"""Block hashes by height kept in memory for item views (a bounded cache: ~2 MiB; older
heights are read from the store again)."""


class NodeContext:
    def __init__(self, *, chain_name: str, chain_dir: Path, params: Mapping, runtime: Any,
                 chain: Chain, mempool: Mempool, wallet: Wallet, hooks: HookRunner,
                 codec: AddressCodec, version: str) -> None:
        self.chain_name = chain_name
        self.chain_dir = chain_dir
        self.params = params
        self.runtime = runtime
        self.chain = chain
        self.mempool = mempool
        self.wallet = wallet
        self.hooks = hooks
        self.codec = codec
        self.version = version
        self.store = chain.store
        self.subscriptions: set[str] = chain.store.subscriptions()
        self.miner: Any = None
        self.network: Any = None
        self.journal: OwnTxJournal | None = None
        """The own-transaction journal (set by the composition root; None in unit tests)."""
        self.tip_marker: Any = None
        """node.integrity.TipMarker: the best height reached, kept beside the store."""
        """The own-transaction journal (set by the composition root; None in unit tests)."""
        self.metrics: Any = None
        """node.metrics.NodeMetrics (set by the composition root; None in unit tests)."""
        self.stopping = asyncio.Event()
        self.paused: set[str] = set()
        self.started = time.time()
        self.settings: dict[str, Any] = {}
        self._hash_cache: dict[int, str] = {}
        self._connect_lock = asyncio.Lock()
        self.consistent = asyncio.Event()
        """Set while the store, the chain state and the mempool agree. A block's store commit
        runs on a worker thread and the mempool drops its transactions on the loop afterwards;
        in between a reader would see the block's items both confirmed and pending, so the RPC
        dispatcher waits for this before it runs a method (one gate, not a filter per method)."""
        self.consistent.set()
        self.wants_wallet_events = bool(runtime.walletnotify or runtime.walletnotifynew)

    # -- small facts --------------------------------------------------------------------------
    def setting(self, name: str) -> Any:
        """A runtime parameter, with live `setruntimeparam` changes taking precedence."""
        if name in self.settings:
            return self.settings[name]
        return getattr(self.runtime, name)

    def hash_at(self, height: int) -> str:
        h = self._hash_cache.get(height)
        if h is None:
            row = self.store.block_row(height)
            h = row.hash if row else ZERO_HASH_HEX
            if row:
                self._remember_hash(height, h)
        return h

    def _remember_hash(self, height: int, hash_hex: str) -> None:
        cache = self._hash_cache
        if len(cache) >= HASH_CACHE_MAX and height not in cache:
            del cache[next(iter(cache))]  # the oldest entry
        cache[height] = hash_hex

    def facts(self) -> ChainFacts:
        return ChainFacts(self.chain.height, self.chain.final_depth(),
                          int(self.setting("maxshowndata")), self.hash_at)

    # -- streams ------------------------------------------------------------------------------
    def resolve_stream(self, ident: Any) -> StreamInfo:
        """A stream by name (case-insensitive), streamref or creation txid, pending included."""
        if not isinstance(ident, str) or not ident:
            raise RpcError(RPC_INVALID_PARAMETER, "Invalid stream identifier")
        state = self.mempool.state
        # The patterns only where they can match (a name is the usual identifier): a txid
        # has 64 characters, a stream reference dashes.
        if len(ident) >= 64 and _HEX64.match(ident):
            info = state.streams.get(bytes.fromhex(ident))
            if info is None:
                raise EntityNotFound(f"Stream with this txid not found: {ident}")
            return info
        if "-" in ident and _STREAMREF.match(ident):
            for info in state.streams.values():
                if info.streamref == ident:
                    return info
            raise EntityNotFound(f"Stream with this stream reference not found: {ident}")
        info = state.stream_by_name(ident)
        if info is None:
            raise EntityNotFound(f"Stream with this name not found: {ident}")
        return info

    def is_subscribed(self, info: StreamInfo) -> bool:
        return info.createtxid.hex() in self.subscriptions

    def readable_stream(self, ident: Any) -> StreamInfo:
        info = self.resolve_stream(ident)
        if not self.is_subscribed(info):
            raise RpcError(RPC_NOT_SUBSCRIBED, "Not subscribed to this stream")
        return info

    def subscribe(self, txid_hex: str) -> None:
        if txid_hex not in self.subscriptions:
            self.store.set_subscribed(txid_hex, True)
            self.subscriptions.add(txid_hex)

    def unsubscribe(self, txid_hex: str) -> None:
        if txid_hex in self.subscriptions:
            self.store.set_subscribed(txid_hex, False)
            self.subscriptions.discard(txid_hex)

    # -- transactions -------------------------------------------------------------------------
    def now(self) -> int:
        return int(time.time())

    def submit_tx(self, tx: Transaction, *, local: bool, verified: bool | None = None,
                  relay: bool = True, not_in_chain: bool = False) -> PoolEntry:
        """Admit a transaction to the mempool, wake the miner, tell peers and hooks."""
        entry = self.mempool.add(tx, verified=local if verified is None else verified,
                                 local=local, not_in_chain=not_in_chain)
        if local:
            if self.journal is not None:
                self.journal.append(tx.txid, tx.raw)
            self._auto_subscribe_created(tx)
        if self.miner is not None:
            self.miner.notify_tx()
        if relay and self.network is not None:
            self.network.announce_tx(tx)
        if self.wants_wallet_events:
            self._wallet_event(tx, first_seen=True, height=-1, blockhash=ZERO_HASH_HEX)
        return entry

    async def own_txs_durable(self) -> None:
        """Wait until every transaction this node has made so far is fsynced to its journal.
        The RPC dispatcher awaits this before each reply, so a txid is returned only once
        its transaction is on disk (group commit across concurrent calls and batches)."""
        if self.journal is not None:
            await self.journal.sync()

    def _auto_subscribe_created(self, tx: Transaction) -> None:
        for op in tx.ops:
            if isinstance(op, CreateStream) and tx.sender_hash in self.wallet:
                self.subscribe(tx.txid.hex())

    # -- blocks -------------------------------------------------------------------------------
    async def connect_block(self, block: Block, preverified: set[bytes] | None = None,
                            ) -> Connected:
        """Validate and append a block (from the miner or a peer) and run its consequences."""
        async with self._connect_lock:
            # Checking reads the tip and changes nothing, so RPC methods go on meanwhile (every
            # call used to wait through a big block's check: a quarter to a third of its
            # connect); the gate closes for the store commit and the mempool update only.
            start = time.perf_counter()
            checked = await self._check(block, preverified)
            self.consistent.clear()
            try:
                return await _to_the_end(self._commit(checked, start))
            finally:
                self.consistent.set()

    async def _connect_unlocked(self, block: Block, preverified: set[bytes] | None) -> Connected:
        start = time.perf_counter()
        return await self._commit(await self._check(block, preverified), start)

    async def _check(self, block: Block, preverified: set[bytes] | None) -> Checked:
        # A pooled txid is not on the chain (the mempool refuses confirmed txids and drops
        # those a block confirms, and the chain changes only under the connect lock), so the
        # block's replay check asks the store about the others only: for a block of this
        # node's own pool, no query at all.
        entries = self.mempool.entries
        unconfirmed: set[bytes] = set()
        checked: set[bytes] = set()
        for t in block.txs:  # one pass: this runs for every transaction of every block
            txid = t.txid
            e = entries.get(txid)
            if e is not None:
                unconfirmed.add(txid)
                # A pooled tx counts as checked only if the block carries the same signature
                # (the very object, in a block of the node's own pool).
                if e.tx is t or e.tx.signature == t.signature:
                    checked.add(txid)
        if preverified is None:
            preverified = checked
        return await asyncio.to_thread(self.chain.check, block, preverified, unconfirmed)

    async def _commit(self, checked: Checked, start: float) -> Connected:
        block = checked.block
        connected = await asyncio.to_thread(self.chain.commit, checked)
        if self.metrics is not None:
            self.metrics.observe_block(len(block.txs), time.perf_counter() - start)
        self.after_connect(connected)
        return connected

    async def connect_blocks(self, blocks: list[Block], preverified: list[set[bytes]]
                             ) -> ConnectedMany:
        """Validate and append consecutive blocks (initial sync) in one store transaction,
        up to the first invalid one, and run the consequences of each connected block."""
        async with self._connect_lock:
            self.consistent.clear()
            try:
                return await _to_the_end(self._connect_many(blocks, preverified))
            finally:
                self.consistent.set()

    async def _connect_many(self, blocks: list[Block], preverified: list[set[bytes]]
                            ) -> ConnectedMany:
        start = time.perf_counter()
        done = await asyncio.to_thread(self.chain.connect_many, blocks, preverified)
        if self.metrics is not None and done.connected:
            spent = (time.perf_counter() - start) / len(done.connected)
            for c in done.connected:
                self.metrics.observe_block(len(c.block.txs), spent)
        for c in done.connected:
            self.after_connect(c)
        return done

    async def reorganise(self, fork_height: int, branch: list[Block]
                         ) -> tuple[bool, list[Block]]:
        """Switch to `branch` (blocks above fork_height). On an invalid branch the old blocks
        are restored and False is returned. Transactions of the abandoned blocks that the new
        branch does not contain go back to the mempool when still valid."""
        async with self._connect_lock:
            self.consistent.clear()
            try:
                return await _to_the_end(self._reorganise_unlocked(fork_height, branch))
            finally:
                self.consistent.set()

    async def _reorganise_unlocked(self, fork_height: int, branch: list[Block]
                                   ) -> tuple[bool, list[Block]]:
        removed = await asyncio.to_thread(self.chain.rollback_to, fork_height)
        self.forget_hashes_above(fork_height)
        connected: list[Block] = []
        try:
            for b in branch:
                await self._connect_unlocked(b, None)
                connected.append(b)
        except ChainmillError as e:
            log.warning("reorganisation failed (%s); restoring the previous branch", e)
            await asyncio.to_thread(self.chain.rollback_to, fork_height)
            self.forget_hashes_above(fork_height)
            for b in removed:
                await self._connect_unlocked(b, None)
            # The branch blocks that did connect took their transactions out of the pool and
            # the journal; those the restored blocks do not hold are unconfirmed again.
            self._return_to_pool(connected, removed)
            return False, []
        if self.metrics is not None:
            self.metrics.observe_reorg(len(removed))
        returned, dropped = self._return_to_pool(removed, branch)
        if self.tip_marker is not None:
            self.tip_marker.write(self.chain.height, self.chain.state.tip_hash.hex())
        log.info("reorganisation done: tip %d, %d transactions returned to the mempool, "
                 "%d no longer valid", self.chain.height, len(returned) - len(dropped),
                 len(dropped))
        return True, removed

    def _return_to_pool(self, left: list[Block], chain: list[Block]
                        ) -> tuple[list[Transaction], list[Transaction]]:
        """After a reorganisation (or a failed one): the transactions of the blocks `left`
        behind that the blocks now on the chain do not contain go back to the mempool when
        still valid; the node's own are journaled again (the next group commit fsyncs them)
        and all are announced. Returns (returned, no longer valid)."""
        kept = {t.txid for b in chain for t in b.txs}
        returned = [t for b in left for t in b.txs if t.txid not in kept]
        dropped = self.mempool.readmit(returned)
        gone = {t.txid for t in dropped}
        if self.journal is not None:  # own txs unconfirmed again: journal them again
            for tx in returned:
                if tx.sender_hash in self.wallet and tx.txid not in gone:
                    self.journal.append(tx.txid, tx.raw)
        if self.network is not None:
            for tx in returned:
                if tx.txid not in gone:
                    self.network.announce_tx(tx)
        return returned, dropped

    def after_connect(self, connected: Connected) -> None:
        block = connected.block
        self._remember_hash(block.height, block.hash.hex())
        if self.tip_marker is not None:
            self.tip_marker.write(block.height, block.hash.hex())
        if self.wants_wallet_events:  # read before on_connected forgets the block's txids
            seen = self.mempool.seen
            seen_before = {t.txid for t in block.txs if t.txid in seen}
        self.mempool.on_connected(connected)
        if self.journal is not None:
            self.journal.confirmed(t.txid for t in block.txs)
        autosub = "streams" in str(self.setting("autosubscribe") or "")
        for s in connected.effects.streams:
            # Every node follows the root stream, as in MultiChain; others by choice.
            if autosub or s.creator in self.wallet or s.height == 0:
                self.subscribe(s.createtxid.hex())
        if self.wants_wallet_events:
            bh = block.hash.hex()
            for tx in block.txs:
                self._wallet_event(tx, first_seen=tx.txid not in seen_before,
                                   height=block.height, blockhash=bh)
        asyncio.get_running_loop().create_task(self.hooks.block_event(block.hash.hex()))
        if self.network is not None:
            self.network.announce_block(block)

    def forget_hashes_above(self, height: int) -> None:
        for h in [h for h in self._hash_cache if h > height]:
            del self._hash_cache[h]

    # -- hooks --------------------------------------------------------------------------------
    def _wallet_event(self, tx: Transaction, *, first_seen: bool, height: int,
                      blockhash: str) -> None:
        addresses: list[str] = []
        entities: list[str] = []
        if tx.sender_hash in self.wallet:
            addresses.append(self.codec.encode(tx.sender_hash))
        for op in tx.ops:
            if isinstance(op, Permission) and op.address in self.wallet:
                a = self.codec.encode(op.address)
                if a not in addresses:
                    addresses.append(a)
            elif isinstance(op, Publish) and op.stream.hex() in self.subscriptions:
                e = op.stream.hex()
                if e not in entities:
                    entities.append(e)
        if not addresses and not entities:
            return
        from node.rpc.methods.blocks import tx_view  # a view, not a dependency of the core

        asyncio.get_running_loop().create_task(self.hooks.wallet_event(
            txid=tx.txid.hex(), first_seen=first_seen, height=height, blockhash=blockhash,
            raw_hex=tx.raw.hex(), addresses=addresses, entities=entities,
            chain=self.chain_name, tx_json=tx_view(self, tx, verbose_extra=False)))


async def _to_the_end(change: Coroutine[Any, Any, T]) -> T:
    """Await a change of the chain to its end even if the awaiting task is cancelled meanwhile,
    then pass the cancellation on.

    The change runs its store work in a thread, which cancelling cannot stop. Were the
    cancellation to go through at once, the connect lock and the RPC gate would be released
    while that thread still writes: a second connect could run beside it, a reader could see
    a half-applied block, a shutdown could close the store under it, and the block's
    consequences (the mempool and the journal told of its transactions) would be skipped.
    `addnode … remove` cancels a peer's task, and a shutdown cancels them all, at any point."""
    task = asyncio.ensure_future(change)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():  # the change itself was cancelled (the loop is closing)
                raise
            cancelled = True  # wait on: the change goes on regardless
            continue
        if cancelled:
            raise asyncio.CancelledError
        return result
