"""The thin aiohttp adapter around the Dispatcher: IP filter, path, verb, Basic auth, body cap.

HTTP behaviour follows spec §1.1, §1.2 and §1.5 (Bitcoin Core 0.10 as inherited by MultiChain).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import ipaddress
import logging
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from aiohttp import web

from config.errors import ConfigError
from node.rpc.dispatch import Dispatcher
from node.rpc.errors import RpcBindError
from node.rpc.limits import (
    ConnectionGuard,
    GuardedProtocol,
    QuietServerLog,
    RateLimitedLog,
    TlsGuardedProtocol,
)
from node.rpc.probes import PROBE_PATHS, Probes, open_access, probe_response

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MULTICHAIN_VERSION = "2.3.3"
"""The MultiChain release whose HTTP identity the server presents (issue 11 item 7)."""
CHAINMILL_VERSION = "0.1.0"
SERVER_HEADER = f"multichain-json-rpc/{MULTICHAIN_VERSION} chainmill/{CHAINMILL_VERSION}"
"""MultiChain's `Server` header first (clients look for it), chainmill's own product after."""
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
    keepalive: bool = True
    """rpckeepalive: keep connections open when the client allows it (MultiChain 2.3's default)."""
    max_body: int = 32 * 1024 * 1024
    """Largest request body accepted; larger ones get HTTP 413."""
    max_connections: int = 256
    """rpcmaxconnections: open connections at once, all clients together."""
    max_connections_per_host: int = 64
    """rpcmaxconnectionsperip: open connections from one client address."""
    idle_timeout: float = 30.0
    """rpcservertimeout: seconds a connection may be idle or take to send its request."""
    ssl_context: ssl.SSLContext | None = None
    """rpcssl: serve https with this context (see server_ssl_context)."""


def server_ssl_context(certificate_chain: Path, private_key: Path) -> ssl.SSLContext:
    """The TLS context of `rpcssl=1` (TLS 1.2 or later) from PEM files.

    Raises ConfigError naming the file and the setting when a file is missing or unusable, so
    the node refuses to start rather than serving in clear.
    """
    for path, setting in ((certificate_chain, "rpcsslcertificatechainfile"),
                          (private_key, "rpcsslprivatekeyfile")):
        if not path.is_file():
            raise ConfigError(f"rpcssl=1 but {setting} {path} does not exist; create the "
                              f"certificate and key, or set {setting}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(certificate_chain), str(private_key))
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(f"rpcssl=1 but the certificate {certificate_chain} and key "
                          f"{private_key} cannot be used: {exc}") from None
    return context


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


def make_rpc_app(dispatcher: Dispatcher, settings: RpcSettings,
                 guard: ConnectionGuard | None = None,
                 probes: Probes | None = None) -> web.Application:
    """The aiohttp application serving JSON-RPC at `/` for `dispatcher` (and with `probes`,
    /health and /metrics: see node/rpc/probes.py).

    With a `guard`, each call marks its connection busy, so the idle deadline and eviction
    spare connections whose call is running. Raises ConfigError if rpcpassword is empty or
    equal to rpcuser (spec §1.2).
    """
    if not settings.password or settings.password == settings.user:
        raise ConfigError("rpcpassword must be set and differ from rpcuser")
    auth = _Auth(settings.user, settings.password)
    failed_login = RateLimitedLog(log)
    allowed = _ip_filter(settings.allow_ips)
    max_body = settings.max_body
    keepalive = settings.keepalive
    handle_body = dispatcher.handle_body
    probe_open = open_access(probes.open_networks if probes is not None else ())

    async def answer_probe(probes: Probes, request: web.Request, host: str | None
                           ) -> web.StreamResponse:
        if not probe_open(host):  # beyond loopback and metricsallowip: the RPC credentials
            header = request.headers.get("Authorization")
            if header is None:
                return _unauthorized()
            if not auth.check(header):
                await asyncio.sleep(AUTH_FAILURE_DELAY)
                failed_login("RPC: incorrect password attempt from %s", host)
                return _unauthorized()
        response = await probe_response(probes, request)
        response.headers["Server"] = SERVER_HEADER
        if not keepalive:
            response.force_close()
        return response

    async def handle(request: web.Request) -> web.StreamResponse:
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        host = peer[0] if peer else None
        if not allowed(host):
            return _plain(403, "Forbidden")
        if probes is not None and request.path in PROBE_PATHS:
            return await answer_probe(probes, request, host)
        if request.path != "/":
            return _plain(404, "Not Found")
        if request.method != "POST" and request.method != "GET":
            return _plain(405, "Method Not Allowed")
        header = request.headers.get("Authorization")
        if header is None:
            return _unauthorized()
        if not auth.check(header):
            await asyncio.sleep(AUTH_FAILURE_DELAY)
            failed_login("RPC: incorrect password attempt from %s", host)
            return _unauthorized()
        length = request.content_length
        if length is not None and length > max_body:
            return _plain(413, "Request Entity Too Large")
        try:
            body = await request.read()  # capped at client_max_size = max_body
        except web.HTTPRequestEntityTooLarge:
            return _plain(413, "Request Entity Too Large")
        conn = guard.begin(transport) if guard is not None else None
        try:
            out, status = await handle_body(body)
        finally:
            if guard is not None:
                guard.end(conn)
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

    def __init__(self, runner: web.AppRunner, servers: list[asyncio.Server], port: int,
                 hosts: list[str], guard: ConnectionGuard) -> None:
        self._runner = runner
        self._servers = servers
        self.port = port
        self.hosts = hosts
        self.guard = guard

    async def close(self) -> None:
        """Stop listening and finish open connections."""
        for server in self._servers:
            server.close()
        await self._runner.cleanup()
        for server in self._servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), SHUTDOWN_TIMEOUT)


def check_rpc_tls_files(runtime: Any, chain_dir: Path) -> None:
    """With rpcssl=1, raise ConfigError unless the certificate and key can be used."""
    if runtime.rpcssl:
        server_ssl_context(chain_dir / (runtime.rpcsslcertificatechainfile or "server.cert"),
                           chain_dir / (runtime.rpcsslprivatekeyfile or "server.pem"))


def settings_from_runtime(runtime: Any, chain_name: str, chain_dir: Path, port: int,
                          max_connections: int) -> RpcSettings:
    """RpcSettings from the node's merged RuntimeConfig; `max_connections` is the RPC share
    of the descriptors (limits.rpc_connection_budget). Raises ConfigError for rpcssl=1
    without a usable certificate and key."""
    context = None
    if runtime.rpcssl:
        context = server_ssl_context(
            chain_dir / (runtime.rpcsslcertificatechainfile or "server.cert"),
            chain_dir / (runtime.rpcsslprivatekeyfile or "server.pem"))
    return RpcSettings(
        chain_name=chain_name, user=runtime.rpcuser, password=runtime.rpcpassword,
        allow_ips=list(runtime.rpcallowip), bind=list(runtime.rpcbind) or None, port=port,
        keepalive=runtime.rpckeepalive, max_body=runtime.rpcmaxbody,
        max_connections=min(runtime.rpcmaxconnections, max_connections),
        max_connections_per_host=runtime.rpcmaxconnectionsperip,
        idle_timeout=float(runtime.rpcservertimeout), ssl_context=context)


def _hosts(settings: RpcSettings) -> list[tuple[str, bool]]:
    """(address, must succeed) pairs to bind; at least one address must succeed anyway."""
    if not settings.allow_ips:
        # ::1 is missing on hosts without IPv6; loopback v4 alone is then enough.
        return [("127.0.0.1", True), ("::1", False)]
    if settings.bind:
        return [(host, False) for host in settings.bind]
    return [("0.0.0.0", False), ("::", False)]


async def start_rpc_server(dispatcher: Dispatcher, settings: RpcSettings,
                           probes: Probes | None = None) -> RpcServer:
    """Bind and start the server (spec §1.1): loopback only unless rpcallowip is set.

    With port 0 the first address picks a free port and the others bind the same one.
    Every accepted connection passes the ConnectionGuard before aiohttp sees it.
    Raises RpcBindError when no address (or a required one) can be bound.
    """
    guard = ConnectionGuard(max_total=settings.max_connections,
                            max_per_host=settings.max_connections_per_host,
                            idle_timeout=settings.idle_timeout)
    app = make_rpc_app(dispatcher, settings, guard, probes)
    # lingering_time=0: a refused request's unread body (413, 401, ...) is not drained; the
    # connection is closed right after the answer. No access log: this is the hot path.
    # shutdown_timeout: on stop, aiohttp waits this long for each connection's handler task;
    # its default of 60 s let a client's idle keep-alive connection, caught between two
    # requests when the server closed, hold `stop` for a minute (the handler waited for a
    # next request that never came). logger: malformed requests are logged at a bounded
    # rate without tracebacks instead of one traceback each.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, lingering_time=0,
                           shutdown_timeout=SHUTDOWN_TIMEOUT,
                           keepalive_timeout=settings.idle_timeout,
                           logger=QuietServerLog(log))
    await runner.setup()
    handler_factory = runner.server
    assert handler_factory is not None  # set by setup()

    tls = settings.ssl_context

    def protocol() -> asyncio.Protocol:
        if tls is not None:
            return TlsGuardedProtocol(handler_factory(), guard, tls)
        return GuardedProtocol(handler_factory(), guard)

    loop = asyncio.get_running_loop()
    hosts = _hosts(settings)
    port = settings.port
    bound: list[str] = []
    servers: list[asyncio.Server] = []
    try:
        for host, required in hosts:
            try:
                # TLS is started by TlsGuardedProtocol after the guard admitted the TCP
                # connection, so the listener itself is plain TCP.
                server = await loop.create_server(protocol, host, port, backlog=128,
                                                  reuse_address=True)
            except OSError as exc:
                if required:
                    raise RpcBindError(f"cannot bind RPC port {port} on {host}: {exc}") from exc
                log.warning("RPC server: cannot bind %s port %d: %s", host, port, exc)
                continue
            servers.append(server)
            if port == 0:
                port = server.sockets[0].getsockname()[1]
            bound.append(host)
        if not bound:
            names = ", ".join(host for host, _ in hosts)
            raise RpcBindError(f"cannot bind RPC port {port} on any of {names}")
    except BaseException:
        for server in servers:
            server.close()
        await runner.cleanup()
        raise
    if settings.allow_ips and settings.ssl_context is None:
        log.warning("JSON-RPC is open beyond loopback (rpcallowip) without TLS: credentials "
                    "and data cross the network in clear; set rpcssl=1 with a certificate")
    log.info("JSON-RPC server listening on port %d (%s)%s, at most %d connections (%d per "
             "address)", port, ", ".join(bound), " over TLS" if settings.ssl_context else "",
             settings.max_connections, settings.max_connections_per_host)
    return RpcServer(runner, servers, port, bound, guard)
