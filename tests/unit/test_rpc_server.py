"""The JSON-RPC HTTP server, driven by real clients over loopback (spec §1.1-§1.7, §3.2).

Each test starts a real server on a free port with a few tiny handlers, talks to it with an
aiohttp client (or raw HTTP over a socket where the request must be malformed on purpose),
and checks status, headers and envelope.
"""

import asyncio
import base64
import contextlib
import ipaddress
import logging
import socket
import time

import aiohttp
import orjson
import pytest

from config.errors import ConfigError
from ledger import errors as le
from node.rpc.dispatch import Dispatcher, MethodTable, register_help
from node.rpc.server import RpcSettings, _ip_filter, make_rpc_app, start_rpc_server

CHAIN = "erpchain"
USER = "chainmillrpc"
PASSWORD = "s3cret-Pa55"
ECHO_HELP = "echo ( a b c )\n\nReturns its parameters.\n\nResult:\n(array) The parameters."

DOMAIN_ERRORS = {
    cls.__name__: cls
    for cls in (le.InvalidAddress, le.EntityNotFound, le.TxNotFound, le.BlockNotFound,
                le.PermissionDenied, le.DuplicateName, le.AlreadyInChain,
                le.InvalidTransaction, le.InvalidBlock, le.DecodeError, le.StoreError,
                ConfigError, ValueError)
}


def build_table() -> MethodTable:
    table = MethodTable()
    table.register("echo", lambda params: params, min_params=0, max_params=3, help=ECHO_HELP,
                   category="Control")

    async def async_echo(params):
        await asyncio.sleep(0)
        return params[0]

    table.register("aecho", async_echo, min_params=1, max_params=1, help="aecho x",
                   category="Control")

    def fail(params):
        raise DOMAIN_ERRORS[params[0]](params[1])

    table.register("fail", fail, min_params=2, max_params=2, help="fail name text",
                   category="Control")
    table.register_standard("stop", lambda params: "chainmill server stopping")
    table.register_standard("getinitstatus", lambda params: {"initialized": False})
    register_help(table)
    return table


class Rpc:
    """A running server plus a client; `call` and `post` return (status, headers, body)."""

    def __init__(self, server, dispatcher, session):
        self.server = server
        self.dispatcher = dispatcher
        self.session = session
        self.url = f"http://127.0.0.1:{server.port}/"

    async def post(self, data, *, auth=True, path="/", method="POST", headers=None):
        if isinstance(data, (dict, list)):
            data = orjson.dumps(data)
        headers = dict(headers or {})
        if auth:
            user, password = (USER, PASSWORD) if auth is True else auth
            headers["Authorization"] = basic(user, password)
        url = f"http://127.0.0.1:{self.server.port}{path}"
        async with self.session.request(method, url, data=data, headers=headers) as response:
            return response.status, response.headers, await response.read()

    async def call(self, method, *params, rid=1, **extra):
        status, headers, body = await self.post(
            {"method": method, "params": list(params), "id": rid, **extra})
        return status, orjson.loads(body)


@contextlib.asynccontextmanager
async def running(*, allow_methods=None, **settings):
    dispatcher = Dispatcher(build_table(), chain_name=CHAIN, allow_methods=allow_methods)
    config = RpcSettings(chain_name=CHAIN, user=USER, password=PASSWORD, port=0)
    for name, value in settings.items():
        setattr(config, name, value)
    server = await start_rpc_server(dispatcher, config)
    connector = aiohttp.TCPConnector(force_close=True)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            yield Rpc(server, dispatcher, session)
    finally:
        await server.close()


def run(scenario):
    """Run `scenario(rpc)` against a fresh default server."""

    async def main():
        async with running() as rpc:
            await scenario(rpc)

    asyncio.run(main())


async def raw_http(port: int, request: bytes, host: str = "127.0.0.1"):
    """Send raw bytes, read one response (its Content-Length, else until the server closes,
    since keep-alive is on by default): (status, headers dict, body)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        lines = head[:-4].decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if "content-length" in headers:
            payload = await asyncio.wait_for(
                reader.readexactly(int(headers["content-length"])), timeout=10)
        else:
            payload = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    return int(lines[0].split()[1]), headers, payload


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def auth_header(user=USER, password=PASSWORD) -> bytes:
    return b"Authorization: " + basic(user, password).encode() + b"\r\n"


# --- success and envelope -------------------------------------------------------------------


def test_rpc_server_success_envelope_headers_and_member_order():
    async def scenario(rpc):
        status, headers, body = await rpc.post(
            {"jsonrpc": "2.0", "id": 7, "method": "echo", "params": ["a", 1],
             "chain_name": CHAIN})
        assert status == 200
        assert body == b'{"result":["a",1],"error":null,"id":7}\n'
        assert list(orjson.loads(body)) == ["result", "error", "id"]
        assert headers["Content-Type"] == "application/json"
        assert headers["Server"] == "multichain-json-rpc/2.3.3 chainmill/0.1.0"  # issue 11.7
        assert headers["Connection"].lower() == "close"
        assert "Date" in headers
        assert int(headers["Content-Length"]) == len(body)

    run(scenario)


@pytest.mark.parametrize("rid", ["42", 42, 4.5, None, {"a": [1]}, "", 0])
def test_rpc_server_echoes_id_verbatim(rid):
    async def scenario(rpc):
        status, reply = await rpc.call("echo", rid=rid)
        assert status == 200 and reply["id"] == rid
        status, _, body = await rpc.post({"method": "echo"})
        assert orjson.loads(body)["id"] is None
        # Errors carry the id too.
        status, reply = await rpc.call("nosuch", rid=rid)
        assert status == 404 and reply["id"] == rid

    run(scenario)


def test_rpc_server_async_handler_and_get_verb():
    async def scenario(rpc):
        status, reply = await rpc.call("aecho", {"x": 1})
        assert (status, reply["result"]) == (200, {"x": 1})
        status, _, body = await rpc.post({"method": "echo", "id": 1}, method="GET")
        assert status == 200 and orjson.loads(body)["result"] == []

    run(scenario)


# --- JSON-RPC errors the transport owns ---------------------------------------------------


def test_rpc_server_parse_error():
    async def scenario(rpc):
        for bad in (b'{"method": "echo"', b"", b"\xff\xfe", b"nul"):
            status, _, body = await rpc.post(bad)
            assert status == 500
            assert orjson.loads(body) == {"result": None,
                                          "error": {"code": -32700, "message": "Parse error"},
                                          "id": None}
        for scalar in (b"5", b'"echo"', b"null", b"true"):
            status, _, body = await rpc.post(scalar)
            reply = orjson.loads(body)
            assert status == 500 and reply["error"]["code"] == -32700 and reply["id"] is None

    run(scenario)


def test_rpc_server_invalid_requests_are_400():
    async def scenario(rpc):
        cases = [
            {"method": "echo", "params": {"a": 1}, "id": 1},
            {"method": "echo", "params": "a", "id": 1},
            {"method": "echo", "id": 1, "chain_name": "otherchain"},
            {"method": "echo", "id": 1, "chain_name": 5},
            {"method": 5, "id": 1},
            {"method": ["echo"], "id": 1},
            {"params": [], "id": 1},
        ]
        for request in cases:
            status, _, body = await rpc.post(request)
            reply = orjson.loads(body)
            assert status == 400, request
            assert reply["error"]["code"] == -32600 and reply["result"] is None
            assert reply["id"] == 1

    run(scenario)


def test_rpc_server_unknown_method_is_404():
    async def scenario(rpc):
        status, reply = await rpc.call("getfoo", rid="x")
        assert status == 404
        assert reply == {"result": None,
                         "error": {"code": -32601, "message": "Method not found"}, "id": "x"}

    run(scenario)


def test_rpc_server_wrong_param_count_returns_full_help_text():
    async def scenario(rpc):
        status, reply = await rpc.call("echo", 1, 2, 3, 4)
        assert status == 500
        assert reply["error"] == {"code": -1, "message": ECHO_HELP}
        status, reply = await rpc.call("aecho")
        assert status == 500 and reply["error"] == {"code": -1, "message": "aecho x"}

    run(scenario)


@pytest.mark.parametrize(
    ("name", "code"),
    [("InvalidAddress", -5), ("EntityNotFound", -708), ("TxNotFound", -710),
     ("BlockNotFound", -711), ("PermissionDenied", -704), ("DuplicateName", -705),
     ("AlreadyInChain", -27), ("InvalidTransaction", -26), ("InvalidBlock", -25),
     ("DecodeError", -22), ("StoreError", -32603), ("ConfigError", -8), ("ValueError", -8)],
)
def test_rpc_server_handler_errors_are_mapped(name, code):
    # A store failure or a Python error carries internal text: the client gets a fixed message
    # (issue 15.3); domain errors keep theirs.
    internal = {"StoreError": "Chain store error (details in the node's log)",
                "ValueError": "Invalid parameter"}

    async def scenario(rpc):
        status, reply = await rpc.call("fail", name, f"{name} happened", rid=3)
        assert status == 500
        message = internal.get(name, f"{name} happened")
        assert reply == {"result": None, "error": {"code": code, "message": message}, "id": 3}

    run(scenario)


def test_rpc_server_batch_elements_are_independent_and_ordered():
    async def scenario(rpc):
        batch = [
            {"method": "echo", "params": [1], "id": "a"},
            5,
            {"method": "nosuch", "id": "c"},
            {"method": "fail", "params": ["EntityNotFound", "no stream"], "id": "d"},
            {"method": "echo", "params": {}, "id": "e"},
            {"method": "echo", "params": [2], "id": "f"},
        ]
        status, _, body = await rpc.post(batch)
        assert status == 200
        replies = orjson.loads(body)
        assert [r["id"] for r in replies] == ["a", None, "c", "d", "e", "f"]
        assert [r["error"] and r["error"]["code"] for r in replies] == [
            None, -32600, -32601, -708, -32600, None]
        assert replies[0]["result"] == [1] and replies[5]["result"] == [2]
        assert all(list(r) == ["result", "error", "id"] for r in replies)

    run(scenario)


def test_rpc_server_empty_batch():
    async def scenario(rpc):
        status, _, body = await rpc.post(b"[]")
        assert (status, body) == (200, b"[]\n")

    run(scenario)


def test_rpc_server_warmup_refuses_all_but_stop_getinitstatus_help():
    async def scenario(rpc):
        rpc.dispatcher.warmup_status = "Verifying blocks..."
        status, reply = await rpc.call("echo")
        assert status == 500
        assert reply["error"] == {"code": -28, "message": "Verifying blocks..."}
        for method in ("stop", "getinitstatus", "help"):
            status, reply = await rpc.call(method)
            assert status == 200 and reply["error"] is None, method
        assert (await rpc.call("stop"))[1]["result"] == "chainmill server stopping"
        rpc.dispatcher.warmup_status = None
        status, reply = await rpc.call("echo", 1)
        assert (status, reply["result"]) == (200, [1])

    run(scenario)


def test_rpc_server_rpcallowmethod():
    async def main():
        async with running(allow_methods={"aecho"}) as rpc:
            status, reply = await rpc.call("echo")
            assert status == 500
            assert reply["error"]["code"] == -701
            status, reply = await rpc.call("aecho", 1)
            assert (status, reply["result"]) == (200, 1)
            status, reply = await rpc.call("help")
            assert status == 200 and "aecho x" in reply["result"]
            status, reply = await rpc.call("nosuch")
            assert status == 404

    asyncio.run(main())


# --- HTTP layer: auth, path, verb, size, connection ------------------------------------------


def test_rpc_server_missing_auth_is_401_immediately_without_json():
    async def scenario(rpc):
        started = time.monotonic()
        status, headers, body = await rpc.post({"method": "echo", "id": 1}, auth=None)
        elapsed = time.monotonic() - started
        assert status == 401
        assert elapsed < 0.2
        assert headers["WWW-Authenticate"] == 'Basic realm="jsonrpc"'
        assert headers["Content-Type"].startswith("text/html")
        assert b"401" in body and b"result" not in body
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(body)

    run(scenario)


def test_rpc_server_wrong_password_waits_logs_and_does_not_block_others(caplog):
    caplog.set_level(logging.WARNING, logger="node.rpc.server")

    async def scenario(rpc):
        started = time.monotonic()
        bad = asyncio.ensure_future(
            rpc.post({"method": "echo", "id": 1}, auth=(USER, "guess")))
        # A good request sent meanwhile is answered while the bad one still waits.
        status, reply = await rpc.call("echo", 1)
        assert status == 200 and reply["result"] == [1]
        assert not bad.done()
        status, headers, body = await bad
        assert time.monotonic() - started >= 0.2
        assert status == 401
        assert headers["WWW-Authenticate"] == 'Basic realm="jsonrpc"'
        assert b"result" not in body
        # Wrong user, right password: also refused.
        status, _, _ = await rpc.post({"method": "echo"}, auth=("someone", PASSWORD))
        assert status == 401

    run(scenario)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("127.0.0.1" in message for message in warnings)


def test_rpc_server_accepts_unpadded_or_spaced_basic_credentials():
    async def scenario(rpc):
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).rstrip(b"=")
        body = b'{"method":"echo","id":1}'
        for header in (b"Authorization: Basic " + token + b"\r\n",
                       b"Authorization: Basic   " + token + b"==  \r\n"):
            request = (b"POST / HTTP/1.1\r\nHost: x\r\n" + header +
                       b"Content-Length: %d\r\n\r\n" % len(body) + body)
            status, _, payload = await raw_http(rpc.server.port, request)
            assert status == 200 and orjson.loads(payload)["result"] == []

    run(scenario)


def test_rpc_server_other_path_is_404_not_found():
    async def scenario(rpc):
        for path in ("/rest/chaininfo", "/wallet", "//"):
            status, headers, body = await rpc.post({"method": "echo"}, path=path)
            assert status == 404
            assert headers["Content-Type"].startswith("text/plain")
            assert body == b"Not Found"

    run(scenario)


def test_rpc_server_other_verbs_are_refused():
    async def scenario(rpc):
        for verb in ("PUT", "DELETE", "PATCH"):
            status, _, _ = await rpc.post({"method": "echo"}, method=verb)
            assert status == 405

    run(scenario)


def test_rpc_server_oversized_body_is_413_without_reading_it():
    async def main():
        async with running(max_body=1024) as rpc:
            # Content-Length announces too much and no body follows: the answer must come
            # from the header alone.
            request = (b"POST / HTTP/1.1\r\nHost: x\r\n" + auth_header() +
                       b"Content-Type: application/json\r\nContent-Length: 5000000\r\n\r\n")
            status, headers, _ = await raw_http(rpc.server.port, request)
            assert status == 413
            # A chunked body has no Content-Length: the capped read catches it.
            big = b'{"method":"echo","params":["' + b"x" * 4096 + b'"]}'

            async def chunks():
                for i in range(0, len(big), 512):
                    yield big[i:i + 512]

            status, _, _ = await rpc.post(chunks())  # an async generator is sent chunked
            assert status == 413
            # Up to the limit is fine.
            fits = b'{"method":"echo","params":["' + b"x" * 900 + b'"]}'
            status, _, body = await rpc.post(fits)
            assert status == 200 and orjson.loads(body)["result"] == ["x" * 900]

    asyncio.run(main())


def test_rpc_server_keepalive_only_when_enabled_and_client_agrees():
    body = b'{"method":"echo","id":1}'

    async def main():
        async with running(keepalive=True) as rpc:
            reader, writer = await asyncio.open_connection("127.0.0.1", rpc.server.port)
            request = (b"POST / HTTP/1.1\r\nHost: x\r\n" + auth_header() +
                       b"Content-Length: %d\r\n\r\n" % len(body) + body)
            try:
                for _ in range(2):  # two requests over one connection
                    writer.write(request)
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                    assert head.startswith(b"HTTP/1.1 200")
                    assert b"connection: close" not in head.lower()
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    assert orjson.loads(await reader.readexactly(length))["id"] == 1
            finally:
                writer.close()
            closing = (b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + auth_header() +
                       b"Content-Length: %d\r\n\r\n" % len(body) + body)
            status, headers, _ = await raw_http(rpc.server.port, closing)
            assert status == 200 and headers["connection"].lower() == "close"

    asyncio.run(main())


def test_rpc_server_keepalive_on_by_default_and_rpckeepalive_0_turns_it_off():
    # MultiChain 2.3 keeps connections alive by default (issue 11 item 7).
    assert RpcSettings(chain_name=CHAIN, user=USER, password=PASSWORD).keepalive is True
    body = b'{"method":"echo","id":1}'
    request = (b"POST / HTTP/1.1\r\nHost: x\r\n" + auth_header() +
               b"Content-Length: %d\r\n\r\n" % len(body) + body)

    async def main():
        async with running() as rpc:
            reader, writer = await asyncio.open_connection("127.0.0.1", rpc.server.port)
            try:
                for _ in range(2):
                    writer.write(request)
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                    assert head.startswith(b"HTTP/1.1 200")
                    assert b"connection: close" not in head.lower()
                    assert b"server: multichain-json-rpc/" in head.lower()
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    await reader.readexactly(length)
            finally:
                writer.close()
        async with running(keepalive=False) as rpc:
            status, headers, _ = await raw_http(rpc.server.port, request)
            assert status == 200 and headers["connection"].lower() == "close"

    asyncio.run(main())


def test_rpc_server_binds_loopback_v4_and_v6_on_one_port():
    async def main():
        async with running() as rpc:
            assert rpc.server.hosts[0] == "127.0.0.1"
            body = b'{"method":"echo","id":1}'
            request = (b"POST / HTTP/1.1\r\nHost: x\r\n" + auth_header() +
                       b"Content-Length: %d\r\n\r\n" % len(body) + body)
            for host in rpc.server.hosts:
                status, _, payload = await raw_http(rpc.server.port, request, host=host)
                assert status == 200 and orjson.loads(payload)["id"] == 1

    asyncio.run(main())


def test_rpc_server_refuses_empty_or_user_equal_password():
    dispatcher = Dispatcher(build_table(), chain_name=CHAIN)
    for password in ("", USER):
        with pytest.raises(ConfigError):
            make_rpc_app(dispatcher, RpcSettings(chain_name=CHAIN, user=USER, password=password))


# --- source address filter ------------------------------------------------------------------


def test_rpc_server_ip_filter_rules():
    allowed = _ip_filter([ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_network("fd00::/8")])
    for host in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1", "10.1.2.3", "fd00::2",
                 "::ffff:10.1.200.1"):
        assert allowed(host), host
    for host in ("10.2.0.1", "192.0.2.7", "::2", "fe80::1", "", "not-an-ip", None):
        assert not allowed(host), host
    assert not _ip_filter([])("10.1.2.3")


def local_non_loopback_ipv4() -> str | None:
    """An address of this host that is not loopback, to act as a 'remote' client."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent for UDP connect
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if ipaddress.ip_address(address).is_loopback else address


def test_rpc_server_forbids_clients_outside_rpcallowip():
    address = local_non_loopback_ipv4()
    if address is None:
        pytest.skip("this host has no non-loopback IPv4 address to connect from")
    body = b'{"method":"echo","id":1}'
    request = (b"POST / HTTP/1.1\r\nHost: x\r\n" + auth_header() +
               b"Content-Length: %d\r\n\r\n" % len(body) + body)

    async def main():
        elsewhere = [ipaddress.ip_network("198.51.100.0/24")]
        async with running(allow_ips=elsewhere, bind=[address]) as rpc:
            status, headers, payload = await raw_http(rpc.server.port, request, host=address)
            assert (status, payload) == (403, b"Forbidden")
            assert headers["content-type"].startswith("text/plain")
        mine = [ipaddress.ip_network(f"{address}/32")]
        async with running(allow_ips=mine, bind=[address]) as rpc:
            status, _, payload = await raw_http(rpc.server.port, request, host=address)
            assert status == 200 and orjson.loads(payload)["result"] == []

    asyncio.run(main())
