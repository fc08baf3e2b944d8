"""The deterministic SQL projection of the stream's final items (spec 2.1-2.3 state).

`Projection.apply(items)` runs erp.rules over consecutive items in chain order inside one
database transaction: the state rows, one `erp_actions` row per item (applied, or rejected
with its reason) and the cursor commit together, so a process killed mid-page leaves the
page wholly unapplied and the next run applies it once. An item already in `erp_actions`
(same txid and vout) is skipped, so two followers racing on one database cannot apply an
item twice: the loser's transaction fails on the unique key and is read again.

`digest()` is a SHA-256 over the canonical rows of every state table and the action log,
sorted in Python (not by the database's collation), so every node's projection at the same
height yields the same hex string whatever the backend.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import and_, bindparam, func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from erp import rules, schema
from erp.errors import ActionRefused, ErpError

__all__ = ["Item", "SqlState", "Projection", "canonical", "action_object"]

log = logging.getLogger(__name__)

_MISSING = object()


def canonical(value: Any) -> str:
    """The one JSON text of a value (sorted keys, no spaces, UTF-8 kept): orjson, whose
    output depends only on the value (every value here came out of orjson.loads)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


@dataclass(frozen=True, slots=True)
class Item:
    """One final stream item, with what the chain says about it."""

    position: int
    """0-based position in the stream (chain order)."""
    txid: str
    vout: int
    height: int
    blockindex: int
    blocktime: int
    publishers: tuple[str, ...]
    data: bytes | None
    """The item's bytes; None when the node could not deliver them."""

    @property
    def order(self) -> tuple[int, int, int]:
        return (self.height, self.blockindex, self.vout)


_OBJECT_FIELDS = (
    ("partner_request_id", "partner_request"), ("abs_action_id", "action_request"),
    ("record_id", "record"),
)


def action_object(action: Any) -> str | None:
    """The history key of the object an action concerns, read from its fields."""
    if not isinstance(action, dict):
        return None
    kind = action.get("action")
    if kind == "CREATE_AGENT":
        value, name = action.get("signer"), "agent"
    elif kind == "CREATE_RECORD_TYPE":
        value, name = action.get("name"), "record_type"
    else:
        value, name = None, ""
        for field, object_name in _OBJECT_FIELDS:
            if field in action:
                value, name = action[field], object_name
                break
    if (not isinstance(value, str) or not value or len(value) > rules.MAX_NAME
            or any(ord(c) < 32 for c in value)):  # PostgreSQL cannot store NUL in text
        return None
    return rules.object_key(name, value)


_ROW_QUERIES = {
    name: select(t.c.body).where(and_(*(t.c[c] == bindparam(c)
                                        for c, _ in schema.KEY_COLUMNS[name])))
    for name, t in schema.STATE.items()
}

_PREFETCH = (
    ("agents", ("signer", "receiving_agent", "reporter_id")),
    ("records", ("record_id",)),
    ("properties", ("record_id",)),
    ("proposals", ("record_id",)),
    ("record_types", ("record_type", "name")),
    ("partner_requests", ("partner_request_id",)),
    ("action_requests", ("abs_action_id",)),
)
"""Per table, the action fields whose values are its first key column."""


class SqlState:
    """erp.rules' State over the projection tables of one connection, with a write-back
    cache: a page reads each row once and writes each changed row once (`flush`)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._cache: dict[tuple[str, tuple], Any] = {}
        self._stored: set[tuple[str, tuple]] = set()
        self._dirty: dict[tuple[str, tuple], rules.Row] = {}
        self._complete: set[tuple[str, Any]] = set()

    def get(self, table: str, key: tuple) -> rules.Row | None:
        found = self._cache.get((table, key), _MISSING)
        if found is _MISSING:
            if (table, key[0]) in self._complete or not all(
                    isinstance(k, int) or _key_like(k) for k in key):
                found = None  # known missing, or no key the rules would ever store
            else:
                body = self.conn.execute(_ROW_QUERIES[table], dict(zip(
                    (c for c, _ in schema.KEY_COLUMNS[table]), key, strict=True))).scalar()
                found = orjson.loads(body) if body is not None else None
            self._cache[(table, key)] = found
            if found is not None:
                self._stored.add((table, key))
        return found

    def prefetch(self, table: str, firsts: Iterable[Any]) -> None:
        """Load every row of `table` whose first key column is in `firsts` (a few queries
        per page instead of one per item); later misses under those values are known."""
        wanted = sorted({f for f in firsts if (table, f) not in self._complete})
        t = schema.STATE[table]
        cols = [c for c, _ in schema.KEY_COLUMNS[table]]
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            for m in self.conn.execute(select(*(t.c[c] for c in cols), t.c.body)
                                       .where(t.c[cols[0]].in_(chunk))).mappings():
                key = tuple(m[c] for c in cols)
                if (table, key) not in self._cache:
                    self._cache[(table, key)] = orjson.loads(m["body"])
                    self._stored.add((table, key))
            self._complete.update((table, f) for f in chunk)

    def write(self, outcome: rules.Outcome) -> None:
        for (table, key), row in outcome.changes.items():
            if (table, key) not in self._cache and table != "property_values":
                # learn whether it is an insert or an update; property values are only
                # ever appended (their seq comes from the property's count)
                self.get(table, key)
            self._cache[(table, key)] = row
            self._dirty[(table, key)] = row

    def flush(self) -> None:
        """Write every changed row: executemany inserts and updates per table."""
        inserts: dict[str, list[dict]] = {}
        updates: dict[str, list[dict]] = {}
        for (table, key), row in self._dirty.items():
            values = _columns(table, key, row)
            if (table, key) in self._stored:
                updates.setdefault(table, []).append(values)
            else:
                inserts.setdefault(table, []).append(values)
                self._stored.add((table, key))
        for table, rows in inserts.items():
            self.conn.execute(insert(schema.STATE[table]), rows)
        for table, rows in updates.items():
            t = schema.STATE[table]
            cols = [c for c, _ in schema.KEY_COLUMNS[table]]
            statement = (
                update(t)
                .where(and_(*(t.c[c] == bindparam(f"k_{c}") for c in cols)))
                .values({c: bindparam(f"v_{c}") for c in (*schema.INDEXED.get(table, ()), "body")})
            )
            self.conn.execute(statement, [
                {**{f"k_{c}": r[c] for c in cols},
                 **{f"v_{c}": r[c] for c in (*schema.INDEXED.get(table, ()), "body")}}
                for r in rows
            ])
        self._dirty.clear()


def _columns(table: str, key: tuple, row: rules.Row) -> dict[str, Any]:
    values = {c: v for (c, _), v in zip(schema.KEY_COLUMNS[table], key, strict=True)}
    for c in schema.INDEXED.get(table, ()):
        values[c] = row[c]
    values["body"] = canonical(row)
    return values


def _key_like(value: Any) -> bool:
    """Could be a key (the rules refuse the rest before any lookup; PostgreSQL would even
    refuse a NUL in a query parameter)."""
    return (isinstance(value, str) and 0 < len(value) <= rules.MAX_NAME
            and not any(ord(c) < 32 for c in value))


def _printable(text: str) -> str:
    """A reason may quote hostile text: control characters (NUL, which PostgreSQL refuses in
    text columns) are written as escapes."""
    return "".join(c if ord(c) >= 32 else f"\\x{ord(c):02x}" for c in text)


def _parse(item: Item) -> tuple[rules.Row | None, str | None]:
    """(action, None) or (None, why it is unreadable)."""
    if item.data is None:
        return None, "the item's data is not available"
    try:
        return rules.parse_action(item.data), None
    except ActionRefused as exc:
        return None, exc.reason


class Projection:
    """The projection of one stream in one database."""

    def __init__(self, engine: Engine, stream: str, address_of: Callable[[str], str]) -> None:
        self.engine = engine
        self.stream = stream
        self.address_of = address_of

    def create(self) -> None:
        """Create the tables (idempotent)."""
        schema.create_all(self.engine)

    # -- the cursor -----------------------------------------------------------------------

    def cursor(self, conn: Connection | None = None) -> tuple[int, tuple[int, int, int]]:
        """(next stream position, chain order of the last applied item)."""
        if conn is None:
            with self.engine.connect() as c:
                return self.cursor(c)
        row = conn.execute(select(schema.cursor).where(schema.cursor.c.stream == self.stream)).first()
        if row is None:
            return 0, (-1, -1, -1)
        return int(row.position), (int(row.height), int(row.blockindex), int(row.vout))

    def _move_cursor(self, conn: Connection, position: int, order: tuple[int, int, int]) -> None:
        values = {"position": position, "height": order[0], "blockindex": order[1],
                  "vout": order[2]}
        done = conn.execute(update(schema.cursor).where(schema.cursor.c.stream == self.stream)
                            .values(**values)).rowcount
        if not done:
            conn.execute(insert(schema.cursor).values(stream=self.stream, **values))

    # -- applying -------------------------------------------------------------------------

    def apply(self, items: Sequence[Item]) -> list[tuple[str, str | None]]:
        """Apply consecutive final items in one transaction; return (status, reason) per
        item. Items before the cursor are skipped (already applied); ErpError when the
        items would leave a gap after the cursor."""
        results: list[tuple[str, str | None]] = []
        if not items:
            return results
        with self.engine.begin() as conn:
            position, last = self.cursor(conn)
            fresh = [i for i in items if i.position >= position]
            if not fresh:
                return [("skipped", "already applied")] * len(items)
            results = [("skipped", "already applied")] * (len(items) - len(fresh))
            items = fresh
            if items[0].position != position:
                raise ErpError(f"items start at position {items[0].position}, the cursor is at "
                               f"{position}: an item would be left out")
            known = self._known(conn, items)
            state = SqlState(conn)
            parsed = [_parse(item) for item in items]
            for table, fields in _PREFETCH:
                state.prefetch(table, (a[f] for a, _ in parsed if a is not None
                                       for f in fields if _key_like(a.get(f))))
            log_rows = []
            for item, (action, error) in zip(items, parsed, strict=True):
                if item.order <= last:
                    raise ErpError(f"the node returned item {item.txid}:{item.vout} out of "
                                   f"chain order ({item.order} after {last})")
                last = item.order
                if (item.txid, item.vout) in known:
                    results.append(("skipped", "already applied"))
                    continue
                row, status = self._decide(state, item, action, error)
                log_rows.append(row)
                results.append((status, row["reason"]))
            state.flush()
            if log_rows:
                conn.execute(insert(schema.actions), log_rows)
            self._move_cursor(conn, items[-1].position + 1, last)
        return results

    def _known(self, conn: Connection, items: Iterable[Item]) -> set[tuple[str, int]]:
        txids = sorted({i.txid for i in items})
        rows = conn.execute(select(schema.actions.c.txid, schema.actions.c.vout)
                            .where(schema.actions.c.txid.in_(txids)))
        return {(r.txid, int(r.vout)) for r in rows}

    def _decide(self, state: SqlState, item: Item, action: rules.Row | None,
                error: str | None) -> tuple[dict[str, Any], str]:
        row: dict[str, Any] = {
            "seq": item.position, "txid": item.txid, "vout": item.vout, "height": item.height,
            "blockindex": item.blockindex, "blocktime": item.blocktime,
            "publisher": ",".join(item.publishers)[:64], "kind": None, "signer": None,
            "object_key": None, "status": "applied", "reason": None, "body": None,
        }
        try:
            if action is None:
                raise ActionRefused(error or "unreadable item")
            row.update(kind=action["action"], signer=action["signer"],
                       object_key=action_object(action), body=canonical(action))
            if len(item.publishers) != 1:
                raise ActionRefused("an action must have exactly one publisher")
            ctx = rules.Context(publisher=item.publishers[0], txid=item.txid,
                                blocktime=item.blocktime, address_of=self.address_of)
            state.write(rules.decide(state, action, ctx))
        except ActionRefused as exc:
            row.update(status="rejected", reason=_printable(exc.reason)[:1000])
            log.info("item %s:%d rejected: %s", item.txid, item.vout, exc.reason)
        return row, row["status"]

    # -- reading --------------------------------------------------------------------------

    def digest(self) -> str:
        """SHA-256 (hex) over the canonical rows of all state tables and the action log."""
        h = hashlib.sha256()
        with self.engine.connect() as conn:
            for name in rules.TABLES:
                t = schema.STATE[name]
                cols = [c for c, _ in schema.KEY_COLUMNS[name]]
                rows = sorted(
                    (tuple(m[c] for c in cols), str(m["body"]))
                    for m in conn.execute(select(*(t.c[c] for c in cols), t.c.body)).mappings()
                )
                for key, body in rows:
                    h.update(canonical([name, list(key), orjson.loads(body)]).encode())
                    h.update(b"\n")
            a = schema.actions
            for r in conn.execute(select(a.c.seq, a.c.txid, a.c.vout, a.c.status, a.c.reason)
                                  .order_by(a.c.seq)):
                h.update(canonical(["actions", int(r.seq), r.txid, int(r.vout), r.status,
                                    r.reason]).encode())
                h.update(b"\n")
        return h.hexdigest()

    def counts(self) -> dict[str, int]:
        """Applied and rejected actions so far."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(schema.actions.c.status, func.count())
                                .group_by(schema.actions.c.status))
            out = {"applied": 0, "rejected": 0}
            out.update({r[0]: int(r[1]) for r in rows})
        return out
