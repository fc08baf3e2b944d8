"""The 09:30 day-report job's due days in the plant's time zone (spec 3.3.5), across DST."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from mes.dayreport.schedule import (
    JOB_OPTIONS,
    ScheduleError,
    due_days,
    fire_time,
    next_fire,
    released_through,
    run_due,
)

LISBON = ZoneInfo("Europe/Lisbon")
NEW_YORK = ZoneInfo("America/New_York")
UTC = dt.UTC
EARLY = dt.date(2020, 1, 1)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def d(month: int, day: int, year: int = 2026) -> dt.date:
    return dt.date(year, month, day)


def test_schedule_fire_time_follows_local_wall_clock_across_dst() -> None:
    # Lisbon: WET (UTC+0) until 29 March 2026, WEST (UTC+1) until 25 October 2026.
    assert fire_time(d(3, 28), LISBON) == utc(2026, 3, 28, 9, 30)
    assert fire_time(d(3, 29), LISBON) == utc(2026, 3, 29, 8, 30)
    assert fire_time(d(10, 24), LISBON) == utc(2026, 10, 24, 8, 30)
    assert fire_time(d(10, 25), LISBON) == utc(2026, 10, 25, 9, 30)
    assert fire_time(d(3, 8), NEW_YORK) == utc(2026, 3, 8, 13, 30)  # EDT from 02:00 that day


def test_schedule_spring_forward_morning() -> None:
    last = utc(2026, 3, 28, 9, 30)
    assert due_days(last, utc(2026, 3, 29, 8, 29), LISBON, earliest=EARLY) == []
    # 09:31 local is 08:31 UTC: due, although a UTC-clock job would still wait an hour.
    assert due_days(last, utc(2026, 3, 29, 8, 31), LISBON, earliest=EARLY) == [d(3, 28)]
    assert run_due(last, utc(2026, 3, 29, 8, 31), LISBON)


def test_schedule_fall_back_morning() -> None:
    last = utc(2026, 10, 24, 8, 30)
    # 09:29 local is 09:29 UTC after the change: not due, although a fixed +1 h would fire.
    assert due_days(last, utc(2026, 10, 25, 9, 29), LISBON, earliest=EARLY) == []
    assert not run_due(last, utc(2026, 10, 25, 9, 29), LISBON)
    assert due_days(last, utc(2026, 10, 25, 9, 30), LISBON, earliest=EARLY) == [d(10, 24)]


def test_schedule_new_york_dst_day() -> None:
    last = fire_time(d(3, 7), NEW_YORK)
    assert due_days(last, utc(2026, 3, 8, 14, 29), NEW_YORK, earliest=EARLY) == [d(3, 7)]
    assert due_days(last, utc(2026, 3, 8, 13, 29), NEW_YORK, earliest=EARLY) == []


def test_schedule_process_down_over_dst_gives_one_late_run_for_every_day() -> None:
    last = utc(2026, 3, 27, 9, 30)  # published up to the 26th
    now = utc(2026, 3, 30, 12, 0)
    assert due_days(last, now, LISBON, earliest=EARLY) == [d(3, 27), d(3, 28), d(3, 29)]
    assert run_due(last, now, LISBON)
    # The late run happened now: a second look finds nothing (no duplicate run).
    assert due_days(now, now, LISBON, earliest=EARLY) == []
    assert not run_due(now, now + dt.timedelta(hours=5), LISBON)


def test_schedule_late_run_the_same_morning() -> None:
    last = fire_time(d(5, 4), LISBON)
    assert due_days(last, fire_time(d(5, 5), LISBON) + dt.timedelta(hours=5), LISBON,
                    earliest=EARLY) == [d(5, 4)]


def test_schedule_clock_moved_back_gives_nothing() -> None:
    last = utc(2026, 5, 5, 9, 0)
    assert due_days(last, utc(2026, 5, 3, 12, 0), LISBON, earliest=EARLY) == []
    assert not run_due(last, utc(2026, 5, 3, 12, 0), LISBON)


def test_schedule_first_start_catches_up_from_earliest() -> None:
    now = utc(2026, 5, 5, 7, 0)  # 08:00 local: the 4th is not released yet
    assert due_days(None, now, LISBON, earliest=d(5, 1)) == [d(5, 1), d(5, 2), d(5, 3)]
    assert run_due(None, now, LISBON)
    assert due_days(None, now, LISBON, earliest=d(5, 4)) == []


def test_schedule_released_through_and_next_fire() -> None:
    assert released_through(utc(2026, 3, 29, 8, 30), LISBON) == d(3, 28)
    assert released_through(utc(2026, 3, 29, 8, 29, 59), LISBON) == d(3, 27)
    assert next_fire(utc(2026, 3, 28, 9, 30), LISBON) == utc(2026, 3, 29, 8, 30)
    assert next_fire(utc(2026, 10, 24, 8, 29), LISBON) == utc(2026, 10, 24, 8, 30)
    assert next_fire(utc(2026, 10, 24, 8, 30), LISBON) == utc(2026, 10, 25, 9, 30)
    # An offset other than UTC means the same instant.
    plus_five = dt.timezone(dt.timedelta(hours=5))
    assert released_through(dt.datetime(2026, 3, 29, 13, 30, tzinfo=plus_five), LISBON) == d(3, 28)


def test_schedule_refuses_naive_times() -> None:
    with pytest.raises(ScheduleError):
        due_days(None, dt.datetime(2026, 5, 5, 12), LISBON, earliest=EARLY)
    with pytest.raises(ScheduleError):
        run_due(dt.datetime(2026, 5, 5, 12), utc(2026, 5, 6, 12), LISBON)


def test_schedule_job_options_tolerate_a_missed_run() -> None:
    assert JOB_OPTIONS == {"misfire_grace_time": 21600, "coalesce": True, "max_instances": 1}
