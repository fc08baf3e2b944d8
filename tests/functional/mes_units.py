"""A production unit updated three times through the PATCH endpoint (spec 3.2), real broker.

Phases:
1. `chainmill mes serve` runs while nothing answers on the bridge topics: the first PATCH
   still answers 200 with the updated unit at once (the publication is queued after the
   commit and sent off the request thread), and the change waits in the outbox;
2. the bridge's record commands come up on the broker: the queued change goes out, after the
   record type (once) and the unit's reporter (stored encrypted in the token store);
3. the same values again (nothing sent), then a partial change (only Status sent): the
   unit's history holds exactly the two changes, each signed with the reporter's token.
Bad PATCH bodies are 400, an unknown unit 404, and change nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from framework import wait_until
from kafka_support import tansu_broker
from mes_support import ContractResponder, MesServer, OpenApiCheck, make_db
from sqlalchemy import create_engine, select

from mes import schema

pytestmark = pytest.mark.functional

PATH = "/api/productionunit/{unit_id}"


def _outbox(url: str) -> list[dict]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(schema.unit_outbox)
                                                  .order_by(schema.unit_outbox.c.id)).mappings()]
    finally:
        engine.dispose()


def test_mes_units_three_updates_history_and_unchanged_values_not_sent(tmp_path: Path,
                                                                        free_port_factory):
    db = make_db(tmp_path)
    with tansu_broker(tmp_path / "tansu", free_port_factory()) as kafka:
        server = MesServer(db, free_port_factory(), kafka, "--no-scheduler", "--timeout", "2",
                           log_path=tmp_path / "serve.log")
        try:
            api = OpenApiCheck(server.call("GET", "/api/openapi.json")[1])
            for body, status in (({"Status": 5}, 400), ({"Colour": "red"}, 400), ({}, 400),
                                 ({"Status": "x" * 201}, 400)):
                got, reply = server.call("PATCH", "/api/productionunit/10", body=body)
                assert got == status, (body, reply)
                api.check("PATCH", PATH, got, reply)
            got, reply = server.call("PATCH", "/api/productionunit/99", body={"Status": "RUNNING"})
            assert got == 404
            api.check("PATCH", PATH, got, reply)
            assert _outbox(db.url) == []

            got, unit = server.call("PATCH", "/api/productionunit/10",
                                    body={"Status": "RUNNING", "ProcessName": "milling"})
            assert got == 200 and api.check("PATCH", PATH, got, unit) == {
                "productionunit_id": 10, "code": "PT10", "Status": "RUNNING",
                "ProcessName": "milling"}
            assert [r["sent_at"] for r in _outbox(db.url)] == [None]  # queued, nobody answers

            with ContractResponder(kafka) as bridge:
                contract = bridge.contract
                wait_until(lambda: len(contract.history.get("PT10", [])) == 1, timeout=60,
                           msg="the queued change to reach the bridge")
                got, unit = server.call("PATCH", "/api/productionunit/10",
                                        body={"Status": "RUNNING", "ProcessName": "milling"})
                assert got == 200
                got, unit = server.call("PATCH", "/api/productionunit/10",
                                        body={"Status": "STOPPED"})
                assert got == 200 and unit["ProcessName"] == "milling"
                wait_until(lambda: all(r["sent_at"] for r in _outbox(db.url)), timeout=60,
                           msg="every change handled")
                assert [h["values"] for h in contract.history["PT10"]] == [
                    {"Status": "RUNNING", "ProcessName": "milling"}, {"Status": "STOPPED"}]
                actions = [r.action for r in contract.requests]
                assert actions.count("ensure_record_type") == 1
                assert actions.count("ensure_reporter") == 1
                assert actions.count("update_properties") == 2
                reporter_tokens = {r.header.auth for r in contract.requests
                                   if r.action == "update_properties"}
                assert reporter_tokens == set(contract.reporters)
            tokens = db.cli("token", "list")
            assert [t["tipoInstancia"] for t in tokens] == ["Master", "Reporter"]
            assert tokens[1]["record_id"] == "PT10" and tokens[1]["unit_id"] == 10
            secret = next(iter(contract.reporters))
            assert secret.encode() not in (tmp_path / "mes.db").read_bytes()  # encrypted at rest
        finally:
            server.stop()
