"""FakeRpcServer: a stand-in JSON-RPC endpoint for client and CLI tests (real HTTP on 127.0.0.1).

It speaks the transport a chainmill or MultiChain node speaks (Basic auth, envelopes on
200/400/404/500, 401 without JSON, batches) but answers from canned replies; it has no chain.
Other test modules load this file by its path, so that they do not depend on how pytest puts
test directories on sys.path.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Handler = Callable[[list[Any]], Any]


class FakeRpcError(Exception):
    """Raised by a canned handler to answer with a JSON-RPC error."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _status_for(code: int) -> int:
    return {-32600: 400, -32601: 404}.get(code, 500)


class FakeRpcServer:
    """Canned JSON-RPC replies over real HTTP; records every request it receives.

    ``keep_alive``: answer without ``Connection: close`` (default: close, as MultiChain does).
    ``drop_idle``: with keep_alive, close each connection after the reply without saying so,
    as a server does when an idle keep-alive connection times out.
    """

    def __init__(self, user: str = "rpcuser", password: str = "rpcpass", *,
                 keep_alive: bool = False, drop_idle: bool = False, delay: float = 0.0) -> None:
        self.user = user
        self.password = password
        self.keep_alive = keep_alive
        self.drop_idle = drop_idle
        self.delay = delay
        self.handlers: dict[str, Handler] = {}
        self.raw_replies: dict[str, tuple[int, str, bytes]] = {}
        self.requests: list[Any] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def __enter__(self) -> FakeRpcServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- canned replies

    def on(self, method: str, handler: Handler) -> None:
        """Answer ``method`` with ``handler(params)``; it may raise FakeRpcError."""
        self.handlers[method] = handler

    def returns(self, method: str, result: Any) -> None:
        self.on(method, lambda params: result)

    def fails(self, method: str, code: int, message: str) -> None:
        def handler(params: list[Any]) -> Any:
            raise FakeRpcError(code, message)

        self.on(method, handler)

    def raw(self, method: str, status: int, content_type: str, body: bytes) -> None:
        """Answer ``method`` with a non-JSON-RPC reply (e.g. 403 text/plain)."""
        self.raw_replies[method] = (status, content_type, body)

    # -- answering

    def _envelope(self, request: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return 400, {"result": None, "error": {"code": -32600, "message": "Invalid Request"},
                         "id": None}
        request_id = request.get("id")
        handler = self.handlers.get(request["method"])
        if handler is None:
            return 404, {"result": None, "error": {"code": -32601, "message": "Method not found"},
                         "id": request_id}
        try:
            result = handler(list(request.get("params") or []))
        except FakeRpcError as exc:
            return _status_for(exc.code), {
                "result": None, "error": {"code": exc.code, "message": exc.message},
                "id": request_id,
            }
        return 200, {"result": result, "error": None, "id": request_id}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class FakeRpcHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # headers and body go out in two writes; without this, Nagle's algorithm and
                # delayed ACKs stall every kept-alive reply by tens of milliseconds
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with fake._lock:
                    fake.connections += 1

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _send(self, status: int, content_type: str, body: bytes,
                      extra: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                if not fake.keep_alive:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = not fake.keep_alive or fake.drop_idle

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != "/":
                    self._send(404, "text/plain", b"Not Found")
                    return
                expected = base64.b64encode(f"{fake.user}:{fake.password}".encode()).decode()
                if self.headers.get("Authorization") != f"Basic {expected}":
                    self._send(401, "text/html", b"<html><body>401 Unauthorized</body></html>",
                               {"WWW-Authenticate": 'Basic realm="jsonrpc"'})
                    return
                if fake.delay:
                    time.sleep(fake.delay)
                try:
                    request = json.loads(body)
                except ValueError:
                    self._send(500, "application/json", json.dumps(
                        {"result": None, "error": {"code": -32700, "message": "Parse error"},
                         "id": None}).encode() + b"\n")
                    return
                with fake._lock:
                    fake.requests.append(request)
                if isinstance(request, dict) and request.get("method") in fake.raw_replies:
                    status, content_type, raw = fake.raw_replies[request["method"]]
                    self._send(status, content_type, raw)
                    return
                if isinstance(request, list):
                    status, document = 200, [fake._envelope(item)[1] for item in request]
                else:
                    status, document = fake._envelope(request)
                self._send(status, "application/json", json.dumps(document).encode() + b"\n")

        return FakeRpcHandler


def test_fake_rpc_server_answers_canned_envelopes() -> None:
    import urllib.request

    with FakeRpcServer(user="u", password="p") as fake:
        fake.returns("getblockcount", 5)
        request = urllib.request.Request(
            f"http://127.0.0.1:{fake.port}/",
            data=b'{"method":"getblockcount","params":[],"id":1}',
            headers={"Authorization": "Basic " + base64.b64encode(b"u:p").decode()},
        )
        with urllib.request.urlopen(request, timeout=5) as reply:
            assert json.loads(reply.read()) == {"result": 5, "error": None, "id": 1}
