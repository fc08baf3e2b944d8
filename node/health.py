"""/health: is the node live, and ready (store open, synced to its peers, miner state)?

`health_report` is pure: facts in, (HTTP status, JSON body) out. `health_facts` reads the
facts from a running node's context.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from ledger.errors import StoreError

log = logging.getLogger(__name__)

MINING = "mining"
PAUSED = "paused"
NOT_A_MINER = "not a miner"
WAITING_FOR_PEERS = "waiting for peers"

SYNC_TOLERANCE = 1
"""Blocks a ready node may be behind the best height its peers report (one block may be on
its way at any moment)."""


@dataclass(frozen=True, slots=True)
class HealthFacts:
    """What /health is computed from."""

    chain: str
    height: int
    store_error: str | None
    """None when the store answers; otherwise why it does not."""
    peers: int
    best_peer_height: int
    """The best height a connected peer reports; -1 without peers."""
    miner: str
    """MINING, PAUSED, NOT_A_MINER or WAITING_FOR_PEERS."""
    warmup: str | None = None
    """The dispatcher's warm-up status while the node is still starting."""


def health_report(facts: HealthFacts) -> tuple[int, dict[str, Any]]:
    """HTTP 200 with ready=true, or 503 (live but not ready) with the reasons."""
    reasons: list[str] = []
    if facts.store_error is not None:
        reasons.append(f"chain store not usable: {facts.store_error}")
    if facts.warmup is not None:
        reasons.append(f"starting: {facts.warmup}")
    if facts.height < 0:
        reasons.append("no block yet (waiting for the chain from a peer)")
    behind = facts.best_peer_height - facts.height
    synced = behind <= SYNC_TOLERANCE
    if not synced:
        reasons.append(f"behind peers by {behind} blocks (height {facts.height}, best peer "
                       f"height {facts.best_peer_height})")
    ready = not reasons
    body = {
        "live": True,
        "ready": ready,
        "reasons": reasons,
        "chain": facts.chain,
        "store": "open" if facts.store_error is None else "error",
        "height": facts.height,
        "peers": facts.peers,
        "best_peer_height": facts.best_peer_height,
        "synced": synced,
        "miner": facts.miner,
    }
    return (200 if ready else 503), body


def miner_state(ctx: Any) -> str:
    """What the miner does now: mining, paused, not a miner, or waiting for peers."""
    miner = ctx.miner
    if miner is None:
        return NOT_A_MINER  # gen=0 or offline
    chain = ctx.chain
    holders = set(chain.state.holders("mine", chain.height + 1))
    if not any(key.pubkey_hash in holders for key in ctx.wallet.keys()):
        return NOT_A_MINER
    if miner.paused:
        return PAUSED
    if miner.requires_peers and miner.peer_count() == 0 and chain.permitted_miners() > 1:
        return WAITING_FOR_PEERS
    return MINING


async def store_error(ctx: Any) -> str | None:
    """None when the chain store answers a query; otherwise the error."""
    try:
        await asyncio.to_thread(ctx.store.tip)
    except (StoreError, SQLAlchemyError, OSError) as exc:
        log.warning("health check: the chain store does not answer: %s", exc)
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


async def health_facts(ctx: Any, warmup: str | None = None) -> HealthFacts:
    """The facts of a running node."""
    net = ctx.network
    peers = net.ready_peers() if net is not None else []
    best = max((p.best_height for p in peers), default=-1)
    return HealthFacts(chain=ctx.chain_name, height=ctx.chain.height,
                       store_error=await store_error(ctx), peers=len(peers),
                       best_peer_height=best, miner=miner_state(ctx), warmup=warmup)
