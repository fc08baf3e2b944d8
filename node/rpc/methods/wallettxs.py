"""Wallet transactions, key import/export, message signing and the balance methods.

Shapes follow MultiChain 2.3 (rpcwallettxs.cpp, rpcwalletutils.cpp, rpcdump.cpp,
rpcmisc.cpp): a wallet transaction is {balance, myaddresses, addresses, permissions, items,
data, (create), confirmations, blockhash, blockindex, blocktime, txid, valid, time,
timereceived, (vin, vout when verbose)}. A chain without a native currency answers the
balance methods with MultiChain's empty shapes rather than -32601, so ported programs run.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any

from ledger.errors import InvalidAddress, InvalidSignature
from ledger.hashing import hash160
from ledger.keys import KeyPair, is_valid_pubkey, recover
from ledger.transactions import CreateStream, Permission, Publish, Transaction
from node.rpc.dispatch import MethodTable
from node.rpc.errors import (
    RPC_INVALID_ADDRESS_OR_KEY,
    RPC_INVALID_PARAMETER,
    RPC_TX_NOT_FOUND,
    RPC_TYPE_ERROR,
    RPC_WALLET_ERROR,
    RpcError,
)
from node.rpc.methods import register
from node.rpc.methods.blocks import tx_view
from node.rpc.params import MAX_COUNT, as_bool, as_count, as_int, given, window
from node.views import create_entry, format_data, permission_entry

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_PUBKEY = re.compile(r"^0[23][0-9a-fA-F]{64}$")
MESSAGE_MAGIC = b"Bitcoin Signed Message:\n"
"""The magic of MultiChain's signmessage (inherited from Bitcoin Core, rpcmisc.cpp)."""


def _bad(msg: str) -> RpcError:
    return RpcError(RPC_INVALID_PARAMETER, msg)


# -- message signing (pure) ---------------------------------------------------------------------
def _varint(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    if n <= 0xFFFFFFFF:
        return b"\xfe" + n.to_bytes(4, "little")
    return b"\xff" + n.to_bytes(8, "little")


def message_digest(message: str) -> bytes:
    """Double SHA-256 of the magic and the message, each with its compact-size length."""
    body = message.encode()
    data = _varint(len(MESSAGE_MAGIC)) + MESSAGE_MAGIC + _varint(len(body)) + body
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def sign_message(key: KeyPair, message: str) -> str:
    """Base64 of the 65-byte compact signature: header 27 + recid + 4 (compressed), r, s."""
    sig = key.sign_recoverable(message_digest(message))  # r || s || recid
    return base64.b64encode(bytes([27 + sig[64] + 4]) + sig[:64]).decode()


def message_signer(signature_b64: str, message: str) -> bytes | None:
    """The compressed public key that signed `message`, or None when the signature is bad."""
    try:
        raw = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 65 or not 27 <= raw[0] <= 34:
        return None
    recid = (raw[0] - 27) & 3
    try:
        pub = recover(raw[1:] + bytes([recid]), message_digest(message))
    except InvalidSignature:
        return None
    return pub


# -- wallet transactions --------------------------------------------------------------------------
def involved(tx: Transaction) -> list[bytes]:
    """Addresses a transaction concerns: its signer, then the targets of its permissions."""
    out = [tx.sender_hash]
    for op in tx.ops:
        if isinstance(op, Permission) and op.address not in out:
            out.append(op.address)
    return out


def wallet_tx_view(ctx: Any, tx: Transaction, height: int | None, blockindex: int | None,
                   mine: set[bytes], verbose: bool) -> dict[str, Any]:
    """One transaction as MultiChain's wallet-transaction methods show it."""
    enc = ctx.codec.encode
    txid = tx.txid.hex()
    streams = ctx.mempool.state.streams
    max_shown = int(ctx.setting("maxshowndata"))
    sender = enc(tx.sender_hash)
    addrs = involved(tx)
    out: dict[str, Any] = {
        "balance": {"amount": 0.0, "assets": []},
        "myaddresses": [enc(a) for a in addrs if a in mine],
        "addresses": [enc(a) for a in addrs if a not in mine],
        "permissions": [],
        "items": [],
        "data": [],
    }
    for n, op in enumerate(tx.ops):
        if isinstance(op, Permission):
            entry = permission_entry(op, streams.get(op.entity) if op.entity else None, tx.time)
            out["permissions"].append(entry | {"addresses": [enc(op.address)]})
        elif isinstance(op, Publish):
            info = streams.get(op.stream)
            data = format_data(int(op.fmt), op.data, txid, n, max_shown)
            out["items"].append({
                "type": "stream", "name": info.name if info else None,
                "createtxid": op.stream.hex(),
                "streamref": (info.streamref or None) if info else None,
                "publishers": [sender], "keys": list(op.keys), "offchain": op.offchain,
                "available": True, "data": data})
            out["data"].append(data)
        elif isinstance(op, CreateStream) and "create" not in out:
            info = streams.get(tx.txid)
            out["create"] = create_entry(op, (info.streamref or None) if info else None)
    if height is not None:
        out["confirmations"] = ctx.chain.height - height + 1
        out["blockhash"] = ctx.hash_at(height)
        out["blockindex"] = blockindex
        out["blocktime"] = ctx.store.block_row(height).time_s
    else:
        out["confirmations"] = 0
    out.update({"txid": txid, "valid": True, "time": tx.time, "timereceived": tx.time})
    if verbose:
        full = tx_view(ctx, tx, with_hex=False, block_fields=False)
        out["vin"], out["vout"] = full["vin"], full["vout"]
    return out


def register_methods(table: MethodTable, ctx: Any) -> None:
    def mine_set(watch: bool) -> set[bytes]:
        out = set(ctx.wallet.hashes())
        if watch:
            out.update(ctx.wallet.watch_only())
        return out

    def address_hash(value: Any) -> bytes:
        if not isinstance(value, str):
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Invalid address")
        return ctx.codec.decode(value)

    def known_hash(value: Any) -> bytes:
        h = address_hash(value)
        if h not in ctx.wallet and h not in ctx.wallet.watch_only():
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Address not found in this wallet")
        return h

    def txid_of(value: Any) -> str:
        if not isinstance(value, str) or not _HEX64.match(value):
            raise _bad("txid must be a 64-character hex string")
        return value.lower()

    def located(txid: str) -> tuple[Transaction, int | None, int | None] | None:
        row = ctx.store.tx_row(txid)
        if row is not None:
            return Transaction.decode(row.raw), row.height, row.blockindex
        entry = ctx.mempool.entries.get(bytes.fromhex(txid))
        return (entry.tx, None, None) if entry is not None else None

    def wallet_txs(addrs: set[bytes]) -> list[tuple[Transaction, int | None, int | None]]:
        """Confirmed transactions of `addrs` in chain order, then the pending ones."""
        enc = ctx.codec.encode
        rows = ctx.store.tx_rows_involving([enc(a) for a in addrs])
        out: list[tuple[Transaction, int | None, int | None]] = [
            (Transaction.decode(r.raw), r.height, r.blockindex) for r in rows]
        for entry in ctx.mempool.entries.values():
            if any(a in addrs for a in involved(entry.tx)):
                out.append((entry.tx, None, None))
        return out

    def page(items: list, p: list, count_at: int) -> list:
        count = as_count(p[count_at]) if given(p, count_at) else 10
        skip = as_count(p[count_at + 1]) if given(p, count_at + 1) else 0
        end = max(0, len(items) - skip)
        return items[max(0, end - count):end]

    def not_wallet_tx() -> RpcError:
        return RpcError(RPC_TX_NOT_FOUND, "Invalid or non-wallet transaction id")

    def getwallettransaction(p: list) -> dict:
        txid = txid_of(p[0])
        watch = as_bool(p[1], "include-watch-only") if given(p, 1) else False
        verbose = as_bool(p[2], "verbose") if given(p, 2) else False
        mine = mine_set(watch)
        found = located(txid)
        if found is None or not any(a in mine for a in involved(found[0])):
            raise not_wallet_tx()
        return wallet_tx_view(ctx, *found, mine, verbose)

    def listwallettransactions(p: list) -> list:
        watch = as_bool(p[2], "include-watch-only") if given(p, 2) else False
        verbose = as_bool(p[3], "verbose") if given(p, 3) else False
        mine = mine_set(watch)
        return [wallet_tx_view(ctx, *t, mine, verbose) for t in page(wallet_txs(mine), p, 0)]

    def listaddresstransactions(p: list) -> list:
        h = known_hash(p[0])
        verbose = as_bool(p[3], "verbose") if given(p, 3) else False
        return [wallet_tx_view(ctx, *t, {h}, verbose) for t in page(wallet_txs({h}), p, 1)]

    def getaddresstransaction(p: list) -> dict:
        h = known_hash(p[0])
        txid = txid_of(p[1])
        verbose = as_bool(p[2], "verbose") if given(p, 2) else False
        found = located(txid)
        if found is None or h not in involved(found[0]):
            raise not_wallet_tx()
        return wallet_tx_view(ctx, *found, {h}, verbose)

    def listaddresses(p: list) -> list:
        from node.rpc.methods.wallet import address_view
        from node.rpc.params import identifier_list

        wanted = identifier_list(p[0], "addresses") if given(p, 0) else None
        verbose = as_bool(p[1], "verbose") if given(p, 1) else False
        hashes = ctx.wallet.hashes() + ctx.wallet.watch_only()
        if wanted is not None:
            picked = [address_hash(a) for a in wanted]
            for a, h in zip(wanted, picked, strict=True):
                if h not in hashes:
                    raise RpcError(RPC_INVALID_ADDRESS_OR_KEY,
                                   f"Address not found in this wallet: {a}")
            hashes = list(dict.fromkeys(picked))
        count = as_count(p[2]) if given(p, 2) else MAX_COUNT
        start = as_int(p[3], "start") if given(p, 3) else None
        off, n = window(len(hashes), count, start)
        out = []
        for h in hashes[off:off + n]:
            if verbose:
                out.append(address_view(ctx, h))
            else:
                out.append({"address": ctx.codec.encode(h), "ismine": h in ctx.wallet})
        return out

    def _list_arg(value: Any, what: str) -> list[str]:
        if isinstance(value, str):
            items = [x.strip() for x in value.split(",")]
        elif isinstance(value, list) and all(isinstance(x, str) for x in value):
            items = [x.strip() for x in value]
        else:
            raise _bad(f"{what} should be a string or an array of strings")
        if not items or "" in items:
            raise _bad(f"{what}: empty entry")
        return items

    def importaddress(p: list) -> None:
        if given(p, 2):
            as_bool(p[2], "rescan")
        hashes = []
        for text in _list_arg(p[0], "address(es)"):
            if _PUBKEY.match(text) and is_valid_pubkey(bytes.fromhex(text)):
                hashes.append(hash160(bytes.fromhex(text)))
            else:
                try:
                    hashes.append(ctx.codec.decode(text))
                except InvalidAddress:
                    raise RpcError(RPC_INVALID_ADDRESS_OR_KEY,
                                   f"Invalid address or public key: {text}") from None
        for h in hashes:  # all checked before any is added
            ctx.wallet.add_watch_only(h)

    def importprivkey(p: list) -> None:
        if given(p, 2):
            as_bool(p[2], "rescan")
        secrets = []
        for text in _list_arg(p[0], "privkey(s)"):
            try:
                secrets.append(ctx.codec.decode_wif(text))
            except (InvalidAddress, ValueError):
                raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Invalid private key encoding"
                               ) from None
        for secret in secrets:
            ctx.wallet.import_key(secret)

    def dumpprivkey(p: list) -> str:
        h = address_hash(p[0])
        key = ctx.wallet.get(h)
        if key is None:
            raise RpcError(RPC_WALLET_ERROR, f"Private key for address {p[0]} is not known")
        return ctx.codec.encode_wif(key.secret)

    def signmessage(p: list) -> str:
        who, message = p[0], p[1]
        if not isinstance(who, str) or not isinstance(message, str):
            raise RpcError(RPC_TYPE_ERROR, "address and message should be strings")
        try:
            key = ctx.wallet.get(ctx.codec.decode(who))
            if key is None:
                raise RpcError(RPC_WALLET_ERROR, "Private key not available")
        except InvalidAddress:
            try:
                key = KeyPair(ctx.codec.decode_wif(who))
            except (InvalidAddress, ValueError):
                raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Invalid address or private key"
                               ) from None
        return sign_message(key, message)

    def verifymessage(p: list) -> bool:
        address, signature, message = p
        if not all(isinstance(x, str) for x in p):
            raise RpcError(RPC_TYPE_ERROR, "address, signature and message should be strings")
        h = address_hash(address)
        try:
            base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            raise RpcError(RPC_INVALID_ADDRESS_OR_KEY, "Malformed base64 encoding") from None
        pub = message_signer(signature, message)
        return pub is not None and hash160(pub) == h

    # -- balances of a chain without a currency: MultiChain's shapes, empty ----------------
    def _check_addresses(value: Any) -> None:
        if value in (None, "*"):
            return
        for a in _list_arg(value, "address(es)"):
            address_hash(a)

    def getmultibalances(p: list) -> dict:
        _check_addresses(p[0] if p else None)
        return {"total": []}

    def gettotalbalances(p: list) -> list:
        return []

    def getaddressbalances(p: list) -> list:
        address_hash(p[0])
        return []

    def listunspent(p: list) -> list:
        if given(p, 2):
            if not isinstance(p[2], list):
                raise _bad("addresses should be an array")
            for a in p[2]:
                address_hash(a)
        return []

    def getbalance(p: list) -> float:
        return 0.0

    for name, fn in [
        ("getwallettransaction", getwallettransaction),
        ("listwallettransactions", listwallettransactions),
        ("listaddresstransactions", listaddresstransactions),
        ("getaddresstransaction", getaddresstransaction), ("listaddresses", listaddresses),
        ("importaddress", importaddress), ("importprivkey", importprivkey),
        ("dumpprivkey", dumpprivkey), ("signmessage", signmessage),
        ("verifymessage", verifymessage), ("getmultibalances", getmultibalances),
        ("gettotalbalances", gettotalbalances), ("getaddressbalances", getaddressbalances),
        ("listunspent", listunspent), ("getbalance", getbalance),
    ]:
        register(table, name, fn)
