"""JSON views of chain objects in MultiChain's shapes: items, streams, blocks, transactions.

Pure functions of stored rows and a few chain facts; field order follows MultiChain (some
naive clients depend on it) and chainmill's extension fields come last.
"""

from __future__ import annotations

from typing import Any

import orjson

from consensus.state import StreamInfo
from ledger.store import ItemRow
from ledger.transactions import (
    FORMAT_NAMES,
    GLOBAL_PERMS,
    PERM_BITS,
    RESTRICT_OFFCHAIN,
    RESTRICT_ONCHAIN,
    RESTRICT_READ,
    RESTRICT_WRITE,
    STREAM_PERMS,
    CreateStream,
    DataFormat,
    Permission,
    Publish,
)


def format_data(fmt: int, data: bytes, txid: str, vout: int, max_shown: int) -> Any:
    """An item's `data` member: hex, {"text": …}, {"json": …}, or a reference when large."""
    if len(data) > max_shown:
        return {"txid": txid, "vout": vout, "format": FORMAT_NAMES[DataFormat(fmt)],
                "size": len(data)}
    return full_data(fmt, data)


def full_data(fmt: int, data: bytes) -> Any:
    if fmt == DataFormat.TEXT:
        try:
            return {"text": data.decode()}
        except UnicodeDecodeError:
            return {"text": None}
    if fmt == DataFormat.JSON:
        try:
            return {"json": orjson.loads(data)}
        except orjson.JSONDecodeError:
            return {"json": None}
    return data.hex()


class ChainFacts:
    """What an item view needs to know about the chain now."""

    __slots__ = ("tip", "final_depth", "max_shown", "hash_at")

    def __init__(self, tip: int, final_depth: int, max_shown: int, hash_at) -> None:  # noqa: ANN001
        self.tip = tip
        self.final_depth = final_depth
        self.max_shown = max_shown
        self.hash_at = hash_at


def item_view(it: ItemRow, facts: ChainFacts, verbose: bool) -> dict[str, Any]:
    confirmed = it.height >= 0
    conf = facts.tip - it.height + 1 if confirmed else 0
    out: dict[str, Any] = {
        "publishers": [it.publisher],
        "keys": list(it.keys),
        "offchain": it.offchain,
        "available": True,
        "data": format_data(it.format, it.data, it.txid, it.vout, facts.max_shown),
        "confirmations": conf,
    }
    if verbose:
        if confirmed:
            out["blockhash"] = facts.hash_at(it.height)
            out["blockheight"] = it.height
            out["blockindex"] = it.blockindex
            out["blocktime"] = it.time_s
        out["txid"] = it.txid
        out["vout"] = it.vout
        out["valid"] = True
        out["time"] = it.time_s
        out["timereceived"] = it.time_s
    else:
        if confirmed:
            out["blockheight"] = it.height
            out["blocktime"] = it.time_s
        out["txid"] = it.txid
    out["final"] = confirmed and conf >= facts.final_depth
    return out


def restrict_view(restrict: int) -> dict[str, bool]:
    return {
        "write": bool(restrict & RESTRICT_WRITE),
        "read": bool(restrict & RESTRICT_READ),
        "onchain": bool(restrict & RESTRICT_ONCHAIN),
        "offchain": bool(restrict & RESTRICT_OFFCHAIN),
    }


def details_view(details: bytes) -> Any:
    try:
        return orjson.loads(details)
    except orjson.JSONDecodeError:
        return {}


def stream_for(info: StreamInfo | None) -> dict[str, Any] | None:
    """The `for` member of per-stream permissions and tx outputs."""
    if info is None:
        return None
    return {"type": "stream", "name": info.name, "createtxid": info.createtxid.hex(),
            "streamref": info.streamref or None}


def op_view(op: Any, n: int, *, address_of, stream_of, txid: str, max_shown: int,  # noqa: ANN001
            sender: str, tx_time: int) -> dict[str, Any]:
    """One `vout` entry of a decoded transaction."""
    out: dict[str, Any] = {"value": 0.0, "n": n}
    if isinstance(op, Publish):
        info = stream_of(op.stream)
        data = format_data(int(op.fmt), op.data, txid, n, max_shown)
        out["scriptPubKey"] = {"asm": "", "hex": "", "type": "nulldata"}
        out["items"] = [{
            "type": "stream",
            "name": info.name if info else None,
            "createtxid": op.stream.hex(),
            "streamref": (info.streamref or None) if info else None,
            "publishers": [sender],
            "keys": list(op.keys),
            "offchain": op.offchain,
            "available": True,
            "data": data,
        }]
        out["data"] = [data]
    elif isinstance(op, Permission):
        target = address_of(op.address)
        scope = STREAM_PERMS if op.entity else GLOBAL_PERMS
        perm: dict[str, Any] = {"for": stream_for(stream_of(op.entity)) if op.entity else None}
        for p in scope:
            perm[p] = bool(op.perms & PERM_BITS[p])
        perm.update({"startblock": op.start, "endblock": op.end, "timestamp": tx_time})
        out["scriptPubKey"] = {"asm": "", "hex": "", "reqSigs": 1, "type": "pubkeyhash",
                               "addresses": [target]}
        out["permissions"] = [perm]
    elif isinstance(op, CreateStream):
        out["scriptPubKey"] = {"asm": "", "hex": "", "type": "nulldata"}
        out["create"] = {"type": "stream", "name": op.name,
                         "restrict": restrict_view(op.restrict),
                         "details": details_view(op.details)}
    return out
