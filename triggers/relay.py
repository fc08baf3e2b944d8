"""The relay (spec 1.5): pending outbox rows -> documents -> items on the chain, exactly once.

The relay works in rounds. Each round claims up to `batch_size` due PENDING rows in sequence
order and takes each one as far as it can, a whole batch per step:

1. *Confirm*: rows already published are looked up on the node in one batched request
   (liststreamtxitems per transaction: a batched publish puts several items in one, and
   MultiChain's getstreamitem refuses such a transaction). Confirmed rows become SENT; a transaction that vanished
   from both chain and mempool before confirming (a node restarted without its mempool) is
   published again in this round under the same event id.
2. *Prepare* (once per row): build the document from the committed rows, resolve the
   readers, encrypt for them, and fix the exact item data, the wrapped passwords and the
   event id (`<origin>-<sequence>`).
3. *Claim* (one commit): the prepared data, and the attempt counter of every row about to
   be published goes up, *before* anything reaches the node.
4. *Look up*: a row whose counter shows an earlier attempt may have been accepted by the
   node before a crash; its event id is looked up on the chain and in the mempool (one
   batched request) and it is published only when it is not there.
5. *Publish*, in sequence order: consecutive public rows go out together as one
   `publishmultifrom` transaction (up to the chain's items per transaction and a byte
   budget); a private row is its own transaction, followed by one `publishmultifrom` of its
   access entries. The first RPC failure ends the round's publishing, so later rows never
   overtake an earlier one.
6. *Record* (one commit): txids and send times; rows that could not be published back off.

RPC failures keep a row PENDING with exponential back-off (1 s doubling to 10 min,
unlimited); errors that cannot succeed on retry (row vanished, recipient without a key,
unknown table, a hook raising) mark it FAILED for an administrator.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from triggers import configure, crypto, documents, recipients, schema
from triggers.catalog import Catalog
from triggers.errors import RecipientUnavailable, TriggerError
from triggers.hooks import HookRegistry
from triggers.nodes import (
    ACCESS,
    NOT_IN_STREAM,
    PUBKEYS,
    NodeClient,
    batch_call,
    public_key_pem,
    rpc_error_code,
    rpc_errors,
)
from triggers.rules import TriggerRule
from triggers.snapshot import Snapshot

__all__ = ["Relay", "MAX_BACKOFF", "retry_failed"]

log = logging.getLogger(__name__)

MAX_BACKOFF = 600.0
DEFAULT_TX_ITEMS = 32
"""Items per transaction when the node does not report max-std-op-returns-count."""
TX_BYTES = 1 << 20
"""Byte budget of the item data in one publishmulti transaction (the default chain allows
4 MiB per transaction; a larger single item still goes out, alone)."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@dataclass(slots=True)
class _Work:
    """One outbox row during a round."""

    row: dict[str, Any]
    rule: TriggerRule
    chain: dict[str, Any]
    changes: dict[str, Any] = field(default_factory=dict)
    found: bool = False
    """The event id was already on the node (a crash after the node accepted it)."""

    @property
    def sequence(self) -> int:
        return int(self.row["sequence"])

    def set(self, **values: Any) -> None:
        self.row.update(values)
        self.changes.update(values)


class _Stop(Exception):
    """An RPC failure at row `index` of a chain's batch: it and later rows wait."""

    def __init__(self, index: int, error: BaseException) -> None:
        super().__init__(repr(error))
        self.index = index
        self.error = error


class Relay:
    """Delivers one database's outbox to the nodes of its chains."""

    def __init__(
        self,
        engine: Engine,
        clients: Callable[[str], NodeClient],
        hooks: HookRegistry | None = None,
        catalog: Catalog | None = None,
        resolver: recipients.Resolver = recipients.default_resolver,
        batch_size: int = 500,
        clock: Callable[[], dt.datetime] = _utcnow,
        confirm_interval: float = 0.5,
        tx_bytes: int = TX_BYTES,
    ) -> None:
        self.engine = engine
        self.clients = clients
        self.catalog = catalog or Catalog(engine)
        self.snapshot = Snapshot(self.catalog, hooks)
        self.resolver = resolver
        self.batch_size = batch_size
        self.clock = clock
        self.confirm_interval = confirm_interval
        self.tx_bytes = tx_bytes
        self._origin: str | None = None
        self._subscribed: set[tuple[str, str]] = set()
        self._addresses: dict[str, str] = {}
        self._tx_items: dict[str, int] = {}
        self._unavailable: set[str] = set()  # chains whose node failed last time (or "db")
        self.sent_count = 0

    # -- loop -----------------------------------------------------------------------------

    def run_once(self) -> int:
        """One round over the due pending rows; returns how many made progress (published,
        found already on the chain, or confirmed)."""
        now = self.clock()
        out = schema.outbox
        self.catalog.recheck()  # a column added since the last round goes into this one's documents
        by_chain: dict[str, list[_Work]] = {}
        failed: list[tuple[int, str]] = []
        with self.engine.connect() as conn:
            if self._origin is None:
                self._origin = configure.instance_origin(conn)
            rows = (
                conn.execute(
                    select(out)
                    .where(
                        out.c.status == "PENDING",
                        or_(out.c.next_attempt_at.is_(None), out.c.next_attempt_at <= now),
                    )
                    .order_by(out.c.sequence)
                    .limit(self.batch_size)
                )
                .mappings()
                .all()
            )
            rules: dict[int, tuple[TriggerRule, dict[str, Any]] | str] = {}
            for row in rows:
                trigger_id = row["trigger_id"]
                if trigger_id not in rules:
                    try:
                        rule = configure.get_trigger(conn, trigger_id)
                        rules[trigger_id] = (rule, configure.get_chain(conn, rule.chain_id))
                    except TriggerError as exc:
                        rules[trigger_id] = str(exc)
                found = rules[trigger_id]
                if isinstance(found, str):
                    failed.append((row["sequence"], found))
                    continue
                rule, chain = found
                by_chain.setdefault(rule.chain_id, []).append(_Work(dict(row), rule, chain))
        if failed:
            with self.engine.begin() as conn:
                for sequence, error in failed:
                    log.error("outbox %s FAILED: %s", sequence, error)
                    self._write(conn, [(sequence, {"status": "FAILED", "last_error": error[:4000]})])
        progressed = 0
        for chain_id, works in by_chain.items():
            progressed += self._deliver_chain(chain_id, works)
        self.sent_count += progressed
        return progressed

    def run_forever(self, stop: threading.Event, interval: float = 0.05) -> None:
        """Poll until `stop` is set; `interval` seconds between empty polls."""
        while not stop.is_set():
            errors = rpc_errors() + (DBAPIError,)
            try:
                busy = self.run_once()
                if "db" in self._unavailable:
                    self._unavailable.discard("db")
                    log.info("relay: database reachable again; delivery resumed")
            except errors as exc:  # outermost loop: node or database busy/down, keep going
                if isinstance(exc, DBAPIError):
                    self._unavailable.add("db")
                log.warning("relay pass failed: %s", exc)
                busy = 0
            if not busy:
                stop.wait(interval)

    # -- one chain's batch ----------------------------------------------------------------

    def _deliver_chain(self, chain_id: str, works: list[_Work]) -> int:
        client = self.clients(chain_id)
        now = self.clock()
        progressed = 0
        to_publish: list[_Work] = []
        settled: list[_Work] = []  # confirmed, still waiting, or FAILED: written in the claim
        stop: _Stop | None = None
        errors = rpc_errors()
        try:
            streams = sorted({w.rule.stream_id for w in works})
            self._subscribe(client, chain_id, streams + [PUBKEYS, ACCESS])
            progressed += self._confirm(client, works, now, settled)
        except errors as exc:
            stop = _Stop(0, exc)
        if stop is None:
            keys_cache: dict[str, bytes | None] = {}
            with self.engine.connect() as conn:
                for index, work in enumerate(works):
                    row = work.row
                    if row["txid"] is not None and row["sent_at"] is not None:
                        continue  # published earlier, not confirmed yet (settled above)
                    if row["payload"] is None:
                        try:
                            self._prepare(conn, client, work, keys_cache)
                        except TriggerError as exc:
                            log.error("outbox %s FAILED: %s", work.sequence, exc)
                            work.set(status="FAILED", last_error=str(exc)[:4000])
                            settled.append(work)
                            continue
                        except errors as exc:
                            stop = _Stop(index, exc)
                            break
                    if row["txid"] is None:
                        work.set(attempts=int(row["attempts"]) + 1)
                    to_publish.append(work)
        # Claim: prepared data and attempts+1 are durable before anything is published.
        with self.engine.begin() as conn:
            self._write(conn, [(w.sequence, w.changes) for w in settled + to_publish if w.changes])
        for work in settled + to_publish:
            work.changes = {}
        published: list[_Work] = []
        if to_publish:
            try:
                self._find(client, [w for w in to_publish if w.row["txid"] is None
                                    and int(w.row["attempts"]) > 1])
                published = self._publish(client, chain_id, to_publish)
            except _Stop as exc:
                published = to_publish[: exc.index]
                stop = _Stop(works.index(to_publish[exc.index]), exc.error)
            except errors as exc:
                stop = _Stop(works.index(to_publish[0]), exc)
        sent_at = self.clock()
        next_check = sent_at + dt.timedelta(seconds=self.confirm_interval)
        records = [
            (w.sequence, {"txid": w.row["txid"], "sent_at": sent_at,
                          "next_attempt_at": next_check, "last_error": None})
            for w in published
        ]
        if stop is not None:
            self._unavailable.add(chain_id)
            log.warning("chain %s: node unavailable (%s); %d row(s) will retry",
                        chain_id, stop.error, len(works) - stop.index)
            done = {id(w) for w in published} | {id(w) for w in settled}
            for work in works[stop.index:]:
                if id(work) in done:
                    continue
                delay = min(MAX_BACKOFF, 2.0 ** max(0, int(work.row["attempts"]) - 1))
                records.append((work.sequence, {
                    "last_error": repr(stop.error)[:4000],
                    "next_attempt_at": sent_at + dt.timedelta(seconds=delay),
                }))
        elif chain_id in self._unavailable:
            self._unavailable.discard(chain_id)
            log.info("chain %s: node reachable again; delivery resumed", chain_id)
        if published or progressed:
            log.info("chain %s: %d outbox row(s) published, %d confirmed (last sequence %d)",
                     chain_id, len(published), progressed,
                     max(w.sequence for w in (published or works)))
        if records:
            with self.engine.begin() as conn:
                self._write(conn, records)
        return progressed + len(published)

    # -- confirm --------------------------------------------------------------------------

    def _confirm(
        self, client: NodeClient, works: list[_Work], now: dt.datetime, settled: list[_Work]
    ) -> int:
        """Settle the published rows: SENT when confirmed, republish when lost, else wait."""
        waiting = [w for w in works if w.row["txid"] is not None and w.row["sent_at"] is not None]
        if not waiting:
            return 0
        pairs = sorted({(w.rule.stream_id, w.row["txid"]) for w in waiting})
        replies = batch_call(client, [("liststreamtxitems", [s, [t]]) for s, t in pairs])
        state: dict[tuple[str, str], int | None] = {}
        for pair, reply in zip(pairs, replies, strict=True):
            if isinstance(reply, BaseException):
                if rpc_error_code(reply) != NOT_IN_STREAM:
                    raise reply
                state[pair] = None  # not in the stream (on chain or in the mempool)
            elif not reply:
                state[pair] = None  # chainmill lists nothing where MultiChain says -710
            else:
                state[pair] = int(reply[0].get("confirmations") or 0)
        mempool: set[str] | None = None
        confirmed = 0
        for work in waiting:
            confirmations = state[(work.rule.stream_id, work.row["txid"])]
            if confirmations is not None and confirmations >= 1:
                work.set(status="SENT", next_attempt_at=None)
                settled.append(work)
                confirmed += 1
                continue
            if confirmations is None:
                if mempool is None:
                    mempool = set(client.call("getrawmempool") or [])
                if work.row["txid"] not in mempool:
                    log.warning("event %s: transaction %s was lost before confirmation; "
                                "republishing", work.row["message_id"], work.row["txid"])
                    work.set(txid=None, sent_at=None, next_attempt_at=None)
                    continue  # published again in this round, in order
            work.set(next_attempt_at=now + dt.timedelta(seconds=self.confirm_interval))
            settled.append(work)
        return confirmed

    # -- prepare --------------------------------------------------------------------------

    def _prepare(
        self, conn: Connection, client: NodeClient, work: _Work, keys: dict[str, bytes | None]
    ) -> None:
        """Build, resolve readers, encrypt; the values go out with the claim commit."""
        row, rule = work.row, work.rule
        pkey = json.loads(row["pkey"])
        entries = configure.related_entries(conn, rule.trigger_id)
        document, root_row = self.snapshot.build(
            conn, row["table_id"], row["operation"], pkey, entries
        )
        readers = self._readers(conn, rule, row, root_row)
        xml = documents.render(document)
        access_keys = None
        if readers is None:
            payload = xml.decode("utf-8")
        else:
            password = crypto.new_password()
            payload = crypto.seal(xml, password).decode("utf-8")
            access_keys = json.dumps(self._wrap(client, work.chain, readers, password, keys))
            del password
        work.set(payload=payload, access_keys=access_keys,
                 message_id=f"{self._origin}-{row['sequence']}")

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
            if rule.distribution_type == "party in record":
                where = f"column {recipients.CONTACT_COLUMN} of this {row['table_id']} row is empty"
            else:
                where = (f"no row of {rule.distribution_table} pointing at this "
                         f"{row['table_id']} row has a {recipients.CONTACT_COLUMN}")
            raise RecipientUnavailable(
                f"no readers for private trigger {rule.trigger_id} ({rule.distribution_type}): "
                f"{where}; set the recipient address there, then `chainmill triggers retry "
                f"{row['sequence']}`")
        return recipients.resolve_addresses(conn, rule.chain_id, contacts, self.resolver)

    def _wrap(
        self,
        client: NodeClient,
        chain: dict[str, Any],
        readers: list[str],
        password: bytes,
        keys: dict[str, bytes | None],
    ) -> list[dict[str, str]]:
        me = self._my_address(client, chain["chain_id"])
        own_public = crypto.load_public_key(Path(chain["public_key"]).read_bytes())
        wrapped = []
        for address in [me] + [a for a in readers if a != me]:
            if address == me:
                public = own_public
            else:
                if address not in keys:
                    keys[address] = public_key_pem(client, address)
                pem = keys[address]
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

    # -- look up, publish -----------------------------------------------------------------

    def _find(self, client: NodeClient, works: list[_Work]) -> None:
        """Set the txid of every row whose event id is already on the chain or in the mempool."""
        if not works:
            return
        replies = batch_call(client, [
            ("liststreamkeyitems", [w.rule.stream_id, w.row["message_id"], False, 10])
            for w in works
        ])
        missing = []
        for work, reply in zip(works, replies, strict=True):
            if isinstance(reply, BaseException):
                raise reply
            if reply:
                self._found(work, str(reply[0]["txid"]))
            else:
                missing.append(work)
        if not missing:
            return
        # Belt and braces: a node whose key index does not cover its mempool.
        pool = list(client.call("getrawmempool") or [])
        if not pool:
            return
        wanted = {w.row["message_id"]: w for w in missing}
        for stream in sorted({w.rule.stream_id for w in missing}):
            try:
                items = client.call("liststreamtxitems", stream, pool, False)
            except rpc_errors() as exc:
                if rpc_error_code(exc) is None:
                    raise
                continue
            for item in items or []:
                for key in item.get("keys") or []:
                    work = wanted.pop(key, None)
                    if work is not None:
                        self._found(work, str(item["txid"]))

    @staticmethod
    def _found(work: _Work, txid: str) -> None:
        log.info("event %s was already on chain in %s", work.row["message_id"], txid)
        work.row["txid"] = txid
        work.found = True

    def _units(self, chain_id: str, works: list[_Work]) -> Iterable[list[_Work]]:
        """Publish units in order: runs of public rows up to a transaction's capacity, and
        single private rows (and rows already on the chain, which need no transaction)."""
        limit = self._tx_items.get(chain_id, DEFAULT_TX_ITEMS)
        run: list[_Work] = []
        size = 0
        for work in works:
            public = work.row["txid"] is None and not work.row["access_keys"]
            length = len(work.row["payload"])
            if run and (not public or len(run) >= limit or size + length > self.tx_bytes):
                yield run
                run, size = [], 0
            if public:
                run.append(work)
                size += length
            else:
                yield [work]
        if run:
            yield run

    def _publish(self, client: NodeClient, chain_id: str, works: list[_Work]) -> list[_Work]:
        """Publish in order; raises _Stop(index into `works`) at the first RPC failure."""
        self._capacity(client, chain_id)
        me = self._my_address(client, chain_id)
        done = 0
        for unit in self._units(chain_id, works):
            try:
                if len(unit) > 1 or (unit[0].row["txid"] is None and not unit[0].row["access_keys"]):
                    txid = client.call("publishmultifrom", me, unit[0].rule.stream_id, [
                        {"for": w.rule.stream_id, "keys": [w.row["message_id"]],
                         "data": w.row["payload"].encode("utf-8").hex()}
                        for w in unit
                    ])
                    for work in unit:
                        work.row["txid"] = txid
                else:
                    work = unit[0]
                    fresh = work.row["txid"] is None
                    if fresh:
                        work.row["txid"] = client.call(
                            "publishfrom", me, work.rule.stream_id, [work.row["message_id"]],
                            work.row["payload"].encode("utf-8").hex(),
                        )
                    if work.row["access_keys"]:
                        self._publish_access(client, me, work.row["txid"],
                                             json.loads(work.row["access_keys"]),
                                             check=not fresh)
            except rpc_errors() as exc:
                if unit[0].row["txid"] is not None and unit[0].row["access_keys"]:
                    # The private item went out but not (all) its access entries: the next
                    # round finds it by event id and completes the entries.
                    log.info("event %s: access entries pending", unit[0].row["message_id"])
                raise _Stop(done, exc) from exc
            done += len(unit)
        return works

    def _publish_access(
        self, client: NodeClient, my_address: str, txid: str, entries: list[dict[str, str]],
        check: bool,
    ) -> None:
        done: set[str] = set()
        if check:
            for item in client.call("liststreamkeyitems", ACCESS, txid, False, 10000) or []:
                if my_address not in (item.get("publishers") or []):
                    continue
                try:
                    done.add(crypto.parse_access_entry(_bytes_of(item))["address"])
                except (TriggerError, ValueError):
                    continue
        items = []
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
            items.append({"key": txid,
                          "data": json.dumps(data, separators=(",", ":")).encode("utf-8").hex()})
        if items:
            client.call("publishmultifrom", my_address, ACCESS, items)

    # -- bookkeeping ----------------------------------------------------------------------

    def _capacity(self, client: NodeClient, chain_id: str) -> None:
        """Items per transaction of the chain (max-std-op-returns-count), asked once."""
        if chain_id in self._tx_items:
            return
        try:
            params = client.call("getblockchainparams")
            count = int(params.get("max-std-op-returns-count") or DEFAULT_TX_ITEMS)
        except rpc_errors() as exc:
            if rpc_error_code(exc) is None:
                raise
            count = DEFAULT_TX_ITEMS
        except (AttributeError, TypeError, ValueError):
            count = DEFAULT_TX_ITEMS
        self._tx_items[chain_id] = max(1, count)

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
        new = [s for s in streams if (chain_id, s) not in self._subscribed]
        if not new:
            return
        try:
            client.call("subscribe", new)  # one call for all of them
        except rpc_errors() as exc:
            if rpc_error_code(exc) is None:
                raise
            for stream in new:  # one of them is refused: the others still count
                try:
                    client.call("subscribe", stream)
                except rpc_errors() as exc1:
                    if rpc_error_code(exc1) is None:
                        raise
                    log.debug("subscribe %s: %s", stream, exc1)
        self._subscribed.update((chain_id, s) for s in new)

    @staticmethod
    def _write(conn: Connection, changes: Sequence[tuple[int, dict[str, Any]]]) -> None:
        """Update outbox rows, one executemany per set of columns."""
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for sequence, values in changes:
            if not values:
                continue
            names = tuple(sorted(values))
            groups.setdefault(names, []).append(
                {"b_sequence": sequence, **{f"b_{n}": values[n] for n in names}}
            )
        out = schema.outbox
        for names, params in groups.items():
            stmt = (
                update(out)
                .where(out.c.sequence == bindparam("b_sequence"))
                .values({n: bindparam(f"b_{n}") for n in names})
            )
            conn.execute(stmt, params)


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
