"""The MES HTTP endpoints (spec 3.5.5) as a `chainmill mes serve` process on a real broker.

Phases, every reply validated against the served /api/openapi.json:
1. broker down: LIST and ANS answer 502 with the error text; bad ID/Response/limit 400
   before anything is sent;
2. broker up, nobody answering on the request topics: 504 after the timeout;
3. a responder on the real broker: lists 200 (an empty list too), an accepted answer 200
   (POST with a form, POST with JSON, GET for old UIs), a bridge error 502 with its text.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka_support import tansu_broker
from mes_support import ContractResponder, MesServer, OpenApiCheck, make_db

from mes.bridge import messages as m

pytestmark = pytest.mark.functional

REQ_ID = "9df8888dea6df991f86e0e61b2379e46"
AGENT_A, AGENT_B = "02" + "aa" * 32, "03" + "bb" * 32
PARTNER_REQUEST = {"partner_request_id": REQ_ID, "issuing_agent": AGENT_A,
                   "receiving_agent": AGENT_B, "status": "OPEN", "timestamp": 1638789671,
                   "answer_timestamp": 0, "transaction_ids": ["ab" * 64]}
LIST_P, ANS_P = "/api/KafkaPartner/LIST", "/api/KafkaPartner/ANS"
LIST_O, ANS_O = "/api/KafkaOrder/LIST", "/api/KafkaOrder/ANS"


def test_mes_endpoints_broker_down_bad_parameters_and_timeout(tmp_path: Path, free_port_factory):
    db = make_db(tmp_path)
    down = MesServer(db, free_port_factory(), f"127.0.0.1:{free_port_factory()}",
                     "--no-scheduler", "--timeout", "3", log_path=tmp_path / "down.log")
    try:
        api = OpenApiCheck(down.call("GET", "/api/openapi.json")[1])
        for path in (LIST_P, LIST_O):
            status, body = down.call("GET", path)
            assert status == 502 and "Kafka" in api.check("GET", path, status, body)["error"]
        status, body = down.call("POST", ANS_P, form={"ID": REQ_ID, "Response": "1"})
        assert status == 502, body
        api.check("POST", ANS_P, status, body)
        for path, params in ((ANS_P, "Response=1"), (ANS_P, f"ID={REQ_ID}&Response=2"),
                             (ANS_O, "ID=not-an-id&Response=1"), (ANS_O, f"ID={REQ_ID}"),
                             (LIST_P, "limit=101"), (LIST_O, "start=-1")):
            method = "GET" if "LIST" in path else "POST"
            status, body = down.call(method, f"{path}?{params}")
            assert status == 400, (path, params, body)
            api.check(method, path, status, body)
    finally:
        down.stop()

    with tansu_broker(tmp_path / "tansu", free_port_factory()) as kafka:
        silent = MesServer(db, free_port_factory(), kafka, "--no-scheduler", "--timeout", "3",
                           log_path=tmp_path / "silent.log")
        try:
            status, body = silent.call("GET", f"{LIST_P}?start=0&limit=5")
            assert status == 504 and "no answer" in body["error"], body
            api.check("GET", LIST_P, status, body)
            status, body = silent.call("POST", ANS_O, body={"ID": REQ_ID, "Response": 0})
            assert status == 504, body
            api.check("POST", ANS_O, status, body)
        finally:
            silent.stop()


def test_mes_endpoints_answers_through_the_bridge(tmp_path: Path, free_port_factory):
    db = make_db(tmp_path)
    answers = {
        m.TOPIC_PART_LST: lambda r: {"data": [PARTNER_REQUEST] if r.header.start == 0 else []},
        m.TOPIC_ACT_LST: {"data": []},
        m.TOPIC_PART_ANS: lambda r: {"message": f"partner request {r.body['id']} "
                                                f"{'accepted' if r.body['response'] else 'rejected'}"},
        m.TOPIC_ACT_ANS: {"error": "action request is not OPEN", "error_code": -8},
    }
    with tansu_broker(tmp_path / "tansu", free_port_factory()) as kafka, \
            ContractResponder(kafka, lists=answers) as responder:
        server = MesServer(db, free_port_factory(), kafka, "--no-scheduler",
                           log_path=tmp_path / "serve.log")
        try:
            api = OpenApiCheck(server.call("GET", "/api/openapi.json")[1])
            status, body = server.call("GET", LIST_P)
            assert status == 200 and api.check("GET", LIST_P, status, body) == [PARTNER_REQUEST]
            status, body = server.call("GET", f"{LIST_P}?start=10&limit=10")
            assert (status, body) == (200, [])
            status, body = server.call("GET", LIST_O)
            assert (status, api.check("GET", LIST_O, status, body)) == (200, [])
            for call in ({"form": {"ID": REQ_ID, "Response": "1"}},
                         {"body": {"ID": REQ_ID, "Response": 1}}):
                status, body = server.call("POST", ANS_P, **call)
                assert status == 200, body
                assert api.check("POST", ANS_P, status, body) == {
                    "message": f"partner request {REQ_ID} accepted"}
            status, body = server.call("GET", f"{ANS_P}?ID={REQ_ID}&Response=0")
            assert (status, api.check("GET", ANS_P, status, body)) == (
                200, {"message": f"partner request {REQ_ID} rejected"})
            status, body = server.call("POST", ANS_O, form={"ID": REQ_ID, "Response": "1"})
            assert status == 502
            assert api.check("POST", ANS_O, status, body) == {
                "error": "action request is not OPEN", "error_code": -8}
            sent = [(r.topic, r.header.auth, r.header.client_id) for r in responder.double.received]
            assert {auth for _, auth, _ in sent} == {"master-token-0001"}  # the Master token
            assert {cid for _, _, cid in sent} == {"mes-1"}
            assert [r.body["response"] for r in responder.double.received
                    if r.topic == m.TOPIC_PART_ANS] == [1, 1, 0]
        finally:
            server.stop()
