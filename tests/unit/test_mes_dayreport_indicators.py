"""The day-report indicators of spec 3.3.4: the worked example value by value, every edge case."""

from __future__ import annotations

from decimal import Decimal

import pytest

from mes.dayreport.indicators import (
    NAMES,
    IndicatorError,
    ShiftData,
    day_indicators,
    ideal_time,
    shift_indicators,
)


def _shift(ppt: float, unplanned: float, failures: int, total: int, good: int,
           cycle: float = 0.5, planned: float = 30) -> ShiftData:
    return ShiftData(shift_length=ppt + planned, planned_stop=planned, unplanned_stop=unplanned,
                     failures=failures, repair_time=unplanned if failures else 0,
                     total_count=total, good_count=good, ideal_time=ideal_time([(cycle, total)]))


WORKED = {
    "A": _shift(450, 45, 3, 760, 741),
    "B": _shift(450, 90, 2, 700, 690),
    "C": _shift(450, 0, 0, 880, 871),
}

# The spec's table: shift -> (RunTime, D, P, Q, OEE, MTBF, MTTR).
EXPECTED = {
    "A": (405.0, 90.00, 93.83, 97.50, 82.33, 135.0, 15.0),
    "B": (360.0, 80.00, 97.22, 98.57, 76.67, 180.0, 45.0),
    "C": (450.0, 100.00, 97.78, 98.98, 96.78, None, None),
    "T": (1215.0, 90.00, 96.30, 98.38, 85.26, 243.0, 27.0),
}


def test_indicators_worked_example_value_by_value() -> None:
    values = day_indicators(WORKED)
    assert tuple(values) == NAMES and len(NAMES) == 28
    for letter, (run, d, p, q, oee, mtbf, mttr) in EXPECTED.items():
        assert values[f"{letter}_ProductionTime"] == run
        assert values[f"{letter}_D"] == d
        assert values[f"{letter}_P"] == p
        assert values[f"{letter}_Q"] == q
        assert values[f"{letter}_OEE"] == oee
        assert values[f"{letter}_MTBF"] == mtbf
        assert values[f"{letter}_MTTR"] == mttr


def test_indicators_day_is_not_the_mean_of_shifts() -> None:
    values = day_indicators(WORKED)
    assert values["T_MTBF"] != 157.5 and values["T_MTTR"] != 30.0


def test_indicators_names_follow_shift_and_code() -> None:
    assert NAMES[0] == "A_D" and NAMES[6] == "A_ProductionTime" and NAMES[-1] == "T_ProductionTime"
    assert "T_OEE" in NAMES and "C_MTTR" in NAMES


def test_indicators_zero_planned_production_time_leaves_oee_family_undefined() -> None:
    v = shift_indicators(ShiftData(480, 480, 0, 0, 0, 0, 0, 0))
    assert v["D"] is None and v["P"] is None and v["Q"] is None and v["OEE"] is None
    assert v["MTBF"] is None and v["MTTR"] is None
    assert v["ProductionTime"] == 0.0


def test_indicators_zero_run_time_gives_zero_availability_and_undefined_performance() -> None:
    v = shift_indicators(ShiftData(480, 30, 450, 1, 450, 0, 0, 0))
    assert v["D"] == 0.0 and v["P"] is None and v["Q"] is None and v["OEE"] == 0.0
    assert v["MTBF"] == 0.0 and v["MTTR"] == 450.0


def test_indicators_nothing_produced_gives_undefined_quality_and_zero_oee() -> None:
    v = shift_indicators(ShiftData(480, 30, 0, 0, 0, 0, 0, 0))
    assert v["D"] == 100.0 and v["P"] == 0.0 and v["Q"] is None and v["OEE"] == 0.0


def test_indicators_performance_capped_and_oee_uses_capped_value() -> None:
    # 1000 parts x 0.5 min = 500 min of ideal time in 450 min of run time -> 111 %, capped.
    v = shift_indicators(_shift(450, 0, 0, 1000, 900))
    assert v["P"] == 100.0
    assert v["OEE"] == 90.0


def test_indicators_no_failure_leaves_mtbf_and_mttr_undefined_not_zero_not_runtime() -> None:
    v = shift_indicators(_shift(450, 20, 0, 100, 100))
    assert v["MTBF"] is None and v["MTTR"] is None and v["ProductionTime"] == 430.0


def test_indicators_round_half_up_on_exact_value() -> None:
    # Q = 1/8 = 12.5 %: exact; 0.1125 would float-round to 11.25 either way, so use 0.00125.
    v = shift_indicators(ShiftData(480, 0, 0, 0, 0, 800, 1, 0))
    assert v["Q"] == 0.13  # 0.125 % -> half up, where round(0.125, 2) gives 0.12
    v = shift_indicators(ShiftData(Decimal("0.25"), 0, 0, 0, 0, 0, 0, 0))
    assert v["ProductionTime"] == 0.3  # 0.25 min -> 0.3 (round(0.25, 1) gives 0.2)


def test_indicators_mixed_products_sum_their_ideal_time() -> None:
    assert ideal_time([(0.5, 100), (Decimal("1.5"), 10)]) == 65
    v = shift_indicators(ShiftData(100, 0, 0, 0, 0, 110, 110, ideal_time([(0.5, 100), (1.5, 10)])))
    assert v["P"] == 65.0


@pytest.mark.parametrize("kwargs, message", [
    ({"planned_stop": 500}, "planned stop time exceeds"),
    ({"unplanned_stop": 460}, "unplanned stop time exceeds"),
    ({"repair_time": 50}, "repair time exceeds"),
    ({"good_count": 11}, "good count exceeds"),
    ({"failures": -1}, "must not be negative"),
    ({"shift_length": float("nan")}, "must be finite"),
    ({"shift_length": float("inf")}, "must be finite"),
    ({"total_count": 1.5}, "must be an integer"),
    ({"failures": True}, "must be an integer"),
    ({"shift_length": "480"}, "must be a number"),
    ({"ideal_time": -1}, "must not be negative"),
])
def test_indicators_refuse_impossible_inputs(kwargs: dict, message: str) -> None:
    base = {"shift_length": 480, "planned_stop": 30, "unplanned_stop": 40, "failures": 1,
            "repair_time": 40, "total_count": 10, "good_count": 10, "ideal_time": 5}
    with pytest.raises(IndicatorError, match=message):
        ShiftData(**{**base, **kwargs})


def test_indicators_day_needs_exactly_three_shifts() -> None:
    with pytest.raises(IndicatorError, match="exactly the shifts"):
        day_indicators({"A": WORKED["A"], "B": WORKED["B"]})
    with pytest.raises(IndicatorError):
        day_indicators({**WORKED, "T": WORKED["A"]})


def test_indicators_day_with_an_unworked_shift() -> None:
    idle = ShiftData(480, 480, 0, 0, 0, 0, 0, 0)
    v = day_indicators({"A": WORKED["A"], "B": idle, "C": idle})
    assert v["B_D"] is None and v["B_ProductionTime"] == 0.0
    assert v["T_D"] == v["A_D"] and v["T_OEE"] == v["A_OEE"] and v["T_MTBF"] == v["A_MTBF"]
