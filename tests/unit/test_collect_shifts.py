"""Shift inputs from collected CNC data (spec 3.3.4, last paragraph)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from mes.collector.shifts import Calendar, CalendarError, segments, shift_inputs

START = 1_767_254_400  # 2026-01-01 08:00 UTC
END = START + 8 * 3600
NONE = Calendar(())


def rows(*samples: tuple[int, str]) -> list[dict]:
    """Samples as (seconds after START, status), one every so often."""
    return [{"id": i, "timestamp": START + t, "json_data": json.dumps({"status": s})}
            for i, (t, s) in enumerate(samples)]


def every(step: int, first: int, last: int, status: str) -> list[tuple[int, str]]:
    return [(t, status) for t in range(first, last, step)]


def test_collect_shift_all_running() -> None:
    data = rows(*every(60, 0, 8 * 3600, "running"))
    inputs = shift_inputs(data, START, END, NONE)
    assert inputs.run_seconds == 8 * 3600 and inputs.unplanned_stop_seconds == 0
    assert inputs.failures == 0


def test_collect_shift_error_periods_count_failures_and_repair() -> None:
    samples = (every(60, 0, 3600, "running") + every(60, 3600, 4500, "error")
               + every(60, 4500, 7200, "running") + every(60, 7200, 7800, "error")
               + every(60, 7800, 8 * 3600, "running"))
    inputs = shift_inputs(rows(*samples), START, END, NONE)
    assert inputs.failures == 2
    assert inputs.repair_seconds == 900 + 600 == inputs.unplanned_stop_seconds
    assert inputs.run_seconds == 8 * 3600 - 1500


def test_collect_shift_failure_counted_in_the_shift_it_began() -> None:
    samples = (every(60, -600, -120, "running") + every(60, -120, 600, "error")
               + every(60, 600, 8 * 3600, "running"))
    inputs = shift_inputs(rows(*samples), START, END, NONE)
    assert inputs.failures == 0, "the error began in the previous shift"
    assert inputs.unplanned_stop_seconds == 600 == inputs.repair_seconds


def test_collect_shift_idle_planned_only_inside_calendar() -> None:
    samples = (every(60, 0, 3600, "running") + every(60, 3600, 5400, "idle")
               + every(60, 5400, 8 * 3600, "running"))
    calendar = Calendar(((START + 3600, START + 4800),))  # a 20-minute planned break
    inputs = shift_inputs(rows(*samples), START, END, calendar)
    assert inputs.planned_stop_seconds == 1200
    assert inputs.unplanned_stop_seconds == 600 and inputs.failures == 0


def test_collect_shift_silence_is_unplanned_without_failure() -> None:
    samples = every(60, 0, 3600, "running") + every(60, 7200, 8 * 3600, "running")
    inputs = shift_inputs(rows(*samples), START, END, NONE, max_gap=300)
    assert inputs.no_data_seconds == 7200 - (3540 + 300)
    assert inputs.unplanned_stop_seconds == inputs.no_data_seconds and inputs.failures == 0
    assert inputs.run_seconds + inputs.unplanned_stop_seconds == 8 * 3600


def test_collect_shift_daily_calendar_in_plant_timezone() -> None:
    calendar = Calendar.from_dict({"timezone": "Europe/Lisbon", "daily": [["12:00", "12:30"]]})
    day = dt.datetime(2026, 7, 1, tzinfo=dt.UTC)  # Lisbon is UTC+1 in summer
    start, end = int(day.timestamp()), int(day.timestamp()) + 86400
    assert calendar.planned(start, end) == [(start + 11 * 3600, start + 11 * 3600 + 1800)]


def test_collect_shift_no_data_at_all() -> None:
    inputs = shift_inputs([], START, END, NONE)
    assert inputs.no_data_seconds == 8 * 3600 and inputs.run_seconds == 0
    assert inputs.as_dict()["shift_length_min"] == 480.0


def test_collect_shift_segments_merge_consecutive_samples() -> None:
    assert segments(rows((0, "running"), (60, "running"), (120, "idle")), START, START + 180) == [
        (START, START + 120, "running", True), (START + 120, START + 180, "idle", True)]


@pytest.mark.parametrize("data, reason", [
    ({"timezone": "Mars/Olympus"}, "time zone"), ({"periods": [[5, 1]]}, "period"),
    ({"daily": [["25:00", "26:00"]]}, "time of day"), ({"weekly": []}, "unknown"),
])
def test_collect_calendar_refuses_malformed(data, reason) -> None:
    with pytest.raises(CalendarError, match=reason):
        Calendar.from_dict(data)
