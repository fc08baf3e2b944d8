"""Routing and parameter rules of the MES HTTP endpoints (spec 3.5.5), without a server."""

from __future__ import annotations

import pytest

from mes.bridge import messages as m
from mes.bridge.endpoints import EndpointError, answer_params, http_result, list_params, route

REQ_ID = "5f2b1c0e9a8d4e6fb3c2a1d0e9f8a7b6"


def test_endpoints_route_to_their_topics() -> None:
    assert route("GET", "/api/KafkaPartner/LIST").topic == m.TOPIC_PART_LST
    assert route("POST", "/api/KafkaPartner/ANS").topic == m.TOPIC_PART_ANS
    assert route("GET", "/api/KafkaOrder/LIST").topic == m.TOPIC_ACT_LST
    assert route("POST", "/api/KafkaOrder/ANS").topic == m.TOPIC_ACT_ANS
    assert route("POST", "/api/KafkaOrder/ANS").answers
    with pytest.raises(EndpointError) as err:
        route("GET", "/api/KafkaOrder/ans")
    assert err.value.status == 404
    with pytest.raises(EndpointError) as err:
        route("DELETE", "/api/KafkaOrder/ANS")
    assert err.value.status == 405


def test_endpoints_list_params() -> None:
    assert list_params({}) == {"start": 0, "limit": 10}
    assert list_params({"start": "20", "limit": "100"}) == {"start": 20, "limit": 100}
    for bad in ({"start": "-1"}, {"limit": "0"}, {"limit": "101"}, {"start": "1e3"}, {"start": " 1"},
                {"start": "\u0661"}, {"start": "9" * 20}):
        with pytest.raises(EndpointError) as err:
            list_params(bad)
        assert err.value.status == 400


def test_endpoints_answer_params() -> None:
    assert answer_params({"ID": REQ_ID, "Response": "1"}) == {"id": REQ_ID, "response": 1}
    assert answer_params({"ID": REQ_ID, "Response": "0"}) == {"id": REQ_ID, "response": 0}
    for bad in ({"Response": "1"}, {"ID": REQ_ID}, {"ID": REQ_ID, "Response": "2"},
                {"ID": "x", "Response": "1"}, {"ID": REQ_ID.upper(), "Response": "1"},
                {"ID": REQ_ID, "Response": "yes"}):
        with pytest.raises(EndpointError) as err:
            answer_params(bad)
        assert err.value.status == 400


def test_endpoints_http_result_of_bridge_responses() -> None:
    head = m.Header(interaction_id=1, client_id="a")
    assert http_result(m.Response(head, "data", data=[])) == (200, [])
    assert http_result(m.Response(head, "message", message="ok")) == (200, {"message": "ok"})
    assert http_result(m.Response(head, "error", error="no", error_code=-708)) == (
        502, {"error": "no", "error_code": -708})
