"""The receiver (spec 1.6, 1.10): stream items -> gate -> decrypt -> parse -> apply, in order.

One `Receiver` serves one chain of one database. `follow_once` walks every known stream in
chain order from a durable cursor (`blockchain_receiver_cursor`), stopping at the first item
that is not final yet, so later changes never overtake earlier ones and a reorganisation
never has to be undone in the database. A walletnotify call (`chainmill receive`) is only a
wake-up for the same walk. Each item is recorded in `blockchain_inbox`; the apply, the
applied-event row and the inbox row commit together. Failures stay in the inbox with their
error and are retried with back-off, never dropped.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from triggers import configure, crypto, documents, schema, xmlsafe
from triggers.applier import Applier
from triggers.capture import blockchain_mode
from triggers.catalog import Catalog
from triggers.errors import DecryptionFailed, NotARecipient, TriggerError
from triggers.hooks import HookRegistry
from triggers.nodes import (
    ACCESS,
    NodeClient,
    finaldepth,
    is_final,
    item_bytes,
    rpc_error_code,
    rpc_errors,
)
from triggers.rules import is_active

__all__ = ["Receiver", "Gate"]

log = logging.getLogger(__name__)
security_log = logging.getLogger("triggers.security")

_TERMINAL = ("APPLIED", "NOT_FOR_ME", "IGNORED")
_NOT_IN_STREAM = -710


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
        self._subscribed: set[str] = set()
        self.applied_count = 0

    # -- public entry points --------------------------------------------------------------

    def follow_once(self) -> int:
        """Process everything that is due now: new items of every stream, then retries."""
        self._depth = finaldepth(self.client) if self.gate.mode == "final" else 1
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
        while not stop.is_set():
            try:
                busy = self.follow_once()
            except errors as exc:  # outermost loop: node or database busy/down, keep going
                log.warning("receiver pass failed: %s", exc)
                busy = 0
            if not busy:
                stop.wait(interval)

    # -- walking --------------------------------------------------------------------------

    def _streams(self) -> list[str]:
        today = dt.date.today()
        with self.engine.connect() as conn:
            chain = configure.get_chain(conn, self.chain_id)
            if not is_active(chain["start_date"], chain["end_date"], today):
                return []
            rows = conn.execute(
                select(schema.stream).where(schema.stream.c.chain_id == self.chain_id)
            ).mappings()
            return [
                r["stream_id"]
                for r in rows
                if r["stream_id"].lower() not in schema.SYSTEM_STREAMS
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

    def _save_cursor(self, stream: str, position: int) -> None:
        with self.engine.begin() as conn:
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

    def _subscribe(self, stream: str) -> None:
        if stream in self._subscribed:
            return
        try:
            self.client.call("subscribe", stream)
        except rpc_errors() as exc:
            if rpc_error_code(exc) is None:
                raise
            log.debug("subscribe %s: %s", stream, exc)
        self._subscribed.add(stream)

    def _follow_stream(self, stream: str) -> None:
        self._subscribe(stream)
        with self.engine.connect() as conn:
            position = self._cursor(conn, stream)
        while True:
            items = self.client.call("liststreamitems", stream, True, self.batch_size, position)
            if not items:
                return
            done = 0
            for item in items:
                if not self.gate.open(item, self._depth or 1):
                    break
                if stream == ACCESS:
                    self._on_access(item)
                else:
                    self.handle(stream, item)
                done += 1
            if done:
                position += done
                self._save_cursor(stream, position)
            if done < len(items) or len(items) < self.batch_size:
                return

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
        """Process one item of a data stream; returns the inbox status it ends in."""
        txid = str(item["txid"])
        index = int(item.get("vout") or 0)
        publishers = list(item.get("publishers") or [])
        if set(publishers) & self.own_addresses():
            return "OWN"  # the sender already has the data
        keys = list(item.get("keys") or [])
        message_id = keys[0] if keys else f"{self.chain_id}:{txid}:{index}"
        with self.engine.connect() as conn:
            existing = self._inbox_row(conn, txid, index)
            if existing is not None and existing["status"] in _TERMINAL:
                return str(existing["status"])
            if self.applier.is_applied(conn, message_id):
                self._record(txid, index, stream, item, message_id, "APPLIED", None, None)
                return "APPLIED"
        try:
            if self.require_known_sender:
                self._check_sender(publishers)
            data = item_bytes(self.client, item)
            if crypto.is_envelope(data):
                data = self._decrypt(txid, publishers, data)
            document = documents.read(data, self.limits)
        except NotARecipient as exc:
            return self._defer(txid, index, stream, item, message_id, str(exc))
        except DecryptionFailed as exc:
            security_log.warning("security: item %s failed its check: %s", txid, exc)
            self._record(txid, index, stream, item, message_id, "FAILED", None, str(exc))
            return "FAILED"
        except (TriggerError, ValueError) as exc:
            self._record(txid, index, stream, item, message_id, "FAILED", None, str(exc))
            return "FAILED"
        return self._apply(txid, index, stream, item, message_id, document)

    def _apply(
        self,
        txid: str,
        index: int,
        stream: str,
        item: dict[str, Any],
        message_id: str,
        document: documents.Document,
    ) -> str:
        try:
            with self.engine.begin() as conn, blockchain_mode(conn):
                if self.applier.is_applied(conn, message_id):
                    status = "APPLIED"
                else:
                    self.applier.apply(conn, document)
                    self.applier.record(conn, message_id, self.chain_id, txid)
                    status = "NEW"
                self._write_inbox(
                    conn, txid, index, stream, item, message_id, "APPLIED", document.root_element, None
                )
        except IntegrityError as exc:
            with self.engine.connect() as conn:
                if self.applier.is_applied(conn, message_id):
                    return "APPLIED"
            error = f"database refused the change: {exc.orig}"
            self._record(txid, index, stream, item, message_id, "FAILED", document.root_element, error)
            return "FAILED"
        except TriggerError as exc:
            self._record(
                txid, index, stream, item, message_id, "FAILED", document.root_element, str(exc)
            )
            return "FAILED"
        if status == "NEW":
            self.applied_count += 1
            log.info("applied %s (%s) from %s", document.root_element, message_id, txid)
        return "APPLIED"

    def _check_sender(self, publishers: list[str]) -> None:
        today = dt.date.today()
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(schema.node).where(
                    schema.node.c.chain_id == self.chain_id,
                    schema.node.c.node_address.in_(publishers),
                )
            ).all()
        if not any(is_active(r.start_date, r.end_date, today) for r in rows):
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

    def _defer(
        self, txid: str, index: int, stream: str, item: dict[str, Any], message_id: str, why: str
    ) -> str:
        # Access entries always follow their data item; after `deferred_blocks` blocks
        # without one, the item was not meant for this node. That is normal, not an error.
        confirmations = int(item.get("confirmations") or 0)
        status = "NOT_FOR_ME" if confirmations > self.deferred_blocks else "DEFERRED"
        self._record(txid, index, stream, item, message_id, status, None, why)
        return status

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

    def _inbox_row(self, conn: Connection, txid: str, index: int) -> dict[str, Any] | None:
        row = conn.execute(
            select(schema.inbox).where(
                schema.inbox.c.chain_id == self.chain_id,
                schema.inbox.c.txid == txid,
                schema.inbox.c.item_index == index,
            )
        ).mappings().first()
        return dict(row) if row else None

    def _write_inbox(
        self,
        conn: Connection,
        txid: str,
        index: int,
        stream: str,
        item: dict[str, Any],
        message_id: str,
        status: str,
        root_element: str | None,
        error: str | None,
    ) -> None:
        now = self.clock()
        existing = self._inbox_row(conn, txid, index)
        attempts = (existing["attempts"] if existing else 0) + (1 if status == "FAILED" else 0)
        values: dict[str, Any] = {
            "stream_id": stream,
            "publisher": ",".join(item.get("publishers") or [])[:64] or None,
            "message_id": message_id,
            "block_index": item.get("blockindex"),
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
        if existing is None:
            conn.execute(
                schema.inbox.insert().values(
                    chain_id=self.chain_id, txid=txid, item_index=index, received_at=now, **values
                )
            )
        else:
            conn.execute(
                update(schema.inbox)
                .where(
                    schema.inbox.c.chain_id == self.chain_id,
                    schema.inbox.c.txid == txid,
                    schema.inbox.c.item_index == index,
                )
                .values(**values)
            )

    def _record(self, *args: Any) -> None:
        with self.engine.begin() as conn:
            self._write_inbox(conn, *args)

    def retry_due(self) -> int:
        """Re-run FAILED items whose back-off has passed and DEFERRED items; count re-runs."""
        now = self.clock()
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(schema.inbox)
                .where(
                    schema.inbox.c.chain_id == self.chain_id,
                    schema.inbox.c.status.in_(("FAILED", "DEFERRED")),
                )
                .order_by(schema.inbox.c.received_at)
            ).mappings().all()
        count = 0
        for row in rows:
            if row["status"] == "FAILED" and row["next_attempt_at"] and row["next_attempt_at"] > now:
                continue
            self._rerun(row)
            count += 1
        return count

    def _rerun(self, row: Any) -> None:
        try:
            item = self.client.call("getstreamitem", row["stream_id"], row["txid"], True)
        except rpc_errors() as exc:
            if rpc_error_code(exc) == _NOT_IN_STREAM:
                self._record(
                    row["txid"], row["item_index"], row["stream_id"], {}, row["message_id"],
                    "IGNORED", None, "item no longer on the chain",
                )
                return
            raise
        self.handle(row["stream_id"], item)

    def inbox_counts(self) -> dict[str, int]:
        """Inbox rows per status (for the administrator and tests)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(schema.inbox.c.status, func.count())
                .where(schema.inbox.c.chain_id == self.chain_id)
                .group_by(schema.inbox.c.status)
            ).all()
        return {status: int(count) for status, count in rows}

