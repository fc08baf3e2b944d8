"""The Python API of the ERP adapter: publish business actions, list, answer, show.

    erp = Erp(engine, RpcClient.from_datadir("trade"))      # the node's first address acts
    erp.init(agent_name="ACME ERP")                          # tables, stream, own agent
    erp.follow()                                             # bring the projection up to date
    made = erp.create_partner_request(mes_public_key)        # {"partner_request_id", "txid"}
    erp.list_partner_requests(start=0, limit=10)             # spec 2.4 shapes, newest first

Every create/answer call first runs the same rules the projection runs, against the
projection plus this database's own published-but-not-yet-final actions (`erp_pending`),
and raises ActionRefused with the reason when they refuse: nothing is published then. An
action goes out with `publishfrom` from the acting agent's own address, keyed by the object
it concerns. The projection still decides, because another company's software may publish
anything; `wait(txid)` follows until the action is projected and returns its verdict.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection, Engine

from erp import rules, schema
from erp.addresses import chain_address_function
from erp.errors import ActionRefused, ErpError, NotFound
from erp.follower import Follower
from erp.projection import Projection, SqlState, canonical
from erp.settings import DEFAULT_STREAM
from triggers.nodes import NodeClient, rpc_error_code, rpc_errors

__all__ = ["Erp", "DEFAULT_STREAM", "MAX_LIMIT", "PENDING_TTL"]

log = logging.getLogger(__name__)

MAX_LIMIT = 100
PENDING_TTL = 3600
"""Seconds an own action counts as pending in the pre-publish check if it never shows up."""
_NO_TXID = "0" * 64

_KINDS = {
    "agent": "agents", "record_type": "record_types", "record": "records",
    "partner_request": "partner_requests", "action_request": "action_requests",
    "order": "action_requests", "action": "action_requests",
}


class Erp:
    """One agent's view of the supply-chain ledger on one chain, through one node."""

    def __init__(self, engine: Engine, client: NodeClient, *, stream: str = DEFAULT_STREAM,
                 address: str | None = None, public_key: str | None = None,
                 clock: Callable[[], float] = time.time,
                 address_of: Callable[[str], str] | None = None, batch_size: int = 500) -> None:
        self.engine = engine
        self.client = client
        self.stream = stream
        self.clock = clock
        self._address = address
        self._public_key = public_key  # known: validateaddress is skipped
        self.address_of = address_of or chain_address_function(client)
        self.projection = Projection(engine, stream, self.address_of)
        self.follower = Follower(self.projection, client, batch_size)

    # -- identity -------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The acting agent's address (default: the node's first wallet address)."""
        if self._address is None:
            addresses = self.client.call("getaddresses")
            if not addresses:
                raise ErpError("the node's wallet has no address to act from")
            self._address = str(addresses[0])
        return self._address

    @property
    def public_key(self) -> str:
        """The acting agent's public key: its address's compressed key (validateaddress)."""
        if self._public_key is None:
            info = self.client.call("validateaddress", self.address)
            key = info.get("pubkey") if isinstance(info, dict) else None
            if not info.get("ismine") or not rules.is_public_key(key):
                raise ErpError(f"{self.address} is not an address of this node's wallet")
            self._public_key = str(key)
        return self._public_key

    # -- set-up and following -------------------------------------------------------------

    def init(self, agent_name: str | None = None) -> str | None:
        """Create the tables, the stream (open for writers with send permission) if missing,
        subscribe, and publish this agent if it is not registered; the txid or None."""
        self.projection.create()
        names = {s.get("name") for s in self.client.call("liststreams") or []}
        if self.stream not in names:
            try:
                txid = self.client.call("create", "stream", self.stream, True)
            except rpc_errors() as exc:
                if rpc_error_code(exc) is None:
                    raise
                raise ErpError(
                    f"stream {self.stream} is not on this node yet and the node cannot create "
                    f"it ({exc}): create it from a node with create permission (its "
                    "`chainmill erp init`), then run init here once it has arrived") from None
            log.info("created stream %s (%s)", self.stream, txid)
        self.client.call("subscribe", self.stream)
        if agent_name is None:
            return None
        if self.row("agents", (self.public_key,)) is not None or self._pending_of(
                "CREATE_AGENT", self.public_key):
            return None
        return self.create_agent(agent_name)["txid"]

    def follow(self) -> int:
        """Apply every item that is final now; how many were applied or rejected."""
        return self.follower.follow_once()

    def follow_forever(self, stop: threading.Event, interval: float = 0.2) -> None:
        """Keep the projection current until `stop` is set."""
        self.follower.follow_forever(stop, interval)

    def wait(self, txid: str, timeout: float = 60, interval: float = 0.1) -> dict[str, Any]:
        """Follow until the items of `txid` are projected; {"status", "reason"} of the first."""
        deadline = time.monotonic() + timeout
        stop = threading.Event()
        while True:
            self.follow()
            with self.engine.connect() as conn:
                row = conn.execute(select(schema.actions.c.status, schema.actions.c.reason)
                                   .where(schema.actions.c.txid == txid)
                                   .order_by(schema.actions.c.vout)).first()
            if row is not None:
                return {"txid": txid, "status": row.status, "reason": row.reason}
            if time.monotonic() > deadline:
                raise ErpError(f"{txid} was not projected within {timeout:g} s")
            stop.wait(interval)

    def digest(self) -> dict[str, Any]:
        """The projection's state digest and the chain position it describes."""
        position, order = self.projection.cursor()
        return {"digest": self.projection.digest(), "items": position, "height": order[0]}

    # -- publishing -----------------------------------------------------------------------

    def _now(self) -> int:
        return int(self.clock())

    def new_action(self, kind: str, **body: Any) -> dict[str, Any]:
        """An action of `kind` signed by this agent and dated now (for `publish_batch`)."""
        return self._action(kind, **body)

    def _action(self, kind: str, **body: Any) -> dict[str, Any]:
        return {"erp": 1, "action": kind, "signer": self.public_key, "timestamp": self._now(),
                **body}

    def _overlay(self, conn: Connection) -> rules.MemoryState:
        """The projection plus own pending actions, in the order they were published."""
        state = rules.MemoryState(SqlState(conn))
        done = select(schema.actions.c.txid).where(schema.actions.c.txid == schema.pending.c.txid)
        conn.execute(delete(schema.pending).where(done.exists()))
        conn.execute(delete(schema.pending).where(
            schema.pending.c.created < self._now() - PENDING_TTL))
        waiting = []
        for row in conn.execute(select(schema.pending).order_by(schema.pending.c.created,
                                                                 schema.pending.c.txid)):
            ctx = rules.Context(publisher=row.publisher, txid=row.txid,
                                blocktime=self._now(), address_of=self.address_of)
            waiting.extend((action, ctx) for action in _bodies(row.body))
        # `created` has whole seconds, so actions published within one second come in txid
        # order, not in the order they were sent: an action refused now is tried again
        # after the others (a proposal to an agent created in the same second). What is
        # still refused when nothing more applies, the projection will reject; it changes
        # nothing meanwhile.
        progress = True
        while waiting and progress:
            progress = False
            refused = []
            for action, ctx in waiting:
                try:
                    state.apply(rules.decide(state, action, ctx))
                    progress = True
                except ActionRefused:
                    refused.append((action, ctx))
            waiting = refused
        return state

    def check(self, action: dict[str, Any]) -> None:
        """Raise ActionRefused if the rules refuse `action` now (nothing is published)."""
        with self.engine.begin() as conn:
            state = self._overlay(conn)
            rules.decide(state, action, rules.Context(
                publisher=self.address, txid=_NO_TXID, blocktime=self._now(),
                address_of=self.address_of))

    def publish(self, action: dict[str, Any], key: str) -> str:
        """Check, then publish `action` from this agent's address under `key`; the txid."""
        try:
            raw = canonical(action).encode()
        except TypeError as exc:  # e.g. an integer beyond 64 bits in metadata
            raise ActionRefused(f"the action is not JSON the projection can read: {exc}") from None
        self.check(action)
        if len(raw) > rules.MAX_ACTION_BYTES:
            raise ActionRefused(f"the action is {len(raw)} bytes, more than "
                                f"{rules.MAX_ACTION_BYTES}")
        txid = str(self.client.call("publishfrom", self.address, self.stream, key,
                                    {"json": action}))
        with self.engine.begin() as conn:
            conn.execute(insert(schema.pending).values(
                txid=txid, created=self._now(), publisher=self.address, body=raw.decode()))
        log.info("published %s for %s: %s", action["action"], key, txid)
        return txid

    def publish_batch(self, actions: list[tuple[dict[str, Any], str]]) -> str:
        """Check `actions` in order (each sees the ones before it), then publish them all
        as the items of one transaction (publishmultifrom): they reach the chain together
        or not at all. Each entry is (action, key); the txid."""
        if not actions:
            raise ActionRefused("a batch needs at least one action")
        raws = []
        for action, _key in actions:
            try:
                raw = canonical(action).encode()
            except TypeError as exc:
                raise ActionRefused(f"the action is not JSON the projection can read: {exc}") \
                    from None
            if len(raw) > rules.MAX_ACTION_BYTES:
                raise ActionRefused(f"the action is {len(raw)} bytes, more than "
                                    f"{rules.MAX_ACTION_BYTES}")
            raws.append(raw.decode())
        with self.engine.begin() as conn:
            state = self._overlay(conn)
            ctx = rules.Context(publisher=self.address, txid=_NO_TXID, blocktime=self._now(),
                                address_of=self.address_of)
            for action, _key in actions:
                state.apply(rules.decide(state, action, ctx))
        items = [{"key": key, "data": {"json": action}} for action, key in actions]
        txid = str(self.client.call("publishmultifrom", self.address, self.stream, items))
        with self.engine.begin() as conn:
            conn.execute(insert(schema.pending).values(
                txid=txid, created=self._now(), publisher=self.address,
                body="[" + ",".join(raws) + "]"))
        log.info("published %d actions in one transaction: %s", len(actions), txid)
        return txid

    def _pending_of(self, kind: str, signer: str) -> bool:
        with self.engine.begin() as conn:
            self._overlay(conn)  # drops what is projected or expired
            bodies = conn.execute(select(schema.pending.c.body)).scalars()
            return any(a.get("action") == kind and a.get("signer") == signer
                       for b in bodies for a in _bodies(b))

    # -- agents, record types, records, proposals -----------------------------------------

    def create_agent(self, name: str) -> dict[str, str]:
        """Register this address's public key as an agent named `name`."""
        action = self._action("CREATE_AGENT", name=name)
        return {"public_key": self.public_key, "txid": self.publish(action, self.public_key)}

    def create_record_type(self, name: str, properties: list[dict[str, Any]]) -> dict[str, str]:
        """A record type; properties are {name, data_type, required}."""
        props = [{"name": p.get("name"), "data_type": p.get("data_type"),
                  "required": p.get("required", False)} for p in properties]
        action = self._action("CREATE_RECORD_TYPE", name=name, properties=props)
        return {"name": name, "txid": self.publish(action, name)}

    @contextmanager
    def view(self) -> Iterator[rules.MemoryState]:
        """The state the pre-publish check sees (projection plus own pending actions), for
        several reads in one transaction: `current` builds it anew for each row."""
        with self.engine.begin() as conn:
            yield self._overlay(conn)

    def current(self, table: str, key: tuple) -> dict[str, Any] | None:
        """A row as the pre-publish check sees it: projection plus own pending actions."""
        with self.engine.begin() as conn:
            return self._overlay(conn).get(table, key)

    def _typed(self, record_type: str, values: dict[str, Any]) -> list[dict[str, Any]]:
        rtype = self.current("record_types", (record_type,))
        if rtype is None:
            raise ActionRefused(f"record type {record_type!r} does not exist")
        types = {p["name"]: p["data_type"] for p in rtype["properties"]}
        return [{"name": n, "data_type": types.get(n, "STRING"), "value": v}
                for n, v in values.items()]

    def create_record(self, record_id: str, record_type: str,
                      values: dict[str, Any]) -> dict[str, str]:
        """A record of `record_type` with initial property values {name: value}."""
        action = self._action("CREATE_RECORD", record_id=record_id, record_type=record_type,
                              properties=self._typed(record_type, values))
        return {"record_id": record_id, "txid": self.publish(action, record_id)}

    def _record_type_of(self, record_id: str) -> str:
        record = self.current("records", (record_id,))
        if record is None:
            raise ActionRefused(f"record {record_id!r} does not exist")
        return str(record["record_type"])

    def update_properties(self, record_id: str, values: dict[str, Any]) -> dict[str, str]:
        """Report new values {name: value} for properties of a record."""
        props = self._typed(self._record_type_of(record_id), values)
        action = self._action("UPDATE_PROPERTIES", record_id=record_id, properties=props)
        return {"record_id": record_id, "txid": self.publish(action, record_id)}

    def finalize_record(self, record_id: str) -> dict[str, str]:
        """Make a record final (owner and custodian only)."""
        action = self._action("FINALIZE_RECORD", record_id=record_id)
        return {"record_id": record_id, "txid": self.publish(action, record_id)}

    def create_proposal(self, record_id: str, receiving_agent: str, role: str,
                        properties: list[str] | None = None, terms: str = "") -> dict[str, str]:
        """Offer `role` (OWNER, CUSTODIAN, REPORTER) on a record to another agent."""
        action = self._action("CREATE_PROPOSAL", record_id=record_id,
                              receiving_agent=receiving_agent, role=role,
                              properties=list(properties or []), terms=terms)
        return {"record_id": record_id, "txid": self.publish(action, record_id)}

    def answer_proposal(self, record_id: str, receiving_agent: str, role: str,
                        response: str) -> dict[str, str]:
        """ACCEPT or REJECT (as the receiving agent) or CANCEL (as the issuer) a proposal."""
        action = self._action("ANSWER_PROPOSAL", record_id=record_id,
                              receiving_agent=receiving_agent, role=role, response=response)
        return {"record_id": record_id, "txid": self.publish(action, record_id)}

    def revoke_reporter(self, record_id: str, reporter_id: str,
                        properties: list[str]) -> dict[str, str]:
        """Withdraw a reporter's authorisation for properties of a record (owner only)."""
        action = self._action("REVOKE_REPORTER", record_id=record_id, reporter_id=reporter_id,
                              properties=list(properties))
        return {"record_id": record_id, "txid": self.publish(action, record_id)}

    # -- partner and action requests ------------------------------------------------------

    def create_partner_request(self, receiving_agent: str) -> dict[str, str]:
        """Ask `receiving_agent` for a partnership; the new partner_request_id and txid."""
        rid = secrets.token_hex(16)
        action = self._action("CREATE_PARTNER_REQUEST", partner_request_id=rid,
                              receiving_agent=receiving_agent)
        return {"partner_request_id": rid, "txid": self.publish(action, rid)}

    def create_action(self, receiving_agent: str, type: str, description: str = "",
                      metadata: dict[str, Any] | None = None,
                      files: list[dict[str, Any]] | None = None) -> dict[str, str]:
        """Send an action (order) request to a partner; the new abs_action_id and txid."""
        rid = secrets.token_hex(16)
        action = self._action("CREATE_ACTION", abs_action_id=rid, receiving_agent=receiving_agent,
                              type=type, description=description,
                              metadata={} if metadata is None else metadata,
                              files=list(files or []))
        return {"abs_action_id": rid, "txid": self.publish(action, rid)}

    def list_partner_requests(self, start: int = 0, limit: int = 10, *,
                              issued: bool = False) -> list[dict[str, Any]]:
        """Partner requests received by this agent (or issued, with issued=True), newest
        first by timestamp, ties by id; spec 2.2 fields."""
        return self._list("partner_requests", "partner_request_id", start, limit, issued)

    def list_actions(self, start: int = 0, limit: int = 10, *,
                     issued: bool = False) -> list[dict[str, Any]]:
        """Action requests received by this agent (or issued), as list_partner_requests."""
        return self._list("action_requests", "abs_action_id", start, limit, issued)

    def _list(self, table: str, id_column: str, start: int, limit: int,
              issued: bool) -> list[dict[str, Any]]:
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ErpError("start must be an integer of at least 0")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ErpError(f"limit must be an integer between 1 and {MAX_LIMIT}")
        t = schema.STATE[table]
        agent_column = t.c.issuing_agent if issued else t.c.receiving_agent
        query = (select(t.c.body).where(agent_column == self.public_key)
                 .order_by(t.c.timestamp.desc(), t.c[id_column]).offset(start).limit(limit))
        with self.engine.connect() as conn:
            return [json.loads(b) for b in conn.execute(query).scalars()]

    def answer_partner_request(self, ident: str, response: int) -> dict[str, str]:
        """Answer a partner request addressed to this agent: 1 accepts, 0 rejects. `ident` is
        the request id, or the issuing agent's public key when exactly one OPEN request
        from that agent is waiting."""
        rid = self._request_id(ident)
        action = self._action("ANSWER_PARTNER_REQUEST", partner_request_id=rid,
                              response=_response(response))
        return {"partner_request_id": rid, "txid": self.publish(action, rid)}

    def answer_action(self, ident: str, response: int) -> dict[str, str]:
        """Answer an action request addressed to this agent: 1 accepts, 0 rejects."""
        action = self._action("ANSWER_ACTION", abs_action_id=ident, response=_response(response))
        return {"abs_action_id": ident, "txid": self.publish(action, ident)}

    def _request_id(self, ident: str) -> str:
        if not rules.is_public_key(ident):
            return ident
        t = schema.STATE["partner_requests"]
        with self.engine.connect() as conn:
            found = list(conn.execute(select(t.c.partner_request_id).where(
                t.c.issuing_agent == ident, t.c.receiving_agent == self.public_key,
                t.c.status == "OPEN")).scalars())
        if len(found) != 1:
            raise ActionRefused(f"{len(found)} open partner requests from {ident} to this "
                                "agent; answer by partner_request_id")
        return str(found[0])

    # -- reading --------------------------------------------------------------------------

    def row(self, table: str, key: tuple) -> dict[str, Any] | None:
        """One projected row of an erp.rules state table, or None."""
        with self.engine.connect() as conn:
            return SqlState(conn).get(table, key)

    def show(self, kind: str, ident: str) -> dict[str, Any]:
        """An object (agent, record_type, record, partner_request, action_request) with its
        history: every projected action that concerned it, newest first, with txids."""
        table = _KINDS.get(kind)
        if table is None:
            raise ErpError(f"unknown kind {kind!r} (one of {', '.join(sorted(_KINDS))})")
        with self.engine.connect() as conn:
            state = SqlState(conn)
            body = state.get(table, (ident,))
            if body is None:
                raise NotFound(f"no {kind} {ident!r}")
            out: dict[str, Any] = {kind: body}
            if table == "records":
                out["properties"] = self._properties(conn, state, body)
                p = schema.STATE["proposals"]
                out["proposals"] = [json.loads(b) for b in conn.execute(
                    select(p.c.body).where(p.c.record_id == ident)).scalars()]
            name = "action_request" if table == "action_requests" else kind
            a = schema.actions
            out["history"] = [
                {"txid": r.txid, "vout": r.vout, "height": r.height, "blocktime": r.blocktime,
                 "action": r.kind, "signer": r.signer, "status": r.status, "reason": r.reason,
                 "timestamp": json.loads(r.body).get("timestamp") if r.body else None}
                for r in conn.execute(select(a).where(a.c.object_key == rules.object_key(
                    name, ident)).order_by(a.c.seq.desc()).limit(1000))
            ]
        return out

    def _properties(self, conn: Connection, state: SqlState,
                    record: dict[str, Any]) -> list[dict[str, Any]]:
        rtype = state.get("record_types", (record["record_type"],)) or {"properties": []}
        v = schema.STATE["property_values"]
        out = []
        for schema_entry in rtype["properties"]:
            prop = state.get("properties", (record["record_id"], schema_entry["name"]))
            if prop is None:
                continue
            values = [json.loads(b) for b in conn.execute(
                select(v.c.body).where(v.c.record_id == record["record_id"],
                                       v.c.name == schema_entry["name"])
                .order_by(v.c.seq.desc()).limit(256)).scalars()]
            out.append({"name": prop["name"], "data_type": prop["data_type"],
                        "reporters": prop["reporters"], "values": values})
        return out


def _response(value: Any) -> int:
    if isinstance(value, str) and value in ("0", "1"):
        return int(value)
    if isinstance(value, bool) or value not in (0, 1):
        raise ActionRefused("response must be 1 (accept) or 0 (reject)")
    return int(value)


def _bodies(text: str) -> list[dict[str, Any]]:
    """The actions of an erp_pending row: one object, or a list for a batch transaction."""
    value = json.loads(text)
    return value if isinstance(value, list) else [value]
