"""Stream item data as a person reads it: JSON pretty-printed, text, else a hex dump."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_SHOWN_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Decoded:
    """How to show an item's data: ``kind`` is json, text, hex or offchain."""

    kind: str
    text: str


def item_bytes(data: Any) -> bytes | None:
    """The raw bytes of a hex-string item payload, or None if the data is not raw bytes."""
    if isinstance(data, str):
        try:
            return bytes.fromhex(data)
        except ValueError:
            return None
    return None


def decode(data: Any) -> Decoded:
    """Decode the ``data`` field of a stream item as returned by liststreamitems."""
    if isinstance(data, dict) and "json" in data:
        return Decoded("json", json.dumps(data["json"], indent=2, ensure_ascii=False))
    if isinstance(data, dict) and "text" in data and isinstance(data["text"], str):
        return Decoded("text", data["text"])
    if isinstance(data, dict):  # an unfetched or off-chain payload: {"txid", "vout", "size"}
        return Decoded("offchain", json.dumps(data, indent=2))
    raw = item_bytes(data)
    if raw is None:
        return Decoded("text", json.dumps(data))
    try:
        text = raw.decode("utf-8")
        if text.isprintable() or all(c.isprintable() or c in "\r\n\t" for c in text):
            return Decoded("text", text)
    except UnicodeDecodeError:
        pass
    return Decoded("hex", hex_dump(raw[:MAX_SHOWN_BYTES]))


def hex_dump(raw: bytes) -> str:
    """16 bytes a line: offset, hex, printable ASCII."""
    lines = []
    for offset in range(0, len(raw), 16):
        chunk = raw[offset:offset + 16]
        ascii_ = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:08x}  {chunk.hex(' '):<47}  {ascii_}")
    return "\n".join(lines)
