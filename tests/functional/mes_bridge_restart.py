"""The bridge killed (SIGKILL) mid-stream and started again: no request lost, none executed
twice (spec 3.5.4 item 5; consumer group with manual commits plus the response store).

How: the bridge runs as its own process (`python -m mes.bridge.cli`) on node 1, the ERP on
node 2; its Master token is issued by the same command (`--issue-master-token`). The ERP has a partnership with the MES and six open orders; the MES has a reporter
for unit PT10. One MES client sends six order answers and twenty Status updates at once;
after the first few answers arrive the bridge is killed and started again. Every request
is answered, and on the chain each order has exactly one answer and each Status value was
reported exactly once.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from framework import REPO_ROOT, child_env, scaled, wait_until
from kafka_support import tansu_broker
from mes_bridge_support import (
    PRODUCTION_UNIT,
    BridgeProcess,
    erp_and_mes,
    log,
    request,
    wait_listed,
    wait_projected,
)

from mes.bridge import messages as m
from mes.bridge.client import BridgeClient
from mes.bridge.sealing import open_reporter_token
from mes.bridge.store import BridgeStore

pytestmark = pytest.mark.functional

ORDERS = 6
UPDATES = 20


@pytest.fixture
def broker(tmp_path: Path, free_port_factory) -> str:
    with tansu_broker(tmp_path / "tansu", free_port_factory()) as bootstrap:
        yield bootstrap


def test_bridge_killed_mid_stream_loses_nothing_and_repeats_nothing(harness, broker: str,
                                                                    tmp_path: Path) -> None:
    n1, n2, erp, engine = erp_and_mes(harness, "mesrestart", tmp_path)
    db_url = f"sqlite:///{tmp_path / 'bridge.db'}"
    issued = subprocess.run([sys.executable, "-m", "mes.bridge.cli", n1.chain, "--datadir",
                             str(n1.datadir), "--db", db_url, "--issue-master-token", "ACME MES"],
                            capture_output=True, text=True, env=child_env(), cwd=REPO_ROOT,
                            timeout=scaled(60))
    assert issued.returncode == 0, issued.stderr
    master = json.loads(issued.stdout)["token"]
    assert BridgeStore(engine).lookup(master).kind == "Master"
    assert master not in (tmp_path / "bridge.db").read_bytes().decode("latin-1")
    bridge = BridgeProcess(n1, db_url, broker, tmp_path / "bridge.log")
    bridge.start()
    try:
        mes_key = n1.rpc.call("validateaddress", n1.rpc.call("getaddresses")[0])["pubkey"]
        wait_until(lambda: erp.follow() is not None and erp.row("agents", (mes_key,)),
                   timeout=60, msg="the ERP to see the MES agent")

        log.info("partnership, %d orders, a reporter for PT10", ORDERS)
        rid = erp.create_partner_request(mes_key)["partner_request_id"]
        wait_listed(broker, m.TOPIC_PART_LST, master, 1)
        accepted = request(broker, m.TOPIC_PART_ANS, master, {"id": rid, "response": 1})
        assert accepted.kind == "message", accepted
        wait_projected(erp, accepted.message.rsplit(" ", 1)[1].rstrip(")"))
        orders = [erp.create_action(mes_key, "dummy_action", f"order {i}")["abs_action_id"]
                  for i in range(ORDERS)]
        wait_listed(broker, m.TOPIC_ACT_LST, master, ORDERS)
        assert request(broker, m.TOPIC_RTY, master, {
            "action": "ensure_record_type", "name": "ProductionUnit",
            "properties": PRODUCTION_UNIT}).kind == "message"
        reporter = request(broker, m.TOPIC_REC, master, {
            "action": "ensure_reporter", "record_id": "PT10", "record_type": "ProductionUnit",
            "properties": ["Status"]})
        assert reporter.kind == "data", reporter
        token = open_reporter_token(master, reporter.data["token"])

        log.info("%d requests at once; the bridge is killed after the first answers",
                 ORDERS + UPDATES)

        async def burst() -> list[m.Response]:
            async with BridgeClient(broker, "mes-burst", timeout=scaled(120)) as client:
                tasks = [asyncio.create_task(client.request(
                    m.TOPIC_ACT_ANS, master, {"id": oid, "response": i % 2}))
                    for i, oid in enumerate(orders)]
                tasks += [asyncio.create_task(client.request(m.TOPIC_REC, token, {
                    "action": "update_properties", "record_id": "PT10",
                    "properties": [{"name": "Status", "data_type": "STRING",
                                    "value": f"S{i}"}]})) for i in range(UPDATES)]
                loop = asyncio.get_running_loop()
                deadline = loop.time() + scaled(60)
                while sum(t.done() for t in tasks) < 3:
                    assert loop.time() < deadline, "no answers before the kill"
                    await asyncio.sleep(0.01)
                answered_before = sum(t.done() for t in tasks)
                await loop.run_in_executor(None, bridge.kill)
                log.info("%d of %d answered before the kill", answered_before, len(tasks))
                assert answered_before < len(tasks), "the kill came too late to test anything"
                await loop.run_in_executor(None, bridge.start)
                return await asyncio.gather(*tasks)

        responses = asyncio.run(burst())
        assert [r.kind for r in responses] == ["message"] * (ORDERS + UPDATES), responses

        log.info("on the chain: one answer per order, each Status value once")
        for response in responses:
            if "txid" in response.message:
                wait_projected(erp, response.message.rsplit(" ", 1)[1].rstrip(")"))
        wait_until(lambda: erp.follow() is not None and all(
            erp.row("action_requests", (o,))["status"] != "OPEN" for o in orders),
            timeout=60, msg="every order answered on the ERP side")
        for i, oid in enumerate(orders):
            items = n2.rpc.call("liststreamkeyitems", "supplychain", oid, True, 100)
            answers = [x["data"]["json"] for x in items
                       if x["data"]["json"]["action"] == "ANSWER_ACTION"]
            assert len(answers) == 1, (oid, answers)
            assert answers[0]["response"] == i % 2
        items = n2.rpc.call("liststreamkeyitems", "supplychain", "PT10", True, 1000)
        reported = Counter(p["value"] for x in items
                           if x["data"]["json"]["action"] == "UPDATE_PROPERTIES"
                           for p in x["data"]["json"]["properties"])
        assert reported == Counter({f"S{i}": 1 for i in range(UPDATES)})
    finally:
        if bridge.process is not None and bridge.process.poll() is None:
            assert bridge.terminate() == 0
