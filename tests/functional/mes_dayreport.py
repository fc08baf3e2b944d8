"""Day reports published by the job (spec 3.3.5) through a real broker, with real processes.

Phases:
1. a finished day report (the worked example of spec 3.3.4, entered with `chainmill mes
   shift`) is published by `chainmill mes publish`; the process is killed (SIGKILL) after the
   bridge created the 28 records and before the answer reached the ledger: the ledger holds
   PENDING;
2. the job re-run sends the batch again, learns the records exist with equal values and
   records PUBLISHED: no record created twice; a third run sends nothing;
3. the scheduler was down over a 09:30 (its last run is days back): `chainmill mes serve`
   makes exactly one late run at start-up, publishing the report that waited; started again,
   it finds no 09:30 since that run and does not run.
"""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
from pathlib import Path

import pytest
from framework import chainmill_command, scaled, wait_until
from kafka_support import tansu_broker
from mes_support import ContractResponder, MesServer, enter_report, make_db
from sqlalchemy import create_engine, select, update

from mes import schema
from mes.dayreport.ids import flow_id

pytestmark = pytest.mark.functional

TZ = "Europe/Lisbon"


def zone_far_from_0930() -> str:
    """A plant time zone whose local time is hours away from 09:30 now, so no scheduled run
    fires during the test (the start-up catch-up is what it checks)."""
    offset = (16 - dt.datetime.now(dt.UTC).hour) % 24
    offset = offset - 24 if offset > 14 else offset
    return f"Etc/GMT{-offset:+d}" if offset else "Etc/GMT"
def _query(url: str, statement):
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(statement)
            return [dict(r) for r in result.mappings()] if result.returns_rows else None
    finally:
        engine.dispose()


def test_mes_dayreport_kill_between_publish_and_ledger_and_one_late_run(tmp_path: Path,
                                                                         free_port_factory):
    db = make_db(tmp_path)
    today = dt.datetime.now(dt.UTC).date()
    day1, day2 = today - dt.timedelta(days=6), today - dt.timedelta(days=5)
    fid1, fid2 = flow_id(day1, "PT10"), flow_id(day2, "PT10")
    enter_report(db, day1)
    with tansu_broker(tmp_path / "tansu", free_port_factory()) as kafka:
        holding = {"on": True}
        with ContractResponder(kafka, hold=lambda r: holding["on"] and
                               r.action == "create_static_records") as bridge:
            contract = bridge.contract
            publish = subprocess.Popen(
                [*chainmill_command(), "mes", "publish", "--key-file", str(db.key_file),
                 "--kafka", kafka, "--tz", TZ, "--timeout", "60"],
                env=db.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                wait_until(lambda: len(contract.creations) == 28, timeout=60,
                           msg="the bridge to create the 28 indicator records")
                publish.send_signal(signal.SIGKILL)
            finally:
                publish.wait(timeout=scaled(30))
            assert _query(db.url, select(schema.publication.c.flow_id, schema.publication.c.status)
                          ) == [{"flow_id": fid1, "status": "PENDING"}]

            holding["on"] = False
            out = db.cli("publish", "--kafka", kafka, "--tz", TZ)
            assert out["reports"] == [{"flow_id": fid1, "status": "PUBLISHED", "txids": []}]
            assert len(contract.creations) == len(set(contract.creations)) == 28
            db.cli("publish", "--kafka", kafka, "--tz", TZ)
            creates = [r for r in contract.requests if r.action == "create_static_records"]
            assert len(creates) == 2  # the third run found the report PUBLISHED

            # Down over a 09:30: the last run was four days ago; a new report waits.
            enter_report(db, day2)
            four_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=4)
            _query(db.url, update(schema.scheduler_lock).values(
                last_run=int(four_days_ago.timestamp() * 1000), holder=None, lease_until=0))
            runs_before = _query(db.url, select(schema.job_run))
            for attempt in range(2):
                server = MesServer(db, free_port_factory(), kafka, "--tz", zone_far_from_0930(),
                                   log_path=tmp_path / f"serve{attempt}.log")
                try:
                    wait_until(lambda a=attempt: "day-report job (startup)" in
                               (tmp_path / f"serve{a}.log").read_text(), timeout=60,
                               msg="the start-up catch-up decision")
                    wait_until(lambda: len(_query(db.url, select(schema.job_run)))
                               >= len(runs_before) + 1, timeout=60, msg="the late run")
                finally:
                    server.stop()
            runs = _query(db.url, select(schema.job_run).order_by(schema.job_run.c.id))
            late = runs[len(runs_before):]
            assert [(r["reason"], r["published"]) for r in late] == [("startup", 1)]
            assert "no 09:30 since the last run" in (tmp_path / "serve1.log").read_text()
            ledger = {r["flow_id"]: r["status"] for r in
                      _query(db.url, select(schema.publication))}
            assert ledger == {fid1: "PUBLISHED", fid2: "PUBLISHED"}
            assert len(contract.creations) == len(set(contract.creations)) == 56
