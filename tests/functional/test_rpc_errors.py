"""JSON-RPC error paths over real HTTP, and that a failed call changes nothing.

What: wrong or missing credentials (HTTP 401, no JSON body); malformed requests (-32700,
-32600: params as an object, wrong chain_name); unknown method (-32601, HTTP 404); wrong
parameter count (-1 with the method's help text); unknown stream (-708); bad hex (-8);
block out of range (-711); duplicate stream name in another case (-705); batches; and that
none of the failures changed the streams, the mempool or the chain.

How: one node with mining paused, so the mempool and chain can be compared exactly before
and after; raw requests go through http.client to see status codes and bodies as sent.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging

import pytest
from framework import assert_raises_rpc_error

from node.client import RpcAuthError

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.rpc_errors")


def post(node, body: bytes | str, *, user: str | None = None, password: str | None = None,
         auth: bool = True, path: str = "/") -> tuple[int, http.client.HTTPMessage, bytes]:
    """One raw HTTP POST to the node: (status, headers, body)."""
    headers = {"Content-Type": "application/json"}
    if auth:
        token = f"{user or node.rpcuser}:{password or node.rpcpassword}"
        headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", node.rpcport, timeout=30)
    try:
        conn.request("POST", path, body=body if isinstance(body, bytes) else body.encode(),
                     headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def call_raw(node, request: object) -> tuple[int, object]:
    status, _, body = post(node, json.dumps(request))
    return status, json.loads(body)


def test_http_level_errors(harness):
    node = harness.start_node()

    log.info("wrong password and missing credentials: HTTP 401 without a JSON body")
    for kwargs in ({"password": "wrong-" + node.rpcpassword}, {"user": "someone"},
                   {"auth": False}):
        status, headers, body = post(node, '{"method":"getinfo","params":[],"id":1}', **kwargs)
        assert status == 401, kwargs
        assert headers["WWW-Authenticate"].startswith("Basic")
        assert headers.get_content_type() != "application/json"
        with pytest.raises(ValueError):
            json.loads(body)
    with pytest.raises(RpcAuthError):
        node.client(password="wrong").call("getinfo")

    log.info("parse error, params object, wrong chain name: -32700 / -32600")
    status, _, body = post(node, b"{not json")
    assert status == 500 and json.loads(body)["error"]["code"] == -32700
    status, reply = call_raw(node, {"method": "getinfo", "params": {}, "id": 1})
    assert status == 400 and reply["error"]["code"] == -32600 and reply["id"] == 1
    status, reply = call_raw(node, {"method": "getinfo", "params": [], "id": 2,
                                    "chain_name": "another"})
    assert status == 400 and reply["error"]["code"] == -32600

    log.info("unknown method: -32601 with HTTP 404; unknown path: plain 404")
    status, reply = call_raw(node, {"method": "nosuchmethod", "params": [], "id": "x"})
    assert status == 404
    assert reply == {"result": None, "error": reply["error"], "id": "x"}
    assert reply["error"]["code"] == -32601
    status, _, _ = post(node, '{"method":"getinfo"}', path="/other")
    assert status == 404

    log.info("a batch answers every element in order with HTTP 200")
    status, replies = call_raw(node, [
        {"method": "getblockcount", "params": [], "id": 1},
        {"method": "getblockhash", "params": [99999], "id": 2},
        {"method": "nosuchmethod", "id": 3},
        7,
    ])
    assert status == 200
    assert [r["id"] for r in replies[:3]] == [1, 2, 3]
    assert replies[0]["result"] == node.getblockcount()
    assert [r["error"]["code"] for r in replies[1:]] == [-711, -32601, -32600]


def test_failed_calls_report_codes_and_change_nothing(harness):
    node = harness.start_node()
    node.wait_for_confirmation(node.create("stream", "orders", True))
    node.pause("mining")
    node.publish("orders", "pending", {"text": "in the mempool"})
    before = (node.liststreams(), node.getmempoolinfo(), node.getrawmempool(),
              node.getblockcount(), node.listpermissions())

    log.info("wrong parameter count: -1 and the method's help text")
    for method, params in [("getblockhash", []), ("publish", ["orders", "k"]),
                           ("getinfo", [1]), ("create", ["stream"])]:
        err = assert_raises_rpc_error(-1, None, node.rpc.call, method, *params)
        assert err.message == node.help(method)
        assert method in err.message

    log.info("unknown stream -708, bad hex -8, bad key -8, block out of range -711")
    assert_raises_rpc_error(-708, None, node.publish, "nosuch", "k", "00")
    assert_raises_rpc_error(-708, None, node.liststreamitems, "nosuch")
    assert_raises_rpc_error(-708, None, node.getstreaminfo, "ab" * 32)
    assert_raises_rpc_error(-8, None, node.publish, "orders", "k", "zz")
    assert_raises_rpc_error(-8, None, node.publish, "orders", "k", "abc")
    assert_raises_rpc_error(-8, None, node.publish, "orders", "*", "00")
    assert_raises_rpc_error(-8, None, node.publish, "orders", [], "00")
    assert_raises_rpc_error(-8, None, node.publish, "orders", "k", {"yaml": "x"})
    assert_raises_rpc_error(-8, None, node.publishmulti, "orders",
                            [{"key": "ok", "data": "00"}, {"key": "bad", "data": "0g"}])
    assert_raises_rpc_error(-711, None, node.getblock, 1_000_000)
    assert_raises_rpc_error(-711, None, node.getblock, "cd" * 32)
    assert_raises_rpc_error(-711, None, node.getblockhash, node.getblockcount() + 1)

    log.info("duplicate stream name, in any case: -705")
    assert_raises_rpc_error(-705, None, node.create, "stream", "ORDERS", True)
    assert_raises_rpc_error(-705, None, node.create, "stream", "Orders", False)

    log.info("a transaction-level refusal is not half-applied either")
    assert_raises_rpc_error(-8, None, node.grant, node.getaddresses()[0], "send,nosuch")

    log.info("nothing changed")
    after = (node.liststreams(), node.getmempoolinfo(), node.getrawmempool(),
             node.getblockcount(), node.listpermissions())
    assert after == before
    node.resume("mining")
    node.wait_for_empty_mempool()
    assert [s["name"] for s in node.liststreams()] == ["root", "orders"]
    assert [i["keys"] for i in node.liststreamitems("orders")] == [["pending"]]
