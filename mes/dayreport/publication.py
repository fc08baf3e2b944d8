"""What to do with one day report: the publication ledger's decision (spec 3.3.5).

The ledger holds per flow id ``PENDING`` (about to publish), ``PUBLISHED`` or ``CONFLICT``.
`plan_publication` takes that status, the report's records and what the chain already holds
for their record ids, and says what to publish and which status to record. It makes every
re-run idempotent: records already on the chain with the same values count as published
(the process was killed between publishing and updating the ledger); a different value on
the chain is a conflict that is logged and never overwritten, because day reports are static.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mes.dayreport.ids import check_report_id, parse_flow_id, record_id
from mes.dayreport.ids import flow_id as canonical_flow_id
from mes.dayreport.indicators import NAMES, SHIFTS, UOM

__all__ = [
    "PENDING", "PUBLISHED", "CONFLICT", "STATUSES", "RECORD_TYPE", "Conflict", "Plan",
    "indicator_records", "plan_publication", "same_value",
]

log = logging.getLogger(__name__)

PENDING = "PENDING"
PUBLISHED = "PUBLISHED"
CONFLICT = "CONFLICT"
STATUSES = (PENDING, PUBLISHED, CONFLICT)
RECORD_TYPE = "DayReportIndicator"


@dataclass(frozen=True, slots=True)
class Conflict:
    """A record whose value on the chain differs from the report's."""

    record_id: str
    property: str
    on_chain: Any
    wanted: Any


@dataclass(frozen=True, slots=True)
class Plan:
    """The decision for one report.

    ``publish`` non-empty: record ``PENDING``, publish these records as one atomic batch, then
    record ``PUBLISHED`` with the txids. Otherwise record ``status`` (if it changed) and stop.
    """

    flow_id: str
    status: str
    publish: tuple[dict[str, Any], ...] = ()
    already: tuple[str, ...] = ()
    conflicts: tuple[Conflict, ...] = ()


def indicator_records(report_id: str, flow_id: str, day: dt.date, unit: str,
                      values: Mapping[str, float | None]) -> list[dict[str, Any]]:
    """The 28 ``DayReportIndicator`` records of one report (spec 3.3.3), in the fixed order.

    An undefined value is published as ``value`` 0 with ``defined`` 0 (the property is
    required and null is not allowed).
    """
    if flow_id != canonical_flow_id(day, unit):
        raise ValueError(f"flow id {flow_id} does not name unit {unit} on {day.isoformat()}")
    check_report_id(report_id)
    if set(values) != set(NAMES):
        raise ValueError("a day report has exactly the 28 indicator values")
    labels = {letter: letter for letter, _, _ in SHIFTS}
    records = []
    for name in NAMES:
        shift, code = name.split("_", 1)
        value = values[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"{name} must be a number or None")
        records.append({
            "record_id": record_id(report_id, shift, code),
            "record_type": RECORD_TYPE,
            "properties": {"value": 0.0 if value is None else float(value),
                           "defined": 0 if value is None else 1, "flow_id": flow_id,
                           "date": day.isoformat(), "unit": unit, "shift": labels[shift],
                           "indicator": code, "uom": UOM[code]},
        })
    return records


def same_value(on_chain: Any, wanted: Any) -> bool:
    """Equal as published values: numbers by value (90 == 90.0), everything else exactly."""
    numeric = (int, float)
    if isinstance(on_chain, bool) or isinstance(wanted, bool):
        return on_chain is wanted
    if isinstance(on_chain, numeric) and isinstance(wanted, numeric):
        return float(on_chain) == float(wanted)
    return type(on_chain) is type(wanted) and on_chain == wanted


def plan_publication(flow_id: str, ledger_status: str | None, records: Sequence[Mapping[str, Any]],
                     on_chain: Mapping[str, Mapping[str, Any] | None]) -> Plan:
    """The decision for the report ``flow_id`` (see the module docstring).

    ``on_chain`` maps record ids to the properties the chain holds for them (absent or None:
    no such record). Conflicts are logged here, once per decision, and nothing of a
    conflicting report is published: a human resolves it.
    """
    parse_flow_id(flow_id)
    if ledger_status is not None and ledger_status not in STATUSES:
        raise ValueError(f"unknown ledger status {ledger_status!r}")
    ids = [r["record_id"] for r in records]
    if not ids or len(set(ids)) != len(ids):
        raise ValueError("a report has records with distinct ids")
    if ledger_status in (PUBLISHED, CONFLICT):
        return Plan(flow_id, ledger_status)
    missing: list[dict[str, Any]] = []
    already: list[str] = []
    conflicts: list[Conflict] = []
    for record in records:
        held = on_chain.get(record["record_id"])
        if held is None:
            missing.append(dict(record))
            continue
        diffs = [Conflict(record["record_id"], name, held.get(name), value)
                 for name, value in record["properties"].items()
                 if name not in held or not same_value(held[name], value)]
        if diffs:
            conflicts.extend(diffs)
        else:
            already.append(record["record_id"])
    if conflicts:
        for c in conflicts:
            log.warning("day report %s: record %s has %s=%r on the chain, the MES has %r; "
                        "static data is not overwritten", flow_id, c.record_id, c.property,
                        c.on_chain, c.wanted)
        return Plan(flow_id, CONFLICT, already=tuple(already), conflicts=tuple(conflicts))
    if not missing:
        return Plan(flow_id, PUBLISHED, already=tuple(already))
    return Plan(flow_id, PENDING, publish=tuple(missing), already=tuple(already))
