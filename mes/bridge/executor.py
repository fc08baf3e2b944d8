"""What the bridge does with one parsed request: token checks, then the erp/ call (spec 3.5).

`Executor.execute(request)` returns the keyword arguments of `messages.build_response`:
``data`` for lists and reporter/batch results, ``message`` for confirmations, ``error`` with
``error_code`` when the token, its scope or the ledger rules refuse. Nothing is published
when a check refuses. It runs in one thread (the bridge's worker), which also keeps the
projection current between requests, so the follower and the pre-publish checks never race.

Every write is safe to run a second time for the same request, which happens when the
bridge was killed after publishing but before storing the response (``retry=True``): an
answer already given with the same response, a record type that exists with the same
schema, a reporter half made, values already reported, records already created: each is
recognised and answered as done, never published twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from config.errors import ChainmillError
from erp import rules
from erp.api import Erp
from erp.errors import ActionRefused, ErpError
from mes.bridge import messages as m
from mes.bridge.sealing import seal_reporter_token
from mes.bridge.store import MASTER, REPORTER, BridgeStore, Reporter, Token
from triggers.nodes import rpc_error_code, rpc_errors

__all__ = ["Executor", "Refused", "UNAUTHORIZED", "REFUSED", "EXISTS", "UNAVAILABLE", "EXPIRED"]

log = logging.getLogger(__name__)

# error_code values (MultiChain's where one fits).
UNAUTHORIZED = -704
"""Unknown token, or a token used beyond its scope (RPC_INSUFFICIENT_PERMISSIONS)."""
REFUSED = -26
"""The ledger rules refuse the action; nothing was published (RPC_VERIFY_REJECTED)."""
EXISTS = -705
"""Static records that already exist (RPC_DUPLICATE_NAME); the response lists them."""
UNAVAILABLE = -1
"""The node or the database failed; the request may be sent again."""
EXPIRED = -32600
"""A request older than the dedup window: not executed, since a duplicate could no longer
be recognised."""

Outcome = dict[str, Any]


class Refused(ChainmillError):
    """A request the bridge answers with an error."""

    def __init__(self, message: str, code: int, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.extra = extra


class Executor:
    """Executes requests as the MES's agent (the master) and its reporters."""

    def __init__(self, erp: Erp, store: BridgeStore, *, follow_interval: float = 0.1,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.erp = erp
        self.store = store
        self.follow_interval = follow_interval
        self.monotonic = monotonic
        self._followed = -float("inf")
        self._reporter_erps: dict[str, Erp] = {}

    # -- the projection -------------------------------------------------------------------

    def follow(self, *, force: bool = False) -> None:
        """Bring the projection up to date (at most every ``follow_interval`` seconds)."""
        now = self.monotonic()
        if force or now - self._followed >= self.follow_interval:
            self.erp.follow()
            self._followed = self.monotonic()

    def settle(self, timeout: float = 60.0, pause: float = 0.1) -> None:
        """Wait until what an earlier (killed) run of the bridge published is projected: the
        node's mempool is empty and the projection has every item of the stream. Before a
        request is executed a second time, so its own earlier effects are seen."""
        deadline = self.monotonic() + timeout
        client = self.erp.client
        while self.monotonic() < deadline:
            if not client.call("getmempoolinfo").get("size"):
                self.follow(force=True)
                position, _ = self.erp.projection.cursor()
                if position >= int(client.call("getstreaminfo", self.erp.stream)["items"]):
                    return
            time.sleep(pause)
        log.warning("the node did not settle within %.0f s; executing the retried request "
                    "against the projection as it is", timeout)

    # -- the entry point ------------------------------------------------------------------

    def execute(self, request: m.Request, *, retry: bool = False) -> Outcome:
        """The response to ``request`` as build_response keyword arguments."""
        try:
            token = self._token(request.header.auth)
            if retry:
                self.settle()
            self.follow()
            handler = _HANDLERS[request.action]
            return handler(self, token, request, retry)
        except Refused as exc:
            out: Outcome = {"error": str(exc), "error_code": exc.code}
            if exc.extra:
                out["extra"] = exc.extra
            return out
        except ActionRefused as exc:
            return {"error": exc.reason, "error_code": REFUSED}
        except rpc_errors() as exc:
            code = rpc_error_code(exc)
            log.warning("node call for %s failed: %s", request.action, exc)
            return {"error": f"node error: {exc}", "error_code": UNAVAILABLE if code is None
                    else code}
        except ErpError as exc:
            return {"error": str(exc), "error_code": UNAVAILABLE}

    def _token(self, auth: str | None) -> Token:
        token = self.store.lookup(auth) if auth else None
        if token is None:
            raise Refused("unknown token", UNAUTHORIZED)
        return token

    # -- partner and action requests ------------------------------------------------------

    def _list(self, token: Token, request: m.Request, retry: bool) -> Outcome:
        _master(token)
        header = request.header
        start = header.start or 0
        limit = header.limit or m.LIST_DEFAULT_LIMIT
        if request.topic == m.TOPIC_PART_LST:
            return {"data": self.erp.list_partner_requests(start, limit)}
        return {"data": self.erp.list_actions(start, limit)}

    def _answer(self, token: Token, request: m.Request, retry: bool) -> Outcome:
        _master(token)
        body = _body(request)
        ident, response = body["id"], body["response"]
        partner = request.topic == m.TOPIC_PART_ANS
        table, what = (("partner_requests", "partner request") if partner
                       else ("action_requests", "action request"))
        wanted = "ACCEPTED" if response == 1 else "REJECTED"
        try:
            made = (self.erp.answer_partner_request(ident, response) if partner
                    else self.erp.answer_action(ident, response))
        except ActionRefused:
            current = self.erp.current(table, (ident,))
            if not (retry and current is not None and current["status"] == wanted
                    and current["receiving_agent"] == self.erp.public_key):
                raise
            # An earlier delivery of this request published the answer before the bridge
            # was killed: answer as that delivery would have.
            made = {"txid": current["transaction_ids"][-1]}
            log.info("%s %s was answered by an earlier delivery (%s)", what, ident, made["txid"])
        return {"message": f"{what} {ident} {wanted} (txid {made['txid']})"}

    # -- record commands ------------------------------------------------------------------

    def _ensure_record_type(self, token: Token, request: m.Request, retry: bool) -> Outcome:
        _master(token)
        body = _body(request)
        name, props = body["name"], body["properties"]
        existing = self.erp.current("record_types", (name,))
        if existing is not None:
            if _schema(existing["properties"]) != _schema(props):
                raise Refused(f"record type {name!r} exists with other properties: "
                              f"{existing['properties']}", REFUSED)
            return {"message": f"record type {name} already exists"}
        made = self.erp.create_record_type(name, props)
        return {"message": f"record type {name} created (txid {made['txid']})"}

    def _ensure_reporter(self, token: Token, request: m.Request, retry: bool) -> Outcome:
        _master(token)
        body = _body(request)
        rid, rtype = body["record_id"], body["record_type"]
        wanted = list(body["properties"])
        type_row = self.erp.current("record_types", (rtype,))
        if type_row is None:
            raise Refused(f"record type {rtype!r} does not exist (ensure_record_type first)",
                          REFUSED)
        unknown = [n for n in wanted if n not in {p["name"] for p in type_row["properties"]}]
        if unknown:
            raise Refused(f"record type {rtype} has no property {unknown[0]!r}", REFUSED)
        record = self.erp.current("records", (rid,))
        if record is not None and record["record_type"] != rtype:
            raise Refused(f"record {rid!r} is a {record['record_type']}, not a {rtype}", REFUSED)

        reporter = self.store.reporter(rid)
        if reporter is None:
            address = str(self.erp.client.call("getnewaddress"))
            info = self.erp.client.call("validateaddress", address)
            reporter = Reporter(rid, address, str(info["pubkey"]), ())
            # Stored before any transaction, so a killed bridge resumes with this identity.
            self.store.save_reporter(reporter)
            log.info("reporter of %s: %s", rid, address)
        agent = self._reporter_erp(reporter)
        self._grant_send(reporter.address)
        if agent.current("agents", (reporter.public_key,)) is None:
            agent.create_agent(f"reporter {rid}"[:rules.MAX_NAME])
        if record is None:
            self.erp.create_record(rid, rtype, {})
        missing = [n for n in wanted if not self._authorised(rid, n, reporter.public_key)]
        if missing:
            proposal = self.erp.current("proposals", (rid, reporter.public_key, "REPORTER"))
            if proposal is None or proposal["status"] != "OPEN" or not set(missing) <= set(
                    proposal["properties"]):
                self.erp.create_proposal(rid, reporter.public_key, "REPORTER", missing)
            agent.answer_proposal(rid, reporter.public_key, "REPORTER", "ACCEPT")
        scope = tuple(sorted(set(reporter.properties) | set(wanted)))
        self.store.save_reporter(Reporter(rid, reporter.address, reporter.public_key, scope))
        sealed = seal_reporter_token(request.header.auth, self.store.issue_reporter(rid))
        return {"data": {"token": sealed, "publicKey": reporter.public_key,
                         "record_id": rid, "properties": list(scope)}}

    def _grant_send(self, address: str) -> None:
        held = self.erp.client.call("listpermissions", "send", address)
        if not held:
            try:
                self.erp.client.call("grant", address, "send")
            except rpc_errors() as exc:
                raise Refused(f"cannot grant send permission to reporter address {address} "
                              f"({exc}); an administrator must grant it", UNAVAILABLE) from None

    def _authorised(self, rid: str, name: str, public_key: str) -> bool:
        prop = self.erp.current("properties", (rid, name))
        return prop is not None and any(r["public_key"] == public_key and r["authorized"]
                                        for r in prop["reporters"])

    def _reporter_erp(self, reporter: Reporter) -> Erp:
        agent = self._reporter_erps.get(reporter.address)
        if agent is None:
            agent = Erp(self.erp.engine, self.erp.client, stream=self.erp.stream,
                        address=reporter.address, public_key=reporter.public_key,
                        clock=self.erp.clock, address_of=self.erp.address_of)
            self._reporter_erps[reporter.address] = agent
        return agent

    def _update_properties(self, token: Token, request: m.Request, retry: bool) -> Outcome:
        body = _body(request)
        rid, props = body["record_id"], body["properties"]
        if token.kind != REPORTER:
            raise Refused("update_properties takes the record's reporter token", UNAUTHORIZED)
        reporter = self.store.reporter(rid) if token.record_id == rid else None
        if reporter is None:
            raise Refused(f"this token does not report on record {rid!r}", UNAUTHORIZED)
        outside = [p["name"] for p in props if p["name"] not in reporter.properties]
        if outside:
            raise Refused(f"this token is not authorised for property {outside[0]!r} of {rid}",
                          UNAUTHORIZED)
        values = {p["name"]: p["value"] for p in props}
        with self.erp.view() as state:  # one read of the state for all the checks here
            record = state.get("records", (rid,))
            if record is None:
                raise Refused(f"record {rid!r} does not exist", REFUSED)
            types = {p["name"]: p["data_type"] for p in
                     (state.get("record_types", (record["record_type"],)) or {})
                     .get("properties", [])}
            for p in props:
                if types.get(p["name"]) != p["data_type"]:
                    raise Refused(f"property {p['name']} is {types.get(p['name'])}, not "
                                  f"{p['data_type']}", REFUSED)
            if retry and _reported(state, rid, reporter.public_key, values):
                return {"message": f"record {rid} updated (by an earlier delivery)"}
        agent = self._reporter_erp(reporter)
        action = agent.new_action("UPDATE_PROPERTIES", record_id=rid, properties=[
            {"name": p["name"], "data_type": p["data_type"], "value": p["value"]} for p in props])
        return {"message": f"record {rid} updated (txid {agent.publish(action, rid)})"}

    def _create_static_records(self, token: Token, request: m.Request, retry: bool) -> Outcome:
        """All records in one transaction (atomic: all or none reach the chain), then their
        finalization in a second one: a chain's limit of items per transaction
        (max-std-op-returns-count, 32 by default) holds the 28 records of a day report but
        not 28 more finalizations."""
        _master(token)
        body = _body(request)
        records = body["records"]
        limit = self._items_per_tx()
        if len(records) > limit:
            raise Refused(f"{len(records)} records do not fit in one transaction on this chain "
                          f"(max-std-op-returns-count {limit})", REFUSED)
        creates: list[tuple[dict[str, Any], str]] = []
        for record in records:
            rtype = self.erp.current("record_types", (record["record_type"],))
            if rtype is None:
                raise Refused(f"record type {record['record_type']!r} does not exist", REFUSED)
            types = {p["name"]: p["data_type"] for p in rtype["properties"]}
            props = []
            for name, value in record["properties"].items():
                if name not in types:
                    raise Refused(f"record type {record['record_type']} has no property "
                                  f"{name!r}", REFUSED)
                if types[name] == "FLOAT" and isinstance(value, int):
                    value = float(value)
                props.append({"name": name, "data_type": types[name], "value": value})
            creates.append((self.erp.new_action("CREATE_RECORD", record_id=record["record_id"],
                                                record_type=record["record_type"],
                                                properties=props), record["record_id"]))
        existing = [e for e in (self._record_state(r["record_id"]) for r in records)
                    if e is not None]
        if existing:
            # Records of an interrupted earlier batch (ours, same values, not final yet) are
            # finalized now, so the static data ends up final either way.
            mine = {rid for _, rid in creates}
            wanted = {action["record_id"]: action for action, _ in creates}
            unfinished = [e["record_id"] for e in existing
                          if not e["final"] and e["record_id"] in mine
                          and self._is_own(e["record_id"])
                          and _same(e["properties"], wanted[e["record_id"]]["properties"])]
            finals = self._finalize(unfinished)
            for e in existing:
                if e["record_id"] in unfinished:
                    e["final"] = True
            if retry and len(existing) == len(records) and all(
                    _same(e["properties"], wanted[e["record_id"]]["properties"])
                    for e in existing):
                return {"data": {"flow_id": body["flow_id"],
                                 "txids": list(dict.fromkeys(self._record_txids(
                                     [r["record_id"] for r in records]) + finals)),
                                 "records": [r["record_id"] for r in records]}}
            raise Refused(f"{len(existing)} of {len(records)} records already exist; nothing "
                          "new was published", EXISTS, {"existing": existing})
        created = self.erp.publish_batch(creates)
        finals = self._finalize([rid for _, rid in creates])
        return {"data": {"flow_id": body["flow_id"], "txids": [created, *finals],
                         "records": [r["record_id"] for r in records]}}

    def _items_per_tx(self) -> int:
        params = self.erp.client.call("getblockchainparams")
        value = params.get("max-std-op-returns-count") if isinstance(params, dict) else None
        return int(value) if isinstance(value, int) and value > 0 else 10

    def _finalize(self, record_ids: list[str]) -> list[str]:
        """FINALIZE_RECORD for each, as few transactions as the chain allows; the txids."""
        if not record_ids:
            return []
        size = self._items_per_tx()
        return [self.erp.publish_batch([(self.erp.new_action("FINALIZE_RECORD", record_id=rid),
                                         rid) for rid in record_ids[i:i + size]])
                for i in range(0, len(record_ids), size)]

    def _is_own(self, rid: str) -> bool:
        record = self.erp.current("records", (rid,))
        me = self.erp.public_key
        return (record is not None and record["owners"][-1]["agent_id"] == me
                and record["custodians"][-1]["agent_id"] == me)

    def _record_txids(self, record_ids: list[str]) -> list[str]:
        """The transactions that created and finalized these records (projected ones)."""
        txids: list[str] = []
        for rid in record_ids:
            for entry in reversed(self.erp.show("record", rid)["history"]):
                if entry["action"] in ("CREATE_RECORD", "FINALIZE_RECORD") and \
                        entry["status"] == "applied" and entry["txid"] not in txids:
                    txids.append(entry["txid"])
        return txids

    def _record_state(self, rid: str) -> dict[str, Any] | None:
        """An existing record with the newest value of each property, or None."""
        record = self.erp.current("records", (rid,))
        if record is None:
            return None
        rtype = self.erp.current("record_types", (record["record_type"],)) or {"properties": []}
        values: dict[str, Any] = {}
        for schema_entry in rtype["properties"]:
            prop = self.erp.current("properties", (rid, schema_entry["name"]))
            if prop is not None and prop["count"] > 0:
                last = self.erp.current("property_values", (rid, prop["name"], prop["count"] - 1))
                if last is not None:
                    values[prop["name"]] = last["value"]
        return {"record_id": rid, "record_type": record["record_type"],
                "final": bool(record["final"]), "properties": values}


def _reported(state: rules.State, rid: str, public_key: str, values: dict[str, Any]) -> bool:
    """Whether the newest value of each property is this one, from this reporter."""
    for name, value in values.items():
        prop = state.get("properties", (rid, name))
        if prop is None or prop["count"] == 0:
            return False
        last = state.get("property_values", (rid, name, prop["count"] - 1))
        index = next((r["index"] for r in prop["reporters"] if r["public_key"] == public_key),
                     None)
        if last is None or last["reporter_index"] != index or last["value"] != value:
            return False
    return True


def _body(request: m.Request) -> dict[str, Any]:
    """Element 1 of a command (the parser guarantees one for these topics)."""
    if request.body is None:
        raise Refused(f"{request.topic} needs element 1", m.INVALID_PARAMETER)
    return request.body


def _master(token: Token) -> None:
    if token.kind != MASTER:
        raise Refused("this request takes the Master token", UNAUTHORIZED)


def _same(held: dict[str, Any], wanted: list[dict[str, Any]]) -> bool:
    """Whether a record's values are the ones of a CREATE_RECORD's property list."""
    return held == {p["name"]: p["value"] for p in wanted}


def _schema(props: list[dict[str, Any]]) -> list[tuple[str, str, bool]]:
    return sorted((p["name"], p["data_type"], bool(p.get("required", False))) for p in props)


_HANDLERS: dict[str, Callable[[Executor, Token, m.Request, bool], Outcome]] = {
    "list_partner_requests": Executor._list,
    "list_actions": Executor._list,
    "answer_partner_request": Executor._answer,
    "answer_action": Executor._answer,
    "ensure_record_type": Executor._ensure_record_type,
    "ensure_reporter": Executor._ensure_reporter,
    "update_properties": Executor._update_properties,
    "create_static_records": Executor._create_static_records,
}
