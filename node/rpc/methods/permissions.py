"""Permissions: listpermissions, verifypermission, grant(from), revoke(from) (spec §2.5, §4)."""

from __future__ import annotations

from typing import Any

from consensus.rules import LOW_RISK, has_permission
from ledger.transactions import (
    GLOBAL_PERMS,
    NO_END,
    PERM_BITS,
    STREAM_PERMS,
    Permission,
    Transaction,
)
from node.rpc.dispatch import MethodTable
from node.rpc.errors import (
    RPC_INSUFFICIENT_PERMISSIONS,
    RPC_INVALID_PARAMETER,
    RPC_WALLET_ADDRESS_NOT_FOUND,
    RpcError,
)
from node.rpc.methods import register
from node.rpc.params import MAX_IDENTIFIERS, as_bool, as_int, given, identifier_list
from node.rpc.params import from_address as parse_from
from node.views import stream_for


def _bad(msg: str) -> RpcError:
    return RpcError(RPC_INVALID_PARAMETER, msg)


def parse_permissions(ctx: Any, text: Any) -> tuple[bytes, list[str]]:
    """(entity, names) from "connect,send" or "<stream>.write,admin"."""
    if not isinstance(text, str) or not text:
        raise _bad("Invalid permission")
    entity = b""
    scope = GLOBAL_PERMS
    if "." in text:
        ident, text = text.rsplit(".", 1)
        entity = ctx.resolve_stream(ident).createtxid
        scope = STREAM_PERMS
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in scope:
            raise _bad(f"Invalid permission: {n}")
    if not names:
        raise _bad("Invalid permission")
    return entity, list(dict.fromkeys(names))


def _addresses(ctx: Any, value: Any) -> list[bytes]:
    """Target addresses: a comma-delimited string; a repeated address is refused (-8)."""
    if not isinstance(value, str) or not value:
        raise _bad("addresses should be a comma-delimited string")
    if value.count(",") >= MAX_IDENTIFIERS:
        raise _bad(f"Too many addresses (at most {MAX_IDENTIFIERS} in one call)")
    out: list[bytes] = []
    for text in (a.strip() for a in value.split(",")):
        if not text:
            continue
        pkh = ctx.codec.decode(text)
        if pkh in out:
            raise _bad(f"Invalid parameter, duplicated address: {text}")
        out.append(pkh)
    return out


def _has_authority(ctx: Any, addr: bytes, entity: bytes, names: list[str]) -> bool:
    state, rules, h = ctx.mempool.state, ctx.chain.rules, ctx.chain.height + 1
    if not has_permission(state, rules, addr, "send", h):
        return False
    for n in names:
        if entity:
            if state.holds(addr, "admin", h, entity):
                continue
            if n in ("write", "read") and state.holds(addr, "activate", h, entity):
                continue
            return False
        if has_permission(state, rules, addr, "admin", h):
            continue
        if n in LOW_RISK and has_permission(state, rules, addr, "activate", h):
            continue
        return False
    return True


def change(ctx: Any, from_param: Any | None, p: list, *, revoke: bool) -> str:
    from_address = None if from_param is None else parse_from(from_param)
    targets = _addresses(ctx, p[0])
    entity, names = parse_permissions(ctx, p[1])
    amount = p[2] if given(p, 2) else 0
    if amount not in (0, 0.0) or isinstance(amount, bool):
        raise _bad("native-amount must be 0: this chain has no native currency")
    if revoke:
        start, end = 0, 0
    else:
        start = as_int(p[3], "start-block") if given(p, 3) else 0
        end = as_int(p[4], "end-block") if given(p, 4) else NO_END
        if end == -1:
            end = NO_END
        if not 0 <= start <= NO_END or not 0 <= end <= NO_END or start > end:
            raise _bad("Invalid block range")
    if from_address is not None:
        signer = ctx.codec.decode(from_address)
        if signer not in ctx.wallet:
            raise RpcError(RPC_WALLET_ADDRESS_NOT_FOUND,
                           "Private key for from-address is not found in this wallet")
        if not _has_authority(ctx, signer, entity, names):
            raise RpcError(RPC_INSUFFICIENT_PERMISSIONS,
                           "from-address does not have permission to change these permissions")
    else:
        signer = next((a for a in ctx.wallet.hashes()
                       if _has_authority(ctx, a, entity, names)), None)
        if signer is None:
            raise RpcError(RPC_INSUFFICIENT_PERMISSIONS,
                           "This wallet contains no addresses with permission to change "
                           "these permissions")
    bits = sum(PERM_BITS[n] for n in names)
    ops = [Permission(t, entity, bits, start, end) for t in targets]
    tx = Transaction.create(ctx.wallet.get(signer), ops, ctx.chain.chain_id, ctx.now())
    ctx.submit_tx(tx, local=True)
    return tx.txid.hex()


def _granting_admins(ctx: Any) -> dict[tuple[str, str, str], list[str]]:
    """(address, entity hex, permission) -> the admins whose grant put it in force.

    From the permission log: the admin of the last "set" and the admins whose votes for the
    same block range preceded it (MultiChain's verbose listpermissions `admins`).
    """
    votes: dict[tuple[str, str, str], dict[str, tuple[int, int]]] = {}
    out: dict[tuple[str, str, str], list[str]] = {}
    for r in ctx.store.perm_log():
        key = (r.address, r.entity, r.perm)
        if r.kind == "vote":
            votes.setdefault(key, {})[r.admin] = (r.start_block, r.end_block)
            continue
        earlier = votes.pop(key, {})
        rng = (r.start_block, r.end_block)
        out[key] = [a for a, v in earlier.items() if v == rng and a != r.admin] + [r.admin]
    return out


def register_methods(table: MethodTable, ctx: Any) -> None:
    def listpermissions(p: list) -> list:
        perm_text = p[0] if given(p, 0) else "*"
        entity_filter: bytes | None = b""
        names: list[str] | None
        if perm_text in ("*", "all"):
            names = None
            entity_filter = None
        elif isinstance(perm_text, str) and perm_text.endswith(".*"):
            entity_filter = ctx.resolve_stream(perm_text[:-2]).createtxid
            names = None
        else:
            entity_filter, names = parse_permissions(ctx, perm_text)
        addrs = identifier_list(p[1], "addresses") if given(p, 1) else None
        wanted = None if addrs is None else {ctx.codec.decode(a) for a in addrs}
        verbose = as_bool(p[2], "verbose") if given(p, 2) else False
        state = ctx.chain.state
        h = ctx.chain.height + 1
        anyone = ctx.chain.rules.anyone_can
        keys = set(state.perms) | (set(state.votes) if verbose else set())
        order = {n: i for i, n in enumerate(GLOBAL_PERMS + STREAM_PERMS)}
        rows = []
        for key in keys:
            addr, entity, perm = key
            if entity_filter is not None and entity != entity_filter:
                continue
            if names is not None and perm not in names:
                continue
            if wanted is not None and addr not in wanted:
                continue
            if not entity and perm in anyone:
                continue
            rng = state.perms.get(key)
            active = rng is not None and rng[0] <= h < rng[1]
            pending = state.votes.get(key) if verbose else None
            if not active and not pending:
                continue
            rows.append((entity, order[perm], ctx.codec.encode(addr), key, rng, pending))
        rows.sort(key=lambda r: (r[0], r[1], r[2]))
        granted_by = _granting_admins(ctx) if verbose else {}
        out = []
        for entity, _, address, key, rng, pending in rows:
            item: dict[str, Any] = {
                "address": address,
                "for": stream_for(state.streams.get(entity)) if entity else None,
                "type": key[2],
                "startblock": rng[0] if rng else 0,
                "endblock": rng[1] if rng else 0,
            }
            if verbose:
                item["admins"] = granted_by.get((address, entity.hex(), key[2]), [])
                groups: dict[tuple[int, int], list[str]] = {}
                for v in (pending or {}).values():
                    groups.setdefault((v.start, v.end), []).append(ctx.codec.encode(v.admin))
                item["pending"] = [
                    {"startblock": s, "endblock": e, "admins": a,
                     "required": _required(ctx, key[2]) - len(a)}
                    for (s, e), a in groups.items()]
            out.append(item)
        return out

    def _required(ctx: Any, perm: str) -> int:
        from consensus.diversity import required_votes
        from consensus.rules import CONSENSUS_PARAM

        rules = ctx.chain.rules
        h = ctx.chain.height + 1
        admins = 1 if "admin" in rules.anyone_can else len(ctx.chain.state.holders("admin", h))
        return required_votes(admins, rules.admin_consensus[CONSENSUS_PARAM.get(perm, "admin")],
                              h, rules.setup_first_blocks)

    def verifypermission(p: list) -> bool:
        if not isinstance(p[0], str):
            raise _bad("address should be a string")
        addr = ctx.codec.decode(p[0])
        perm = p[1]
        if perm not in GLOBAL_PERMS:
            raise _bad(f"Invalid permission: {perm}")
        return has_permission(ctx.chain.state, ctx.chain.rules, addr, perm,
                              ctx.chain.height + 1)

    handlers = {
        "listpermissions": listpermissions,
        "verifypermission": verifypermission,
        "grant": lambda p: change(ctx, None, p, revoke=False),
        "grantfrom": lambda p: change(ctx, p[0], p[1:], revoke=False),
        "revoke": lambda p: change(ctx, None, p, revoke=True),
        "revokefrom": lambda p: change(ctx, p[0], p[1:], revoke=True),
    }
    for name, fn in handlers.items():
        register(table, name, fn)
