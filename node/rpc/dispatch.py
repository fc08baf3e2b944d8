"""Transport-free JSON-RPC core: the method table and the dispatcher (spec §1.3-§1.7).

Handler calling convention: a handler receives the positional params list (already checked
against its [min, max] count) and returns a JSON-able result. It may be a plain function
(called directly on the event loop, so it must not block) or an `async def` (awaited). It
reports failures by raising: RpcError for an explicit code, a domain error from
ledger/errors.py for the mapped code (node/rpc/errors.py), anything else becomes -1.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from node.metrics import UNKNOWN_METHOD
from node.rpc import help as rpc_help
from node.rpc.errors import (
    RPC_IN_WARMUP,
    RPC_INTERNAL_ERROR,
    RPC_INVALID_PARAMETER,
    RPC_INVALID_REQUEST,
    RPC_METHOD_NOT_FOUND,
    RPC_MISC_ERROR,
    RPC_NOT_ALLOWED,
    RPC_PARSE_ERROR,
    to_rpc_error,
)
from node.rpc.params import as_str

log = logging.getLogger(__name__)

Handler = Callable[[list[Any]], Any]
"""A method implementation: positional params in, JSON-able result out (sync or async)."""
Durable = Callable[[BaseException | None], None]
"""Called once the replies' transactions are on disk, with None or the fsync's error."""
T = TypeVar("T")

MAX_PARAM_ITEMS = 10_000
"""Most entries an array parameter may hold (addresses, keys, streams, blocks, items): one
call's work stays bounded whatever the method (issue 15.3)."""

BATCH_SLICE = 0.002
"""Seconds a batch runs before it lets the event loop serve others (a yield per element cost
a loop iteration, an epoll call included, per element)."""

WARMUP_METHODS = frozenset({"stop", "getinitstatus", "help"})
"""Methods that always work during warm-up, whatever their registration says."""


@dataclass(slots=True)
class _Call:
    """A request object that passed the checks: what to call. Not frozen: a frozen
    dataclass's __init__ sets each field through object.__setattr__, about 3,700
    instructions per call (one in eight of a batch element's dispatch)."""

    method: Method
    params: list[Any]
    rid: Any


@dataclass(frozen=True, slots=True)
class Method:
    """One registered method; everything dispatch needs is decided here, at registration."""

    name: str
    handler: Handler
    is_async: bool
    min_params: int
    max_params: int
    help: str
    category: str
    warmup_ok: bool


class MethodTable:
    """Method name -> Method. The RPC server, the CLI and the tests all call through one."""

    def __init__(self) -> None:
        self._methods: dict[str, Method] = {}

    def register(
        self,
        name: str,
        handler: Handler,
        *,
        min_params: int,
        max_params: int,
        help: str,
        category: str,
        warmup_ok: bool = False,
    ) -> None:
        """Add a method; registering a name twice or an impossible count is a bug (ValueError)."""
        if name in self._methods:
            raise ValueError(f"RPC method {name!r} registered twice")
        if not 0 <= min_params <= max_params:
            raise ValueError(f"RPC method {name!r}: bad parameter counts {min_params}..{max_params}")
        self._methods[name] = Method(
            name=name,
            handler=handler,
            is_async=_is_async(handler),
            min_params=min_params,
            max_params=max_params,
            help=help,
            category=category,
            warmup_ok=warmup_ok or name in WARMUP_METHODS,
        )

    def register_standard(self, name: str, handler: Handler, *, warmup_ok: bool = False) -> None:
        """Register a method of spec §2.1 with its counts, help text and category from help.py."""
        min_params, max_params = rpc_help.PARAM_COUNTS[name]
        self.register(
            name,
            handler,
            min_params=min_params,
            max_params=max_params,
            help=rpc_help.HELP[name],
            category=rpc_help.CATEGORY[name],
            warmup_ok=warmup_ok,
        )

    def get(self, name: str) -> Method | None:
        """The registered method, or None."""
        return self._methods.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def names(self) -> list[str]:
        """Registered method names, sorted."""
        return sorted(self._methods)

    def help_text(self, name: str) -> str:
        """The full help text of a method; for an unknown name, `help: unknown command: X`."""
        method = self._methods.get(name)
        if method is None:
            return rpc_help.unknown_command(name)
        return method.help

    def help_overview(self) -> str:
        """`help` with no argument: usage lines of all registered methods, by category."""
        methods = self._methods.values()
        return rpc_help.help_overview(
            self._methods,
            {m.name: m.category for m in methods},
            {m.name: m.help for m in methods},
        )


def _is_async(handler: Handler) -> bool:
    # Also catches objects with an `async def __call__`, which iscoroutinefunction misses.
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        type(handler).__call__)


def register_help(table: MethodTable) -> None:
    """Register the `help` method, which answers from `table` itself."""

    def help_(params: list[Any]) -> str:
        if not params or params[0] is None:
            return table.help_overview()
        return table.help_text(as_str(params[0], "command"))

    table.register_standard("help", help_, warmup_ok=True)


def _error(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"result": None, "error": {"code": code, "message": message}, "id": rid}


def _status(code: int) -> int:
    if code == RPC_INVALID_REQUEST:
        return 400
    if code == RPC_METHOD_NOT_FOUND:
        return 404
    return 500


_PARSE_ERROR = orjson.dumps(_error(None, RPC_PARSE_ERROR, "Parse error")) + b"\n"
_TOP_LEVEL_ERROR = orjson.dumps(
    _error(None, RPC_PARSE_ERROR, "Top-level object parse error")) + b"\n"
_ALLOW_MESSAGE = "Method not allowed with current setting of -rpcallowmethod runtime parameter"


class Dispatcher:
    """Runs JSON-RPC requests against a MethodTable: checks in spec §1.7 order, then the handler.

    `warmup_status` may be set and cleared at any time by the node: while it is a string,
    every method not registered as warm-up-safe fails with -28 and that text.

    `before_reply`, if given, is awaited once per HTTP request before its reply goes out
    (the node makes its new transactions durable there: one wait covers a whole batch).
    `on_durable` is the same wait in callback form, for `handle_body_now`: `on_durable(done)`
    returns False when nothing is waiting for the disk, else calls `done` later.

    `observe`, if set, is called after each request object with (method, outcome, seconds):
    the method name (node.metrics.UNKNOWN_METHOD for names not registered), "ok" or the
    error code, and the time it took (the node's /metrics counts calls there).
    """

    def __init__(
        self,
        table: MethodTable,
        *,
        chain_name: str,
        allow_methods: Iterable[str] | None = None,
        before_reply: Callable[[], Awaitable[None]] | None = None,
        on_durable: Callable[[Durable], bool] | None = None,
    ) -> None:
        self.table = table
        self.chain_name = chain_name
        self.before_reply = before_reply
        self.on_durable = on_durable
        self.warmup_status: str | None = None
        self.observe: Callable[[str, str, float], None] | None = None
        self.read_barrier: asyncio.Event | None = None
        """When set by the node: methods run only while this event is set (the node clears it
        while a block is being committed, so no method sees a half-applied block)."""
        # `help` is always allowed (spec §1.7 step 9).
        self._allowed = None if allow_methods is None else frozenset(allow_methods) | {"help"}
        self._methods = table._methods  # the live dict: one lookup per request

    async def handle_object(self, obj: Any) -> tuple[dict[str, Any], int]:
        """One request object -> (response envelope, HTTP status)."""
        start = time.perf_counter()
        reply = await self._handle_object(obj)
        self._observed(obj, reply[0], start)
        return reply

    def _observed(self, obj: Any, envelope: dict[str, Any], start: float) -> None:
        observe = self.observe
        if observe is None:
            return
        name = obj.get("method") if isinstance(obj, dict) else None
        error = envelope["error"]
        observe(name if isinstance(name, str) and name in self._methods else UNKNOWN_METHOD,
                "ok" if error is None else str(error["code"]), time.perf_counter() - start)

    async def _handle_object(self, obj: Any) -> tuple[dict[str, Any], int]:
        call = self._checked(obj)
        if not isinstance(call, _Call):
            return call
        barrier = self._barrier(call.method)
        while barrier is not None and not barrier.is_set():
            await barrier.wait()  # loop: another block may start before this task resumes
        try:
            if call.method.is_async:
                result = await call.method.handler(call.params)
            else:
                result = call.method.handler(call.params)
        except Exception as exc:
            return _failed(call, exc)
        return {"result": result, "error": None, "id": call.rid}, 200

    def _handle_object_now(self, obj: Any) -> tuple[dict[str, Any], int] | None:
        """`handle_object` without awaiting; None (nothing run) if it would have to wait."""
        start = time.perf_counter()
        call = self._checked(obj)
        if not isinstance(call, _Call):
            self._observed(obj, call[0], start)
            return call
        method = call.method
        barrier = self._barrier(method)
        if method.is_async or (barrier is not None and not barrier.is_set()):
            return None
        try:
            reply = {"result": method.handler(call.params), "error": None, "id": call.rid}, 200
        except Exception as exc:
            reply = _failed(call, exc)
        observe = self.observe
        if observe is not None:  # _observed, with the method known to be registered
            error = reply[0]["error"]
            observe(method.name, "ok" if error is None else str(error["code"]),
                    time.perf_counter() - start)
        return reply

    def _barrier(self, method: Method) -> asyncio.Event | None:
        return self.read_barrier if method.name not in WARMUP_METHODS else None  # stop, help

    def _checked(self, obj: Any) -> tuple[dict[str, Any], int] | _Call:
        """The checks of spec §1.7, in order: the error reply, or the call to make."""
        if not isinstance(obj, dict):
            return _error(None, RPC_INVALID_REQUEST, "Invalid Request object"), 400
        rid = obj.get("id")
        if isinstance(rid, (list, dict)) and not _encodable(rid):
            # An id nested deeper than the encoder goes (255 levels) cannot be echoed: a
            # JSON-RPC error with a null id, not an HTML 500 (issue 15.3).
            return _error(None, RPC_INVALID_REQUEST, "Invalid id: nested too deeply"), 400
        name = obj.get("method")
        if not isinstance(name, str):
            if name is None:
                return _error(rid, RPC_INVALID_REQUEST, "Missing method"), 400
            return _error(rid, RPC_INVALID_REQUEST, "Method must be a string"), 400
        method = self._methods.get(name)
        if self.warmup_status is not None and (method is None or not method.warmup_ok):
            return _error(rid, RPC_IN_WARMUP, self.warmup_status), 500
        params = obj.get("params")
        if params is None:
            params = []
        elif not isinstance(params, list):
            return _error(rid, RPC_INVALID_REQUEST, "Params must be an array"), 400
        chain_name = obj.get("chain_name")
        if chain_name is not None and chain_name != self.chain_name:
            if not isinstance(chain_name, str):
                return _error(rid, RPC_INVALID_REQUEST, "Chain name must be a string"), 400
            return _error(rid, RPC_INVALID_REQUEST, "Wrong chain name"), 400
        if method is None:
            return _error(rid, RPC_METHOD_NOT_FOUND, "Method not found"), 404
        if self._allowed is not None and name not in self._allowed:
            return _error(rid, RPC_NOT_ALLOWED, _ALLOW_MESSAGE), 500
        if not method.min_params <= len(params) <= method.max_params:
            return _error(rid, RPC_MISC_ERROR, method.help), 500
        for position, param in enumerate(params):
            if isinstance(param, list) and len(param) > MAX_PARAM_ITEMS:
                return _error(rid, RPC_INVALID_PARAMETER,
                              f"Too many entries in parameter {position + 1}: {len(param)} "
                              f"(at most {MAX_PARAM_ITEMS} in one call)"), 500
        return _Call(method, params, rid)

    def handle_body_now(self, body: bytes, make: Callable[[bytes, int], T],
                        ) -> T | Awaitable[T] | None:
        """`handle_body` without a task, for a body that needs no waiting but the disk's: one
        request object, or a batch of them, of plain-function methods while the read barrier
        is open (every one-item `publish`, every read, every batch of `publish` calls).

        Returns `make(reply, status)` when the reply may go out at once, a future of it when
        it waits for `on_durable`, or None when the body must go through `handle_body` (an
        `async def` method, a closed barrier, `before_reply` without `on_durable`); then
        nothing of it has run. A batch that meets such an element after others ran, or that
        runs longer than BATCH_SLICE, returns a coroutine that answers the rest of it in
        order, the way `handle_body` does.
        """
        if self.before_reply is not None and self.on_durable is None:
            return None
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            reply = _PARSE_ERROR, 500
        else:
            if isinstance(request, dict):
                outcome = self._handle_object_now(request)
                if outcome is None:
                    return None
                reply = _encoded(*outcome, request.get("method"))
            elif isinstance(request, list):
                parts: list[bytes] = []
                done = self._batch_now(request, parts, 0, time.perf_counter() + BATCH_SLICE)
                if done < len(request):
                    if not parts:
                        return None  # its first element waits: nothing has run
                    return self._batch_later(request, done, parts, make)
                reply = _batch_reply(parts), 200
            else:
                reply = _TOP_LEVEL_ERROR, 500
        return self._when_durable(reply, make)

    def _batch_now(self, batch: list[Any], parts: list[bytes], start: int,
                   yield_at: float) -> int:
        """Answer `batch[start:]` in order into `parts` without awaiting, up to the first
        element that would have to wait or until the clock reaches `yield_at` (the first
        element always runs); the index it stopped at."""
        clock = time.perf_counter
        for index in range(start, len(batch)):
            if index > start and clock() >= yield_at:
                return index
            element = batch[index]
            outcome = self._handle_object_now(element)
            if outcome is None:
                return index
            parts.append(_element_bytes(outcome[0], element))
        return len(batch)

    async def _batch_later(self, batch: list[Any], start: int, parts: list[bytes],
                           make: Callable[[bytes, int], T]) -> T:
        """The rest of a batch `handle_body_now` began, then its one wait for the disk."""
        await asyncio.sleep(0)  # the slice is spent, or an element waits: let others run
        await self._batch_rest(batch, start, parts)
        answer = self._when_durable((_batch_reply(parts), 200), make)
        if isinstance(answer, asyncio.Future):
            return await answer
        return answer

    async def _batch_rest(self, batch: list[Any], start: int, parts: list[bytes]) -> None:
        """Answer `batch[start:]` in order into `parts`: runs of elements answered without
        awaiting (`_batch_now`), a yield to the loop every BATCH_SLICE, and only an element
        that must wait (an `async def` method, a closed read barrier) awaited on its own.
        Awaiting every element cost two coroutines and a dispatch through the task path
        each, a fifth of a 32-publish batch's dispatch (bench/README.md)."""
        clock = time.perf_counter
        yield_at = clock() + BATCH_SLICE
        done = start
        while done < len(batch):
            if clock() >= yield_at:
                await asyncio.sleep(0)  # a long batch must not hold the loop for others
                yield_at = clock() + BATCH_SLICE
            ran = self._batch_now(batch, parts, done, yield_at)
            if ran == done:  # this element waits: for its method, or for the barrier
                element = batch[done]
                envelope, _ = await self.handle_object(element)
                parts.append(_element_bytes(envelope, element))
                ran += 1
            done = ran

    def _when_durable(self, reply: tuple[bytes, int], make: Callable[[bytes, int], T],
                      ) -> T | asyncio.Future[T]:
        """`make(*reply)`, at once or (a future) once `on_durable` says the disk has it."""
        if self.on_durable is None:
            return make(*reply)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()

        def durable(error: BaseException | None) -> None:
            if future.done():
                return
            if error is None:
                future.set_result(make(*reply))
            elif isinstance(error, OSError):
                future.set_result(make(*_disk_error(error)))
            else:
                future.set_exception(error)

        if not self.on_durable(durable):
            return make(*reply)
        return future

    async def handle_body(self, body: bytes) -> tuple[bytes, int]:
        """An HTTP request body -> (response body ending in a newline, HTTP status)."""
        reply = await self._handle_body(body)
        if self.before_reply is not None:
            try:
                await self.before_reply()
            except OSError as exc:
                return _disk_error(exc)
        return reply

    async def _handle_body(self, body: bytes) -> tuple[bytes, int]:
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _PARSE_ERROR, 500
        if isinstance(request, dict):
            envelope, status = await self.handle_object(request)
            return _encoded(envelope, status, request.get("method"))
        if isinstance(request, list):
            # Each element independently and in order; a batch is always HTTP 200 (§1.6).
            parts: list[bytes] = []
            await self._batch_rest(request, 0, parts)
            return _batch_reply(parts), 200
        return _TOP_LEVEL_ERROR, 500


def _failed(call: _Call, exc: Exception) -> tuple[dict[str, Any], int]:
    err = to_rpc_error(exc, call.method.name)
    return _error(call.rid, err.code, err.message), _status(err.code)


def _element_bytes(envelope: dict[str, Any], element: Any) -> bytes:
    """One batch element's answer, without the newline."""
    try:
        return orjson.dumps(envelope)
    except TypeError as exc:
        method = element.get("method") if isinstance(element, dict) else None
        return _unencodable(envelope, exc, method)[:-1]


def _batch_reply(parts: list[bytes]) -> bytes:
    return b"[" + b",".join(parts) + b"]\n"


def _encoded(envelope: dict[str, Any], status: int, method: Any) -> tuple[bytes, int]:
    try:
        return orjson.dumps(envelope, option=orjson.OPT_APPEND_NEWLINE), status
    except TypeError as exc:
        return _unencodable(envelope, exc, method), 500


def _disk_error(exc: OSError) -> tuple[bytes, int]:
    log.error("cannot make the request's transactions durable: %s", exc)
    return orjson.dumps(_error(None, RPC_INTERNAL_ERROR, f"Cannot write to disk: {exc}"),
                        option=orjson.OPT_APPEND_NEWLINE), 500


def _encodable(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


def _unencodable(envelope: dict[str, Any], exc: TypeError, method: Any) -> bytes:
    """The error reply for a result that is not JSON-able (a handler bug, or a result echoing
    a structure nested too deeply to encode)."""
    log.warning("RPC method %s returned a result that cannot be encoded: %s", method, exc)
    rid = envelope["id"] if _encodable(envelope["id"]) else None
    error = _error(rid, RPC_INTERNAL_ERROR, "Result cannot be encoded")
    return orjson.dumps(error, option=orjson.OPT_APPEND_NEWLINE)
