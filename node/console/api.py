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

from node.client import RpcError
from node.console.params import (
    MAX_PAGE,
    PEER_PATTERN,
    PERMISSIONS,
    TXID_PATTERN,
    address_param,
    int_param,
    json_body,
    json_error,
    name_param,
    permission_list,
    rpc_failure,
    txid_param,
)
from node.console.plugin import Console

__all__ = ["MAX_PAGE", "PERMISSIONS", "address_param", "int_param", "json_body", "json_error",
           "name_param", "permission_list", "rpc_failure", "txid_param", "register"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPENAPI_FILE = Path(__file__).resolve().parent / "openapi.json"

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
        if not isinstance(peer, str) or not PEER_PATTERN.fullmatch(peer):
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
    if TXID_PATTERN.fullmatch(ref):
        return ref.lower()
    raise json_error(400, -8, "a block is given by its height or its 64-digit hash")


async def chain_summary(console: Console) -> dict[str, Any]:
    """Height, tip, its age, final depth, diversity, miners and whose turn it is to sign the
    next block, peers and mempool in one object.

    The turn comes from getmininginfo's chainmill extension fields (`nextminers`: the miners
    that may sign the next block in the order they try); a node without them (MultiChain)
    gives an empty list and no turn."""
    info, last, mempool, peers, params, miners, mining = await _batch(console, [
        ("getblockchaininfo", []), ("getlastblockinfo", []), ("getmempoolinfo", []),
        ("getpeerinfo", []), ("getblockchainparams", []), ("listpermissions", ["mine"]),
        ("getmininginfo", []),
    ])
    miner_set = sorted({m["address"] for m in miners if m.get("for") is None})
    next_miners = [a for a in mining.get("nextminers") or [] if isinstance(a, str)]
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
        "miners": miner_set,
        "next_block": int(mining.get("nextblock", info["blocks"] + 1)),
        "next_miner": next_miners[0] if next_miners else None,
        "next_miners": next_miners,
        "waiting_miners": [m for m in miner_set if m not in next_miners] if next_miners else [],
        "mining_turnover": mining.get("miningturnover"),
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
    if key is not None and publisher is not None:
        raise json_error(400, -8, "give key or publisher, not both")
    if key is not None:
        key = name_param(key, "key")
        method, selection, counter = "liststreamkeyitems", [key], ("liststreamkeys", [stream, key])
    elif publisher is not None:
        publisher = address_param(publisher)
        method, selection = "liststreampublisheritems", [publisher]
        counter = ("liststreampublishers", [stream, publisher])
    else:
        method, selection, counter = "liststreamitems", [], ("getstreaminfo", [stream])
    # One item more than the page (is there an older one?), and the oldest item of all.
    listed, oldest = await _batch(console, [
        (method, [stream, *selection, False, count + 1, -(start + count + 1)]),
        (method, [stream, *selection, False, 1, 0])])
    # Where the window reaches the oldest item the node clamps a negative start at 0, and
    # past it would give the oldest page again: keep only the items older than `start`,
    # which takes the number of items. A window shorter than asked holds all of them; a
    # full one that begins with the oldest item needs them counted (rare: the last page
    # of a long list; counting costs more than paging).
    total: int | None = None
    if len(listed) < count + 1:
        total = len(listed)
    elif oldest and _same_item(listed[0], oldest[0]):
        total = _item_total((await _batch(console, [counter]))[0])
    if total is not None:
        listed = listed[:max(0, total - start)]
    older = len(listed) > count
    listed = list(reversed(listed[1:] if older else listed))
    return {"stream": stream, "start": start, "count": count, "key": key,
            "publisher": publisher, "older": older, "items": listed}


def _same_item(a: Any, b: Any) -> bool:
    """Whether two listed items are (as far as a listing tells) the same one: confirmations,
    finality and the block fields change when a block arrives between two calls."""
    fields = ("txid", "keys", "publishers", "data")
    return isinstance(a, dict) and isinstance(b, dict) and all(
        a.get(f) == b.get(f) for f in fields)


def _item_total(counted: Any) -> int | None:
    """The item count in getstreaminfo's answer, or in liststreamkeys' / liststreampublishers'
    for one name (none listed: no items); None when the node does not say."""
    if isinstance(counted, list):
        counted = counted[0] if counted else {"items": 0}
    items = counted.get("items") if isinstance(counted, dict) else None
    return items if isinstance(items, int) and items >= 0 else None


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
