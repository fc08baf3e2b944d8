"""The miner loop: produces a block every target-block-time when this node's turn comes.

It mines when there are transactions, and empty blocks only until mine-empty-rounds rounds of
empty blocks have passed (negative: never stop). Turn-taking follows consensus.mining; the
block itself is handed to the node, which validates and connects it like any other block.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from consensus.mining import mining_delay, mining_rank
from consensus.rules import Unchanged, apply_tx
from ledger.blocks import BLOCK_OVERHEAD, MAX_BLOCK_TXS, Block, tx_cost
from ledger.errors import ChainmillError
from ledger.transactions import Transaction, publishes_only
from node.chain import Chain
from node.mempool import Mempool
from node.wallet import Wallet

log = logging.getLogger(__name__)


class Miner:
    def __init__(self, chain: Chain, mempool: Mempool, wallet: Wallet,
                 submit: Callable[[Block], Awaitable[object]], *, turnover: float,
                 empty_rounds: float, requires_peers: bool,
                 peer_count: Callable[[], int] = lambda: 0) -> None:
        self.chain = chain
        self.mempool = mempool
        self.wallet = wallet
        self.submit = submit
        self.turnover = turnover
        self.empty_rounds = empty_rounds
        self.requires_peers = requires_peers
        self.peer_count = peer_count
        self.paused = False
        self.wakeup = asyncio.Event()
        self.empty_streak = 0
        self._tip: object = None
        self._since = 0.0

    def notify_tx(self) -> None:
        """A transaction arrived: wake an idle miner."""
        if not self.wakeup.is_set():
            self.wakeup.set()

    def _may_mine_empty(self) -> bool:
        if self.empty_rounds < 0:
            return True
        round_len = max(1, self.chain.permitted_miners())
        return self.empty_streak < self.empty_rounds * round_len

    async def run(self) -> None:
        tbt = self.chain.rules.target_block_time
        while True:
            tip = self.chain.tip_header
            if tip is None:  # a joining node waits for the chain to arrive
                await self._sleep_or_wake(tbt)
                continue
            if tip is not self._tip:
                self._tip, self._since = tip, time.time()
            rank = self._my_rank()
            if rank is None or self.paused:
                await self._sleep_or_wake(tbt)
                continue
            # Backup miners count their delay from when this node got the tip (or woke up
            # for a transaction), not from the tip's own timestamp: after a late block or an
            # idle spell every miner would otherwise be overdue at once and all mine (a fork
            # storm).
            due = max(tip.time_ms / 1000 + tbt, self._since) + mining_delay(rank, tbt)
            wait = due - time.time()
            if wait > 0:
                await self._sleep_or_wake(wait, wake_on_tx=False)
                if self.chain.tip_header is not tip or self.paused:
                    continue  # someone else's block arrived, or `pause mining`, meanwhile
            if not self.mempool.entries and not self._may_mine_empty():
                self.wakeup.clear()
                await self.wakeup.wait()
                self._since = time.time()
                continue
            if (self.requires_peers and self.peer_count() == 0
                    and self.chain.permitted_miners() > 1):
                await self._sleep_or_wake(tbt)
                continue
            await self.mine_one(rank)

    def _my_rank(self) -> int | None:
        best = None
        tip = self.chain.tip_header
        assert tip is not None
        for k in self.wallet.keys():
            r = mining_rank(self.chain.state, self.chain.rules, k.pubkey_hash, tip.height + 1,
                            tip.hash, self.turnover)
            if r is not None and (best is None or r < best):
                best = r
        return best

    async def mine_one(self, rank: int = 0) -> Block | None:
        tip = self.chain.tip_header
        assert tip is not None
        h = tip.height + 1
        key = None
        for k in self.wallet.keys():
            if mining_rank(self.chain.state, self.chain.rules, k.pubkey_hash, h, tip.hash,
                           self.turnover) is not None:
                key = k
                break
        if key is None:
            return None
        state = self.chain.state  # what _block_txs applies the transactions on
        txs = self._block_txs(h)
        t = max(int(time.time() * 1000), tip.time_ms)
        block = Block.build(key, self.chain.chain_id, h, tip.hash, t, txs)
        # Each of them was just applied on `state` at height h, in block order: connecting
        # the block on that same state need not apply its publish-only ones again.
        block._applied_on = state
        try:
            await self.submit(block)
        except Exception:  # noqa: BLE001 - the outermost loop of the miner logs and goes on
            log.exception("mined block %d was refused", h)
            return None
        finally:
            # The mark served this connect; the block lives on (peers are served it from the
            # recent blocks), and need not keep that old state alive with it.
            block._applied_on = None
        self.empty_streak = 0 if txs else self.empty_streak + 1
        log.debug("mined block %d with %d transactions (rank %d)", h, len(txs), rank)
        return block

    def _block_txs(self, height: int) -> list[Transaction]:
        """The pooled transactions for the block at `height`, re-checked with the block checks.

        Each is applied with consensus's `apply_tx` (structure, limits, permissions, state) on
        a scratch copy of the tip's state, in block order, and the list is bounded by the same
        size and count rules the block decoder and `check_body` apply, so the block cannot be
        refused because of a transaction. One that fails is dropped from the pool: keeping it
        would make every later block fail the same way and halt the chain.

        As connect_block, the checks keep one `Unchanged` for the block: a sender's send
        permission and its write permission on a stream are looked up once until an
        operation changes the state, not for every transaction."""
        rules = self.chain.rules
        budget = rules.max_block_size - BLOCK_OVERHEAD
        scratch = self.chain.state.copy()
        unchanged = Unchanged()
        out: list[Transaction] = []
        bad: set[bytes] = set()
        size = 0
        for tx in self.mempool.take(budget):
            cost = tx_cost(tx)
            if size + cost > budget or len(out) >= MAX_BLOCK_TXS:
                break
            try:
                if publishes_only(tx.ops):
                    apply_tx(scratch, rules, tx, height, 0, unchanged)  # changes no state
                else:
                    trial = scratch.copy()
                    apply_tx(trial, rules, tx, height, 0, unchanged)
                    scratch = trial
            except ChainmillError as e:
                # What `unchanged` learnt from a refused transaction may describe the trial
                # state just thrown away: start again from nothing known.
                unchanged = Unchanged()
                log.warning("miner: dropping transaction %s that a block may not hold: %s",
                            tx.txid.hex(), e)
                bad.add(tx.txid)
                continue
            out.append(tx)
            size += cost
        if bad:
            # `readmit` rebuilds the pool on the tip without the given txids.
            self.mempool.readmit([], confirmed=bad)
        return out

    async def _sleep_or_wake(self, seconds: float, wake_on_tx: bool = True) -> None:
        if not wake_on_tx:
            await asyncio.sleep(seconds)
            return
        self.wakeup.clear()
        try:
            await asyncio.wait_for(self.wakeup.wait(), timeout=seconds)
        except TimeoutError:
            pass
