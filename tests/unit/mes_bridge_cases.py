"""The message cases with golden files under tests/unit/golden/mes/ (one per topic and kind).

Run ``python -m tests.unit.mes_bridge_cases`` from the repository root to rewrite the files
after an intended change of the contract (then review the diff).
"""

from __future__ import annotations

from pathlib import Path

from mes.bridge import messages as m

GOLDEN_DIR = Path(__file__).parent / "golden" / "mes"
REQ_ID = "5f2b1c0e9a8d4e6fb3c2a1d0e9f8a7b6"
NEW = m.Header(auth="tok-master", interaction_id=17, client_id="mes-1")
OLD = m.Header(auth="tok-master")

_DAY_RECORD = {
    "record_id": "614f24586a93d2db8f59b323_101", "record_type": "DayReportIndicator",
    "properties": {"value": 90.0, "defined": 1, "flow_id": "001_21_02_01_PT10", "date": "2021-01-11",
                   "unit": "PT10", "shift": "A", "indicator": "D", "uom": "%"},
}

# name -> (topic, header, element 1 or None)
REQUESTS: dict[str, tuple[str, m.Header, dict | None]] = {
    "part_lst": (m.TOPIC_PART_LST, m.Header("tok-master", 17, "mes-1", 0, 10), None),
    "part_lst_old": (m.TOPIC_PART_LST, m.Header("tok-master", start=0, limit=10), None),
    "act_lst": (m.TOPIC_ACT_LST, m.Header("tok-master", 18, "mes-1", 10, 5), None),
    "act_lst_old_topic": (m.TOPIC_ACT_LST_OLD, m.Header("tok-master", start=0, limit=10), None),
    "part_ans": (m.TOPIC_PART_ANS, NEW, {"id": REQ_ID, "response": 1}),
    "part_ans_old": (m.TOPIC_PART_ANS, OLD, {"id": REQ_ID, "response": 1}),
    "act_ans": (m.TOPIC_ACT_ANS, m.Header("tok-master", 19, "mes-1"), {"id": REQ_ID, "response": 0}),
    "rty_ensure_record_type": (m.TOPIC_RTY, NEW, {
        "action": "ensure_record_type", "name": "ProductionUnit",
        "properties": [{"name": "Status", "data_type": "STRING", "required": False},
                       {"name": "ProcessName", "data_type": "STRING", "required": False}]}),
    "rec_ensure_reporter": (m.TOPIC_REC, m.Header("tok-master", 20, "mes-1"), {
        "action": "ensure_reporter", "record_id": "PT10", "record_type": "ProductionUnit",
        "properties": ["Status", "ProcessName"]}),
    "rec_update_properties": (m.TOPIC_REC, m.Header("tok-reporter-PT10", 21, "mes-1"), {
        "action": "update_properties", "record_id": "PT10",
        "properties": [{"name": "Status", "data_type": "STRING", "value": "RUNNING"}]}),
    "rec_create_static_records": (m.TOPIC_REC, m.Header("tok-master", 22, "mes-1"), {
        "action": "create_static_records", "flow_id": "001_21_02_01_PT10", "records": [_DAY_RECORD]}),
}

# name -> (header answered, keyword arguments of build_response)
RESPONSES: dict[str, tuple[m.Header | None, dict]] = {
    "res_data": (NEW, {"data": [{"partner_request_id": REQ_ID, "status": "PENDING"}]}),
    "res_data_empty": (NEW, {"data": []}),
    "res_data_reporter": (m.Header("tok-master", 20, "mes-1"),
                          {"data": {"token": "tok-reporter-PT10", "publicKey": "02" + "ab" * 32,
                                    "record_id": "PT10"}}),
    "res_message": (NEW, {"message": "Partner's request accepted"}),
    "res_error": (NEW, {"error": "unknown request id", "error_code": -708}),
    "res_error_unreadable": (None, {"error": "message is not UTF-8 JSON", "error_code": m.PARSE_ERROR}),
    "res_data_old": (OLD, {"data": []}),
    "res_message_old": (OLD, {"message": "Partner's request accepted"}),
}


def golden_bytes() -> dict[str, bytes]:
    """Every case's message value, built by the product's builders."""
    out = {f"{name}.json": m.build_request(topic, header, body)
           for name, (topic, header, body) in REQUESTS.items()}
    out.update({f"{name}.json": m.build_response(header, **kwargs)
                for name, (header, kwargs) in RESPONSES.items()})
    return out


if __name__ == "__main__":
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    for filename, raw in golden_bytes().items():
        (GOLDEN_DIR / filename).write_bytes(raw)
