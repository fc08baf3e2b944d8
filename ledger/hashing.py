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


def hash160(data: bytes) -> PubKeyHash:
    """RIPEMD-160 of SHA-256; falls back to a pure-Python RIPEMD-160 where OpenSSL lacks it."""
    inner = hashlib.sha256(data).digest()
    if _RIPEMD160 is not None:
        h = _RIPEMD160.copy()
        h.update(inner)
        return PubKeyHash(h.digest())
    from ledger._ripemd160 import ripemd160

    return PubKeyHash(ripemd160(inner))
