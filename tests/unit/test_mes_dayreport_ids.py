"""Flow ids (spec 3.3.2, with its New-Year table) and indicator record ids (spec 3.3.3)."""

from __future__ import annotations

import datetime as dt

import pytest

from mes.dayreport.ids import (
    FlowId,
    IdError,
    check_unit_code,
    flow_id,
    parse_flow_id,
    parse_record_id,
    record_id,
)
from mes.dayreport.indicators import NAMES

# The spec's table: date -> (ISO year, week, day), reference code output, canonical id.
TABLE = [
    (dt.date(2021, 1, 4), (2021, 1, 1), "001_21_1_1_PT10", "001_21_01_01_PT10"),
    (dt.date(2021, 1, 11), (2021, 2, 1), "001_21_2_1_PT10", "001_21_02_01_PT10"),
    (dt.date(2021, 1, 1), (2020, 53, 5), "001_21_53_5_PT10", "001_20_53_05_PT10"),
    (dt.date(2024, 1, 1), (2024, 1, 1), "001_24_1_1_PT10", "001_24_01_01_PT10"),
    (dt.date(2024, 12, 30), (2025, 1, 1), "001_24_1_1_PT10", "001_25_01_01_PT10"),
    (dt.date(2027, 1, 1), (2026, 53, 5), "001_27_53_5_PT10", "001_26_53_05_PT10"),
]


@pytest.mark.parametrize("day, iso, reference, canonical", TABLE)
def test_flow_id_table_of_the_spec(day: dt.date, iso: tuple, reference: str, canonical: str) -> None:
    assert tuple(day.isocalendar()) == iso
    assert flow_id(day, "PT10") == canonical
    parsed = parse_flow_id(canonical)
    assert parsed == FlowId(iso[0] % 100, iso[1], iso[2], "PT10")
    assert parsed.date() == day
    with pytest.raises(IdError):
        parse_flow_id(reference)  # old, unpadded ids are not reinterpreted


def test_flow_id_new_year_no_collision() -> None:
    assert flow_id(dt.date(2024, 1, 1), "PT10") != flow_id(dt.date(2024, 12, 30), "PT10")
    days = [dt.date(2020, 12, 1) + dt.timedelta(days=n) for n in range(3 * 366)]
    ids = [flow_id(d, "PT10") for d in days]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)  # zero padding: text order is date order within a century


def test_flow_id_prose_example_decodes_in_week_order() -> None:
    assert parse_flow_id("001_21_01_02_PT10").date() == dt.date(2021, 1, 5)


@pytest.mark.parametrize("bad", [
    "001_21_1_1_PT10", "002_21_01_01_PT10", "001_21_01_08_PT10", "001_21_00_01_PT10",
    "001_21_53_01_PT10",  # 2021 has no ISO week 53
    "001_21_01_01_", "001_21_01_01_PT_10", "001_21_01_01_PT10\n", " 001_21_01_01_PT10",
    "001_२१_01_01_PT10", None, 12, b"001_21_01_01_PT10",
])
def test_flow_id_parser_refuses_other_forms(bad: object) -> None:
    with pytest.raises(IdError):
        parse_flow_id(bad)


@pytest.mark.parametrize("unit", ["", "PT_10", "PT 10", "-PT", "x" * 65, "PT10/..", None, 10])
def test_flow_id_refuses_bad_unit_codes(unit: object) -> None:
    with pytest.raises(IdError):
        check_unit_code(unit)
    with pytest.raises(IdError):
        flow_id(dt.date(2021, 1, 4), unit)  # type: ignore[arg-type]


def test_flow_id_needs_a_date_not_a_datetime() -> None:
    with pytest.raises(IdError):
        flow_id(dt.datetime(2021, 1, 4, 12), "PT10")


def test_record_id_examples_of_the_spec() -> None:
    oid = "614f24586a93d2db8f59b323"
    assert record_id(oid, "A", "D") == f"{oid}_101"
    assert record_id(oid, "T", "ProductionTime") == f"{oid}_407"
    assert record_id("001_21_02_01_PT10", "A", "D") == "001_21_02_01_PT10_101"
    assert parse_record_id(f"{oid}_407") == (oid, "T", "ProductionTime")
    assert parse_record_id("001_21_02_01_PT10_101") == ("001_21_02_01_PT10", "A", "D")


def test_record_ids_unique_for_the_28_values() -> None:
    ids = {record_id("001_21_02_01_PT10", *name.split("_", 1)) for name in NAMES}
    assert len(ids) == 28
    for rid in ids:
        report, shift, code = parse_record_id(rid)
        assert report == "001_21_02_01_PT10" and f"{shift}_{code}" in NAMES


@pytest.mark.parametrize("args", [
    ("614F24586A93D2DB8F59B323", "A", "D"), ("614f", "A", "D"), ("001_21_1_1_PT10", "A", "D"),
    ("614f24586a93d2db8f59b323", "X", "D"), ("614f24586a93d2db8f59b323", "A", "OEEE"),
])
def test_record_id_refuses_bad_parts(args: tuple) -> None:
    with pytest.raises(IdError):
        record_id(*args)


@pytest.mark.parametrize("bad", ["614f24586a93d2db8f59b323_108", "614f24586a93d2db8f59b323_501",
                                 "614f24586a93d2db8f59b323_1010", "614f24586a93d2db8f59b323", None])
def test_record_id_parser_refuses_other_forms(bad: object) -> None:
    with pytest.raises(IdError):
        parse_record_id(bad)
