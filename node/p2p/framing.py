"""Frames on a TCP stream: magic (4) | type (1) | length (4) | checksum (4) | payload.

The magic is the chain's `network-message-start`, so nodes of different chains cannot talk;
the checksum is the first four bytes of SHA-256(payload). A frame longer than the limit, a
wrong magic or a bad checksum closes the connection before the payload is read further.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct

from ledger.errors import DecodeError

_HEAD = struct.Struct("<4sBI4s")
HEADER_SIZE = _HEAD.size


class FrameError(DecodeError):
    """A frame broke the framing rules; the peer sending it is dropped."""


def encode_frame(magic: bytes, msg_type: int, payload: bytes) -> bytes:
    check = hashlib.sha256(payload).digest()[:4]
    return _HEAD.pack(magic, msg_type, len(payload), check) + payload


async def read_frame(reader: asyncio.StreamReader, magic: bytes, max_size: int
                     ) -> tuple[int, bytes]:
    """The next (type, payload); raises FrameError, or IncompleteReadError at EOF."""
    head = await reader.readexactly(HEADER_SIZE)
    got_magic, msg_type, length, check = _HEAD.unpack(head)
    if got_magic != magic:
        raise FrameError("wrong network magic (another chain?)")
    if length > max_size:
        raise FrameError(f"frame of {length} bytes exceeds the limit of {max_size}")
    payload = await reader.readexactly(length)
    if hashlib.sha256(payload).digest()[:4] != check:
        raise FrameError("bad frame checksum")
    return msg_type, payload
