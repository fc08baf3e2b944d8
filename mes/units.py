"""Production units on the chain (spec 3.2): outbox after the MES's commit, sender off-thread.

The MES saves the unit, commits, then calls `UnitUpdater.update_production_unit` (or the PATCH
endpoint does both in one transaction). That only writes a row to ``mes_unit_outbox``: the
request thread never waits for Kafka. A `UnitSender` (an asyncio task in ``chainmill mes
serve``, or `SenderThread` inside a MES process) takes the rows in order and for each:

1. ensures the ``ProductionUnit`` record type, once per process ("already exists" is success);
2. ensures the unit's reporter: asks the bridge for one (record, agent, authorisation) unless
   the token store holds it, and stores what the bridge returns;
3. sends ``update_properties`` signed as that reporter with only the values that differ from
   the ones last confirmed (``mes_unit_sent``); nothing when neither changed.

A row is marked sent only after the bridge confirmed it, so nothing committed is lost when
the broker or the bridge is away: the row waits and is sent when they are back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from config.errors import ChainmillError
from mes import schema
from mes.bridge import messages as m
from mes.bridge.client import BridgeError, new_interaction_id
from mes.bridge.sealing import SealError, open_reporter_token
from mes.lease import SchedulerLock
from mes.tokens import TokenError, TokenStore

__all__ = ["RECORD_TYPE", "PROPERTIES", "FIELDS", "MAX_ATTEMPTS", "UnitError", "Bridge",
           "changed_properties", "UnitUpdater", "UnitSender", "SenderThread", "install",
           "update_production_unit"]

log = logging.getLogger(__name__)

RECORD_TYPE = "ProductionUnit"
PROPERTIES: tuple[dict[str, Any], ...] = (
    {"name": "Status", "data_type": "STRING", "required": False},
    {"name": "ProcessName", "data_type": "STRING", "required": False},
)
FIELDS = (("status", "Status"), ("process_name", "ProcessName"))
"""(column, chain property) pairs."""
MAX_ATTEMPTS = 5
"""Error answers for one change before it is set aside (kept with its error, not resent)."""
_MAX_VALUE = 200
_TXID_IN_MESSAGE = re.compile(r"\(txid ([0-9a-f]{64,128})\)")


class UnitError(ChainmillError):
    """A unit change the MES side refuses (unknown unit, value too long, nothing given)."""


class Bridge(Protocol):
    """What the sender needs of a `mes.bridge.client.BridgeClient`."""

    def request(self, topic: str, auth: str, body: Mapping[str, Any] | None = None,
                **kwargs: Any) -> Awaitable[m.Response]: ...


def _now_ms() -> int:
    return int(time.time() * 1000)


def changed_properties(sent: Mapping[str, str | None] | None, status: str | None,
                       process_name: str | None) -> list[dict[str, Any]]:
    """The ``update_properties`` entries for the values that differ from ``sent``.

    ``None`` means "not part of this change" (a partial PATCH), never "clear the value".
    """
    new = {"status": status, "process_name": process_name}
    out = []
    for column, prop in FIELDS:
        value = new[column]
        if value is not None and (sent is None or sent.get(column) != value):
            out.append({"name": prop, "data_type": "STRING", "value": value})
    return out


def _check(value: object, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > _MAX_VALUE:
        raise UnitError(f"{what} must be a string of at most {_MAX_VALUE} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise UnitError(f"{what} must not contain control characters")
    return value


class UnitUpdater:
    """The MES's entry point: queue a committed unit change for the chain."""

    def __init__(self, engine: Engine, notify: Callable[[], None] | None = None,
                 clock: Callable[[], int] = _now_ms) -> None:
        self.engine = engine
        self.notify = notify
        self.clock = clock

    def enqueue(self, conn: Connection, unit_id: int, status: str | None,
                process_name: str | None) -> int:
        """Insert the change in the caller's transaction; the outbox row id."""
        if isinstance(unit_id, bool) or not isinstance(unit_id, int):
            raise UnitError("unit id must be an integer")
        status = _check(status, "status")
        process_name = _check(process_name, "process name")
        if status is None and process_name is None:
            raise UnitError("a change needs a status or a process name")
        known = conn.execute(select(schema.production_unit.c.unit_id)
                             .where(schema.production_unit.c.unit_id == unit_id)).first()
        if known is None:
            raise UnitError(f"no production unit {unit_id}")
        result = conn.execute(schema.unit_outbox.insert().values(
            unit_id=unit_id, status=status, process_name=process_name, created_at=self.clock()))
        return int(result.inserted_primary_key[0])

    def update_production_unit(self, status: str | None, process_name: str | None,
                               unit_id: int) -> int:
        """Called by the MES after its own commit (spec 3.2): queue and return at once."""
        with self.engine.begin() as conn:
            row_id = self.enqueue(conn, unit_id, status, process_name)
        if self.notify is not None:
            self.notify()
        return row_id


class UnitSender:
    """Send queued unit changes through the bridge, in order, each once confirmed."""

    def __init__(self, engine: Engine, tokens: TokenStore, bridge: Bridge,
                 clock: Callable[[], int] = _now_ms, *, lock: SchedulerLock | None = None) -> None:
        """``lock`` (name ``units``): held while sending, so two MES processes on one
        database never send the same change twice."""
        self.engine = engine
        self.tokens = tokens
        self.bridge = bridge
        self.clock = clock
        self.lock = lock
        self._type_ensured = False
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Make `run` look at the outbox now (call from the sender's loop)."""
        self._wake.set()

    def _master(self) -> str:
        master = self.tokens.master()
        if master is None or not master.token:
            raise BridgeError("no Master token in the token store (chainmill mes token master)")
        return master.token

    async def _ensure_type(self) -> None:
        if self._type_ensured:
            return
        body = {"action": "ensure_record_type", "name": RECORD_TYPE, "properties": list(PROPERTIES)}
        response = await self.bridge.request(m.TOPIC_RTY, self._master(), body)
        if response.kind == "error" and "already exists" not in (response.error or ""):
            raise BridgeError(f"record type {RECORD_TYPE}: {response.error}")
        self._type_ensured = True

    async def _reporter(self, unit_id: int, code: str) -> str:
        stored = self.tokens.reporter(unit_id)
        if stored is not None and stored.token:
            return stored.token
        body = {"action": "ensure_reporter", "record_id": code, "record_type": RECORD_TYPE,
                "properties": [prop for _, prop in FIELDS]}
        master = self._master()
        response = await self.bridge.request(m.TOPIC_REC, master, body)
        data = response.data
        if response.kind != "data" or not isinstance(data, dict) or not all(
                isinstance(data.get(k), str) and data.get(k) for k in ("token", "publicKey", "record_id")):
            raise BridgeError(f"ensure_reporter for {code}: "
                              f"{response.error if response.kind == 'error' else 'unexpected answer'}")
        try:  # sealed for our Master token: BLK_Res is read by every MES client
            token = open_reporter_token(master, data["token"])
        except SealError as exc:
            raise BridgeError(f"ensure_reporter for {code}: {exc}") from None
        self.tokens.add_reporter(unit_id, token, data["publicKey"], data["record_id"])
        return token

    def _next(self) -> Mapping[str, Any] | None:
        o, u = schema.unit_outbox, schema.production_unit
        query = (select(o, u.c.code).join(u, u.c.unit_id == o.c.unit_id)
                 .where(o.c.sent_at.is_(None)).order_by(o.c.id).limit(1))
        with self.engine.connect() as conn:
            return conn.execute(query).mappings().first()

    def _draw_interaction(self, outbox_id: int) -> int:
        """The change's interaction id, stored before its first send: a resend after a
        timeout (or a restart) reuses it, so the bridge updates the unit once."""
        iid = new_interaction_id()
        with self.engine.begin() as conn:
            conn.execute(update(schema.unit_outbox).where(schema.unit_outbox.c.id == outbox_id)
                         .values(interaction_id=iid))
        return iid

    def _sent(self, unit_id: int) -> Mapping[str, Any] | None:
        with self.engine.connect() as conn:
            return conn.execute(select(schema.unit_sent)
                                .where(schema.unit_sent.c.unit_id == unit_id)).mappings().first()

    def _finish(self, row: Mapping[str, Any], sent: Mapping[str, Any] | None,
                props: list[dict[str, Any]], txid: str | None) -> None:
        values = {"status": sent["status"] if sent else None,
                  "process_name": sent["process_name"] if sent else None,
                  "txid": sent["txid"] if sent else None}
        for column, prop in FIELDS:
            if any(p["name"] == prop for p in props):
                values[column] = row[column]
        if txid is not None:
            values["txid"] = txid
        with self.engine.begin() as conn:
            if sent is None:
                conn.execute(schema.unit_sent.insert().values(unit_id=row["unit_id"], **values))
            else:
                conn.execute(update(schema.unit_sent)
                             .where(schema.unit_sent.c.unit_id == row["unit_id"]).values(**values))
            conn.execute(update(schema.unit_outbox).where(schema.unit_outbox.c.id == row["id"])
                         .values(sent_at=self.clock(), error=None))

    def _failed(self, row: Mapping[str, Any], error: str) -> None:
        attempts = row["attempts"] + 1
        values: dict[str, Any] = {"attempts": attempts, "error": error[:2000]}
        if attempts >= MAX_ATTEMPTS:
            values["sent_at"] = -self.clock()  # set aside: negative = given up, kept for a human
            log.error("unit %d change %d set aside after %d refusals: %s", row["unit_id"],
                      row["id"], attempts, error)
        with self.engine.begin() as conn:
            conn.execute(update(schema.unit_outbox).where(schema.unit_outbox.c.id == row["id"])
                         .values(**values))

    async def send_one(self) -> bool:
        """Send the oldest queued change; False when the outbox is empty.

        BridgeError (broker or bridge away, no answer) propagates and leaves the row queued.
        """
        row = await asyncio.to_thread(self._next)
        if row is None:
            return False
        sent = await asyncio.to_thread(self._sent, row["unit_id"])
        props = changed_properties(sent, row["status"], row["process_name"])
        if not props:
            log.info("unit %s: nothing changed, nothing sent", row["code"])
            await asyncio.to_thread(self._finish, row, sent, props, None)
            return True
        await self._ensure_type()
        token = await self._reporter(row["unit_id"], row["code"])
        body = {"action": "update_properties", "record_id": row["code"], "properties": props}
        iid = row["interaction_id"] or await asyncio.to_thread(self._draw_interaction, row["id"])
        response = await self.bridge.request(m.TOPIC_REC, token, body, interaction_id=iid)
        if response.kind == "error":
            log.warning("unit %s: bridge refused the update: %s", row["code"], response.error)
            await asyncio.to_thread(self._failed, row, response.error or "error")
            return True
        txid = response.data.get("txid") if isinstance(response.data, dict) else None
        if txid is None and response.kind == "message":
            found = _TXID_IN_MESSAGE.search(response.message or "")
            txid = found.group(1) if found else None
        log.info("unit %s: sent %s (txid %s)", row["code"],
                 ", ".join(f"{p['name']}={p['value']!r}" for p in props), txid)
        await asyncio.to_thread(self._finish, row, sent, props, txid if isinstance(txid, str) else None)
        return True

    async def send_pending(self) -> int:
        """Send every queued change; the number handled (0 when another process holds the
        sender's lease: it sends them)."""
        lock = self.lock
        if lock is not None:
            now = dt.datetime.fromtimestamp(self.clock() / 1000, dt.UTC)
            if not await asyncio.to_thread(lock.acquire, now):
                log.debug("unit sender: another process holds the lease")
                return 0
        count = 0
        try:
            while await self.send_one():
                count += 1
        finally:
            if lock is not None:
                await asyncio.to_thread(lock.release)
        return count

    async def run(self, poll: float = 2.0, retry: float = 1.0) -> None:
        """Forever: send what is queued, then wait for `wake` or ``poll`` seconds."""
        while True:
            try:
                await self.send_pending()
            except BridgeError as exc:  # the outermost loop: the row stays queued
                log.warning("unit changes wait for the bridge: %s", exc)
                await asyncio.sleep(retry)
                continue
            except (SQLAlchemyError, TokenError) as exc:  # database away, key wrong: retry
                log.error("unit sender: %s", exc)
                await asyncio.sleep(retry)
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), poll)
            except TimeoutError:
                pass


class SenderThread:
    """A `UnitSender` on its own event loop in a daemon thread, for a MES process that is not
    asyncio (a Django app): `UnitUpdater(notify=thread.wake)` hands changes to it."""

    def __init__(self, make_sender: Callable[[], Awaitable[tuple[UnitSender, Any]]]) -> None:
        """``make_sender`` (run on the thread's loop) returns the sender and an async context
        (the started bridge client) to close on `stop`."""
        self._make = make_sender
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sender: UnitSender | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="mes unit sender", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()

    def wake(self) -> None:
        if self._loop is not None and self._sender is not None:
            self._loop.call_soon_threadsafe(self._sender.wake)

    def stop(self) -> None:
        if self._loop is not None:
            for task in asyncio.all_tasks(self._loop):
                self._loop.call_soon_threadsafe(task.cancel)
        self._thread.join()

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            sender, context = await self._make()
            self._sender = sender
            self._ready.set()
            try:
                await sender.run()
            finally:
                await context.__aexit__(None, None, None)

        try:
            asyncio.run(main())
        except asyncio.CancelledError:
            pass
        finally:
            self._ready.set()


_installed: list[UnitUpdater] = []


def install(updater: UnitUpdater) -> None:
    """Make ``updater`` the one `mes.update_production_unit` uses in this MES process (the
    reference's call takes only the three values, so the process configures it once at start)."""
    _installed[:] = [updater]


def update_production_unit(status: str | None, process_name: str | None, unit_id: int) -> int:
    """The reference call (spec 3.2): queue the committed change of ``unit_id``; the outbox id."""
    if not _installed:
        raise UnitError("no unit updater installed (mes.units.install(UnitUpdater(engine)))")
    return _installed[0].update_production_unit(status, process_name, unit_id)
