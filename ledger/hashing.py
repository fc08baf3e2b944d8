"""Hash functions: SHA-256, double SHA-256 and HASH160, all from the standard library."""

import hashlib

from ledger.types import Hash32, PubKeyHash


def sha256(data: bytes) -> bytes:
    """One round of SHA-256."""
    return hashlib.sha256(data).digest()


def sha256d(data: bytes) -> Hash32:
    """Double SHA-256, as Bitcoin and MultiChain use for txids and block hashes."""
    return Hash32(hashlib.sha256(hashlib.sha256(data).digest()).digest())


def hash160(data: bytes) -> PubKeyHash:
    """RIPEMD-160 of SHA-256; falls back to a pure-Python RIPEMD-160 where OpenSSL lacks it."""
    inner = hashlib.sha256(data).digest()
    try:
        return PubKeyHash(hashlib.new("ripemd160", inner).digest())
    except ValueError:  # OpenSSL 3 may leave ripemd160 out of the default provider
        from ledger._ripemd160 import ripemd160

        return PubKeyHash(ripemd160(inner))
