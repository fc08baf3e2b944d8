"""Globally unique 38-digit keys (spec 1.11): participant id x 10^26 + a 26-digit counter.

`make_key` / `split_key` are pure. `KeyIssuer` hands out the next key of this instance's
own range per table from the `blockchain_key_sequence` table, in the caller's transaction,
so a rolled-back insert also rolls back its counter. `GlobalKey` is the column type:
NUMERIC(38,0) on PostgreSQL and MariaDB, and on SQLite a TEXT column left-padded to 38
digits (SQLite integers stop at 19 digits and NUMERIC affinity may turn them into floats).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Numeric, String, select, update
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from triggers.errors import ConfigurationInvalid, KeyRangeExhausted
from triggers.schema import key_sequence

__all__ = [
    "COUNTER_DIGITS",
    "KEY_DIGITS",
    "make_key",
    "split_key",
    "key_range",
    "check_participant_id",
    "to_storage_text",
    "GlobalKey",
    "KeyIssuer",
]

COUNTER_DIGITS = 26
KEY_DIGITS = 38
_COUNTER_LIMIT = 10**COUNTER_DIGITS
_PID_LIMIT = 10**12


def check_participant_id(participant_id: int) -> int:
    """Return the id if it has 1 to 12 significant digits (no leading zero by construction)."""
    if isinstance(participant_id, bool) or not isinstance(participant_id, int):
        raise ConfigurationInvalid("participant id must be an integer")
    if not 1 <= participant_id < _PID_LIMIT:
        raise ConfigurationInvalid("participant id must have 1 to 12 digits and be positive")
    return participant_id


def make_key(participant_id: int, counter: int) -> int:
    """`participant_id x 10^26 + counter`; the counter must fit in 26 digits."""
    check_participant_id(participant_id)
    if not 0 <= counter < _COUNTER_LIMIT:
        raise KeyRangeExhausted(f"counter {counter} does not fit in {COUNTER_DIGITS} digits")
    return participant_id * _COUNTER_LIMIT + counter


def split_key(key: int) -> tuple[int, int]:
    """Return (participant id, counter) of a global key."""
    if key < 0 or key >= 10**KEY_DIGITS:
        raise ValueError(f"{key} is not a key of at most {KEY_DIGITS} digits")
    return divmod(key, _COUNTER_LIMIT)


def key_range(participant_id: int) -> tuple[int, int]:
    """Lowest and highest key of a participant's range, inclusive."""
    low = make_key(participant_id, 0)
    return low, low + _COUNTER_LIMIT - 1


def to_storage_text(key: int) -> str:
    """The SQLite storage form: plain digits left-padded to 38 so text order is numeric order."""
    return f"{key:0{KEY_DIGITS}d}"


class GlobalKey(TypeDecorator):
    """A 38-digit key column: Python `int`, NUMERIC(38,0) or 38-character padded text."""

    impl = Numeric(KEY_DIGITS, 0)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(KEY_DIGITS))
        return dialect.type_descriptor(Numeric(KEY_DIGITS, 0, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        key = int(value)
        if isinstance(value, float):
            raise TypeError("global keys must never be floats")
        if dialect.name == "sqlite":
            return to_storage_text(key)
        return key

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        return int(value)


class KeyIssuer:
    """Issues the next key of this instance's range for a table, inside the caller's transaction."""

    def __init__(self, participant_id: int) -> None:
        self.participant_id = check_participant_id(participant_id)

    def next_key(self, conn: Connection, table_name: str) -> int:
        """Increment the table's counter (row locked until the caller commits) and return the key."""
        row = conn.execute(
            select(key_sequence.c.counter)
            .where(key_sequence.c.sequence_name == table_name)
            .with_for_update()
        ).first()
        if row is None:
            counter = 1
            conn.execute(key_sequence.insert().values(sequence_name=table_name, counter=counter))
        else:
            counter = int(row.counter) + 1
            conn.execute(
                update(key_sequence)
                .where(key_sequence.c.sequence_name == table_name)
                .values(counter=counter)
            )
        return make_key(self.participant_id, counter)
