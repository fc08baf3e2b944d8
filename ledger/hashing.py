"""Hash functions: SHA-256, double SHA-256 and HASH160, all from the standard library."""

from __future__ import annotations

import hashlib

from ledger.types import Hash32, PubKeyHash


def sha256(data: bytes) -> bytes:
    """One round of SHA-256."""
    return hashlib.sha256(data).digest()


def sha256d(data: bytes) -> Hash32:
    """Double SHA-256, as Bitcoin and MultiChain use for txids and block hashes."""
    return Hash32(hashlib.sha256(hashlib.sha256(data).digest()).digest())


def _ripemd160_prototype() -> hashlib._Hash | None:
    try:
        return hashlib.new("ripemd160")
    except ValueError:  # OpenSSL 3 may leave ripemd160 out of the default provider
        return None


_RIPEMD160 = _ripemd160_prototype()
"""An empty RIPEMD-160 to copy: `hashlib.new("ripemd160", ...)` looks the algorithm up in
OpenSSL on every call (measured: 2.2 us a call against 0.9 for a copy), and a syncing node
hashes every transaction's sender."""


_HASH160_MEMO: dict[bytes, PubKeyHash] = {}
HASH160_MEMO_SIZE = 4096
"""Public keys whose HASH160 is remembered (a chain has few senders and miners, and every
relayed transaction and block asks again: 1.5-5 us each, OpenSSL's RIPEMD-160 lookup most
of it). Emptied when full; dict reads and writes are atomic, so threads may share it."""


def hash160(data: bytes) -> PubKeyHash:
    """RIPEMD-160 of SHA-256; falls back to a pure-Python RIPEMD-160 where OpenSSL lacks it."""
    memo = type(data) is bytes and len(data) == 33  # a compressed public key
    if memo and (h := _HASH160_MEMO.get(data)) is not None:
        return h
    inner = hashlib.sha256(data).digest()
    if _RIPEMD160 is not None:
        r = _RIPEMD160.copy()
        r.update(inner)
        h = PubKeyHash(r.digest())
    else:
        from ledger._ripemd160 import ripemd160

        h = PubKeyHash(ripemd160(inner))
    if memo:
        if len(_HASH160_MEMO) >= HASH160_MEMO_SIZE:
            _HASH160_MEMO.clear()
        _HASH160_MEMO[data] = h
    return h
