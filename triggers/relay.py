"""The relay (spec 1.5): pending outbox rows -> documents -> items on the chain, exactly once.

For each pending row, in sequence order:

1. *Prepare* (once): build the document from the committed rows, resolve the readers,
   encrypt for them, and store the exact item data, the wrapped passwords and the event id
   (`<origin>-<sequence>`) in the outbox row. The attempt counter goes up in the same
   commit, *before* anything reaches the node.
2. *Publish*: when the counter shows an earlier attempt, first look the event id up on the
   chain and in the mempool (the node may have accepted it before a crash); publish only
   when it is not there. Store the txid.
3. *Access entries* (private messages): publish the ones not yet on the `access` stream.
4. Mark the row SENT once its transaction is confirmed. A transaction that vanished from
   both chain and mempool before confirming (a node restarted without its mempool) is
   published again under the same event id.

RPC failures keep the row PENDING with exponential back-off (1 s doubling to 10 min,
unlimited); errors that cannot succeed on retry (row vanished, recipient without a key,
unknown table, a hook raising) mark it FAILED for an administrator.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from triggers import configure, crypto, documents, recipients, schema
from triggers.catalog import Catalog
from triggers.errors import RecipientUnavailable, TriggerError
from triggers.hooks import HookRegistry
from triggers.nodes import (
    ACCESS,
    PUBKEYS,
    NodeClient,
    public_key_pem,
    rpc_error_code,
    rpc_errors,
)
from triggers.rules import TriggerRule
from triggers.snapshot import Snapshot

__all__ = ["Relay", "MAX_BACKOFF"]

log = logging.getLogger(__name__)

MAX_BACKOFF = 600.0


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Relay:
    """Delivers one database's outbox to the nodes of its chains."""

    def __init__(
        self,
        engine: Engine,
        clients: Callable[[str], NodeClient],
        hooks: HookRegistry | None = None,
        catalog: Catalog | None = None,
        resolver: recipients.Resolver = recipients.default_resolver,
        batch_size: int = 200,
        clock: Callable[[], dt.datetime] = _utcnow,
        confirm_interval: float = 0.5,
    ) -> None:
        self.engine = engine
        self.clients = clients
        self.catalog = catalog or Catalog(engine)
        self.snapshot = Snapshot(self.catalog, hooks)
        self.resolver = resolver
        self.batch_size = batch_size
        self.clock = clock
        self.confirm_interval = confirm_interval
        self._origin: str | None = None
        self._subscribed: set[tuple[str, str]] = set()
        self._addresses: dict[str, str] = {}
        self.sent_count = 0

    # -- loop -----------------------------------------------------------------------------

    def run_once(self) -> int:
        """Deliver every due pending row once; returns how many were sent."""
        now = self.clock()
        with self.engine.connect() as conn:
            if self._origin is None:
                self._origin = configure.instance_origin(conn)
            rows = (
                conn.execute(
                    select(schema.outbox)
                    .where(schema.outbox.c.status == "PENDING")
                    .order_by(schema.outbox.c.sequence)
                    .limit(self.batch_size)
                )
                .mappings()
                .all()
            )
        sent = 0
        errors = rpc_errors()
        for row in rows:
            if row["next_attempt_at"] is not None and row["next_attempt_at"] > now:
                continue
            try:
                sent += self._deliver(dict(row))
            except TriggerError as exc:
                log.error("outbox %s FAILED: %s", row["sequence"], exc)
                self._fail(row["sequence"], str(exc))
            except errors as exc:
                log.warning("outbox %s: node unavailable (%s); will retry", row["sequence"], exc)
                self._backoff(row["sequence"], repr(exc))
                # Keep order: later rows wait behind this one until the node is back.
                break
        self.sent_count += sent
        return sent

    def run_forever(self, stop: threading.Event, interval: float = 0.05) -> None:
        """Poll until `stop` is set; `interval` seconds between empty polls."""
        while not stop.is_set():
            errors = rpc_errors() + (DBAPIError,)
            try:
                busy = self.run_once()
            except errors as exc:  # outermost loop: node or database busy/down, keep going
                log.warning("relay pass failed: %s", exc)
                busy = 0
            if not busy:
                stop.wait(interval)

    # -- one row --------------------------------------------------------------------------

    def _deliver(self, row: dict[str, Any]) -> int:
        """Advance one row by as many steps as possible; 1 when something reached the node."""
        with self.engine.connect() as conn:
            rule = configure.get_trigger(conn, row["trigger_id"])
            chain = configure.get_chain(conn, rule.chain_id)
        client = self.clients(rule.chain_id)
        self._subscribe(client, rule.chain_id, [rule.stream_id, PUBKEYS, ACCESS])
        sequence = row["sequence"]
        if row["txid"] is not None and row["sent_at"] is not None:
            progress = self._confirm(client, rule, row)
            if progress is not None:
                return progress
            row.update(txid=None, sent_at=None)  # lost: publish again right now, in order
        if row["payload"] is None:
            row.update(self._prepare(client, row, rule, chain))
        elif row["txid"] is None:
            self._mark_attempt(sequence)
            row["attempts"] += 1
        my_address = self._my_address(client, rule.chain_id)
        txid = row["txid"]
        if txid is None:
            if row["attempts"] > 1:
                txid = self._find(client, rule.stream_id, row["message_id"])
                if txid:
                    log.info("event %s was already on chain in %s", row["message_id"], txid)
            if txid is None:
                txid = client.call(
                    "publishfrom",
                    my_address,
                    rule.stream_id,
                    [row["message_id"]],
                    row["payload"].encode("utf-8").hex(),
                )
            if row["access_keys"]:
                self._update(sequence, txid=txid)
        if row["access_keys"]:
            self._publish_access(client, my_address, txid, json.loads(row["access_keys"]))
        # Published; SENT only once confirmed, because an unconfirmed transaction can be
        # lost (a node restarting without its mempool): the next passes check.
        self._update(
            sequence,
            txid=txid,
            sent_at=self.clock(),
            next_attempt_at=self.clock() + dt.timedelta(seconds=self.confirm_interval),
            last_error=None,
        )
        return 1

    def _confirm(self, client: NodeClient, rule: TriggerRule, row: dict[str, Any]) -> int | None:
        """Mark SENT once the item is confirmed; None when its transaction was lost."""
        sequence, txid = row["sequence"], row["txid"]
        try:
            item = client.call("getstreamitem", rule.stream_id, txid)
        except rpc_errors() as exc:
            if rpc_error_code(exc) is None:
                raise
            item = None
        if item is not None and int(item.get("confirmations") or 0) >= 1:
            self._update(sequence, status="SENT", next_attempt_at=None)
            return 1
        if item is None and txid not in (client.call("getrawmempool") or []):
            log.warning("event %s: transaction %s was lost before confirmation; republishing",
                        row["message_id"], txid)
            self._update(sequence, txid=None, sent_at=None, next_attempt_at=None)
            return None
        self._update(
            sequence, next_attempt_at=self.clock() + dt.timedelta(seconds=self.confirm_interval)
        )
        return 0

    def _update(self, sequence: int, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(schema.outbox).where(schema.outbox.c.sequence == sequence).values(**values)
            )

    def _prepare(
        self, client: NodeClient, row: dict[str, Any], rule: TriggerRule, chain: dict[str, Any]
    ) -> dict[str, Any]:
        """Build, resolve readers, encrypt; store it all with attempts+1 in one commit."""
        pkey = json.loads(row["pkey"])
        with self.engine.connect() as conn:
            entries = configure.related_entries(conn, rule.trigger_id)
            document, root_row = self.snapshot.build(
                conn, row["table_id"], row["operation"], pkey, entries
            )
            readers = self._readers(conn, rule, row, root_row)
        xml = documents.render(document)
        message_id = f"{self._origin}-{row['sequence']}"
        access_keys = None
        if readers is None:
            payload = xml.decode("utf-8")
        else:
            password = crypto.new_password()
            payload = crypto.seal(xml, password).decode("utf-8")
            access_keys = json.dumps(self._wrap(client, chain, readers, password))
            del password
        values = {
            "payload": payload,
            "access_keys": access_keys,
            "message_id": message_id,
            "attempts": row["attempts"] + 1,
        }
        with self.engine.begin() as conn:
            conn.execute(
                update(schema.outbox).where(schema.outbox.c.sequence == row["sequence"]).values(**values)
            )
        return values

    def _readers(
        self, conn: Connection, rule: TriggerRule, row: dict[str, Any], root_row: dict[str, Any] | None
    ) -> list[str] | None:
        if not recipients.is_private(rule):
            return None
        if root_row is None:
            stored = row.get("recipients")
            if not stored:
                raise RecipientUnavailable(
                    "delete of a private document: readers were not captured before the delete"
                )
            contacts = json.loads(stored)
        else:
            root = self.catalog.table(row["table_id"], conn)
            contacts = recipients.contact_ids(conn, rule, root, root_row)
        if not contacts:
            raise RecipientUnavailable(f"no readers found for private trigger {rule.trigger_id}")
        return recipients.resolve_addresses(conn, rule.chain_id, contacts, self.resolver)

    def _wrap(
        self, client: NodeClient, chain: dict[str, Any], readers: list[str], password: bytes
    ) -> list[dict[str, str]]:
        me = self._my_address(client, chain["chain_id"])
        own_public = crypto.load_public_key(Path(chain["public_key"]).read_bytes())
        wrapped = []
        for address in [me] + [a for a in readers if a != me]:
            if address == me:
                public = own_public
            else:
                pem = public_key_pem(client, address)
                if pem is None:
                    raise RecipientUnavailable(f"no public key on {PUBKEYS} for {address}")
                public = crypto.load_public_key(pem)
            wrapped.append(
                {
                    "address": address,
                    "key_fingerprint": crypto.fingerprint(public),
                    "wrapped_key": base64.b64encode(crypto.wrap_password(public, password)).decode(),
                }
            )
        return wrapped

    def _publish_access(
        self, client: NodeClient, my_address: str, txid: str, entries: list[dict[str, str]]
    ) -> None:
        existing = client.call("liststreamkeyitems", ACCESS, txid, False, 10000)
        done = set()
        for item in existing or []:
            if my_address not in (item.get("publishers") or []):
                continue
            try:
                done.add(crypto.parse_access_entry(_bytes_of(item))["address"])
            except (TriggerError, ValueError):
                continue
        for entry in entries:
            if entry["address"] in done:
                continue
            data = {
                "txid": txid,
                "address": entry["address"],
                "key_fingerprint": entry["key_fingerprint"],
                "alg": crypto.WRAP_ALG,
                "wrapped_key": entry["wrapped_key"],
            }
            client.call(
                "publishfrom",
                my_address,
                ACCESS,
                txid,
                json.dumps(data, separators=(",", ":")).encode("utf-8").hex(),
            )

    def _find(self, client: NodeClient, stream: str, message_id: str) -> str | None:
        """The txid carrying `message_id` on `stream`, on chain or in the mempool, or None."""
        items = client.call("liststreamkeyitems", stream, message_id, False, 10)
        for item in items or []:
            return str(item["txid"])
        for txid in client.call("getrawmempool") or []:
            try:
                item = client.call("getstreamitem", stream, txid)
            except rpc_errors():
                continue
            if message_id in (item.get("keys") or []):
                return str(item["txid"])
        return None

    # -- bookkeeping ----------------------------------------------------------------------

    def _my_address(self, client: NodeClient, chain_id: str) -> str:
        address = self._addresses.get(chain_id)
        if address is None:
            with self.engine.connect() as conn:
                address = conn.execute(
                    select(schema.node.c.node_address).where(
                        schema.node.c.chain_id == chain_id, schema.node.c.is_mine.is_(True)
                    )
                ).scalar()
            if address is None:
                address = client.call("getaddresses")[0]
            self._addresses[chain_id] = address
        return address

    def _subscribe(self, client: NodeClient, chain_id: str, streams: list[str]) -> None:
        for stream in streams:
            if (chain_id, stream) in self._subscribed:
                continue
            try:
                client.call("subscribe", stream)
            except rpc_errors() as exc:
                if getattr(exc, "code", None) is None:
                    raise
                log.debug("subscribe %s: %s", stream, exc)
            self._subscribed.add((chain_id, stream))

    def _mark_attempt(self, sequence: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(schema.outbox)
                .where(schema.outbox.c.sequence == sequence)
                .values(attempts=schema.outbox.c.attempts + 1)
            )

    def _fail(self, sequence: int, error: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(schema.outbox)
                .where(schema.outbox.c.sequence == sequence)
                .values(status="FAILED", last_error=error[:4000])
            )

    def _backoff(self, sequence: int, error: str) -> None:
        with self.engine.begin() as conn:
            attempts = conn.execute(
                select(schema.outbox.c.attempts).where(schema.outbox.c.sequence == sequence)
            ).scalar() or 1
            delay = min(MAX_BACKOFF, 2.0 ** max(0, attempts - 1))
            conn.execute(
                update(schema.outbox)
                .where(schema.outbox.c.sequence == sequence)
                .values(
                    last_error=error[:4000],
                    next_attempt_at=self.clock() + dt.timedelta(seconds=delay),
                )
            )


def _bytes_of(item: dict[str, Any]) -> bytes:
    data = item.get("data")
    if isinstance(data, str):
        return bytes.fromhex(data)
    if isinstance(data, dict) and "text" in data:
        return str(data["text"]).encode()
    if isinstance(data, dict) and "json" in data:
        return json.dumps(data["json"]).encode()
    raise ValueError("unreadable access item")


def retry_failed(engine: Engine, sequences: list[int] | None = None) -> int:
    """Administrator action: put FAILED rows back to PENDING (all, or the given ones)."""
    with engine.begin() as conn:
        stmt = update(schema.outbox).where(schema.outbox.c.status == "FAILED")
        if sequences:
            stmt = stmt.where(schema.outbox.c.sequence.in_(sequences))
        result = conn.execute(stmt.values(status="PENDING", next_attempt_at=None))
        return int(result.rowcount or 0)

