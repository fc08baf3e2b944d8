"""The validity rules of spec 2.1-2.3 as pure functions: (state, action, publisher) -> changes.

An action is one decoded JSON stream item (see `parse_action`). `decide` checks it against a
read-only view of the projection state and returns the rows it changes, or raises
ActionRefused with the reason; it never does I/O, so the projection, the pre-publish check
and the tests all run exactly the same rules. Every rule is its own function named after
what it checks.

State is a set of tables of JSON-able rows, each row under a key tuple:

    agents            (public_key,)                    name, address, timestamp
    record_types      (name,)                          properties [{name, data_type, required}]
    records           (record_id,)                     record_type, owners, custodians, final
    properties        (record_id, name)                data_type, reporters, count
    property_values   (record_id, name, seq)           reporter_index, timestamp, value
    proposals         (record_id, receiving, role)     the latest proposal of that triple
    partnerships      (agent_a, agent_b) sorted        status, partner_request_id
    partner_requests  (partner_request_id,)            the spec 2.2 fields
    action_requests   (abs_action_id,)                 the spec 2.3 fields

Timestamps are Unix seconds chosen by the publisher; "dated in the future" is judged
against the block time of the block that carries the action (the same on every node), with
MAX_FUTURE_SECONDS of tolerance for clocks that differ between companies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from erp.errors import ActionRefused

__all__ = [
    "ACTIONS", "DATA_TYPES", "ROLES", "TABLES", "MAX_ACTION_BYTES", "MAX_FUTURE_SECONDS",
    "Context", "State", "MemoryState", "Outcome", "parse_action", "decide", "object_key",
    "is_public_key", "is_request_id",
]

MAX_ACTION_BYTES = 64 * 1024
"""Largest accepted stream item (JSON text); a larger one is rejected unread."""
MAX_FUTURE_SECONDS = 300
MAX_NAME = 128
MAX_PROPERTY_NAME = 64
MAX_TEXT = 4096
MAX_PROPERTIES = 100
MAX_INT = 2**63 - 1
MAX_FILE_BYTES = 40_000

ACTIONS = (
    "CREATE_AGENT", "CREATE_RECORD", "FINALIZE_RECORD", "CREATE_RECORD_TYPE",
    "UPDATE_PROPERTIES", "CREATE_PROPOSAL", "ANSWER_PROPOSAL", "REVOKE_REPORTER",
    "CREATE_PARTNER_REQUEST", "ANSWER_PARTNER_REQUEST", "CREATE_ACTION", "ANSWER_ACTION",
)
DATA_TYPES = ("BYTES", "STRING", "INT", "FLOAT", "LOCATION")
ROLES = ("OWNER", "CUSTODIAN", "REPORTER")
PROPOSAL_RESPONSES = ("ACCEPT", "REJECT", "CANCEL")
TABLES = (
    "agents", "record_types", "records", "properties", "property_values", "proposals",
    "partnerships", "partner_requests", "action_requests",
)

_HEX_KEY = re.compile(r"0[23][0-9a-f]{64}")
_REQUEST_ID = re.compile(r"[0-9a-f]{32}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")

Key = tuple[Any, ...]
Row = dict[str, Any]


class State(Protocol):
    """Read access to the projection state: one row by table and key, or None."""

    def get(self, table: str, key: Key) -> Row | None: ...


@dataclass(frozen=True, slots=True)
class Context:
    """What the chain says about an item, the same on every node."""

    publisher: str
    """The address that signed the transaction carrying the item."""
    txid: str
    blocktime: int
    """Time of the block holding the item (the "now" of the future-timestamp rule)."""
    address_of: Callable[[str], str]
    """Address of a compressed public key (66 hex) on this chain."""


@dataclass(slots=True)
class Outcome:
    """The rows an accepted action writes, and the objects it concerns (for history)."""

    changes: dict[tuple[str, Key], Row] = field(default_factory=dict)
    objects: list[str] = field(default_factory=list)


class MemoryState:
    """A State in a dict: tests, and the overlay of not-yet-final own actions."""

    def __init__(self, base: State | None = None) -> None:
        self.base = base
        self.rows: dict[tuple[str, Key], Row] = {}

    def get(self, table: str, key: Key) -> Row | None:
        row = self.rows.get((table, key))
        if row is None and self.base is not None:
            row = self.base.get(table, key)
        return row

    def apply(self, outcome: Outcome) -> None:
        self.rows.update(outcome.changes)


class _Overlay:
    """Reads see the action's own earlier writes; writes are collected in an Outcome."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.outcome = Outcome()

    def get(self, table: str, key: Key) -> Row | None:
        row = self.outcome.changes.get((table, key))
        if row is None:
            row = self.state.get(table, key)
        return orjson.loads(orjson.dumps(row)) if row is not None else None  # a private copy

    def put(self, table: str, key: Key, row: Row) -> None:
        self.outcome.changes[(table, key)] = row


# -- decoding -------------------------------------------------------------------------------


def parse_action(raw: bytes) -> Row:
    """The action object of an item's bytes: size, JSON, envelope fields checked."""
    if len(raw) > MAX_ACTION_BYTES:
        raise ActionRefused(f"item of {len(raw)} bytes exceeds the {MAX_ACTION_BYTES}-byte limit")
    try:
        # orjson refuses invalid UTF-8, lone surrogates (which no database could store),
        # NaN and Infinity, and nesting deeper than 1024; integers beyond 64 bits become floats.
        action = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ActionRefused(f"item is not a JSON document: {exc}") from None
    if not isinstance(action, dict):
        raise ActionRefused("item is not a JSON object")
    if action.get("erp") != 1:
        raise ActionRefused("not an erp action (field erp must be 1)")
    kind = action.get("action")
    if kind not in ACTIONS:
        raise ActionRefused(f"unknown action {kind!r}")
    if not is_public_key(action.get("signer")):
        raise ActionRefused("signer must be a compressed public key (66 lower-case hex)")
    _int(action.get("timestamp"), "timestamp", 0)
    return action


def is_public_key(value: Any) -> bool:
    """A compressed secp256k1 public key as 66 lower-case hex."""
    return isinstance(value, str) and _HEX_KEY.fullmatch(value) is not None


def is_request_id(value: Any) -> bool:
    """A request id: 32 lower-case hex (128 random bits)."""
    return isinstance(value, str) and _REQUEST_ID.fullmatch(value) is not None


def object_key(kind: str, ident: str) -> str:
    """The history key of an object, e.g. `record:SN-1`, `partner_request:9df8...`."""
    return f"{kind}:{ident}"


# -- the entry point ------------------------------------------------------------------------


def decide(state: State, action: Row, ctx: Context) -> Outcome:
    """The changes `action` (from parse_action) makes, or ActionRefused with the reason."""
    view = _Overlay(state)
    check_timestamp_not_in_future(action["timestamp"], ctx.blocktime)
    kind = action["action"]
    if kind == "CREATE_AGENT":
        create_agent(view, action, ctx)
    else:
        check_signer_is_agent(view, action["signer"], ctx.publisher)
        _HANDLERS[kind](view, action, ctx)
    return view.outcome


# -- common rules ---------------------------------------------------------------------------


def check_timestamp_not_in_future(timestamp: int, blocktime: int) -> None:
    """A transaction dated in the future (beyond the tolerance) is invalid."""
    if timestamp > blocktime + MAX_FUTURE_SECONDS:
        raise ActionRefused(f"timestamp {timestamp} is in the future (block time {blocktime})")


def check_signer_is_agent(view: State, signer: str, publisher: str) -> Row:
    """The signer must be a registered agent, and the item published from its address."""
    agent = view.get("agents", (signer,))
    if agent is None:
        raise ActionRefused(f"signer {signer} is not a registered agent")
    if agent["address"] != publisher:
        raise ActionRefused(
            f"published by {publisher}, which is not the address of agent {signer}")
    return agent


def _agent(view: State, public_key: Any, what: str) -> Row:
    if not is_public_key(public_key):
        raise ActionRefused(f"{what} must be a compressed public key (66 lower-case hex)")
    agent = view.get("agents", (public_key,))
    if agent is None:
        raise ActionRefused(f"{what} {public_key} is not a registered agent")
    return agent


def _int(value: Any, what: str, low: int = -MAX_INT - 1, high: int = MAX_INT) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ActionRefused(f"{what} must be an integer between {low} and {high}")
    return value


def _text(value: Any, what: str, limit: int = MAX_NAME, *, empty: bool = False) -> str:
    """A string of at most `limit` characters; names (short limits) allow no control
    characters, free text (MAX_TEXT) allows newlines and tabs."""
    if not isinstance(value, str):
        raise ActionRefused(f"{what} must be a string")
    if not empty and not value.strip():
        raise ActionRefused(f"{what} must not be empty")
    if len(value) > limit:
        raise ActionRefused(f"{what} is longer than {limit} characters")
    allowed = "\n\t\r" if limit >= MAX_TEXT else ""
    if any(ord(c) < 32 and c not in allowed for c in value):
        raise ActionRefused(f"{what} contains control characters")
    return value


def _names(value: Any, what: str, *, empty: bool = False) -> list[str]:
    if not isinstance(value, list) or (not value and not empty) or len(value) > MAX_PROPERTIES:
        raise ActionRefused(f"{what} must be a list of 1 to {MAX_PROPERTIES} property names")
    names = [_text(n, f"{what} entry", MAX_PROPERTY_NAME) for n in value]
    if len(set(names)) != len(names):
        raise ActionRefused(f"{what} names a property twice")
    return names


def _body(action: Row, *names: str) -> None:
    extra = set(action) - {"erp", "action", "signer", "timestamp", *names}
    if extra:
        raise ActionRefused(f"unexpected field(s) {', '.join(sorted(extra))}")


# -- agents and record types ----------------------------------------------------------------


def create_agent(view: _Overlay, action: Row, ctx: Context) -> None:
    """CREATE_AGENT: a new public key, published from that key's own address."""
    _body(action, "name")
    signer = action["signer"]
    name = _text(action.get("name"), "agent name")
    if view.get("agents", (signer,)) is not None:
        raise ActionRefused(f"agent {signer} already exists")
    address = ctx.address_of(signer)
    if address != ctx.publisher:
        raise ActionRefused(
            f"published by {ctx.publisher}, which is not the address of public key {signer}")
    view.put("agents", (signer,), {"public_key": signer, "name": name, "address": address,
                                   "timestamp": action["timestamp"]})
    view.outcome.objects.append(object_key("agent", signer))


def create_record_type(view: _Overlay, action: Row, ctx: Context) -> None:
    """CREATE_RECORD_TYPE: a unique name and a non-empty list of valid property schemas."""
    _body(action, "name", "properties")
    name = _text(action.get("name"), "record type name")
    schemas = action.get("properties")
    if not isinstance(schemas, list) or not schemas:
        raise ActionRefused("a record type needs at least one property")
    if len(schemas) > MAX_PROPERTIES:
        raise ActionRefused(f"a record type has at most {MAX_PROPERTIES} properties")
    clean = []
    for schema in schemas:
        if not isinstance(schema, dict) or set(schema) - {"name", "data_type", "required"}:
            raise ActionRefused("a property schema has exactly name, data_type, required")
        pname = _text(schema.get("name"), "property name", MAX_PROPERTY_NAME)
        data_type = schema.get("data_type")
        if data_type not in DATA_TYPES:
            raise ActionRefused(f"property {pname}: data_type must be one of {', '.join(DATA_TYPES)}")
        required = schema.get("required", False)
        if not isinstance(required, bool):
            raise ActionRefused(f"property {pname}: required must be true or false")
        clean.append({"name": pname, "data_type": data_type, "required": required})
    if len({s["name"] for s in clean}) != len(clean):
        raise ActionRefused("a record type names a property twice")
    if view.get("record_types", (name,)) is not None:
        raise ActionRefused(f"record type {name!r} already exists")
    view.put("record_types", (name,), {"name": name, "properties": clean,
                                       "creator": action["signer"],
                                       "timestamp": action["timestamp"]})
    view.outcome.objects.append(object_key("record_type", name))


# -- property values ------------------------------------------------------------------------


def check_value(value: Any, data_type: str) -> Any:
    """The canonical value of a property of `data_type`, or ActionRefused."""
    if data_type == "BYTES":
        if not isinstance(value, str) or len(value) % 2 or len(value) > 2 * MAX_TEXT:
            raise ActionRefused("a BYTES value is an even-length hex string")
        try:
            return bytes.fromhex(value).hex()
        except ValueError:
            raise ActionRefused("a BYTES value is an even-length hex string") from None
    if data_type == "STRING":
        return _text(value, "a STRING value", MAX_TEXT, empty=True)
    if data_type == "INT":
        return _int(value, "an INT value")
    if data_type == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ActionRefused("a FLOAT value is a finite number")
        return float(value)
    if data_type == "LOCATION":
        if not isinstance(value, dict) or set(value) != {"latitude", "longitude"}:
            raise ActionRefused("a LOCATION value is {latitude, longitude}")
        return {"latitude": _int(value["latitude"], "latitude", -90_000_000, 90_000_000),
                "longitude": _int(value["longitude"], "longitude", -180_000_000, 180_000_000)}
    raise ActionRefused(f"unknown data type {data_type!r}")  # pragma: no cover


def _values(entries: Any, schema: dict[str, str], what: str) -> list[tuple[str, Any]]:
    """[(name, canonical value)] of a `properties` list, each checked against its type."""
    if not isinstance(entries, list) or len(entries) > MAX_PROPERTIES:
        raise ActionRefused(f"{what} must be a list of at most {MAX_PROPERTIES} values")
    out: list[tuple[str, Any]] = []
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) != {"name", "data_type", "value"}:
            raise ActionRefused("a property value has exactly name, data_type, value")
        name = _text(entry["name"], "property name", MAX_PROPERTY_NAME)
        if name not in schema:
            raise ActionRefused(f"no property {name!r} in this record type")
        if entry["data_type"] != schema[name]:
            raise ActionRefused(
                f"property {name} is {schema[name]}, not {entry['data_type']!r}")
        try:
            out.append((name, check_value(entry["value"], schema[name])))
        except ActionRefused as exc:
            raise ActionRefused(f"property {name}: {exc.reason}") from None
    if len({n for n, _ in out}) != len(out):
        raise ActionRefused(f"{what} sets a property twice")
    return out


def _append_value(view: _Overlay, record_id: str, name: str, reporter_index: int,
                  timestamp: int, value: Any) -> None:
    prop = _property(view, record_id, name)
    seq = prop["count"]
    prop["count"] = seq + 1
    view.put("properties", (record_id, name), prop)
    view.put("property_values", (record_id, name, seq),
             {"reporter_index": reporter_index, "timestamp": timestamp, "value": value})


def _property(view: State, record_id: str, name: str) -> Row:
    prop = view.get("properties", (record_id, name))
    if prop is None:
        raise ActionRefused(f"record {record_id!r} has no property {name!r}")
    return prop


# -- records --------------------------------------------------------------------------------


def _record(view: State, record_id: Any, *, open_only: bool = True) -> Row:
    rid = _text(record_id, "record_id")
    record = view.get("records", (rid,))
    if record is None:
        raise ActionRefused(f"record {rid!r} does not exist")
    if open_only and record["final"]:
        raise ActionRefused(f"record {rid!r} is final")
    return record


def _holder(record: Row, role: str) -> str:
    """The current owner or custodian (the newest history entry)."""
    return record["owners" if role == "OWNER" else "custodians"][-1]["agent_id"]


def create_record(view: _Overlay, action: Row, ctx: Context) -> None:
    """CREATE_RECORD: non-empty unused identifier, existing type, required values, types."""
    _body(action, "record_id", "record_type", "properties")
    rid = _text(action.get("record_id"), "record_id")
    type_name = _text(action.get("record_type"), "record_type")
    rtype = view.get("record_types", (type_name,))
    if rtype is None:
        raise ActionRefused(f"record type {type_name!r} does not exist")
    if view.get("records", (rid,)) is not None:
        raise ActionRefused(f"record {rid!r} already exists")
    schema = {p["name"]: p["data_type"] for p in rtype["properties"]}
    values = _values(action.get("properties"), schema, "properties")
    given = {n for n, _ in values}
    missing = [p["name"] for p in rtype["properties"] if p["required"] and p["name"] not in given]
    if missing:
        raise ActionRefused(f"required propert{'y' if len(missing) == 1 else 'ies'} "
                            f"{', '.join(missing)} missing")
    signer, ts = action["signer"], action["timestamp"]
    view.put("records", (rid,), {
        "record_id": rid, "record_type": type_name, "final": False,
        "owners": [{"agent_id": signer, "timestamp": ts}],
        "custodians": [{"agent_id": signer, "timestamp": ts}],
    })
    for p in rtype["properties"]:
        view.put("properties", (rid, p["name"]), {
            "name": p["name"], "record_id": rid, "data_type": p["data_type"],
            "reporters": [{"public_key": signer, "authorized": True, "index": 0}], "count": 0,
        })
    for name, value in values:
        _append_value(view, rid, name, 0, ts, value)
    view.outcome.objects.append(object_key("record", rid))


def finalize_record(view: _Overlay, action: Row, ctx: Context) -> None:
    """FINALIZE_RECORD: only an agent who is both owner and custodian, of a non-final record."""
    _body(action, "record_id")
    record = _record(view, action.get("record_id"))
    signer = action["signer"]
    if _holder(record, "OWNER") != signer or _holder(record, "CUSTODIAN") != signer:
        raise ActionRefused("only an agent who is both owner and custodian can finalize")
    record["final"] = True
    view.put("records", (record["record_id"],), record)
    view.outcome.objects.append(object_key("record", record["record_id"]))


def _reporter_index(prop: Row, public_key: str, *, authorized: bool = True) -> int | None:
    for reporter in prop["reporters"]:
        if reporter["public_key"] == public_key and (reporter["authorized"] or not authorized):
            return int(reporter["index"])
    return None


def update_properties(view: _Overlay, action: Row, ctx: Context) -> None:
    """UPDATE_PROPERTIES: existing non-final record, an authorised reporter, matching types."""
    _body(action, "record_id", "properties")
    record = _record(view, action.get("record_id"))
    rid = record["record_id"]
    rtype = view.get("record_types", (record["record_type"],))
    if rtype is None:  # the record's type was checked when it was created
        raise ActionRefused(f"record type {record['record_type']!r} does not exist")
    schema = {p["name"]: p["data_type"] for p in rtype["properties"]}
    values = _values(action.get("properties"), schema, "properties")
    if not values:
        raise ActionRefused("an update needs at least one property value")
    signer = action["signer"]
    indexes = {}
    for name, _value in values:
        prop = view.get("properties", (rid, name))
        index = _reporter_index(prop, signer) if prop else None
        if index is None:
            raise ActionRefused(f"{signer} is not an authorized reporter of {name}")
        indexes[name] = index
    for name, value in values:
        _append_value(view, rid, name, indexes[name], action["timestamp"], value)
    view.outcome.objects.append(object_key("record", rid))


# -- proposals ------------------------------------------------------------------------------


def _role(value: Any) -> str:
    if value not in ROLES:
        raise ActionRefused(f"role must be one of {', '.join(ROLES)}")
    return str(value)


def create_proposal(view: _Overlay, action: Row, ctx: Context) -> None:
    """CREATE_PROPOSAL: by the owner (owner/reporter roles) or custodian (custodian role),
    to a registered agent, at most one open per record, receiving agent and role."""
    _body(action, "record_id", "receiving_agent", "role", "properties", "terms")
    record = _record(view, action.get("record_id"))
    rid, signer = record["record_id"], action["signer"]
    receiving = _agent(view, action.get("receiving_agent"), "receiving agent")["public_key"]
    role = _role(action.get("role"))
    terms = _text(action.get("terms", ""), "terms", MAX_TEXT, empty=True)
    names = _names(action.get("properties", []), "properties", empty=role != "REPORTER")
    if role != "REPORTER" and names:
        raise ActionRefused("only a reporter proposal names properties")
    issuer_role = "CUSTODIAN" if role == "CUSTODIAN" else "OWNER"
    if _holder(record, issuer_role) != signer:
        raise ActionRefused(f"only the current {issuer_role.lower()} can propose a {role.lower()}")
    if role != "REPORTER" and _holder(record, role) == receiving:
        raise ActionRefused(f"{receiving} is already the {role.lower()}")
    for name in names:
        if view.get("properties", (rid, name)) is None:
            raise ActionRefused(f"record {rid!r} has no property {name!r}")
    existing = view.get("proposals", (rid, receiving, role))
    if existing is not None and existing["status"] == "OPEN":
        raise ActionRefused(f"an open {role} proposal for {receiving} on {rid!r} exists")
    view.put("proposals", (rid, receiving, role), {
        "record_id": rid, "timestamp": action["timestamp"], "issuing_agent": signer,
        "receiving_agent": receiving, "role": role, "properties": names, "status": "OPEN",
        "terms": terms,
    })
    view.outcome.objects.append(object_key("record", rid))


def answer_proposal(view: _Overlay, action: Row, ctx: Context) -> None:
    """ANSWER_PROPOSAL: the receiving agent accepts or rejects, the issuer cancels; accepting
    checks that the issuer still holds the role it offers."""
    _body(action, "record_id", "receiving_agent", "role", "response")
    record = _record(view, action.get("record_id"))
    rid, signer = record["record_id"], action["signer"]
    receiving = action.get("receiving_agent")
    role = _role(action.get("role"))
    response = action.get("response")
    if response not in PROPOSAL_RESPONSES:
        raise ActionRefused(f"response must be one of {', '.join(PROPOSAL_RESPONSES)}")
    proposal = view.get("proposals", (rid, receiving, role)) if is_public_key(receiving) else None
    if proposal is None or proposal["status"] != "OPEN":
        raise ActionRefused(f"no open {role} proposal for {receiving} on {rid!r}")
    if response == "CANCEL":
        if signer != proposal["issuing_agent"]:
            raise ActionRefused("only the issuing agent can cancel a proposal")
        proposal["status"] = "CANCELED"
    elif signer != proposal["receiving_agent"]:
        raise ActionRefused("only the receiving agent can accept or reject a proposal")
    elif response == "REJECT":
        proposal["status"] = "REJECTED"
    else:
        issuer_role = "CUSTODIAN" if role == "CUSTODIAN" else "OWNER"
        if _holder(record, issuer_role) != proposal["issuing_agent"]:
            raise ActionRefused(f"the issuing agent is no longer the {issuer_role.lower()}")
        proposal["status"] = "ACCEPTED"
        entry = {"agent_id": signer, "timestamp": action["timestamp"]}
        if role == "OWNER":
            record["owners"].append(entry)
        elif role == "CUSTODIAN":
            record["custodians"].append(entry)
        else:
            _grant_reporter(view, rid, signer, proposal["properties"])
        view.put("records", (rid,), record)
    view.put("proposals", (rid, receiving, role), proposal)
    view.outcome.objects.append(object_key("record", rid))


def _grant_reporter(view: _Overlay, rid: str, public_key: str, names: Iterable[str]) -> None:
    for name in names:
        prop = _property(view, rid, name)
        for reporter in prop["reporters"]:
            if reporter["public_key"] == public_key:
                reporter["authorized"] = True
                break
        else:
            prop["reporters"].append({"public_key": public_key, "authorized": True,
                                      "index": len(prop["reporters"])})
        view.put("properties", (rid, name), prop)


def revoke_reporter(view: _Overlay, action: Row, ctx: Context) -> None:
    """REVOKE_REPORTER: the owner withdraws an authorised reporter from named properties."""
    _body(action, "record_id", "reporter_id", "properties")
    record = _record(view, action.get("record_id"))
    rid = record["record_id"]
    if _holder(record, "OWNER") != action["signer"]:
        raise ActionRefused("only the owner can revoke a reporter")
    reporter = action.get("reporter_id")
    if not is_public_key(reporter):
        raise ActionRefused("reporter_id must be a compressed public key (66 lower-case hex)")
    for name in _names(action.get("properties"), "properties"):
        prop = view.get("properties", (rid, name))
        if prop is None:
            raise ActionRefused(f"record {rid!r} has no property {name!r}")
        if _reporter_index(prop, reporter) is None:
            raise ActionRefused(f"{reporter} is not an authorized reporter of {name}")
        for entry in prop["reporters"]:
            if entry["public_key"] == reporter:
                entry["authorized"] = False
        view.put("properties", (rid, name), prop)
    view.outcome.objects.append(object_key("record", rid))


# -- partner and action requests (spec 2.2, 2.3) --------------------------------------------


def _pair(a: str, b: str) -> Key:
    return (a, b) if a < b else (b, a)


def _new_request_id(view: State, table: str, value: Any, field_name: str) -> str:
    if not is_request_id(value):
        raise ActionRefused(f"{field_name} must be 32 lower-case hex")
    if view.get(table, (value,)) is not None:
        raise ActionRefused(f"{field_name} {value} is already used")
    return str(value)


def _counterpart(view: State, action: Row) -> str:
    receiving = _agent(view, action.get("receiving_agent"), "receiving agent")["public_key"]
    if receiving == action["signer"]:
        raise ActionRefused("issuing and receiving agent must differ")
    return receiving


def create_partner_request(view: _Overlay, action: Row, ctx: Context) -> None:
    """CREATE_PARTNER_REQUEST: to another registered agent, while no request between the two
    is OPEN or ACCEPTED."""
    _body(action, "partner_request_id", "receiving_agent")
    rid = _new_request_id(view, "partner_requests", action.get("partner_request_id"),
                          "partner_request_id")
    receiving = _counterpart(view, action)
    signer = action["signer"]
    pair = view.get("partnerships", _pair(signer, receiving))
    if pair is not None and pair["status"] in ("OPEN", "ACCEPTED"):
        raise ActionRefused(f"a partner request between these agents is {pair['status']} "
                            f"({pair['partner_request_id']})")
    view.put("partner_requests", (rid,), {
        "partner_request_id": rid, "issuing_agent": signer, "receiving_agent": receiving,
        "status": "OPEN", "timestamp": action["timestamp"], "answer_timestamp": 0,
        "transaction_ids": [ctx.txid],
    })
    view.put("partnerships", _pair(signer, receiving),
             {"status": "OPEN", "partner_request_id": rid})
    view.outcome.objects.append(object_key("partner_request", rid))


def _answer(view: _Overlay, action: Row, ctx: Context, table: str, id_field: str) -> Row:
    _body(action, id_field, "response")
    rid = action.get(id_field)
    request = view.get(table, (rid,)) if is_request_id(rid) else None
    if request is None:
        raise ActionRefused(f"no request {rid!r}")
    if request["receiving_agent"] != action["signer"]:
        raise ActionRefused("only the receiving agent can answer a request")
    if request["status"] != "OPEN":
        raise ActionRefused(f"request {rid} is already {request['status']}")
    response = action.get("response")
    if response not in (0, 1) or isinstance(response, bool):
        raise ActionRefused("response must be 1 (accept) or 0 (reject)")
    request["status"] = "ACCEPTED" if response == 1 else "REJECTED"
    request["answer_timestamp"] = action["timestamp"]
    request["transaction_ids"].append(ctx.txid)
    view.put(table, (rid,), request)
    view.outcome.objects.append(object_key(table[:-1], rid))
    return request


def answer_partner_request(view: _Overlay, action: Row, ctx: Context) -> None:
    """ANSWER_PARTNER_REQUEST: the receiving agent, once, 1 = accept, 0 = reject."""
    request = _answer(view, action, ctx, "partner_requests", "partner_request_id")
    view.put("partnerships", _pair(request["issuing_agent"], request["receiving_agent"]),
             {"status": request["status"], "partner_request_id": request["partner_request_id"]})


def _files(value: Any) -> list[Row]:
    if not isinstance(value, list) or len(value) > 20:
        raise ActionRefused("files must be a list of at most 20 attachments")
    out = []
    for f in value:
        if not isinstance(f, dict) or set(f) != {"file_name", "sha256", "size", "base64"}:
            raise ActionRefused("an attachment has exactly file_name, sha256, size, base64")
        name = _text(f["file_name"], "file_name")
        if "/" in name or "\\" in name or name in (".", ".."):
            raise ActionRefused("file_name must be a plain file name")
        if not isinstance(f["sha256"], str) or not _SHA256.fullmatch(f["sha256"]):
            raise ActionRefused("sha256 must be 64 lower-case hex")
        size = _int(f["size"], "size", 0, MAX_FILE_BYTES)
        data = f["base64"]
        if not isinstance(data, str) or not _BASE64.fullmatch(data) or len(data) % 4:
            raise ActionRefused("base64 must be standard padded base64")
        try:
            raw = base64.b64decode(data, validate=True)
        except binascii.Error:
            raise ActionRefused("base64 must be standard padded base64") from None
        if len(raw) != size or hashlib.sha256(raw).hexdigest() != f["sha256"]:
            raise ActionRefused(f"attachment {name}: size or sha256 does not match the content")
        out.append({"file_name": name, "sha256": f["sha256"], "size": size, "base64": data})
    return out


def create_action(view: _Overlay, action: Row, ctx: Context) -> None:
    """CREATE_ACTION: an order to an agent with whom an ACCEPTED partnership exists."""
    _body(action, "abs_action_id", "receiving_agent", "type", "description", "metadata",
          "files")
    rid = _new_request_id(view, "action_requests", action.get("abs_action_id"), "abs_action_id")
    receiving = _counterpart(view, action)
    signer = action["signer"]
    pair = view.get("partnerships", _pair(signer, receiving))
    if pair is None or pair["status"] != "ACCEPTED":
        raise ActionRefused(f"no accepted partnership between {signer} and {receiving}")
    kind = _text(action.get("type"), "type")
    description = _text(action.get("description", ""), "description", MAX_TEXT, empty=True)
    metadata = action.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ActionRefused("metadata must be a JSON object")
    files = _files(action.get("files", []))
    view.put("action_requests", (rid,), {
        "abs_action_id": rid, "issuing_agent": signer, "receiving_agent": receiving,
        "type": kind, "description": description, "metadata": metadata, "files": files,
        "status": "OPEN", "timestamp": action["timestamp"], "answer_timestamp": 0,
        "transaction_ids": [ctx.txid],
    })
    view.outcome.objects.append(object_key("action_request", rid))


def answer_action(view: _Overlay, action: Row, ctx: Context) -> None:
    """ANSWER_ACTION: the receiving agent, once, 1 = accept, 0 = reject."""
    _answer(view, action, ctx, "action_requests", "abs_action_id")


_HANDLERS: dict[str, Callable[[_Overlay, Row, Context], None]] = {
    "CREATE_RECORD": create_record,
    "FINALIZE_RECORD": finalize_record,
    "CREATE_RECORD_TYPE": create_record_type,
    "UPDATE_PROPERTIES": update_properties,
    "CREATE_PROPOSAL": create_proposal,
    "ANSWER_PROPOSAL": answer_proposal,
    "REVOKE_REPORTER": revoke_reporter,
    "CREATE_PARTNER_REQUEST": create_partner_request,
    "ANSWER_PARTNER_REQUEST": answer_partner_request,
    "CREATE_ACTION": create_action,
    "ANSWER_ACTION": answer_action,
}
