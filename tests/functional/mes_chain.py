"""The MES side end to end: `chainmill mes serve` and `chainmill mes publish` against the real
bridge (`chainmill mes bridge`), two real nodes and a real Kafka-protocol broker.

How: node 1 runs the bridge as the MES's agent, node 2 the ERP (`erp.api.Erp`, which also
reads the chain back). The MES has only its database and the broker.
1. the ERP asks for a partnership and sends an order; the MES lists and accepts the first and
   rejects the second through its HTTP endpoints; the ERP's projection sees both answers;
2. production unit PT10 is PATCHed three times (the second time with the same values): its
   history read from the chain on the ERP node holds exactly the two changes;
3. a finished day report is published by the job: 28 final records on the chain, the ledger
   PUBLISHED with the txids; run again, nothing new is published.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest
from framework import chainmill_command, child_env, scaled, wait_until
from kafka_support import tansu_broker
from mes_bridge_support import erp_and_mes, log, wait_projected
from mes_support import MesServer, OpenApiCheck, enter_report, make_db

from mes.dayreport.ids import flow_id

pytestmark = pytest.mark.functional


def _bridge_cli(node, db_url: str, *args: str) -> list[str]:  # noqa: ANN001
    return [*chainmill_command(), "mes", "bridge", node.chain, "--datadir", str(node.datadir),
            "--db", db_url, *args]


def _values(erp, record_id: str, name: str) -> list:  # noqa: ANN001
    erp.follow()
    prop = erp.row("properties", (record_id, name))
    if prop is None:
        return []
    return [erp.row("property_values", (record_id, name, i))["value"] for i in range(prop["count"])]


def test_mes_chain_endpoints_units_and_day_report(harness, tmp_path: Path, free_port_factory):
    n1, n2, erp, bridge_engine = erp_and_mes(harness, "messide", tmp_path)
    bridge_engine.dispose()
    bridge_db = f"sqlite:///{tmp_path / 'bridge.db'}"
    issued = subprocess.run(_bridge_cli(n1, bridge_db, "--issue-master-token", "Plant 1 MES"),
                            env=child_env(), capture_output=True, text=True, timeout=scaled(60))
    assert issued.returncode == 0, issued.stderr
    master = json.loads(issued.stdout)["token"]
    db = make_db(tmp_path / "mes", master_token=master)
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=3)
    enter_report(db, day)

    with tansu_broker(tmp_path / "tansu", free_port_factory()) as kafka:
        bridge_log = (tmp_path / "bridge.log").open("wb")
        bridge = subprocess.Popen(_bridge_cli(n1, bridge_db, "--kafka", kafka, "--agent-name",
                                              "ACME MES"),
                                  env=child_env(), stdout=bridge_log, stderr=subprocess.STDOUT)
        server = None
        try:
            server = MesServer(db, free_port_factory(), kafka, "--no-scheduler", "--timeout", "30",
                               "--fetch-wait-ms", "50",
                               log_path=tmp_path / "serve.log")
            api = OpenApiCheck(server.call("GET", "/api/openapi.json")[1])
            mes_key = n1.rpc.call("validateaddress", n1.rpc.call("getaddresses")[0])["pubkey"]
            wait_until(lambda: erp.follow() is not None and erp.row("agents", (mes_key,)),
                       timeout=120, msg="the ERP to see the MES agent")

            log.info("partner request accepted, order rejected, from the MES endpoints")
            made = erp.create_partner_request(mes_key)
            rid = made["partner_request_id"]

            def listed(path: str) -> list:
                status, body = server.call("GET", path)
                assert status == 200, body
                return api.check("GET", path, status, body)

            [request] = wait_until(lambda: listed("/api/KafkaPartner/LIST"), timeout=120,
                                   msg="the partner request listed")
            assert request["partner_request_id"] == rid and request["status"] == "OPEN"
            status, body = server.call("POST", "/api/KafkaPartner/ANS",
                                       form={"ID": rid, "Response": "1"})
            assert status == 200 and "ACCEPTED" in api.check("POST", "/api/KafkaPartner/ANS",
                                                             status, body)["message"]
            wait_projected(erp, body["message"].rsplit(" ", 1)[1].rstrip(")"))
            order = erp.create_action(mes_key, "dummy_action", "Test dummy action", {"Size": 3})
            wait_until(lambda: listed("/api/KafkaOrder/LIST"), timeout=120, msg="the order listed")
            status, body = server.call("POST", "/api/KafkaOrder/ANS",
                                       body={"ID": order["abs_action_id"], "Response": 0})
            assert status == 200 and "REJECTED" in body["message"], body
            wait_projected(erp, body["message"].rsplit(" ", 1)[1].rstrip(")"))
            assert erp.show("partner_request", rid)["partner_request"]["status"] == "ACCEPTED"

            log.info("unit PT10 updated three times; its history read from the chain")
            for change in ({"Status": "RUNNING", "ProcessName": "milling"},
                           {"Status": "RUNNING", "ProcessName": "milling"},
                           {"Status": "STOPPED"}):
                status, unit = server.call("PATCH", "/api/productionunit/10", body=change)
                assert status == 200, unit
            wait_until(lambda: _values(erp, "PT10", "Status") == ["RUNNING", "STOPPED"],
                       timeout=120, msg="PT10's Status history on the chain")
            assert _values(erp, "PT10", "ProcessName") == ["milling"]

            log.info("the day report published by the job; a re-run publishes nothing")
            out = db.cli("publish", "--kafka", kafka, "--tz", "Europe/Lisbon", "--timeout", "60")
            fid = flow_id(day, "PT10")
            [report] = out["reports"]
            assert report["flow_id"] == fid and report["status"] == "PUBLISHED" and report["txids"]
            wait_projected(erp, report["txids"][-1])
            records = [erp.row("records", (f"{fid}_{s}{i:02d}",)) for s in range(1, 5)
                       for i in range(1, 8)]
            assert all(r is not None and r["final"] for r in records)
            assert _values(erp, f"{fid}_404", "value") == [85.26]  # whole-day OEE
            again = db.cli("publish", "--kafka", kafka, "--tz", "Europe/Lisbon")
            assert again["reports"] == out["reports"]
        finally:
            if server is not None:
                server.stop()
            bridge.terminate()
            try:
                bridge.wait(timeout=scaled(30))
            except subprocess.TimeoutExpired:
                bridge.kill()
                bridge.wait()
            bridge_log.close()
