"""JSON-RPC client for a chainmill (or MultiChain) node: synchronous, stdlib only, thread-safe.

Every upper layer (triggers/, erp/, the CLI, the tests) reaches a node through RpcClient, so
the same code works against a node on another machine and against MultiChain itself.
"""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import logging
import os
import ssl
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from config.errors import ChainmillError, ConfigError
from config.paths import (
    CONF_FILE,
    PARAMS_FILE,
    chain_dir,
    global_conf_path,
    resolve_datadir,
)

log = logging.getLogger(__name__)

_AUTH_MESSAGE = "incorrect rpcuser or rpcpassword"


class RpcError(ChainmillError):
    """The node answered with a JSON-RPC error (or an HTTP error without a JSON-RPC body).

    ``code`` is the JSON-RPC error code (MultiChain's codes, e.g. -708); it is 0 when the
    reply carried no code (HTTP-level failure, see ``http_status``).
    """

    def __init__(self, code: int, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code}, message={self.message!r})"


class RpcAuthError(RpcError):
    """HTTP 401: the node refused the rpcuser/rpcpassword."""

    def __init__(self) -> None:
        super().__init__(0, _AUTH_MESSAGE, http_status=401)


class RpcConnectionError(ChainmillError):
    """The node could not be reached, or the connection failed before a reply arrived."""

    def __init__(self, message: str, host: str, port: int) -> None:
        super().__init__(message)
        self.host = host
        self.port = port


_RETRYABLE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
              http.client.CannotSendRequest)


class RpcClient:
    """Calls JSON-RPC methods on one node.

    Thread-safe: each thread uses its own HTTP connection. A connection is reused while the
    server keeps it alive; if the server has closed an idle one, the request is resent once
    on a fresh connection.
    """

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        password: str,
        chain_name: str | None = None,
        timeout: float = 60,
        *,
        tls: bool = False,
        cafile: str | os.PathLike[str] | None = None,
        verify: bool = True,
    ) -> None:
        """With ``tls`` the node is reached over https (a node with ``rpcssl=1``): its
        certificate is checked against ``cafile`` (for a self-signed certificate, the
        certificate file itself), else against the system's CAs; ``verify=False`` turns the
        check off, and must be asked for explicitly."""
        self.host = host
        self.port = int(port)
        self.user = user
        self.chain_name = chain_name
        self.timeout = timeout
        self._ssl: ssl.SSLContext | None = None
        if tls:
            self._ssl = _client_ssl_context(cafile, verify)
        elif cafile is not None or not verify:
            raise ConfigError("cafile and verify apply to TLS connections only (tls=True)")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        self._headers = {
            "Authorization": f"Basic {token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "chainmill-rpc-client",
        }
        self._local = threading.local()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._connections: set[http.client.HTTPConnection] = set()

    def __repr__(self) -> str:
        return (f"RpcClient(host={self.host!r}, port={self.port}, user={self.user!r}, "
                f"chain_name={self.chain_name!r}, tls={self._ssl is not None})")

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------ calls

    def call(self, method: str, *params: Any) -> Any:
        """Call ``method`` with positional ``params``; return its result or raise RpcError."""
        request = self._request_object(method, list(params))
        status, reason, body = self._post(json.dumps(request, separators=(",", ":")).encode())
        reply = _decode(status, reason, body)
        if not isinstance(reply, dict):
            raise RpcError(0, f"HTTP {status}: the reply is not a JSON-RPC envelope",
                           http_status=status)
        error = reply.get("error")
        if error is not None:
            raise _error_from(error, status)
        if status != 200:
            raise RpcError(0, f"HTTP {status} {reason} without an error object", http_status=status)
        return reply.get("result")

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any | RpcError]:
        """Send several calls as one JSON array; results in the same order, failures as RpcError."""
        if not calls:
            return []
        requests = [self._request_object(method, list(params)) for method, params in calls]
        status, reason, body = self._post(json.dumps(requests, separators=(",", ":")).encode())
        reply = _decode(status, reason, body)
        if isinstance(reply, dict) and reply.get("error") is not None:
            raise _error_from(reply["error"], status)
        if not isinstance(reply, list) or len(reply) != len(requests):
            raise RpcError(0, f"HTTP {status}: the reply is not a batch of {len(requests)} envelopes",
                           http_status=status)
        by_id = {
            json.dumps(item.get("id")): item for item in reply if isinstance(item, dict)
        }
        results: list[Any | RpcError] = []
        for position, request in enumerate(requests):
            item = by_id.get(json.dumps(request["id"]), reply[position])
            if not isinstance(item, dict):
                results.append(RpcError(0, "malformed batch reply element"))
            elif item.get("error") is not None:
                results.append(_error_from(item["error"], status))
            else:
                results.append(item.get("result"))
        return results

    def close(self) -> None:
        """Close every connection this client opened (in any thread).

        The client stays usable: a later call opens a new connection.
        """
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.close()

    # ------------------------------------------------------------ transport

    def _request_object(self, method: str, params: list[Any]) -> dict[str, Any]:
        with self._lock:
            request_id = next(self._ids)
        request: dict[str, Any] = {"method": method, "params": params, "id": request_id}
        if self.chain_name is not None:
            request["chain_name"] = self.chain_name
        return request

    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            if self._ssl is not None:
                connection = http.client.HTTPSConnection(self.host, self.port,
                                                         timeout=self.timeout, context=self._ssl)
            else:
                connection = http.client.HTTPConnection(self.host, self.port,
                                                        timeout=self.timeout)
            self._local.connection = connection
            with self._lock:
                self._connections.add(connection)
        return connection

    def _post(self, body: bytes) -> tuple[int, str, bytes]:
        where = f"{self.host}:{self.port}"
        for attempt in (1, 2):
            connection = self._connection()
            reused = connection.sock is not None
            try:
                connection.request("POST", "/", body=body, headers=self._headers)
                response = connection.getresponse()
                data = response.read()
                return response.status, response.reason, data
            except _RETRYABLE as exc:
                connection.close()
                if reused and attempt == 1:
                    log.debug("connection to %s was closed by the server; reconnecting", where)
                    continue
                raise RpcConnectionError(
                    f"connection to {where} closed before a reply: {exc}", self.host, self.port
                ) from exc
            except ssl.SSLError as exc:
                connection.close()
                raise RpcConnectionError(
                    f"TLS connection to {where} failed: {exc.reason or exc}", self.host, self.port
                ) from exc
            except TimeoutError as exc:
                connection.close()
                raise RpcConnectionError(
                    f"no reply from {where} within {self.timeout:g} s", self.host, self.port
                ) from exc
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                raise RpcConnectionError(
                    f"cannot connect to {where}: {reason}", self.host, self.port
                ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------ construction

    @classmethod
    def from_datadir(
        cls,
        chain: str,
        datadir: Path | str | None = None,
        host: str = "127.0.0.1",
        *,
        user: str | None = None,
        password: str | None = None,
        port: int | None = None,
        timeout: float = 60,
        environ: Mapping[str, str] = os.environ,
        cafile: str | os.PathLike[str] | None = None,
        verify: bool = True,
    ) -> RpcClient:
        """A client for the local node of ``chain``, with credentials from its data directory.

        Each of user, password and port comes from, in order: the argument, the environment
        (``CHAINMILL_RPCUSER``, ``CHAINMILL_RPCPASSWORD``, ``CHAINMILL_RPCPORT``), the chain's
        chainmill.conf, the global chainmill.conf; the port finally from ``default-rpc-port``
        in the chain's params.dat. With ``rpcssl=1`` in those files the client uses TLS and,
        without a ``cafile``, trusts the node's own certificate (rpcsslcertificatechainfile).
        Raises ConfigError when no password or port is found.
        """
        from config.params import read_params_file  # the port fallback only
        from config.runtime import DEFAULT_RPCUSER, read_conf_file

        base = resolve_datadir(datadir, environ)
        directory = chain_dir(base, chain)
        user = user if user is not None else environ.get("CHAINMILL_RPCUSER") or None
        password = password if password is not None else environ.get("CHAINMILL_RPCPASSWORD") or None
        if port is None and environ.get("CHAINMILL_RPCPORT"):
            port = _port(environ["CHAINMILL_RPCPORT"], "CHAINMILL_RPCPORT")
        if user is not None and password is not None and port is not None and not directory.is_dir():
            return cls(host, port, user, password, chain_name=chain, timeout=timeout)

        if not directory.is_dir():
            raise ConfigError(
                f"no chain named {chain!r} in {base} (create it with: chainmill create {chain})"
            )
        conf: dict[str, list[str]] = {}
        for path in (global_conf_path(base), directory / CONF_FILE):
            if path.exists():
                conf.update(read_conf_file(path))
        user = user if user is not None else (conf.get("rpcuser") or [DEFAULT_RPCUSER])[-1]
        if password is None:
            password = (conf.get("rpcpassword") or [""])[-1]
            if not password:
                raise ConfigError(
                    f"no RPC credentials for chain {chain!r}: rpcpassword is not set in "
                    f"{directory / CONF_FILE}"
                )
        if port is None and conf.get("rpcport"):
            port = _port(conf["rpcport"][-1], "rpcport")
        if port is None:
            params_file = directory / PARAMS_FILE
            if not params_file.exists():
                raise ConfigError(
                    f"no RPC port for chain {chain!r}: no rpcport in {directory / CONF_FILE} "
                    f"and no {PARAMS_FILE}"
                )
            port = read_params_file(params_file).rpc_port
        tls = (conf.get("rpcssl") or ["0"])[-1].strip().lower() in ("1", "true", "yes", "on", "")
        if tls and cafile is None and verify:
            cafile = directory / (conf.get("rpcsslcertificatechainfile") or ["server.cert"])[-1]
        return cls(host, port, user, password, chain_name=chain, timeout=timeout, tls=tls,
                   cafile=cafile if tls else None, verify=verify if tls else True)


def _client_ssl_context(cafile: str | os.PathLike[str] | None, verify: bool) -> ssl.SSLContext:
    if not verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        log.warning("TLS certificate verification is off for this RPC client")
    else:
        try:
            context = ssl.create_default_context(cafile=None if cafile is None else str(cafile))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot use {cafile} as the RPC CA file: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _port(text: str, name: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ConfigError(f"{name}: expected a port number, got {text!r}") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"{name}: {port} is out of range (1 - 65535)")
    return port


def _decode(status: int, reason: str, body: bytes) -> Any:
    """The JSON document of a reply; HTTP errors without one become RpcError."""
    if status == 401:
        raise RpcAuthError()
    try:
        return json.loads(body)
    except ValueError:
        snippet = body[:200].decode("utf-8", "replace").strip()
        message = f"HTTP {status} {reason}".rstrip()
        if snippet:
            message += f": {snippet}"
        raise RpcError(0, message, http_status=status) from None


def _error_from(error: object, status: int) -> RpcError:
    if isinstance(error, dict):
        code = error.get("code", 0)
        message = error.get("message", "")
        return RpcError(code if isinstance(code, int) else 0,
                        message if isinstance(message, str) else json.dumps(message),
                        http_status=status)
    return RpcError(0, str(error), http_status=status)


__all__ = ["RpcAuthError", "RpcClient", "RpcConnectionError", "RpcError"]
