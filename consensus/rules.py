"""Consensus rules for transactions: one function per rule, read first and run second.

`apply_tx` checks a transaction against a scratch `ChainState` at a height, applies its effects
to that state and returns them for the store. Every failure raises (InvalidTransaction,
PermissionDenied, DuplicateName) and the caller throws the scratch state away.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from consensus.diversity import required_votes
from consensus.state import ChainState, StreamInfo, Vote
from ledger.blocks import BLOCK_OVERHEAD, varint_size
from ledger.errors import DuplicateName, InvalidTransaction, PermissionDenied
from ledger.transactions import (
    GLOBAL_PERMS,
    NO_END,
    PERM_BITS,
    STREAM_PERMS,
    CreateStream,
    Permission,
    Publish,
    Transaction,
    check_structure,
)

# Who may change what (spec §4.2): low-risk global permissions need activate (admin implies
# it) and no vote; the others need admin and admin consensus.
LOW_RISK = frozenset({"connect", "send", "receive", "low1", "low2", "low3"})
CONSENSUS_PARAM = {
    "admin": "admin", "activate": "activate", "mine": "mine", "create": "create",
    "issue": "issue", "high1": "admin", "high2": "admin", "high3": "admin",
}


@dataclass(frozen=True, slots=True)
class Rules:
    """The consensus-relevant chain parameters, as plain values."""

    chain_id: bytes
    anyone_can: frozenset[str]
    admin_consensus: Mapping[str, float]
    setup_first_blocks: int
    mining_diversity: float
    max_block_size: int
    max_tx_size: int
    max_items_per_tx: int
    max_item_size: int
    genesis_pubkey: bytes
    root_stream_name: str
    root_stream_open: bool
    target_block_time: float

    @classmethod
    def from_params(cls, params: Mapping, chain_id: bytes) -> Rules:
        def g(name: str):  # noqa: ANN202 - thin accessor over the params mapping
            return params[name]

        anyone = frozenset(
            p for p in ("connect", "send", "receive", "issue", "create", "mine", "activate", "admin")
            if g(f"anyone-can-{p}")
        )
        consensus = {p: float(g(f"admin-consensus-{p}"))
                     for p in ("admin", "activate", "mine", "create", "issue")}
        pub = g("genesis-pubkey") or b""
        return cls(
            chain_id=chain_id,
            anyone_can=anyone,
            admin_consensus=consensus,
            setup_first_blocks=int(g("setup-first-blocks")),
            mining_diversity=float(g("mining-diversity")),
            max_block_size=int(g("maximum-block-size")),
            max_tx_size=int(g("max-std-tx-size")),
            max_items_per_tx=int(g("max-std-op-returns-count")),
            max_item_size=int(g("max-std-op-return-size")),
            genesis_pubkey=bytes.fromhex(pub) if isinstance(pub, str) else bytes(pub),
            root_stream_name=g("root-stream-name") or "",
            root_stream_open=bool(g("root-stream-open")),
            target_block_time=float(g("target-block-time")),
        )


@dataclass(frozen=True, slots=True)
class PermChange:
    """A row of the permission log: a vote, or a change that reached consensus ('set')."""

    kind: str
    address: bytes
    entity: bytes
    perm: str
    start: int
    end: int
    admin: bytes
    time: int
    txid: bytes
    height: int


@dataclass(slots=True)
class TxEffects:
    streams: list[StreamInfo]
    perm_log: list[PermChange]


NO_EFFECTS = TxEffects((), ())  # type: ignore[arg-type]
"""What `apply_tx` returns for a transaction of Publish ops only, which has no effects: one
shared value instead of a new TxEffects per transaction (making one cost about 2k
instructions, for every synced, relayed and mined transaction). Its tuples cannot be added
to, so nobody can give the shared value effects."""


def has_permission(state: ChainState, rules: Rules, address: bytes, perm: str, height: int,
                   entity: bytes = b"") -> bool:
    """Effective permission: open to anyone by parameter, or explicitly granted at height."""
    if not entity and perm in rules.anyone_can:
        return True
    return state.holds(address, perm, height, entity)


def check_tx_limits(tx: Transaction, rules: Rules) -> None:
    """Context-free limits: the encoding's structural limits (the same function the decoder
    applies, so whatever passes here decodes again), then the chain's size and count limits.

    They depend on the transaction and the rules only, so a pass is remembered on the
    transaction for these rules: mempool admission, the miner's re-check and connect_block
    check one transaction of this node once, not three times."""
    if tx._limits_of is rules:
        return
    if not tx._checked:  # check_structure's own memo, read without the call (set on decode)
        check_structure(tx)
    size = tx.size
    if size > rules.max_tx_size:
        raise InvalidTransaction(f"transaction of {size} bytes exceeds max-std-tx-size")
    # tx_cost(tx) with the size just read: every synced transaction passes here once, and
    # the two calls cost about a sixth of this check.
    if size + varint_size(size) > rules.max_block_size - BLOCK_OVERHEAD:
        # max-std-tx-size may exceed maximum-block-size; such a tx would wait at the head of
        # the mempool for a block it can never fit in, and no later tx would be mined.
        raise InvalidTransaction(
            f"transaction of {size} bytes does not fit in a block (maximum-block-size)")
    items = 0
    for op in tx.ops:
        if isinstance(op, Publish):
            items += 1
            if len(op.data) > rules.max_item_size:
                raise InvalidTransaction("item data exceeds max-std-op-return-size")
    if items > rules.max_items_per_tx:
        raise InvalidTransaction(
            f"{items} items in one transaction exceed max-std-op-returns-count "
            f"({rules.max_items_per_tx})"
        )
    tx._limits_of = rules


def streamref_for(height: int, offset: int, txid: bytes) -> str:
    """MultiChain-style stream reference: block height, byte offset of the tx, txid prefix.

    The root stream, created in the genesis block, is "0-0-0" as in MultiChain.
    """
    if height == 0:
        return "0-0-0"
    return f"{height}-{offset}-{int.from_bytes(txid[:2], 'little')}"


@dataclass(slots=True)
class Unchanged:
    """Permission checks passed on a state since it last changed, at one height: the senders
    found to hold send and the (sender, stream) pairs found writable.

    A Publish changes nothing in the state, so such a check gives the same answer for every
    later item until a create or permission op changes the state; `apply_tx` then forgets
    them. `connect_block` passes one for a whole block (its transactions are all applied at
    the block's height), so a block of one sender's items checks its permissions once.
    It describes one state: whoever throws a state away after a failed transaction throws
    its Unchanged away too (a block with an invalid transaction is refused whole)."""

    senders: set[bytes] = field(default_factory=set)
    writable: set[tuple[bytes, bytes]] = field(default_factory=set)

    def clear(self) -> None:
        self.senders.clear()
        self.writable.clear()


def apply_tx(state: ChainState, rules: Rules, tx: Transaction, height: int,
             offset: int | None = None, unchanged: Unchanged | None = None) -> TxEffects:
    """Check `tx` at `height` against `state`, apply it to `state`, return its effects.

    `offset` is the tx's byte offset in its block (None in the mempool: streams created by a
    pending tx get their reference when mined). `unchanged`: the checks already passed on
    `state` at `height` by earlier transactions (kept up to date here); by default, none.
    """
    if unchanged is None:
        unchanged = Unchanged()
    sender = tx.sender_hash
    if sender not in unchanged.senders:
        if not has_permission(state, rules, sender, "send", height):
            raise PermissionDenied("the sending address has no send permission")
        unchanged.senders.add(sender)
    check_tx_limits(tx, rules)
    effects = NO_EFFECTS  # until an op that has effects
    writable = unchanged.writable
    for op in tx.ops:
        if isinstance(op, Publish):
            if (sender, op.stream) not in writable:
                _apply_publish(state, rules, sender, op, height)
                writable.add((sender, op.stream))
        else:
            if effects is NO_EFFECTS:
                effects = TxEffects([], [])
            unchanged.clear()
            if isinstance(op, CreateStream):
                _apply_create(state, rules, tx, op, height, offset, effects)
            else:
                _apply_permission(state, rules, tx, op, height, effects)
    return effects


def _apply_publish(state: ChainState, rules: Rules, sender: bytes, op: Publish,
                   height: int) -> None:
    info = state.streams.get(op.stream)
    if info is None:
        raise InvalidTransaction("publish to a stream that does not exist")
    if info.restrict & 1 and not state.holds(sender, "write", height, op.stream):
        raise PermissionDenied(f"no write permission on stream {info.name or info.streamref}")


def _apply_create(state: ChainState, rules: Rules, tx: Transaction, op: CreateStream,
                  height: int, offset: int | None, effects: TxEffects) -> None:
    sender = tx.sender_hash
    if not has_permission(state, rules, sender, "create", height):
        raise PermissionDenied("the sending address has no create permission")
    if op.name and op.name.lower() in state.stream_names:
        raise DuplicateName(f"Stream, asset or upgrade with this name already exists: {op.name}")
    txid = tx.txid
    if txid in state.streams:
        raise InvalidTransaction("a transaction may create one stream")
    ref = streamref_for(height, offset, txid) if offset is not None else ""
    info = StreamInfo(txid, op.name, op.restrict, op.salted, op.details, sender, height, ref)
    state.streams[txid] = info
    if op.name:
        state.stream_names[op.name.lower()] = txid
    effects.streams.append(info)
    # The creator holds admin, activate and write on its stream (spec §9, open point 7).
    for perm in ("admin", "activate", "write"):
        change = PermChange("set", sender, txid, perm, 0, NO_END, sender, tx.time, txid, height)
        _set(state, change)
        effects.perm_log.append(change)


def _set(state: ChainState, c: PermChange) -> None:
    key = (c.address, c.entity, c.perm)
    if c.start == 0 and c.end == 0:
        state.perms.pop(key, None)
    else:
        state.perms[key] = (c.start, c.end)
    state.votes.pop(key, None)


def _apply_permission(state: ChainState, rules: Rules, tx: Transaction, op: Permission,
                      height: int, effects: TxEffects) -> None:
    signer = tx.sender_hash
    if op.start > op.end:
        raise InvalidTransaction("permission start block is after its end block")
    if op.entity:
        if op.entity not in state.streams:
            raise InvalidTransaction("permission for a stream that does not exist")
        scope = STREAM_PERMS
    else:
        scope = GLOBAL_PERMS
    names = [p for p in scope if op.perms & PERM_BITS[p]]
    if not names or sum(PERM_BITS[p] for p in names) != op.perms:
        raise InvalidTransaction("permission bits outside the entity's permission set")
    for perm in names:
        base = PermChange("set", op.address, op.entity, perm, op.start, op.end, signer,
                          tx.time, tx.txid, height)
        if op.entity:
            _check_stream_authority(state, signer, op.entity, perm, height)
            _set(state, base)
            effects.perm_log.append(base)
        elif perm in LOW_RISK:
            if not (has_permission(state, rules, signer, "activate", height)
                    or has_permission(state, rules, signer, "admin", height)):
                raise PermissionDenied(f"changing {perm} needs activate or admin permission")
            _set(state, base)
            effects.perm_log.append(base)
        else:
            _vote(state, rules, base, height, effects)


def _check_stream_authority(state: ChainState, signer: bytes, entity: bytes, perm: str,
                            height: int) -> None:
    if state.holds(signer, "admin", height, entity):
        return
    if perm in ("write", "read") and state.holds(signer, "activate", height, entity):
        return
    raise PermissionDenied(f"changing stream {perm} needs the stream's admin permission")


def _vote(state: ChainState, rules: Rules, change: PermChange, height: int,
          effects: TxEffects) -> None:
    """An admin's vote on a high-risk global permission; applied once enough admins agree."""
    if not has_permission(state, rules, change.admin, "admin", height):
        raise PermissionDenied(f"changing {change.perm} needs admin permission")
    admins = state.holders("admin", height)
    count = 1 if "admin" in rules.anyone_can else len(admins)
    consensus = rules.admin_consensus[CONSENSUS_PARAM[change.perm]]
    need = required_votes(count, consensus, height, rules.setup_first_blocks)
    key = (change.address, change.entity, change.perm)
    votes = dict(state.votes.get(key, {}))
    previous = votes.get(change.admin)
    if previous is None or previous.time <= change.time:
        votes[change.admin] = Vote(change.admin, change.start, change.end, change.time)
    agreeing = [a for a, v in votes.items()
                if v.start == change.start and v.end == change.end
                and (a in admins or "admin" in rules.anyone_can)]
    if len(agreeing) >= need:
        _set(state, change)
        effects.perm_log.append(change)
    else:
        state.votes[key] = votes
        effects.perm_log.append(
            PermChange("vote", change.address, change.entity, change.perm, change.start,
                       change.end, change.admin, change.time, change.txid, height)
        )


def apply_genesis_grants(state: ChainState, admin: bytes, txid: bytes) -> list[PermChange]:
    """The genesis address receives every regular global permission (spec §4.1)."""
    out = []
    for perm in ("connect", "send", "receive", "issue", "create", "mine", "activate", "admin"):
        c = PermChange("set", admin, b"", perm, 0, NO_END, admin, 0, txid, 0)
        _set(state, c)
        out.append(c)
    return out


def replay_perm_log(state: ChainState, log: list[PermChange]) -> None:
    """Rebuild permissions and pending votes from the stored log (restart, rollback)."""
    for c in log:
        if c.kind == "set":
            _set(state, c)
        else:
            key = (c.address, c.entity, c.perm)
            votes = dict(state.votes.get(key, {}))
            previous = votes.get(c.admin)
            # The same rule as _vote: an admin's older vote confirmed after a newer one
            # does not replace it.
            if previous is None or previous.time <= c.time:
                votes[c.admin] = Vote(c.admin, c.start, c.end, c.time)
            state.votes[key] = votes
