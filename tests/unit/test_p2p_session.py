"""node/p2p/session.py: the Noise XX key exchange, the signed transcript and sealed records.

Two in-memory sides run the real exchange; the tests then take it apart the ways an
attacker would: a wrong signature, a signature from another session (the reflection attack),
a key other than the claimed one, the other role's signature, truncated and oversized
key-exchange messages, and tampered, replayed, reordered or truncated records.
"""

from __future__ import annotations

import asyncio

import pytest

from ledger.errors import DecodeError
from ledger.keys import KeyPair
from node.p2p.session import (
    CHUNK,
    HandshakeError,
    NoiseHandshake,
    Transport,
    TransportError,
    check_auth,
    sign_auth,
)

CHAIN = b"\x07" * 32


def exchange() -> tuple[NoiseHandshake, NoiseHandshake]:
    """A finished key exchange between an initiator and a responder."""
    i, r = NoiseHandshake(initiator=True), NoiseHandshake(initiator=False)
    m1 = i.first()
    m2 = r.receive(m1)
    assert m2 is not None and not r.complete
    m3 = i.receive(m2)
    assert m3 is not None and i.complete
    assert r.receive(m3) is None and r.complete
    return i, r


def check(sig_pub: bytes, sig: bytes, h: bytes, *, signer_initiator: bool, claimed: bytes,
          mine: bytes) -> None:
    check_auth(sig_pub, sig, chain_id=CHAIN, handshake_hash=h,
               signer_initiator=signer_initiator, claimed_pub=claimed, my_pub=mine)


def read(transport: Transport, data: bytes, max_size: int = 1 << 20) -> tuple[int, bytes]:
    async def go() -> tuple[int, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await transport.read(reader, max_size)
    return asyncio.run(go())


def test_p2p_session_both_sides_share_a_handshake_hash_unique_to_the_session():
    i, r = exchange()
    assert i.handshake_hash == r.handshake_hash and len(i.handshake_hash) == 32
    i2, _ = exchange()
    assert i2.handshake_hash != i.handshake_hash


def test_p2p_session_valid_transcript_signatures_verify_both_ways():
    i, r = exchange()
    a, b = KeyPair.generate(), KeyPair.generate()
    h = i.handshake_hash
    check(a.pubkey, sign_auth(a, CHAIN, h, True, b.pubkey), h, signer_initiator=True,
          claimed=a.pubkey, mine=b.pubkey)
    check(b.pubkey, sign_auth(b, CHAIN, h, False, a.pubkey), h, signer_initiator=False,
          claimed=b.pubkey, mine=a.pubkey)


def test_p2p_session_wrong_signature_is_refused():
    i, _ = exchange()
    a, b, c = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    h = i.handshake_hash
    forged = sign_auth(c, CHAIN, h, True, b.pubkey)  # another key's signature
    with pytest.raises(HandshakeError, match="does not verify"):
        check(a.pubkey, forged, h, signer_initiator=True, claimed=a.pubkey, mine=b.pubkey)
    with pytest.raises(HandshakeError, match="does not verify"):
        check(a.pubkey, b"\x30\x06garbage", h, signer_initiator=True, claimed=a.pubkey,
              mine=b.pubkey)


def test_p2p_session_signature_from_another_session_is_worthless():
    """The reflection attack: a node's signature obtained on the outsider's session with it
    does not verify on the outsider's session with another node."""
    with_a, _ = exchange()
    with_b, _ = exchange()
    a, b = KeyPair.generate(), KeyPair.generate()
    # A signed on its session with the outsider (A responder, the outsider claiming B).
    sig_a = sign_auth(a, CHAIN, with_a.handshake_hash, False, b.pubkey)
    for initiator in (True, False):
        with pytest.raises(HandshakeError, match="does not verify"):
            check(a.pubkey, sig_a, with_b.handshake_hash, signer_initiator=initiator,
                  claimed=a.pubkey, mine=b.pubkey)


def test_p2p_session_signature_is_bound_to_role_chain_and_peer():
    i, _ = exchange()
    a, b, c = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    h = i.handshake_hash
    sig = sign_auth(a, CHAIN, h, True, b.pubkey)
    with pytest.raises(HandshakeError):  # reflected back with the other role
        check(a.pubkey, sig, h, signer_initiator=False, claimed=a.pubkey, mine=b.pubkey)
    with pytest.raises(HandshakeError):  # made for a different peer
        check(a.pubkey, sig, h, signer_initiator=True, claimed=a.pubkey, mine=c.pubkey)
    with pytest.raises(HandshakeError):  # on another chain
        check_auth(a.pubkey, sig, chain_id=b"\x08" * 32, handshake_hash=h,
                   signer_initiator=True, claimed_pub=a.pubkey, my_pub=b.pubkey)


def test_p2p_session_auth_key_must_be_the_claimed_one():
    i, _ = exchange()
    a, b, c = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    h = i.handshake_hash
    sig = sign_auth(a, CHAIN, h, True, b.pubkey)
    with pytest.raises(HandshakeError, match="claimed"):
        check(a.pubkey, sig, h, signer_initiator=True, claimed=c.pubkey, mine=b.pubkey)


@pytest.mark.parametrize("step", [0, 1, 2])
def test_p2p_session_truncated_key_exchange_messages_are_refused(step):
    i, r = NoiseHandshake(initiator=True), NoiseHandshake(initiator=False)
    m1 = i.first()
    if step == 0:
        with pytest.raises(HandshakeError):
            r.receive(m1[:-1])
        return
    m2 = r.receive(m1)
    assert m2 is not None
    if step == 1:
        with pytest.raises(HandshakeError):
            i.receive(m2[:-1])
        return
    m3 = i.receive(m2)
    assert m3 is not None
    with pytest.raises(HandshakeError):
        r.receive(m3[:-1])


def test_p2p_session_key_exchange_refuses_tampered_oversized_and_late_messages():
    i, r = NoiseHandshake(initiator=True), NoiseHandshake(initiator=False)
    m2 = r.receive(i.first())
    assert m2 is not None
    with pytest.raises(HandshakeError):
        i.receive(m2[:40] + bytes([m2[40] ^ 1]) + m2[41:])  # inside the encrypted static
    with pytest.raises(HandshakeError, match="oversized"):
        NoiseHandshake(initiator=False).receive(b"\0" * 5000)
    with pytest.raises(HandshakeError):
        NoiseHandshake(initiator=False).first()
    done_i, done_r = exchange()
    with pytest.raises(HandshakeError, match="after"):
        done_r.receive(b"\0" * 48)
    with pytest.raises(HandshakeError):
        NoiseHandshake(initiator=True).transport()
    assert issubclass(HandshakeError, DecodeError)  # the peer manager drops and penalises


@pytest.mark.parametrize("size", [0, 1, CHUNK - 5, CHUNK, 3 * CHUNK + 17])
def test_p2p_session_records_round_trip_any_size(size):
    i, r = exchange()
    tx, rx = i.transport(), r.transport()
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    wire = tx.seal(9, payload)
    assert payload[:64] not in wire or size < 64  # never in clear
    assert read(rx, wire) == (9, payload)
    # The other direction has its own keys.
    assert read(tx, rx.seal(4, b"pong")) == (4, b"pong")


def test_p2p_session_tampered_record_is_refused():
    i, r = exchange()
    wire = bytearray(i.transport().seal(8, b"order 0: 500 units at 3.10"))
    wire[10] ^= 0x01
    with pytest.raises(TransportError, match="authentication"):
        read(r.transport(), bytes(wire))


def test_p2p_session_replayed_and_reordered_records_are_refused():
    i, r = exchange()
    tx = i.transport()
    first = tx.seal(4, b"one")
    rx = r.transport()
    assert read(rx, first) == (4, b"one")
    with pytest.raises(TransportError):
        read(rx, first)  # replayed

    i2, r2 = exchange()
    tx2 = i2.transport()
    tx2.seal(4, b"one")  # sent, but held back by the attacker
    with pytest.raises(TransportError):
        read(r2.transport(), tx2.seal(4, b"two"))  # reordered: the second before the first


def test_p2p_session_record_from_another_session_is_refused():
    i, _ = exchange()
    _, r2 = exchange()
    with pytest.raises(TransportError):
        read(r2.transport(), i.transport().seal(4, b"x"))


def test_p2p_session_truncated_record_and_oversized_message_are_refused():
    i, r = exchange()
    wire = i.transport().seal(9, b"y" * 100)
    with pytest.raises(asyncio.IncompleteReadError):
        read(r.transport(), wire[:-1])
    i2, r2 = exchange()
    with pytest.raises(TransportError, match="exceeds"):
        read(r2.transport(), i2.transport().seal(9, b"z" * 2000), max_size=1000)
    i3, r3 = exchange()
    with pytest.raises(TransportError, match="shorter"):
        read(r3.transport(), b"\x00\x05abcde")


def test_p2p_session_records_are_standard_noise_transport_messages():
    """Transport seals with the session keys as noiseprotocol's own CipherState does: each
    side's records decrypt with the library's NoiseConnection, and the other way round."""
    i, r = exchange()
    wire = i.transport().seal(8, b"tx bytes")
    assert int.from_bytes(wire[:2], "big") == len(wire) - 2
    assert r._noise.decrypt(wire[2:]) == bytes([8]) + (8).to_bytes(4, "little") + b"tx bytes"
    body = bytes([5]) + (4).to_bytes(4, "little") + b"pong"
    assert i.transport().open(r._noise.encrypt(body)) == body
