"""The day-report job (spec 3.3.5) with an injected clock: catch-up, lease, ledger idempotency."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import subprocess
import sys
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from mes_contract_fake import mes_world
from sqlalchemy import select

from mes import schema
from mes.daily import DayReportPublisher, DayReportScheduler, SchedulerLock
from mes.dayreport.ids import flow_id
from mes.dayreport.publication import CONFLICT, PENDING, PUBLISHED

LISBON = ZoneInfo("Europe/Lisbon")
DAY1 = dt.date(2026, 3, 2)
DAY2 = dt.date(2026, 3, 3)
WORKED = {"A": (45, 3, 45, 760, 741), "B": (90, 2, 90, 700, 690), "C": (0, 0, 0, 880, 871)}


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=LISBON).astimezone(dt.UTC)


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def add_report(engine, day: dt.date, shifts=("A", "B", "C")) -> None:
    with engine.begin() as conn:
        for letter in shifts:
            unplanned, failures, repair, total, good = WORKED[letter]
            conn.execute(schema.shift_record.insert().values(
                unit_id=10, day=day, shift=letter, shift_length=480, planned_stop=30,
                unplanned_stop=unplanned, failures=failures, repair_time=repair,
                total_count=total, good_count=good, ideal_time=Decimal(total) / 2))
        conn.execute(schema.day_report.insert().values(unit_id=10, day=day,
                                                       finished=len(shifts) == 3))


@pytest.fixture
def world(tmp_path):
    yield from mes_world(tmp_path)


def scheduler(world, clock: Clock, holder: str = "host-a:1") -> DayReportScheduler:
    engine, tokens, bridge = world
    return DayReportScheduler(DayReportPublisher(engine, tokens, bridge, LISBON),
                              SchedulerLock(engine, holder), clock=clock)


def runs(engine) -> list[tuple[str, int]]:
    with engine.connect() as conn:
        return [(r.reason, r.published) for r in conn.execute(
            select(schema.job_run).order_by(schema.job_run.c.id))]


def ledger(engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {r.flow_id: r.status for r in conn.execute(select(schema.publication))}


def test_mes_daily_publishes_a_report_with_the_worked_example_values(world) -> None:
    engine, _, bridge = world
    add_report(engine, DAY1)
    assert asyncio.run(scheduler(world, Clock(at(DAY2, 9, 30))).tick("schedule"))
    contract = bridge.contract
    fid = flow_id(DAY1, "PT10")
    assert ledger(engine) == {fid: PUBLISHED}
    assert len(contract.creations) == 28
    values = {contract.records[r]["properties"]["shift"] + "_" +
              contract.records[r]["properties"]["indicator"]: contract.records[r]["properties"]
              for r in contract.creations}
    assert values["T_OEE"]["value"] == 85.26 and values["T_MTBF"]["value"] == 243.0
    assert values["C_MTBF"]["defined"] == 0 and values["C_MTBF"]["value"] == 0.0
    creates = [r for r in contract.requests if r.action == "create_static_records"]
    assert len(creates) == 1 and len(creates[0].body["records"]) == 28  # one atomic batch


def test_mes_daily_report_is_released_at_0930_plant_time_only_when_finished(world) -> None:
    engine, _, bridge = world
    add_report(engine, DAY1)
    add_report(engine, DAY2, shifts=("A", "B"))  # night shift not in yet
    clock = Clock(at(DAY2, 9, 29))
    job = scheduler(world, clock)
    asyncio.run(job.tick("startup"))  # first start: runs, but DAY1 is not released before 09:30
    assert bridge.contract.creations == []
    clock.now = at(DAY2, 9, 30)
    asyncio.run(job.tick("schedule"))
    clock.now = at(DAY2 + dt.timedelta(days=1), 9, 30)
    asyncio.run(job.tick("schedule"))
    assert ledger(engine) == {flow_id(DAY1, "PT10"): PUBLISHED}  # DAY2 is not finished
    assert runs(engine) == [("startup", 0), ("schedule", 1), ("schedule", 0)]


def test_mes_daily_missed_0930_gives_exactly_one_late_run(world) -> None:
    engine, _, bridge = world
    clock = Clock(at(DAY1, 10, 0))
    asyncio.run(scheduler(world, clock).tick("startup"))
    add_report(engine, DAY1)
    add_report(engine, DAY2)
    # The process is down over two 09:30s (DAY2's and DAY3's); it starts again at 11:00.
    day3 = DAY2 + dt.timedelta(days=1)
    clock.now = at(day3, 11, 0)
    job = scheduler(world, clock, holder="host-a:2")
    asyncio.run(job.tick("startup"))
    clock.now = at(day3, 11, 5)
    asyncio.run(job.tick("check"))
    asyncio.run(scheduler(world, clock, holder="host-a:2").tick("startup"))  # a restart
    assert runs(engine) == [("startup", 0), ("startup", 2)]
    assert set(ledger(engine).values()) == {PUBLISHED} and len(bridge.contract.creations) == 56
    # The clock moved back: nothing runs; moved forward past a 09:30: one run.
    clock.now = at(DAY2, 12, 0)
    assert not asyncio.run(job.tick("check"))
    clock.now = at(day3 + dt.timedelta(days=2), 15, 0)
    assert asyncio.run(job.tick("check"))
    assert not asyncio.run(job.tick("check"))
    assert runs(engine)[2:] == [("check", 0)]


def test_mes_daily_killed_between_publish_and_ledger_update_publishes_no_duplicate(world) -> None:
    engine, tokens, bridge = world
    add_report(engine, DAY1)
    fid = flow_id(DAY1, "PT10")

    class Killed(BaseException):
        """Stands for SIGKILL: nothing after it runs in this process."""

    def kill_after_create(request, response):
        if request.action == "create_static_records":
            raise Killed

    bridge.after = kill_after_create
    publisher = DayReportPublisher(engine, tokens, bridge, LISBON)
    with pytest.raises(Killed):
        asyncio.run(publisher.run(at(DAY2, 9, 30)))
    assert ledger(engine) == {fid: PENDING} and len(bridge.contract.creations) == 28
    bridge.after = None
    # The restarted job sends the batch again: the bridge says the records exist, with their
    # values; equal values count as published, nothing is created twice.
    assert asyncio.run(DayReportPublisher(engine, tokens, bridge, LISBON)
                       .run(at(DAY2, 9, 31))) == 1
    assert ledger(engine) == {fid: PUBLISHED}
    assert len(bridge.contract.creations) == len(set(bridge.contract.creations)) == 28
    asyncio.run(DayReportPublisher(engine, tokens, bridge, LISBON).run(at(DAY2, 9, 32)))
    assert sum(r.action == "create_static_records" for r in bridge.contract.requests) == 2


def test_mes_daily_conflicting_value_on_chain_is_logged_never_overwritten(world, caplog) -> None:
    engine, tokens, bridge = world
    add_report(engine, DAY1)
    fid = flow_id(DAY1, "PT10")
    records = DayReportPublisher.records_of({
        "flow_id": fid, "report_id": None, "day": DAY1, "code": "PT10",
        "shifts": [{"shift": s, "shift_length": 480, "planned_stop": 30, "unplanned_stop": u,
                    "failures": f, "repair_time": r, "total_count": t, "good_count": g,
                    "ideal_time": Decimal(t) / 2} for s, (u, f, r, t, g) in WORKED.items()]})
    forged = records[0]["record_id"]
    bridge.contract.records[forged] = {"record_type": "DayReportIndicator",
                                       "properties": {**records[0]["properties"], "value": 12.5}}
    with caplog.at_level(logging.WARNING):
        asyncio.run(DayReportPublisher(engine, tokens, bridge, LISBON).run(at(DAY2, 9, 30)))
    assert ledger(engine) == {fid: CONFLICT}
    assert bridge.contract.creations == []  # nothing of a conflicting report is published
    assert bridge.contract.records[forged]["properties"]["value"] == 12.5
    assert f"record {forged} has value=12.5 on the chain" in caplog.text
    with engine.connect() as conn:
        assert "12.5" in conn.execute(select(schema.publication.c.detail)).scalar()


def test_mes_daily_one_scheduler_per_deployment(world) -> None:
    engine, _, bridge = world
    add_report(engine, DAY1)
    clock = Clock(at(DAY2, 9, 30))
    first, second = scheduler(world, clock, "host-a:1"), scheduler(world, clock, "host-b:1")

    async def both() -> list[bool]:
        return list(await asyncio.gather(first.tick("schedule"), second.tick("schedule")))

    assert sorted(asyncio.run(both())) == [False, True]
    assert len(runs(engine)) == 1 and len(bridge.contract.creations) == 28


def test_mes_daily_lease_of_a_killed_process_of_this_host_is_taken_over(world) -> None:
    engine, _, _ = world
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    now = at(DAY2, 9, 30)
    assert SchedulerLock(engine, f"{socket.gethostname()}:{gone.pid}").acquire(now)
    assert SchedulerLock(engine, f"{socket.gethostname()}:{os.getpid()}").acquire(now)
    # A live holder (this process) keeps its lease; a holder on another host is never judged.
    assert not SchedulerLock(engine, "other-host:1").acquire(now)


def test_mes_daily_one_report_with_impossible_inputs_does_not_hold_back_the_others(world, caplog) -> None:
    engine, tokens, bridge = world
    add_report(engine, DAY1)
    with engine.begin() as conn:
        conn.execute(schema.production_unit.insert().values(unit_id=11, code="PT11", updated_at=0))
        for letter in "ABC":  # more good parts than parts: the formulas refuse it
            conn.execute(schema.shift_record.insert().values(
                unit_id=11, day=DAY1, shift=letter, shift_length=480, total_count=5, good_count=9))
        conn.execute(schema.day_report.insert().values(unit_id=11, day=DAY1, finished=True))
        # A mapped MES's unit whose code cannot appear in ids ("_" separates their fields).
        conn.execute(schema.production_unit.insert().values(unit_id=12, code="PT_12", updated_at=0))
        conn.execute(schema.day_report.insert().values(unit_id=12, day=DAY1, finished=True))
    with caplog.at_level(logging.ERROR):
        published = asyncio.run(DayReportPublisher(engine, tokens, bridge, LISBON)
                                .run(at(DAY2, 9, 30)))
    assert published == 1 and ledger(engine) == {flow_id(DAY1, "PT10"): PUBLISHED}
    assert f"day report {flow_id(DAY1, 'PT11')} not published: good count exceeds" in caplog.text
    assert "day report of unit 'PT_12' on 2026-03-02 not published: unit code" in caplog.text


def test_mes_daily_existing_records_of_an_error_answer() -> None:
    from mes.bridge import messages as m
    from mes.daily import existing_records

    def error(**extra) -> m.Response:
        return m.Response(m.Header(), "error", error="exists", extra=extra)

    props = {"value": 1.0}
    assert existing_records(error(existing=[{"record_id": "r1", "properties": props,
                                             "final": True}])) == {"r1": props}
    assert existing_records(error(existing={"r1": props})) == {"r1": props}
    for bad in ({}, {"existing": []}, {"existing": [{"record_id": 5, "properties": props}]},
                {"existing": {"r1": "x"}}, {"existing": "r1"}):
        assert existing_records(error(**bad)) is None
    assert existing_records(m.Response(m.Header(), "data", data={"txids": []})) is None


def test_mes_daily_apscheduler_job_at_0930_plant_time_with_catch_up_options(world) -> None:
    engine, _, _ = world
    add_report(engine, DAY1)
    job = scheduler(world, Clock(at(DAY2, 11, 0)))

    async def started() -> dict:
        await job.start()
        try:
            cron = job._scheduler.get_job("dayreport-0930")
            fields = {f.name: str(f) for f in cron.trigger.fields}
            return {"hour": fields["hour"], "minute": fields["minute"],
                    "tz": str(cron.trigger.timezone), "grace": cron.misfire_grace_time,
                    "coalesce": cron.coalesce, "max": cron.max_instances,
                    "next": cron.next_run_time.astimezone(LISBON).time(),
                    "check": job._scheduler.get_job("dayreport-check") is not None}
        finally:
            job.stop()

    assert asyncio.run(started()) == {"hour": "9", "minute": "30", "tz": "Europe/Lisbon",
                                      "grace": 6 * 3600, "coalesce": True, "max": 1,
                                      "next": dt.time(9, 30), "check": True}
    assert runs(engine) == [("startup", 1)]  # the start-up catch-up ran once


def test_mes_daily_long_catch_up_renews_the_lease_between_reports(world) -> None:
    """A run that outlasts the lease keeps it: another host cannot start a second run."""
    engine, tokens, bridge = world
    for back in (2, 1, 0):
        add_report(engine, DAY1 - dt.timedelta(days=back))
    other = SchedulerLock(engine, "host-b:1")
    start = at(DAY2, 9, 30)
    taken: list[bool] = []

    class SlowBridge:  # report k is published 11 (k - 1) minutes into the run
        async def request(self, topic, auth, body=None, **kwargs):
            if body and body.get("action") == "create_static_records":
                k = len(taken) + 1
                if k > 1:  # another host tries 5 minutes after the renewal (if there was one)
                    taken.append(other.acquire(start + dt.timedelta(minutes=11 * (k - 1) + 5)))
                else:
                    taken.append(False)
            return await bridge.request(topic, auth, body, **kwargs)

    class SteppingClock(Clock):
        def __call__(self) -> dt.datetime:  # each reading 11 minutes after the one before
            now, self.now = self.now, self.now + dt.timedelta(minutes=11)
            return now

    clock = SteppingClock(start)
    job = DayReportScheduler(DayReportPublisher(engine, tokens, SlowBridge(), LISBON),
                             SchedulerLock(engine, "host-a:1"), clock=clock)
    assert asyncio.run(job.tick("schedule"))
    assert taken == [False, False, False]  # the lease of 10 min would be over at 09:40
    assert runs(engine) == [("schedule", 3)]
