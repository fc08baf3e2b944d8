"""Consensus rules for blocks: header linkage, time, size, Merkle root, miner, diversity, txs.

`connect_block` validates a block on top of a state and returns the new state and the effects
to store; the input state is never modified, so a refused block changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from consensus.diversity import violates_diversity
from consensus.rules import (
    NO_EFFECTS,
    PermChange,
    Rules,
    Unchanged,
    apply_genesis_grants,
    apply_tx,
    has_permission,
)
from consensus.state import ChainState, StreamInfo
from ledger.blocks import Block, BlockHeader, check_tx_count
from ledger.errors import ChainmillError, DecodeError, InvalidBlock, InvalidSignature
from ledger.transactions import Transaction, publishes_only
from ledger.types import ZERO_HASH

MAX_FUTURE_MS = 120_000
"""How far a block's time may run ahead of the validating node's clock."""

VerifyMany = Callable[[list[Transaction]], list[bool]]


def verify_sequential(chain_id: bytes) -> VerifyMany:
    """Signature verification on the calling thread (the node passes a parallel one)."""
    return lambda txs: [t.signature_valid(chain_id) for t in txs]


@dataclass(slots=True)
class BlockEffects:
    miner: bytes
    streams: list[StreamInfo]
    perm_log: list[PermChange]


def check_linkage(header: BlockHeader, prev: BlockHeader | None) -> None:
    if prev is None:
        if header.height != 0 or header.prev_hash != ZERO_HASH:
            raise InvalidBlock("genesis must have height 0 and no previous block")
        return
    if header.height != prev.height + 1:
        raise InvalidBlock(f"height {header.height} does not follow {prev.height}")
    if header.prev_hash != prev.hash:
        raise InvalidBlock("previous block hash does not match")


def check_time(header: BlockHeader, prev: BlockHeader | None, now_ms: int) -> None:
    if prev is not None and header.time_ms < prev.time_ms:
        raise InvalidBlock("block time is before its parent's")
    if header.time_ms > now_ms + MAX_FUTURE_MS:
        raise InvalidBlock("block time is too far in the future")


def check_body(block: Block, rules: Rules) -> list[bytes]:
    """Size, count, uniqueness and Merkle root; every tx's structure is checked by apply_tx.
    Returns the block's txids, in block order (the replay check asks about them next)."""
    try:
        check_tx_count(len(block.txs))
    except DecodeError as e:
        raise InvalidBlock(str(e)) from None
    if block.size > rules.max_block_size:
        raise InvalidBlock(f"block of {block.size} bytes exceeds maximum-block-size")
    txids = [t.txid for t in block.txs]
    if len(set(txids)) != len(txids):
        raise InvalidBlock("duplicate transaction in block")
    if not block.merkle_root_matches(txids):
        raise InvalidBlock("bad Merkle root")
    return txids


def check_miner(state: ChainState, rules: Rules, block: Block) -> bytes:
    """The recovered miner, who must hold mine at this height and respect diversity."""
    try:
        pub = block.miner_pubkey(rules.chain_id)
    except InvalidSignature as e:
        raise InvalidBlock(f"bad block signature: {e}") from None
    miner = block.miner_hash(rules.chain_id)
    h = block.height
    if h == 0:
        if pub != rules.genesis_pubkey:
            raise InvalidBlock("genesis is not signed by the chain's genesis key")
        return miner
    if not has_permission(state, rules, miner, "mine", h):
        raise InvalidBlock("block signed by an address without mine permission")
    miners = max(1, len(state.holders("mine", h)))
    if violates_diversity(h, state.last_mined.get(miner), miners, rules.mining_diversity,
                          rules.setup_first_blocks):
        raise InvalidBlock("block breaks the mining-diversity rule")
    return miner


def connect_block(state: ChainState, rules: Rules, block: Block, prev: BlockHeader | None,
                  now_ms: int, *, already_known: Callable[[Iterable[bytes]], set[bytes]],
                  verify_many: VerifyMany, preverified: set[bytes] | frozenset = frozenset(),
                  ) -> tuple[ChainState, BlockEffects]:
    """Validate `block` on top of `state`; return the state after it and what to store.

    `already_known(txids)` returns those txids already confirmed on this branch (replays);
    `preverified` holds txids whose signatures were checked on arrival (the mempool).

    The node's own block, submitted by its miner right after it applied each of the block's
    transactions with `apply_tx` on this very state at this height (`Block._applied_on`), has
    its publish-only transactions taken as they are: such a transaction changes no state and
    has no effects, so applying it again would ask the same questions of the same state and
    get the same answers. Its other transactions are applied (their effects are the block's),
    and so is every transaction of any other block.
    """
    header = block.header
    check_linkage(header, prev)
    check_time(header, prev, now_ms)
    txids = check_body(block, rules)
    miner = check_miner(state, rules, block)
    replays = already_known(txids)
    if replays:
        raise InvalidBlock(f"block repeats confirmed transaction {next(iter(replays)).hex()}")
    todo = [t for t in block.txs if t.txid not in preverified]
    if todo and not all(verify_many(todo)):
        raise InvalidBlock("a transaction signature does not verify")
    new = state.copy()
    effects = BlockEffects(miner, [], [])
    if header.height == 0:
        effects.perm_log.extend(apply_genesis_grants(new, miner, ZERO_HASH))
    applied = block._applied_on is state and header.height > 0
    offsets = block.tx_offsets()
    unchanged = Unchanged()  # one block, one height: permissions checked once until changed
    for tx, off in zip(block.txs, offsets, strict=True):
        if applied and publishes_only(tx.ops):
            continue  # applied on this very state by the miner (see above)
        try:
            fx = apply_tx(new, rules, tx, header.height, off, unchanged)
        except ChainmillError as e:
            raise InvalidBlock(f"invalid transaction {tx.txid.hex()}: {e}") from None
        if fx is not NO_EFFECTS:  # a publish-only tx has none
            effects.streams.extend(fx.streams)
            effects.perm_log.extend(fx.perm_log)
    new.height = header.height
    new.tip_hash = block.hash
    new.last_mined[miner] = header.height
    return new, effects
