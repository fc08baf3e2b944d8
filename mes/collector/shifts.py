"""Day-report inputs of one shift derived from collected CNC data (spec 3.3.4, last paragraph).

Pure functions over `cnc_data` rows. A sample's `status` holds from its timestamp until the
next sample, but at most `max_gap` seconds: time not covered by any recent sample is "no
data" and counts as unplanned stop without a failure (a machine that went silent is not
producing, and a report should not flatter it). Then, per spec: `running` is run time;
`error` is unplanned stop and each entry into `error` that begins within the shift is one
failure (its repair time is the error time); `idle` is planned stop where the plant calendar
covers it, otherwise unplanned stop without a failure.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from config.errors import ChainmillError

__all__ = ["CalendarError", "Calendar", "ShiftInputs", "segments", "shift_inputs", "DEFAULT_MAX_GAP"]

DEFAULT_MAX_GAP = 300
Interval = tuple[int, int]


class CalendarError(ChainmillError):
    """A plant calendar that cannot be read."""


def _merge(intervals: Iterable[Interval]) -> list[Interval]:
    merged: list[list[int]] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def _overlap(a: Interval, planned: Sequence[Interval]) -> int:
    total = 0
    for start, end in planned:
        if end <= a[0]:
            continue
        if start >= a[1]:
            break
        total += min(a[1], end) - max(a[0], start)
    return total


def _hhmm(text: str) -> dt.time:
    try:
        return dt.time.fromisoformat(text)
    except ValueError:
        raise CalendarError(f"not a time of day (HH:MM): {text!r}") from None


@dataclass(frozen=True)
class Calendar:
    """Planned stops: absolute periods (Unix seconds) and daily ones in the plant's time zone."""

    periods: tuple[Interval, ...]
    daily: tuple[tuple[dt.time, dt.time], ...] = ()
    timezone: str = "UTC"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calendar:
        """From `{"timezone": "Europe/Lisbon", "daily": [["12:00", "12:30"]],
        "periods": [[start, end], ...]}` (every key optional)."""
        if not isinstance(data, Mapping):
            raise CalendarError("a plant calendar is a JSON object")
        unknown = set(data) - {"timezone", "daily", "periods"}
        if unknown:
            raise CalendarError(f"unknown calendar key(s): {', '.join(sorted(unknown))}")
        tz = data.get("timezone", "UTC")
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise CalendarError(f"unknown time zone {tz!r}") from None
        periods = []
        for p in data.get("periods", []):
            if (not isinstance(p, list) or len(p) != 2
                    or not all(isinstance(x, int) and not isinstance(x, bool) for x in p)
                    or p[1] <= p[0]):
                raise CalendarError(f"a period is [start, end] in Unix seconds, got {p!r}")
            periods.append((p[0], p[1]))
        daily = []
        for d in data.get("daily", []):
            if not isinstance(d, list) or len(d) != 2 or not all(isinstance(x, str) for x in d):
                raise CalendarError(f"a daily stop is [\"HH:MM\", \"HH:MM\"], got {d!r}")
            daily.append((_hhmm(d[0]), _hhmm(d[1])))
        return cls(tuple(periods), tuple(daily), tz)

    @classmethod
    def load(cls, path: Path) -> Calendar:
        """Read a calendar JSON file."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise CalendarError(f"cannot read plant calendar {path}: {exc}") from None

    def planned(self, start: int, end: int) -> list[Interval]:
        """The planned-stop intervals overlapping [start, end), merged and sorted."""
        found = [(max(a, start), min(b, end)) for a, b in self.periods if b > start and a < end]
        if self.daily:
            tz = ZoneInfo(self.timezone)
            day = dt.datetime.fromtimestamp(start, tz).date() - dt.timedelta(days=1)
            last = dt.datetime.fromtimestamp(end, tz).date()
            while day <= last:
                for t0, t1 in self.daily:
                    a = dt.datetime.combine(day, t0, tz)
                    b = dt.datetime.combine(day + dt.timedelta(days=t1 <= t0), t1, tz)
                    lo, hi = max(int(a.timestamp()), start), min(int(b.timestamp()), end)
                    if hi > lo:
                        found.append((lo, hi))
                day += dt.timedelta(days=1)
        return _merge(found)


@dataclass(frozen=True)
class ShiftInputs:
    """Seconds of each kind within one shift, and the failures that began in it."""

    shift_seconds: int
    run_seconds: int
    planned_stop_seconds: int
    unplanned_stop_seconds: int
    failures: int
    repair_seconds: int
    no_data_seconds: int

    def as_dict(self) -> dict[str, Any]:
        """Minutes (1 decimal) as the day report uses them, plus the failure count."""
        def minutes(s: int) -> float:
            return round(s / 60, 1)
        return {
            "shift_length_min": minutes(self.shift_seconds),
            "run_time_min": minutes(self.run_seconds),
            "planned_stop_min": minutes(self.planned_stop_seconds),
            "unplanned_stop_min": minutes(self.unplanned_stop_seconds),
            "failures": self.failures,
            "repair_time_min": minutes(self.repair_seconds),
            "no_data_min": minutes(self.no_data_seconds),
        }


def _status(row: Mapping[str, Any]) -> str:
    try:
        payload = json.loads(row["json_data"])
    except (TypeError, ValueError):
        return "unknown"
    status = payload.get("status") if isinstance(payload, dict) else None
    return status if status in ("running", "idle", "error") else "unknown"


def segments(rows: Sequence[Mapping[str, Any]], start: int, end: int,
             max_gap: int = DEFAULT_MAX_GAP) -> list[tuple[int, int, str, bool]]:
    """(from, to, status, began_here) segments covering [start, end); uncovered time is
    status "nodata". `began_here` marks a status entered at `from` (not carried over)."""
    ordered = sorted(rows, key=lambda r: (int(r["timestamp"]), r.get("id") or 0))
    result: list[tuple[int, int, str, bool]] = []
    cursor = start
    previous: tuple[str, int] | None = None  # (status, end) of the previous sample
    for i, row in enumerate(ordered):
        t0 = int(row["timestamp"])
        t1 = t0 + max_gap
        if i + 1 < len(ordered):
            t1 = min(t1, int(ordered[i + 1]["timestamp"]))
        status = _status(row)
        entered = previous is None or previous[0] != status or previous[1] < t0
        previous = (status, t1)
        lo, hi = max(t0, start), min(t1, end)
        if hi <= lo:
            continue
        if lo > cursor:
            result.append((cursor, lo, "nodata", True))
        if result and result[-1][2] == status and result[-1][1] == lo and not entered:
            result[-1] = (result[-1][0], hi, status, result[-1][3])
        else:
            result.append((lo, hi, status, entered and t0 >= start))
        cursor = hi
    if cursor < end:
        result.append((cursor, end, "nodata", True))
    return result


def shift_inputs(rows: Sequence[Mapping[str, Any]], start: int, end: int,
                 calendar: Calendar, max_gap: int = DEFAULT_MAX_GAP) -> ShiftInputs:
    """The day-report inputs of the shift [start, end) from one machine's rows."""
    if end <= start:
        raise ValueError("a shift ends after it starts")
    planned_intervals = calendar.planned(start, end)
    run = planned = unplanned = repair = nodata = failures = 0
    for lo, hi, status, began in segments(rows, start, end, max_gap):
        length = hi - lo
        if status == "running":
            run += length
        elif status == "error":
            unplanned += length
            repair += length
            failures += 1 if began else 0
        elif status == "idle":
            covered = _overlap((lo, hi), planned_intervals)
            planned += covered
            unplanned += length - covered
        else:  # nodata, unknown status
            nodata += length
            unplanned += length
    return ShiftInputs(end - start, run, planned, unplanned, failures, repair, nodata)
