"""Private messages (spec 1.9): key files, envelope round trip, tamper detection, key wrap."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triggers import crypto
from triggers.errors import ConfigurationInvalid, DecryptionFailed

KEY = crypto.generate_keypair()
OTHER = crypto.generate_keypair()


def test_crypto_key_files_are_a_pair_and_private_is_0600(tmp_path: Path) -> None:
    pair = crypto.write_keypair(tmp_path, KEY)
    assert stat.S_IMODE(pair.private_path.stat().st_mode) == 0o600
    assert pair.public_pem.startswith("-----BEGIN PUBLIC KEY-----")
    crypto.check_keypair(pair.private_path, pair.public_path)
    with pytest.raises(ConfigurationInvalid, match="already exists"):
        crypto.write_keypair(tmp_path, OTHER)
    other = crypto.write_keypair(tmp_path / "o", OTHER)
    with pytest.raises(ConfigurationInvalid, match="not one key pair"):
        crypto.check_keypair(pair.private_path, other.public_path)


def test_crypto_refuses_short_keys() -> None:
    with pytest.raises(ConfigurationInvalid):
        crypto.generate_keypair(1024)


@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=5000))
def test_crypto_envelope_round_trip(plaintext: bytes) -> None:
    password = crypto.new_password()
    envelope = crypto.seal(plaintext, password)
    assert crypto.is_envelope(envelope)
    assert crypto.open_envelope(envelope, password) == plaintext


def test_crypto_envelope_shape_matches_spec() -> None:
    obj = json.loads(crypto.seal(b"<x/>", crypto.new_password()))
    assert obj["chainmill"] == "private" and obj["v"] == 1
    assert obj["cipher"] == "aes-256-cbc" and obj["mac"] == "hmac-sha256"
    assert len(base64.b64decode(obj["iv"])) == 16 and len(base64.b64decode(obj["tag"])) == 32


def _tampered(envelope: bytes, field: str) -> bytes:
    obj = json.loads(envelope)
    raw = bytearray(base64.b64decode(obj[field]))
    raw[len(raw) // 2] ^= 0x01
    obj[field] = base64.b64encode(bytes(raw)).decode()
    return json.dumps(obj).encode()


@pytest.mark.parametrize("field", ["ciphertext", "iv", "tag"])
def test_crypto_tampered_envelope_fails_its_check(field: str) -> None:
    password = crypto.new_password()
    envelope = crypto.seal(b"<update_t><id>1</id></update_t>", password)
    with pytest.raises(DecryptionFailed, match="tag|wrong length"):
        crypto.open_envelope(_tampered(envelope, field), password)


def test_crypto_wrong_password_fails() -> None:
    envelope = crypto.seal(b"secret", crypto.new_password())
    with pytest.raises(DecryptionFailed):
        crypto.open_envelope(envelope, crypto.new_password())


def test_crypto_access_entry_wraps_for_one_reader_only() -> None:
    password = crypto.new_password()
    entry = crypto.access_entry("ab" * 32, "1Reader", KEY.public_key(), password)
    parsed = crypto.parse_access_entry(json.dumps(entry).encode())
    assert parsed["alg"] == "RSA-OAEP-SHA256"
    assert parsed["key_fingerprint"] == crypto.fingerprint(KEY.public_key())
    wrapped = base64.b64decode(parsed["wrapped_key"])
    assert crypto.unwrap_password(KEY, wrapped) == password
    with pytest.raises(DecryptionFailed):
        crypto.unwrap_password(OTHER, wrapped)


def test_crypto_public_xml_is_not_an_envelope() -> None:
    assert not crypto.is_envelope(b'<?xml version="1.0"?><insert_t/>')
    assert not crypto.is_envelope(b'{"chainmill": "public"}')
