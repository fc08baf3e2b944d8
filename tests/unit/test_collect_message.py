"""Validation rules 1-6 of spec 3.4, each accepted and refused."""

from __future__ import annotations

import json

import pytest

from mes.collector.message import (
    MAX_MESSAGE_BYTES,
    CncMessage,
    Rejected,
    canonical_json,
    validate,
)

NOW = 1_747_379_100
KNOWN = {"CNC001", "CNC002", "C" * 45}


def body(**overrides) -> bytes:
    message = {"cnc_id": "CNC001", "part_program": "program_01", "timestamp": "1747379028",
               "payload": {"status": "running", "spin": 200, "X-Axis": 30, "Y-Axis": 80}}
    message.update(overrides)
    return json.dumps({k: v for k, v in message.items() if v is not ...}).encode()


def rule_of(raw: bytes) -> int:
    with pytest.raises(Rejected) as info:
        validate(raw, KNOWN, NOW)
    return info.value.rule


def test_collect_accepts_reference_sample() -> None:
    message = validate(body(), KNOWN, NOW)
    assert message == CncMessage("CNC001", "program_01", 1747379028,
                                 {"status": "running", "spin": 200, "X-Axis": 30, "Y-Axis": 80})
    assert message.json_data == '{"X-Axis":30,"Y-Axis":80,"spin":200,"status":"running"}'


def test_collect_rule1_refuses_non_utf8() -> None:
    assert rule_of(b'{"cnc_id": "\xff\xfe"}') == 1


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"text"', b"42", b"null", b"", b"{", b"garbage"])
def test_collect_rule1_refuses_non_object(raw: bytes) -> None:
    assert rule_of(raw) == 1


def test_collect_rule1_refuses_deep_json_without_recursing() -> None:
    deep = b'{"cnc_id": "CNC001", "payload": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(Rejected, match="deeper"):
        validate(deep, KNOWN, NOW, max_bytes=10**6)


def test_collect_rule1_accepts_brackets_inside_strings() -> None:
    message = validate(body(payload={"note": "[" * 100}), KNOWN, NOW)
    assert message.payload["note"] == "[" * 100


def test_collect_rule1_refuses_nan() -> None:
    assert rule_of(body().replace(b"200", b"NaN")) == 1


def test_collect_refuses_oversized_body_before_decoding() -> None:
    with pytest.raises(Rejected) as info:
        validate(b"{" + b" " * MAX_MESSAGE_BYTES + b"}", KNOWN, NOW)
    assert info.value.rule == 0


@pytest.mark.parametrize("field", ["cnc_id", "part_program", "timestamp", "payload"])
def test_collect_rule2_refuses_missing_field(field: str) -> None:
    with pytest.raises(Rejected, match=field) as info:
        validate(body(**{field: ...}), KNOWN, NOW)
    assert info.value.rule == 2


def test_collect_rule2_ignores_extra_fields() -> None:
    assert validate(body(extra="x"), KNOWN, NOW).cnc_id == "CNC001"


@pytest.mark.parametrize("payload", [[1], "running", 3, None])
def test_collect_rule3_refuses_non_object_payload(payload) -> None:
    assert rule_of(body(payload=payload)) == 3


def test_collect_rule3_accepts_free_payload() -> None:
    assert validate(body(payload={}), KNOWN, NOW).payload == {}


@pytest.mark.parametrize("cnc_id", ["", 7, None, "C" * 46])
def test_collect_rule4_refuses_bad_cnc_id(cnc_id) -> None:
    assert rule_of(body(cnc_id=cnc_id)) == 4


def test_collect_rule4_refuses_unknown_cnc_id() -> None:
    with pytest.raises(Rejected, match="not in the plug-in map"):
        validate(body(cnc_id="CNC999"), KNOWN, NOW)


def test_collect_rule4_accepts_45_characters() -> None:
    assert validate(body(cnc_id="C" * 45), KNOWN, NOW).cnc_id == "C" * 45


@pytest.mark.parametrize("program", [5, None, "p" * 46])
def test_collect_rule5_refuses_bad_part_program(program) -> None:
    assert rule_of(body(part_program=program)) == 5


def test_collect_rule5_accepts_45_characters() -> None:
    assert validate(body(part_program="p" * 45), KNOWN, NOW).part_program == "p" * 45


@pytest.mark.parametrize("ts", ["1747379028", 1747379028])
def test_collect_rule6_accepts_string_and_int(ts) -> None:
    assert validate(body(timestamp=ts), KNOWN, NOW).timestamp == 1747379028


@pytest.mark.parametrize("ts", ["", "17e8", "-5", " 1747379028", "1747379028.5", 1747379028.0,
                                True, 0, -1, "0", None, [1], "١٢٣"])
def test_collect_rule6_refuses_bad_timestamp(ts) -> None:
    assert rule_of(body(timestamp=ts)) == 6


def test_collect_rule6_future_limit() -> None:
    assert validate(body(timestamp=NOW + 300), KNOWN, NOW).timestamp == NOW + 300
    with pytest.raises(Rejected, match="future"):
        validate(body(timestamp=NOW + 301), KNOWN, NOW)


def test_collect_canonical_json_is_key_order_independent() -> None:
    assert canonical_json({"b": 1, "a": 2}) == canonical_json({"a": 2, "b": 1})
