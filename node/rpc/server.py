"""The RPC port around the Dispatcher: settings, the route table (IP filter, path, verb, Basic
auth) and the listeners; node/rpc/connection.py speaks HTTP/1.1 on each connection.

HTTP behaviour follows spec §1.1, §1.2 and §1.5 (Bitcoin Core 0.10 as inherited by MultiChain).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import hmac
import ipaddress
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from config.errors import ConfigError
from node.rpc.connection import Answer, HttpConnection
from node.rpc.dispatch import Dispatcher
from node.rpc.errors import RpcBindError
from node.rpc.http import HTML, DateHeader, HeadCache, Request, Response, error_response
from node.rpc.limits import ConnectionGuard, GuardedProtocol, RateLimitedLog, TlsGuardedProtocol
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
"""Seconds `stop` gives the open connections' running answers before cutting them."""

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

    def check(self, raw: bytes) -> bool:
        """Does an Authorization header value carry the right user and password?"""
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


_UNAUTHORIZED = Response(401, _UNAUTHORIZED_HTML.encode(), HTML,
                         headers=((b"WWW-Authenticate", b'Basic realm="jsonrpc"'),), close=True)
_WRONG_CREDENTIALS = dataclasses.replace(_UNAUTHORIZED, delay=AUTH_FAILURE_DELAY)
_FORBIDDEN = error_response(403)
_NOT_FOUND = error_response(404)
_NOT_ALLOWED = error_response(405)


class RpcRoutes:
    """The route table of the RPC port: JSON-RPC at `/`, and with `probes` /health and
    /metrics (node/rpc/probes.py); every other path is 404.

    `route` runs the checks of spec §1.7 on the request head (address filter, path, verb,
    Basic auth), so a refused request's body is never read; node/rpc/connection.py reads the
    body of an admitted one and sends the answer (at once, or when its future is done).
    """

    def __init__(self, dispatcher: Dispatcher, settings: RpcSettings,
                 probes: Probes | None = None) -> None:
        self.server_header = SERVER_HEADER.encode()
        self.max_body = settings.max_body
        self.keepalive = settings.keepalive
        self.date = DateHeader()
        self.heads = HeadCache()
        self.malformed = RateLimitedLog(log)
        self._auth = _Auth(settings.user, settings.password)
        self._failed_login = RateLimitedLog(log)
        self._allowed = _ip_filter(settings.allow_ips)
        self._dispatcher = dispatcher
        self._probes = probes
        self._probe_open = open_access(probes.open_networks if probes is not None else ())

    def route(self, request: Request, host: str | None) -> Response | Answer:
        """A refusal, or the answer to call with the request's body."""
        if not self._allowed(host):
            return _FORBIDDEN
        path = request.path
        if path == "/":
            if request.method != b"POST" and request.method != b"GET":
                return _NOT_ALLOWED
            return self._login(request, host) or self._rpc
        if self._probes is not None and path in PROBE_PATHS:
            if self._probe_open(host):  # loopback and metricsallowip: no credentials needed
                return self._probe
            return self._login(request, host) or self._probe
        return _NOT_FOUND

    def _login(self, request: Request, host: str | None) -> Response | None:
        """None for the right credentials, else the 401 to answer (delayed if wrong)."""
        header = request.headers.get(b"authorization")
        if header is None:
            return _UNAUTHORIZED
        if not self._auth.check(header):
            self._failed_login("RPC: incorrect password attempt from %s", host)
            return _WRONG_CREDENTIALS
        return None

    def _rpc(self, request: Request, body: bytes) -> Response | Awaitable[Response]:
        # Most calls need no task: answered here, or once the journal's fsync covers them.
        now = self._dispatcher.handle_body_now(body, _json_response)
        return self._rpc_later(body) if now is None else now

    async def _rpc_later(self, body: bytes) -> Response:
        out, status = await self._dispatcher.handle_body(body)
        return Response(status, out)

    async def _probe(self, request: Request, body: bytes) -> Response:
        assert self._probes is not None
        return await probe_response(self._probes, request.method, request.path)


def _json_response(body: bytes, status: int) -> Response:
    return Response(status, body)


def make_rpc_app(dispatcher: Dispatcher, settings: RpcSettings,
                 probes: Probes | None = None) -> RpcRoutes:
    """The route table serving `dispatcher` (and `probes`). Raises ConfigError if rpcpassword
    is empty or equal to rpcuser (spec §1.2)."""
    if not settings.password or settings.password == settings.user:
        raise ConfigError("rpcpassword must be set and differ from rpcuser")
    return RpcRoutes(dispatcher, settings, probes)


class RpcServer:
    """A running RPC server: `port` is the bound port; `close()` stops it."""

    def __init__(self, servers: list[asyncio.Server], connections: set[HttpConnection],
                 port: int, hosts: list[str], guard: ConnectionGuard) -> None:
        self._servers = servers
        self._connections = connections
        self.port = port
        self.hosts = hosts
        self.guard = guard

    async def close(self) -> None:
        """Stop listening; close idle connections at once and busy ones after their answer,
        giving them SHUTDOWN_TIMEOUT seconds before they are cut."""
        for server in self._servers:
            server.close()
        open_now = list(self._connections)
        for conn in open_now:
            conn.shutdown()
        if open_now:
            await asyncio.wait([conn.closed for conn in open_now], timeout=SHUTDOWN_TIMEOUT)
        for conn in list(self._connections):
            conn.abort()
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
    Every accepted connection passes the ConnectionGuard before its HttpConnection sees it.
    Raises RpcBindError when no address (or a required one) can be bound.
    """
    guard = ConnectionGuard(max_total=settings.max_connections,
                            max_per_host=settings.max_connections_per_host,
                            idle_timeout=settings.idle_timeout)
    routes = make_rpc_app(dispatcher, settings, probes)
    connections: set[HttpConnection] = set()
    tls = settings.ssl_context

    def protocol() -> asyncio.Protocol:
        conn = HttpConnection(routes, guard, connections)
        if tls is not None:
            return TlsGuardedProtocol(conn, guard, tls)
        return GuardedProtocol(conn, guard)

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
        raise
    if settings.allow_ips and settings.ssl_context is None:
        log.warning("JSON-RPC is open beyond loopback (rpcallowip) without TLS: credentials "
                    "and data cross the network in clear; set rpcssl=1 with a certificate")
    log.info("JSON-RPC server listening on port %d (%s)%s, at most %d connections (%d per "
             "address)", port, ", ".join(bound), " over TLS" if settings.ssl_context else "",
             settings.max_connections, settings.max_connections_per_host)
    return RpcServer(servers, connections, port, bound, guard)
