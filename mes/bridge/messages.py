"""Request and response messages of the MES <-> chain Kafka bridge (spec 3.5.1-3.5.3).

A message value is one UTF-8 JSON array of one or two objects, encoded once. Element 0 of a
request carries ``auth`` and, for chainmill clients, ``interaction_id`` and ``client_id``;
element 0 of a response echoes them (the token only for old clients, since a response topic
is readable by every consumer). Parsers treat every byte as hostile: size cap, strict UTF-8,
no duplicate keys, no NaN, no unknown keys, bounded lists; each refusal is a MessageError
carrying a MultiChain-style ``error_code`` and, when element 0 could be read, the header to
answer to.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from config.errors import ChainmillError
from erp import rules
from erp.errors import ActionRefused
from mes.dayreport.ids import IdError, parse_flow_id

__all__ = [
    "TOPIC_RES", "TOPIC_REC", "TOPIC_RTY", "TOPIC_PART_LST", "TOPIC_PART_ANS", "TOPIC_ACT_LST",
    "TOPIC_ACT_ANS", "TOPIC_ACT_LST_OLD", "REQUEST_TOPICS", "LISTEN_TOPICS",
    "PARSE_ERROR", "INVALID_REQUEST", "INVALID_PARAMETER", "MAX_MESSAGE_BYTES", "MAX_INTERACTION_ID",
    "LIST_DEFAULT_LIMIT", "LIST_MAX_LIMIT", "MAX_STATIC_RECORDS",
    "MessageError", "Header", "Request", "Response",
    "canonical_topic", "build_request", "parse_request", "build_response", "parse_response",
    "record_key", "kafka_headers", "encode", "is_client_id",
]

TOPIC_RES = "BLK_Res"
TOPIC_REC = "BLK_Rec"
TOPIC_RTY = "BLK_Rty"
TOPIC_PART_LST = "BLK_Part_Lst"
TOPIC_PART_ANS = "BLK_Part_Ans"
TOPIC_ACT_LST = "BLK_Act_Lst"
TOPIC_ACT_ANS = "BLK_Act_Ans"
TOPIC_ACT_LST_OLD = "BLK_ACT_Lst"
"""The reference's documented spelling; old clients may publish there, answers go to BLK_Res."""
REQUEST_TOPICS = (TOPIC_REC, TOPIC_RTY, TOPIC_PART_LST, TOPIC_PART_ANS, TOPIC_ACT_LST, TOPIC_ACT_ANS)
LISTEN_TOPICS = (*REQUEST_TOPICS, TOPIC_ACT_LST_OLD)
_LIST_TOPICS = (TOPIC_PART_LST, TOPIC_ACT_LST)
_ANSWER_TOPICS = (TOPIC_PART_ANS, TOPIC_ACT_ANS)

# Error codes: JSON-RPC's for unreadable messages, MultiChain's -8 for a bad parameter.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INVALID_PARAMETER = -8

MAX_MESSAGE_BYTES = 256 * 1024
MAX_INTERACTION_ID = 2**63 - 1
MAX_TOKEN = 300
LIST_DEFAULT_LIMIT = 10
LIST_MAX_LIMIT = 100  # = erp.api.MAX_LIMIT, the projection's page cap
MAX_STATIC_RECORDS = 100
_CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,63}")
_HEADER_KEYS = frozenset({"auth", "interaction_id", "client_id", "start", "limit"})
_RECORD_ACTIONS = ("ensure_reporter", "update_properties", "create_static_records")

Json = Any


@dataclass(frozen=True, slots=True)
class Header:
    """Element 0 of a request (and what a response echoes)."""

    auth: str | None = None
    interaction_id: int | None = None
    client_id: str | None = None
    start: int | None = None
    limit: int | None = None

    def as_json(self) -> dict[str, Json]:
        out: dict[str, Json] = {}
        for name in ("auth", "interaction_id", "client_id", "start", "limit"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


class MessageError(ChainmillError):
    """A message that cannot be executed. ``header`` is set when element 0 could be read, so
    the bridge can still answer the requester with an error."""

    def __init__(self, message: str, code: int = INVALID_PARAMETER, header: Header | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.header = header


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request: the canonical topic, element 0, and element 1 (None for lists)."""

    topic: str
    header: Header
    body: dict[str, Json] | None = None

    @property
    def action(self) -> str:
        """What to execute: the record command's action, or the topic's single operation."""
        if self.body is not None and "action" in self.body:
            return str(self.body["action"])
        return {TOPIC_PART_LST: "list_partner_requests", TOPIC_ACT_LST: "list_actions",
                TOPIC_PART_ANS: "answer_partner_request", TOPIC_ACT_ANS: "answer_action"}[self.topic]


@dataclass(frozen=True, slots=True)
class Response:
    """A parsed response. ``kind`` says which key element 1 had: test it, never truthiness
    (an empty ``data`` list is an answer)."""

    header: Header
    kind: str  # "data" | "message" | "error"
    data: list[Json] | dict[str, Json] | None = None
    message: str | None = None
    error: str | None = None
    error_code: int | None = None
    extra: dict[str, Json] = field(default_factory=dict)


def is_client_id(value: object) -> bool:
    """A client id: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit."""
    return isinstance(value, str) and _CLIENT_ID.fullmatch(value) is not None


# -- encoding -------------------------------------------------------------------------------


def encode(value: Json) -> bytes:
    """Real JSON, UTF-8, compact; NaN refused (the reference sent a Python repr instead)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _no_duplicates(pairs: list[tuple[str, Json]]) -> dict[str, Json]:
    out: dict[str, Json] = {}
    for key, value in pairs:
        if key in out:
            raise MessageError(f"duplicate key {key!r}", PARSE_ERROR)
        out[key] = value
    return out


def _refuse_constant(name: str) -> Json:
    raise MessageError(f"{name} is not JSON", PARSE_ERROR)


def _decode(raw: object) -> list[Json]:
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise MessageError("message value must be bytes", PARSE_ERROR)
    if len(raw) > MAX_MESSAGE_BYTES:
        raise MessageError(f"message larger than {MAX_MESSAGE_BYTES} bytes", PARSE_ERROR)
    try:
        text = bytes(raw).decode("utf-8")
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant)
    except MessageError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MessageError("message is not UTF-8 JSON", PARSE_ERROR) from None
    if not isinstance(value, list) or not 1 <= len(value) <= 2 or not all(isinstance(v, dict) for v in value):
        raise MessageError("message must be a JSON array of one or two objects", INVALID_REQUEST)
    return value


# -- small checks ---------------------------------------------------------------------------


def _int(value: Json, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MessageError(f"{what} must be an integer from {low} to {high}")
    return value


def _text(value: Json, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise MessageError(f"{what} must be a non-empty string of at most {limit} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise MessageError(f"{what} must not contain control characters")
    return value


def _keys(obj: Mapping[str, Json], what: str, required: Iterable[str], optional: Iterable[str] = ()) -> None:
    required = set(required)
    missing = required - obj.keys()
    unknown = obj.keys() - required - set(optional)
    if missing:
        raise MessageError(f"{what} lacks {', '.join(sorted(missing))}")
    if unknown:
        raise MessageError(f"{what} has unknown key {sorted(unknown)[0]!r}")


def _list(value: Json, what: str, limit: int) -> list[Json]:
    if not isinstance(value, list) or not value or len(value) > limit:
        raise MessageError(f"{what} must be a non-empty list of at most {limit} entries")
    return value


def _header(obj: Mapping[str, Json], *, paging: bool) -> Header:
    unknown = obj.keys() - _HEADER_KEYS - (set() if paging else {"start", "limit"})
    iid = obj.get("interaction_id")
    cid = obj.get("client_id")
    header = Header(
        interaction_id=iid if isinstance(iid, int) and not isinstance(iid, bool)
        and 0 < iid <= MAX_INTERACTION_ID else None,
        client_id=cid if isinstance(cid, str) and _CLIENT_ID.fullmatch(cid) else None)
    try:
        # The correlation fields are checked first so every later error can be answered.
        if iid is not None and header.interaction_id is None:
            raise MessageError(f"interaction_id must be an integer from 1 to {MAX_INTERACTION_ID}")
        if cid is not None and header.client_id is None:
            raise MessageError("client_id must be 1-64 letters, digits, '.', '_' or '-'")
        if (header.interaction_id is None) != (header.client_id is None):
            raise MessageError("interaction_id and client_id go together")
        if not paging and ({"start", "limit"} & obj.keys()):
            raise MessageError("start and limit belong to list requests only")
        if unknown:
            raise MessageError(f"element 0 has unknown key {sorted(unknown)[0]!r}")
        if "auth" not in obj:
            raise MessageError("element 0 lacks auth")
        auth = _text(obj["auth"], "auth", MAX_TOKEN)
        start = limit = None
        if paging:
            start = _int(obj.get("start", 0), "start", 0, rules.MAX_INT)
            limit = _int(obj.get("limit", LIST_DEFAULT_LIMIT), "limit", 1, LIST_MAX_LIMIT)
    except MessageError as exc:
        exc.header = header
        raise
    return Header(auth, header.interaction_id, header.client_id, start, limit)


# -- element 1 per topic --------------------------------------------------------------------


def _answer_body(body: Mapping[str, Json]) -> dict[str, Json]:
    _keys(body, "answer", ("id", "response"))
    if not rules.is_request_id(body["id"]):
        raise MessageError("id must be a request id (32 lower-case hex)")
    return {"id": body["id"], "response": _int(body["response"], "response", 0, 1)}


def _property_name(value: Json) -> str:
    return _text(value, "property name", rules.MAX_PROPERTY_NAME)


def _unique(names: Sequence[str], what: str) -> None:
    if len(set(names)) != len(names):
        raise MessageError(f"{what} names a property twice")


def _record_type_body(body: Mapping[str, Json]) -> dict[str, Json]:
    _keys(body, "ensure_record_type", ("action", "name", "properties"))
    if body["action"] != "ensure_record_type":
        raise MessageError("BLK_Rty carries only ensure_record_type")
    props = []
    for entry in _list(body["properties"], "properties", rules.MAX_PROPERTIES):
        if not isinstance(entry, dict):
            raise MessageError("each property is an object")
        _keys(entry, "property", ("name", "data_type"), ("required",))
        if entry["data_type"] not in rules.DATA_TYPES:
            raise MessageError(f"data_type must be one of {', '.join(rules.DATA_TYPES)}")
        required = entry.get("required", False)
        if not isinstance(required, bool):
            raise MessageError("required must be true or false")
        props.append({"name": _property_name(entry["name"]), "data_type": entry["data_type"],
                      "required": required})
    _unique([p["name"] for p in props], "ensure_record_type")
    return {"action": "ensure_record_type", "name": _text(body["name"], "name", rules.MAX_NAME),
            "properties": props}


def _scalar(value: Json, what: str) -> Json:
    if isinstance(value, bool) or value is None:
        raise MessageError(f"{what} must be a string or a number")
    if isinstance(value, int):
        return _int(value, what, -rules.MAX_INT - 1, rules.MAX_INT)
    if isinstance(value, float):
        if not math.isfinite(value):  # pragma: no cover - the decoder refuses NaN already
            raise MessageError(f"{what} must be finite")
        return value
    if isinstance(value, str) and len(value) <= rules.MAX_TEXT:
        return value
    raise MessageError(f"{what} must be a string of at most {rules.MAX_TEXT} characters or a number")


def _record_body(body: Mapping[str, Json]) -> dict[str, Json]:
    action = body.get("action")
    if action not in _RECORD_ACTIONS:
        raise MessageError(f"action must be one of {', '.join(_RECORD_ACTIONS)}")
    if action == "ensure_reporter":
        _keys(body, action, ("action", "record_id", "record_type", "properties"))
        names = [_property_name(n) for n in _list(body["properties"], "properties", rules.MAX_PROPERTIES)]
        _unique(names, action)
        return {"action": action, "record_id": _text(body["record_id"], "record_id", rules.MAX_NAME),
                "record_type": _text(body["record_type"], "record_type", rules.MAX_NAME),
                "properties": names}
    if action == "update_properties":
        _keys(body, action, ("action", "record_id", "properties"))
        props = []
        for entry in _list(body["properties"], "properties", rules.MAX_PROPERTIES):
            if not isinstance(entry, dict):
                raise MessageError("each property is an object")
            _keys(entry, "property", ("name", "data_type", "value"))
            if entry["data_type"] not in rules.DATA_TYPES:
                raise MessageError(f"data_type must be one of {', '.join(rules.DATA_TYPES)}")
            try:
                value = rules.check_value(entry["value"], entry["data_type"])
            except ActionRefused as exc:
                raise MessageError(exc.reason) from None
            props.append({"name": _property_name(entry["name"]), "data_type": entry["data_type"],
                          "value": value})
        _unique([p["name"] for p in props], action)
        return {"action": action, "record_id": _text(body["record_id"], "record_id", rules.MAX_NAME),
                "properties": props}
    _keys(body, action, ("action", "flow_id", "records"))
    try:
        parse_flow_id(body["flow_id"])
    except IdError as exc:
        raise MessageError(str(exc)) from None
    records = []
    for entry in _list(body["records"], "records", MAX_STATIC_RECORDS):
        if not isinstance(entry, dict):
            raise MessageError("each record is an object")
        _keys(entry, "record", ("record_id", "record_type", "properties"))
        props = entry["properties"]
        if not isinstance(props, dict) or not props or len(props) > rules.MAX_PROPERTIES:
            raise MessageError(f"record properties must be an object of 1 to {rules.MAX_PROPERTIES} values")
        records.append({"record_id": _text(entry["record_id"], "record_id", rules.MAX_NAME),
                        "record_type": _text(entry["record_type"], "record_type", rules.MAX_NAME),
                        "properties": {_property_name(k): _scalar(v, f"property {k!r}")
                                       for k, v in props.items()}})
    if len({r["record_id"] for r in records}) != len(records):
        raise MessageError("create_static_records names a record twice")
    return {"action": action, "flow_id": body["flow_id"], "records": records}


# -- requests -------------------------------------------------------------------------------


def canonical_topic(topic: str) -> str:
    """The topic a request counts as (the old BLK_ACT_Lst spelling is BLK_Act_Lst)."""
    return TOPIC_ACT_LST if topic == TOPIC_ACT_LST_OLD else topic


def build_request(topic: str, header: Header, body: Mapping[str, Json] | None = None) -> bytes:
    """The message value of a request; checked by the same parser the bridge runs."""
    value: list[Json] = [header.as_json()] if body is None else [header.as_json(), dict(body)]
    raw = encode(value)
    parse_request(topic, raw)
    return raw


def parse_request(topic: str, raw: object, key: bytes | None = None,
                  headers: Iterable[tuple[str, bytes]] = ()) -> Request:
    """The request in a Kafka record of ``topic``, or MessageError.

    ``key`` and the ``interaction_id`` Kafka header, when present, must agree with element 0
    (a record whose envelope and body disagree is refused rather than guessed at).
    """
    topic = canonical_topic(topic)
    if topic not in REQUEST_TOPICS:
        raise MessageError(f"{topic!r} is not a request topic", INVALID_REQUEST)
    value = _decode(raw)
    paging = topic in _LIST_TOPICS
    header = _header(value[0], paging=paging)
    try:
        if key is not None and header.client_id is not None and key != header.client_id.encode():
            raise MessageError("record key differs from client_id", INVALID_REQUEST)
        for name, hvalue in headers:
            if name == "interaction_id" and hvalue != str(header.interaction_id).encode():
                raise MessageError("interaction_id header differs from element 0", INVALID_REQUEST)
        body = value[1] if len(value) == 2 else None
        if paging:
            if body:
                raise MessageError("a list request has no element 1 (paging is in element 0)")
            return Request(topic, header)
        if body is None:
            raise MessageError(f"{topic} needs element 1")
        if topic in _ANSWER_TOPICS:
            return Request(topic, header, _answer_body(body))
        if topic == TOPIC_RTY:
            return Request(topic, header, _record_type_body(body))
        return Request(topic, header, _record_body(body))
    except MessageError as exc:
        exc.header = header
        raise


def record_key(header: Header) -> bytes | None:
    """The Kafka record key of a request or response: the client id (keeps a client's
    responses in order within one partition)."""
    return header.client_id.encode() if header.client_id is not None else None


def kafka_headers(header: Header) -> list[tuple[str, bytes]]:
    """The Kafka headers of a request or response: the interaction id, when there is one."""
    if header.interaction_id is None:
        return []
    return [("interaction_id", str(header.interaction_id).encode())]


# -- responses ------------------------------------------------------------------------------


def _response_head(header: Header | None, echo_auth: bool | None) -> dict[str, Json]:
    if header is None:
        return {}
    out: dict[str, Json] = {}
    if echo_auth is None:
        echo_auth = header.interaction_id is None  # Decision: off for chainmill clients
    if echo_auth and header.auth is not None:
        out["auth"] = header.auth
    if header.interaction_id is not None:
        out["interaction_id"] = header.interaction_id
        out["client_id"] = header.client_id
    return out


def build_response(header: Header | None, *, data: list[Json] | dict[str, Json] | None = None,
                   message: str | None = None, error: str | None = None,
                   error_code: int | None = None, echo_auth: bool | None = None,
                   extra: Mapping[str, Json] | None = None) -> bytes:
    """The BLK_Res value answering ``header``: exactly one of data, message or error.
    ``extra`` adds keys next to it (e.g. the records an error is about); old clients
    ignore them."""
    given = [name for name, v in (("data", data), ("message", message), ("error", error)) if v is not None]
    if len(given) != 1:
        raise ValueError("a response carries exactly one of data, message, error")
    if error_code is not None and error is None:
        raise ValueError("error_code goes with error")
    body: dict[str, Json] = {given[0]: {"data": data, "message": message, "error": error}[given[0]]}
    if error_code is not None:
        body["error_code"] = error_code
    for name, value in (extra or {}).items():
        if name in ("data", "message", "error", "error_code"):
            raise ValueError(f"extra key {name!r} would change the response's kind")
        body[name] = value
    return encode([_response_head(header, echo_auth), body])


def parse_response(raw: object) -> Response:
    """A BLK_Res value, or MessageError. Key presence decides the kind: ``{"data": []}`` is
    an answer (the reference took an empty list for "no answer" and hung)."""
    value = _decode(raw)
    if len(value) != 2:
        raise MessageError("a response has two elements", INVALID_REQUEST)
    head, body = value
    auth = head.get("auth")
    iid = head.get("interaction_id")
    cid = head.get("client_id")
    header = Header(
        auth=auth if isinstance(auth, str) else None,
        interaction_id=iid if isinstance(iid, int) and not isinstance(iid, bool)
        and 0 < iid <= MAX_INTERACTION_ID else None,
        client_id=cid if isinstance(cid, str) and _CLIENT_ID.fullmatch(cid) else None)
    kinds = [k for k in ("data", "message", "error") if k in body]
    if len(kinds) != 1:
        raise MessageError("a response carries exactly one of data, message, error", INVALID_REQUEST, header)
    kind = kinds[0]
    extra = {k: v for k, v in body.items() if k not in (kind, "error_code")}
    if kind == "data":
        if not isinstance(body["data"], list | dict):
            raise MessageError("data must be a list or an object", INVALID_REQUEST, header)
        return Response(header, kind, data=body["data"], extra=extra)
    if not isinstance(body[kind], str):
        raise MessageError(f"{kind} must be a string", INVALID_REQUEST, header)
    if kind == "message":
        return Response(header, kind, message=body["message"], extra=extra)
    code = body.get("error_code")
    if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
        raise MessageError("error_code must be an integer", INVALID_REQUEST, header)
    return Response(header, kind, error=body["error"], error_code=code, extra=extra)
