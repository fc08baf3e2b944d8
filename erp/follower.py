"""The follower: reads the stream's final items in chain order and feeds the projection.

Items are read a page at a time with `liststreamitems STREAM true COUNT START` from the
projection's cursor (the stream position after the last applied item). A page stops at the
first item that is not final: later items never overtake earlier ones, and a
reorganisation below finality never reaches the projection. The block height of each item
comes from `getblock` on its `blockhash` (one call per block, batched); the position in
the block is the item's `blockindex` and `vout`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy.exc import DBAPIError

from erp.errors import ErpError
from erp.projection import Item, Projection
from triggers.nodes import NodeClient, batch_call, finaldepth, is_final, item_bytes, rpc_errors

__all__ = ["Follower"]

log = logging.getLogger(__name__)


class Follower:
    """Keeps one projection current with its node."""

    def __init__(self, projection: Projection, client: NodeClient, batch_size: int = 500) -> None:
        self.projection = projection
        self.client = client
        self.batch_size = batch_size
        self._subscribed = False
        self._heights: dict[str, int] = {}

    def _subscribe(self) -> None:
        if not self._subscribed:
            self.client.call("subscribe", self.projection.stream)
            self._subscribed = True

    def follow_once(self) -> int:
        """Apply every item that is final now; the number of items applied or rejected."""
        self._subscribe()
        depth = finaldepth(self.client)
        position, _ = self.projection.cursor()
        done = 0
        while True:
            page = self.client.call("liststreamitems", self.projection.stream, True,
                                    self.batch_size, position)
            if not isinstance(page, list) or not page:
                return done
            ready = []
            for entry in page:
                if not isinstance(entry, dict) or not is_final(entry, depth):
                    break
                ready.append(entry)
            if ready:
                items = self._items(ready, position)
                results = self.projection.apply(items)
                done += sum(1 for status, _ in results if status != "skipped")
                position += len(ready)
            if len(ready) < len(page) or len(page) < self.batch_size:
                return done

    def _items(self, entries: list[dict[str, Any]], position: int) -> list[Item]:
        unknown = sorted({e.get("blockhash") for e in entries} - set(self._heights) - {None})
        for blockhash, block in zip(unknown, batch_call(
                self.client, [("getblock", [h]) for h in unknown]), strict=True):
            if isinstance(block, BaseException):
                raise block
            self._heights[blockhash] = int(block["height"])
        items = []
        for offset, e in enumerate(entries):
            if e.get("blockhash") not in self._heights:
                raise ErpError(f"final item {e.get('txid')} has no block hash")
            try:
                data: bytes | None = item_bytes(self.client, e)
            except ValueError:
                data = None
            items.append(Item(
                position=position + offset, txid=str(e["txid"]), vout=int(e.get("vout", 0)),
                height=self._heights[e["blockhash"]], blockindex=int(e.get("blockindex", 0)),
                blocktime=int(e.get("blocktime", 0)),
                publishers=tuple(str(p) for p in e.get("publishers") or ()), data=data,
            ))
        if len(self._heights) > 10_000:
            self._heights.clear()
        return items

    def follow_forever(self, stop: threading.Event, interval: float = 0.2) -> None:
        """Follow until `stop` is set; a node or database that is down is waited for."""
        errors = rpc_errors() + (DBAPIError, ErpError)
        while not stop.is_set():
            try:
                busy = self.follow_once()
            except errors as exc:  # outermost loop: keep going after a failed pass
                log.warning("erp follower pass failed: %s", exc)
                busy = 0
            if not busy:
                stop.wait(interval)
