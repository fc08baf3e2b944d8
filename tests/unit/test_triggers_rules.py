"""When a trigger fires (spec 1.3): the three cases, aliases, activity windows, order."""

from __future__ import annotations

import datetime as dt

from triggers.rules import TriggerRule, match

TODAY = dt.date(2024, 3, 4)


def rule(trigger_id: int, table: str = "request_header", **kw) -> TriggerRule:
    base = dict(
        trigger_id=trigger_id, subsys_dir="proc", table_id=table, table_id_alias=None,
        chain_id="c", stream_id="s", start_date=dt.date(2024, 1, 1), end_date=None,
        trigger_column=None, trigger_value=None, distribution_type="all nodes",
        distribution_table=None,
    )
    base.update(kw)
    return TriggerRule(**base)


def test_rules_case1_no_active_trigger_for_the_table() -> None:
    rules = [rule(1, table="other"), rule(2, end_date=dt.date(2024, 3, 3)),
             rule(3, start_date=dt.date(2024, 3, 5))]
    for op in ("insert", "update", "delete"):
        assert match(rules, table="request_header", operation=op, today=TODAY) is None


def test_rules_case2_fires_on_every_operation() -> None:
    for op in ("insert", "update", "delete"):
        assert match([rule(1)], table="request_header", operation=op, today=TODAY).trigger_id == 1


def test_rules_case3_fires_only_on_update_with_the_value_as_text() -> None:
    rules = [rule(1, trigger_column="status", trigger_value="Sent to Supplier")]
    calls = []

    def value(column: str) -> str:
        calls.append(column)
        return current

    current = "Sent to Supplier"
    for op in ("insert", "delete"):
        assert match(rules, table="request_header", operation=op, today=TODAY, new_value=value) is None
    assert calls == []  # inserts and deletes never read the row
    assert match(rules, table="request_header", operation="update", today=TODAY, new_value=value)
    current = "Pending"
    assert match(rules, table="request_header", operation="update", today=TODAY, new_value=value) is None
    numeric = [rule(2, trigger_column="flag", trigger_value="1")]
    assert match(numeric, table="request_header", operation="update", today=TODAY,
                 new_value=lambda c: True)


def test_rules_alias_restricts_the_trigger() -> None:
    rules = [rule(1, table_id_alias="rfq_header")]
    assert match(rules, table="request_header", operation="insert", today=TODAY) is None
    assert match(rules, table="request_header", operation="insert", today=TODAY, alias="po_header") is None
    assert match(rules, table="request_header", operation="insert", today=TODAY, alias="rfq_header")
    assert match([rule(2)], table="request_header", operation="insert", today=TODAY, alias="any")


def test_rules_first_by_trigger_id_wins_and_subsystem_filters() -> None:
    rules = [rule(9), rule(4), rule(6, subsys_dir="sales")]
    assert match(rules, table="request_header", operation="insert", today=TODAY).trigger_id == 4
    got = match(rules, table="request_header", operation="insert", today=TODAY, subsys_dir="sales")
    assert got.trigger_id == 6
