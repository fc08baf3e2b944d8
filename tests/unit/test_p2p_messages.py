"""node/p2p/messages.py: every payload round-trips, and decoders refuse what they must.

Decoders are strict like the ledger's: truncated input, trailing bytes, lists over their
limit and unknown inventory kinds raise DecodeError, so a peer's malformed message is caught
(and penalised) in one place.
"""

from __future__ import annotations

import os

import pytest

from ledger.codec import Writer
from ledger.errors import DecodeError
from node.p2p import messages as m
from node.p2p.messages import Inv, Msg

H = [bytes([i]) * 32 for i in range(4)]


def hello() -> m.Hello:
    return m.Hello(m.PROTOCOL, H[0], H[1], 8571, b"\x02" + H[2])


def test_p2p_messages_types_are_distinct_single_bytes():
    values = [t.value for t in Msg]
    assert len(set(values)) == len(values)
    assert all(0 < v < 256 for v in values)
    assert {Inv.TX, Inv.BLOCK} == {1, 2}


def test_p2p_messages_hello_round_trip():
    h = hello()
    assert m.Hello.decode(h.encode()) == h


@pytest.mark.parametrize("height", [-1, 0, 1, 2**32 - 2])
def test_p2p_messages_ready_round_trip(height):
    r = m.Ready(height, H[2])
    assert m.Ready.decode(r.encode()) == r
    with pytest.raises(DecodeError):
        m.Ready.decode(r.encode()[:-1])
    with pytest.raises(DecodeError):
        m.Ready.decode(r.encode() + b"\0")


def test_p2p_messages_hello_strict():
    raw = hello().encode()
    with pytest.raises(DecodeError):
        m.Hello.decode(raw[:-1])
    with pytest.raises(DecodeError):
        m.Hello.decode(raw + b"\0")
    with pytest.raises(DecodeError):
        m.Hello.decode(b"")


def test_p2p_messages_auth_round_trip_and_limits():
    pub, sig = b"\x02" + H[3], os.urandom(71)
    assert m.decode_auth(m.encode_auth(pub, sig)) == (pub, sig)
    raw = m.encode_auth(pub, sig)
    with pytest.raises(DecodeError):
        m.decode_auth(raw[:-1])
    with pytest.raises(DecodeError):
        m.decode_auth(raw + b"x")
    with pytest.raises(DecodeError, match="exceeds"):
        m.decode_auth(m.encode_auth(pub, os.urandom(81)))


def test_p2p_messages_inv_round_trip():
    items = [(Inv.TX, H[0]), (Inv.BLOCK, H[1]), (Inv.TX, H[2])]
    assert m.decode_inv(m.encode_inv(items)) == items
    assert m.decode_inv(m.encode_inv([])) == []


def test_p2p_messages_inv_at_and_over_the_limit():
    many = [(Inv.TX, H[0])] * m.MAX_INV
    assert len(m.decode_inv(m.encode_inv(many))) == m.MAX_INV
    with pytest.raises(DecodeError, match="too many"):
        m.decode_inv(m.encode_inv(many + [(Inv.TX, H[1])]))


def test_p2p_messages_inv_refuses_unknown_kind_and_bad_length():
    w = Writer()
    w.varint(1)
    w.u8(3)
    w.fixed(H[0])
    with pytest.raises(DecodeError, match="unknown inventory kind"):
        m.decode_inv(w.getvalue())
    raw = m.encode_inv([(Inv.BLOCK, H[0])])
    with pytest.raises(DecodeError):
        m.decode_inv(raw[:-1])
    with pytest.raises(DecodeError):
        m.decode_inv(raw + b"\0")


def test_p2p_messages_locator_round_trip_and_limit():
    hashes = H[:3]
    assert m.decode_locator(m.encode_locator(hashes, 500)) == (hashes, 500)
    full = [H[0]] * m.MAX_LOCATOR
    assert m.decode_locator(m.encode_locator(full, 1)) == (full, 1)
    with pytest.raises(DecodeError, match="too long"):
        m.decode_locator(m.encode_locator(full + [H[1]], 1))
    with pytest.raises(DecodeError):
        m.decode_locator(m.encode_locator(hashes, 500)[:-2])


def test_p2p_messages_blocks_round_trip():
    raws = [os.urandom(n) for n in (0, 1, 300)]
    assert m.decode_blocks(m.encode_blocks(41, raws), 1000) == (41, raws)
    assert m.decode_blocks(m.encode_blocks(-1, []), 1000) == (-1, [])


def test_p2p_messages_blocks_limits():
    with pytest.raises(DecodeError, match="exceeds"):
        m.decode_blocks(m.encode_blocks(3, [b"x" * 101]), 100)
    w = Writer()
    w.u32(1)
    w.varint(100_001)
    with pytest.raises(DecodeError, match="too many"):
        m.decode_blocks(w.getvalue(), 100)
    raw = m.encode_blocks(5, [b"abc"])
    with pytest.raises(DecodeError):
        m.decode_blocks(raw[:-1], 100)
    with pytest.raises(DecodeError):
        m.decode_blocks(raw + b"\0", 100)


def test_p2p_messages_params_round_trip():
    text = "chain-name = plant\nchain-description = Zürich line\n"
    assert m.decode_params(m.encode_params(text, True)) == (text, True)
    assert m.decode_params(m.encode_params(text, False)) == (text, False)
    with pytest.raises(DecodeError):
        m.decode_params(m.encode_params(text, True)[:-1])


def test_p2p_messages_text_round_trip_truncated_to_1000_bytes():
    assert m.decode_text(m.encode_text("refused: no connect")) == "refused: no connect"
    assert m.decode_text(m.encode_text("x" * 5000)) == "x" * 1000
    # A cut inside a multi-byte character decodes with a replacement, never an exception.
    assert m.decode_text(m.encode_text("é" * 600)).startswith("é" * 500)
    w = Writer()
    w.var_bytes(b"y" * 1001)
    with pytest.raises(DecodeError, match="exceeds"):
        m.decode_text(w.getvalue())


def test_messages_params_that_are_not_utf8_are_a_decode_error():
    # Found by bench/fuzz (handshake target): a UnicodeDecodeError escaped the handlers that
    # turn DecodeError into "malformed message" and a ban.
    with pytest.raises(DecodeError, match="UTF-8"):
        m.decode_params(b"\x02\xa5\xa5\x01")


def _compact(n: int) -> m.CompactBlock:
    from ledger.blocks import BLOCK_VERSION, BlockHeader

    header = BlockHeader(BLOCK_VERSION, 7, os.urandom(32), os.urandom(32), 1234)
    return m.CompactBlock(header, os.urandom(65),
                          tuple((os.urandom(32), os.urandom(32)) for _ in range(n)))


@pytest.mark.parametrize("n", [0, 1, 300])
def test_p2p_messages_compact_block_round_trip(n):
    cb = _compact(n)
    assert m.CompactBlock.decode(cb.encode()) == cb


def test_p2p_messages_compact_block_strict():
    raw = _compact(3).encode()
    for bad in (raw[:-1], raw + b"\x00", raw[:76]):
        with pytest.raises(DecodeError):
            m.CompactBlock.decode(bad)
    # A count the payload cannot hold is refused before anything is allocated for it.
    w = Writer()
    w.fixed(raw[:77 + 65])
    w.varint(10**6)
    with pytest.raises(DecodeError):
        m.CompactBlock.decode(w.getvalue() + bytes(64))


def test_p2p_messages_blocktxn_round_trips_and_limits():
    h = os.urandom(32)
    assert m.decode_getblocktxn(m.encode_getblocktxn(h, [0, 5, 2**32 - 1])) == \
        (h, [0, 5, 2**32 - 1])
    raws = [os.urandom(10), b"", os.urandom(300)]
    assert m.decode_blocktxn(m.encode_blocktxn(h, raws), 1000) == (h, raws)
    with pytest.raises(DecodeError):
        m.decode_blocktxn(m.encode_blocktxn(h, raws), 100)  # one tx over the size limit
    with pytest.raises(DecodeError):
        m.decode_getblocktxn(m.encode_getblocktxn(h, [1, 2])[:-1])
    w = Writer()
    w.fixed(h)
    w.varint(10**6)
    with pytest.raises(DecodeError):
        m.decode_getblocktxn(w.getvalue() + bytes(8))


def test_p2p_messages_raw_hash_names_the_exact_bytes():
    assert m.raw_hash(b"abc") != m.raw_hash(b"abd")
    assert len(m.raw_hash(b"")) == 32
