"""Canonical binary encoding: a writer, and a reader that refuses short input and leftovers.

Integers are little-endian fixed width or Bitcoin-style compact sizes; a compact size must be
minimally encoded, so every value has exactly one encoding (a second encoding of the same
transaction would otherwise be a second txid).
"""

import struct

from ledger.errors import DecodeError

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class Writer:
    """Accumulates encoded fields; `getvalue()` returns the bytes."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, v: int) -> None:
        self._parts.append(bytes((v,)))

    def u16(self, v: int) -> None:
        self._parts.append(_U16.pack(v))

    def u32(self, v: int) -> None:
        self._parts.append(_U32.pack(v))

    def u64(self, v: int) -> None:
        self._parts.append(_U64.pack(v))

    def varint(self, v: int) -> None:
        self._parts.append(encode_varint(v))

    def fixed(self, b: bytes) -> None:
        self._parts.append(b)

    def var_bytes(self, b: bytes) -> None:
        self._parts.append(encode_varint(len(b)))
        self._parts.append(b)

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


def encode_varint(v: int) -> bytes:
    """Bitcoin compact size."""
    if v < 0:
        raise ValueError("varint must be non-negative")
    if v < 0xFD:
        return bytes((v,))
    if v <= 0xFFFF:
        return b"\xfd" + _U16.pack(v)
    if v <= 0xFFFFFFFF:
        return b"\xfe" + _U32.pack(v)
    return b"\xff" + _U64.pack(v)


class Reader:
    """Reads fields from bytes; any short read, non-minimal varint or leftover raises DecodeError.

    Every transaction and block a node receives goes through here field by field, so the
    methods read with local variables and `unpack_from` instead of calling each other and
    slicing (a relayed or synced transaction is about 20 reads)."""

    __slots__ = ("_data", "_pos", "_len")

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self._pos = 0
        self._len = len(self._data)

    @property
    def pos(self) -> int:
        return self._pos

    def _short(self, n: int) -> DecodeError:
        return DecodeError(f"truncated input: need {n} bytes at offset {self._pos}")

    def u8(self) -> int:
        pos = self._pos
        if pos >= self._len:
            raise DecodeError(f"truncated input at offset {pos}")
        self._pos = pos + 1
        return self._data[pos]

    def _unpack(self, st: struct.Struct) -> int:
        pos = self._pos
        if pos + st.size > self._len:
            raise self._short(st.size)
        self._pos = pos + st.size
        return st.unpack_from(self._data, pos)[0]

    def u16(self) -> int:
        return self._unpack(_U16)

    def u32(self) -> int:
        return self._unpack(_U32)

    def u64(self) -> int:
        return self._unpack(_U64)

    def varint(self) -> int:
        first = self.u8()
        if first < 0xFD:
            return first
        if first == 0xFD:
            v, floor = self.u16(), 0xFD
        elif first == 0xFE:
            v, floor = self.u32(), 0x10000
        else:
            v, floor = self.u64(), 0x100000000
        if v < floor:
            raise DecodeError("non-canonical compact size")
        return v

    def unpack(self, st: struct.Struct) -> tuple:
        """Several fixed-width fields in one read (`st` a little-endian struct.Struct)."""
        pos = self._pos
        if pos + st.size > self._len:
            raise self._short(st.size)
        self._pos = pos + st.size
        return st.unpack_from(self._data, pos)

    # fixed and var_bytes slice in place rather than through a shared helper: they read most
    # fields of every received transaction, and the call saved on each counts there.
    def fixed(self, n: int) -> bytes:
        pos = self._pos
        end = pos + n
        if n < 0 or end > self._len:
            raise self._short(n)
        self._pos = end
        return self._data[pos:end]

    def var_bytes(self, limit: int) -> bytes:
        pos = self._pos
        data = self._data
        if pos < self._len and data[pos] < 0xFD:  # the one-byte length of most fields
            n = data[pos]
            pos += 1
        else:
            n = self.varint()
            pos = self._pos
        if n > limit:
            raise DecodeError(f"field of {n} bytes exceeds the limit of {limit}")
        end = pos + n
        if end > self._len:
            self._pos = pos
            raise self._short(n)
        self._pos = end
        return data[pos:end]

    def remaining(self) -> int:
        return self._len - self._pos

    def end(self) -> None:
        if self._pos != self._len:
            raise DecodeError(f"{self._len - self._pos} trailing bytes")
