"""The publication ledger's decision for a day report (spec 3.3.5): idempotent, never overwrites."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from mes.dayreport.ids import flow_id
from mes.dayreport.indicators import NAMES, ShiftData, day_indicators, ideal_time
from mes.dayreport.publication import (
    CONFLICT,
    PENDING,
    PUBLISHED,
    indicator_records,
    plan_publication,
    same_value,
)

DAY = dt.date(2021, 1, 11)
FLOW = flow_id(DAY, "PT10")


def _values() -> dict[str, float | None]:
    def shift(unplanned: int, failures: int, total: int, good: int) -> ShiftData:
        return ShiftData(480, 30, unplanned, failures, unplanned if failures else 0, total, good,
                         ideal_time([(0.5, total)]))
    return day_indicators({"A": shift(45, 3, 760, 741), "B": shift(90, 2, 700, 690),
                           "C": shift(0, 0, 880, 871)})


RECORDS = indicator_records(FLOW, FLOW, DAY, "PT10", _values())


def _chain(records: list[dict]) -> dict[str, dict]:
    return {r["record_id"]: dict(r["properties"]) for r in records}


def test_publication_records_of_a_report() -> None:
    assert len(RECORDS) == 28
    first, last = RECORDS[0], RECORDS[-1]
    assert first["record_id"] == "001_21_02_01_PT10_101" and last["record_id"] == "001_21_02_01_PT10_407"
    assert first["record_type"] == "DayReportIndicator"
    assert first["properties"] == {"value": 90.0, "defined": 1, "flow_id": FLOW, "date": "2021-01-11",
                                   "unit": "PT10", "shift": "A", "indicator": "D", "uom": "%"}
    c_mtbf = next(r for r in RECORDS if r["record_id"].endswith("_305"))
    assert c_mtbf["properties"]["value"] == 0.0 and c_mtbf["properties"]["defined"] == 0
    assert last["properties"]["uom"] == "min" and last["properties"]["value"] == 1215.0


def test_publication_records_check_their_inputs() -> None:
    with pytest.raises(ValueError, match="does not name"):
        indicator_records(FLOW, FLOW, DAY + dt.timedelta(days=1), "PT10", _values())
    with pytest.raises(ValueError, match="does not name"):
        indicator_records(FLOW, FLOW, DAY, "PT11", _values())
    with pytest.raises(ValueError, match="28"):
        indicator_records(FLOW, FLOW, DAY, "PT10", {n: 1.0 for n in NAMES[:27]})
    with pytest.raises(ValueError, match="number"):
        indicator_records(FLOW, FLOW, DAY, "PT10", {**_values(), "A_D": "90"})


def test_publication_first_run_publishes_all_28() -> None:
    plan = plan_publication(FLOW, None, RECORDS, {})
    assert plan.status == PENDING and len(plan.publish) == 28 and not plan.conflicts


def test_publication_rerun_after_success_does_nothing() -> None:
    plan = plan_publication(FLOW, PUBLISHED, RECORDS, {})
    assert plan.status == PUBLISHED and plan.publish == () and plan.conflicts == ()


def test_publication_killed_between_publish_and_ledger_update_is_not_republished() -> None:
    # The ledger still says PENDING, but the chain holds every record with the same values
    # (integers where the MES had floats, as a JSON round trip may give).
    on_chain = _chain(RECORDS)
    on_chain[RECORDS[-1]["record_id"]]["value"] = 1215
    plan = plan_publication(FLOW, PENDING, RECORDS, on_chain)
    assert plan.status == PUBLISHED and plan.publish == () and len(plan.already) == 28


def test_publication_partly_on_chain_publishes_only_the_rest() -> None:
    plan = plan_publication(FLOW, PENDING, RECORDS, _chain(RECORDS[:10]))
    assert plan.status == PENDING
    assert [r["record_id"] for r in plan.publish] == [r["record_id"] for r in RECORDS[10:]]
    assert len(plan.already) == 10


def test_publication_conflict_is_logged_and_not_overwritten(caplog: pytest.LogCaptureFixture) -> None:
    on_chain = _chain(RECORDS)
    on_chain[RECORDS[0]["record_id"]]["value"] = 89.5
    del on_chain[RECORDS[1]["record_id"]]
    with caplog.at_level(logging.WARNING, logger="mes.dayreport.publication"):
        plan = plan_publication(FLOW, PENDING, RECORDS, on_chain)
    assert plan.status == CONFLICT and plan.publish == ()
    assert [(c.record_id, c.property, c.on_chain, c.wanted) for c in plan.conflicts] == [
        ("001_21_02_01_PT10_101", "value", 89.5, 90.0)]
    assert "001_21_02_01_PT10_101" in caplog.text and "not overwritten" in caplog.text
    # The next day's run neither publishes nor logs it again.
    caplog.clear()
    again = plan_publication(FLOW, CONFLICT, RECORDS, on_chain)
    assert again.status == CONFLICT and again.publish == () and caplog.text == ""


def test_publication_missing_property_on_chain_is_a_conflict() -> None:
    on_chain = _chain(RECORDS)
    del on_chain[RECORDS[3]["record_id"]]["uom"]
    plan = plan_publication(FLOW, None, RECORDS, on_chain)
    assert plan.status == CONFLICT and plan.conflicts[0].property == "uom"


def test_publication_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="status"):
        plan_publication(FLOW, "DONE", RECORDS, {})
    with pytest.raises(ValueError, match="distinct"):
        plan_publication(FLOW, None, [RECORDS[0], RECORDS[0]], {})
    with pytest.raises(ValueError, match="distinct"):
        plan_publication(FLOW, None, [], {})


@pytest.mark.parametrize("a, b, same", [
    (90, 90.0, True), (90.0, 90.0, True), (0, 0.0, True), (90.01, 90.0, False),
    ("PT10", "PT10", True), ("1", 1, False), (True, 1, False), (1, True, False), (None, 0, False),
])
def test_publication_same_value(a: object, b: object, same: bool) -> None:
    assert same_value(a, b) is same
