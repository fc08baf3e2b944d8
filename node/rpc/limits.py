"""Connection budgets of the JSON-RPC listener: caps in total and per client address, an idle
deadline per connection, file-descriptor budgets, and log lines that cannot flood the log.

A connection is admitted, evicted or refused here before the HTTP layer sees a byte of it, so idle or
half-sent connections cannot pile up until the process runs out of descriptors (issue 15.2).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

DESCRIPTOR_RESERVE = 64
"""Descriptors kept for the store, log files, hook pipes and the listeners themselves."""
RPC_DESCRIPTOR_SHARE = 0.5
"""At most this share of the descriptors left after the reserve and P2P goes to RPC."""
MIN_RPC_CONNECTIONS = 8


class RateLimitedLog:
    """Logs the first event at once, then at most one summary line per `interval` seconds.

    `clock` is injectable so the rule tests without waiting.
    """

    def __init__(self, logger: logging.Logger, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, level: int = logging.WARNING) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._level = level
        self._next = 0.0
        self._suppressed = 0

    def hold(self) -> None:
        """Count the next events for one interval without writing (a line was just written
        elsewhere, e.g. with a traceback)."""
        self._next = self._clock() + self._interval

    def __call__(self, message: str, *args: Any) -> bool:
        """Record one event; returns whether a line was written for it."""
        now = self._clock()
        if now < self._next:
            self._suppressed += 1
            return False
        if self._suppressed:
            self._logger.log(self._level, message + " (and %d more like it in the last %d s)",
                             *args, self._suppressed, int(self._interval))
        else:
            self._logger.log(self._level, message, *args)
        self._suppressed = 0
        self._next = now + self._interval
        return True


def raise_descriptor_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as Bitcoin Core's RaiseFileDescriptorLimit);
    returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the file descriptor limit from %d to %d: %s",
                        soft, hard, exc)
    # An unlimited hard limit is not a usable soft value on every kernel: the soft one stays.
    return soft


def p2p_connection_budget(descriptors: int, configured: int) -> int:
    """The P2P connection cap: maxconnections, but never more than half the descriptors
    left after the reserve (as Bitcoin Core clamps nMaxConnections to its descriptors)."""
    return max(MIN_RPC_CONNECTIONS, min(configured, (descriptors - DESCRIPTOR_RESERVE) // 2))


def rpc_connection_budget(descriptors: int, configured: int, p2p_connections: int) -> int:
    """The RPC connection cap for a process with `descriptors` descriptors.

    P2P keeps its own cap (`p2p_connections`) and a reserve stays free for files; RPC gets at
    most RPC_DESCRIPTOR_SHARE of what is left, so a flood on one listener cannot starve the
    other of descriptors.
    """
    left = descriptors - DESCRIPTOR_RESERVE - p2p_connections
    share = int(left * RPC_DESCRIPTOR_SHARE)
    return max(MIN_RPC_CONNECTIONS, min(configured, share))


@dataclass(eq=False, slots=True)
class Connection:
    """One admitted RPC connection: who, since when idle, and whether a call is running."""

    host: str
    transport: asyncio.BaseTransport
    idle_since: float
    busy: int = 0
    timer: asyncio.TimerHandle | None = None
    released: bool = False
    tls: Any = None
    """The TLS transport over `transport`, once its handshake is done (rpcssl)."""


class ConnectionGuard:
    """Admission, eviction and idle deadlines for the connections of one RPC server.

    A new connection over a cap evicts the longest-idle connection (of its own address when
    that address is at its cap, else of the address holding the most connections); it is
    refused only when every candidate is running a call. Idle means no call is being
    dispatched: a connection that sends half a request and stops is idle, and is closed
    `idle_timeout` seconds after its last answer (or its opening).
    """

    def __init__(self, *, max_total: int, max_per_host: int, idle_timeout: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_total = max_total
        self.max_per_host = max_per_host
        self.idle_timeout = idle_timeout
        self._clock = clock
        self._by_transport: dict[asyncio.BaseTransport, Connection] = {}
        self._by_host: dict[str, list[Connection]] = {}
        self._note = RateLimitedLog(log)
        self.evicted = 0
        self.refused = 0
        self.expired = 0

    def __len__(self) -> int:
        return sum(len(conns) for conns in self._by_host.values())

    def count(self, host: str) -> int:
        """Open connections from `host`."""
        return len(self._by_host.get(host, ()))

    # -- admission ----------------------------------------------------------------------------
    def admit(self, transport: asyncio.BaseTransport) -> Connection | None:
        """Register a new connection, evicting an idle one if a cap is reached; None: refused
        (the caller aborts the transport)."""
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if peer else "?"
        if self.count(host) >= self.max_per_host:
            if not self._evict(self._by_host[host]):
                self.refused += 1
                self._note("RPC: connection from %s refused: %d connections from that address "
                           "are all busy (rpcmaxconnectionsperip=%d)", host, self.count(host),
                           self.max_per_host)
                return None
            self._note("RPC: %s reached rpcmaxconnectionsperip=%d; closing its longest-idle "
                       "connections", host, self.max_per_host)
        elif len(self) >= self.max_total:
            largest = max(len(conns) for conns in self._by_host.values())
            candidates = [c for conns in self._by_host.values() if len(conns) == largest
                          for c in conns]
            if not self._evict(candidates):
                self.refused += 1
                self._note("RPC: connection from %s refused: all %d connections are busy "
                           "(rpcmaxconnections)", host, len(self))
                return None
            self._note("RPC: %d connections open (rpcmaxconnections); closing the longest-idle "
                       "connections of the busiest addresses", self.max_total)
        conn = Connection(host=host, transport=transport, idle_since=self._clock())
        self._by_transport[transport] = conn
        self._by_host.setdefault(host, []).append(conn)
        self._arm(conn, self.idle_timeout)
        return conn

    def _evict(self, candidates: list[Connection]) -> bool:
        idle = [c for c in candidates if not c.busy]
        if not idle:
            return False
        victim = min(idle, key=lambda c: c.idle_since)
        self.evicted += 1
        self._close(victim)
        return True

    def release(self, transport: asyncio.BaseTransport) -> None:
        """Forget a closed connection (idempotent)."""
        conn = self._by_transport.pop(transport, None)
        if conn is None:
            return
        self._by_transport.pop(conn.transport, None)
        if conn.tls is not None:
            self._by_transport.pop(conn.tls, None)
        conn.released = True
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        conns = self._by_host.get(conn.host)
        if conns is not None:
            conns.remove(conn)
            if not conns:
                del self._by_host[conn.host]

    def _close(self, conn: Connection) -> None:
        self.release(conn.transport)
        conn.transport.abort()  # type: ignore[attr-defined]

    # -- idle deadline ------------------------------------------------------------------------
    def _arm(self, conn: Connection, delay: float) -> None:
        loop = asyncio.get_running_loop()
        conn.timer = loop.call_later(delay, self._expire, conn)

    def _expire(self, conn: Connection) -> None:
        # One timer per connection, not one per call: calls only move `idle_since`, and the
        # timer, when it fires early, is set again for the rest of the deadline.
        conn.timer = None
        if conn.released or conn.busy:
            return  # `end` arms it again
        left = conn.idle_since + self.idle_timeout - self._clock()
        if left > 0:
            self._arm(conn, left)
            return
        self.expired += 1
        log.debug("RPC: closing connection from %s idle for %d s", conn.host, self.idle_timeout)
        self._close(conn)

    def secured(self, conn: Connection, tls: Any) -> None:
        """The TLS handshake of `conn` is done: calls arrive on `tls` from now on."""
        conn.tls = tls
        self._by_transport[tls] = conn

    def begin(self, transport: Any) -> Connection | None:
        """A call starts on this connection: it is not idle until `end`."""
        conn = self._by_transport.get(transport)
        if conn is None:
            return None
        conn.busy += 1
        return conn

    def end(self, conn: Connection | None) -> None:
        """The call started by `begin` has been answered; the idle deadline starts again."""
        if conn is None or conn.released:
            return
        conn.busy -= 1
        if not conn.busy:
            conn.idle_since = self._clock()
            if conn.timer is None:
                self._arm(conn, self.idle_timeout)


class GuardedProtocol(asyncio.Protocol):
    """Wraps a connection's HTTP protocol (node/rpc/connection.py): asks the guard first, then passes through."""

    __slots__ = ("_guard", "_inner", "_transport")

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._guard.admit(transport) is None:
            transport.abort()  # type: ignore[attr-defined]
            return
        self._transport = transport
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is None:
            return
        self._guard.release(self._transport)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._transport is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._transport is None:
            return None
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._inner.resume_writing()


class TlsGuardedProtocol(asyncio.Protocol):
    """GuardedProtocol for rpcssl=1: the guard admits the plain TCP connection *before* its
    TLS handshake, so connections that never finish one count against the caps and the idle
    deadline like any other (asyncio's own `ssl=` server would show them to nobody until the
    handshake is done)."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard,
                 context: ssl.SSLContext) -> None:
        self._inner = inner
        self._guard = guard
        self._context = context
        self._raw: asyncio.Transport | None = None
        self._tls: asyncio.Transport | None = None
        self._handshake: asyncio.Task[None] | None = None
        # Data and EOF that arrive with the end of the handshake, before _secure resumes
        # (a TLS 1.3 client sends its request in the same flight as its Finished).
        self._early = bytearray()
        self._early_eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        conn = self._guard.admit(transport)
        if conn is None:
            transport.abort()  # type: ignore[attr-defined]
            return
        assert isinstance(transport, asyncio.Transport)
        self._raw = transport
        transport.pause_reading()  # the ClientHello waits in the kernel for start_tls
        self._handshake = asyncio.get_running_loop().create_task(self._secure(transport, conn))

    async def _secure(self, raw: asyncio.Transport, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(raw, self, self._context, server_side=True,
                                       ssl_handshake_timeout=self._guard.idle_timeout)
        except (OSError, ConnectionError, TimeoutError, ssl.SSLError) as exc:
            log.debug("RPC: TLS handshake with %s failed: %s", conn.host, exc)
            self._guard.release(raw)
            raw.abort()
            return
        if tls is None or conn.released:
            return
        self._tls = tls
        self._guard.secured(conn, tls)
        self._inner.connection_made(tls)
        if self._early:
            early, self._early = bytes(self._early), bytearray()
            self._inner.data_received(early)
        if self._early_eof and not self._inner.eof_received():
            tls.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._raw is None:
            return
        self._guard.release(self._raw)
        if self._tls is not None:
            self._inner.connection_lost(exc)
        elif self._handshake is not None:
            self._handshake.cancel()

    def data_received(self, data: bytes) -> None:
        if self._tls is not None:
            self._inner.data_received(data)
        elif len(self._early) + len(data) <= EARLY_DATA_LIMIT:
            self._early += data
        elif self._raw is not None:
            self._raw.abort()

    def eof_received(self) -> bool | None:
        if self._tls is None:
            self._early_eof = True
            return True  # keep the transport until _secure hands the EOF on
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        if self._tls is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._tls is not None:
            self._inner.resume_writing()


EARLY_DATA_LIMIT = 1 << 20
"""Bytes a TLS connection may send before its handshake is handed to the HTTP layer."""


_ACCEPT_EXHAUSTED = "socket.accept() out of system resource"


def install_accept_error_filter(loop: asyncio.AbstractEventLoop) -> None:
    """Replace asyncio's traceback-per-failure for a listener out of descriptors (EMFILE,
    ENFILE, ENOBUFS) by one rate-limited line; every other loop error keeps the old path."""
    previous = loop.get_exception_handler()
    note = RateLimitedLog(log)

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == _ACCEPT_EXHAUSTED:
            exc = context.get("exception")
            note("cannot accept connections: %s (file descriptors exhausted)",
                 getattr(exc, "strerror", None) or exc)
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
