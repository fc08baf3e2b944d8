"""Parameter converters shared by RPC handlers; each raises RpcError with MultiChain's code."""

from __future__ import annotations

import binascii
from typing import Any

from config.errors import ConfigError
from config.runtime import lenient_bool
from node.rpc.errors import RPC_INVALID_PARAMETER, RpcError

MAX_COUNT = 2147483647
"""`MAX` in the method table (spec §2.1): the default count of summary lists."""

MAX_IDENTIFIERS = 10_000
"""Most entries of an identifier list (array or comma-delimited) in one call (issue 15.3)."""


def _invalid(message: str) -> RpcError:
    return RpcError(RPC_INVALID_PARAMETER, message)


def as_bool(value: Any, name: str) -> bool:
    """A JSON boolean; numbers and strings are refused with -8 (MultiChain 2.x flags)."""
    if value is True or value is False:
        return value
    raise _invalid(f"{name} should be boolean")


def as_bool_lenient(value: Any, name: str) -> bool:
    """A boolean as setruntimeparam accepts it: true/false, 1/0, "true", "1", "yes", "off", ...

    Any other integer (or integer string) counts as true when non-zero, like MultiChain's atoi.
    One rule with config.runtime, which parses setruntimeparam's values.
    """
    try:
        return lenient_bool(value)
    except ConfigError:
        raise _invalid(f"{name} should be boolean") from None


def as_int(value: Any, name: str) -> int:
    """A JSON integer (a boolean is not an integer here)."""
    if type(value) is int:
        return value
    raise _invalid(f"{name} should be integer")


def as_count(value: Any) -> int:
    """A `count` argument: an integer >= 0."""
    if type(value) is int and value >= 0:
        return value
    raise _invalid("invalid count")


def window(total: int, count: int, start: int | None) -> tuple[int, int]:
    """The (offset, length) of the count/start window over `total` entries (spec §1.8).

    `start` defaults to -count ("the last count entries"); a negative start counts from the
    end and is clamped at 0; the length is then clamped so the window ends at or before the
    last entry. The offset never exceeds `total`, so slicing with it is always safe.
    """
    if start is None:
        start = -count
    if start < 0:
        start = max(0, total + start)
    elif start > total:
        start = total
    return start, max(0, min(count, total - start))


def as_str(value: Any, name: str) -> str:
    """A JSON string."""
    if isinstance(value, str):
        return value
    raise _invalid(f"{name} should be a string")


def identifier_list(value: Any, name: str = "identifiers") -> list[str] | None:
    """An identifier list: "*" (None, meaning all), a comma-delimited string, or an array.

    Entries must be non-empty strings; they are not stripped (MultiChain splits on "," only).
    """
    if isinstance(value, str):
        if value == "*":
            return None
        items = value.split(",")
    elif isinstance(value, list):
        items = value
        for item in items:
            if not isinstance(item, str):
                raise _invalid(f"{name}: every entry should be a string")
    else:
        raise _invalid(f"{name} should be \"*\", a comma-delimited string or an array")
    if len(items) > MAX_IDENTIFIERS:
        raise _invalid(f"{name}: too many entries (at most {MAX_IDENTIFIERS} in one call)")
    if "" in items:
        raise _invalid(f"{name}: empty identifier")
    return list(items)


def as_hex(value: Any, name: str) -> bytes:
    """Hex text (either case, even length, no whitespace) decoded to bytes."""
    if isinstance(value, str):
        try:
            return binascii.a2b_hex(value)
        except (binascii.Error, ValueError):
            pass
    raise _invalid(f"{name} should be a hexadecimal string")


def given(p: list[Any], i: int) -> bool:
    """Whether optional parameter `i` was given: present and not JSON null.

    MultiChain reads every optional parameter as `params.size() > i && !params[i].isNull()`,
    so a client may send null for any optional parameter to mean its default.
    """
    return len(p) > i and p[i] is not None


def from_address(value: Any) -> str | None:
    """A from-address parameter: None for "*" (let the wallet choose, as MultiChain does)."""
    if value == "*":
        return None
    if not isinstance(value, str):
        raise _invalid("from-address should be a string")
    return value
