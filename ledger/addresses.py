"""MultiChain-style Base58Check addresses and WIF private keys.

A chain has its own version bytes (`address-pubkeyhash-version`, `private-key-version`) and a
checksum mask (`address-checksum-value`). With a one-byte version this is exactly Bitcoin's
encoding; longer versions are interleaved into the payload: the first version byte goes in
front and each further byte after every floor(len(payload) / len(version)) payload bytes.
The 4-byte double-SHA-256 checksum is XOR-ed with the mask.
"""

from __future__ import annotations

from ledger.errors import InvalidAddress
from ledger.hashing import sha256d
from ledger.types import PubKeyHash

_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}


def b58encode(data: bytes) -> str:
    """Base58 with Bitcoin's alphabet; leading zero bytes become '1'."""
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_ALPHABET[r])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    """Inverse of b58encode; raises InvalidAddress on a character outside the alphabet."""
    n = 0
    for c in text:
        try:
            n = n * 58 + _INDEX[c]
        except KeyError:
            raise InvalidAddress(f"invalid base58 character {c!r}") from None
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    pad = len(text) - len(text.lstrip("1"))
    return b"\0" * pad + body


def _interleave(version: bytes, payload: bytes) -> bytes:
    if len(version) == 1:
        return version + payload
    step = len(payload) // len(version)
    out = bytearray()
    for i, vb in enumerate(version):
        out.append(vb)
        out += payload[i * step : (i + 1) * step]
    out += payload[len(version) * step :]
    return bytes(out)


def _deinterleave(version: bytes, raw: bytes, payload_len: int) -> bytes:
    if len(version) == 1:
        if raw[:1] != version:
            raise InvalidAddress("wrong address version")
        return raw[1:]
    step = payload_len // len(version)
    payload = bytearray()
    pos = 0
    for i, vb in enumerate(version):
        if raw[pos] != vb:
            raise InvalidAddress("wrong address version for this chain")
        pos += 1
        payload += raw[pos : pos + step]
        pos += step
        del i
    payload += raw[pos:]
    return bytes(payload)


class AddressCodec:
    """Encodes and decodes the addresses and WIF keys of one chain."""

    __slots__ = ("pubkeyhash_version", "privkey_version", "checksum_mask", "_cache")

    def __init__(self, pubkeyhash_version: bytes, privkey_version: bytes, checksum_mask: bytes):
        if not pubkeyhash_version or len(checksum_mask) != 4:
            raise ValueError("version bytes required and checksum mask must be 4 bytes")
        self.pubkeyhash_version = pubkeyhash_version
        self.privkey_version = privkey_version
        self.checksum_mask = int.from_bytes(checksum_mask, "big")
        self._cache: dict[bytes, str] = {}

    def _check(self, raw: bytes) -> bytes:
        c = int.from_bytes(sha256d(raw)[:4], "big") ^ self.checksum_mask
        return c.to_bytes(4, "big")

    def encode(self, pubkey_hash: bytes) -> str:
        """Address string of a 20-byte public key hash (memoised: the hot path shows addresses)."""
        s = self._cache.get(pubkey_hash)
        if s is None:
            raw = _interleave(self.pubkeyhash_version, pubkey_hash)
            s = b58encode(raw + self._check(raw))
            if len(self._cache) < 100_000:
                self._cache[pubkey_hash] = s
        return s

    def decode(self, address: str) -> PubKeyHash:
        """The 20-byte public key hash of an address; raises InvalidAddress with the reason."""
        if not isinstance(address, str) or not 20 <= len(address) <= 60:
            raise InvalidAddress(f"Invalid address: {address}")
        data = b58decode(address)
        expected = len(self.pubkeyhash_version) + 20 + 4
        if len(data) != expected:
            raise InvalidAddress(f"Invalid address: {address}")
        raw, check = data[:-4], data[-4:]
        if self._check(raw) != check:
            raise InvalidAddress(f"Invalid address (checksum): {address}")
        return PubKeyHash(_deinterleave(self.pubkeyhash_version, raw, 20))

    def is_valid(self, address: str) -> bool:
        try:
            self.decode(address)
            return True
        except InvalidAddress:
            return False

    def encode_wif(self, secret: bytes) -> str:
        """WIF of a private key whose public key is used compressed."""
        raw = _interleave(self.privkey_version, secret + b"\x01")
        return b58encode(raw + self._check(raw))

    def decode_wif(self, wif: str) -> bytes:
        """The 32-byte secret of a WIF string; raises InvalidAddress."""
        data = b58decode(wif)
        if len(data) != len(self.privkey_version) + 33 + 4:
            raise InvalidAddress("Invalid private key")
        raw, check = data[:-4], data[-4:]
        if self._check(raw) != check:
            raise InvalidAddress("Invalid private key (checksum)")
        payload = _deinterleave(self.privkey_version, raw, 33)
        if payload[-1] != 1:
            raise InvalidAddress("Invalid private key (uncompressed keys are not supported)")
        return payload[:32]
