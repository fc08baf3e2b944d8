"""The bridge service between a MES and the chain, over a real Kafka-protocol broker (Tansu)
and two real nodes (spec 3.5).

How: node 1 runs the bridge (in a thread of the test) as the MES's agent; node 2 carries the
ERP (`erp.api.Erp`). MES-side `BridgeClient`s talk to the bridge only through the broker.
1. partner and order requests: the ERP asks for a partnership, the MES lists (new and old
   list topic) and accepts it; the ERP sends two orders, the MES lists and rejects one;
   two MES clients list concurrently and each gets exactly its own answers;
2. a duplicated request (same client_id and interaction_id) gets the stored response and is
   executed once; unknown and wrong-kind tokens are refused with error_code;
3. record commands: record type ensured twice, reporters for two units, reporter token
   scope (other properties, other records, the master token), a day report's 28 static
   records in one transaction and, sent again, refused with their current values.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from framework import scaled, wait_until
from kafka_support import TOPIC_PARTITIONS, tansu_broker
from mes_bridge_support import (
    PRODUCTION_UNIT,
    BridgeThread,
    erp_and_mes,
    log,
    request,
    wait_listed,
    wait_projected,
)

from mes.bridge import messages as m
from mes.bridge.client import BridgeClient, BridgeTimeout, new_interaction_id
from mes.bridge.executor import EXISTS, REFUSED, UNAUTHORIZED
from mes.bridge.sealing import SealError, open_reporter_token
from mes.dayreport.ids import flow_id
from mes.dayreport.indicators import NAMES
from mes.dayreport.publication import RECORD_TYPE, indicator_records

pytestmark = pytest.mark.functional

DAY_REPORT_TYPE = [
    {"name": "value", "data_type": "FLOAT", "required": True},
    {"name": "defined", "data_type": "INT", "required": True},
    *({"name": n, "data_type": "STRING", "required": True}
      for n in ("flow_id", "date", "unit", "shift", "indicator", "uom")),
]


@pytest.fixture
def broker(tmp_path: Path, free_port_factory) -> str:
    with tansu_broker(tmp_path / "tansu", free_port_factory()) as bootstrap:
        yield bootstrap


async def send_raw(bootstrap: str, topic: str, raw: bytes, header: m.Header, times: int,
                   answers_it: Callable[[m.Response], bool]) -> list[bytes]:
    """Produce the same request record `times` times; the BLK_Res values `answers_it` picks
    (as many as were sent)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    try:
        tps = [TopicPartition(m.TOPIC_RES, p) for p in range(TOPIC_PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        for _ in range(times):
            await producer.send_and_wait(topic, raw, key=m.record_key(header),
                                         headers=m.kafka_headers(header))
        answers: list[bytes] = []
        deadline = asyncio.get_running_loop().time() + scaled(60)
        while len(answers) < times and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                answers += [r.value for r in records if answers_it(m.parse_response(r.value))]
        return answers
    finally:
        await producer.stop()
        await consumer.stop()


def stream_items(node, key: str) -> list[dict]:  # noqa: ANN001
    return [i["data"]["json"] for i in node.rpc.call("liststreamkeyitems", "supplychain", key,
                                                     True, 1000)]


def test_bridge_partner_and_order_requests(harness, broker: str, tmp_path: Path) -> None:
    n1, n2, erp, engine = erp_and_mes(harness, "mesbridge", tmp_path)
    bridge = BridgeThread(n1, engine, broker).start()
    try:
        master = bridge.store.issue_master("ACME MES")
        mes_key = bridge.erp.public_key
        wait_until(lambda: erp.follow() is not None and erp.row("agents", (mes_key,)),
                   timeout=60, msg="the ERP to see the MES agent")

        log.info("the ERP asks for a partnership; the MES lists it and accepts")
        made = erp.create_partner_request(mes_key)
        rid = made["partner_request_id"]
        [listed] = wait_listed(broker, m.TOPIC_PART_LST, master, 1)
        assert listed == {"partner_request_id": rid, "issuing_agent": erp.public_key,
                          "receiving_agent": mes_key, "status": "OPEN",
                          "timestamp": listed["timestamp"], "answer_timestamp": 0,
                          "transaction_ids": [made["txid"]]}
        accepted = request(broker, m.TOPIC_PART_ANS, master, {"id": rid, "response": 1})
        assert accepted.kind == "message" and f"{rid} ACCEPTED" in accepted.message
        txid = accepted.message.rsplit(" ", 1)[1].rstrip(")")
        wait_projected(erp, txid)
        assert erp.show("partner_request", rid)["partner_request"]["status"] == "ACCEPTED"
        again = request(broker, m.TOPIC_PART_ANS, master, {"id": rid, "response": 0})
        assert again.kind == "error" and again.error_code == REFUSED
        assert "already ACCEPTED" in again.error

        log.info("two orders; listed on BLK_Act_Lst and the old BLK_ACT_Lst; one rejected")
        first = erp.create_action(mes_key, "dummy_action", "Test dummy action",
                                  {"Part": "steering wheel", "Size": 3})
        second = erp.create_action(mes_key, "dummy_action", "the worker's order", {"Size": 4})
        orders = wait_listed(broker, m.TOPIC_ACT_LST, master, 2)
        assert [o["abs_action_id"] for o in orders] == [
            o["abs_action_id"] for o in sorted(
                orders, key=lambda o: (-o["timestamp"], o["abs_action_id"]))]
        assert {o["abs_action_id"] for o in orders} == {first["abs_action_id"],
                                                        second["abs_action_id"]}
        assert next(o for o in orders if o["abs_action_id"] == second["abs_action_id"])[
            "description"] == "the worker's order"  # an apostrophe survives: real JSON
        old = request(broker, m.TOPIC_ACT_LST_OLD, master, limit=100)
        assert old.kind == "data" and old.data == orders
        rejected = request(broker, m.TOPIC_ACT_ANS, master,
                           {"id": first["abs_action_id"], "response": 0})
        assert rejected.kind == "message" and "REJECTED" in rejected.message
        wait_projected(erp, rejected.message.rsplit(" ", 1)[1].rstrip(")"))
        statuses = {o["abs_action_id"]: o["status"] for o in erp.list_actions(issued=True)}
        assert statuses == {first["abs_action_id"]: "REJECTED", second["abs_action_id"]: "OPEN"}

        log.info("two MES clients list concurrently, each gets its own answers")
        newest_first = [o["abs_action_id"] for o in request(
            broker, m.TOPIC_ACT_LST, master, limit=100).data]

        async def concurrent() -> list[tuple[int, m.Response]]:
            clients = [BridgeClient(broker, cid, timeout=scaled(30)) for cid in ("mes-a", "mes-b")]
            for c in clients:
                await c.start()
            try:
                sends = [(c, n % 3) for c in clients for n in range(9)]
                answers = await asyncio.gather(*(c.request(m.TOPIC_ACT_LST, master, start=s,
                                                           limit=1) for c, s in sends))
                assert all(a.header.client_id == c.client_id for (c, _), a in
                           zip(sends, answers, strict=True))
                return [(s, a) for (_, s), a in zip(sends, answers, strict=True)]
            finally:
                for c in clients:
                    await c.stop()

        for start, answer in asyncio.run(concurrent()):
            assert [o["abs_action_id"] for o in answer.data] == newest_first[start:start + 1]

        log.info("a duplicated answer request: the stored response, executed once")
        header = m.Header(master, 4242, "mes-dup")
        raw = m.build_request(m.TOPIC_ACT_ANS, header, {"id": second["abs_action_id"],
                                                        "response": 1})
        answers = asyncio.run(send_raw(broker, m.TOPIC_ACT_ANS, raw, header, 2, lambda r:
                                       r.header.interaction_id == header.interaction_id))
        assert len(answers) == 2 and answers[0] == answers[1]
        assert m.parse_response(answers[0]).kind == "message"
        wait_until(lambda: erp.follow() is not None and erp.row(
            "action_requests", (second["abs_action_id"],))["status"] == "ACCEPTED",
            timeout=60, msg="the order to be accepted")
        answers_on_chain = [a for a in stream_items(n2, second["abs_action_id"])
                            if a["action"] == "ANSWER_ACTION"]
        assert len(answers_on_chain) == 1

        log.info("the same interaction id for another request: refused, not the stored answer")
        reused = m.build_request(m.TOPIC_ACT_ANS, header, {"id": second["abs_action_id"],
                                                           "response": 0})
        [refusal] = asyncio.run(send_raw(broker, m.TOPIC_ACT_ANS, reused, header, 1, lambda r:
                                         r.header.interaction_id == header.interaction_id))
        refused = m.parse_response(refusal)
        assert refused.kind == "error" and refused.error_code == m.INVALID_PARAMETER, refused
        assert "another request" in refused.error
        log.info("an unknown token claims no row of the duplicate store")
        with engine.connect() as c:
            rows_before = c.exec_driver_sql("SELECT COUNT(*) FROM mesbridge_responses").scalar()
        stranger = m.Header("not-a-token", 77, "mes-stranger")
        [unknown_answer] = asyncio.run(send_raw(
            broker, m.TOPIC_ACT_ANS, m.build_request(m.TOPIC_ACT_ANS, stranger, {
                "id": second["abs_action_id"], "response": 1}), stranger, 1,
            lambda r: r.header.interaction_id == 77))
        assert m.parse_response(unknown_answer).error_code == UNAUTHORIZED
        with engine.connect() as c:
            assert c.exec_driver_sql(
                "SELECT COUNT(*) FROM mesbridge_responses").scalar() == rows_before

        log.info("an old client (no interaction id) gets its token echoed, real JSON")
        old_header = m.Header(master)
        [old_answer] = asyncio.run(send_raw(
            broker, m.TOPIC_ACT_LST_OLD, m.encode([{"auth": master, "start": 0, "limit": 1}]),
            old_header, 1, lambda r: r.header.auth == master))
        assert json.loads(old_answer)[0] == {"auth": master}
        assert [o["abs_action_id"] for o in json.loads(old_answer)[1]["data"]] == newest_first[:1]

        log.info("tokens: unknown, and the wrong kind")
        unknown = request(broker, m.TOPIC_PART_LST, "not-a-token")
        assert unknown.kind == "error" and unknown.error_code == UNAUTHORIZED
    finally:
        bridge.stop()


def test_bridge_record_commands_and_reporter_scope(harness, broker: str, tmp_path: Path) -> None:
    n1, n2, erp, engine = erp_and_mes(harness, "mesrecords", tmp_path)
    bridge = BridgeThread(n1, engine, broker).start()
    try:
        master = bridge.store.issue_master("ACME MES")

        log.info("record type ensured twice: created, then 'already exists' is success")
        body = {"action": "ensure_record_type", "name": "ProductionUnit",
                "properties": PRODUCTION_UNIT}
        made = request(broker, m.TOPIC_RTY, master, body)
        assert made.kind == "message" and "created" in made.message
        again = request(broker, m.TOPIC_RTY, master, body)
        assert again.kind == "message" and "already exists" in again.message
        other = request(broker, m.TOPIC_RTY, master, {**body, "properties": PRODUCTION_UNIT[:1]})
        assert other.kind == "error" and other.error_code == REFUSED

        log.info("reporters for PT10 (Status, ProcessName) and PT11 (Status only)")
        pt10 = request(broker, m.TOPIC_REC, master, {
            "action": "ensure_reporter", "record_id": "PT10", "record_type": "ProductionUnit",
            "properties": ["Status", "ProcessName"]})
        pt11 = request(broker, m.TOPIC_REC, master, {
            "action": "ensure_reporter", "record_id": "PT11", "record_type": "ProductionUnit",
            "properties": ["Status"]})
        assert pt10.kind == "data" and pt11.kind == "data", (pt10, pt11)
        assert set(pt10.data) == {"token", "publicKey", "record_id", "properties"}
        assert pt10.data["record_id"] == "PT10" and pt10.data["publicKey"] != pt11.data["publicKey"]
        tok10 = open_reporter_token(master, pt10.data["token"])
        tok11 = open_reporter_token(master, pt11.data["token"])
        with pytest.raises(SealError):  # another reader of BLK_Res cannot open it
            open_reporter_token("some other MES's token", pt10.data["token"])
        with engine.connect() as c:
            hashes = {r[0] for r in c.exec_driver_sql("SELECT token_hash FROM mesbridge_tokens")}
            kept = b"".join(r[0] or b"" for r in c.exec_driver_sql(
                "SELECT response FROM mesbridge_responses"))
        assert tok10 not in hashes and tok11 not in hashes and len(hashes) == 3
        for clear in (tok10, tok11):  # neither on the shared topic nor in the duplicate store
            assert clear not in json.dumps(pt10.data) + json.dumps(pt11.data)
            assert clear.encode() not in kept
        assert pt10.data["token"].encode() in kept  # the sealed answer is what is kept

        def update(token: str, record: str, **values: str) -> m.Response:
            return request(broker, m.TOPIC_REC, token, {
                "action": "update_properties", "record_id": record,
                "properties": [{"name": k, "data_type": "STRING", "value": v}
                               for k, v in values.items()]})

        ok = update(tok10, "PT10", Status="RUNNING", ProcessName="milling")
        assert ok.kind == "message", ok
        ok11 = update(tok11, "PT11", Status="STOPPED")
        assert ok11.kind == "message", ok11
        before = n1.rpc.call("getstreaminfo", "supplychain")["items"]
        for refused in (update(tok11, "PT11", ProcessName="drilling"),  # not authorised
                        update(tok11, "PT10", Status="STOPPED"),        # another unit
                        update(master, "PT10", Status="STOPPED")):      # not a reporter
            assert refused.kind == "error" and refused.error_code == UNAUTHORIZED, refused
        for txid in (ok.message, ok11.message):
            wait_projected(erp, txid.rsplit(" ", 1)[1].rstrip(")"))
        assert n1.rpc.call("getstreaminfo", "supplychain")["items"] == before
        shown = erp.show("record", "PT10")
        values = {p["name"]: [v["value"] for v in p["values"]] for p in shown["properties"]}
        assert values == {"Status": ["RUNNING"], "ProcessName": ["milling"]}
        assert {p["name"]: [v["value"] for v in p["values"]] for p in
                erp.show("record", "PT11")["properties"]} == {"Status": ["STOPPED"],
                                                              "ProcessName": []}

        log.info("PT11's reporter ensured again with ProcessName: a new token, the old one dead")
        pt11b = request(broker, m.TOPIC_REC, master, {
            "action": "ensure_reporter", "record_id": "PT11", "record_type": "ProductionUnit",
            "properties": ["Status", "ProcessName"]})
        assert pt11b.kind == "data" and pt11b.data["publicKey"] == pt11.data["publicKey"]
        assert pt11b.data["properties"] == ["ProcessName", "Status"]
        dead = update(tok11, "PT11", Status="RUNNING")
        assert dead.kind == "error" and dead.error_code == UNAUTHORIZED
        ok11b = update(open_reporter_token(master, pt11b.data["token"]), "PT11",
                       ProcessName="drilling")
        assert ok11b.kind == "message", ok11b
        wait_projected(erp, ok11b.message.rsplit(" ", 1)[1].rstrip(")"))
        assert {p["name"]: [v["value"] for v in p["values"]] for p in
                erp.show("record", "PT11")["properties"]} == {"Status": ["STOPPED"],
                                                              "ProcessName": ["drilling"]}

        log.info("an update whose answer timed out, resent under its interaction id: applied once")
        iid = new_interaction_id()
        idle = {"action": "update_properties", "record_id": "PT10",
                "properties": [{"name": "Status", "data_type": "STRING", "value": "IDLE"}]}

        async def timed_out_then_resent() -> m.Response:
            async with BridgeClient(broker, "mes-resend", timeout=scaled(30)) as client:
                with pytest.raises(BridgeTimeout):
                    await client.request(m.TOPIC_REC, tok10, idle, interaction_id=iid,
                                         timeout=0.001)
                return await client.request(m.TOPIC_REC, tok10, idle, interaction_id=iid)

        resent = asyncio.run(timed_out_then_resent())
        assert resent.kind == "message", resent
        wait_projected(erp, resent.message.rsplit(" ", 1)[1].rstrip(")"))
        assert [v["value"] for p in erp.show("record", "PT10")["properties"]
                if p["name"] == "Status" for v in p["values"]] == ["IDLE", "RUNNING"]  # newest first

        log.info("a day report: 28 static records in one transaction")
        assert request(broker, m.TOPIC_RTY, master, {
            "action": "ensure_record_type", "name": RECORD_TYPE,
            "properties": DAY_REPORT_TYPE}).kind == "message"
        day = dt.date(2021, 1, 11)
        fid = flow_id(day, "PT10")
        values28 = {name: (None if i == 3 else 90.0 - i) for i, name in enumerate(NAMES)}
        records = indicator_records("614f24586a93d2db8f59b323", fid, day, "PT10", values28)
        batch = {"action": "create_static_records", "flow_id": fid, "records": records}
        published = request(broker, m.TOPIC_REC, master, batch)
        assert published.kind == "data", published
        created, finalized = published.data["txids"]  # 28 finalizations pass the 32-item cap
        wait_projected(erp, finalized)
        items = n2.rpc.call("liststreamitems", "supplychain", True, 100_000)
        for txid, kind in ((created, "CREATE_RECORD"), (finalized, "FINALIZE_RECORD")):
            assert [i["data"]["json"]["action"] for i in items if i["txid"] == txid] == [kind] * 28
        for record in records:
            row = erp.row("records", (record["record_id"],))
            assert row is not None and row["final"] is True
        resent = request(broker, m.TOPIC_REC, master, batch)
        assert resent.kind == "error" and resent.error_code == EXISTS
        existing = {e["record_id"]: e for e in resent.extra["existing"]}
        assert set(existing) == {r["record_id"] for r in records}
        first = records[0]
        assert existing[first["record_id"]]["properties"] == json.loads(json.dumps(
            first["properties"]))
        assert existing[first["record_id"]]["final"] is True
    finally:
        bridge.stop()
