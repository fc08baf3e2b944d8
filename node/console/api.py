"""The console's JSON admin API; every route is described in /api/openapi.json."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from node.client import RpcConnectionError, RpcError
from node.console.plugin import Console

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPENAPI_FILE = Path(__file__).resolve().parent / "openapi.json"

MAX_PAGE = 1000
_TXID = re.compile(r"[0-9a-fA-F]{64}")
_ADDRESS = re.compile(r"[1-9A-HJ-NP-Za-km-z]{20,64}")
_PEER = re.compile(r"[0-9A-Za-z.:\[\]-]{1,300}")
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


# ------------------------------------------------------------------ parameters


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
    if not _TXID.fullmatch(value):
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


# ------------------------------------------------------------------ the routes


def register(console: Console) -> None:
    """Add the chain's API routes."""
    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(openapi_document(console))

    async def summary(request: web.Request) -> web.Response:
        return web.json_response(await chain_summary(console))

    async def blocks(request: web.Request) -> web.Response:
        height = await console.call("getblockcount")
        count = int_param(request, "count", 20, 1, MAX_PAGE)
        top = int_param(request, "from", height, 0, 2**31)
        top = min(top, height)
        low = max(0, top - count + 1)
        listed = await console.call("listblocks", f"{low}-{top}") if top >= 0 else []
        return web.json_response({"height": height, "blocks": list(reversed(listed))})

    async def block(request: web.Request) -> web.Response:
        return web.json_response(await console.call("getblock", block_ref(request), 1))

    async def transaction(request: web.Request) -> web.Response:
        txid = txid_param(request.match_info["txid"])
        return web.json_response(await console.call("getrawtransaction", txid, 1))

    async def streams(request: web.Request) -> web.Response:
        return web.json_response(await console.call("liststreams", "*", True))

    async def items(request: web.Request) -> web.Response:
        stream = name_param(request.match_info["stream"], "stream")
        return web.json_response(await stream_items(console, request, stream))

    async def permissions(request: web.Request) -> web.Response:
        return web.json_response(await console.call("listpermissions", "*", "*", True))

    async def grant(request: web.Request) -> web.Response:
        return await _grant_or_revoke(console, request, "grant")

    async def revoke(request: web.Request) -> web.Response:
        return await _grant_or_revoke(console, request, "revoke")

    async def peers(request: web.Request) -> web.Response:
        return web.json_response(await console.call("getpeerinfo"))

    async def disconnect(request: web.Request) -> web.Response:
        body = await json_body(request)
        peer = body.get("peer")
        if not isinstance(peer, str) or not _PEER.fullmatch(peer):
            raise json_error(400, -8, "peer must be a peer address as getpeerinfo shows it")
        await console.call("disconnectnode", peer)
        return web.json_response({"disconnected": peer})

    routes = [
        ("GET", "/api/openapi.json", openapi), ("GET", "/api/summary", summary),
        ("GET", "/api/blocks", blocks), ("GET", "/api/blocks/{ref}", block),
        ("GET", "/api/transactions/{txid}", transaction), ("GET", "/api/streams", streams),
        ("GET", "/api/streams/{stream}/items", items),
        ("GET", "/api/permissions", permissions), ("POST", "/api/permissions/grant", grant),
        ("POST", "/api/permissions/revoke", revoke), ("GET", "/api/peers", peers),
        ("POST", "/api/peers/disconnect", disconnect),
    ]
    for method, path, handler in routes:
        console.add_api(method, path, handler)


def block_ref(request: web.Request) -> str | int:
    ref = request.match_info["ref"]
    if re.fullmatch(r"[0-9]{1,10}", ref):
        return int(ref)
    if _TXID.fullmatch(ref):
        return ref.lower()
    raise json_error(400, -8, "a block is given by its height or its 64-digit hash")


async def chain_summary(console: Console) -> dict[str, Any]:
    """Height, tip, its age, final depth, diversity, miners, peers and mempool in one object."""
    info, last, mempool, peers, params, miners = await _batch(console, [
        ("getblockchaininfo", []), ("getlastblockinfo", []), ("getmempoolinfo", []),
        ("getpeerinfo", []), ("getblockchainparams", []), ("listpermissions", ["mine"]),
    ])
    return {
        "chain": console.chain,
        "height": info["blocks"],
        "bestblockhash": info["bestblockhash"],
        "tip_time": last.get("time"),
        "tip_age": max(0, int(time.time()) - int(last.get("time") or 0)),
        "tip_miner": last.get("miner"),
        "final_depth": info.get("finaldepth"),
        "mining_diversity": params.get("mining-diversity"),
        "target_block_time": params.get("target-block-time"),
        "miners": sorted({m["address"] for m in miners if m.get("for") is None}),
        "peers": len(peers),
        "mempool": {"size": mempool["size"], "bytes": mempool["bytes"]},
    }


async def _batch(console: Console, calls: list[tuple[str, list[Any]]]) -> list[Any]:
    results = await asyncio.to_thread(console.rpc.batch, calls)
    for result in results:
        if isinstance(result, RpcError):
            raise result
    return results


async def stream_items(console: Console, request: web.Request, stream: str) -> dict[str, Any]:
    """One page of a stream's items, newest first; by key or by publisher when asked.

    ``start`` counts from the newest item (0 = the newest), so page N is stable while new
    items arrive only if the caller keeps the offset; that is MultiChain's own paging."""
    count = int_param(request, "count", 20, 1, MAX_PAGE)
    start = int_param(request, "start", 0, 0, 2**31)
    key, publisher = request.query.get("key"), request.query.get("publisher")
    window = [False, count, -(start + count)]
    if key is not None and publisher is not None:
        raise json_error(400, -8, "give key or publisher, not both")
    if key is not None:
        listed = await console.call("liststreamkeyitems", stream, name_param(key, "key"), *window)
    elif publisher is not None:
        listed = await console.call("liststreampublisheritems", stream,
                                    address_param(publisher), *window)
    else:
        listed = await console.call("liststreamitems", stream, *window)
    listed = list(reversed(listed))
    return {"stream": stream, "start": start, "count": count, "key": key,
            "publisher": publisher, "items": listed}


async def _grant_or_revoke(console: Console, request: web.Request, method: str) -> web.Response:
    body = await json_body(request)
    address = address_param(body.get("address"))
    perms = permission_list(body.get("permissions"))
    txid = await console.call(method, address, perms)
    return web.json_response({"txid": txid, "address": address, "permissions": perms})


def openapi_document(console: Console) -> dict[str, Any]:
    """The console's OpenAPI 3 document with the plug-ins' paths and schemas merged in."""
    document = json.loads(OPENAPI_FILE.read_text(encoding="utf-8"))
    document["paths"].update(console.openapi_paths)
    document["components"]["schemas"].update(console.openapi_schemas)
    return document
