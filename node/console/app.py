"""The console's aiohttp application: login, sessions, CSRF, security headers, and the views."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import jinja2
from aiohttp import web

from node.client import RpcAuthError, RpcClient, RpcConnectionError, RpcError
from node.console import api, pages
from node.console.plugin import Console, load_plugins
from node.console.sessions import COOKIE, SESSION_KEY, SessionStore, csrf_ok
from node.console.users import check_password, load_users, users_path

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
CONSOLE_KEY = web.AppKey("console", Console)
_PUBLIC = ("/login", "/static/", "/api/openapi.json")
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MAX_BODY = 64 * 1024


def _is_public(path: str) -> bool:
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in _PUBLIC)


def _safe_next(target: str | None) -> str:
    """Only a path of this site: no scheme, no host, no //host."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@web.middleware
async def _security(request: web.Request, handler: api.Handler) -> web.StreamResponse:
    console: Console = request.app[CONSOLE_KEY]
    store: SessionStore = request.app[STORE_KEY]
    session = store.get(request.cookies.get(COOKIE))
    request[SESSION_KEY] = session
    is_api = request.path.startswith("/api/")
    try:
        if not _is_public(request.path):
            if session is None:
                if is_api:
                    raise api.json_error(401, 0, "login required")
                raise web.HTTPSeeOther(f"/login?next={request.rel_url.path_qs}"
                                       if request.method == "GET" else "/login")
            if request.method not in ("GET", "HEAD"):
                presented = request.headers.get("X-CSRF-Token")
                if presented is None and request.content_type in (
                        "application/x-www-form-urlencoded", "multipart/form-data"):
                    presented = (await request.post()).get("csrf_token")
                if not csrf_ok(session, presented if isinstance(presented, str) else None):
                    if is_api:
                        raise api.json_error(403, 0, "missing or wrong CSRF token")
                    raise web.HTTPForbidden(text="missing or wrong CSRF token")
        response = await handler(request)
    except web.HTTPException as exc:
        _add_headers(exc)
        raise
    except (RpcError, RpcConnectionError) as exc:
        if is_api:
            failure = api.rpc_failure(exc)
            _add_headers(failure)
            raise failure from None
        response = pages.rpc_failure_page(console, request, exc)
    _add_headers(response)
    return response


def _add_headers(response: web.StreamResponse) -> None:
    for name, value in _HEADERS.items():
        response.headers.setdefault(name, value)


STORE_KEY = web.AppKey("sessions", SessionStore)


async def _login_form(request: web.Request) -> web.StreamResponse:
    console: Console = request.app[CONSOLE_KEY]
    return console.render(request, "login.html", next=_safe_next(request.query.get("next")),
                          error=None)


async def _login(request: web.Request) -> web.StreamResponse:
    console: Console = request.app[CONSOLE_KEY]
    form = await request.post()
    name, password = str(form.get("username", "")), str(form.get("password", ""))
    target = _safe_next(str(form.get("next", "/")))
    if not await _authenticate(request.app, name, password):
        log.warning("console login refused for %r from %s", name[:64], request.remote)
        return console.render(request, "login.html", status=401, next=target,
                              error="Wrong user name or password.")
    store = request.app[STORE_KEY]
    store.drop(request.cookies.get(COOKIE))
    token, _ = store.create(name)
    log.info("console login of %r from %s", name, request.remote)
    response = web.HTTPSeeOther(target)
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/",
                        secure=request.app[TLS_KEY])
    raise response


async def _authenticate(app: web.Application, name: str, password: str) -> bool:
    """An admin user of the users file, else the node's RPC credentials (asked of the node)."""
    if not name or not password or len(name) > 64 or len(password) > 1024:
        return False
    console = app[CONSOLE_KEY]
    users = load_users(users_path(console.datadir, console.chain))
    if name in users:
        return await asyncio.to_thread(check_password, password, users[name])
    probe = RpcClient(console.rpc.host, console.rpc.port, name, password,
                      chain_name=console.chain, timeout=10)
    try:
        await asyncio.to_thread(probe.call, "getblockcount")
    except RpcAuthError:
        return False
    finally:
        probe.close()
    return True


async def _logout(request: web.Request) -> web.StreamResponse:
    request.app[STORE_KEY].drop(request.cookies.get(COOKIE))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


TLS_KEY = web.AppKey("tls", bool)


def build_app(rpc: RpcClient, chain: str, datadir: Path, *, tls: bool = False,
              plugins: bool = True) -> web.Application:
    """The console application for the node behind ``rpc``."""
    app = web.Application(middlewares=[_security], client_max_size=MAX_BODY)
    templates = jinja2.Environment(
        loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(HERE / "templates"))]),
        autoescape=True)
    console = Console(rpc=rpc, chain=chain, datadir=datadir, app=app, templates=templates)
    app[CONSOLE_KEY] = console
    app[STORE_KEY] = SessionStore()
    app[TLS_KEY] = tls
    app.router.add_get("/login", _login_form)
    app.router.add_post("/login", _login)
    app.router.add_post("/logout", _logout)
    app.router.add_static("/static/", HERE / "static", show_index=False)
    pages.register(console)
    api.register(console)
    if plugins:
        load_plugins(console)
    return app
