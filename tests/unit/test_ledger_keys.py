"""ledger.keys: verification with the cache of parsed public keys still answers per key."""

from __future__ import annotations

import hashlib

from ledger import keys
from ledger.keys import KeyPair, verify

KEY = KeyPair((1).to_bytes(32, "big"))
OTHER = KeyPair((2).to_bytes(32, "big"))
DIGEST = hashlib.sha256(b"an item").digest()


def test_ledger_keys_verify_with_cached_keys_tells_signers_apart():
    sig = KEY.sign(DIGEST)
    for _ in range(3):  # the first call parses KEY, the later ones reuse it
        assert verify(KEY.pubkey, sig, DIGEST)
        assert not verify(OTHER.pubkey, sig, DIGEST)
        assert not verify(KEY.pubkey, sig, hashlib.sha256(b"another").digest())
    assert verify(OTHER.pubkey, OTHER.sign(DIGEST), DIGEST)


def test_ledger_keys_invalid_public_key_is_refused_every_time_and_not_cached():
    bad = b"\x02" + bytes(32)  # x = 0 is not on the curve
    before = keys._public_key.cache_info().currsize
    for _ in range(2):
        assert not verify(bad, KEY.sign(DIGEST), DIGEST)
        assert not verify(b"\x05" * 33, KEY.sign(DIGEST), DIGEST)
    assert keys._public_key.cache_info().currsize == before


def test_ledger_keys_cache_is_bounded():
    assert keys._public_key.cache_info().maxsize == keys.PUBKEY_CACHE
