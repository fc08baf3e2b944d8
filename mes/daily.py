"""The daily day-report job (spec 3.3.5): publication ledger, scheduler lease, APScheduler 3.

`DayReportPublisher.run` publishes every finished day report dated up to the last released
day that the ledger does not hold as ``PUBLISHED`` or ``CONFLICT``, each report as one atomic
``create_static_records`` batch. The ledger row goes to ``PENDING`` before the batch is sent
and to ``PUBLISHED`` (with the txids) after; a process killed in between leaves ``PENDING``,
and the next run sends the batch again: the bridge answers that the records exist, with their
values, and `plan_publication` counts equal values as published and logs a different value as
a conflict, never overwriting it.

`DayReportScheduler` runs the job at 09:30 in the plant's time zone (APScheduler 3 cron
trigger with `JOB_OPTIONS`), once at start-up and on a periodic check when a 09:30 was missed
(process down, busy, clock moved): a run happens only when a 09:30 lies between the last run
(kept in the database) and now, so a missed 09:30 gives exactly one late run. A run holds the
database lease (`SchedulerLock`) from its decision to its record, so however many processes
start a scheduler, a deployment runs one job at a time and each 09:30 once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from mes import schema
from mes.bridge import messages as m
from mes.bridge.client import BridgeError
from mes.dayreport import publication as pub
from mes.dayreport.ids import IdError
from mes.dayreport.ids import flow_id as canonical_flow_id
from mes.dayreport.indicators import IndicatorError, ShiftData, day_indicators
from mes.dayreport.schedule import JOB_OPTIONS, RUN_AT, released_through, run_due
from mes.lease import LEASE_MS, SchedulerLock, default_holder
from mes.tokens import TokenError, TokenStore
from mes.units import Bridge

__all__ = ["JOB_NAME", "LEASE_MS", "RECORD_TYPE_PROPERTIES", "SchedulerLock", "DayReportPublisher",
           "DayReportScheduler", "existing_records", "default_holder"]

log = logging.getLogger(__name__)

JOB_NAME = "dayreport"
CHECK_SECONDS = 300
"""How often a running scheduler checks for a missed 09:30 (clock moved forward)."""

Clock = Callable[[], dt.datetime]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def existing_records(response: m.Response) -> dict[str, dict[str, Any]] | None:
    """The records an error answer to ``create_static_records`` says exist, with their current
    properties (bridge contract: ``"existing": {record_id: {property: value}}``, or a list of
    ``{"record_id", "properties"}``); None when the error is about something else."""
    if response.kind != "error":
        return None
    found = response.extra.get("existing")
    if isinstance(found, list):
        found = {e.get("record_id"): e.get("properties") for e in found if isinstance(e, dict)}
    if not isinstance(found, dict) or not found:
        return None
    out = {}
    for record_id, props in found.items():
        if not isinstance(record_id, str) or not isinstance(props, dict):
            return None
        out[record_id] = props
    return out


RECORD_TYPE_PROPERTIES: tuple[dict[str, Any], ...] = (
    {"name": "value", "data_type": "FLOAT", "required": True},
    {"name": "defined", "data_type": "INT", "required": True},
    *({"name": n, "data_type": "STRING", "required": True}
      for n in ("flow_id", "date", "unit", "shift", "indicator", "uom")),
)
"""The ``DayReportIndicator`` record type (spec 3.3.3)."""


class DayReportPublisher:
    """Publish finished day reports through the bridge, guarded by the publication ledger."""

    def __init__(self, engine: Engine, tokens: TokenStore, bridge: Bridge, tz: ZoneInfo, *,
                 at: dt.time = RUN_AT) -> None:
        self.engine = engine
        self.tokens = tokens
        self.bridge = bridge
        self.tz = tz
        self.at = at
        self._type_ensured = False

    async def _ensure_type(self, master: str) -> None:
        """The record type, once per process ("already exists" is success)."""
        if self._type_ensured:
            return
        body = {"action": "ensure_record_type", "name": pub.RECORD_TYPE,
                "properties": list(RECORD_TYPE_PROPERTIES)}
        response = await self.bridge.request(m.TOPIC_RTY, master, body)
        if response.kind == "error" and "already exists" not in (response.error or ""):
            raise BridgeError(f"record type {pub.RECORD_TYPE}: {response.error}")
        self._type_ensured = True

    # -- database -------------------------------------------------------------------------

    def reports_through(self, last_day: dt.date) -> list[dict[str, Any]]:
        """Finished reports dated ``<= last_day`` not PUBLISHED/CONFLICT, with their shifts."""
        r, u, s, p = schema.day_report, schema.production_unit, schema.shift_record, schema.publication
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(r.c.id, r.c.unit_id, r.c.day, r.c.report_id, u.c.code)
                .join(u, u.c.unit_id == r.c.unit_id)
                .where(r.c.finished.is_(True), r.c.day <= last_day)
                .order_by(r.c.day, u.c.code)).mappings().all()
            done = {row.flow_id for row in conn.execute(
                select(p.c.flow_id).where(p.c.status.in_((pub.PUBLISHED, pub.CONFLICT))))}
            reports = []
            for row in rows:
                try:
                    fid = canonical_flow_id(row["day"], row["code"])
                except IdError as exc:  # a mapped MES's unit code may not fit the ids
                    log.error("day report of unit %r on %s not published: %s", row["code"],
                              row["day"], exc)
                    continue
                if fid in done:
                    continue
                shifts = conn.execute(select(s).where(s.c.unit_id == row["unit_id"],
                                                      s.c.day == row["day"])).mappings().all()
                reports.append({**row, "flow_id": fid, "shifts": shifts})
        return reports

    def ledger_status(self, flow_id: str) -> str | None:
        p = schema.publication
        with self.engine.connect() as conn:
            return conn.execute(select(p.c.status).where(p.c.flow_id == flow_id)).scalar()

    def set_ledger(self, flow_id: str, status: str, txids: list[str] | None = None,
                   detail: str | None = None) -> None:
        p = schema.publication
        values: dict[str, Any] = {"status": status, "updated_at": _ms(_utc_now()), "detail": detail}
        if txids is not None:
            values["txids"] = json.dumps(txids)
        with self.engine.begin() as conn:
            if conn.execute(select(p.c.flow_id).where(p.c.flow_id == flow_id)).first() is None:
                conn.execute(p.insert().values(flow_id=flow_id, txids=values.pop("txids", "[]"),
                                               **values))
            else:
                conn.execute(update(p).where(p.c.flow_id == flow_id).values(**values))

    # -- one report -------------------------------------------------------------------------

    @staticmethod
    def records_of(report: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The 28 indicator records of a report row (with its shift rows)."""
        shifts = {row["shift"]: ShiftData(
            shift_length=row["shift_length"], planned_stop=row["planned_stop"],
            unplanned_stop=row["unplanned_stop"], failures=row["failures"],
            repair_time=row["repair_time"], total_count=row["total_count"],
            good_count=row["good_count"], ideal_time=row["ideal_time"]) for row in report["shifts"]}
        values = day_indicators(shifts)
        report_id = report["report_id"] or report["flow_id"]
        return pub.indicator_records(report_id, report["flow_id"], report["day"], report["code"],
                                     values)

    async def publish_report(self, report: Mapping[str, Any]) -> str:
        """Publish one report; the ledger status it ends in."""
        fid = report["flow_id"]
        records = self.records_of(report)
        status = self.ledger_status(fid)
        on_chain: dict[str, dict[str, Any]] = {}
        master = self.tokens.master()
        if master is None or not master.token:
            raise BridgeError("no Master token in the token store (chainmill mes token master)")
        for _ in range(3):  # at most: publish, learn what exists, publish the rest
            plan = pub.plan_publication(fid, status, records, on_chain)
            if not plan.publish:
                if plan.status != status:
                    detail = json.dumps([{"record_id": c.record_id, "property": c.property,
                                          "on_chain": c.on_chain, "wanted": c.wanted}
                                         for c in plan.conflicts]) if plan.conflicts else None
                    self.set_ledger(fid, plan.status, detail=detail)
                if plan.status == pub.PUBLISHED:
                    log.info("day report %s: already on the chain (%d records)", fid,
                             len(plan.already))
                return plan.status
            await self._ensure_type(master.token)
            if status != pub.PENDING:
                self.set_ledger(fid, pub.PENDING)
                status = pub.PENDING
            body = {"action": "create_static_records", "flow_id": fid, "records": list(plan.publish)}
            response = await self.bridge.request(m.TOPIC_REC, master.token, body)
            if response.kind == "data":
                data = response.data if isinstance(response.data, dict) else {}
                txids = [t for t in data.get("txids", []) if isinstance(t, str)]
                self.set_ledger(fid, pub.PUBLISHED, txids=txids)
                log.info("day report %s published: %d records, txids %s", fid,
                         len(plan.publish), ", ".join(txids))
                return pub.PUBLISHED
            existing = existing_records(response)
            if existing is None:
                log.warning("day report %s: bridge refused the batch: %s", fid,
                            response.error or response.message)
                return pub.PENDING
            on_chain.update(existing)
        return pub.PENDING

    async def run(self, now: dt.datetime,
                  renew: Callable[[], Awaitable[bool]] | None = None) -> int:
        """Publish every released, finished, unpublished report; the number published now.

        ``renew`` is awaited before each report after the first (the scheduler renews its
        lease, so a long catch-up keeps it); when it answers False the run stops there.
        """
        last_day = released_through(now, self.tz, self.at)
        reports = await asyncio.to_thread(self.reports_through, last_day)
        published = 0
        for n, report in enumerate(reports):
            if n and renew is not None and not await renew():
                log.warning("day-report job stopped after %d of %d reports: the scheduler "
                            "lease went to another process", n, len(reports))
                break
            try:
                status = await self.publish_report(report)
            except (IndicatorError, IdError, ValueError) as exc:
                # One report's bad inputs must not hold back the others; it stays unpublished.
                log.error("day report %s not published: %s", report["flow_id"], exc)
                continue
            if status == pub.PUBLISHED:
                published += 1
        return published


class DayReportScheduler:
    """The 09:30 job, its start-up catch-up and its missed-run check, under the lease."""

    def __init__(self, publisher: DayReportPublisher, lock: SchedulerLock, *,
                 clock: Clock = _utc_now) -> None:
        self.publisher = publisher
        self.lock = lock
        self.clock = clock
        self._scheduler: Any = None
        self._busy = asyncio.Lock()

    async def tick(self, reason: str) -> bool:
        """Run the job if this process gets the lease and a run is due; True if it ran.

        ``manual`` runs whenever the lease is held; the others only when a 09:30 lies between
        the last run and now.
        """
        async with self._busy:
            now = self.clock()
            if not await asyncio.to_thread(self.lock.acquire, now):
                log.info("day-report job (%s): another process holds the scheduler lease", reason)
                return False
            try:
                last = await asyncio.to_thread(self.lock.last_run)
                if reason != "manual" and not run_due(last, now, self.publisher.tz,
                                                      self.publisher.at):
                    log.debug("day-report job (%s): no 09:30 since the last run at %s",
                              reason, last)
                    return False
                log.info("day-report job (%s) at %s, last run %s", reason, now.isoformat(), last)
                published = await self.publisher.run(now, renew=self._renew)
                await asyncio.to_thread(self._record, now, published, reason)
                return True
            finally:
                # Held for the run only: a second process (a manual publish, a standby
                # scheduler) may run later, and then finds the 09:30 covered by last_run.
                await asyncio.to_thread(self.lock.release)

    async def _renew(self) -> bool:
        return await asyncio.to_thread(self.lock.acquire, self.clock())

    def _record(self, now: dt.datetime, published: int, reason: str) -> None:
        self.lock.set_last_run(now)
        with self.lock.engine.begin() as conn:
            conn.execute(schema.job_run.insert().values(
                job=self.lock.name, holder=self.lock.holder, started_at=_ms(now),
                published=published, reason=reason))

    async def _guarded(self, reason: str) -> None:
        try:
            await self.tick(reason)
        except BridgeError as exc:  # the job's outermost level: the next check retries
            log.warning("day-report job (%s) could not reach the bridge: %s", reason, exc)
        except (SQLAlchemyError, TokenError) as exc:
            log.error("day-report job (%s) failed: %s", reason, exc)

    async def start(self) -> None:
        """Start APScheduler (cron 09:30 plant time, and the missed-run check), then catch up."""
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        tz = self.publisher.tz
        at = self.publisher.at
        scheduler = AsyncIOScheduler(timezone=tz)
        scheduler.add_job(self._guarded, CronTrigger(hour=at.hour, minute=at.minute, timezone=tz),
                          args=("schedule",), id="dayreport-0930", **JOB_OPTIONS)
        scheduler.add_job(self._guarded, IntervalTrigger(seconds=CHECK_SECONDS, timezone=tz),
                          args=("check",), id="dayreport-check", **JOB_OPTIONS)
        scheduler.start()
        self._scheduler = scheduler
        await self._guarded("startup")

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        self.lock.release()
