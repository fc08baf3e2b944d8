"""node/p2p/framing.py: frames are magic | type | length | checksum | payload, read strictly.

A frame round-trips; a wrong magic, an oversize length or a bad checksum raises FrameError
(the connection is dropped), the first two before any payload is read; a stream that ends
inside a header or a payload raises IncompleteReadError.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct

import pytest

from ledger.errors import DecodeError
from node.p2p.framing import HEADER_SIZE, FrameError, encode_frame, read_frame

MAGIC = b"\xfa\xce\xb0\x0c"
LIMIT = 1024


def reader_of(data: bytes, *, eof: bool = True) -> asyncio.StreamReader:
    r = asyncio.StreamReader()
    r.feed_data(data)
    if eof:
        r.feed_eof()
    return r


def read(data: bytes, *, eof: bool = True, magic: bytes = MAGIC, limit: int = LIMIT):
    async def go():
        return await asyncio.wait_for(read_frame(reader_of(data, eof=eof), magic, limit), 2)
    return asyncio.run(go())


def read_all(data: bytes) -> list[tuple[int, bytes]]:
    async def go():
        r = reader_of(data)
        out = []
        while not r.at_eof():
            out.append(await read_frame(r, MAGIC, LIMIT))
        return out
    return asyncio.run(go())


def test_p2p_framing_header_layout():
    frame = encode_frame(MAGIC, 9, b"abc")
    assert HEADER_SIZE == 13
    magic, kind, length, check = struct.unpack("<4sBI4s", frame[:HEADER_SIZE])
    assert (magic, kind, length) == (MAGIC, 9, 3)
    assert check == hashlib.sha256(b"abc").digest()[:4]
    assert frame[HEADER_SIZE:] == b"abc"


@pytest.mark.parametrize("payload", [b"", b"x", bytes(range(256)) * 4])
def test_p2p_framing_round_trip(payload):
    assert read(encode_frame(MAGIC, 6, payload)) == (6, payload)


def test_p2p_framing_consecutive_frames_on_one_stream():
    data = b"".join(encode_frame(MAGIC, t, bytes([t]) * t) for t in (1, 2, 3, 15))
    assert read_all(data) == [(1, b"\x01"), (2, b"\x02" * 2), (3, b"\x03" * 3),
                              (15, b"\x0f" * 15)]


def test_p2p_framing_payload_at_the_limit_is_accepted():
    assert read(encode_frame(MAGIC, 11, b"z" * LIMIT)) == (11, b"z" * LIMIT)


def test_p2p_framing_oversize_frame_refused_before_its_payload():
    header = encode_frame(MAGIC, 9, b"z" * (LIMIT + 1))[:HEADER_SIZE]
    # No payload and no EOF: the reader must not wait for the payload of a refused frame.
    with pytest.raises(FrameError, match="exceeds the limit"):
        read(header, eof=False)


def test_p2p_framing_huge_declared_length_refused():
    header = MAGIC + struct.pack("<BI", 9, 0xFFFFFFFF) + b"\0" * 4
    with pytest.raises(FrameError, match="exceeds the limit"):
        read(header, eof=False)


def test_p2p_framing_wrong_magic_refused_before_its_payload():
    frame = encode_frame(b"\x00\x01\x02\x03", 4, b"12345678")
    with pytest.raises(FrameError, match="magic"):
        read(frame[:HEADER_SIZE], eof=False)


def test_p2p_framing_bad_checksum_refused():
    frame = bytearray(encode_frame(MAGIC, 8, b"a transaction"))
    frame[-1] ^= 0x01  # payload changed after the checksum was taken
    with pytest.raises(FrameError, match="checksum"):
        read(bytes(frame))
    frame = bytearray(encode_frame(MAGIC, 8, b"a transaction"))
    frame[HEADER_SIZE - 1] ^= 0x80  # checksum itself damaged
    with pytest.raises(FrameError, match="checksum"):
        read(bytes(frame))


def test_p2p_framing_frame_error_is_a_decode_error():
    assert issubclass(FrameError, DecodeError)


@pytest.mark.parametrize("cut", [0, 1, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 5])
def test_p2p_framing_truncated_frame_raises_incomplete_read(cut):
    frame = encode_frame(MAGIC, 9, b"p" * 20)
    with pytest.raises(asyncio.IncompleteReadError):
        read(frame[:cut])


def test_p2p_framing_type_must_fit_one_byte():
    with pytest.raises(struct.error):
        encode_frame(MAGIC, 256, b"")
