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


# -- MultiChain's transaction shape (TxToJSON and ScriptPubKeyToJSON in rpcrawtransaction.cpp,
# PermissionEntries and the stream entries of rpcutils.cpp). chainmill has no scripts, so each
# output's script is built from its operation the way MultiChain lays its metadata out: a
# pushed metadata element, OP_DROP, then OP_RETURN <data> or a pay-to-pubkeyhash tail.
OP_DROP, OP_RETURN, OP_DUP, OP_HASH160, OP_EQUALVERIFY, OP_CHECKSIG = (
    0x75, 0x6A, 0x76, 0xA9, 0x88, 0xAC)
_OP_NAMES = {OP_DROP: "OP_DROP", OP_RETURN: "OP_RETURN", OP_DUP: "OP_DUP",
             OP_HASH160: "OP_HASH160", OP_EQUALVERIFY: "OP_EQUALVERIFY",
             OP_CHECKSIG: "OP_CHECKSIG"}
NULL_TXID = "0" * 64
SEQUENCE_FINAL = 4294967295
STANDARD_PERMS = ("connect", "send", "receive", "write", "read", "issue", "create", "mine",
                  "admin", "activate")
"""Boolean members of every permission entry; low1-3/high1-3 go in its `custom` array."""


def _push(data: bytes) -> bytes:
    n = len(data)
    if n < 0x4C:
        return bytes([n]) + data
    if n <= 0xFF:
        return b"\x4c" + bytes([n]) + data
    if n <= 0xFFFF:
        return b"\x4d" + n.to_bytes(2, "little") + data
    return b"\x4e" + n.to_bytes(4, "little") + data


def script_json(tokens: list[bytes | int]) -> dict[str, str]:
    """{"asm", "hex"} of a script given as pushed byte strings and opcodes."""
    asm, raw = [], bytearray()
    for t in tokens:
        if isinstance(t, int):
            asm.append(_OP_NAMES[t])
            raw.append(t)
        else:
            asm.append(t.hex())
            raw += _push(t)
    return {"asm": " ".join(asm), "hex": raw.hex()}


def _perm_meta(op: Permission) -> bytes:
    return (b"spkp" + op.perms.to_bytes(4, "little") + op.start.to_bytes(4, "little")
            + op.end.to_bytes(4, "little"))


def op_script(op: Any) -> list[bytes | int]:
    """The script tokens of one operation's output."""
    if isinstance(op, Publish):
        tokens: list[bytes | int] = [b"spke" + op.stream[:16], OP_DROP]
        for k in op.keys:
            tokens += [b"spkk" + k.encode(), OP_DROP]
        return tokens + [OP_RETURN, op.data]
    if isinstance(op, Permission):
        tokens = [b"spke" + op.entity[:16], OP_DROP] if op.entity else []
        return tokens + [_perm_meta(op), OP_DROP, OP_DUP, OP_HASH160, op.address,
                         OP_EQUALVERIFY, OP_CHECKSIG]
    meta = (b"spkn" + bytes([op.restrict, int(op.salted)]) + op.name.encode())
    return [meta, OP_DROP, OP_RETURN, op.details]


def vin_view(sender: str, pubkey: bytes, signature: bytes, nonce: int) -> dict[str, Any]:
    """The one input entry of a chainmill transaction in MultiChain's vin shape.

    chainmill spends no outputs: the signer's key and signature stand where an input's
    scriptSig would, against the null outpoint. The 64-bit nonce is hex text, because a
    JSON number above 2^53 loses precision in JavaScript clients.
    """
    return {"txid": NULL_TXID, "vout": 0,
            "scriptSig": script_json([signature + b"\x01", pubkey]) | {
                "asm": f"{signature.hex()}[ALL] {pubkey.hex()}"},
            "sequence": SEQUENCE_FINAL,
            "sender": sender, "pubkey": pubkey.hex(), "nonce": f"{nonce:016x}"}


def permission_entry(op: Permission, stream: StreamInfo | None, tx_time: int
                     ) -> dict[str, Any]:
    """PermissionEntries (rpcutils.cpp): for, the standard flags, custom, range, timestamp."""
    scope = STREAM_PERMS if op.entity else GLOBAL_PERMS
    granted = {p for p in scope if op.perms & PERM_BITS[p]}
    out: dict[str, Any] = {"for": stream_for(stream) if op.entity else None}
    for p in STANDARD_PERMS:
        out[p] = p in granted
    out["custom"] = [p for p in scope if p in granted and p not in STANDARD_PERMS]
    out.update({"startblock": op.start, "endblock": op.end, "timestamp": tx_time})
    return out


def create_entry(op: CreateStream, streamref: str | None) -> dict[str, Any]:
    """The top-level `create` member of a stream-creating transaction."""
    return {"type": "stream", "name": op.name, "streamref": streamref,
            "restrict": restrict_view(op.restrict), "salted": bool(op.salted),
            "details": details_view(op.details)}


def op_view(op: Any, n: int, *, address_of, stream_of, txid: str, max_shown: int,  # noqa: ANN001
            sender: str, tx_time: int) -> dict[str, Any]:
    """One `vout` entry of a decoded transaction (TxToJSON's vout, assets always empty)."""
    out: dict[str, Any] = {"value": 0.0, "n": n}
    spk = script_json(op_script(op))
    if isinstance(op, Permission):
        target = address_of(op.address)
        out["scriptPubKey"] = spk | {"reqSigs": 1, "type": "pubkeyhash",
                                     "addresses": [target]}
    else:
        out["scriptPubKey"] = spk | {"type": "nulldata"}
    out["assets"] = []
    out["permissions"] = []
    out["items"] = []
    if isinstance(op, Publish):
        info = stream_of(op.stream)
        data = format_data(int(op.fmt), op.data, txid, n, max_shown)
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
        out["permissions"] = [permission_entry(
            op, stream_of(op.entity) if op.entity else None, tx_time)]
    return out
