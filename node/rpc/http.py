"""HTTP/1.1 for the RPC port, without I/O: a strict request-head parser, a chunked-body decoder
and response bytes (node/rpc/connection.py drives them from an asyncio.Protocol).

Only what JSON-RPC and the two probes need (RFC 9112): request line, header fields,
Content-Length or chunked bodies, keep-alive, `Expect: 100-continue`. Every received byte is
hostile: anything malformed, ambiguous (Content-Length with Transfer-Encoding, two differing
lengths) or too long raises HttpError with the status to answer, and the connection is closed.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import unquote_to_bytes

MAX_LINE = 8190
"""Longest request line or header line (aiohttp's and Node's limit)."""
MAX_HEAD = 32 * 1024
"""Longest request head (request line and all header lines)."""
MAX_HEADERS = 100
"""Most header lines in one request."""
MAX_CACHED_HEAD = 1024
"""Longest request head HeadCache keeps (a JSON-RPC client's is about 200 bytes)."""
MAX_CHUNK_LINE = 1024
"""Longest chunk-size line (size and extensions) of a chunked body."""

JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"
HTML = b"text/html; charset=utf-8"

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/1\.([01])")
_HEADER_LINE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*([\t\x20-\x7e\x80-\xff]*)")
"""A field line; its value still carries the trailing whitespace (OWS), which the caller
strips: a lazy value followed by `[ \t]*` made the engine retry the end at every byte, the
largest cost of a request head (4 µs for an Authorization line)."""
_DIGITS = re.compile(rb"[0-9]{1,18}")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[\t\x20-\x7e\x80-\xff]*)?")
_ABSOLUTE = re.compile(rb"https?://[^/?#]*", re.IGNORECASE)


class HttpError(Exception):
    """A request that cannot be served: answer `status` with `reason` and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed request head. Header names are lower-case; a repeated field is kept once
    with its values joined by ", " (RFC 9110 §5.3). Shared by the requests that repeat its
    head (HeadCache): read it, never change it."""

    method: bytes
    path: str
    """The decoded path without query or fragment ("/" for JSON-RPC)."""
    version: int
    """The minor version: 1 for HTTP/1.1, 0 for HTTP/1.0."""
    headers: dict[bytes, bytes]
    keep_alive: bool
    """What the client allows: HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with
    `Connection: keep-alive`."""
    content_length: int | None
    chunked: bool
    expect_continue: bool


def parse_head(head: bytes) -> Request:
    """A request head (without its final empty line) -> Request; raises HttpError."""
    lines = head.split(b"\r\n")
    if len(lines) > MAX_HEADERS + 1:
        raise HttpError(431, "too many header fields")
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        if len(lines[0]) > MAX_LINE:
            raise HttpError(414, "request line too long")
        raise HttpError(400, "malformed request line")
    method, target, minor = match.groups()
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        if len(line) > MAX_LINE:
            raise HttpError(431, "header line too long")
        field = _HEADER_LINE.fullmatch(line)
        if field is None:
            raise HttpError(400, "malformed header line")
        name, value = field.groups()
        name = name.lower()
        value = value.rstrip(b" \t")
        if name in headers:
            if name in (b"content-length", b"authorization", b"host"):
                if headers[name] != value:
                    raise HttpError(400, f"conflicting {name.decode()} fields")
                continue
            value = headers[name] + b", " + value
        headers[name] = value
    version = int(minor)
    connection = headers.get(b"connection", b"").lower()
    if version == 1:
        keep_alive = b"close" not in _tokens(connection)
    else:
        keep_alive = b"keep-alive" in _tokens(connection)
    content_length = None
    chunked = False
    encoding = headers.get(b"transfer-encoding")
    if encoding is not None:
        if b"content-length" in headers:
            raise HttpError(400, "both Content-Length and Transfer-Encoding")
        if encoding.lower() != b"chunked" or version == 0:
            raise HttpError(501, "unsupported Transfer-Encoding")
        chunked = True
    elif b"content-length" in headers:
        length = headers[b"content-length"]
        if _DIGITS.fullmatch(length) is None:
            raise HttpError(400, "invalid Content-Length")
        content_length = int(length)
    expect = headers.get(b"expect")
    if expect is not None and expect.lower() != b"100-continue":
        raise HttpError(417, "unsupported Expect")
    return Request(method=method, path=_path(target), version=version, headers=headers,
                   keep_alive=keep_alive, content_length=content_length, chunked=chunked,
                   expect_continue=expect is not None and version == 1)


class HeadCache:
    """`parse_head` that remembers: a client repeats the same head on every call (same
    host, credentials, content type, mostly the same length), and parsing one costs about
    as much as dispatching the call. Only heads that parsed are kept (a malformed one raises
    every time), at most `entries` of them, each at most MAX_CACHED_HEAD bytes; when full,
    it starts again empty, so heads that never repeat cannot make it grow."""

    __slots__ = ("_entries", "_parsed")

    def __init__(self, entries: int = 256) -> None:
        self._entries = entries
        self._parsed: dict[bytes, Request] = {}

    def parse(self, head: bytes) -> Request:
        """The Request of a head (as parse_head); raises HttpError."""
        request = self._parsed.get(head)
        if request is None:
            request = parse_head(head)
            if len(head) <= MAX_CACHED_HEAD:
                if len(self._parsed) >= self._entries:
                    self._parsed.clear()
                self._parsed[head] = request
        return request


def _tokens(value: bytes) -> set[bytes]:
    return {token.strip() for token in value.split(b",")}


def _path(target: bytes) -> str:
    """The path of an origin-form ("/a?b") or absolute-form ("http://h/a") target."""
    if target == b"/":  # every JSON-RPC call
        return "/"
    if not target.startswith(b"/"):
        absolute = _ABSOLUTE.match(target)
        if absolute is None:
            if target == b"*":
                return "*"
            raise HttpError(400, "malformed request target")
        target = target[absolute.end():] or b"/"
        if not target.startswith(b"/"):
            target = b"/" + target
    path = target.partition(b"?")[0].partition(b"#")[0]
    if b"%" in path:
        path = unquote_to_bytes(path)
        if any(byte < 0x21 or byte == 0x7F for byte in path):
            raise HttpError(400, "control character in the path")
    return path.decode("utf-8", "surrogateescape")


class ChunkedBody:
    """Decodes a chunked request body fed in pieces (RFC 9112 §7.1); trailers are read and
    dropped. `feed` returns how many bytes it used; `done` tells when the body is complete."""

    __slots__ = ("_limit", "_parts", "_remaining", "_size", "_state", "_trailer", "done")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        self._remaining = 0
        self._state = "size"
        self._trailer = 0
        self.done = False

    def body(self) -> bytes:
        return b"".join(self._parts)

    def feed(self, data: bytes | bytearray | memoryview) -> int:
        """Consume what it can of `data`; raises HttpError (413 over the limit, else 400)."""
        with memoryview(data) as view:  # released before the caller trims its buffer
            pos = self._consume(view)
        return pos

    def _consume(self, view: memoryview) -> int:
        pos = 0
        while not self.done and pos < len(view):
            if self._state == "data":
                take = min(self._remaining, len(view) - pos)
                self._parts.append(bytes(view[pos:pos + take]))
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = "crlf"
                continue
            end = bytes(view[pos:pos + MAX_CHUNK_LINE + 2]).find(b"\r\n")
            if end < 0:
                if len(view) - pos > MAX_CHUNK_LINE:
                    raise HttpError(400, "chunk line too long")
                break  # wait for the rest of the line
            line = bytes(view[pos:pos + end])
            pos += end + 2
            if self._state == "crlf":
                if line:
                    raise HttpError(400, "chunk data longer than its size")
                self._state = "size"
            elif self._state == "size":
                match = _CHUNK_SIZE.fullmatch(line)
                if match is None:
                    raise HttpError(400, "malformed chunk size")
                size = int(match.group(1), 16)
                self._size += size
                if self._size > self._limit:
                    raise HttpError(413, "chunked body too large")
                if size:
                    self._state, self._remaining = "data", size
                else:
                    self._state = "trailer"
            elif line:  # a trailer field: checked for form, then dropped
                self._trailer += len(line) + 2
                if self._trailer > MAX_HEAD:
                    raise HttpError(431, "trailer fields too long")
                if _HEADER_LINE.fullmatch(line) is None:
                    raise HttpError(400, "malformed trailer field")
            else:
                self.done = True
        return pos


@dataclass(frozen=True, slots=True)
class Response:
    """An answer: status, body, its Content-Type, any other header fields."""

    status: int
    body: bytes
    content_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()
    close: bool = False
    """Close the connection after this answer (refusals, as Bitcoin Core and aiohttp did)."""
    delay: float = 0.0
    """Seconds to hold the answer back (a wrong password: slows down guessing)."""


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_STATUS_LINES = {
    (minor, status.value): b"HTTP/1.%d %d %s\r\n" % (minor, status.value, status.phrase.encode())
    for minor in (0, 1) for status in HTTPStatus
}


class DateHeader:
    """The `Date` value (IMF-fixdate), formatted at most once per second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def value(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode()
        return self._value


def response_bytes(response: Response, *, version: int, keep_alive: bool, server: bytes,
                   date: bytes, head_only: bool = False) -> bytes:
    """The full answer on the wire: status line, header fields, body (none for HEAD)."""
    if keep_alive:
        connection = b"Connection: keep-alive\r\n" if version == 0 else b""
    else:
        connection = b"Connection: close\r\n"
    extra = b"".join(b"%s: %s\r\n" % field for field in response.headers)
    head = b"%sContent-Type: %s\r\nContent-Length: %d\r\nDate: %s\r\nServer: %s\r\n%s%s\r\n" % (
        _STATUS_LINES[version, response.status], response.content_type, len(response.body),
        date, server, extra, connection)
    return head if head_only else head + response.body


def error_response(status: int) -> Response:
    """A plain-text refusal that closes the connection ("Not Found", "Forbidden", ...)."""
    return Response(status, HTTPStatus(status).phrase.encode(), TEXT, close=True)
