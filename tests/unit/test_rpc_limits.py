"""RPC connection budgets (issue 15.2): per-address and total caps with eviction of idle
connections, the idle deadline, descriptor budgets, rate-limited log lines.

Servers are real (start_rpc_server on a free loopback port) and clients are real sockets;
"other client addresses" are other loopback addresses (127.0.0.2, ...), which Linux routes
to the loopback interface, so the per-address rules are exercised for real.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap

import orjson
from test_rpc_server import CHAIN, PASSWORD, USER, auth_header, build_table

from node.rpc.dispatch import Dispatcher
from node.rpc.limits import (
    DESCRIPTOR_RESERVE,
    MIN_RPC_CONNECTIONS,
    RateLimitedLog,
    p2p_connection_budget,
    rpc_connection_budget,
)
from node.rpc.server import RpcSettings, start_rpc_server

BODY = b'{"method":"echo","params":[1],"id":1}'
REQUEST = (b"POST / HTTP/1.1\r\nHost: x\r\n" + auth_header() +
           b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY)
HALF_REQUEST = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Le"


async def start(table=None, **settings):
    config = RpcSettings(chain_name=CHAIN, user=USER, password=PASSWORD, port=0, **settings)
    dispatcher = Dispatcher(table or build_table(), chain_name=CHAIN)
    return await start_rpc_server(dispatcher, config)


async def open_from(port: int, source: str):
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def answered(reader, writer) -> dict:
    """Send one request on an open connection and read its JSON reply."""
    writer.write(REQUEST)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return orjson.loads(await asyncio.wait_for(reader.readexactly(length), 10))


async def closed_by_server(reader) -> bool:
    """True when the server has closed the connection (EOF or reset), within a generous bound."""
    try:
        return await asyncio.wait_for(reader.read(), 20) == b""
    except ConnectionResetError:
        return True


def test_rpc_limits_rate_limited_log_writes_first_then_one_summary_per_interval(caplog):
    now = [100.0]
    note = RateLimitedLog(logging.getLogger("t.rate"), interval=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="t.rate"):
        written = [note("refused %s", i) for i in range(1000)]
        now[0] += 61
        written.append(note("refused %s", "later"))
    assert written.count(True) == 2 and written[0] and written[-1]
    assert [r.getMessage() for r in caplog.records] == [
        "refused 0", "refused later (and 999 more like it in the last 60 s)"]


def test_rpc_limits_descriptor_budgets_keep_p2p_and_rpc_apart():
    # 1,024 descriptors (the machine): neither cap may take the other's share.
    p2p = p2p_connection_budget(1024, 125)
    rpc = rpc_connection_budget(1024, 256, p2p)
    assert p2p == 125 and rpc == 256
    assert p2p + rpc + DESCRIPTOR_RESERVE <= 1024
    small_p2p = p2p_connection_budget(256, 125)
    small_rpc = rpc_connection_budget(256, 256, small_p2p)
    assert small_p2p == 96 and small_rpc == 48
    assert small_p2p + small_rpc + DESCRIPTOR_RESERVE <= 256
    assert rpc_connection_budget(70, 256, 125) == MIN_RPC_CONNECTIONS


def test_rpc_limits_soft_descriptor_limit_is_raised_to_the_hard_limit():
    script = textwrap.dedent("""
        import resource
        from node.rpc.limits import raise_descriptor_limit
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        got = raise_descriptor_limit()
        print(got, resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, env={**os.environ}).stdout.split()
    got, soft, hard = (int(x) for x in out)
    assert got == soft == hard


def test_rpc_limits_per_address_cap_evicts_idle_and_serves_other_addresses():
    async def main():
        server = await start(max_connections=50, max_connections_per_host=4)
        try:
            flood = [await open_from(server.port, "127.0.0.2") for _ in range(12)]
            # The oldest idle connections of that address were closed to admit the newer ones.
            for reader, _ in flood[:8]:
                assert await closed_by_server(reader)
            assert server.guard.count("127.0.0.2") == 4
            reader, writer = await open_from(server.port, "127.0.0.1")
            assert (await answered(reader, writer))["result"] == [1]
            # Keep-alive: a second call on the same connection.
            assert (await answered(reader, writer))["result"] == [1]
            writer.close()
            for _, w in flood:
                w.close()
        finally:
            await server.close()

    asyncio.run(main())


def test_rpc_limits_total_cap_evicts_from_the_busiest_address():
    async def main():
        server = await start(max_connections=6, max_connections_per_host=6)
        try:
            flood = [await open_from(server.port, "127.0.0.3") for _ in range(5)]
            own = await open_from(server.port, "127.0.0.1")
            newcomer = await open_from(server.port, "127.0.0.4")  # total is full: evicts
            assert await closed_by_server(flood[0][0])
            assert len(server.guard) == 6 and server.guard.count("127.0.0.3") == 4
            assert (await answered(*own))["result"] == [1]
            assert (await answered(*newcomer))["result"] == [1]
            for _, w in [*flood, own, newcomer]:
                w.close()
        finally:
            await server.close()

    asyncio.run(main())


def test_rpc_limits_busy_connections_are_not_evicted_and_newcomers_are_refused():
    release = asyncio.Event()
    table = build_table()

    async def block(params):
        await release.wait()
        return "done"

    table.register("block", block, min_params=0, max_params=0, help="block", category="Control")
    body = b'{"method":"block","id":2}'
    request = (b"POST / HTTP/1.1\r\nHost: x\r\n" + auth_header() +
               b"Content-Length: %d\r\n\r\n" % len(body) + body)

    async def main():
        server = await start(table, max_connections=50, max_connections_per_host=2)
        try:
            busy = [await open_from(server.port, "127.0.0.5") for _ in range(2)]
            for _, w in busy:
                w.write(request)

            async def both_busy():
                while not all(c.busy for c in server.guard._by_host.get("127.0.0.5", [])) or \
                        server.guard.count("127.0.0.5") < 2:
                    await asyncio.sleep(0.01)
            await asyncio.wait_for(both_busy(), 20)
            refused_reader, refused_writer = await open_from(server.port, "127.0.0.5")
            assert await closed_by_server(refused_reader)
            assert server.guard.refused == 1
            release.set()
            for reader, _ in busy:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                assert head.startswith(b"HTTP/1.1 200")
            for _, w in [*busy, (None, refused_writer)]:
                w.close()
        finally:
            await server.close()

    asyncio.run(main())


def test_rpc_limits_idle_and_half_sent_connections_are_closed_after_the_timeout():
    async def main():
        server = await start(idle_timeout=0.3)
        try:
            idle_reader, idle_writer = await open_from(server.port, "127.0.0.1")
            half_reader, half_writer = await open_from(server.port, "127.0.0.1")
            half_writer.write(HALF_REQUEST)
            used_reader, used_writer = await open_from(server.port, "127.0.0.1")
            assert (await answered(used_reader, used_writer))["result"] == [1]
            for reader in (idle_reader, half_reader, used_reader):
                assert await closed_by_server(reader)
            assert server.guard.expired >= 2 and len(server.guard) == 0
            for w in (idle_writer, half_writer, used_writer):
                w.close()
        finally:
            await server.close()

    asyncio.run(main())


async def raw_exchange(port: int, data: bytes) -> bytes:
    """Send bytes on a fresh connection and read what comes back until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()


def test_rpc_limits_id_nested_255_deep_gets_a_json_error_not_html():
    async def main():
        server = await start(keepalive=False)
        try:
            for depth, code in ((255, -32600), (2000, -32700)):
                body = (b'{"method":"echo","id":' + b"[" * depth + b"]" * depth + b"}")
                reply = await raw_exchange(server.port, (
                    b"POST / HTTP/1.1\r\nHost: x\r\n" + auth_header() +
                    b"Content-Length: %d\r\n\r\n" % len(body) + body))
                head, _, payload = reply.partition(b"\r\n\r\n")
                assert b"application/json" in head.lower(), head
                envelope = orjson.loads(payload)
                assert envelope["error"]["code"] == code and envelope["id"] is None
            # Deep params echoed back cannot be encoded either: still a JSON error, id kept.
            body = b'{"method":"echo","id":5,"params":[' + b"[" * 300 + b"]" * 300 + b"]}"
            reply = await raw_exchange(server.port, (
                b"POST / HTTP/1.1\r\nHost: x\r\n" + auth_header() +
                b"Content-Length: %d\r\n\r\n" % len(body) + body))
            envelope = orjson.loads(reply.partition(b"\r\n\r\n")[2])
            assert envelope["error"]["code"] == -32603 and envelope["id"] == 5
        finally:
            await server.close()

    asyncio.run(main())


def test_rpc_limits_malformed_http_and_failed_logins_are_logged_at_a_bounded_rate(caplog):
    caplog.set_level(logging.DEBUG)
    garbage = [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(40)) + b"\r\n\r\n",
               b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
               b"POST / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n",
               b"POST /\x00 HTTP/1.1\r\n\r\n"]
    wrong = (b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" +
             auth_header(password="guess") + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY)

    async def main():
        server = await start()
        try:
            for _ in range(25):
                for data in garbage:
                    reply = await raw_exchange(server.port, data)
                    assert reply == b"" or reply[9:10] == b"4", reply[:80]
            replies = await asyncio.gather(*(raw_exchange(server.port, wrong) for _ in range(40)))
            assert all(r.startswith(b"HTTP/1.1 401") for r in replies)
        finally:
            await server.close()

    asyncio.run(main())
    records = [r for r in caplog.records if r.name.startswith(("node.rpc", "aiohttp"))
               and r.levelno >= logging.INFO]
    assert all(r.exc_info is None for r in records)
    malformed = [r for r in records if "incorrect password" not in r.getMessage()]
    logins = [r for r in records if "incorrect password" in r.getMessage()]
    assert 1 <= len(malformed) <= 2, [r.getMessage() for r in malformed]
    assert len(logins) == 1 and "127.0.0.1" in logins[0].getMessage()
    assert not any(r.exc_info for r in caplog.records if r.name.startswith("aiohttp"))


def test_rpc_limits_accept_exhaustion_is_one_line_not_a_traceback_each(caplog):
    from node.rpc.limits import install_accept_error_filter

    caplog.set_level(logging.DEBUG)
    loop = asyncio.new_event_loop()
    try:
        install_accept_error_filter(loop)
        for _ in range(500):  # asyncio reports every failed accept this way
            loop.call_exception_handler({
                "message": "socket.accept() out of system resource",
                "exception": OSError(24, "Too many open files")})
        loop.call_exception_handler({"message": "something else"})
    finally:
        loop.close()
    exhausted = [r for r in caplog.records if "descriptors exhausted" in r.getMessage()]
    assert len(exhausted) == 1 and exhausted[0].exc_info is None
    assert "Too many open files" in exhausted[0].getMessage()
    assert any(r.getMessage() == "something else" for r in caplog.records)  # untouched
