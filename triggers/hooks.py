"""The four optional per-table hooks (spec 1.12), kept in an explicit registry object.

A registry is passed to the sender and the receiver; there is no global one. Rows are plain
dicts of column name to Python value. An exception in a hook is wrapped in HookFailed, which
fails the whole send or receive it belongs to.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from triggers.errors import ConfigurationInvalid, HookFailed

__all__ = ["TableHooks", "HookRegistry", "load_registry"]

RowDict = dict[str, Any]
GetFileBody = Callable[[RowDict], "tuple[str, bytes] | None"]
BeforeSend = Callable[[RowDict], RowDict]
PutFileBody = Callable[..., None]
AfterReceive = Callable[[RowDict], RowDict]


@dataclass(slots=True)
class TableHooks:
    """Hooks of one table; any of them may be None."""

    get_file_body: GetFileBody | None = None
    before_send: BeforeSend | None = None
    put_file_body: PutFileBody | None = None
    after_receive: AfterReceive | None = None


class HookRegistry:
    """Table name -> TableHooks. Calling a hook of a table without one is a no-op."""

    def __init__(self) -> None:
        self._tables: dict[str, TableHooks] = {}

    def register(
        self,
        table: str,
        *,
        get_file_body: GetFileBody | None = None,
        before_send: BeforeSend | None = None,
        put_file_body: PutFileBody | None = None,
        after_receive: AfterReceive | None = None,
    ) -> TableHooks:
        """Set the hooks given for `table` (others keep their previous value)."""
        hooks = self._tables.setdefault(table, TableHooks())
        if get_file_body is not None:
            hooks.get_file_body = get_file_body
        if before_send is not None:
            hooks.before_send = before_send
        if put_file_body is not None:
            hooks.put_file_body = put_file_body
        if after_receive is not None:
            hooks.after_receive = after_receive
        return hooks

    def for_table(self, table: str) -> TableHooks | None:
        """The hooks of `table`, or None."""
        return self._tables.get(table)

    def get_file_body(self, table: str, row: RowDict) -> tuple[str, bytes] | None:
        """Sender: the (file name, bytes) to attach to `row`, or None."""
        hooks = self._tables.get(table)
        if hooks is None or hooks.get_file_body is None:
            return None
        result = _call(table, "get_file_body", hooks.get_file_body, dict(row))
        if result is None:
            return None
        name, content = result
        return str(name), bytes(content)

    def before_send(self, table: str, row: RowDict) -> RowDict:
        """Sender: adjust an outgoing row (e.g. null the home-currency amounts)."""
        hooks = self._tables.get(table)
        if hooks is None or hooks.before_send is None:
            return row
        return _checked_row(table, "before_send", _call(table, "before_send", hooks.before_send, dict(row)))

    def put_file_body(
        self, table: str, row: RowDict, file_name: str, content: bytes, conn: Any = None
    ) -> None:
        """Receiver: store a received file for `row` (after the row is written).

        A hook taking a fourth parameter also gets the receiver's connection, so it can
        write the file into the database inside the same transaction.
        """
        hooks = self._tables.get(table)
        if hooks is None or hooks.put_file_body is None:
            return
        args: tuple[Any, ...] = (dict(row), file_name, content)
        if _arity(hooks.put_file_body) >= 4:
            args += (conn,)
        _call(table, "put_file_body", hooks.put_file_body, *args)

    def after_receive(self, table: str, row: RowDict) -> RowDict:
        """Receiver: adjust an incoming row before it is written (e.g. fill the exchange rate)."""
        hooks = self._tables.get(table)
        if hooks is None or hooks.after_receive is None:
            return row
        return _checked_row(
            table, "after_receive", _call(table, "after_receive", hooks.after_receive, dict(row))
        )


def _arity(fn: Callable[..., Any]) -> int:
    try:
        return len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return 3


def _call(table: str, name: str, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as exc:  # a hook is user code: any failure fails the send/receive
        raise HookFailed(f"{name} hook of table {table} failed: {exc!r}") from exc


def _checked_row(table: str, name: str, row: Any) -> RowDict:
    if not isinstance(row, dict):
        raise HookFailed(f"{name} hook of table {table} returned {type(row).__name__}, not a dict")
    return row


def load_registry(spec: str) -> HookRegistry:
    """Load a registry named `package.module:attribute` (an instance, or a factory returning one)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationInvalid(f"hooks must be given as module:attribute, not {spec!r}")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationInvalid(f"cannot load hooks {spec}: {exc}") from None
    if callable(obj) and not isinstance(obj, HookRegistry):
        obj = obj()
    if not isinstance(obj, HookRegistry):
        raise ConfigurationInvalid(f"{spec} is not a HookRegistry")
    return obj
