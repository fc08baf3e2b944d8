"""The RPC port's own HTTP/1.1 layer (node/rpc/http.py, node/rpc/connection.py).

The parser and the chunked decoder are tested as pure functions; the connection is tested on
a real server on a free loopback port with raw sockets, for what an HTTP client library
would not send on purpose: pipelined requests, bytes one at a time, HTTP/1.0, Expect,
ambiguous framing, HEAD, a stop while a call runs.
"""

from __future__ import annotations

import asyncio
import contextlib

import orjson
import pytest
from test_rpc_server import CHAIN, PASSWORD, USER, auth_header, build_table

from node.rpc.dispatch import Dispatcher
from node.rpc.http import (
    MAX_CACHED_HEAD,
    ChunkedBody,
    HeadCache,
    HttpError,
    Response,
    parse_head,
    response_bytes,
)
from node.rpc.probes import Probes
from node.rpc.server import RpcSettings, start_rpc_server


def head(*lines: bytes) -> bytes:
    return b"\r\n".join(lines)


# --- the request-head parser ------------------------------------------------------------------


def test_rpc_http_parse_head_fields_keepalive_and_framing():
    request = parse_head(head(b"POST /?x=1 HTTP/1.1", b"Host: a", b"CONTENT-length:  12 ",
                              b"Authorization: Basic abc", b"X-A: 1", b"x-a: 2"))
    assert (request.method, request.path, request.version) == (b"POST", "/", 1)
    assert request.content_length == 12 and not request.chunked
    assert request.keep_alive and not request.expect_continue
    assert request.headers[b"authorization"] == b"Basic abc"
    assert request.headers[b"x-a"] == b"1, 2"
    assert not parse_head(head(b"POST / HTTP/1.1", b"Connection: Close")).keep_alive
    assert not parse_head(b"POST / HTTP/1.0").keep_alive
    assert parse_head(head(b"POST / HTTP/1.0", b"Connection: keep-alive")).keep_alive
    chunked = parse_head(head(b"POST / HTTP/1.1", b"Transfer-Encoding: Chunked",
                              b"Expect: 100-continue"))
    assert chunked.chunked and chunked.content_length is None and chunked.expect_continue
    assert parse_head(b"GET http://node:8570/health?x HTTP/1.1").path == "/health"
    assert parse_head(b"GET /%68ealth HTTP/1.1").path == "/health"
    assert parse_head(b"GET // HTTP/1.1").path == "//"


@pytest.mark.parametrize(("raw", "status"), [
    (b"POST / HTTP/2.0", 400),
    (b"POST /\x00 HTTP/1.1", 400),
    (b"POST  / HTTP/1.1", 400),
    (b"\x16\x03\x01\x02\x00", 400),
    (b"POST relative HTTP/1.1", 400),
    (b"GET /%00 HTTP/1.1", 400),
    (head(b"POST / HTTP/1.1", b"Bad Name: x"), 400),
    (head(b"POST / HTTP/1.1", b" folded: x"), 400),
    (head(b"POST / HTTP/1.1", b"X: a\x00b"), 400),
    (head(b"POST / HTTP/1.1", b"Content-Length: abc"), 400),
    (head(b"POST / HTTP/1.1", b"Content-Length: -1"), 400),
    (head(b"POST / HTTP/1.1", b"Content-Length: 1", b"Content-Length: 2"), 400),
    (head(b"POST / HTTP/1.1", b"Authorization: a", b"Authorization: b"), 400),
    (head(b"POST / HTTP/1.1", b"Content-Length: 1", b"Transfer-Encoding: chunked"), 400),
    (head(b"POST / HTTP/1.1", b"Transfer-Encoding: gzip, chunked"), 501),
    (head(b"POST / HTTP/1.0", b"Transfer-Encoding: chunked"), 501),
    (head(b"POST / HTTP/1.1", b"Expect: 200-ok"), 417),
    (head(b"POST / HTTP/1.1", b"X: " + b"a" * 9000), 431),
    (head(b"POST / HTTP/1.1", *[b"X: 1"] * 101), 431),
])
def test_rpc_http_parse_head_refuses_malformed_and_ambiguous_heads(raw, status):
    with pytest.raises(HttpError) as info:
        parse_head(raw)
    assert info.value.status == status


def test_rpc_http_head_cache_parses_as_parse_head_and_stays_bounded():
    cache = HeadCache(entries=3)
    call = head(b"POST / HTTP/1.1", b"Host: a", b"Authorization: Basic eA==",
                b"Content-Length: 12")
    first = cache.parse(call)
    assert first == parse_head(call) and cache.parse(call) is first  # parsed once
    closing = head(b"POST / HTTP/1.1", b"Connection: close", b"Content-Length: 12")
    assert not cache.parse(closing).keep_alive and cache.parse(call).keep_alive
    bad = head(b"POST / HTTP/1.1", b"Content-Length: 1", b"Content-Length: 2")
    for _ in range(2):  # refused every time, never remembered
        with pytest.raises(HttpError):
            cache.parse(bad)
    for n in range(10):
        assert cache.parse(head(b"POST / HTTP/1.1", b"Content-Length: %d" % n)).content_length == n
        assert len(cache._parsed) <= 3
    long_head = head(b"POST / HTTP/1.1", b"X: " + b"a" * MAX_CACHED_HEAD)
    assert cache.parse(long_head).path == "/" and long_head not in cache._parsed
    with pytest.raises(AttributeError):
        first.keep_alive = False  # shared between requests: read-only


def test_rpc_http_parse_head_allows_the_same_content_length_twice():
    request = parse_head(head(b"POST / HTTP/1.1", b"Content-Length: 3", b"Content-Length: 3"))
    assert request.content_length == 3


# --- the chunked decoder ----------------------------------------------------------------------


def test_rpc_http_chunked_body_fed_in_any_pieces():
    wire = b"5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\nNEXT"
    for step in (1, 2, 3, 7, len(wire)):
        decoder = ChunkedBody(limit=100)
        pending = bytearray()  # what the connection keeps in its buffer
        for start in range(0, len(wire), step):
            pending += wire[start:start + step]
            del pending[:decoder.feed(pending)]
            if decoder.done:
                break
        assert decoder.done and decoder.body() == b"hello 0123456789"
        assert bytes(pending) + wire[start + step:] == b"NEXT"


@pytest.mark.parametrize(("wire", "status"), [
    (b"zz\r\n", 400),
    (b"5\r\nhelloX\r\n", 400),
    (b"-1\r\n", 400),
    (b"65\r\n", 413),
    (b"40\r\n" + b"a" * 64 + b"\r\n40\r\n", 413),
    (b"0\r\nbad trailer\r\n\r\n", 400),
    (b"0\r\n" + b"T: x\r\n" * 6000, 431),
    (b"1" * 2000, 400),
])
def test_rpc_http_chunked_body_refuses_bad_framing_and_oversize(wire, status):
    with pytest.raises(HttpError) as info:
        ChunkedBody(limit=100).feed(wire)
    assert info.value.status == status


def test_rpc_http_response_bytes_head_fields_and_head_only():
    response = Response(200, b'{"a":1}\n')
    wire = response_bytes(response, version=1, keep_alive=True, server=b"s/1", date=b"D")
    assert wire == (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 8"
                    b"\r\nDate: D\r\nServer: s/1\r\n\r\n" + b'{"a":1}\n')
    closing = response_bytes(Response(404, b"Not Found", b"text/plain",
                                      headers=((b"X-A", b"1"),)),
                             version=0, keep_alive=False, server=b"s", date=b"D",
                             head_only=True)
    assert closing.startswith(b"HTTP/1.0 404 Not Found\r\n")
    assert b"X-A: 1\r\n" in closing and b"Connection: close\r\n" in closing
    assert closing.endswith(b"\r\n\r\n") and b"Content-Length: 9" in closing
    kept_10 = response_bytes(response, version=0, keep_alive=True, server=b"s", date=b"D")
    assert b"Connection: keep-alive\r\n" in kept_10


# --- the connection, on a real server -----------------------------------------------------------


def rpc_request(body: bytes, *extra: bytes, version: bytes = b"1.1") -> bytes:
    return (b"POST / HTTP/" + version + b"\r\nHost: x\r\n" + auth_header() + b"".join(extra) +
            b"Content-Length: %d\r\n\r\n" % len(body) + body)


@contextlib.asynccontextmanager
async def serving(table=None, probes=None, **settings):
    config = RpcSettings(chain_name=CHAIN, user=USER, password=PASSWORD, port=0, **settings)
    server = await start_rpc_server(Dispatcher(table or build_table(), chain_name=CHAIN),
                                    config, probes)
    try:
        yield server
    finally:
        await server.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(head, body) of one response with a Content-Length."""
    wire = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(wire.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return wire, await asyncio.wait_for(reader.readexactly(length), 10)


async def closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), 10) == b""
    except ConnectionResetError:
        return True


def test_rpc_http_pipelined_requests_are_answered_in_order_on_one_connection():
    async def main():
        async with serving() as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            bodies = [b'{"method":"echo","params":[%d],"id":%d}' % (i, i) for i in range(5)]
            bodies[2] = b'{"method":"aecho","params":["slow"],"id":2}'  # an async handler
            writer.write(b"".join(rpc_request(body) for body in bodies))
            for i in range(5):
                _, payload = await read_response(reader)
                assert orjson.loads(payload)["id"] == i
            writer.close()

    asyncio.run(main())


def test_rpc_http_plain_methods_are_answered_without_a_task_async_ones_in_one():
    """The fast path: a plain-function method runs straight from the received bytes."""
    seen: list[object] = []
    table = build_table()
    table.register("where", lambda params: seen.append(asyncio.current_task()) or "here",
                   min_params=0, max_params=0, help="where\n\nNotes its task.",
                   category="Control")

    async def awhere(params):
        seen.append(asyncio.current_task())
        return "there"

    table.register("awhere", awhere, min_params=0, max_params=0,
                   help="awhere\n\nNotes its task.", category="Control")

    async def main():
        async with serving(table) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            for name in (b"where", b"awhere"):
                writer.write(rpc_request(b'{"method":"%s","id":1}' % name))
                _, payload = await read_response(reader)
                assert orjson.loads(payload)["error"] is None
            writer.close()

    asyncio.run(main())
    assert seen[0] is None and seen[1] is not None


def test_rpc_http_request_sent_one_byte_at_a_time():
    async def main():
        async with serving() as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            for byte in rpc_request(b'{"method":"echo","params":["slow"],"id":9}'):
                writer.write(bytes([byte]))
                await writer.drain()
            wire, payload = await read_response(reader)
            assert wire.startswith(b"HTTP/1.1 200 OK")
            assert orjson.loads(payload) == {"result": ["slow"], "error": None, "id": 9}
            writer.close()

    asyncio.run(main())


def test_rpc_http_chunked_request_body_and_expect_continue():
    async def main():
        async with serving() as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            body = b'{"method":"echo","params":["chunked"],"id":1}'
            writer.write(b"POST / HTTP/1.1\r\nHost: x\r\n" + auth_header() +
                         b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, body[:10], len(body) - 10,
                                                                  body[10:]))
            _, payload = await read_response(reader)
            assert orjson.loads(payload)["result"] == ["chunked"]
            # The connection stays usable after a chunked request.
            writer.write(rpc_request(b'{"method":"echo","id":2}'))
            assert orjson.loads((await read_response(reader))[1])["id"] == 2
            writer.close()

    asyncio.run(main())


def test_rpc_http_refused_expect_continue_gets_the_refusal_not_100():
    async def main():
        async with serving(max_body=100) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                         b"Content-Length: 50\r\n\r\n")  # no credentials
            wire = await asyncio.wait_for(reader.read(), 10)
            assert wire.startswith(b"HTTP/1.1 401 ")
            writer.close()

    asyncio.run(main())


def test_rpc_http_1_0_keeps_alive_only_when_asked():
    async def main():
        async with serving() as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            body = b'{"method":"echo","id":1}'
            for _ in range(2):
                writer.write(rpc_request(body, b"Connection: keep-alive\r\n", version=b"1.0"))
                wire, _ = await read_response(reader)
                assert wire.startswith(b"HTTP/1.0 200 OK")
                assert b"connection: keep-alive" in wire.lower()
            writer.write(rpc_request(body, version=b"1.0"))
            wire, _ = await read_response(reader)
            assert b"connection: close" in wire.lower()
            assert await closed(reader)
            writer.close()

    asyncio.run(main())


@pytest.mark.parametrize("wire", [
    b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
    b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"NOT HTTP AT ALL\r\n\r\n",
])
def test_rpc_http_ambiguous_or_malformed_requests_get_400_and_close(wire):
    async def main():
        async with serving() as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(wire + rpc_request(b'{"method":"echo","id":1}'))  # smuggled next
            reply = await asyncio.wait_for(reader.read(), 10)
            assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
            assert reply.count(b"HTTP/1.1") == 1  # the request behind it was not served
            writer.close()

    asyncio.run(main())


def test_rpc_http_probes_answer_head_without_a_body_and_refuse_post():
    async def health():
        return 200, {"ready": True}

    probes = Probes(health=health, metrics=lambda: b"chainmill_height 5\n")

    async def main():
        async with serving(probes=probes) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n"
                         b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            wire = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert wire.startswith(b"HTTP/1.1 200 OK")
            assert b"Content-Length: 14\r\n" in wire  # of the body a GET would get
            wire, payload = await read_response(reader)  # HEAD sent no body: this is GET's
            assert b"text/plain; version=0.0.4" in wire and payload == b"chainmill_height 5\n"
            writer.write(b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            wire, _ = await read_response(reader)
            assert wire.startswith(b"HTTP/1.1 405") and b"Allow: GET, HEAD\r\n" in wire
            writer.close()

    asyncio.run(main())


def test_rpc_http_close_lets_a_running_call_answer_and_drops_idle_connections():
    release = asyncio.Event()
    table = build_table()

    async def block(params):
        await release.wait()
        return "done"

    table.register("block", block, min_params=0, max_params=0, help="block", category="Control")

    async def main():
        async with serving(table) as server:
            idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", server.port)
            idle_writer.write(rpc_request(b'{"method":"echo","id":1}'))
            await read_response(idle_reader)  # now an idle keep-alive connection
            busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", server.port)
            busy_writer.write(rpc_request(b'{"method":"block","id":2}'))
            while not any(c.busy for conns in server.guard._by_host.values() for c in conns):
                await asyncio.sleep(0.01)
            closing = asyncio.ensure_future(server.close())
            assert await closed(idle_reader)
            release.set()
            wire, payload = await read_response(busy_reader)
            assert orjson.loads(payload)["result"] == "done"
            assert b"connection: close" in wire.lower()
            assert await closed(busy_reader)
            await asyncio.wait_for(closing, 10)
            idle_writer.close()
            busy_writer.close()

    asyncio.run(main())
