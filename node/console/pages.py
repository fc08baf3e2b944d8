"""The explorer's server-rendered pages (no JavaScript needed to read anything)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from typing import Any

from aiohttp import web

from node.client import RpcConnectionError, RpcError
from node.console import api
from node.console.decode import decode
from node.console.plugin import Console

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
PAGE = 20


def rpc_failure_page(console: Console, request: web.Request,
                     exc: RpcError | RpcConnectionError) -> web.Response:
    """The node's refusal (or absence) as an HTML page."""
    if isinstance(exc, RpcConnectionError):
        return console.render(request, "error.html", status=502, code=0,
                              message=f"The node cannot be reached: {exc}")
    status = api.rpc_failure(exc).status
    return console.render(request, "error.html", status=status, code=exc.code,
                          message=exc.message)


def _page_error(console: Console, request: web.Request, exc: web.HTTPException) -> web.Response:
    message = exc.text or exc.reason
    try:
        message = json.loads(message)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        pass
    return console.render(request, "error.html", status=exc.status, code=0, message=message)


def _time(value: Any) -> str:
    if not isinstance(value, int | float):
        return ""
    return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def register(console: Console) -> None:
    """Add the chain's pages and navigation entries."""
    console.templates.filters["time"] = _time

    def page(handler: api.Handler) -> api.Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except web.HTTPException as exc:
                if exc.status >= 400 and exc.content_type == "application/json":
                    return _page_error(console, request, exc)
                raise
        return wrapped

    async def overview(request: web.Request) -> web.Response:
        summary = await api.chain_summary(console)
        listed = await console.call("listblocks", f"-{PAGE // 2}")
        return console.render(request, "overview.html", summary=summary,
                              blocks=list(reversed(listed)))

    async def blocks(request: web.Request) -> web.Response:
        height = await console.call("getblockcount")
        top = min(api.int_param(request, "from", height, 0, 2**31), height)
        low = max(0, top - PAGE + 1)
        listed = await console.call("listblocks", f"{low}-{top}")
        return console.render(request, "blocks.html", blocks=list(reversed(listed)),
                              height=height, older=low - 1 if low > 0 else None,
                              newer=min(height, top + PAGE) if top < height else None)

    async def block(request: web.Request) -> web.Response:
        info = await console.call("getblock", api.block_ref(request), 1)
        return console.render(request, "block.html", block=info)

    async def transaction(request: web.Request) -> web.Response:
        txid = api.txid_param(request.match_info["txid"])
        tx = await console.call("getrawtransaction", txid, 1)
        return console.render(request, "tx.html", tx=tx)

    async def streams(request: web.Request) -> web.Response:
        listed = await console.call("liststreams", "*", True)
        return console.render(request, "streams.html", streams=listed)

    async def stream(request: web.Request) -> web.Response:
        name = api.name_param(request.match_info["stream"], "stream")
        result = await api.stream_items(console, request, name)
        start = result["start"]
        query = {k: v for k in ("key", "publisher") if (v := result[k]) is not None}
        return console.render(request, "stream.html", stream=name, result=result, query=query,
                              newer=max(0, start - PAGE) if start > 0 else None,
                              older=start + PAGE if result["older"] else None)

    async def item(request: web.Request) -> web.Response:
        name = api.name_param(request.match_info["stream"], "stream")
        txid = api.txid_param(request.match_info["txid"])
        listed = await console.call("liststreamtxitems", name, txid, True)
        shown = []
        for entry in listed:
            view = None
            for decoder in console.item_decoders:
                view = await decoder(console, name, entry)
                if view is not None:
                    break
            shown.append({"item": entry, "view": view, "decoded": decode(entry.get("data"))})
        return console.render(request, "item.html", stream=name, txid=txid, items=shown)

    async def permissions(request: web.Request) -> web.Response:
        listed = await console.call("listpermissions", "*", "*", True)
        return console.render(request, "permissions.html", permissions=listed,
                              names=api.PERMISSIONS)

    async def peers(request: web.Request) -> web.Response:
        return console.render(request, "peers.html", peers=await console.call("getpeerinfo"))

    async def search(request: web.Request) -> web.StreamResponse:
        q = request.query.get("q", "").strip()
        if not q:
            return console.render(request, "search.html", q="", hits=[])
        api.name_param(q, "search text")
        if _HEX64.fullmatch(q):
            for method, target in (("getrawtransaction", "/tx/"), ("getblock", "/block/")):
                try:
                    await console.call(method, q.lower())
                except RpcError:
                    continue
                raise web.HTTPSeeOther(target + q.lower())
        hits = await _search_keys(console, q)
        valid = await console.call("validateaddress", q) if len(q) < 64 else {"isvalid": False}
        address_perms = (await console.call("listpermissions", "*", q, True)
                         if valid.get("isvalid") else None)
        subscribed = [s["name"] for s in await console.call("liststreams", "*")
                      if s.get("subscribed")]
        return console.render(request, "search.html", q=q, hits=hits, address=valid,
                              address_perms=address_perms, streams=subscribed)

    async def change_permission(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        action = form.get("action")
        if action not in ("grant", "revoke"):
            raise api.json_error(400, -8, "action is grant or revoke")
        address = api.address_param(str(form.get("address", "")).strip())
        perms = api.permission_list(str(form.get("permissions", "")))
        txid = await console.call(str(action), address, perms)
        return console.render(request, "done.html", message=f"{action} {perms} to {address}",
                              txid=txid, back="/permissions")

    async def disconnect(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        peer = str(form.get("peer", ""))
        api.name_param(peer, "peer")
        await console.call("disconnectnode", peer)
        return console.render(request, "done.html", message=f"disconnected {peer}", txid=None,
                              back="/peers")

    console.add_page("POST", "/permissions/change", page(change_permission))
    console.add_page("POST", "/peers/disconnect", page(disconnect))
    console.add_page("GET", "/", page(overview), nav="Overview")
    console.add_page("GET", "/blocks", page(blocks), nav="Blocks")
    console.add_page("GET", "/block/{ref}", page(block))
    console.add_page("GET", "/tx/{txid}", page(transaction))
    console.add_page("GET", "/streams", page(streams), nav="Streams")
    console.add_page("GET", "/stream/{stream}", page(stream))
    console.add_page("GET", "/item/{stream}/{txid}", page(item))
    console.add_page("GET", "/permissions", page(permissions), nav="Permissions")
    console.add_page("GET", "/peers", page(peers), nav="Peers")
    console.add_page("GET", "/search", page(search))


async def _search_keys(console: Console, key: str) -> list[dict[str, Any]]:
    """Items with ``key`` in every subscribed stream (the newest PAGE of each)."""
    listed = await console.call("liststreams", "*")
    names = [s["name"] for s in listed if s.get("subscribed")]
    calls = [("liststreamkeyitems", [name, key, False, PAGE, -PAGE]) for name in names]
    results = await asyncio.to_thread(console.rpc.batch, calls) if calls else []
    hits = []
    for name, found in zip(names, results, strict=True):
        if isinstance(found, RpcError):
            continue  # a stream the node cannot search (e.g. not indexed): nothing to show
        for entry in reversed(found):
            hits.append({"stream": name, "item": entry})
    return hits
