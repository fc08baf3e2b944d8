"""Wallet and addresses: getnewaddress, getaddresses, validateaddress, getwalletinfo, …"""

from __future__ import annotations

import re
from typing import Any

from ledger.errors import InvalidAddress
from ledger.hashing import hash160
from ledger.keys import KeyPair, is_valid_pubkey
from node.rpc.dispatch import MethodTable
from node.rpc.errors import RPC_INVALID_PARAMETER, RpcError
from node.rpc.methods import register
from node.rpc.params import as_bool, as_count, given

_PUBKEY = re.compile(r"^0[23][0-9a-fA-F]{64}$")


def address_view(ctx: Any, pkh: bytes, pubkey: bytes | None = None) -> dict[str, Any]:
    key = ctx.wallet.get(pkh)
    out: dict[str, Any] = {"address": ctx.codec.encode(pkh), "ismine": key is not None}
    if key is not None:
        out.update({"iswatchonly": False, "isscript": False, "pubkey": key.pubkey.hex(),
                    "iscompressed": True, "account": "", "synchronized": True})
    else:
        if pkh in ctx.wallet.watch_only():
            out.update({"iswatchonly": True, "isscript": False, "account": "",
                        "synchronized": True})
        if pubkey is not None:
            out.update({"pubkey": pubkey.hex(), "iscompressed": True})
    return out


def register_methods(table: MethodTable, ctx: Any) -> None:
    def getnewaddress(p: list) -> str:
        return ctx.codec.encode(ctx.wallet.new_key().pubkey_hash)

    def getaddresses(p: list) -> list:
        verbose = as_bool(p[0], "verbose") if given(p, 0) else False
        if not verbose:
            return [ctx.codec.encode(h) for h in ctx.wallet.hashes()]
        return [address_view(ctx, h) for h in ctx.wallet.hashes()]

    def validateaddress(p: list) -> dict:
        x = p[0]
        if not isinstance(x, str):
            return {"isvalid": False}
        try:
            if _PUBKEY.match(x):
                pub = bytes.fromhex(x)
                if not is_valid_pubkey(pub):
                    return {"isvalid": False}
                return {"isvalid": True, **address_view(ctx, hash160(pub), pub)}
            try:
                pkh = ctx.codec.decode(x)
            except InvalidAddress:
                secret = ctx.codec.decode_wif(x)
                key = KeyPair(secret)
                return {"isvalid": True, **address_view(ctx, key.pubkey_hash, key.pubkey)}
            return {"isvalid": True, **address_view(ctx, pkh)}
        except (InvalidAddress, ValueError):
            return {"isvalid": False}

    def getwalletinfo(p: list) -> dict:
        # getwalletinfo in rpcwallet.cpp; no native currency, so no unspent outputs.
        return {"walletversion": 60000, "balance": 0.0, "walletdbversion": 3,
                "txcount": ctx.store.tx_count(), "utxocount": 0,
                "keypoololdest": int(ctx.started), "keypoolsize": len(ctx.wallet)}

    def createkeypairs(p: list) -> list:
        n = as_count(p[0]) if given(p, 0) else 1
        if n < 1 or n > 1000:
            raise RpcError(RPC_INVALID_PARAMETER, "count should be between 1 and 1000")
        out = []
        for _ in range(n):
            k = KeyPair.generate()
            out.append({"address": ctx.codec.encode(k.pubkey_hash), "pubkey": k.pubkey.hex(),
                        "privkey": ctx.codec.encode_wif(k.secret)})
        return out

    for name, fn in [("getnewaddress", getnewaddress), ("getaddresses", getaddresses),
                     ("validateaddress", validateaddress), ("getwalletinfo", getwalletinfo),
                     ("createkeypairs", createkeypairs)]:
        register(table, name, fn)
