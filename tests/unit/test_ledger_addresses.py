"""ledger.addresses: MultiChain-style Base58Check. With versions 00/80 and a zero checksum
mask it is Bitcoin's encoding (checked against Bitcoin test vectors); 4-byte versions and a
checksum mask round-trip; a bad checksum, a wrong version or a bad character is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.addresses import AddressCodec, b58decode, b58encode
from ledger.errors import InvalidAddress
from ledger.hashing import hash160
from ledger.keys import KeyPair

BITCOIN = AddressCodec(b"\x00", b"\x80", b"\x00\x00\x00\x00")
MULTICHAIN = AddressCodec(bytes.fromhex("00f3e76a"), bytes.fromhex("808fcb01"),
                          bytes.fromhex("5e712340"))
G_COMPRESSED = bytes.fromhex(
    "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")


def test_address_bitcoin_vector_generator_point():
    assert KeyPair((1).to_bytes(32, "big")).pubkey == G_COMPRESSED
    pkh = hash160(G_COMPRESSED)
    assert pkh.hex() == "751e76e8199196d454941c45d1b3a323f1433bd6"
    assert BITCOIN.encode(pkh) == "1BgGZ9tcN4rm9KBzDn7KprQz87SZ26SAMH"
    assert BITCOIN.decode("1BgGZ9tcN4rm9KBzDn7KprQz87SZ26SAMH") == pkh


def test_address_bitcoin_vector_wif_of_secret_one():
    secret = (1).to_bytes(32, "big")
    wif = "KwDiBf89QgGbjEhKnhXJuH7LrciVrZi3qYjgd9M7rFU73sVHnoWn"
    assert BITCOIN.encode_wif(secret) == wif
    assert BITCOIN.decode_wif(wif) == secret


@pytest.mark.parametrize(("pkh_hex", "address"), [
    ("00" * 20, "1111111111111111111114oLvT2"),
    ("010966776006953d5567439e5e39f86a0d273bee", "16UwLL9Risc3QfPqBUvKofHmBQ7wMtjvM"),
])
def test_address_bitcoin_vectors(pkh_hex, address):
    assert BITCOIN.encode(bytes.fromhex(pkh_hex)) == address
    assert BITCOIN.decode(address).hex() == pkh_hex


def test_address_base58_leading_zeros():
    assert b58encode(b"\x00\x00\x01") == "112"
    assert b58decode("112") == b"\x00\x00\x01"
    assert b58encode(b"") == "" and b58decode("") == b""


@given(st.binary(min_size=20, max_size=20))
def test_address_four_byte_versions_round_trip(pkh):
    address = MULTICHAIN.encode(pkh)
    assert MULTICHAIN.decode(address) == pkh
    assert MULTICHAIN.is_valid(address)
    assert not BITCOIN.is_valid(address)  # another chain's encoding is refused


@given(st.binary(min_size=32, max_size=32))
def test_address_four_byte_wif_round_trip(secret):
    assert MULTICHAIN.decode_wif(MULTICHAIN.encode_wif(secret)) == secret


def test_address_version_bytes_are_interleaved_not_prefixed():
    raw = b58decode(MULTICHAIN.encode(bytes(range(20))))
    # version 00 f3 e7 6a, one byte in front and one after every 5 payload bytes
    assert raw[:24] == bytes([0x00, 0, 1, 2, 3, 4, 0xF3, 5, 6, 7, 8, 9, 0xE7, 10, 11, 12, 13, 14,
                              0x6A, 15, 16, 17, 18, 19])


def test_address_checksum_mask_changes_the_encoding():
    unmasked = AddressCodec(bytes.fromhex("00f3e76a"), bytes.fromhex("808fcb01"), bytes(4))
    pkh = bytes(range(20))
    assert unmasked.encode(pkh) != MULTICHAIN.encode(pkh)
    with pytest.raises(InvalidAddress, match="checksum"):
        unmasked.decode(MULTICHAIN.encode(pkh))


@pytest.mark.parametrize("codec", [BITCOIN, MULTICHAIN], ids=["bitcoin", "4-byte"])
def test_address_bad_checksum_refused(codec):
    pkh = bytes(range(20))
    raw = b58decode(codec.encode(pkh))
    for i in (-1, -4):
        broken = bytearray(raw)
        broken[i] ^= 0x01
        with pytest.raises(InvalidAddress, match="checksum"):
            codec.decode(b58encode(bytes(broken)))
    wif_raw = bytearray(b58decode(codec.encode_wif(b"\x07" * 32)))
    wif_raw[-1] ^= 0x01
    with pytest.raises(InvalidAddress, match="checksum"):
        codec.decode_wif(b58encode(bytes(wif_raw)))


def test_address_malformed_strings_refused():
    good = BITCOIN.encode(bytes(range(20)))
    for bad in ["", "1", good[:-1], good + "1", good.replace(good[5], "0"), "I" * 34,
                "l" * 34, "O" + good[1:], None, 12345]:
        with pytest.raises(InvalidAddress):
            BITCOIN.decode(bad)  # type: ignore[arg-type]
        assert not BITCOIN.is_valid(bad)  # type: ignore[arg-type]


def test_address_wrong_version_refused():
    other = AddressCodec(b"\x6f", b"\xef", bytes(4))  # Bitcoin testnet versions
    with pytest.raises(InvalidAddress, match="version"):
        BITCOIN.decode(other.encode(bytes(20)))


def test_hash160_of_a_public_key_is_remembered_and_the_memo_stays_bounded(monkeypatch):
    import hashlib

    from ledger import hashing

    monkeypatch.setattr(hashing, "_HASH160_MEMO", {})
    monkeypatch.setattr(hashing, "HASH160_MEMO_SIZE", 2)
    keys = [bytes([2]) + bytes([i]) * 32 for i in range(3)]
    want = [hashlib.new("ripemd160", hashlib.sha256(k).digest()).digest() for k in keys]
    assert [hash160(k) for k in keys] == want
    assert [hash160(k) for k in keys] == want  # from the memo, or computed again
    assert len(hashing._HASH160_MEMO) <= 2
    assert hash160(b"not a key") == hashlib.new(
        "ripemd160", hashlib.sha256(b"not a key").digest()).digest()
    assert b"not a key" not in hashing._HASH160_MEMO
