"""When the daily day-report job is due (spec 3.3.5): pure functions of last run and now.

The job runs at 09:30 in the plant's time zone, never the host's. The report of day D is
released by the 09:30 run of day D+1 (time for a night shift ending in the morning). After a
missed run (process down, busy, clock moved) one late run covers every day released since the
last run; a run that finds nothing new does nothing, so no day is published twice and none is
lost. Fire instants are computed as local wall-clock times converted to UTC, so a DST change
moves the UTC instant and never the local 09:30.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from config.errors import ChainmillError

__all__ = ["ScheduleError", "RUN_AT", "JOB_OPTIONS", "fire_time", "released_through", "due_days",
           "run_due", "next_fire"]

RUN_AT = dt.time(9, 30)
JOB_OPTIONS: dict[str, Any] = {"misfire_grace_time": 6 * 3600, "coalesce": True, "max_instances": 1}
"""APScheduler 3 job options (its defaults would drop a run more than 1 s late)."""

_UTC = dt.UTC
_ONE_DAY = dt.timedelta(days=1)


class ScheduleError(ChainmillError):
    """A schedule question asked with a time that has no zone."""


def _aware(moment: dt.datetime, what: str) -> dt.datetime:
    if not isinstance(moment, dt.datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise ScheduleError(f"{what} must be a time-zone-aware datetime")
    return moment.astimezone(_UTC)


def fire_time(day: dt.date, tz: ZoneInfo, at: dt.time = RUN_AT) -> dt.datetime:
    """The UTC instant of the run on local date ``day`` at local time ``at``.

    A local time that falls in a DST gap maps forward by the gap (zoneinfo's fold=0), an
    ambiguous one to its first occurrence.
    """
    return dt.datetime.combine(day, at, tzinfo=tz).astimezone(_UTC)


def released_through(now: dt.datetime, tz: ZoneInfo, at: dt.time = RUN_AT) -> dt.date:
    """The latest report date whose run instant is not after ``now``."""
    now = _aware(now, "now")
    today = now.astimezone(tz).date()
    return today - _ONE_DAY if now >= fire_time(today, tz, at) else today - 2 * _ONE_DAY


def due_days(last_run: dt.datetime | None, now: dt.datetime, tz: ZoneInfo, *,
             earliest: dt.date, at: dt.time = RUN_AT) -> list[dt.date]:
    """Report dates released after ``last_run`` and by ``now``, not before ``earliest``.

    ``last_run`` None (first start) means every released date from ``earliest``. A ``now``
    before ``last_run`` (clock moved back) gives nothing: those days were already covered.
    """
    end = released_through(now, tz, at)
    start = earliest
    if last_run is not None:
        if _aware(last_run, "last_run") > _aware(now, "now"):
            return []
        start = max(start, released_through(last_run, tz, at) + _ONE_DAY)
    days = []
    while start <= end:
        days.append(start)
        start += _ONE_DAY
    return days


def run_due(last_run: dt.datetime | None, now: dt.datetime, tz: ZoneInfo, at: dt.time = RUN_AT) -> bool:
    """Whether a run instant lies in (last_run, now]: the one (coalesced) late run is due."""
    if last_run is None:
        return True
    last, current = _aware(last_run, "last_run"), _aware(now, "now")
    return current > last and released_through(current, tz, at) > released_through(last, tz, at)


def next_fire(now: dt.datetime, tz: ZoneInfo, at: dt.time = RUN_AT) -> dt.datetime:
    """The first run instant strictly after ``now`` (UTC)."""
    now = _aware(now, "now")
    day = now.astimezone(tz).date() - _ONE_DAY
    while (instant := fire_time(day, tz, at)) <= now:
        day += _ONE_DAY
    return instant
