"""A fake of the bridge's record commands (spec 3.5.3), in memory: the contract the MES side
is written against. The real bridge (mes.bridge.service) runs in mes_chain.py and
mes_readme.py; this fake serves the tests that need to control the bridge's side (hold an
answer until the MES process is killed, a conflicting value already on the chain, no bridge).

`RecordContractFake.answer(request)` returns `build_response` keyword arguments, so it plugs
into `kafka_support.BridgeResponderDouble` on the real broker as well as into the in-process
`FakeBridge` of the unit tests. Contract (mes.bridge.executor implements the same):

- ensure_record_type: message; a second call: error "... already exists" (success for the MES;
  the real bridge answers a message then);
- ensure_reporter (Master auth): data {token (sealed for the Master token), publicKey, record_id}; creates the record;
- update_properties (reporter auth, only the properties it was authorised for): data {txid}
  (the real bridge: message "... (txid T)");
- create_static_records (Master auth, the record type must exist): one atomic batch; data
  {txids}; if any record exists: error with ``existing`` = [{record_id, properties, ...}]
  (as the real bridge answers) and nothing created.

Each record keeps its history of property updates, so tests read "the unit's history".
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy import Engine, create_engine

from mes import schema
from mes.bridge import messages as m
from mes.bridge.sealing import seal_reporter_token
from mes.tokens import TokenStore

MASTER_TOKEN = "master-token-0001"


class RecordContractFake:
    """The record commands of the bridge, executed on dictionaries (test fake)."""

    def __init__(self, master_token: str = MASTER_TOKEN) -> None:
        self.master_token = master_token
        self.record_types: dict[str, list[dict[str, Any]]] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self.history: dict[str, list[dict[str, Any]]] = {}
        self.reporters: dict[str, tuple[str, list[str]]] = {}  # token -> (record, properties)
        self.requests: list[m.Request] = []
        self.creations: list[str] = []
        self._seq = itertools.count(1)

    def _txid(self) -> str:
        return hashlib.sha256(str(next(self._seq)).encode()).hexdigest() * 2

    def answer(self, request: m.Request) -> dict[str, Any]:
        self.requests.append(request)
        body = request.body or {}
        auth = request.header.auth
        action = request.action
        if action == "ensure_record_type":
            if auth != self.master_token:
                return {"error": "unknown token", "error_code": -1}
            if body["name"] in self.record_types:
                return {"error": f"record type {body['name']} already exists", "error_code": -705}
            self.record_types[body["name"]] = body["properties"]
            return {"message": f"record type {body['name']} created"}
        if action == "ensure_reporter":
            if auth != self.master_token:
                return {"error": "unknown token", "error_code": -1}
            if body["record_type"] not in self.record_types:
                return {"error": f"no record type {body['record_type']}", "error_code": -8}
            record_id = body["record_id"]
            if record_id not in self.records:
                self.records[record_id] = {"record_type": body["record_type"], "properties": {}}
                self.history[record_id] = []
            token = f"reporter-{record_id}-{next(self._seq)}"
            self.reporters[token] = (record_id, list(body["properties"]))
            key = "03" + hashlib.sha256(token.encode()).hexdigest()
            return {"data": {"token": seal_reporter_token(auth, token), "publicKey": key,
                             "record_id": record_id}}
        if action == "update_properties":
            grant = self.reporters.get(auth)
            if grant is None or grant[0] != body["record_id"]:
                return {"error": "token is not a reporter of this record", "error_code": -1}
            names = [p["name"] for p in body["properties"]]
            if not set(names) <= set(grant[1]):
                return {"error": "reporter not authorised for these properties", "error_code": -1}
            txid = self._txid()
            for p in body["properties"]:
                self.records[body["record_id"]]["properties"][p["name"]] = p["value"]
            self.history[body["record_id"]].append(
                {"txid": txid, "values": {p["name"]: p["value"] for p in body["properties"]}})
            return {"data": {"txid": txid}}
        if action == "create_static_records":
            if auth != self.master_token:
                return {"error": "unknown token", "error_code": -1}
            missing = {r["record_type"] for r in body["records"]} - set(self.record_types)
            if missing:
                return {"error": f"record type {sorted(missing)[0]!r} does not exist",
                        "error_code": -8}
            existing = {r["record_id"]: dict(self.records[r["record_id"]]["properties"])
                        for r in body["records"] if r["record_id"] in self.records}
            if existing:
                return {"error": f"{len(existing)} records exist already", "error_code": -705,
                        "existing": [{"record_id": rid, "record_type": "DayReportIndicator",
                                      "final": True, "properties": props}
                                     for rid, props in existing.items()]}
            for r in body["records"]:
                self.records[r["record_id"]] = {"record_type": r["record_type"],
                                                "properties": dict(r["properties"]), "final": True}
                self.creations.append(r["record_id"])
            return {"data": {"txids": [self._txid()]}}
        return {"error": f"{action} is not a record command here", "error_code": -8}


def response_bytes(header: m.Header, answer: dict[str, Any]) -> bytes:
    """The BLK_Res value of ``answer``; keys beyond data/message/error/error_code (the
    contract's ``existing``) travel next to them in element 1, as real JSON."""
    core = {k: v for k, v in answer.items() if k in ("data", "message", "error", "error_code")}
    value = json.loads(m.build_response(header, **core))
    value[1].update({k: v for k, v in answer.items() if k not in core})
    return m.encode(value)


class FakeBridge:
    """In-process stand-in for a `BridgeClient`, answering through a `RecordContractFake`.

    The request is built and parsed by the real message code, so what the MES side sends must
    pass the bridge's parser. ``after`` may raise to simulate a process killed after the
    bridge executed a request and before the MES recorded the answer.
    """

    def __init__(self, contract: RecordContractFake | None = None) -> None:
        self.contract = contract or RecordContractFake()
        self.after = None
        self._iid = itertools.count(1)

    async def request(self, topic: str, auth: str, body: dict[str, Any] | None = None,
                      **kwargs: Any) -> m.Response:
        header = m.Header(auth, next(self._iid), "mes-test", kwargs.get("start"), kwargs.get("limit"))
        request = m.parse_request(topic, m.build_request(topic, header, body))
        kwargs_out = self.contract.answer(request)
        raw = response_bytes(request.header, kwargs_out)
        response = m.parse_response(raw)
        if self.after is not None:
            self.after(request, response)
        return response


def mes_world(directory: Path) -> Iterator[tuple[Engine, TokenStore, FakeBridge]]:
    """A reference MES database (unit 10 = PT10), its token store holding MASTER_TOKEN, and a
    FakeBridge: what the MES-side unit tests start from (use with ``yield from``)."""
    engine = create_engine(f"sqlite:///{directory / 'mes.db'}")
    schema.create_all(engine)
    with engine.begin() as conn:
        conn.execute(schema.production_unit.insert().values(unit_id=10, code="PT10", updated_at=0))
    tokens = TokenStore(engine, Fernet.generate_key())
    tokens.set_master(MASTER_TOKEN)
    yield engine, tokens, FakeBridge()
    engine.dispose()
