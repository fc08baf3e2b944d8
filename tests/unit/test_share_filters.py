"""Share filters: parsed safely (no eval), evaluated against observation fields."""

from __future__ import annotations

import pytest

from mes.sharing.filters import MATCH_ALL, FilterError, parse_filter

SPIN_1200 = {"variable": "spin", "result": 1200, "cnc_id": "CNC001", "part_program": "p1",
             "datastream": "acme.plant1.cnc/CNC001/spin"}


def fields(**kw):
    return {**SPIN_1200, **kw}


def test_share_filter_issue_example() -> None:
    f = parse_filter("variable = spin AND result > 1000")
    assert f.matches(SPIN_1200)
    assert not f.matches(fields(result=1000))
    assert not f.matches(fields(variable="feed"))


@pytest.mark.parametrize("text, expected", [
    ("result >= 1200", True), ("result < 1200", False), ("result != 5", True),
    ("cnc_id = 'CNC001' OR cnc_id = CNC002", True), ('part_program = "p2"', False),
    ("NOT variable = spin", False), ("(variable = feed OR variable = spin) AND result > 1e3", True),
    ("variable = spin and result > 1000", True), ("datastream = acme.plant1.cnc/CNC001/spin", True),
    ("", True),
])
def test_share_filter_forms(text: str, expected: bool) -> None:
    assert parse_filter(text).matches(SPIN_1200) is expected


def test_share_filter_number_never_equals_string() -> None:
    f = parse_filter("result > 1000")
    assert not f.matches(fields(variable="status", result="running"))
    assert not parse_filter("variable = 5").matches(fields(variable="5"))


def test_share_filter_bool_result_is_not_a_number() -> None:
    assert not parse_filter("result > 0").matches(fields(result=True))


@pytest.mark.parametrize("text", [
    "__import__('os').system('true')", "result > ", "variable spin", "unknown = 1",
    "result > 1 AND", "(result > 1", "result > 1)", "result = [1]", "result > 1 result < 2",
    "variable = spin; DROP TABLE", "result > 1e999",
])
def test_share_filter_refuses(text: str) -> None:
    with pytest.raises(FilterError):
        parse_filter(text)


def test_share_filter_bounds_nesting_and_length() -> None:
    with pytest.raises(FilterError, match="deeper"):
        parse_filter("(" * 50 + "result > 1" + ")" * 50)
    with pytest.raises(FilterError, match="deeper"):
        parse_filter("NOT " * 50 + "result > 1")
    with pytest.raises(FilterError, match="at most"):
        parse_filter("result > 1 AND " * 100 + "result > 1")


def test_share_filter_empty_matches_all() -> None:
    assert parse_filter("   ") is MATCH_ALL
