"""The console application without a node: routes against the OpenAPI document, the login
form (console users only, so no node is needed), cookie flags, redirects, security headers.

The RPC client points at a closed port: these tests must never reach a node, and a call that
tried would fail loudly.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from aiohttp.test_utils import TestClient, TestServer

from node.client import RpcClient
from node.console.api import openapi_document
from node.console.app import CONSOLE_KEY, build_app
from node.console.users import add_user, users_path

CHAIN = "unitchain"


def _app(tmp_path, *, tls: bool = False):
    (tmp_path / CHAIN).mkdir(exist_ok=True)
    add_user(users_path(tmp_path, CHAIN), "auditor", "correct horse")
    unreachable = RpcClient("127.0.0.1", 1, "nobody", "nothing", chain_name=CHAIN, timeout=1)
    return build_app(unreachable, CHAIN, tmp_path, tls=tls)


def _run(tmp_path, scenario, *, tls: bool = False):
    async def main():
        async with TestClient(TestServer(_app(tmp_path, tls=tls))) as client:
            return await scenario(client)
    return asyncio.run(main())


def test_console_app_every_api_route_is_documented_and_every_documented_route_exists(tmp_path):
    app = _app(tmp_path)
    routes = {(r.method, r.resource.canonical) for r in app.router.routes()
              if r.resource is not None and r.resource.canonical.startswith("/api/")
              and r.method != "HEAD"}
    document = openapi_document(app[CONSOLE_KEY])
    documented = {(m.upper(), p) for p, item in document["paths"].items() for m in item}
    assert routes == documented
    assert document["openapi"].startswith("3.")


@pytest.mark.parametrize("tls", [False, True])
def test_console_app_session_cookie_flags(tmp_path, tls):
    async def scenario(client):
        reply = await client.post("/login", data={"username": "auditor",
                                                  "password": "correct horse", "next": "/x"},
                                  allow_redirects=False)
        return reply.status, reply.headers["Location"], reply.headers["Set-Cookie"]
    status, location, cookie = _run(tmp_path, scenario, tls=tls)
    assert status == 303 and location == "/x"
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert ("Secure" in cookie) is tls


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "evil",
                                    "/\\evil.example"])
def test_console_app_login_redirects_only_within_the_site(tmp_path, target):
    async def scenario(client):
        reply = await client.post("/login", data={"username": "auditor",
                                                  "password": "correct horse",
                                                  "next": target}, allow_redirects=False)
        return reply.headers["Location"]
    assert _run(tmp_path, scenario) == "/"


def test_console_app_refuses_wrong_password_and_unknown_user_without_a_session(tmp_path):
    async def scenario(client):
        out = []
        for user, password in (("auditor", "wrong horse"), ("", ""), ("a" * 65, "x" * 8)):
            reply = await client.post("/login", data={"username": user, "password": password},
                                      allow_redirects=False)
            out.append((reply.status, "Set-Cookie" in reply.headers))
        return out
    assert _run(tmp_path, scenario) == [(401, False)] * 3


def test_console_app_headers_redirects_and_csrf_before_any_handler(tmp_path):
    async def scenario(client):
        page = await client.get("/blocks?from=3", allow_redirects=False)
        api = await client.get("/api/summary")
        await client.post("/login", data={"username": "auditor", "password": "correct horse"},
                          allow_redirects=False)
        no_token = await client.post("/api/permissions/grant", json={})
        form_no_token = await client.post("/permissions/change", data={"action": "grant"})
        logout_page = await client.get("/login")
        return (page.status, page.headers["Location"], api.status, await api.json(),
                no_token.status, form_no_token.status, dict(logout_page.headers))
    status, location, api_status, api_body, no_token, form_no_token, headers = _run(
        tmp_path, scenario)
    assert (status, location) == (303, "/login?next=/blocks?from=3")
    assert api_status == 401 and api_body == {"error": {"code": 0, "message": "login required"}}
    assert no_token == 403 and form_no_token == 403  # refused before the node is ever asked
    assert re.search(r"default-src 'none'", headers["Content-Security-Policy"])
    assert headers["X-Frame-Options"] == "DENY" and headers["X-Content-Type-Options"] == "nosniff"
