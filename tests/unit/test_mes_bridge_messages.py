"""Message shapes of the MES bridge (spec 3.5.2-3.5.3): golden JSON, parsing, reference defects."""

from __future__ import annotations

import json

import pytest
from mes_bridge_cases import GOLDEN_DIR, NEW, OLD, REQ_ID, REQUESTS, RESPONSES, golden_bytes

from erp.api import MAX_LIMIT
from mes.bridge import messages as m


def test_messages_every_case_matches_its_golden_file() -> None:
    built = golden_bytes()
    on_disk = {p.name for p in GOLDEN_DIR.glob("*.json")}
    assert on_disk == set(built)
    for name, raw in built.items():
        assert (GOLDEN_DIR / name).read_bytes() == raw, name


def test_messages_every_topic_and_response_kind_has_a_golden_case() -> None:
    topics = {topic for topic, _, _ in REQUESTS.values()}
    assert topics == set(m.LISTEN_TOPICS)  # includes the old BLK_ACT_Lst spelling
    actions = {m.parse_request(t, m.build_request(t, h, b)).action for t, h, b in REQUESTS.values()}
    assert actions == {"list_partner_requests", "list_actions", "answer_partner_request", "answer_action",
                       "ensure_record_type", "ensure_reporter", "update_properties", "create_static_records"}
    kinds = {m.parse_response((GOLDEN_DIR / f"{n}.json").read_bytes()).kind for n in RESPONSES}
    assert kinds == {"data", "message", "error"}


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_messages_golden_requests_parse_back(name: str) -> None:
    topic, header, body = REQUESTS[name]
    raw = (GOLDEN_DIR / f"{name}.json").read_bytes()
    request = m.parse_request(topic, raw, key=m.record_key(header), headers=m.kafka_headers(header))
    assert request.header == m.Header(header.auth, header.interaction_id, header.client_id,
                                      header.start, header.limit)
    assert request.body == body
    assert request.topic == m.canonical_topic(topic)


def test_messages_old_act_list_topic_counts_as_the_new_one() -> None:
    raw = (GOLDEN_DIR / "act_lst_old_topic.json").read_bytes()
    assert m.parse_request(m.TOPIC_ACT_LST_OLD, raw).topic == m.TOPIC_ACT_LST == "BLK_Act_Lst"


def test_messages_list_paging_defaults_and_cap() -> None:
    req = m.parse_request(m.TOPIC_PART_LST, b'[{"auth":"t"}]')
    assert (req.header.start, req.header.limit) == (0, 10)
    assert m.LIST_MAX_LIMIT == MAX_LIMIT
    with pytest.raises(m.MessageError, match="limit"):
        m.parse_request(m.TOPIC_PART_LST, b'[{"auth":"t","limit":101}]')


def test_messages_response_echoes_ids_and_hides_the_token_from_new_clients() -> None:
    head = json.loads((GOLDEN_DIR / "res_data_empty.json").read_bytes())[0]
    assert head == {"interaction_id": 17, "client_id": "mes-1"}
    head = json.loads((GOLDEN_DIR / "res_data_old.json").read_bytes())[0]
    assert head == {"auth": "tok-master"}
    echoed = m.build_response(NEW, message="ok", echo_auth=True)
    assert json.loads(echoed)[0] == {"auth": "tok-master", "interaction_id": 17, "client_id": "mes-1"}


def test_messages_error_response_carries_error_code() -> None:
    res = m.parse_response((GOLDEN_DIR / "res_error.json").read_bytes())
    assert (res.kind, res.error, res.error_code) == ("error", "unknown request id", -708)
    assert res.header.interaction_id == 17 and res.header.client_id == "mes-1"


def test_messages_kafka_key_and_header_carry_the_correlation() -> None:
    assert m.record_key(NEW) == b"mes-1"
    assert m.kafka_headers(NEW) == [("interaction_id", b"17")]
    assert m.record_key(OLD) is None and m.kafka_headers(OLD) == []
    raw = m.build_request(m.TOPIC_PART_ANS, NEW, {"id": REQ_ID, "response": 1})
    with pytest.raises(m.MessageError, match="record key") as err:
        m.parse_request(m.TOPIC_PART_ANS, raw, key=b"mes-2")
    assert err.value.header is not None and err.value.header.interaction_id == 17
    with pytest.raises(m.MessageError, match="interaction_id header"):
        m.parse_request(m.TOPIC_PART_ANS, raw, headers=[("interaction_id", b"18")])


# -- reference defects of spec 3.5.2 --------------------------------------------------------


def test_defect_responses_are_real_json_an_apostrophe_survives() -> None:
    raw = (GOLDEN_DIR / "res_message.json").read_bytes()
    assert json.loads(raw.decode("utf-8"))[1] == {"message": "Partner's request accepted"}
    assert m.parse_response(raw).message == "Partner's request accepted"
    text = 'Caf\u00e9 "Jo\u00e3o\'s" \u2013 \U0001F600'
    assert m.parse_response(m.build_response(NEW, message=text)).message == text


def test_defect_a_python_repr_is_not_accepted_nor_quote_rewritten() -> None:
    repr_value = str([{"auth": "t"}, {"message": "Partner's request"}]).encode()
    with pytest.raises(m.MessageError) as err:
        m.parse_response(repr_value)
    assert err.value.code == m.PARSE_ERROR


def test_defect_an_empty_list_is_an_answer() -> None:
    res = m.parse_response((GOLDEN_DIR / "res_data_empty.json").read_bytes())
    assert res.kind == "data" and res.data == []
    assert m.parse_response(b'[{"interaction_id":1,"client_id":"a"},{"data":{}}]').kind == "data"
    with pytest.raises(m.MessageError):  # no answer key at all is not an answer
        m.parse_response(b'[{"interaction_id":1,"client_id":"a"},{}]')


def test_defect_answer_endpoints_are_post_with_get_kept_for_old_uis() -> None:
    from mes.bridge.endpoints import EndpointError, route

    for path in ("/api/KafkaPartner/ANS", "/api/KafkaOrder/ANS"):
        assert route("POST", path).method == "POST"
        assert route("GET", path).legacy_methods == ("GET",)
    for path in ("/api/KafkaPartner/LIST", "/api/KafkaOrder/LIST"):
        with pytest.raises(EndpointError) as err:
            route("POST", path)
        assert err.value.status == 405


# -- hostile input ---------------------------------------------------------------------------

_ANS = m.TOPIC_PART_ANS
BAD_REQUESTS = [
    (_ANS, b"", m.PARSE_ERROR),
    (_ANS, b"\xff\xfe", m.PARSE_ERROR),
    (_ANS, b"[{'auth': 't'}]", m.PARSE_ERROR),
    (_ANS, b'[{"auth":"t","auth":"u"},{"id":"%s","response":1}]' % REQ_ID.encode(), m.PARSE_ERROR),
    (_ANS, b'[{"auth":"t"},{"id":"%s","response":NaN}]' % REQ_ID.encode(), m.PARSE_ERROR),
    (_ANS, b"[" * 100_000, m.PARSE_ERROR),
    (_ANS, b'"x' + b"a" * m.MAX_MESSAGE_BYTES + b'"', m.PARSE_ERROR),
    (_ANS, b'{"auth":"t"}', m.INVALID_REQUEST),
    (_ANS, b"[]", m.INVALID_REQUEST),
    (_ANS, b'[{"auth":"t"},{},{}]', m.INVALID_REQUEST),
    (_ANS, b'[{"auth":"t"},[]]', m.INVALID_REQUEST),
    ("BLK_Res", b'[{"auth":"t"}]', m.INVALID_REQUEST),
    ("blk_part_ans", b'[{"auth":"t"}]', m.INVALID_REQUEST),
    (_ANS, b'[{"auth":"t"}]', m.INVALID_PARAMETER),
    (_ANS, b'[{}, {"id":"%s","response":1}]' % REQ_ID.encode(), m.INVALID_PARAMETER),
    (_ANS, b'[{"auth":""},{"id":"%s","response":1}]' % REQ_ID.encode(), m.INVALID_PARAMETER),
    (_ANS, b'[{"auth":"t\\n"},{"id":"%s","response":1}]' % REQ_ID.encode(), m.INVALID_PARAMETER),
    (_ANS, b'[{"auth":"%s"},{"id":"%s","response":1}]' % (b"t" * 301, REQ_ID.encode()), m.INVALID_PARAMETER),
    (_ANS, b'[{"auth":"t","x":1},{"id":"%s","response":1}]' % REQ_ID.encode(), m.INVALID_PARAMETER),
    (_ANS, b'[{"auth":"t","limit":1},{"id":"%s","response":1}]' % REQ_ID.encode(), m.INVALID_PARAMETER),
    (_ANS, b'[{"auth":"t","interaction_id":1},{"id":"%s","response":1}]' % REQ_ID.encode(),
     m.INVALID_PARAMETER),
    (_ANS, b'[{"auth":"t","interaction_id":0,"client_id":"a"},{"id":"%s","response":1}]' % REQ_ID.encode(),
     m.INVALID_PARAMETER),
    (_ANS, b'[{"auth":"t","interaction_id":9223372036854775808,"client_id":"a"},{"id":"%s","response":1}]'
     % REQ_ID.encode(), m.INVALID_PARAMETER),
    (_ANS, b'[{"auth":"t","interaction_id":true,"client_id":"a"},{"id":"%s","response":1}]'
     % REQ_ID.encode(), m.INVALID_PARAMETER),
    (_ANS, b'[{"auth":"t","interaction_id":1,"client_id":"a b"},{"id":"%s","response":1}]'
     % REQ_ID.encode(), m.INVALID_PARAMETER),
    (_ANS, b'[{"auth":"t"},{"id":"%s","response":2}]' % REQ_ID.encode(), m.INVALID_PARAMETER),
    (_ANS, b'[{"auth":"t"},{"id":"%s","response":true}]' % REQ_ID.encode(), m.INVALID_PARAMETER),
    (_ANS, b'[{"auth":"t"},{"id":"%s","response":"1"}]' % REQ_ID.encode(), m.INVALID_PARAMETER),
    (_ANS, b'[{"auth":"t"},{"id":"XYZ","response":1}]', m.INVALID_PARAMETER),
    (_ANS, b'[{"auth":"t"},{"id":"%s","response":1,"extra":1}]' % REQ_ID.encode(), m.INVALID_PARAMETER),
    (m.TOPIC_PART_LST, b'[{"auth":"t"},{"id":"x"}]', m.INVALID_PARAMETER),
    (m.TOPIC_PART_LST, b'[{"auth":"t","start":-1}]', m.INVALID_PARAMETER),
    (m.TOPIC_PART_LST, b'[{"auth":"t","limit":0}]', m.INVALID_PARAMETER),
    (m.TOPIC_RTY, b'[{"auth":"t"},{"action":"ensure_reporter"}]', m.INVALID_PARAMETER),
    (m.TOPIC_RTY, b'[{"auth":"t"},{"action":"ensure_record_type","name":"X","properties":'
     b'[{"name":"a","data_type":"TEXT"}]}]', m.INVALID_PARAMETER),
    (m.TOPIC_RTY, b'[{"auth":"t"},{"action":"ensure_record_type","name":"X","properties":'
     b'[{"name":"a","data_type":"INT"},{"name":"a","data_type":"INT"}]}]', m.INVALID_PARAMETER),
    (m.TOPIC_RTY, b'[{"auth":"t"},{"action":"ensure_record_type","name":"X","properties":[]}]',
     m.INVALID_PARAMETER),
    (m.TOPIC_REC, b'[{"auth":"t"},{"action":"drop_table"}]', m.INVALID_PARAMETER),
    (m.TOPIC_REC, b'[{"auth":"t"}]', m.INVALID_PARAMETER),
    (m.TOPIC_REC, b'[{"auth":"t"},{"action":"update_properties","record_id":"PT10","properties":'
     b'[{"name":"Status","data_type":"INT","value":"RUNNING"}]}]', m.INVALID_PARAMETER),
    (m.TOPIC_REC, b'[{"auth":"t"},{"action":"create_static_records","flow_id":"001_21_2_1_PT10",'
     b'"records":[{"record_id":"r","record_type":"T","properties":{"value":1}}]}]', m.INVALID_PARAMETER),
    (m.TOPIC_REC, b'[{"auth":"t"},{"action":"create_static_records","flow_id":"001_21_02_01_PT10",'
     b'"records":[{"record_id":"r","record_type":"T","properties":{"value":null}}]}]', m.INVALID_PARAMETER),
    (m.TOPIC_REC, b'[{"auth":"t"},{"action":"create_static_records","flow_id":"001_21_02_01_PT10",'
     b'"records":[{"record_id":"r","record_type":"T","properties":{"v":1}},'
     b'{"record_id":"r","record_type":"T","properties":{"v":2}}]}]', m.INVALID_PARAMETER),
]


@pytest.mark.parametrize("topic, raw, code", BAD_REQUESTS)
def test_messages_hostile_requests_refused_with_a_code(topic: str, raw: bytes, code: int) -> None:
    with pytest.raises(m.MessageError) as err:
        m.parse_request(topic, raw)
    assert err.value.code == code


def test_messages_error_keeps_the_header_to_answer_to() -> None:
    raw = b'[{"auth":"t","interaction_id":5,"client_id":"mes-2"},{"id":"bad","response":1}]'
    with pytest.raises(m.MessageError) as err:
        m.parse_request(_ANS, raw)
    reply = m.parse_response(m.build_response(err.value.header, error=str(err.value),
                                              error_code=err.value.code))
    assert (reply.header.interaction_id, reply.header.client_id) == (5, "mes-2")
    assert reply.header.auth is None and reply.error_code == m.INVALID_PARAMETER


def test_messages_too_many_static_records_refused() -> None:
    records = [{"record_id": f"r{i}", "record_type": "T", "properties": {"v": i}}
               for i in range(m.MAX_STATIC_RECORDS + 1)]
    with pytest.raises(m.MessageError, match="at most"):
        m.build_request(m.TOPIC_REC, NEW, {"action": "create_static_records",
                                           "flow_id": "001_21_02_01_PT10", "records": records})


@pytest.mark.parametrize("raw", [
    b'[{"interaction_id":1,"client_id":"a"}]',
    b'[{"interaction_id":1,"client_id":"a"},{"data":[],"error":"x"}]',
    b'[{"interaction_id":1,"client_id":"a"},{"data":"x"}]',
    b'[{"interaction_id":1,"client_id":"a"},{"message":3}]',
    b'[{"interaction_id":1,"client_id":"a"},{"error":"x","error_code":"-8"}]',
])
def test_messages_malformed_responses_refused(raw: bytes) -> None:
    with pytest.raises(m.MessageError):
        m.parse_response(raw)


def test_messages_builder_refuses_ambiguous_responses() -> None:
    with pytest.raises(ValueError):
        m.build_response(NEW, data=[], message="x")
    with pytest.raises(ValueError):
        m.build_response(NEW, message="x", error_code=-8)
    with pytest.raises(ValueError):
        m.build_response(NEW, data=[float("nan")])


def test_messages_error_response_carries_extra_keys_for_new_clients() -> None:
    header = m.Header("tok", 5, "mes-1")
    existing = [{"record_id": "r1", "record_type": "T", "final": True, "properties": {"v": 1.0}}]
    raw = m.build_response(header, error="1 of 1 records already exist", error_code=-705,
                           extra={"existing": existing})
    assert json.loads(raw) == [{"interaction_id": 5, "client_id": "mes-1"},
                               {"error": "1 of 1 records already exist", "error_code": -705,
                                "existing": existing}]
    parsed = m.parse_response(raw)
    assert parsed.kind == "error" and parsed.extra == {"existing": existing}
    for key in ("data", "message", "error", "error_code"):
        with pytest.raises(ValueError, match="kind"):
            m.build_response(header, error="x", extra={key: 1})
