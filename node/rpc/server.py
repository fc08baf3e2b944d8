"""The thin aiohttp adapter around the Dispatcher: IP filter, path, verb, Basic auth, body cap.

HTTP behaviour follows spec §1.1, §1.2 and §1.5 (Bitcoin Core 0.10 as inherited by MultiChain).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from aiohttp import web

from config.errors import ConfigError
from node.rpc.dispatch import Dispatcher
from node.rpc.errors import RpcBindError

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SERVER_HEADER = "bitcoin-json-rpc/chainmill-0.1.0"
AUTH_FAILURE_DELAY = 0.25
"""Seconds to wait before answering wrong credentials (slows down password guessing)."""
SHUTDOWN_TIMEOUT = 3.0
"""Seconds `stop` gives each open connection's request handler before closing it."""

_LOOPBACK: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)
_UNAUTHORIZED_HTML = (
    "<!DOCTYPE html>\n<html><head><title>Error</title></head>"
    "<body><h1>401 Unauthorized.</h1></body></html>\n"
)


@dataclass
class RpcSettings:
    """Everything the RPC server needs, taken from the merged runtime configuration."""

    chain_name: str
    user: str
    password: str
    allow_ips: list[IPNetwork] = field(default_factory=list)
    """rpcallowip networks besides loopback; empty -> bind and serve loopback only."""
    bind: list[str] | None = None
    """rpcbind addresses, honoured only with allow_ips; None -> all interfaces."""
    port: int = 0
    """rpcport; 0 picks a free port (tests)."""
    keepalive: bool = False
    """rpckeepalive: keep connections open when the client allows it."""
    max_body: int = 32 * 1024 * 1024
    """Largest request body accepted; larger ones get HTTP 413."""


class _Auth:
    """Basic-auth check against a precomputed header value, in constant time."""

    __slots__ = ("_header", "_userpass")

    def __init__(self, user: str, password: str) -> None:
        self._userpass = f"{user}:{password}".encode()
        self._header = b"Basic " + base64.b64encode(self._userpass)

    def check(self, header: str) -> bool:
        raw = header.encode("utf-8", "surrogateescape")
        if hmac.compare_digest(raw, self._header):
            return True
        # Slow path for clients that encode differently (whitespace, missing padding).
        if not raw.startswith(b"Basic "):
            return False
        try:
            userpass = base64.b64decode(raw[6:].strip() + b"==", validate=False)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(userpass, self._userpass)


def _ip_filter(allow_ips: Sequence[IPNetwork]) -> Callable[[str | None], bool]:
    """A cached predicate: may a client at this peer address use the RPC server?"""
    networks = _LOOPBACK + tuple(allow_ips)

    @lru_cache(maxsize=4096)
    def allowed(host: str | None) -> bool:
        if host is None:
            return False
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in networks)

    return allowed


def _plain(status: int, text: str) -> web.Response:
    response = web.Response(status=status, text=text, content_type="text/plain")
    response.headers["Server"] = SERVER_HEADER
    response.force_close()
    return response


def _unauthorized() -> web.Response:
    response = web.Response(status=401, text=_UNAUTHORIZED_HTML, content_type="text/html")
    response.headers["WWW-Authenticate"] = 'Basic realm="jsonrpc"'
    response.headers["Server"] = SERVER_HEADER
    response.force_close()
    return response


def make_rpc_app(dispatcher: Dispatcher, settings: RpcSettings) -> web.Application:
    """The aiohttp application serving JSON-RPC at `/` for `dispatcher`.

    Raises ConfigError if rpcpassword is empty or equal to rpcuser (spec §1.2).
    """
    if not settings.password or settings.password == settings.user:
        raise ConfigError("rpcpassword must be set and differ from rpcuser")
    auth = _Auth(settings.user, settings.password)
    allowed = _ip_filter(settings.allow_ips)
    max_body = settings.max_body
    keepalive = settings.keepalive
    handle_body = dispatcher.handle_body

    async def handle(request: web.Request) -> web.StreamResponse:
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        host = peer[0] if peer else None
        if not allowed(host):
            return _plain(403, "Forbidden")
        if request.path != "/":
            return _plain(404, "Not Found")
        if request.method != "POST" and request.method != "GET":
            return _plain(405, "Method Not Allowed")
        header = request.headers.get("Authorization")
        if header is None:
            return _unauthorized()
        if not auth.check(header):
            await asyncio.sleep(AUTH_FAILURE_DELAY)
            log.warning("RPC: incorrect password attempt from %s", host)
            return _unauthorized()
        length = request.content_length
        if length is not None and length > max_body:
            return _plain(413, "Request Entity Too Large")
        try:
            body = await request.read()  # capped at client_max_size = max_body
        except web.HTTPRequestEntityTooLarge:
            return _plain(413, "Request Entity Too Large")
        out, status = await handle_body(body)
        response = web.Response(body=out, status=status, content_type="application/json")
        response.headers["Server"] = SERVER_HEADER
        if not keepalive:
            response.force_close()
        return response

    app = web.Application(client_max_size=max_body)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


class RpcServer:
    """A running RPC server: `port` is the bound port; `close()` stops it."""

    def __init__(self, runner: web.AppRunner, port: int, hosts: list[str]) -> None:
        self._runner = runner
        self.port = port
        self.hosts = hosts

    async def close(self) -> None:
        """Stop listening and finish open connections."""
        await self._runner.cleanup()


def _hosts(settings: RpcSettings) -> list[tuple[str, bool]]:
    """(address, must succeed) pairs to bind; at least one address must succeed anyway."""
    if not settings.allow_ips:
        # ::1 is missing on hosts without IPv6; loopback v4 alone is then enough.
        return [("127.0.0.1", True), ("::1", False)]
    if settings.bind:
        return [(host, False) for host in settings.bind]
    return [("0.0.0.0", False), ("::", False)]


async def start_rpc_server(dispatcher: Dispatcher, settings: RpcSettings) -> RpcServer:
    """Bind and start the server (spec §1.1): loopback only unless rpcallowip is set.

    With port 0 the first address picks a free port and the others bind the same one.
    Raises RpcBindError when no address (or a required one) can be bound.
    """
    app = make_rpc_app(dispatcher, settings)
    # lingering_time=0: a refused request's unread body (413, 401, ...) is not drained; the
    # connection is closed right after the answer. No access log: this is the hot path.
    # shutdown_timeout: on stop, aiohttp waits this long for each connection's handler task;
    # its default of 60 s let a client's idle keep-alive connection, caught between two
    # requests when the server closed, hold `stop` for a minute (the handler waited for a
    # next request that never came).
    runner = web.AppRunner(app, access_log=None, handle_signals=False, lingering_time=0,
                           shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    hosts = _hosts(settings)
    port = settings.port
    bound: list[str] = []
    try:
        for host, required in hosts:
            site = web.TCPSite(runner, host, port)
            try:
                await site.start()
            except OSError as exc:
                await site.stop()
                if required:
                    raise RpcBindError(f"cannot bind RPC port {port} on {host}: {exc}") from exc
                log.warning("RPC server: cannot bind %s port %d: %s", host, port, exc)
                continue
            if port == 0:
                port = runner.addresses[-1][1]
            bound.append(host)
        if not bound:
            names = ", ".join(host for host, _ in hosts)
            raise RpcBindError(f"cannot bind RPC port {port} on any of {names}")
    except BaseException:
        await runner.cleanup()
        raise
    log.info("JSON-RPC server listening on port %d (%s)", port, ", ".join(bound))
    return RpcServer(runner, port, bound)
