"""Routing and parameter rules of the MES HTTP endpoints (spec 3.5.5), without a server.

The answer endpoints change state, so they are POST; GET is still accepted there for old
UIs (the reference had only GET with side effects). The aiohttp server wraps these rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from config.errors import ChainmillError
from erp import rules
from mes.bridge import messages as m

__all__ = ["EndpointError", "Route", "ROUTES", "route", "list_params", "answer_params", "http_result"]

_DIGITS = re.compile(r"[0-9]{1,19}")


class EndpointError(ChainmillError):
    """An HTTP request the endpoint refuses; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint: the bridge topic it calls, its method, and methods kept for old UIs."""

    topic: str
    method: str
    legacy_methods: tuple[str, ...] = ()

    @property
    def answers(self) -> bool:
        return self.topic in (m.TOPIC_PART_ANS, m.TOPIC_ACT_ANS)


ROUTES: dict[str, Route] = {
    "/api/KafkaPartner/LIST": Route(m.TOPIC_PART_LST, "GET"),
    "/api/KafkaPartner/ANS": Route(m.TOPIC_PART_ANS, "POST", ("GET",)),
    "/api/KafkaOrder/LIST": Route(m.TOPIC_ACT_LST, "GET"),
    "/api/KafkaOrder/ANS": Route(m.TOPIC_ACT_ANS, "POST", ("GET",)),
}


def route(method: str, path: str) -> Route:
    """The route for ``method path``; 404 for an unknown path, 405 for a method it refuses."""
    found = ROUTES.get(path)
    if found is None:
        raise EndpointError(404, f"no endpoint {path}")
    if method != found.method and method not in found.legacy_methods:
        raise EndpointError(405, f"{path} takes {' or '.join((found.method, *found.legacy_methods))}")
    return found


def _number(params: Mapping[str, str], name: str, default: int | None, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        if default is None:
            raise EndpointError(400, f"missing {name}")
        return default
    if not isinstance(raw, str) or not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise EndpointError(400, f"{name} must be an integer from {low} to {high}")
    return int(raw)


def list_params(params: Mapping[str, str]) -> dict[str, int]:
    """``start`` and ``limit`` of a LIST call (defaults 0 and 10, as the reference's fixed page)."""
    return {"start": _number(params, "start", 0, 0, m.MAX_INTERACTION_ID),
            "limit": _number(params, "limit", m.LIST_DEFAULT_LIMIT, 1, m.LIST_MAX_LIMIT)}


def answer_params(params: Mapping[str, str]) -> dict[str, object]:
    """Element 1 of an ANS call from ``ID`` and ``Response`` (0 reject, 1 accept); 400 otherwise."""
    request_id = params.get("ID")
    if request_id is None:
        raise EndpointError(400, "missing ID")
    if not rules.is_request_id(request_id):
        raise EndpointError(400, "ID must be a request id (32 lower-case hex)")
    return {"id": request_id, "response": _number(params, "Response", None, 0, 1)}


def http_result(response: m.Response) -> tuple[int, object]:
    """HTTP status and JSON body for a bridge response: data or message 200, error 502."""
    if response.kind == "data":
        return 200, response.data
    if response.kind == "message":
        return 200, {"message": response.message}
    body: dict[str, object] = {"error": response.error}
    if response.error_code is not None:
        body["error_code"] = response.error_code
    return 502, body
