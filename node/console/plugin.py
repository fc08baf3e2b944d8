"""The console's plug-in interface: upper layers (triggers/, erp/, mes/) add views through it.

An entry point of the group ``chainmill.console`` names a module with
``register(console: Console) -> None``. The module adds its pages (``add_page``, optionally
with a navigation entry), its JSON API (``add_api``, with the OpenAPI path items describing
it), its templates (``add_templates``) and decoders for the items it understands
(``add_item_decoder``). It reaches the node only through ``console.call`` (JSON-RPC); node/
never imports it. Every POST is CSRF-checked and every route needs a login before the
handler runs, so a plug-in cannot forget either.

The triggers views (triggers/console_views.py) are the worked example. erp/'s partner and
order requests are meant to come the same way: an ``erp = "erp.console_views"`` entry point
whose pages list the requests and POST Accept / Reject forms (``csrf_token`` field), which act
through ``console.call`` so the node signs and checks them; nothing in node/ changes for it.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from node.client import RpcClient
from node.console import params
from node.console.sessions import SESSION_KEY

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "chainmill.console"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ItemDecoder = Callable[["Console", str, dict[str, Any]], Awaitable[dict[str, Any] | None]]
"""(console, stream name, item) -> None if not this plug-in's item, else a dict with
``template`` (a template name) and whatever that template shows."""


@dataclass(frozen=True, slots=True)
class NavEntry:
    """A link in the console's navigation bar."""

    title: str
    path: str


@dataclass
class Console:
    """What the console gives its views: the RPC client, templates, auth helpers, registries."""

    rpc: RpcClient
    chain: str
    datadir: Path
    app: web.Application
    templates: jinja2.Environment
    nav: list[NavEntry] = field(default_factory=list)
    openapi_paths: dict[str, Any] = field(default_factory=dict)
    openapi_schemas: dict[str, Any] = field(default_factory=dict)
    item_decoders: list[ItemDecoder] = field(default_factory=list)
    plugin_names: list[str] = field(default_factory=list)

    # Checked parameters and JSON errors, so plug-ins need not import node/console modules.
    json_error = staticmethod(params.json_error)
    int_param = staticmethod(params.int_param)
    name_param = staticmethod(params.name_param)
    txid_param = staticmethod(params.txid_param)
    json_body = staticmethod(params.json_body)

    async def call(self, method: str, *params: Any) -> Any:
        """A JSON-RPC call on the node, off the event loop (the client is synchronous)."""
        return await asyncio.to_thread(self.rpc.call, method, *params)

    def add_page(self, method: str, path: str, handler: Handler, nav: str | None = None) -> None:
        """An HTML route; with ``nav``, also a navigation entry of that title."""
        self.app.router.add_route(method, path, handler)
        if nav:
            self.nav.append(NavEntry(nav, path))

    def add_api(self, method: str, path: str, handler: Handler,
                openapi: dict[str, Any] | None = None) -> None:
        """A JSON route under /api/ and its OpenAPI path item (merged into /api/openapi.json)."""
        if not path.startswith("/api/"):
            raise ValueError(f"API routes live under /api/: {path}")
        self.app.router.add_route(method, path, handler)
        if openapi:
            for doc_path, item in openapi.items():
                self.openapi_paths.setdefault(doc_path, {}).update(item)

    def add_schemas(self, schemas: dict[str, Any]) -> None:
        """Component schemas referenced by a plug-in's OpenAPI items."""
        self.openapi_schemas.update(schemas)

    def add_templates(self, directory: Path) -> None:
        """A directory of the plug-in's Jinja2 templates (looked up after the console's own)."""
        loader = self.templates.loader
        assert isinstance(loader, jinja2.ChoiceLoader)
        loader.loaders.append(jinja2.FileSystemLoader(str(directory)))

    def add_item_decoder(self, decoder: ItemDecoder) -> None:
        """A decoder tried, in registration order, before the generic one on each item page."""
        self.item_decoders.append(decoder)

    def render(self, request: web.Request, template: str, status: int = 200,
               **values: Any) -> web.Response:
        """A page from ``template`` with the layout's values (user, CSRF token, navigation)."""
        session = request.get(SESSION_KEY)
        html = self.templates.get_template(template).render(
            chain=self.chain, nav=self.nav, user=session.user if session else None,
            csrf_token=session.csrf if session else "", path=request.path, **values)
        return web.Response(text=html, content_type="text/html", status=status)


def load_plugins(console: Console) -> None:
    """Register every view plug-in of the ``chainmill.console`` entry-point group."""
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            module = entry_point.load()
            module.register(console)
        except Exception as exc:  # a broken plug-in must not take the console down
            log.warning("cannot load console views %r (%s): %s",
                        entry_point.name, entry_point.value, exc)
            continue
        console.plugin_names.append(entry_point.name)
        log.info("console views %s loaded", entry_point.name)
