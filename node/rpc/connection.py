"""One HTTP/1.1 connection of the RPC port, on asyncio's Protocol layer.

Requests on a connection are answered one at a time, in order (pipelined requests wait in the
buffer). For each request head the connection asks its `Routes` what to do: a refusal
(answered at once, before any body byte is read) or an answer, which gets the body once it
is complete and returns the response (most JSON-RPC calls: no task, no extra loop iteration)
or a future or coroutine of it. The ConnectionGuard (node/rpc/limits.py) admits connections before they
get here and sees a connection as busy while an answer runs.

Why not aiohttp: its request and response machinery cost about 110 µs of CPU per call on
the benchmark machine, half the node's whole cost of a one-item `publish` (bench/README.md);
this connection does the little JSON-RPC over HTTP/1.1 needs in a fraction of that.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, cast

from node.rpc.http import (
    CONTINUE,
    MAX_HEAD,
    ChunkedBody,
    DateHeader,
    HeadCache,
    HttpError,
    Request,
    Response,
    error_response,
    response_bytes,
)
from node.rpc.limits import Connection, ConnectionGuard, RateLimitedLog

log = logging.getLogger(__name__)

Answer = Callable[[Request, bytes], Response | Awaitable[Response]]
"""Answers an admitted request from its complete body: at once (no task, no loop iteration),
or with a future or coroutine of the answer."""

PIPELINE_LIMIT = 256 * 1024
"""Bytes buffered beyond the request being answered before the connection stops reading."""
_INTERNAL_ERROR = Response(500, b"Internal Server Error", b"text/plain; charset=utf-8",
                           close=True)


class Routes(Protocol):
    """What a connection serves: the route table of node/rpc/server.py."""

    server_header: bytes
    max_body: int
    keepalive: bool
    date: DateHeader
    heads: HeadCache
    malformed: RateLimitedLog

    def route(self, request: Request, host: str | None) -> Response | Answer:
        """A refusal to send at once, or the answer to call with the body."""
        ...


class HttpConnection(asyncio.Protocol):
    """Reads requests, has them answered in order, writes the answers; keep-alive and
    flow control in both directions."""

    def __init__(self, routes: Routes, guard: ConnectionGuard | None,
                 connections: set[HttpConnection]) -> None:
        self._routes = routes
        self._guard = guard
        self._connections = connections
        self._transport: asyncio.Transport | None = None
        self._host: str | None = None
        self._buffer = bytearray()
        self._request: Request | None = None
        """The request whose body is being read or whose answer is running."""
        self._answer: Answer | None = None
        self._chunked: ChunkedBody | None = None
        self._running = False
        """An answer (task or held refusal) is under way: nothing else is started."""
        self._held: asyncio.TimerHandle | None = None
        self._write_paused = False
        self._read_paused = False
        self._eof = False
        self._closing = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Done once the transport is gone."""

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        peer = transport.get_extra_info("peername")
        self._host = peer[0] if peer else None
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._closing = True
        if self._held is not None:
            self._held.cancel()
            self._held = None
        self._transport = None  # a running answer finishes; its reply is dropped
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._advance()

    def eof_received(self) -> bool | None:
        self._eof = True
        if self._running or self._request is not None or self._buffer:
            self._advance()
            # Keep the writing half open for the answer (a client may send its request and
            # shut down its side); TLS cannot half-close, so there the transport closes.
            return self._transport is not None and not self._is_tls()
        return None

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._advance()

    # -- shutdown -----------------------------------------------------------------------------
    def shutdown(self) -> None:
        """The server stops: close now if idle, else right after the running answer."""
        self._closing = True
        if not self._running and self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # -- the request cycle --------------------------------------------------------------------
    def _advance(self) -> None:
        """Move the next request on as far as the buffered bytes allow."""
        while self._transport is not None and not self._closing:
            if self._running or self._write_paused:
                if len(self._buffer) > PIPELINE_LIMIT and not self._read_paused:
                    self._read_paused = True
                    self._transport.pause_reading()
                return
            if self._read_paused:
                self._read_paused = False
                self._transport.resume_reading()
            try:
                if self._request is None and not self._start_request():
                    break
                if self._request is not None and not self._read_body():
                    break
            except HttpError as exc:
                self._fail(exc)
                return
        if self._eof and not self._running and self._transport is not None:
            self._transport.close()  # the client sent all it will send, and has its answers

    def _start_request(self) -> bool:
        """Parse the next head and route it; False: not complete yet."""
        buffer = self._buffer
        while buffer.startswith(b"\r\n"):  # RFC 9112 §2.2: ignore empty lines before a request
            del buffer[:2]
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD:
                raise HttpError(431, "request head too long")
            if buffer.startswith(b"\x16\x03"):
                raise HttpError(400, "TLS handshake on a plain-HTTP port")
            return False
        if end > MAX_HEAD:
            raise HttpError(431, "request head too long")
        request = self._routes.heads.parse(bytes(buffer[:end]))
        del buffer[:end + 4]
        target = self._routes.route(request, self._host)
        if isinstance(target, Response):
            self._send(request, target)
            return not self._closing
        length = request.content_length
        if length is not None and length > self._routes.max_body:
            self._send(request, error_response(413))  # from the header alone, nothing read
            return False
        self._request, self._answer = request, target
        if request.chunked:
            self._chunked = ChunkedBody(self._routes.max_body)
        if request.expect_continue and len(buffer) < (length or 1):
            assert self._transport is not None
            self._transport.write(CONTINUE)
        return True

    def _read_body(self) -> bool:
        """Start the answer once the body is complete; False: not complete yet."""
        request, buffer = self._request, self._buffer
        assert request is not None
        if self._chunked is not None:
            used = self._chunked.feed(buffer)
            del buffer[:used]
            if not self._chunked.done:
                return False
            body = self._chunked.body()
            self._chunked = None
        else:
            length = request.content_length or 0
            if len(buffer) < length:
                return False
            body = bytes(buffer[:length])
            del buffer[:length]
        answer, self._answer = self._answer, None
        assert answer is not None
        self._running = True
        busy = self._guard.begin(self._transport) if self._guard is not None else None
        try:
            outcome = answer(request, body)
        except Exception as exc:
            self._finish(request, busy, self._failed_answer(request, exc))
            return True
        if isinstance(outcome, Response):  # answered at once: on to the next request
            self._finish(request, busy, outcome)
            return True
        task = asyncio.ensure_future(outcome)
        task.add_done_callback(lambda done: self._answered(request, busy, done))
        return True

    def _answered(self, request: Request, busy: Connection | None,
                  task: asyncio.Future[Response]) -> None:
        if task.cancelled():
            response = _INTERNAL_ERROR
        elif task.exception() is not None:
            response = self._failed_answer(request, task.exception())
        else:
            response = task.result()
        self._finish(request, busy, response)
        self._advance()

    def _finish(self, request: Request, busy: Connection | None, response: Response) -> None:
        if self._guard is not None:
            self._guard.end(busy)
        self._running = False
        self._request = None
        self._send(request, response)

    @staticmethod
    def _failed_answer(request: Request, exc: BaseException | None) -> Response:
        log.error("RPC: answering %s %s failed", request.method.decode(), request.path,
                  exc_info=exc)
        return _INTERNAL_ERROR

    def _send(self, request: Request, response: Response) -> None:
        """Write an answer (after its delay, if any); closes the connection when either side
        does not keep it alive."""
        if response.delay:
            self._running = True
            loop = asyncio.get_running_loop()
            held = dataclasses.replace(response, delay=0.0)
            self._held = loop.call_later(response.delay, self._release, request, held)
            return
        transport = self._transport
        if transport is None:
            return
        routes = self._routes
        keep = (request.keep_alive and routes.keepalive and not response.close
                and not self._closing)
        transport.write(response_bytes(response, version=request.version, keep_alive=keep,
                                       server=routes.server_header, date=routes.date.value(),
                                       head_only=request.method == b"HEAD"))
        if not keep:
            self._closing = True
            transport.close()

    def _release(self, request: Request, response: Response) -> None:
        self._held = None
        self._running = False
        self._send(request, response)
        self._advance()

    def _fail(self, exc: HttpError) -> None:
        """A malformed request: one rate-limited log line, an error answer, and close."""
        if exc.status != 413:
            self._routes.malformed("RPC: malformed HTTP request from %s: %s", self._host,
                                   exc.reason)
        transport = self._transport
        if transport is None:
            return
        self._closing = True
        response = error_response(exc.status)
        transport.write(response_bytes(response, version=1, keep_alive=False,
                                       server=self._routes.server_header,
                                       date=self._routes.date.value()))
        transport.close()

    def _is_tls(self) -> bool:
        return (self._transport is not None
                and self._transport.get_extra_info("sslcontext") is not None)
