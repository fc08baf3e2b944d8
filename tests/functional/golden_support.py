"""JSON shapes: a value with every leaf replaced by its type, for golden comparisons.

A shape keeps object keys in order and list lengths, so comparing shapes checks field names,
order, nesting and types without the values that change from run to run (hashes, times).
"""

from __future__ import annotations

import re
from typing import Any

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX = re.compile(r"^(?:[0-9a-f]{2})+$")
MAX_SAFE_INTEGER = 2**53 - 1


def shape(value: Any) -> Any:
    """The shape of a decoded JSON value."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        if _HEX64.match(value):
            return "hex64"
        if _HEX.match(value):
            return "hex"
        return "str"
    if isinstance(value, list):
        return [shape(v) for v in value]
    return {k: shape(v) for k, v in value.items()}


def ordered_keys(value: Any, path: str = "$") -> list[tuple[str, list[str]]]:
    """(path, keys in order) of every object in a value, to compare key order too."""
    out = []
    if isinstance(value, dict):
        out.append((path, list(value)))
        for k, v in value.items():
            out += ordered_keys(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += ordered_keys(v, f"{path}[{i}]")
    return out


def unsafe_integers(value: Any, path: str = "$") -> list[str]:
    """Paths of integers a JavaScript client cannot hold exactly (above 2^53 - 1)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [path] if abs(value) > MAX_SAFE_INTEGER else []
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in unsafe_integers(v, f"{path}[{i}]")]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in unsafe_integers(v, f"{path}.{k}")]
    return []
