"""ledger.hashing: HASH160 from a copied RIPEMD-160 prototype equals the reference values,
call after call, and the pure-Python fallback gives the same bytes."""

from __future__ import annotations

import hashlib

import ledger.hashing as hashing
from ledger.hashing import hash160, sha256d

# RIPEMD-160(SHA-256(x)) of b"" and of b"abc" (Bitcoin's HASH160).
VECTORS = {
    b"": "b472a266d0bd89c13706a4132ccfb16f7c3b9fcb",
    b"abc": "bb1be98c142444d7a56aa3981c3942a978e4dc33",
}


def test_ledger_hashing_hash160_vectors_repeatedly():
    for _ in range(3):  # the prototype is copied, never updated itself
        for data, want in VECTORS.items():
            assert hash160(data).hex() == want


def test_ledger_hashing_hash160_fallback_gives_the_same_bytes(monkeypatch):
    monkeypatch.setattr(hashing, "_RIPEMD160", None)
    for data, want in VECTORS.items():
        assert hash160(data).hex() == want


def test_ledger_hashing_sha256d():
    assert sha256d(b"abc") == hashlib.sha256(hashlib.sha256(b"abc").digest()).digest()
