"""The console's admin API on a live node, checked against its own OpenAPI document.

What: without a login every API route answers 401 and every page redirects to the login;
a wrong password is refused; the node's RPC credentials and a user made by
`chainmill console adduser` both log in, with an HttpOnly, SameSite=Strict cookie; every
documented operation answers what the document says, for good and hostile parameters; a POST
without the session's CSRF token is refused and changes nothing; a grant the node's address
may not make is refused by the node (403 with MultiChain's code) and changes nothing.

How: real node processes and a real `chainmill console` process per node; plain HTTP with a
cookie jar; every JSON reply validated with jsonschema against /api/openapi.json.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import urllib.parse

import pytest
from console_support import Browser, ConsoleProcess, OpenApi
from framework import chainmill_command, child_env, wait_until
from network_support import start_network

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.console_api")

GET_ROUTES = ["/api/summary", "/api/blocks", "/api/blocks/0", "/api/streams",
              "/api/streams/root/items", "/api/permissions", "/api/peers",
              "/api/transactions/" + "0" * 64]
POST_ROUTES = ["/api/permissions/grant", "/api/permissions/revoke", "/api/peers/disconnect"]


def test_console_api_matches_its_openapi_document_and_guards_access(harness, consoles,
                                                                     free_port_factory):
    node = harness.start_node()
    admin = node.getaddresses()[0]
    console = ConsoleProcess(node, free_port_factory())
    consoles.append(console)
    web = Browser(console.url)
    api = OpenApi(web.get("/api/openapi.json").json())

    log.info("without a login: 401 on the API, a redirect to the login on pages")
    for path in GET_ROUTES:
        api.check("GET", path, reply := web.get(path))
        assert reply.status == 401
    for path in POST_ROUTES:
        reply = web.post_json(path, {})
        assert reply.status == 401, path
    for page in ("/", "/blocks", "/stream/root", "/permissions"):
        reply = web.get(page)
        assert reply.status == 303 and reply.headers["Location"].startswith("/login"), page

    log.info("a wrong password is refused; the node's RPC credentials log in")
    assert web.login(node.rpcuser, node.rpcpassword + "x").status == 401
    assert web.get("/api/summary").status == 401
    reply = web.login(node.rpcuser, node.rpcpassword)
    assert reply.status == 303
    cookie = reply.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    assert web.csrf

    log.info("data to list: a stream with items under two keys")
    node.create("stream", "orders", True)
    node.wait_for_empty_mempool()
    txids = [node.publish("orders", f"PO-{i % 2}", {"json": {"n": i}}) for i in range(5)]
    node.wait_for_confirmation(*txids)

    log.info("every read operation, checked against the document")
    summary = api.check("GET", "/api/summary", web.get("/api/summary"))
    assert summary["height"] == node.getblockcount() and summary["miners"] == [admin]
    blocks = api.check("GET", "/api/blocks", web.get("/api/blocks?count=3"))
    assert [b["height"] for b in blocks["blocks"]] == list(range(blocks["height"],
                                                                 blocks["height"] - 3, -1))
    tip = api.check("GET", "/api/blocks/x", web.get(f"/api/blocks/{summary['bestblockhash']}"))
    assert tip["height"] == summary["height"]
    api.check("GET", "/api/blocks/x", web.get("/api/blocks/1"))
    tx = api.check("GET", "/api/transactions/x", web.get(f"/api/transactions/{txids[0]}"))
    assert tx["txid"] == txids[0]
    streams = api.check("GET", "/api/streams", web.get("/api/streams"))
    assert {s["name"] for s in streams} == {"root", "orders"}
    page = api.check("GET", "/api/streams/x/items",
                     web.get("/api/streams/orders/items?count=2"))
    assert [i["txid"] for i in page["items"]] == txids[:2:-1][:2]  # newest first
    page = api.check("GET", "/api/streams/x/items",
                     web.get("/api/streams/orders/items?count=2&start=2"))
    assert [i["txid"] for i in page["items"]] == [txids[2], txids[1]]
    by_key = api.check("GET", "/api/streams/x/items", web.get("/api/streams/orders/items?key=PO-1"))
    assert [i["txid"] for i in by_key["items"]] == [txids[3], txids[1]]
    by_publisher = api.check("GET", "/api/streams/x/items",
                             web.get(f"/api/streams/orders/items?publisher={admin}"))
    assert len(by_publisher["items"]) == 5
    perms = api.check("GET", "/api/permissions", web.get("/api/permissions"))
    assert {"address": admin, "type": "admin"}.items() <= next(
        p for p in perms if p["type"] == "admin" and p["for"] is None).items()
    assert api.check("GET", "/api/peers", web.get("/api/peers")) == []

    log.info("hostile parameters: 400 or 404 with an error object, nothing else")
    hostile = [
        "/api/blocks?count=0", "/api/blocks?count=100000", "/api/blocks?count=abc",
        "/api/blocks?from=-1", "/api/blocks?count=1e9", "/api/blocks/..%2F..%2Fetc",
        "/api/blocks/" + "f" * 64, "/api/blocks/99999999", "/api/blocks/" + "9" * 40,
        "/api/transactions/zz", "/api/transactions/" + "a" * 64,
        "/api/transactions/" + "a" * 65,
        "/api/streams/nosuchstream/items", "/api/streams/" + "s" * 300 + "/items",
        "/api/streams/orders/items?start=-5", "/api/streams/orders/items?count=1001",
        "/api/streams/orders/items?key=" + urllib.parse.quote("\x00\x01"),
        "/api/streams/orders/items?key=" + "k" * 257,
        "/api/streams/orders/items?publisher=not-an-address",
        "/api/streams/orders/items?key=a&publisher=" + admin,
        "/api/streams/%3Cscript%3E/items",
    ]
    for path in hostile:
        reply = web.get(path)
        body = api.check("GET", path, reply)
        assert reply.status in (400, 404), (path, reply.status, body)
        assert set(body) == {"error"}, path
    for body in ({}, [], {"address": admin}, {"address": "x", "permissions": "send"},
                 {"address": admin, "permissions": "fly"}, {"address": admin, "permissions": 7}):
        reply = web.post_json("/api/permissions/grant", body)
        assert reply.status == 400, (body, reply.body)
        api.check("POST", "/api/permissions/grant", reply)
    reply = web.request("POST", "/api/permissions/grant", headers={
        "X-CSRF-Token": web.csrf, "Content-Type": "application/json"})
    assert api.check("POST", "/api/permissions/grant", reply) and reply.status == 400
    assert web.post_json("/api/peers/disconnect", {"peer": "a b"}).status == 400
    reply = web.post_json("/api/peers/disconnect", {"peer": "127.0.0.1:1"})
    assert api.check("POST", "/api/peers/disconnect", reply)["error"]["code"] != 0
    assert node.getblockcount() >= summary["height"]  # the node is still answering

    log.info("CSRF: a POST without the token or with a wrong one is refused, nothing changes")
    other = node.getnewaddress()
    for headers in ({}, {"X-CSRF-Token": "wrong"}):
        reply = web.request("POST", "/api/permissions/grant", headers=headers,
                            json_body={"address": other, "permissions": "send"})
        assert reply.status == 403
        assert "CSRF" in api.check("POST", "/api/permissions/grant", reply)["error"]["message"]
    reply = web.request("POST", "/permissions/change", form={
        "address": other, "permissions": "send", "action": "grant"})
    assert reply.status == 403
    assert node.listpermissions("send", other) == []

    log.info("with the token: grant and revoke go through the node")
    granted = api.check("POST", "/api/permissions/grant", web.post_json(
        "/api/permissions/grant", {"address": other, "permissions": ["send", "receive"]}))
    node.wait_for_confirmation(granted["txid"])
    assert {p["type"] for p in node.listpermissions("send,receive", other)} == {"send", "receive"}
    revoked = api.check("POST", "/api/permissions/revoke", web.post_json(
        "/api/permissions/revoke", {"address": other, "permissions": "receive"}))
    node.wait_for_confirmation(revoked["txid"])
    assert {p["type"] for p in node.listpermissions("send,receive", other)} == {"send"}

    log.info("logging out ends the session")
    assert web.request("POST", "/logout", form={"csrf_token": web.csrf}).status == 303
    assert web.get("/api/summary").status == 401

    # the plug-ins' routes are exercised in test_console_triggers.py and test_console_erp.py
    undocumented = {op for op in api.operations() - api.checked
                    if not op[1].startswith(("/api/triggers/", "/api/erp/"))} - {
        ("GET", "/api/openapi.json")}
    assert not undocumented, f"operations never exercised: {sorted(undocumented)}"


def test_console_adduser_logs_in_and_node_refuses_what_its_address_may_not_do(
        harness, consoles, free_port_factory):
    node0, node1 = start_network(harness, 2)
    log.info("an admin user for node1's console, password from the environment")
    argv = [*chainmill_command(), "console", "adduser", node1.chain, "auditor",
            "--datadir", str(node1.datadir)]
    done = subprocess.run(argv, env=child_env({"CHAINMILL_CONSOLE_PASSWORD": "short"}),
                          capture_output=True, text=True)
    assert done.returncode == 1 and "8 to 1024" in done.stderr
    users_file = node1.chain_dir / "console-users.json"
    assert not users_file.exists()
    done = subprocess.run(argv, env=child_env({"CHAINMILL_CONSOLE_PASSWORD": "correct horse"}),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(os.stat(users_file).st_mode) == 0o600
    assert "correct horse" not in users_file.read_text()

    console = ConsoleProcess(node1, free_port_factory())
    consoles.append(console)
    web = Browser(console.url)
    api = OpenApi(web.get("/api/openapi.json").json())
    assert web.login("auditor", "wrong horse").status == 401
    assert web.login("auditor", "correct horse").status == 303

    log.info("node1 has no admin permission: the node refuses its grant")
    newcomer = node0.getnewaddress()
    reply = web.post_json("/api/permissions/grant", {"address": newcomer, "permissions": "send"})
    body = api.check("POST", "/api/permissions/grant", reply)
    assert reply.status == 403 and body["error"]["code"] == -704, body
    assert node0.listpermissions("send", newcomer) == []
    peers = api.check("GET", "/api/peers", web.get("/api/peers"))
    assert len(peers) == 1
    log.info("disconnecting the peer through the console")
    reply = web.post_json("/api/peers/disconnect", {"peer": peers[0]["addr"]})
    assert api.check("POST", "/api/peers/disconnect", reply)["disconnected"] == peers[0]["addr"]
    wait_until(lambda: any(p["addr"] != peers[0]["addr"] or p.get("conntime", 0) !=
                           peers[0].get("conntime") for p in node1.getpeerinfo())
               or not node1.getpeerinfo(), msg="the peer disconnected (or redialled anew)")
