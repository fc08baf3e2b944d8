"""Column values <-> the text inside XML column elements (spec 1.7.1, "Values").

Dates `YYYY-MM-DD`; datetimes `YYYY-MM-DD HH:MM:SS` in UTC (a fraction is appended only when
the value has one, so replicated rows stay equal); decimals in plain notation at the column's
full scale; booleans `1`/`0`; 38-digit keys as plain digits; binary as base64; NULL as None
(an empty element). The receiving side converts by the *local* column's type, so both sides
may run different databases.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
from typing import Any

from sqlalchemy import types as sqltypes
from sqlalchemy.schema import Column

from triggers.errors import DocumentInvalid

__all__ = [
    "to_text",
    "from_text",
    "is_sqlite_key_column",
    "key_lookup_forms",
    "KEY_TEXT_LENGTH",
]

KEY_TEXT_LENGTH = 38


def is_sqlite_key_column(column: Column, dialect_name: str) -> bool:
    """On SQLite a 38-digit key lives in a 38-character text column, left-padded with zeroes.

    Decision: such a column is recognised by its declared type alone (a string type of length
    exactly 38), because SQLite keeps no other trace of `GlobalKey` in its catalog.
    """
    return (
        dialect_name == "sqlite"
        and isinstance(column.type, sqltypes.String)
        and getattr(column.type, "length", None) == KEY_TEXT_LENGTH
    )


def _format_decimal(value: decimal.Decimal, column: Column | None) -> str:
    scale = getattr(column.type, "scale", None) if column is not None else None
    if isinstance(scale, int) and scale >= 0 and value.is_finite():
        try:
            value = value.quantize(decimal.Decimal(1).scaleb(-scale))
        except decimal.InvalidOperation:
            pass
    text = format(value, "f")
    return text


def to_text(value: Any, column: Column | None = None, dialect_name: str = "") -> str | None:
    """Render one column value for a document; None stays None (NULL)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return _format_decimal(value, column)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        text = value.strftime("%Y-%m-%d %H:%M:%S")
        if value.microsecond:
            text += f".{value.microsecond:06d}"
        return text
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, str):
        if (
            column is not None
            and is_sqlite_key_column(column, dialect_name)
            and len(value) == KEY_TEXT_LENGTH
            and value.isdigit()
        ):
            # Only the padded storage form loses its padding at the boundary; a shorter key
            # was stored as the user gave it and travels as it is.
            return value.lstrip("0") or "0"
        return value
    return str(value)


def key_lookup_forms(text: str | None, column: Column, dialect_name: str) -> list[Any]:
    """The stored forms a recorded key may take in `column`, most exact first.

    The outbox records a key as the application gave it. On SQLite a 38-character key column
    may hold the digits as given or left-padded to 38 (the `GlobalKey` storage form); both
    name the same key, so a reader looks for the text as recorded first, then padded.
    Nothing is ever rewritten: this only decides which stored row a recorded key names.
    """
    if text is not None and is_sqlite_key_column(column, dialect_name) and text.isdigit():
        forms = [text]
        padded = text.rjust(KEY_TEXT_LENGTH, "0")
        if padded != text:
            forms.append(padded)
        return forms
    if text is not None and isinstance(column.type, sqltypes.String):
        return [text]
    return [from_text(text, column, dialect_name)]


def _python_type(column: Column) -> type | None:
    try:
        return column.type.python_type
    except NotImplementedError:
        return None


def from_text(text: str | None, column: Column, dialect_name: str) -> Any:
    """Convert received text to a value for the local `column`; raise DocumentInvalid if it won't go."""
    ctype = column.type
    if text is None or text == "":
        if isinstance(ctype, sqltypes.String) and not column.nullable:
            return ""
        return None
    try:
        if isinstance(ctype, sqltypes.Boolean):
            if text not in ("0", "1", "true", "false"):
                raise ValueError(f"not a boolean: {text!r}")
            return text in ("1", "true")
        if isinstance(ctype, sqltypes.Integer):
            return int(text)
        if isinstance(ctype, sqltypes.Numeric) and not isinstance(ctype, sqltypes.Float):
            value = decimal.Decimal(text)
            if not value.is_finite():
                raise ValueError("not a finite number")
            return value
        if isinstance(ctype, sqltypes.Float):
            return float(text)
        if isinstance(ctype, sqltypes.DateTime):
            return dt.datetime.fromisoformat(text.strip())
        if isinstance(ctype, sqltypes.Date):
            return dt.date.fromisoformat(text.strip())
        if isinstance(ctype, sqltypes.Time):
            return dt.time.fromisoformat(text.strip())
        if isinstance(ctype, sqltypes._Binary):
            return base64.b64decode("".join(text.split()), validate=True)
        if isinstance(ctype, sqltypes.String):
            if is_sqlite_key_column(column, dialect_name) and text.isdigit():
                return text.rjust(KEY_TEXT_LENGTH, "0")
            return text
    except (ValueError, decimal.InvalidOperation, binascii.Error) as exc:
        raise DocumentInvalid(f"column {column.name}: {exc}") from None
    python_type = _python_type(column)
    if python_type is int:
        return int(text)
    return text
