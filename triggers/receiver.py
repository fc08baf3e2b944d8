"""The receiver (spec 1.6, 1.10): stream items -> gate -> decrypt -> parse -> apply, in order.

One `Receiver` serves one chain of one database. `follow_once` walks every known stream in
chain order from a durable cursor (`blockchain_receiver_cursor`), stopping at the first item
that is not final yet, so later changes never overtake earlier ones and a reorganisation
never has to be undone in the database. A walletnotify call (`chainmill receive`) is only a
wake-up for the same walk.

The walk reads a page of items at a time (`liststreamitems` with count and start), decodes
them, and applies the whole page in one database transaction: the documents, their
applied-event rows, their inbox rows and the new cursor commit together. When that
transaction fails, the page is applied again one document at a time, so one bad document
ends up FAILED in the inbox and the others are applied. Failures stay in the inbox with
their error and are retried with back-off, never dropped. A database that is busy or down
(an operational error) is not a bad document: the pass stops and the page is read again.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, inspect, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)

from triggers import configure, crypto, documents, schema, xmlsafe
from triggers.applier import Applier
from triggers.capture import blockchain_mode
from triggers.catalog import Catalog
from triggers.errors import (
    DecryptionFailed,
    DocumentInvalid,
    DocumentRejected,
    NotARecipient,
    TriggerError,
)
from triggers.hooks import HookRegistry
from triggers.nodes import (
    ACCESS,
    NOT_IN_STREAM,
    NodeClient,
    batch_call,
    is_final,
    item_bytes,
    rpc_error_code,
    rpc_errors,
)
from triggers.rules import is_active

__all__ = ["Receiver", "Gate"]

log = logging.getLogger(__name__)
security_log = logging.getLogger("triggers.security")

_TERMINAL = ("APPLIED", "NOT_FOR_ME", "IGNORED", "SUPERSEDED", "REJECTED")
ROOT_STREAM = "root"
"""MultiChain's default stream: plain items of every kind, read as documents only when a
trigger of this database publishes there."""
_HEIGHT_CACHE = 10_000
Position = tuple[int, int, int]
"""An item's place in chain order: block height, transaction index in the block, item index."""
_MISSING = object()


def transient(exc: BaseException) -> bool:
    """A database error that says nothing about the document: busy, locked, gone away."""
    return isinstance(exc, OperationalError | InterfaceError) or bool(
        getattr(exc, "connection_invalidated", False)
    )


def _refusal(exc: BaseException) -> str:
    if isinstance(exc, IntegrityError | DBAPIError):
        return f"database refused the change: {exc.orig}"
    return str(exc)


@dataclass(slots=True)
class _Planned:
    """One item of a page, decoded: what to apply, or the inbox status it ends in."""

    stream: str
    item: dict[str, Any]
    txid: str
    index: int
    message_id: str
    existing: Any  # its inbox row, None, or _MISSING (not looked up)
    document: documents.Document | None = None
    status: str | None = None  # APPLIED (already), FAILED, DEFERRED, NOT_FOR_ME, SUPERSEDED
    error: str | None = None
    height: int | None = None
    identity: tuple[str, str] | None = None  # (table, key digest) of the root row

    @property
    def position(self) -> Position | None:
        """Chain position, when the item is in a block (its height is known)."""
        if self.height is None:
            return None
        return (self.height, int(self.item.get("blockindex") or 0), self.index)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Gate:
    """Which items may be applied: `final` (default), `confirmed` or `any`."""

    CHOICES = ("final", "confirmed", "any")

    def __init__(self, mode: str = "final") -> None:
        if mode not in self.CHOICES:
            raise ValueError(f"gate must be one of {self.CHOICES}")
        self.mode = mode

    def open(self, item: dict[str, Any], depth: int) -> bool:
        """Whether `item` may be applied now."""
        if self.mode == "any":
            return True
        if self.mode == "confirmed":
            return int(item.get("confirmations") or 0) >= 1
        return is_final(item, depth)


class Receiver:
    """Applies one chain's items to one database."""

    def __init__(
        self,
        engine: Engine,
        client: NodeClient,
        chain_id: str,
        hooks: HookRegistry | None = None,
        catalog: Catalog | None = None,
        gate: Gate | None = None,
        limits: xmlsafe.Limits = xmlsafe.DEFAULT_LIMITS,
        deferred_blocks: int = 100,
        parent_upsert: tuple[str, ...] = (),
        allowed_tables: tuple[str, ...] | None = None,
        batch_size: int = 500,
        require_known_sender: bool = True,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.engine = engine
        self.client = client
        self.chain_id = chain_id
        self.catalog = catalog or Catalog(engine)
        self.applier = Applier(engine, self.catalog, hooks, parent_upsert, allowed_tables)
        self.gate = gate or Gate()
        self.limits = limits
        self.deferred_blocks = deferred_blocks
        self.batch_size = batch_size
        self.require_known_sender = require_known_sender
        self.clock = clock
        self._own: frozenset[str] | None = None
        self._keys: dict[str, Any] | None = None
        self._depth: int | None = None
        self._senders: frozenset[str] | None = None
        self._retried_at_height: int | None = None
        self._height: int | None = None
        self._subscribed: set[str] = set()
        self._subscribe_warned: set[str] = set()
        self._block_heights: dict[str, int] = {}
        self._tables_ready = False
        self.applied_count = 0
        self.batches = 0
        self.fallbacks = 0
        self.guard: Callable[[], AbstractContextManager[Any]] | None = None
        """Held around each pass (the CLI's cross-process walk lock), when set."""

    # -- public entry points --------------------------------------------------------------

    def follow_once(self) -> int:
        """Process everything that is due now: new items of every stream, then retries."""
        if self.guard is None:
            return self._follow_once()
        with self.guard():
            return self._follow_once()

    def _follow_once(self) -> int:
        info = self.client.call("getinfo")
        info = info if isinstance(info, dict) else {}
        depth = info.get("finaldepth")
        self._depth = int(depth) if isinstance(depth, int) and depth > 0 else 1
        if self.gate.mode != "final":
            self._depth = 1
        height = info.get("blocks")
        self._height = int(height) if isinstance(height, int) else None
        self._senders = None  # node table re-read once per pass
        applied_before = self.applied_count
        for stream in self._streams():
            self._follow_stream(stream)
        self._follow_stream(ACCESS)
        self.retry_due()
        return self.applied_count - applied_before

    def receive(self, txid: str, height: str | int | None = None) -> int:
        """walletnotify entry: `height` that is not a non-negative integer means unconfirmed.

        The notification is a wake-up: the ordered walk applies the transaction's items as
        soon as they are final (spec 1.10: a single worker per chain, in chain order).
        """
        log.info("notified of %s at height %s", txid, height)
        return self.follow_once()

    def follow_forever(self, stop: threading.Event, interval: float = 0.2) -> None:
        """Walk repeatedly until `stop` is set (the spec's periodic poll, made frequent)."""
        errors = rpc_errors() + (DBAPIError,)
        failing = False
        while not stop.is_set():
            try:
                busy = self.follow_once()
                if failing:
                    failing = False
                    log.info("chain %s: receiver recovered; node and database reachable again",
                             self.chain_id)
            except errors as exc:  # outermost loop: node or database busy/down, keep going
                failing = True
                log.warning("receiver pass failed: %s", exc)
                busy = 0
            if not busy:
                stop.wait(interval)

    # -- walking --------------------------------------------------------------------------

    def document_streams(self) -> list[str]:
        """The streams read as trigger documents now (configured, active, not system ones)."""
        return self._streams()

    def _streams(self) -> list[str]:
        today = dt.date.today()
        with self.engine.connect() as conn:
            chain = configure.get_chain(conn, self.chain_id)
            if not is_active(chain["start_date"], chain["end_date"], today):
                return []
            rows = conn.execute(
                select(schema.stream).where(schema.stream.c.chain_id == self.chain_id)
            ).mappings().all()
            published = set(conn.execute(
                select(schema.trigger.c.stream_id).where(schema.trigger.c.chain_id == self.chain_id)
            ).scalars())
        return [
            r["stream_id"]
            for r in rows
            if r["stream_id"].lower() not in schema.SYSTEM_STREAMS
            and (r["stream_id"].lower() != ROOT_STREAM or r["stream_id"] in published)
            and is_active(r["start_date"], r["end_date"], today)
        ]

    def _cursor(self, conn: Connection, stream: str) -> int:
        position = conn.execute(
            select(schema.receiver_cursor.c.position).where(
                schema.receiver_cursor.c.chain_id == self.chain_id,
                schema.receiver_cursor.c.stream_id == stream,
            )
        ).scalar()
        return int(position or 0)

    def _write_cursor(self, conn: Connection, stream: str, position: int) -> None:
        result = conn.execute(
            update(schema.receiver_cursor)
            .where(
                schema.receiver_cursor.c.chain_id == self.chain_id,
                schema.receiver_cursor.c.stream_id == stream,
            )
            .values(position=position, updated_at=self.clock())
        )
        if not result.rowcount:
            conn.execute(
                schema.receiver_cursor.insert().values(
                    chain_id=self.chain_id,
                    stream_id=stream,
                    position=position,
                    updated_at=self.clock(),
                )
            )

    def _save_cursor(self, stream: str, position: int) -> None:
        with self.engine.begin() as conn:
            self._write_cursor(conn, stream, position)

    def _subscribe(self, stream: str) -> None:
        if stream in self._subscribed:
            return
        try:
            self.client.call("subscribe", stream)
        except rpc_errors() as exc:
            if rpc_error_code(exc) is None:
                raise
            # Said loudly: an unsubscribed node lists nothing, and the follower would
            # otherwise wait for items that never come.
            if stream not in self._subscribe_warned:
                self._subscribe_warned.add(stream)
                log.warning("cannot subscribe chain %s's node to stream %s (%s): nothing will "
                            "be received from it", self.chain_id, stream, exc)
            return
        log.info("subscribed to stream %s", stream)
        self._subscribed.add(stream)

    def _follow_stream(self, stream: str) -> None:
        self._subscribe(stream)
        with self.engine.connect() as conn:
            position = self._cursor(conn, stream)
        while True:
            items = self.client.call("liststreamitems", stream, True, self.batch_size, position)
            if not items:
                return
            ready = []
            for item in items:
                if not self.gate.open(item, self._depth or 1):
                    break
                ready.append(item)
            if ready:
                if stream == ACCESS:
                    for item in ready:
                        self._on_access(item)
                    self._save_cursor(stream, position + len(ready))
                else:
                    self.handle_page(stream, ready, position + len(ready))
                position += len(ready)
            if len(ready) < len(items) or len(items) < self.batch_size:
                return

    # -- a page of items ------------------------------------------------------------------

    def handle_page(self, stream: str, items: list[dict[str, Any]], position: int | None) -> None:
        """Process consecutive items of a data stream and move its cursor to `position`
        (None: leave the cursor alone), all in one transaction when possible."""
        self._ensure_tables()
        own = self.own_addresses()
        planned: list[_Planned] = []
        for item in items:
            if set(item.get("publishers") or []) & own:
                continue  # the sender already has the data
            txid = str(item["txid"])
            keys = list(item.get("keys") or [])
            index = int(item.get("vout") or 0)
            message_id = keys[0] if keys else f"{self.chain_id}:{txid}:{index}"
            planned.append(_Planned(stream, item, txid, index, message_id, _MISSING))
        self._resolve_heights(planned)
        if planned:
            with self.engine.connect() as conn:
                inbox = self._inbox_rows(conn, {p.txid for p in planned})
                applied = self._applied_ids(conn, {p.message_id for p in planned})
            work = []
            for p in planned:
                p.existing = inbox.get((p.txid, p.index))
                if p.existing is not None and p.existing["status"] in _TERMINAL:
                    continue
                if p.message_id in applied:
                    p.status = "APPLIED"  # a resend, or a second item with the same event id
                else:
                    self._decode(p)
                    if p.document is not None:
                        applied.add(p.message_id)
                work.append(p)
            planned = work
        if not planned and position is None:
            return
        try:
            with self.engine.begin() as conn, blockchain_mode(conn):
                versions = self._versions(conn, planned)
                changed: set[tuple[str, str]] = set()
                for p in planned:
                    if p.document is not None and not self._supersede(p, versions):
                        self.applier.apply(conn, p.document)
                        self._advance(p, versions, changed)
                self._write_versions(conn, versions, changed)
                applied_rows = [p for p in planned if p.document is not None]
                if applied_rows:
                    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
                    conn.execute(insert(schema.applied_event), [
                        {"message_id": p.message_id, "chain_id": self.chain_id, "txid": p.txid,
                         "applied_at": now}
                        for p in applied_rows
                    ])
                self._write_inbox_rows(conn, planned)
                if position is not None:
                    self._write_cursor(conn, stream, position)
        except (TriggerError, SQLAlchemyError, ValueError, TypeError) as exc:
            if transient(exc):
                raise
            self.fallbacks += 1
            log.info("a page of %d items did not apply as a whole (%s); one at a time",
                     len(planned), _refusal(exc))
            for p in planned:
                self._finish_one(p)
            if position is not None:
                self._save_cursor(stream, position)
            return
        self.batches += 1
        applied = 0
        for p in planned:
            if p.document is not None:
                applied += 1
                log.debug("applied %s (%s) from %s", p.document.root_element, p.message_id, p.txid)
        self.applied_count += applied
        if planned:
            log.info("chain %s stream %s: %d document(s) applied, %d not (see `chainmill "
                     "triggers inbox`)%s", self.chain_id, stream, applied, len(planned) - applied,
                     f", cursor {position}" if position is not None else "")

    def _decode(self, p: _Planned) -> None:
        """Sender check, data, decryption, parsing: sets p.document, or p.status and error."""
        publishers = list(p.item.get("publishers") or [])
        try:
            if self.require_known_sender:
                self._check_sender(publishers)
            data = item_bytes(self.client, p.item)
            if crypto.is_envelope(data):
                data = self._decrypt(p.txid, publishers, data)
            p.document = documents.read(data, self.limits)
        except NotARecipient as exc:
            # Access entries always follow their data item; after `deferred_blocks` blocks
            # without one, the item was not meant for this node. That is normal, not an error.
            confirmations = int(p.item.get("confirmations") or 0)
            p.status = "NOT_FOR_ME" if confirmations > self.deferred_blocks else "DEFERRED"
            p.error = str(exc)
        except DecryptionFailed as exc:
            security_log.warning("security: item %s failed its check: %s", p.txid, exc)
            p.status, p.error = "FAILED", str(exc)
        except (DocumentRejected, DocumentInvalid) as exc:
            # Chain data never changes: an item that is not a document stays one. It is kept
            # once, terminal, and never retried.
            log.warning("item %s/%s on %s is not a trigger document, rejected: %s",
                        p.txid, p.index, p.stream, exc)
            p.status, p.error = "REJECTED", str(exc)
        except (TriggerError, ValueError) as exc:
            p.status, p.error = "FAILED", str(exc)

    def _finish_one(self, p: _Planned) -> str:
        """Apply (or record) one decoded item in its own transaction; its final status."""
        if p.document is None:
            self._record(p, p.status or "FAILED", None, p.error)
            return p.status or "FAILED"
        document = p.document
        try:
            with self.engine.begin() as conn, blockchain_mode(conn):
                status = "APPLIED"
                if self.applier.is_applied(conn, p.message_id):
                    new = False
                else:
                    versions = self._versions(conn, [p])
                    if self._supersede(p, versions):
                        new, status = False, "SUPERSEDED"
                    else:
                        changed: set[tuple[str, str]] = set()
                        self.applier.apply(conn, document)
                        self._advance(p, versions, changed)
                        self._write_versions(conn, versions, changed)
                        self.applier.record(conn, p.message_id, self.chain_id, p.txid)
                        new = True
                self._write_inbox(conn, p, status, document.root_element, p.error)
        except (TriggerError, SQLAlchemyError, ValueError, TypeError) as exc:
            if transient(exc):
                raise
            if isinstance(exc, IntegrityError):
                with self.engine.connect() as conn:
                    if self.applier.is_applied(conn, p.message_id):
                        return "APPLIED"  # a concurrent receiver applied it first
            p.existing = _MISSING
            self._record(p, "FAILED", document.root_element, _refusal(exc))
            return "FAILED"
        if new:
            self.applied_count += 1
            log.info("applied %s (%s) from %s", document.root_element, p.message_id, p.txid)
        elif status == "SUPERSEDED":
            log.warning("%s (%s) not applied: %s", document.root_element, p.message_id, p.error)
        return status

    # -- chain order of root rows ---------------------------------------------------------

    def _ensure_tables(self) -> None:
        """Databases set up before the row-version table existed get it on first use."""
        if not self._tables_ready:
            if not inspect(self.engine).has_table(schema.row_version.name):
                schema.row_version.create(self.engine, checkfirst=True)
            self._tables_ready = True

    def _resolve_heights(self, planned: list[_Planned]) -> None:
        """Block height of every planned item in a block (one getblock per new block hash)."""
        wanted = sorted({str(p.item["blockhash"]) for p in planned if p.item.get("blockhash")
                         and p.item["blockhash"] not in self._block_heights})
        if wanted:
            if len(self._block_heights) > _HEIGHT_CACHE:
                self._block_heights.clear()
            replies = batch_call(self.client, [("getblock", [h, 1]) for h in wanted])
            for blockhash, reply in zip(wanted, replies, strict=True):
                height = reply.get("height") if isinstance(reply, dict) else None
                if isinstance(height, int) and not isinstance(height, bool):
                    self._block_heights[blockhash] = height
        for p in planned:
            blockhash = p.item.get("blockhash")
            p.height = self._block_heights.get(str(blockhash)) if blockhash else None

    def _versions(
        self, conn: Connection, planned: list[_Planned]
    ) -> dict[tuple[str, str], tuple[Position, str | None, bool]]:
        """The stored newest position per root row of the planned documents:
        identity -> (position, message id, stored)."""
        ids: set[tuple[str, str]] = set()
        for p in planned:
            if p.document is not None and p.position is not None:
                p.identity = self.applier.row_identity(conn, p.document)
                ids.add(p.identity)
        found: dict[tuple[str, str], tuple[Position, str | None, bool]] = {}
        rv = schema.row_version
        keys = sorted({key for _, key in ids})
        for first in range(0, len(keys), 500):
            rows = conn.execute(select(rv).where(
                rv.c.chain_id == self.chain_id, rv.c.row_key.in_(keys[first:first + 500])))
            for row in rows:
                ident = (row.table_id, row.row_key)
                if ident in ids:
                    position = (int(row.block_height), int(row.block_index), int(row.item_index))
                    found[ident] = (position, row.message_id, True)
        return found

    def _supersede(
        self, p: _Planned, versions: dict[tuple[str, str], tuple[Position, str | None, bool]]
    ) -> bool:
        """Whether a newer item already changed p's root row (p is an older item retried
        late): then p must not overwrite it; it ends SUPERSEDED, never applied."""
        if p.identity is None or p.position is None or p.identity not in versions:
            return False
        position, message_id, _ = versions[p.identity]
        if position <= p.position:
            return False
        p.status = "SUPERSEDED"
        p.error = (f"superseded: {message_id} (block {position[0]}), later in chain order, "
                   "was applied to the same row first")
        p.document = None  # not applied, and no applied-event row: the inbox says why
        return True

    @staticmethod
    def _advance(
        p: _Planned, versions: dict[tuple[str, str], tuple[Position, str | None, bool]],
        changed: set[tuple[str, str]],
    ) -> None:
        if p.identity is None or p.position is None:
            return
        stored = versions.get(p.identity, (None, None, False))[2]
        versions[p.identity] = (p.position, p.message_id, stored)
        changed.add(p.identity)

    def _write_versions(
        self, conn: Connection,
        versions: dict[tuple[str, str], tuple[Position, str | None, bool]],
        changed: set[tuple[str, str]],
    ) -> None:
        rv = schema.row_version
        now = self.clock()
        new = []
        for ident in sorted(changed):
            (height, block_index, item_index), message_id, stored = versions[ident]
            values = {"block_height": height, "block_index": block_index,
                      "item_index": item_index, "message_id": message_id, "updated_at": now}
            if stored:
                conn.execute(update(rv).where(
                    rv.c.chain_id == self.chain_id, rv.c.table_id == ident[0],
                    rv.c.row_key == ident[1]).values(**values))
            else:
                new.append({"chain_id": self.chain_id, "table_id": ident[0],
                            "row_key": ident[1], **values})
        if new:
            conn.execute(insert(rv), new)

    # -- one item -------------------------------------------------------------------------

    def own_addresses(self) -> frozenset[str]:
        """This instance's node address(es) (cached)."""
        if self._own is None:
            # The instance's identity is its configured own node address (spec 1.2.3); only
            # when none is configured does the whole wallet count.
            with self.engine.connect() as conn:
                mine = conn.execute(
                    select(schema.node.c.node_address).where(
                        schema.node.c.chain_id == self.chain_id, schema.node.c.is_mine.is_(True)
                    )
                ).scalars().all()
            self._own = frozenset(mine) if mine else frozenset(self.client.call("getaddresses"))
        return self._own

    def handle(self, stream: str, item: dict[str, Any]) -> str:
        """Process one item of a data stream on its own; returns the inbox status it ends in."""
        txid = str(item["txid"])
        index = int(item.get("vout") or 0)
        if set(item.get("publishers") or []) & self.own_addresses():
            return "OWN"  # the sender already has the data
        keys = list(item.get("keys") or [])
        message_id = keys[0] if keys else f"{self.chain_id}:{txid}:{index}"
        with self.engine.connect() as conn:
            existing = self._inbox_rows(conn, {txid}).get((txid, index))
            if existing is not None and existing["status"] in _TERMINAL:
                return str(existing["status"])
            already = self.applier.is_applied(conn, message_id)
        self._ensure_tables()
        p = _Planned(stream, item, txid, index, message_id, existing)
        self._resolve_heights([p])
        if already:
            p.status = "APPLIED"
        else:
            self._decode(p)
        return self._finish_one(p)

    def _active_senders(self) -> frozenset[str]:
        if self._senders is None:
            today = dt.date.today()
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(schema.node).where(schema.node.c.chain_id == self.chain_id)
                ).all()
            self._senders = frozenset(
                r.node_address for r in rows if is_active(r.start_date, r.end_date, today)
            )
        return self._senders

    def _check_sender(self, publishers: list[str]) -> None:
        if not set(publishers) & self._active_senders():
            raise TriggerError(
                f"sender {', '.join(publishers)} is not an active node of {self.chain_id}"
            )

    # -- private items --------------------------------------------------------------------

    def _private_keys(self) -> dict[str, Any]:
        if self._keys is None:
            with self.engine.connect() as conn:
                chain = configure.get_chain(conn, self.chain_id)
            configured = Path(chain["private_key"])
            paths = [configured] + sorted(
                p for p in configured.parent.glob("private_key*.pem") if p != configured
            )
            keys: dict[str, Any] = {}
            for path in paths:
                try:
                    key = crypto.load_private_key(path)
                except TriggerError:
                    continue
                keys[crypto.fingerprint(key.public_key())] = key
            self._keys = keys
        return self._keys

    def _decrypt(self, txid: str, publishers: list[str], envelope: bytes) -> bytes:
        """Spec 1.9.3: find my access entries from the item's publisher, unwrap, verify, decrypt."""
        mine = self.own_addresses()
        entries = self.client.call("liststreamkeyitems", ACCESS, txid, False, 10000) or []
        keys = self._private_keys()
        candidates = 0
        last_error: DecryptionFailed | None = None
        for entry_item in entries:
            if not set(entry_item.get("publishers") or []) & set(publishers):
                continue  # only the data item's publisher may grant access to it
            try:
                entry = crypto.parse_access_entry(item_bytes(self.client, entry_item))
            except (DecryptionFailed, ValueError):
                continue
            if entry["txid"] != txid or entry["address"] not in mine:
                continue
            candidates += 1
            key = keys.get(entry["key_fingerprint"])
            if key is None:
                continue
            try:
                wrapped = base64.b64decode(entry["wrapped_key"], validate=True)
                password = crypto.unwrap_password(key, wrapped)
                return crypto.open_envelope(envelope, password)
            except (DecryptionFailed, ValueError) as exc:
                security_log.warning("security: access entry for %s rejected: %s", txid, exc)
                last_error = exc if isinstance(exc, DecryptionFailed) else DecryptionFailed(str(exc))
        if last_error is not None:
            raise last_error
        if candidates:
            raise NotARecipient("an access entry exists but no private key matches its fingerprint")
        raise NotARecipient("no access entry for this node (yet)")

    def _on_access(self, item: dict[str, Any]) -> None:
        """An access entry arrived: re-run the deferred item it unlocks, if it is for me."""
        try:
            entry = crypto.parse_access_entry(item_bytes(self.client, item))
        except (DecryptionFailed, ValueError):
            return
        if entry["address"] not in self.own_addresses():
            return
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(schema.inbox).where(
                    schema.inbox.c.chain_id == self.chain_id,
                    schema.inbox.c.txid == entry["txid"],
                    schema.inbox.c.status == "DEFERRED",
                )
            ).mappings().all()
        for row in rows:
            self._rerun(row)

    # -- inbox ----------------------------------------------------------------------------

    def _inbox_rows(self, conn: Connection, txids: Iterable[str]) -> dict[tuple[str, int], Any]:
        """Inbox rows of these transactions by (txid, item index)."""
        found: dict[tuple[str, int], Any] = {}
        txids = sorted(txids)
        for first in range(0, len(txids), 500):
            rows = conn.execute(
                select(schema.inbox).where(
                    schema.inbox.c.chain_id == self.chain_id,
                    schema.inbox.c.txid.in_(txids[first:first + 500]),
                )
            ).mappings()
            for row in rows:
                found[(row["txid"], int(row["item_index"]))] = dict(row)
        return found

    def _applied_ids(self, conn: Connection, message_ids: Iterable[str]) -> set[str]:
        ids = sorted(message_ids)
        found: set[str] = set()
        column = schema.applied_event.c.message_id
        for first in range(0, len(ids), 500):
            found.update(conn.execute(select(column).where(column.in_(ids[first:first + 500])))
                         .scalars())
        return found

    def _inbox_values(
        self, p: _Planned, status: str, root_element: str | None, error: str | None
    ) -> dict[str, Any]:
        now = self.clock()
        existing = p.existing if p.existing is not _MISSING else None
        attempts = (existing["attempts"] if existing else 0) + (1 if status == "FAILED" else 0)
        return {
            "stream_id": p.stream,
            "publisher": ",".join(p.item.get("publishers") or [])[:64] or None,
            "message_id": p.message_id,
            "block_height": p.height,
            "block_index": p.item.get("blockindex"),
            "status": status,
            "root_element": root_element,
            "error": error[:4000] if error else None,
            "attempts": attempts,
            "next_attempt_at": (
                now + dt.timedelta(seconds=min(600.0, 2.0 ** max(0, attempts - 1)))
                if status == "FAILED"
                else None
            ),
            "applied_at": now if status == "APPLIED" else None,
        }

    def _write_inbox(
        self, conn: Connection, p: _Planned, status: str, root_element: str | None,
        error: str | None,
    ) -> None:
        if p.existing is _MISSING:
            p.existing = self._inbox_rows(conn, {p.txid}).get((p.txid, p.index))
        values = self._inbox_values(p, status, root_element, error)
        if p.existing is None:
            conn.execute(schema.inbox.insert().values(
                chain_id=self.chain_id, txid=p.txid, item_index=p.index,
                received_at=self.clock(), **values))
        else:
            conn.execute(self._inbox_update(p).values(**values))

    def _inbox_update(self, p: _Planned) -> Any:
        return update(schema.inbox).where(
            schema.inbox.c.chain_id == self.chain_id,
            schema.inbox.c.txid == p.txid,
            schema.inbox.c.item_index == p.index,
        )

    def _write_inbox_rows(self, conn: Connection, planned: list[_Planned]) -> None:
        """The inbox rows of a page: new ones in one executemany, known ones updated."""
        new = []
        for p in planned:
            if p.document is not None:
                status, root, error = "APPLIED", p.document.root_element, None
            else:
                status, root, error = p.status or "FAILED", None, p.error
            if p.existing is _MISSING:
                p.existing = self._inbox_rows(conn, {p.txid}).get((p.txid, p.index))
            values = self._inbox_values(p, status, root, error)
            if p.existing is None:
                new.append({"chain_id": self.chain_id, "txid": p.txid, "item_index": p.index,
                            "received_at": self.clock(), **values})
            else:
                conn.execute(self._inbox_update(p).values(**values))
        if new:
            conn.execute(insert(schema.inbox), new)

    def _record(self, p: _Planned, status: str, root_element: str | None, error: str | None) -> None:
        with self.engine.begin() as conn:
            self._write_inbox(conn, p, status, root_element, error)

    def retry_due(self) -> int:
        """Re-run FAILED items whose back-off has passed, and DEFERRED items once per new
        block (their fate depends on access entries, which wake them directly, and on the
        number of confirmations); count re-runs."""
        now = self.clock()
        deferred_due = self._height is None or self._height != self._retried_at_height
        statuses = ("FAILED", "DEFERRED") if deferred_due else ("FAILED",)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(schema.inbox)
                .where(
                    schema.inbox.c.chain_id == self.chain_id,
                    schema.inbox.c.status.in_(statuses),
                )
                .order_by(schema.inbox.c.received_at)
            ).mappings().all()
        count = 0
        for row in rows:
            if row["status"] == "FAILED" and row["next_attempt_at"] and row["next_attempt_at"] > now:
                continue
            self._rerun(row)
            count += 1
        if deferred_due:
            self._retried_at_height = self._height
        return count

    def _rerun(self, row: Any) -> None:
        stream, txid, index = row["stream_id"], row["txid"], int(row["item_index"])
        try:
            items = self.client.call("liststreamtxitems", stream, [txid], True) or []
        except rpc_errors() as exc:
            if rpc_error_code(exc) != NOT_IN_STREAM:
                raise
            items = []
        item = next((i for i in items if int(i.get("vout") or 0) == index), None)
        if item is None:
            p = _Planned(stream, {}, txid, index, row["message_id"], dict(row))
            self._record(p, "IGNORED", None, "item no longer on the chain")
            return
        self.handle(stream, item)

    def inbox_counts(self) -> dict[str, int]:
        """Inbox rows per status (for the administrator and tests)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(schema.inbox.c.status, func.count())
                .where(schema.inbox.c.chain_id == self.chain_id)
                .group_by(schema.inbox.c.status)
            ).all()
        return {status: int(count) for status, count in rows}
