"""Trigger rows as values, and the matching rules of spec 1.3 as a pure function."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from triggers.values import to_text

__all__ = ["TriggerRule", "is_active", "match", "OPERATIONS"]

OPERATIONS = ("insert", "update", "delete")


def is_active(start: dt.date | None, end: dt.date | None, today: dt.date) -> bool:
    """`start_date <= today AND (end_date IS NULL OR today <= end_date)`; no start = active."""
    return (start is None or start <= today) and (end is None or today <= end)


@dataclass(frozen=True, slots=True)
class TriggerRule:
    """One `blockchain_trigger` row."""

    trigger_id: int
    subsys_dir: str
    table_id: str
    table_id_alias: str | None
    chain_id: str
    stream_id: str
    start_date: dt.date | None
    end_date: dt.date | None
    trigger_column: str | None
    trigger_value: str | None
    distribution_type: str
    distribution_table: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TriggerRule:
        """Build from a mapping with the table's column names."""
        return cls(**{name: row[name] for name in cls.__slots__})

    def active(self, today: dt.date) -> bool:
        """Whether the trigger's activity window contains `today`."""
        return is_active(self.start_date, self.end_date, today)


def match(
    rules: Iterable[TriggerRule],
    *,
    table: str,
    operation: str,
    today: dt.date,
    alias: str | None = None,
    subsys_dir: str | None = None,
    new_value: Callable[[str], Any] | None = None,
) -> TriggerRule | None:
    """The first trigger (by trigger_id) that fires for one operation, or None.

    Case 1: no active trigger for the table (and alias) -> None. Case 2: an active trigger
    without trigger_column fires on any insert, update or delete. Case 3: one with
    trigger_column/trigger_value fires only on an update after which the row's value of that
    column, compared as text, equals trigger_value. `new_value(column)` returns that value
    and is called only when a case-3 candidate is met. `subsys_dir=None` means any subsystem.
    """
    if operation not in OPERATIONS:
        raise ValueError(f"unknown operation {operation!r}")
    for rule in sorted(rules, key=lambda r: r.trigger_id):
        if rule.table_id != table:
            continue
        if subsys_dir is not None and rule.subsys_dir != subsys_dir:
            continue
        if rule.table_id_alias and rule.table_id_alias != alias:
            continue
        if not rule.active(today):
            continue
        if not rule.trigger_column:
            return rule
        if operation != "update" or new_value is None:
            continue
        if to_text(new_value(rule.trigger_column)) == rule.trigger_value:
            return rule
    return None
