"""Canonical flow ids (spec 3.3.2) and indicator record ids (spec 3.3.3).

Flow id ``001_{YY}_{WW}_{DD}_{UNIT}``: ISO week-based year mod 100, ISO week and ISO weekday,
all from one ISO calendar and zero-padded, so ids sort and never collide around New Year (the
reference mixed the calendar year with the ISO week). Parsers accept only this form.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from config.errors import ChainmillError
from mes.dayreport.indicators import INDICATORS, SHIFTS

__all__ = [
    "IdError", "FlowId", "REPORT_KIND_DAY", "flow_id", "parse_flow_id", "record_id",
    "parse_record_id", "check_unit_code", "check_report_id",
]

REPORT_KIND_DAY = "001"
# Decision: unit codes are short and made of characters safe in record ids and topic names;
# "_" is excluded because it separates the fields of the ids.
_UNIT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,63}")
_FLOW = re.compile(r"001_([0-9]{2})_([0-9]{2})_([0-9]{2})_([A-Za-z0-9][A-Za-z0-9.\-]{0,63})")
_OBJECT_ID = re.compile(r"[0-9a-f]{24}")
_SUFFIX = re.compile(r"(.+)_([1-4])(0[1-7])")
_SHIFT_BY_DIGIT = {digit: letter for letter, digit, _ in SHIFTS}
_DIGIT_BY_SHIFT = {letter: digit for letter, digit, _ in SHIFTS}
_INDICATOR_BY_NUMBER = {number: code for code, number, _ in INDICATORS}
_NUMBER_BY_INDICATOR = {code: number for code, number, _ in INDICATORS}


class IdError(ChainmillError):
    """A flow id, record id or unit code that is not in the canonical form."""


@dataclass(frozen=True, slots=True)
class FlowId:
    """The fields of a canonical flow id. ``year`` is the ISO year mod 100."""

    year: int
    week: int
    weekday: int
    unit: str

    def date(self, century: int = 2000) -> dt.date:
        """The production day, taking the ISO year in ``century`` (two digits are ambiguous)."""
        return dt.date.fromisocalendar(century + self.year, self.week, self.weekday)


def check_unit_code(unit: object) -> str:
    """The unit code if it may appear in ids; IdError otherwise."""
    if not isinstance(unit, str) or not _UNIT.fullmatch(unit):
        raise IdError("unit code must be 1-64 letters, digits, '.' or '-' (no '_')")
    return unit


def flow_id(day: dt.date, unit: str) -> str:
    """The canonical flow id of the day report of ``unit`` for ``day``."""
    if not isinstance(day, dt.date) or isinstance(day, dt.datetime):
        raise IdError("flow id needs a date")
    iso = day.isocalendar()
    return f"{REPORT_KIND_DAY}_{iso.year % 100:02d}_{iso.week:02d}_{iso.weekday:02d}_{check_unit_code(unit)}"


def parse_flow_id(text: object, century: int = 2000) -> FlowId:
    """The fields of a canonical flow id; IdError for any other form (old ids included)."""
    match = _FLOW.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise IdError("not a canonical flow id (001_YY_WW_DD_UNIT)")
    fields = FlowId(int(match[1]), int(match[2]), int(match[3]), match[4])
    try:
        fields.date(century)
    except ValueError:
        raise IdError("flow id names a week or weekday that does not exist") from None
    return fields


def check_report_id(report_id: object) -> str:
    """A day report's immutable id: a 24-hex ObjectId or, failing one, the canonical flow id."""
    if isinstance(report_id, str) and _OBJECT_ID.fullmatch(report_id):
        return report_id
    try:
        parse_flow_id(report_id)
    except IdError:
        raise IdError("report id must be a 24-hex object id or a canonical flow id") from None
    return report_id  # type: ignore[return-value]


def record_id(report_id: str, shift: str, indicator: str) -> str:
    """``{report_id}_{S}{II}``, e.g. shift A availability -> ``..._101``."""
    if shift not in _DIGIT_BY_SHIFT:
        raise IdError(f"unknown shift {shift!r}")
    if indicator not in _NUMBER_BY_INDICATOR:
        raise IdError(f"unknown indicator {indicator!r}")
    return f"{check_report_id(report_id)}_{_DIGIT_BY_SHIFT[shift]}{_NUMBER_BY_INDICATOR[indicator]:02d}"


def parse_record_id(text: object) -> tuple[str, str, str]:
    """(report id, shift letter, indicator code) of an indicator record id."""
    match = _SUFFIX.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise IdError("not an indicator record id ({report_id}_{S}{II})")
    return check_report_id(match[1]), _SHIFT_BY_DIGIT[int(match[2])], _INDICATOR_BY_NUMBER[int(match[3])]
