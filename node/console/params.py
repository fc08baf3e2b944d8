"""Checked request parameters and JSON errors of the console (shared with plug-in views)."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from node.client import RpcConnectionError, RpcError

MAX_PAGE = 1000
TXID_PATTERN = re.compile(r"[0-9a-fA-F]{64}")
_ADDRESS = re.compile(r"[1-9A-HJ-NP-Za-km-z]{20,64}")
PEER_PATTERN = re.compile(r"[0-9A-Za-z.:\[\]-]{1,300}")
PERMISSIONS = ("connect", "send", "receive", "issue", "create", "mine", "activate", "admin")
# MultiChain codes whose meaning is "no such thing" and "you may not".
_NOT_FOUND = {-5, -703, -705, -708, -710, -714}
_FORBIDDEN = {-704}
_HTTP_ERRORS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden,
    404: web.HTTPNotFound, 502: web.HTTPBadGateway,
}


def json_error(status: int, code: int, message: str) -> web.HTTPException:
    """An HTTP error whose body is ``{"error": {"code", "message"}}``."""
    body = json.dumps({"error": {"code": code, "message": message}})
    return _HTTP_ERRORS[status](text=body, content_type="application/json")


def rpc_failure(exc: RpcError | RpcConnectionError) -> web.HTTPException:
    """The node's refusal as an API error, with the node's MultiChain code."""
    if isinstance(exc, RpcConnectionError) or exc.http_status == 401:
        return json_error(502, 0, f"the node cannot be reached: {exc}")
    status = 404 if exc.code in _NOT_FOUND else 403 if exc.code in _FORBIDDEN else 400
    return json_error(status, exc.code, exc.message)


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]; 400 otherwise."""
    text = request.query.get(name)
    if text is None or text == "":
        return default
    if not re.fullmatch(r"-?[0-9]{1,12}", text):
        raise json_error(400, -8, f"{name} must be an integer")
    value = int(text)
    if not low <= value <= high:
        raise json_error(400, -8, f"{name} must be between {low} and {high}")
    return value


def name_param(value: str, what: str) -> str:
    """A stream name, key or similar: 1-256 printable characters."""
    if not 0 < len(value) <= 256 or not value.isprintable():
        raise json_error(400, -8, f"{what} must be 1 to 256 printable characters")
    return value


def txid_param(value: str) -> str:
    if not TXID_PATTERN.fullmatch(value):
        raise json_error(400, -8, "a txid is 64 hexadecimal digits")
    return value.lower()


def address_param(value: Any) -> str:
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
        raise json_error(400, -8, "not an address")
    return value


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body; 400 when it is not one."""
    if request.content_type != "application/json":
        raise json_error(400, -8, "the body must be application/json")
    try:
        body = await request.json()
    except ValueError:
        raise json_error(400, -8, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise json_error(400, -8, "the body must be a JSON object")
    return body


def permission_list(value: Any) -> str:
    """A comma-separated permission list (or a list of names), each a known permission."""
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise json_error(400, -8, "permissions must be a list of permission names")
    names = [n.strip().lower() for n in names]
    for n in names:
        # stream permissions are written STREAM.write etc.
        base = n.rsplit(".", 1)[-1]
        if base not in PERMISSIONS + ("write", "read") or len(n) > 300:
            raise json_error(400, -8, f"unknown permission {n[:40]!r}")
    return ",".join(names)


