"""Capture: committed DML on configured tables becomes an outbox row in the same transaction.

`enable(engine)` installs SQLAlchemy engine event listeners, so an application that writes
through an ORM Session or a Core Connection needs no other change. For every INSERT, UPDATE
or DELETE construct on a table with an active trigger (spec 1.3), the first matching trigger
of the database transaction is captured (one trigger per transaction), and a row is written
to `blockchain_outbox` on the application's own connection, inside its transaction: it
becomes durable exactly when the business change commits and vanishes with a rollback. The
relay sends it after the commit; nothing is ever sent from inside the transaction.

Only SQLAlchemy DML constructs are seen; raw SQL strings (`text()`, `exec_driver_sql`)
bypass capture, just as in the reference, where only the data-access layer fires triggers.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.engine import Connection, Engine, Result
from sqlalchemy.orm import Session
from sqlalchemy.sql import dml, operators, visitors
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, BooleanClauseList
from sqlalchemy.sql.schema import Column, Table

from triggers import recipients, schema
from triggers import rules as rules_mod
from triggers.errors import ConfigurationInvalid
from triggers.rules import TriggerRule
from triggers.values import to_text

__all__ = [
    "BLOCKCHAIN_MODE",
    "ALIAS",
    "Capture",
    "enable",
    "blockchain_mode",
    "using_alias",
    "PrimaryKeyUpdateRefused",
]

log = logging.getLogger(__name__)

BLOCKCHAIN_MODE = "chainmill_blockchain_mode"
"""Execution option: changes applied from a received message; triggers never fire."""
ALIAS = "chainmill_alias"
"""Execution option (or connection info key): the table alias the DML is performed through."""

_STATE = "chainmill.capture.state"
_GUARD = "chainmill.capture.guard"
_CONFIG_TABLES = frozenset({schema.trigger.name, schema.related_table.name})


class PrimaryKeyUpdateRefused(ConfigurationInvalid):
    """An UPDATE would change the primary key of a root table (spec 1.3, Decision)."""


@dataclass(slots=True)
class _TxState:
    captured: bool = False
    pending: dict[int, dict[str, Any] | None] = field(default_factory=dict)
    contacts: dict[int, list[str]] = field(default_factory=dict)


def _state(conn: Connection) -> _TxState:
    state = conn.info.get(_STATE)
    if state is None:
        state = conn.info[_STATE] = _TxState()
    return state


@contextmanager
def _guarded(conn: Connection):
    conn.info[_GUARD] = True
    try:
        yield
    finally:
        conn.info[_GUARD] = False


def _option(conn: Connection, execution_options: Any, name: str) -> Any:
    value = execution_options.get(name) if execution_options else None
    if value is None:
        value = conn.get_execution_options().get(name)
    if value is None:
        value = conn.info.get(name)
    return value


class Capture:
    """The event listeners of one engine, with a per-subsystem trigger cache."""

    def __init__(
        self,
        engine: Engine,
        subsystem: str | None = None,
        today: Callable[[], dt.date] = dt.date.today,
        cache_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.subsystem = subsystem
        self._today = today
        self._clock = clock
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._rules: dict[str, list[TriggerRule]] | None = None
        self._loaded_at = 0.0
        self._loaded_day: dt.date | None = None
        self.captured_count = 0
        self._listeners: list[tuple[str, Callable[..., Any]]] = []

    # -- wiring ---------------------------------------------------------------------------

    def enable(self) -> Capture:
        """Install the listeners on the engine (idempotent per Capture)."""
        if self._listeners:
            return self
        self._listeners = [
            ("before_execute", self._before_execute),
            ("after_execute", self._after_execute),
            ("begin", self._reset),
            ("commit", self._reset),
            ("rollback", self._reset),
        ]
        for name, fn in self._listeners:
            if name == "before_execute":
                event.listen(self.engine, name, fn, retval=True)
            else:
                event.listen(self.engine, name, fn)
        return self

    def disable(self) -> None:
        """Remove the listeners."""
        for name, fn in self._listeners:
            event.remove(self.engine, name, fn)
        self._listeners = []

    def invalidate(self) -> None:
        """Forget the cached triggers; they are re-read on the next DML."""
        with self._lock:
            self._rules = None

    # -- trigger cache --------------------------------------------------------------------

    def _rules_for(self, conn: Connection, table: str) -> list[TriggerRule]:
        now = self._clock()
        today = self._today()
        with self._lock:
            fresh = (
                self._rules is not None
                and now - self._loaded_at < self.cache_seconds
                and self._loaded_day == today
            )
            if fresh:
                return self._rules.get(table, [])  # type: ignore[union-attr]
        query = select(schema.trigger).order_by(schema.trigger.c.trigger_id)
        if self.subsystem is not None:
            query = query.where(schema.trigger.c.subsys_dir == self.subsystem)
        with _guarded(conn):
            rows = conn.execute(query).mappings().all()
        by_table: dict[str, list[TriggerRule]] = {}
        for row in rows:
            rule = TriggerRule.from_row(row)
            if rule.active(today):
                by_table.setdefault(rule.table_id, []).append(rule)
        with self._lock:
            self._rules = by_table
            self._loaded_at = now
            self._loaded_day = today
        return by_table.get(table, [])

    # -- listeners ------------------------------------------------------------------------

    def _reset(self, conn: Connection) -> None:
        conn.info[_STATE] = _TxState()

    def _skip(self, conn: Connection, clauseelement: Any, execution_options: Any) -> Table | None:
        if not isinstance(clauseelement, dml.Insert | dml.Update | dml.Delete):
            return None
        if conn.info.get(_GUARD):
            return None
        table = clauseelement.table
        if not isinstance(table, Table):
            return None
        if table.name in schema.OWN_TABLES:
            if table.name in _CONFIG_TABLES:
                self.invalidate()
            return None
        if _option(conn, execution_options, BLOCKCHAIN_MODE):
            return None
        if _state(conn).captured:
            return None
        return table

    def _before_execute(
        self, conn: Connection, clauseelement: Any, multiparams: Any, params: Any, execution_options: Any
    ) -> tuple[Any, Any, Any]:
        table = self._skip(conn, clauseelement, execution_options)
        if table is None:
            return clauseelement, multiparams, params
        candidates = self._rules_for(conn, table.name)
        if not candidates:
            return clauseelement, multiparams, params
        first = _first_params(multiparams, params)
        pk_cols = list(table.primary_key.columns)
        if isinstance(clauseelement, dml.Insert):
            many = isinstance(multiparams, list | tuple) and len(multiparams) > 1
            if many and not all(c.key in first for c in pk_cols):
                # Without RETURNING an executemany INSERT does not report generated keys.
                clauseelement = clauseelement.return_defaults()
            return clauseelement, multiparams, params
        if isinstance(clauseelement, dml.Update):
            changed = _set_columns(clauseelement, table, first)
            if any(c.name in changed for c in pk_cols):
                raise PrimaryKeyUpdateRefused(
                    f"updating the primary key of {table.name} is refused: it is the root "
                    "table of a trigger, and documents identify rows by their current key"
                )
        key = _key_from_where(clauseelement, pk_cols, first)
        if key is None:
            query = select(*pk_cols)
            if clauseelement.whereclause is not None:
                query = query.where(clauseelement.whereclause)
            with _guarded(conn):
                row = conn.execute(query.limit(1), first).first()
            key = dict(zip([c.name for c in pk_cols], row, strict=True)) if row else None
        state = _state(conn)
        state.pending[id(clauseelement)] = key
        if key is not None and isinstance(clauseelement, dml.Delete):
            # Readers of a private document come from the row (or rows pointing at it),
            # which will be gone when the relay builds the message: read them now.
            rule = rules_mod.match(
                candidates,
                table=table.name,
                operation="delete",
                today=self._today(),
                alias=_option(conn, execution_options, ALIAS),
                subsys_dir=self.subsystem,
            )
            if rule is not None and recipients.is_private(rule):
                with _guarded(conn):
                    row = conn.execute(select(table).where(*_key_clause(table, key))).mappings().first()
                    if row is not None:
                        state.contacts[id(clauseelement)] = recipients.contact_ids(
                            conn, rule, table, dict(row)
                        )
        return clauseelement, multiparams, params

    def _after_execute(
        self,
        conn: Connection,
        clauseelement: Any,
        multiparams: Any,
        params: Any,
        execution_options: Any,
        result: Result,
    ) -> None:
        table = self._skip(conn, clauseelement, execution_options)
        if table is None:
            return
        state = _state(conn)
        pk_cols = list(table.primary_key.columns)
        if isinstance(clauseelement, dml.Insert):
            operation = "insert"
            key = _inserted_key(result, pk_cols, _first_params(multiparams, params))
        else:
            operation = "update" if isinstance(clauseelement, dml.Update) else "delete"
            key = state.pending.pop(id(clauseelement), None)
            if result.rowcount == 0:
                return
        if key is None:
            return
        candidates = self._rules_for(conn, table.name)
        if not candidates:
            return
        alias = _option(conn, execution_options, ALIAS)

        def new_value(column: str) -> Any:
            col = table.c[column]
            with _guarded(conn):
                return conn.execute(select(col).where(*_key_clause(table, key))).scalar()

        rule = rules_mod.match(
            candidates,
            table=table.name,
            operation=operation,
            today=self._today(),
            alias=alias,
            subsys_dir=self.subsystem,
            new_value=new_value,
        )
        if rule is None:
            return
        contacts = state.contacts.pop(id(clauseelement), None)
        self._write_outbox(conn, rule, table, operation, key, alias, contacts)
        state.captured = True
        self.captured_count += 1

    def _write_outbox(
        self,
        conn: Connection,
        rule: TriggerRule,
        table: Table,
        operation: str,
        key: dict[str, Any],
        alias: str | None,
        contacts: list[str] | None = None,
    ) -> None:
        # The key exactly as the application gave it (no padding added or removed): the relay
        # reads the row back by this text, so both sides must agree on it.
        pkey = {name: to_text(value, table.c[name]) for name, value in key.items()}
        with _guarded(conn):
            conn.execute(
                schema.outbox.insert().values(
                    outbox_id=str(uuid.uuid4()),
                    trigger_id=rule.trigger_id,
                    subsys_dir=rule.subsys_dir,
                    table_id=table.name,
                    table_id_alias=alias,
                    operation=operation,
                    pkey=json.dumps(pkey, sort_keys=True),
                    created_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
                    status="PENDING",
                    attempts=0,
                    recipients=json.dumps(contacts) if contacts is not None else None,
                )
            )
        log.debug("captured trigger %s: %s on %s %s", rule.trigger_id, operation, table.name, pkey)


# -- statement inspection ---------------------------------------------------------------------


def _first_params(multiparams: Any, params: Any) -> dict[str, Any]:
    if isinstance(multiparams, list | tuple) and multiparams:
        first = multiparams[0]
        if isinstance(first, dict):
            return first
        if isinstance(first, list | tuple) and first and isinstance(first[0], dict):
            return first[0]
    return dict(params or {})


def _where_binds(whereclause: Any) -> set[str]:
    if whereclause is None:
        return set()
    return {
        element.key for element in visitors.iterate(whereclause) if isinstance(element, BindParameter)
    }


def _set_columns(stmt: dml.Update, table: Table, params: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for key in (getattr(stmt, "_values", None) or {}).keys():
        names.add(key if isinstance(key, str) else getattr(key, "name", str(key)))
    for key in getattr(stmt, "_ordered_values", None) or ():
        names.add(key[0] if isinstance(key[0], str) else getattr(key[0], "name", str(key[0])))
    where_keys = _where_binds(stmt.whereclause)
    for key in params:
        if key in table.c and key not in where_keys:
            names.add(table.c[key].name)
    return names


def _bind_value(bind: BindParameter, params: dict[str, Any]) -> Any:
    if bind.key in params:
        return params[bind.key]
    return bind.effective_value


def _key_from_where(stmt: Any, pk_cols: list[Column], params: dict[str, Any]) -> dict[str, Any] | None:
    """Read `pk = value` terms straight from the WHERE clause (the ORM's form), else None."""
    where = stmt.whereclause
    if where is None:
        return None
    terms = where.clauses if isinstance(where, BooleanClauseList) else [where]
    if isinstance(where, BooleanClauseList) and where.operator is not operators.and_:
        return None
    found: dict[str, Any] = {}
    for term in terms:
        if not isinstance(term, BinaryExpression) or term.operator is not operators.eq:
            continue
        left, right = term.left, term.right
        if isinstance(left, BindParameter):
            left, right = right, left
        if isinstance(left, Column) and isinstance(right, BindParameter):
            if any(left is c for c in pk_cols):
                found[left.name] = _bind_value(right, params)
    if all(c.name in found for c in pk_cols) and all(v is not None for v in found.values()):
        return {c.name: found[c.name] for c in pk_cols}
    return None


def _inserted_key(result: Result, pk_cols: list[Column], params: dict[str, Any]) -> dict[str, Any] | None:
    names = [c.name for c in pk_cols]
    try:
        rows = result.inserted_primary_key_rows
    except Exception:  # noqa: BLE001 - drivers differ in what they can report
        rows = []
    if rows and rows[0] is not None and all(v is not None for v in rows[0]):
        return dict(zip(names, rows[0], strict=True))
    if all(c.key in params and params[c.key] is not None for c in pk_cols):
        return {c.name: params[c.key] for c in pk_cols}
    log.warning("insert into %s: generated key unknown, trigger not evaluated", pk_cols[0].table.name)
    return None


def _key_clause(table: Table, key: dict[str, Any]) -> list[Any]:
    return [table.c[name] == value for name, value in key.items()]


# -- public helpers ---------------------------------------------------------------------------


def enable(
    engine: Engine,
    subsystem: str | None = None,
    today: Callable[[], dt.date] = dt.date.today,
    cache_seconds: float = 30.0,
) -> Capture:
    """Make `engine` fire triggers: returns the enabled Capture (call `.disable()` to stop)."""
    return Capture(engine, subsystem=subsystem, today=today, cache_seconds=cache_seconds).enable()


def _connection_of(target: Connection | Session) -> Connection:
    if isinstance(target, Session):
        return target.connection()
    return target


@contextmanager
def blockchain_mode(target: Connection | Session):
    """Within the block, DML on `target`'s connection never fires triggers (received changes)."""
    conn = _connection_of(target)
    previous = conn.info.get(BLOCKCHAIN_MODE)
    conn.info[BLOCKCHAIN_MODE] = True
    try:
        yield conn
    finally:
        conn.info[BLOCKCHAIN_MODE] = previous


@contextmanager
def using_alias(target: Connection | Session, alias: str):
    """Within the block, DML on `target`'s connection is performed through table alias `alias`."""
    conn = _connection_of(target)
    previous = conn.info.get(ALIAS)
    conn.info[ALIAS] = alias
    try:
        yield conn
    finally:
        conn.info[ALIAS] = previous
