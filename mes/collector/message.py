"""Validation of one CNC message (spec 3.4, rules 1-6): bytes in, a `CncMessage` or `Rejected` out.

Pure: the set of known machine ids and the current time are passed in. Every received byte is
hostile, so the size is checked before decoding, nesting depth is bounded (the stdlib parser
would otherwise recurse until RecursionError), and JSON's non-standard NaN / Infinity are
refused because no storage column or downstream parser agrees on them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from config.errors import ChainmillError

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_DEPTH",
    "MAX_ID_CHARS",
    "MAX_FUTURE_SECONDS",
    "CncMessage",
    "Rejected",
    "decode_object",
    "check_fields",
    "check_payload",
    "check_cnc_id",
    "check_part_program",
    "check_timestamp",
    "validate",
    "canonical_json",
]

MAX_MESSAGE_BYTES = 64 * 1024
"""Largest body accepted (Decision): a CNC status message is a few hundred bytes."""
MAX_DEPTH = 32
"""Deepest JSON nesting accepted inside a message."""
MAX_ID_CHARS = 45
"""`cnc_id` and `part_program` are varchar(45) in `cnc_data`."""
MAX_FUTURE_SECONDS = 300
"""A timestamp more than 5 minutes ahead of the collector's clock is refused."""
REQUIRED_FIELDS = ("cnc_id", "part_program", "timestamp", "payload")


class Rejected(ChainmillError):
    """A message failed a validation rule; `rule` is the rule number of spec 3.4 (1-6, 0 for size)."""

    def __init__(self, rule: int, reason: str) -> None:
        super().__init__(reason)
        self.rule = rule
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CncMessage:
    """A validated message: the four fields, timestamp normalised to int seconds."""

    cnc_id: str
    part_program: str
    timestamp: int
    payload: dict[str, Any]

    @property
    def json_data(self) -> str:
        """The payload as canonical JSON text (sorted keys), as stored in `cnc_data.json_data`."""
        return canonical_json(self.payload)

    @property
    def payload_hash(self) -> str:
        """Hex SHA-256 of `json_data`: part of the unique index that absorbs QoS 1 redeliveries."""
        return hashlib.sha256(self.json_data.encode("utf-8")).hexdigest()


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: equal payloads give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _depth_ok(text: str, limit: int) -> bool:
    """True when brackets outside strings never nest deeper than `limit` (linear scan)."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def decode_object(body: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """Rule 1: the body is UTF-8 and parses as a JSON object (size and depth bounded)."""
    if len(body) > max_bytes:
        raise Rejected(0, f"message of {len(body)} bytes exceeds the {max_bytes}-byte limit")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(1, f"body is not UTF-8 (byte {exc.start})") from None
    if not _depth_ok(text, MAX_DEPTH):
        raise Rejected(1, f"JSON nests deeper than {MAX_DEPTH} levels")
    try:
        obj = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise Rejected(1, f"body is not JSON: {str(exc)[:80]}") from None
    if not isinstance(obj, dict):
        raise Rejected(1, f"body is a JSON {type(obj).__name__}, not an object")
    return obj


def check_fields(obj: dict[str, Any]) -> None:
    """Rule 2: the four fields are present (extra top-level fields are ignored)."""
    missing = [f for f in REQUIRED_FIELDS if f not in obj]
    if missing:
        raise Rejected(2, f"missing field(s): {', '.join(missing)}")


def check_payload(value: Any) -> dict[str, Any]:
    """Rule 3: `payload` is a JSON object (keys and values free)."""
    if not isinstance(value, dict):
        raise Rejected(3, f"payload is a JSON {type(value).__name__}, not an object")
    return value


def check_cnc_id(value: Any, known: Container[str]) -> str:
    """Rule 4: non-empty string of at most 45 characters, present in the plug-in map."""
    if not isinstance(value, str) or not value:
        raise Rejected(4, "cnc_id must be a non-empty string")
    if len(value) > MAX_ID_CHARS:
        raise Rejected(4, f"cnc_id has {len(value)} characters, more than {MAX_ID_CHARS}")
    if value not in known:
        raise Rejected(4, f"cnc_id {value!r} is not in the plug-in map")
    return value


def check_part_program(value: Any) -> str:
    """Rule 5: a string of at most 45 characters."""
    if not isinstance(value, str):
        raise Rejected(5, "part_program must be a string")
    if len(value) > MAX_ID_CHARS:
        raise Rejected(5, f"part_program has {len(value)} characters, more than {MAX_ID_CHARS}")
    return value


def check_timestamp(value: Any, now: float) -> int:
    """Rule 6: Unix seconds as an int or a string of digits; > 0 and at most 5 minutes ahead."""
    if isinstance(value, bool):
        raise Rejected(6, "timestamp must be an integer or a string of digits")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and 0 < len(value) <= 12 and value.isascii() and value.isdigit():
        seconds = int(value)
    else:
        raise Rejected(6, "timestamp must be an integer or a string of digits")
    if seconds <= 0:
        raise Rejected(6, "timestamp must be positive")
    if seconds > now + MAX_FUTURE_SECONDS:
        raise Rejected(6, f"timestamp {seconds} is more than {MAX_FUTURE_SECONDS} s in the future")
    return seconds


def validate(body: bytes, known: Container[str], now: float,
             max_bytes: int = MAX_MESSAGE_BYTES) -> CncMessage:
    """All rules in order; raise `Rejected` with the first failing rule's reason."""
    obj = decode_object(body, max_bytes)
    check_fields(obj)
    payload = check_payload(obj["payload"])
    return CncMessage(
        cnc_id=check_cnc_id(obj["cnc_id"], known),
        part_program=check_part_program(obj["part_program"]),
        timestamp=check_timestamp(obj["timestamp"], now),
        payload=payload,
    )
