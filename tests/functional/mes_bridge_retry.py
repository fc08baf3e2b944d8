"""The bridge's retry mode: a request whose earlier delivery published and was then killed
before its response was stored is answered as done, never published twice (spec 3.5.4).

How: one real node, no broker: the bridge's `Executor` is called directly, the MES acting
from the node's first address and the ERP from a second one. For each write kind the test
publishes what the killed delivery would have published, then executes the request again
with ``retry=True`` (what the service does for a request found ``started`` in the response
store): an answer, a property update, a reporter identity stored before any of its
transactions, and static records created but not yet finalized.
Without retry mode the same requests are refused by the rules, which is what a second
execution would have met.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from framework import wait_until
from mes_bridge_support import PRODUCTION_UNIT, log
from sqlalchemy import create_engine

from erp.api import Erp
from mes.bridge import messages as m
from mes.bridge.executor import EXISTS, REFUSED, Executor
from mes.bridge.sealing import open_reporter_token
from mes.bridge.store import BridgeStore, Reporter, open_engine
from mes.dayreport.ids import flow_id
from mes.dayreport.indicators import NAMES
from mes.dayreport.publication import RECORD_TYPE, indicator_records

pytestmark = pytest.mark.functional

DAY_TYPE = [{"name": "value", "data_type": "FLOAT", "required": True},
            {"name": "defined", "data_type": "INT", "required": True},
            *({"name": n, "data_type": "STRING", "required": True}
              for n in ("flow_id", "date", "unit", "shift", "indicator", "uom"))]


def items(node, key: str, kind: str) -> list[dict]:  # noqa: ANN001
    return [i["data"]["json"] for i in node.rpc.call("liststreamkeyitems", "supplychain", key,
                                                     True, 1000)
            if i["data"]["json"]["action"] == kind]


def test_bridge_retry_mode_answers_what_an_earlier_delivery_published(harness,
                                                                     tmp_path: Path) -> None:
    node = harness.start_node(chain="mesretry")
    mes = Erp(open_engine(f"sqlite:///{tmp_path / 'bridge.db'}"), node.client())
    wait_projected = mes.wait
    wait_projected(mes.init(agent_name="ACME MES"))
    erp_address = node.rpc.call("getnewaddress")
    node.rpc.call("grant", erp_address, "send")
    erp = Erp(create_engine(f"sqlite:///{tmp_path / 'erp.db'}"), node.client(),
              address=erp_address)
    erp.wait(erp.init(agent_name="ACME ERP"))
    store = BridgeStore(mes.engine)
    store.create()
    master = store.issue_master("ACME MES")
    executor = Executor(mes, store)

    def req(topic: str, body: dict, auth: str = master) -> m.Request:
        return m.parse_request(topic, m.build_request(topic, m.Header(auth, 1, "mes-1"), body))

    log.info("an answer published by the killed delivery")
    made = erp.create_partner_request(mes.public_key)
    wait_projected(made["txid"])
    rid = made["partner_request_id"]
    answer = req(m.TOPIC_PART_ANS, {"id": rid, "response": 1})
    earlier = mes.answer_partner_request(rid, 1)["txid"]
    refused = executor.execute(answer)
    assert refused["error_code"] == REFUSED and "already ACCEPTED" in refused["error"]
    again = executor.execute(answer, retry=True)
    assert again == {"message": f"partner request {rid} ACCEPTED (txid {earlier})"}
    wrong = executor.execute(req(m.TOPIC_PART_ANS, {"id": rid, "response": 0}), retry=True)
    assert wrong["error_code"] == REFUSED  # a different answer is not taken for done
    assert len(items(node, rid, "ANSWER_PARTNER_REQUEST")) == 1

    log.info("a property update published by the killed delivery")
    assert "created" in executor.execute(req(m.TOPIC_RTY, {
        "action": "ensure_record_type", "name": "ProductionUnit",
        "properties": PRODUCTION_UNIT}))["message"]
    reporter = executor.execute(req(m.TOPIC_REC, {
        "action": "ensure_reporter", "record_id": "PT10", "record_type": "ProductionUnit",
        "properties": ["Status"]}))["data"]
    update = req(m.TOPIC_REC, {"action": "update_properties", "record_id": "PT10",
                               "properties": [{"name": "Status", "data_type": "STRING",
                                               "value": "RUNNING"}]},
                 open_reporter_token(master, reporter["token"]))
    first = executor.execute(update)
    assert "txid" in first["message"]
    again = executor.execute(update, retry=True)
    assert again == {"message": "record PT10 updated (by an earlier delivery)"}
    assert len(items(node, "PT10", "UPDATE_PROPERTIES")) == 1

    log.info("a reporter identity stored, the bridge killed before any transaction")
    address = node.rpc.call("getnewaddress")
    pubkey = node.rpc.call("validateaddress", address)["pubkey"]
    store.save_reporter(Reporter("PT20", address, pubkey, ()))
    resumed = executor.execute(req(m.TOPIC_REC, {
        "action": "ensure_reporter", "record_id": "PT20", "record_type": "ProductionUnit",
        "properties": ["Status"]}), retry=True)["data"]
    assert resumed["publicKey"] == pubkey  # the same identity, not a second one
    done_update = executor.execute(req(m.TOPIC_REC, {
        "action": "update_properties", "record_id": "PT20", "properties": [
            {"name": "Status", "data_type": "STRING", "value": "IDLE"}]},
        open_reporter_token(master, resumed["token"])))
    assert "txid" in done_update["message"], done_update
    wait_projected(done_update["message"].rsplit(" ", 1)[1].rstrip(")"))
    assert [v["value"] for p in mes.show("record", "PT20")["properties"] if p["name"] == "Status"
            for v in p["values"]] == ["IDLE"]

    log.info("static records created, the bridge killed before their finalization")
    assert "created" in executor.execute(req(m.TOPIC_RTY, {
        "action": "ensure_record_type", "name": RECORD_TYPE,
        "properties": DAY_TYPE}))["message"]
    day = dt.date(2021, 1, 11)
    fid = flow_id(day, "PT10")
    records = indicator_records("614f24586a93d2db8f59b323", fid, day, "PT10",
                                {n: 50.0 for n in NAMES})
    types = {p["name"]: p["data_type"] for p in DAY_TYPE}
    created = mes.publish_batch([(mes.new_action(
        "CREATE_RECORD", record_id=r["record_id"], record_type=RECORD_TYPE,
        properties=[{"name": k, "data_type": types[k], "value": v}
                    for k, v in r["properties"].items()]), r["record_id"]) for r in records])
    batch = req(m.TOPIC_REC, {"action": "create_static_records", "flow_id": fid,
                              "records": records})
    done = executor.execute(batch, retry=True)
    assert "data" in done, done
    assert created in done["data"]["txids"] and len(done["data"]["txids"]) == 2
    wait_until(lambda: mes.follow() is not None and all(
        (mes.row("records", (r["record_id"],)) or {}).get("final") for r in records),
        timeout=60, msg="every record final")
    assert all(len(items(node, r["record_id"], "CREATE_RECORD")) == 1 for r in records)
    assert all(len(items(node, r["record_id"], "FINALIZE_RECORD")) == 1 for r in records)
    resent = executor.execute(batch)  # a new request for the same report
    assert resent["error_code"] == EXISTS and len(resent["extra"]["existing"]) == 28
