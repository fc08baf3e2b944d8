"""Streams: create, liststreams, publish*, subscribe, and the item readers (spec §2.6)."""

from __future__ import annotations

import re
from typing import Any

import orjson

from consensus.rules import Rules, has_permission
from consensus.state import ChainState, StreamInfo
from ledger.store import ItemRow
from ledger.transactions import (
    RESTRICT_OFFCHAIN,
    RESTRICT_ONCHAIN,
    RESTRICT_READ,
    RESTRICT_WRITE,
    CreateStream,
    DataFormat,
    Transaction,
    new_publish,
)
from node.rpc.dispatch import MethodTable
from node.rpc.errors import (
    RPC_INSUFFICIENT_PERMISSIONS,
    RPC_INVALID_PARAMETER,
    RPC_NOT_ALLOWED,
    RPC_NOT_SUPPORTED,
    RPC_TX_NOT_FOUND,
    RPC_WALLET_ADDRESS_NOT_FOUND,
    RpcError,
)
from node.rpc.methods import register
from node.rpc.methods.blocks import parse_block_set
from node.rpc.params import MAX_COUNT, as_bool, as_count, as_int, given, identifier_list, window
from node.rpc.params import from_address as parse_from
from node.views import details_view, item_view, restrict_view

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})*$")
_STREAMREF = re.compile(r"^\d+-\d+-\d+$")
MAX_KEY_BYTES = 256
STREAM_INDEXES = ("items", "keys", "publishers", "items-local", "keys-local",
                  "publishers-local")
"""The indexes MultiChain 2.3 lists for a stream subscribed with all of them."""
_ITEM_FIELDS = frozenset({"for", "key", "keys", "data", "options"})
"""The fields an item of publishmulti may have."""
_RESTRICT_WORDS = {"write": RESTRICT_WRITE, "read": RESTRICT_READ,
                   "onchain": RESTRICT_ONCHAIN, "offchain": RESTRICT_OFFCHAIN}


def _bad(msg: str) -> RpcError:
    return RpcError(RPC_INVALID_PARAMETER, msg)


# -- publishing ---------------------------------------------------------------------------------
def parse_keys(value: Any) -> tuple[str, ...]:
    if type(value) is str and value != "*" and len(value) <= MAX_KEY_BYTES and value.isascii():
        return (value,)  # the usual one: one short ASCII key, which the loop below accepts
    keys = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not value:
        raise _bad("Item keys must not be empty")
    for k in keys:
        if not isinstance(k, str):
            raise _bad("Item key should be a string")
        if k == "*":
            raise _bad("Item key cannot be *")
        # Short ASCII text (the usual key) is one byte per character: no need to encode it.
        if not (len(k) <= MAX_KEY_BYTES and k.isascii()) and len(k.encode()) > MAX_KEY_BYTES:
            raise _bad(f"Item key is too long (over {MAX_KEY_BYTES} bytes)")
    return tuple(keys)


def parse_data(value: Any) -> tuple[DataFormat, bytes]:
    """Hex string, {"text": str} or {"json": any}."""
    if isinstance(value, str):
        if not _HEX.match(value):
            raise _bad("data should be hexadecimal string, {\"text\":…} or {\"json\":…}")
        return DataFormat.RAW, bytes.fromhex(value)
    if isinstance(value, dict) and len(value) == 1:
        if "text" in value:
            if not isinstance(value["text"], str):
                raise _bad("text data should be a string")
            return DataFormat.TEXT, value["text"].encode()
        if "json" in value:
            return DataFormat.JSON, orjson.dumps(value["json"])
        if "cache" in value:
            raise RpcError(RPC_NOT_SUPPORTED, "Binary cache items are not supported")
    raise _bad("data should be hexadecimal string, {\"text\":…} or {\"json\":…}")


def parse_options(value: Any) -> None:
    if value in (None, ""):
        return
    if value == "offchain":
        raise RpcError(RPC_NOT_SUPPORTED, "Off-chain items are not supported by chainmill")
    raise _bad("Invalid options")


def _wallet_address(ctx: Any, address: Any) -> bytes:
    if not isinstance(address, str):
        raise _bad("from-address should be a string")
    h = ctx.codec.decode(address)
    if h not in ctx.wallet:
        raise RpcError(RPC_WALLET_ADDRESS_NOT_FOUND, "Private key for from-address is not found in this wallet")
    return h


def _can_write(state: ChainState, rules: Rules, h: int, addr: bytes,
               streams: list[StreamInfo]) -> bool:
    """`addr` may send at height `h` and write to each of `streams` (never empty)."""
    if not has_permission(state, rules, addr, "send", h):
        return False
    for info in streams:
        if info.restrict & RESTRICT_WRITE and not state.holds(addr, "write", h, info.createtxid):
            return False
    return True


def _publisher(ctx: Any, streams: list[StreamInfo], from_param: Any | None) -> bytes:
    state, rules, h = ctx.mempool.state, ctx.chain.rules, ctx.chain.height + 1
    from_address = None if from_param is None else parse_from(from_param)
    if from_address is not None:
        addr = _wallet_address(ctx, from_address)
        if not _can_write(state, rules, h, addr, streams):
            raise RpcError(RPC_INSUFFICIENT_PERMISSIONS,
                           "Publishing in this stream is not allowed from this address")
        return addr
    for addr in ctx.wallet.hashes():
        if _can_write(state, rules, h, addr, streams):
            return addr
    raise RpcError(RPC_INSUFFICIENT_PERMISSIONS,
                   "This wallet contains no addresses with permission to write to this stream")


def _submit(ctx: Any, addr: bytes, ops: list) -> str:
    key = ctx.wallet.get(addr)
    tx = Transaction.create(key, ops, ctx.chain.chain_id, ctx.now())
    ctx.submit_tx(tx, local=True)
    return tx.txid.hex()


def publish(ctx: Any, from_address: Any | None, p: list) -> str:
    info = ctx.resolve_stream(p[0])
    keys = parse_keys(p[1])
    fmt, data = parse_data(p[2])
    parse_options(p[3] if given(p, 3) else None)
    addr = _publisher(ctx, [info], from_address)
    return _submit(ctx, addr, [new_publish(info.createtxid, keys, fmt, data)])


def publishmulti(ctx: Any, from_address: Any | None, p: list) -> str:
    default = p[0]
    items = p[1]
    if not isinstance(items, list) or not items:
        raise _bad("items should be a non-empty array")
    parse_options(p[2] if given(p, 2) else None)
    ops, streams = [], {}
    # Stream identifier -> StreamInfo, resolved once per call: the items of a call nearly
    # always name the same one or two streams, and resolving is a regex match and two
    # lookups per item. A name that does not resolve raises at its first item, as before.
    resolved: dict[str, StreamInfo] = {}
    for it in items:
        if not isinstance(it, dict):
            raise _bad("each item should be an object")
        if not _ITEM_FIELDS.issuperset(it):
            unknown = set(it) - _ITEM_FIELDS
            raise _bad(f"Invalid item field: {sorted(unknown)[0]}")
        ident = it.get("for", default)
        info = resolved.get(ident) if type(ident) is str else None
        if info is None:
            info = ctx.resolve_stream(ident)
            if type(ident) is str:
                resolved[ident] = info
        if "key" in it and "keys" in it:
            raise _bad("an item has key or keys, not both")
        if "keys" in it:
            if not isinstance(it["keys"], list):
                raise _bad("keys should be an array")
            keys = parse_keys(it["keys"])
        elif "key" in it:
            keys = parse_keys(it["key"])
        else:
            keys = ()
        if "data" not in it:
            raise _bad("Missing data field")
        fmt, data = parse_data(it["data"])
        parse_options(it.get("options"))
        streams[info.createtxid] = info
        ops.append(new_publish(info.createtxid, keys, fmt, data))
    addr = _publisher(ctx, list(streams.values()), from_address)
    return _submit(ctx, addr, ops)


# -- creating -----------------------------------------------------------------------------------
def create(ctx: Any, from_address: Any | None, p: list) -> str:
    if p[0] not in ("stream", "streams"):
        raise _bad("Invalid entity type, should be stream")
    name = p[1]
    if not isinstance(name, str):
        raise _bad("Invalid stream name")
    if name == "*" or _STREAMREF.match(name) or _HEX64.match(name) or len(name.encode()) > 32:
        raise _bad(f"Invalid stream name: {name}")
    if any(ord(c) < 32 for c in name):
        raise _bad("Invalid stream name: control characters")
    spec = p[2]
    salted = False
    if isinstance(spec, bool):
        restrict = 0 if spec else RESTRICT_WRITE
    elif isinstance(spec, dict):
        restrict = 0
        words = spec.get("restrict", "")
        if not isinstance(words, str):
            raise _bad("restrict should be a comma-delimited string")
        for w in filter(None, (x.strip() for x in words.split(","))):
            if w not in _RESTRICT_WORDS:
                raise _bad(f"Invalid restriction: {w}")
            restrict |= _RESTRICT_WORDS[w]
        salted = spec.get("salted", False)
        if not isinstance(salted, bool):
            raise _bad("salted should be a boolean")
        if set(spec) - {"restrict", "salted"}:
            raise _bad("Invalid field in stream restrictions")
    else:
        raise _bad("Third parameter should be boolean (open) or an object of restrictions")
    if restrict & RESTRICT_OFFCHAIN:
        raise RpcError(RPC_NOT_SUPPORTED, "Off-chain items are not supported by chainmill")
    details = p[3] if given(p, 3) else {}
    if details is None:
        details = {}
    if not isinstance(details, dict):
        raise _bad("custom-fields should be an object")
    op = CreateStream(name, restrict, salted, orjson.dumps(details, option=orjson.OPT_SORT_KEYS))
    state, rules, h = ctx.mempool.state, ctx.chain.rules, ctx.chain.height + 1
    if from_address is not None:
        from_address = parse_from(from_address)
    if from_address is not None:
        addr = _wallet_address(ctx, from_address)
    else:
        candidates = [a for a in ctx.wallet.hashes()
                      if has_permission(state, rules, a, "create", h)
                      and has_permission(state, rules, a, "send", h)]
        if not candidates:
            raise RpcError(RPC_INSUFFICIENT_PERMISSIONS,
                           "This wallet contains no addresses with permission to create streams")
        addr = candidates[0]
    return _submit(ctx, addr, [op])


# -- reading ------------------------------------------------------------------------------------
def stream_view(ctx: Any, info: StreamInfo, verbose: bool) -> dict[str, Any]:
    txid = info.createtxid.hex()
    out: dict[str, Any] = {}
    if info.name:
        out["name"] = info.name
    out["createtxid"] = txid
    out["streamref"] = info.streamref or None
    out["restrict"] = restrict_view(info.restrict)
    out["salted"] = bool(info.salted)
    out["details"] = details_view(info.details)
    if verbose:
        out["creators"] = [ctx.codec.encode(info.creator)]
    out["filters"] = []  # chainmill has no stream filters
    sub = txid in ctx.subscriptions
    out["subscribed"] = sub
    # MultiChain 2.3 subscription fields: what this node retrieves and indexes. chainmill
    # keeps every item on-chain and indexes all of a subscribed stream.
    out["retrieve"] = sub
    out["canretrieve"] = True
    out["indexes"] = list(STREAM_INDEXES) if sub else []
    if sub:
        pending = ctx.mempool.stream_items(txid)
        confirmed = ctx.store.count_items(txid)
        out["synchronized"] = True
        out["items"] = confirmed + len(pending)
        out["confirmed"] = confirmed
        out["keys"], out["publishers"] = ctx.store.distinct_counts(
            txid, {k for it in pending for k in it.keys}, {it.publisher for it in pending})
    return out


def _window_items(ctx: Any, info: StreamInfo, p_count: Any, p_start: Any, *,
                  key: str | None = None, publisher: str | None = None,
                  default_count: int = 10) -> list[ItemRow]:
    count = as_count(p_count) if p_count is not None else default_count
    start = as_int(p_start, "start") if p_start is not None else None
    txid = info.createtxid.hex()
    pending = [it for it in ctx.mempool.stream_items(txid)
               if (key is None or key in it.keys)
               and (publisher is None or it.publisher == publisher)]
    confirmed = ctx.store.count_items(txid, key=key, publisher=publisher)
    offset, length = window(confirmed + len(pending), count, start)
    rows: list[ItemRow] = []
    if offset < confirmed:
        rows = ctx.store.items(txid, offset, min(length, confirmed - offset), key=key,
                               publisher=publisher)
    p_off = max(0, offset - confirmed)
    rows.extend(pending[p_off:p_off + length - len(rows)])
    return rows


def _opt(p: list, i: int) -> Any:
    return p[i] if len(p) > i else None


def register_methods(table: MethodTable, ctx: Any) -> None:
    def views(rows: list[ItemRow], verbose: bool) -> list[dict]:
        facts = ctx.facts()
        return [item_view(r, facts, verbose) for r in rows]

    def verbose_at(p: list, i: int) -> bool:
        return as_bool(p[i], "verbose") if given(p, i) else False

    def liststreams(p: list) -> list:
        wanted = identifier_list(p[0], "streams") if given(p, 0) else None
        verbose = verbose_at(p, 1)
        state = ctx.mempool.state
        if wanted is None:
            confirmed = sorted((s for s in state.streams.values() if s.streamref),
                               key=lambda s: (s.height, s.streamref))
            pending = [s for s in state.streams.values() if not s.streamref]
            infos = confirmed + pending
        else:
            infos = [ctx.resolve_stream(w) for w in wanted]
        count = as_count(p[2]) if given(p, 2) else MAX_COUNT
        start = as_int(p[3], "start") if given(p, 3) else None
        off, n = window(len(infos), count, start)
        return [stream_view(ctx, s, verbose) for s in infos[off:off + n]]

    def getstreaminfo(p: list) -> dict:
        return stream_view(ctx, ctx.resolve_stream(p[0]), verbose_at(p, 1))

    def subscribe(p: list) -> None:
        idents = p[0] if isinstance(p[0], list) else [p[0]]
        if given(p, 1):
            as_bool(p[1], "rescan")
        if given(p, 2) and p[2] not in (None, "", []):
            raise RpcError(RPC_NOT_SUPPORTED, "Subscription parameters are not supported")
        infos = [ctx.resolve_stream(i) for i in idents]
        for info in infos:
            ctx.subscribe(info.createtxid.hex())

    def unsubscribe(p: list) -> None:
        idents = p[0] if isinstance(p[0], list) else [p[0]]
        if given(p, 1):
            as_bool(p[1], "purge")
        infos = [ctx.resolve_stream(i) for i in idents]
        for info in infos:
            ctx.unsubscribe(info.createtxid.hex())

    def liststreamitems(p: list) -> list:
        info = ctx.readable_stream(p[0])
        verbose = verbose_at(p, 1)
        if given(p, 4):
            as_bool(p[4], "local-ordering")
        return views(_window_items(ctx, info, _opt(p, 2), _opt(p, 3)), verbose)

    def liststreamkeyitems(p: list) -> list:
        info = ctx.readable_stream(p[0])
        key = p[1]
        if not isinstance(key, str):
            raise _bad("key should be a string")
        verbose = verbose_at(p, 2)
        if given(p, 5):
            as_bool(p[5], "local-ordering")
        return views(_window_items(ctx, info, _opt(p, 3), _opt(p, 4),
                                   key=None if key == "*" else key), verbose)

    def liststreampublisheritems(p: list) -> list:
        info = ctx.readable_stream(p[0])
        address = p[1]
        if not isinstance(address, str):
            raise _bad("address should be a string")
        if address != "*":
            ctx.codec.decode(address)
        verbose = verbose_at(p, 2)
        if given(p, 5):
            as_bool(p[5], "local-ordering")
        return views(_window_items(ctx, info, _opt(p, 3), _opt(p, 4),
                                   publisher=None if address == "*" else address), verbose)

    def _summaries(p: list, kind: str) -> list:
        info = ctx.readable_stream(p[0])
        txid = info.createtxid.hex()
        wanted = None
        if given(p, 1) and p[1] != "*":
            if isinstance(p[1], str):
                wanted = [p[1]]
            elif isinstance(p[1], list) and all(isinstance(x, str) for x in p[1]):
                wanted = p[1]
            else:
                raise _bad(f"{kind}s should be a string or an array of strings")
            if kind == "publisher":
                for a in wanted:
                    ctx.codec.decode(a)
        verbose = verbose_at(p, 2)
        if given(p, 5):
            as_bool(p[5], "local-ordering")
        count = as_count(p[3]) if given(p, 3) else MAX_COUNT
        start = as_int(p[4], "start") if given(p, 4) else None
        out = []
        facts = ctx.facts() if verbose else None
        for name, total, confirmed in _name_window(txid, kind, wanted, count, start):
            s: dict[str, Any] = {kind: name, "items": total, "confirmed": confirmed}
            if verbose:
                sel = {"key": name} if kind == "key" else {"publisher": name}
                first = _window_items(ctx, info, 1, 0, **sel)
                last = _window_items(ctx, info, 1, -1, **sel)
                s["first"] = item_view(first[0], facts, True) if first else None
                s["last"] = item_view(last[0], facts, True) if last else None
            out.append(s)
        return out

    def _name_window(txid: str, kind: str, wanted: list[str] | None, count: int,
                     start: int | None) -> list[tuple[str, int, int]]:
        """(name, items, confirmed items) of the stream's keys or publishers in the count/start
        window: confirmed names in order of first appearance, then names only pending items
        have, in mempool order."""
        pending: dict[str, int] = {}
        for it in ctx.mempool.stream_items(txid):
            for name in (it.keys if kind == "key" else (it.publisher,)):
                if wanted is None or name in wanted:
                    pending[name] = pending.get(name, 0) + 1
        if wanted is not None:  # a list the caller gave: its names, counted in one query
            rows = (ctx.store.key_counts(txid, wanted) if kind == "key"
                    else ctx.store.publisher_counts(txid, wanted))
            counts = {name: [n, n] for name, n, _ in rows}
            for name, n in pending.items():
                counts.setdefault(name, [0, 0])[0] += n
            off, n = window(len(counts), count, start)
            return [(name, c[0], c[1]) for name, c in list(counts.items())[off:off + n]]
        # Every name: the database counts, orders and cuts the confirmed ones (a stream can
        # have millions of keys), the mempool adds its own.
        confirmed_total = ctx.store.distinct_count(txid, kind)
        known = ctx.store.present_names(txid, kind, pending)
        only_pending = [name for name in pending if name not in known]
        off, n = window(confirmed_total + len(only_pending), count, start)
        rows = ctx.store.name_window(txid, kind, off, min(n, confirmed_total - off)) \
            if off < confirmed_total else []
        out = [(name, c + pending.get(name, 0), c) for name, c, _ in rows]
        p_off = max(0, off - confirmed_total)
        out.extend((name, pending[name], 0)
                   for name in only_pending[p_off:p_off + n - len(rows)])
        return out

    def liststreamkeys(p: list) -> list:
        return _summaries(p, "key")

    def liststreampublishers(p: list) -> list:
        return _summaries(p, "publisher")

    def _txid(value: Any) -> str:
        if not isinstance(value, str) or not _HEX64.match(value):
            raise _bad("txid must be a 64-character hex string")
        return value.lower()

    def _items_of(info: StreamInfo, txids: list[str]) -> list[ItemRow]:
        sid = info.createtxid.hex()
        found = ctx.store.items_by_txids(sid, txids)
        have = {r.txid for r in found}
        for t in txids:
            if t not in have:
                entry = ctx.mempool.entries.get(bytes.fromhex(t))
                if entry is not None:
                    found.extend(it for it in entry.items if it.stream == sid)
        order = {t: i for i, t in enumerate(txids)}
        return sorted(found, key=lambda r: (order[r.txid], r.vout))

    def getstreamitem(p: list) -> dict:
        info = ctx.readable_stream(p[0])
        txid = _txid(p[1])
        rows = _items_of(info, [txid])
        if not rows:
            raise RpcError(RPC_TX_NOT_FOUND, "Item with this txid not found in this stream")
        if len(rows) > 1:
            raise RpcError(RPC_NOT_ALLOWED, "This transaction has more than one item in this "
                           "stream; use liststreamtxitems")
        return views(rows, verbose_at(p, 2))[0]

    def liststreamtxitems(p: list) -> list:
        info = ctx.readable_stream(p[0])
        raw = p[1]
        if isinstance(raw, str):
            txids = [x.strip() for x in raw.split(",") if x.strip()]
        elif isinstance(raw, list):
            txids = raw
        else:
            raise _bad("txids should be a comma-delimited string or an array")
        return views(_items_of(info, [_txid(t) for t in txids]), verbose_at(p, 2))

    def liststreamqueryitems(p: list) -> list:
        info = ctx.readable_stream(p[0])
        q = p[1]
        if not isinstance(q, dict) or not q or set(q) - {"key", "keys", "publisher", "publishers"}:
            raise _bad("query should be an object with key(s) and/or publisher(s)")
        keys = [q["key"]] if "key" in q else list(q.get("keys", []))
        pubs = [q["publisher"]] if "publisher" in q else list(q.get("publishers", []))
        if not keys and not pubs:
            raise _bad("query needs at least one key or publisher")
        if not all(isinstance(k, str) for k in keys + pubs):
            raise _bad("query keys and publishers should be strings")
        for a in pubs:
            ctx.codec.decode(a)
        limit = int(ctx.setting("maxqueryscanitems"))
        sid = info.createtxid.hex()
        rows = ctx.store.query_items(sid, keys, pubs, limit + 1)
        rows += [it for it in ctx.mempool.stream_items(sid)
                 if all(k in it.keys for k in keys) and (not pubs or it.publisher in pubs)]
        if len(rows) > limit:
            raise _bad(f"Query matches more than maxqueryscanitems ({limit}) items; "
                       "narrow it down")
        return views(rows, verbose_at(p, 2))

    def liststreamblockitems(p: list) -> list:
        info = ctx.readable_stream(p[0])
        heights = parse_block_set(ctx, p[1])
        verbose = verbose_at(p, 2)
        rows = ctx.store.items_in_heights(info.createtxid.hex(), heights)
        count = as_count(p[3]) if given(p, 3) else MAX_COUNT
        start = as_int(p[4], "start") if given(p, 4) else None
        off, n = window(len(rows), count, start)
        return views(rows[off:off + n], verbose)

    handlers = {
        "create": lambda p: create(ctx, None, p),
        "createfrom": lambda p: create(ctx, p[0], p[1:]),
        "publish": lambda p: publish(ctx, None, p),
        "publishfrom": lambda p: publish(ctx, p[0], p[1:]),
        "publishmulti": lambda p: publishmulti(ctx, None, p),
        "publishmultifrom": lambda p: publishmulti(ctx, p[0], p[1:]),
        "liststreams": liststreams, "getstreaminfo": getstreaminfo,
        "subscribe": subscribe, "unsubscribe": unsubscribe,
        "liststreamitems": liststreamitems, "liststreamkeyitems": liststreamkeyitems,
        "liststreampublisheritems": liststreampublisheritems,
        "liststreamkeys": liststreamkeys, "liststreampublishers": liststreampublishers,
        "getstreamitem": getstreamitem, "liststreamtxitems": liststreamtxitems,
        "liststreamqueryitems": liststreamqueryitems,
        "liststreamblockitems": liststreamblockitems,
    }
    for name, fn in handlers.items():
        register(table, name, fn)
