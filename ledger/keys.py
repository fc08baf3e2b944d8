"""secp256k1 keys through coincurve (libsecp256k1): signing, verification, recovery.

Transaction signatures are DER (libsecp256k1 produces and accepts only low-S, so a signature
cannot be malleated); block signatures are 65-byte recoverable signatures so the miner's key
is recovered from the signature rather than stored.
"""

from __future__ import annotations

import secrets
from functools import lru_cache

import coincurve

from ledger.errors import InvalidSignature
from ledger.hashing import hash160
from ledger.types import PubKeyHash

MAX_DER_SIGNATURE = 72
PUBKEY_CACHE = 4096
"""Parsed public keys kept for verification: a chain has few senders, and parsing (which
decompresses the point) costs about 7 of a verification's 50 us."""


def new_private_key() -> bytes:
    """A fresh random 32-byte private key."""
    while True:
        secret = secrets.token_bytes(32)
        try:
            coincurve.PrivateKey(secret)
            return secret
        except ValueError:  # zero or above the curve order: astronomically rare
            continue


class KeyPair:
    """A private key with its compressed public key and public key hash."""

    __slots__ = ("_key", "secret", "pubkey", "pubkey_hash")

    def __init__(self, secret: bytes) -> None:
        self._key = coincurve.PrivateKey(secret)
        self.secret = secret
        self.pubkey: bytes = self._key.public_key.format(compressed=True)
        self.pubkey_hash: PubKeyHash = hash160(self.pubkey)

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(new_private_key())

    def sign(self, digest: bytes) -> bytes:
        """DER signature of a 32-byte digest (deterministic, RFC 6979, low-S)."""
        return self._key.sign(digest, hasher=None)

    def sign_recoverable(self, digest: bytes) -> bytes:
        """65-byte recoverable signature of a 32-byte digest."""
        return self._key.sign_recoverable(digest, hasher=None)


@lru_cache(maxsize=PUBKEY_CACHE)
def _public_key(pubkey: bytes) -> coincurve.PublicKey:
    """A parsed key (raises ValueError or TypeError, which are not cached). Thread-safe:
    lru_cache locks, and verifying with a parsed key only reads it."""
    return coincurve.PublicKey(pubkey)


def verify(pubkey: bytes, signature: bytes, digest: bytes) -> bool:
    """True when the DER signature of digest verifies under the compressed public key."""
    try:
        return _public_key(bytes(pubkey)).verify(signature, digest, hasher=None)
    except (ValueError, TypeError):
        return False


def recover(signature: bytes, digest: bytes) -> bytes:
    """The compressed public key that made a recoverable signature; raises InvalidSignature."""
    if len(signature) != 65:
        raise InvalidSignature("recoverable signature must be 65 bytes")
    try:
        return coincurve.PublicKey.from_signature_and_message(
            signature, digest, hasher=None
        ).format(compressed=True)
    except (ValueError, TypeError) as e:
        raise InvalidSignature(f"cannot recover a public key: {e}") from None


def is_valid_pubkey(pubkey: bytes) -> bool:
    """True for a valid compressed secp256k1 public key."""
    if len(pubkey) != 33 or pubkey[0] not in (2, 3):
        return False
    try:
        coincurve.PublicKey(pubkey)
        return True
    except ValueError:
        return False
