"""The forwarder: collected CNC data -> outbox -> private items on the system's stream.

Capture and publication are separate steps so each is exactly once:

- `capture` reads `cnc_data` past the system's cursor, turns rows into observations, decides
  each one's readers from the active shares (owner + matching partners), and in ONE
  transaction inserts the outbox rows, advances the cursor and saves the downsampling state.
  An observation no partner may read is not published at all: it is already the owner's, and
  publishing it would leak its existence.
- `publish` encrypts each PENDING observation with a fresh password (triggers/crypto.py),
  wraps it for every reader's RSA key from `pubkeys`, stores envelope and wrapped keys, marks
  the row PREPARED, publishes the item under the observation id, records the txid (SENT),
  then the access entries, then PUBLISHED. A PREPARED row found at start is looked up on the
  stream first, so a crash between publishing and recording never publishes twice.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine

from mes.collector.store import cnc_data
from mes.sharing.filters import parse_filter
from mes.sharing.observations import Downsampler, Share, SharingError, observations_of, readers_of
from mes.sharing.schema import (
    PENDING,
    PREPARED,
    PUBLISHED,
    SENT,
    cursors,
    downsample,
    outbox,
    shares,
    systems,
)
from triggers import crypto
from triggers.errors import DecryptionFailed
from triggers.nodes import ACCESS, NodeClient, batch_call, item_bytes, public_key_pem

__all__ = ["Forwarder", "load_shares"]

log = logging.getLogger(__name__)


def load_shares(conn: Connection, system: str) -> list[Share]:
    """The active shares of `system`, filters parsed."""
    rows = conn.execute(select(shares).where(shares.c.system == system,
                                             shares.c.active.is_(True))).all()
    return [Share(r.share_id, r.system, r.partner, parse_filter(r.filter), r.every_seconds)
            for r in rows]


class Forwarder:
    """Moves one MES database's shared observations onto the chain through `client`."""

    def __init__(self, engine: Engine, client: NodeClient, *,
                 clock: Callable[[], float] = time.time, batch: int = 50) -> None:
        self.engine = engine
        self.client = client
        self.clock = clock
        self.batch = batch
        self._keys: dict[str, Any] = {}
        self._owners: dict[str, str] = {}

    # -- capture -------------------------------------------------------------------------

    def capture(self, limit: int = 1000) -> int:
        """Capture new `cnc_data` rows of every system; the number of outbox rows added."""
        with self.engine.connect() as conn:
            names = [r.name for r in conn.execute(select(systems))]
        return sum(self._capture_system(name, limit) for name in names)

    def _capture_system(self, system: str, limit: int) -> int:
        with self.engine.begin() as conn:
            owner = conn.execute(select(systems.c.owner_address)
                                 .where(systems.c.name == system)).scalar_one()
            last = conn.execute(select(cursors.c.last_cnc_data_id)
                                .where(cursors.c.system == system)).scalar()
            rows = conn.execute(select(cnc_data).where(cnc_data.c.id > (last or 0))
                                .order_by(cnc_data.c.id).limit(limit)).all()
            if not rows:
                return 0
            active = load_shares(conn, system)
            state = {(r.share_id, r.datastream): r.last_time
                     for r in conn.execute(select(downsample).where(
                         downsample.c.share_id.in_([s.share_id for s in active])))}
            sampler = Downsampler(state)
            now = int(self.clock())
            new = []
            for row in rows:
                for obs in observations_of(system, row._mapping, now):
                    readers = readers_of(obs, active, sampler, [owner])
                    if len(readers) > 1:
                        new.append((obs, readers))
            known = set()
            ids = [o["@iot.id"] for o, _ in new]
            for start in range(0, len(ids), 500):
                known |= {r.obs_id for r in conn.execute(
                    select(outbox.c.obs_id).where(outbox.c.obs_id.in_(ids[start:start + 500])))}
            values = [{"obs_id": o["@iot.id"], "system": system, "status": PENDING,
                       "observation": json.dumps(o, sort_keys=True, separators=(",", ":")),
                       "readers": json.dumps(r)} for o, r in new if o["@iot.id"] not in known]
            if values:
                conn.execute(outbox.insert(), values)
            if last is None:
                conn.execute(cursors.insert().values(system=system, last_cnc_data_id=rows[-1].id))
            else:
                conn.execute(update(cursors).where(cursors.c.system == system)
                             .values(last_cnc_data_id=rows[-1].id))
            for (share_id, datastream), t in sampler.changed.items():
                if (share_id, datastream) in state:
                    conn.execute(update(downsample).where(
                        downsample.c.share_id == share_id,
                        downsample.c.datastream == datastream).values(last_time=t))
                else:
                    conn.execute(downsample.insert().values(
                        share_id=share_id, datastream=datastream, last_time=t))
            log.info("%s: captured %d observations from %d rows", system, len(values), len(rows))
            return len(values)

    # -- publish -------------------------------------------------------------------------

    def _public_key(self, address: str) -> Any:
        if address not in self._keys:
            pem = public_key_pem(self.client, address)
            if pem is None:
                raise SharingError(f"no public key on pubkeys for {address}")
            self._keys[address] = crypto.load_public_key(pem)
        return self._keys[address]

    def _owner(self, system: str) -> str:
        if system not in self._owners:
            with self.engine.connect() as conn:
                self._owners[system] = conn.execute(
                    select(systems.c.owner_address).where(systems.c.name == system)).scalar_one()
        return self._owners[system]

    def publish(self, limit: int | None = None) -> int:
        """Publish outbox rows not yet PUBLISHED (oldest first); the number finished."""
        done = 0
        while limit is None or done < limit:
            size = self.batch if limit is None else min(self.batch, limit - done)
            with self.engine.connect() as conn:
                rows = conn.execute(select(outbox).where(outbox.c.status != PUBLISHED)
                                    .order_by(outbox.c.id).limit(size)).all()
            if not rows:
                break
            done += self._publish_rows(rows)
        return done

    def _set_many(self, changes: Sequence[tuple[int, dict[str, Any]]]) -> None:
        """Record several rows' progress in one transaction (one commit per step of a batch)."""
        if not changes:
            return
        with self.engine.begin() as conn:
            for row_id, values in changes:
                conn.execute(update(outbox).where(outbox.c.id == row_id).values(**values))

    def _prepare(self, row: Any) -> dict[str, Any]:
        readers = json.loads(row.readers)
        password = crypto.new_password()
        envelope = crypto.seal(row.observation.encode("utf-8"), password)
        wrapped = [crypto.access_entry("", address, self._public_key(address), password)
                   for address in readers]
        return {"status": PREPARED, "envelope": envelope.decode("ascii"),
                "access": json.dumps(wrapped)}

    def _find(self, stream: str, owner: str, obs_id: str) -> str | None:
        for item in self.client.call("liststreamkeyitems", stream, obs_id, False, 10) or []:
            if owner in (item.get("publishers") or []):
                return str(item["txid"])
        return None

    def _publish_rows(self, rows: Sequence[Any]) -> int:
        """One batch through PREPARED -> SENT -> PUBLISHED, one commit and one JSON-RPC batch
        per step. The first refused call ends the batch after what succeeded is recorded."""
        state = {row.id: {c: getattr(row, c) for c in ("status", "envelope", "access", "txid")}
                 for row in rows}
        recovering = {row.id for row in rows if row.status in (PREPARED, SENT)}

        found = []
        for row in rows:
            values = state[row.id]
            if values["status"] == PREPARED and values["txid"] is None:
                txid = self._find(row.system, self._owner(row.system), row.obs_id)
                if txid is not None:
                    log.info("observation %s was published before a restart: %s",
                             row.obs_id, txid)
                    values.update(status=SENT, txid=txid)
                    found.append((row.id, {"status": SENT, "txid": txid}))
        self._set_many(found)

        prepared = []
        for row in rows:
            if state[row.id]["status"] == PENDING:
                state[row.id].update(self._prepare(row))
                prepared.append((row.id, dict(state[row.id])))
        self._set_many(prepared)  # before publishing: a crash from here on is looked up

        to_send = [r for r in rows if state[r.id]["status"] == PREPARED]
        results = batch_call(self.client, [
            ("publishfrom", [self._owner(r.system), r.system, r.obs_id,
                             state[r.id]["envelope"].encode("ascii").hex()]) for r in to_send])
        sent, error = [], None
        for row, result in zip(to_send, results, strict=True):
            if isinstance(result, BaseException):
                error = error or result
                break
            state[row.id].update(status=SENT, txid=str(result))
            sent.append((row.id, {"status": SENT, "txid": str(result)}))
        self._set_many(sent)

        ready = [r for r in rows if state[r.id]["status"] == SENT]
        calls, owners = [], []
        for row in ready:
            owner = self._owner(row.system)
            items = self._access_items(owner, state[row.id]["txid"],
                                       json.loads(state[row.id]["access"]),
                                       row.id in recovering)
            if items:
                calls.append(("publishmultifrom", [owner, ACCESS, items]))
                owners.append(row.id)
        results = batch_call(self.client, calls)
        failed = set()
        for row_id, result in zip(owners, results, strict=True):
            if isinstance(result, BaseException):
                error = error or result
                failed.add(row_id)
        done = [(r.id, {"status": PUBLISHED}) for r in ready if r.id not in failed]
        self._set_many(done)
        if error is not None:
            raise error
        return len(done)

    def _access_items(self, owner: str, txid: str, entries: list[dict[str, Any]],
                      recovering: bool) -> list[dict[str, Any]]:
        """The access items still to publish for `txid` (after a crash some may be there)."""
        present = set()
        found = self.client.call("liststreamkeyitems", ACCESS, txid, False, 1000) \
            if recovering else []
        for item in found or []:
            if owner in (item.get("publishers") or []):
                try:
                    present.add(crypto.parse_access_entry(item_bytes(self.client, item))["address"])
                except (ValueError, DecryptionFailed):
                    continue
        return [{"key": txid,
                 "data": json.dumps({**entry, "txid": txid}, separators=(",", ":")).encode().hex()}
                for entry in entries if entry["address"] not in present]

    def run_once(self) -> tuple[int, int]:
        """Capture then publish everything pending; (captured, published)."""
        return self.capture(), self.publish()
