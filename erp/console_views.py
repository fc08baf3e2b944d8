"""Console views of the erp layer (registered through the ``chainmill.console`` entry point).

What a company's operator sees in `chainmill console CHAIN`: the partner requests and the
action (order) requests addressed to this node's company (or issued by it), newest first and
paged, with Accept / Reject on the open ones it received. The same lists and answers are in
the JSON API (``/api/erp/...``, described in console_openapi.json).

The views read the projection database that `chainmill erp init` recorded for the chain
(erp/settings.py) and answer through erp.api, so an answer is checked by the same rules the
projection runs and is published from the company's agent address. They reach the node only
through the console's RPC client; node/ never imports this module. The lists show the
projection as it is: `chainmill erp follow` keeps it current.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import create_engine
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from erp import rules, settings
from erp.api import MAX_LIMIT, Erp
from erp.errors import ActionRefused, ErpError

__all__ = ["register", "KINDS", "answer_selection"]

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
PAGE = 20
RESPONSES = {"accept": 1, "reject": 0}
KINDS = {
    # kind: (id field, API path part, page title, navigation title)
    "partner": ("partner_request_id", "partner-requests", "Partner requests", "Partners"),
    "order": ("abs_action_id", "orders", "Order requests", "Orders"),
}


class _Views:
    def __init__(self, console: Any) -> None:
        self.console = console
        self._erp: Erp | None = None
        self._error: str | None = None

    def erp(self) -> Erp | None:
        """The company's Erp on this chain, or None (with the reason kept) without erp.conf.
        Looked for again on each request until found, so a later `erp init` needs no restart."""
        if self._erp is None:
            try:
                resolved = settings.resolve(self.console.chain, str(self.console.datadir),
                                            None, None, None)
                engine = create_engine(resolved.db_url, pool_pre_ping=True)
            except ErpError as exc:
                self._error = str(exc)
                return None
            except (ArgumentError, ImportError) as exc:
                self._error = f"the database URL in erp.conf is not usable: {exc}"
                return None
            self._erp = Erp(engine, self.console.rpc, stream=resolved.stream,
                            address=resolved.address)
            self._error = None
        return self._erp

    def reason(self) -> str | None:
        return self._error

    def _require(self) -> Erp:
        erp = self.erp()
        if erp is None:
            raise self.console.json_error(404, 0, f"no ERP database: {self._error}")
        return erp

    def listing(self, kind: str, start: int, count: int, issued: bool) -> dict[str, Any]:
        erp = self._require()
        lister = erp.list_partner_requests if kind == "partner" else erp.list_actions
        try:
            rows = lister(start, count, issued=issued)
            agent = erp.public_key
        except ErpError as exc:
            raise self.console.json_error(400, -8, str(exc)) from None
        except SQLAlchemyError as exc:
            raise self.console.json_error(502, 0, f"the ERP database cannot be read: {exc}") \
                from None
        return {"agent": agent, "issued": issued, "start": start, "count": count,
                "rows": rows}

    def answer(self, kind: str, ident: str, response: int) -> dict[str, Any]:
        erp = self._require()
        id_field = KINDS[kind][0]
        try:
            if kind == "partner":
                made = erp.answer_partner_request(ident, response)
            else:
                made = erp.answer_action(ident, response)
        except ActionRefused as exc:
            raise self.console.json_error(400, -8, f"refused: {exc}") from None
        except ErpError as exc:
            raise self.console.json_error(400, -8, str(exc)) from None
        except SQLAlchemyError as exc:
            raise self.console.json_error(502, 0, f"the ERP database cannot be read: {exc}") \
                from None
        log.info("console answered %s request %s with %d: %s", kind, ident, response,
                 made["txid"])
        return {"kind": kind, "id": made[id_field], "response": response, "txid": made["txid"]}


def answer_selection(console: Any, ident: Any, response: Any) -> tuple[str, int]:
    """A checked request id and response (``accept``/``reject``); 400 for anything else."""
    if (not isinstance(ident, str) or not 0 < len(ident) <= rules.MAX_NAME
            or not ident.isprintable()):
        raise console.json_error(400, -8, f"id is 1 to {rules.MAX_NAME} printable characters")
    if not isinstance(response, str) or response not in RESPONSES:
        raise console.json_error(400, -8, "response is accept or reject")
    return ident, RESPONSES[response]


def register(console: Any) -> None:
    """Add the partner and order request pages and API routes to the console."""
    views = _Views(console)
    console.add_templates(HERE / "console_templates")

    def paging(request: web.Request) -> tuple[int, int, bool]:
        issued = request.query.get("issued", "false")
        if issued not in ("true", "false"):
            raise console.json_error(400, -8, "issued is true or false")
        return (console.int_param(request, "start", 0, 0, 2**31),
                console.int_param(request, "count", PAGE, 1, MAX_LIMIT), issued == "true")

    def list_api(kind: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            start, count, issued = paging(request)
            return web.json_response(await asyncio.to_thread(views.listing, kind, start,
                                                             count, issued))
        return handler

    def answer_api(kind: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            body = await console.json_body(request)
            ident, response = answer_selection(console, body.get("id"), body.get("response"))
            return web.json_response(await asyncio.to_thread(views.answer, kind, ident,
                                                             response))
        return handler

    def list_page(kind: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            start, count, issued = paging(request)
            erp = await asyncio.to_thread(views.erp)
            result = (await asyncio.to_thread(views.listing, kind, start, count, issued)
                      if erp is not None else None)
            id_field, part, title, _ = KINDS[kind]
            return console.render(request, "erp_requests.html", result=result, kind=kind,
                                  id_field=id_field, title=title, base=f"/erp/{part}",
                                  reason=views.reason(), page=count)
        return handler

    def answer_page(kind: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            form = await request.post()
            back = f"/erp/{KINDS[kind][1]}"
            try:
                ident, response = answer_selection(console, form.get("id"),
                                                   form.get("response"))
                done = await asyncio.to_thread(views.answer, kind, ident, response)
            except web.HTTPException as exc:
                message = json.loads(exc.text or "{}").get("error", {}).get("message", "")
                return console.render(request, "error.html", status=400, code=-8,
                                      message=message or "cannot answer")
            verb = "accepted" if done["response"] == 1 else "rejected"
            return console.render(request, "done.html", txid=done["txid"], back=back,
                                  message=f"{KINDS[kind][2].lower()[:-1]} {done['id']} "
                                          f"{verb} (final once the projection follows it)")
        return handler

    for kind, (_, part, _title, nav) in KINDS.items():
        console.add_page("GET", f"/erp/{part}", list_page(kind), nav=nav)
        console.add_page("POST", f"/erp/{part}/answer", answer_page(kind))
        console.add_api("GET", f"/api/erp/{part}", list_api(kind),
                        OPENAPI_PATHS[f"/api/erp/{part}"])
        console.add_api("POST", f"/api/erp/{part}/answer", answer_api(kind),
                        OPENAPI_PATHS[f"/api/erp/{part}/answer"])
    console.add_schemas(OPENAPI_SCHEMAS)


def _load_openapi() -> tuple[dict[str, Any], dict[str, Any]]:
    document = json.loads((HERE / "console_openapi.json").read_text(encoding="utf-8"))
    return {path: {path: item} for path, item in document["paths"].items()}, document["schemas"]


OPENAPI_PATHS, OPENAPI_SCHEMAS = _load_openapi()
