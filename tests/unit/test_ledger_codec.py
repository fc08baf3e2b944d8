"""ledger.codec: fixed-width integers and compact sizes; the reader refuses short input,
leftover bytes and non-minimal compact sizes, so every value has exactly one encoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.codec import Reader, Writer, encode_varint
from ledger.errors import DecodeError

U64 = st.integers(0, 2**64 - 1)


@pytest.mark.parametrize(("value", "encoded"), [
    (0, "00"), (0xFC, "fc"), (0xFD, "fdfd00"), (0xFFFF, "fdffff"), (0x10000, "fe00000100"),
    (0xFFFFFFFF, "feffffffff"), (0x100000000, "ff0000000001000000"),
    (2**64 - 1, "ffffffffffffffffff"),
])
def test_codec_varint_boundaries(value, encoded):
    assert encode_varint(value).hex() == encoded
    r = Reader(bytes.fromhex(encoded))
    assert r.varint() == value
    r.end()


@pytest.mark.parametrize("encoded", [
    "fd0000", "fdfc00",               # fits in one byte
    "fe00000000", "feffff0000",       # fits in two
    "ff0000000000000000", "ffffffffff00000000",  # fits in four
])
def test_codec_refuses_non_minimal_varints(encoded):
    with pytest.raises(DecodeError, match="non-canonical"):
        Reader(bytes.fromhex(encoded)).varint()


def test_codec_refuses_negative_varint():
    with pytest.raises(ValueError):
        encode_varint(-1)


@given(U64)
def test_codec_varint_round_trip(value):
    r = Reader(encode_varint(value))
    assert r.varint() == value
    r.end()


@given(st.lists(st.tuples(st.integers(0, 255), st.integers(0, 2**16 - 1), st.integers(0, 2**32 - 1),
                          U64, st.binary(max_size=40))))
def test_codec_writer_reader_round_trip(rows):
    w = Writer()
    for a, b, c, d, blob in rows:
        w.u8(a)
        w.u16(b)
        w.u32(c)
        w.u64(d)
        w.var_bytes(blob)
    r = Reader(w.getvalue())
    for a, b, c, d, blob in rows:
        assert (r.u8(), r.u16(), r.u32(), r.u64(), r.var_bytes(1000)) == (a, b, c, d, blob)
    r.end()


@given(st.binary(min_size=1, max_size=64))
def test_codec_refuses_truncated_input(blob):
    w = Writer()
    w.var_bytes(blob)
    data = w.getvalue()
    for cut in range(len(data)):
        r = Reader(data[:cut])
        with pytest.raises(DecodeError):
            r.var_bytes(1000)


def test_codec_refuses_truncated_fixed_width_fields():
    for read, size in [(Reader.u8, 1), (Reader.u16, 2), (Reader.u32, 4), (Reader.u64, 8)]:
        with pytest.raises(DecodeError):
            read(Reader(bytes(size - 1)))
    with pytest.raises(DecodeError):
        Reader(b"\xfd\x01").varint()
    with pytest.raises(DecodeError):
        Reader(b"abc").fixed(4)


def test_codec_refuses_trailing_bytes():
    r = Reader(b"\x01\x02")
    assert r.u8() == 1
    assert r.remaining() == 1
    with pytest.raises(DecodeError, match="trailing"):
        r.end()


def test_codec_var_bytes_limit():
    w = Writer()
    w.var_bytes(b"x" * 10)
    with pytest.raises(DecodeError, match="limit"):
        Reader(w.getvalue()).var_bytes(9)


@pytest.mark.parametrize("blob", [
    b"\x05abcd",  # a one-byte length and too few bytes after it
    b"\xfd\x00",  # a two-byte length cut short
    b"\xfd\x00\x01abcd",  # a two-byte length (256) and too few bytes
    b"",  # no length at all
])
def test_codec_var_bytes_refuses_truncated_input(blob):
    with pytest.raises(DecodeError, match="truncated"):
        Reader(blob).var_bytes(1 << 20)


def test_codec_var_bytes_refuses_non_minimal_and_over_limit_long_lengths():
    with pytest.raises(DecodeError, match="non-canonical"):
        Reader(b"\xfd\x05\x00abcde").var_bytes(1 << 20)
    data = b"\xfd\x00\x01" + bytes(256)
    with pytest.raises(DecodeError, match="limit"):
        Reader(data).var_bytes(255)
    r = Reader(data)
    assert r.var_bytes(256) == bytes(256)
    r.end()


def test_codec_unpack_reads_several_fields_or_refuses_short_input():
    import struct

    st3 = struct.Struct("<2sHI")
    r = Reader(b"ab\x01\x00\x02\x00\x00\x00\x07")
    assert r.unpack(st3) == (b"ab", 1, 2)
    assert r.u8() == 7
    r.end()
    with pytest.raises(DecodeError, match="truncated"):
        Reader(bytes(st3.size - 1)).unpack(st3)
