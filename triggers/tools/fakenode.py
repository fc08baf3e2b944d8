"""An in-memory stand-in for a node's JSON-RPC API, for unit tests of the relay and receiver.

Only what the trigger subsystem calls, with MultiChain's shapes: streams of items (chain
order, then the mempool), transactions of several items, confirmations, a mempool that can be
lost, and JSON-RPC batches. `mine()` confirms the mempool as one block; `fail` makes chosen
calls raise like an unreachable node. Every call is logged in `calls` (method names).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Sequence
from typing import Any

from node.client import RpcConnectionError, RpcError

__all__ = ["FakeNode"]

NOT_FOUND = -710
NOT_ALLOWED = -701


class FakeNode:
    """One node of a chain, with the streams `rfq`, `pubkeys` and `access`."""

    def __init__(self, addresses: Sequence[str] = ("1SenderAddress",), finaldepth: int = 1,
                 streams: Sequence[str] = ("rfq",)) -> None:
        self.addresses = list(addresses)
        self.finaldepth = finaldepth
        self.items: dict[str, list[dict[str, Any]]] = {
            s: [] for s in (*streams, "pubkeys", "access")
        }
        self.height = 0
        self.mempool: list[str] = []
        self.txs: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self.calls: list[str] = []
        self.http_requests = 0
        self.fail: Callable[[str, tuple[Any, ...]], bool] | None = None
        self._ids = itertools.count(1)

    # -- transport ----------------------------------------------------------------------------

    def call(self, method: str, *params: Any) -> Any:
        self.http_requests += 1
        return self._dispatch(method, params)

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        self.http_requests += 1
        out: list[Any] = []
        for method, params in calls:
            try:
                out.append(self._dispatch(method, tuple(params)))
            except RpcError as exc:
                out.append(exc)
        return out

    def _dispatch(self, method: str, params: tuple[Any, ...]) -> Any:
        self.calls.append(method)
        if self.fail is not None and self.fail(method, params):
            raise RpcConnectionError("connection refused (fake)", "127.0.0.1", 1)
        handler = getattr(self, f"rpc_{method}", None)
        if handler is None:
            raise RpcError(-32601, f"Method not found: {method}")
        return handler(*params)

    # -- chain ---------------------------------------------------------------------------------

    def mine(self) -> None:
        """Confirm every pooled transaction in one new block."""
        self.height += 1
        for position, txid in enumerate(self.mempool):
            for _, item in self.txs[txid]:
                item["height"] = self.height
                item["blockindex"] = position
        self.mempool = []

    def lose_mempool(self) -> None:
        """A restart without the mempool: unconfirmed transactions vanish."""
        for txid in self.mempool:
            for stream, item in self.txs.pop(txid):
                self.items[stream].remove(item)
        self.mempool = []

    def add_tx(self, publisher: str, items: list[tuple[str, list[str], bytes]]) -> str:
        """A transaction of items (stream, keys, data) from `publisher` into the mempool."""
        txid = hashlib.sha256(f"tx{next(self._ids)}".encode()).hexdigest()
        entries = []
        for vout, (stream, keys, data) in enumerate(items):
            if stream not in self.items:
                raise RpcError(-708, f"Stream with this name not found: {stream}")
            item = {"txid": txid, "vout": vout, "keys": list(keys), "publishers": [publisher],
                    "data": data.hex(), "height": None, "blockindex": None}
            self.items[stream].append(item)
            entries.append((stream, item))
        self.txs[txid] = entries
        self.mempool.append(txid)
        return txid

    def _ordered(self, stream: str) -> list[dict[str, Any]]:
        items = self.items[stream]
        confirmed = sorted((i for i in items if i["height"] is not None),
                           key=lambda i: (i["height"], i["blockindex"], i["vout"]))
        return confirmed + [i for i in items if i["height"] is None]

    def view(self, item: dict[str, Any]) -> dict[str, Any]:
        confirmations = 0 if item["height"] is None else self.height - item["height"] + 1
        out = {"txid": item["txid"], "vout": item["vout"], "keys": list(item["keys"]),
               "publishers": list(item["publishers"]), "data": item["data"],
               "confirmations": confirmations, "blockindex": item["blockindex"],
               "final": confirmations >= self.finaldepth}
        if item["height"] is not None:
            out["blockhash"] = self.block_hash(item["height"])
        return out

    @staticmethod
    def block_hash(height: int) -> str:
        """The (made-up) hash of the block at `height`."""
        return hashlib.sha256(f"block{height}".encode()).hexdigest()

    # -- methods -------------------------------------------------------------------------------

    def rpc_getinfo(self) -> dict[str, Any]:
        return {"blocks": self.height, "finaldepth": self.finaldepth}

    def rpc_getblock(self, block: Any, verbose: Any = 1) -> dict[str, Any]:
        for height in range(1, self.height + 1):
            if block in (height, self.block_hash(height)):
                return {"hash": self.block_hash(height), "height": height,
                        "confirmations": self.height - height + 1}
        raise RpcError(-5, "Block not found")

    def rpc_getaddresses(self) -> list[str]:
        return list(self.addresses)

    def rpc_getblockchainparams(self) -> dict[str, Any]:
        return {"max-std-op-returns-count": 32}

    def rpc_subscribe(self, stream: Any, *_: Any) -> None:
        return None

    def rpc_getrawmempool(self) -> list[str]:
        return list(self.mempool)

    def _stream(self, stream: str) -> str:
        if stream not in self.items:
            raise RpcError(-708, f"Stream with this name not found: {stream}")
        return stream

    def rpc_publishfrom(self, address: str, stream: str, keys: Any, data: str) -> str:
        keys = [keys] if isinstance(keys, str) else list(keys)
        return self.add_tx(address, [(self._stream(stream), keys, bytes.fromhex(data))])

    def rpc_publishmultifrom(self, address: str, stream: str, items: list[dict[str, Any]],
                             *_: Any) -> str:
        out = []
        for it in items:
            keys = it.get("keys") or ([it["key"]] if "key" in it else [])
            out.append((self._stream(it.get("for", stream)), list(keys), bytes.fromhex(it["data"])))
        return self.add_tx(address, out)

    def rpc_getstreamitem(self, stream: str, txid: str, verbose: bool = False) -> dict[str, Any]:
        found = [i for i in self._ordered(self._stream(stream)) if i["txid"] == txid]
        if len(found) > 1:  # MultiChain 2.3: -701 for a transaction with several items
            raise RpcError(NOT_ALLOWED, "This transaction has more than one item in this stream")
        if found:
            return self.view(found[0])
        raise RpcError(NOT_FOUND, "Item with this txid not found in this stream")

    def rpc_liststreamtxitems(self, stream: str, txids: Any, verbose: bool = False
                              ) -> list[dict[str, Any]]:
        wanted = [txids] if isinstance(txids, str) else list(txids)
        return [self.view(i) for i in self._ordered(self._stream(stream)) if i["txid"] in wanted]

    def rpc_liststreamitems(self, stream: str, verbose: bool = False, count: int = 10,
                            start: int | None = None) -> list[dict[str, Any]]:
        items = self._ordered(self._stream(stream))
        if start is None:
            start = max(0, len(items) - count)
        return [self.view(i) for i in items[start:start + count]]

    def rpc_liststreamkeyitems(self, stream: str, key: str, verbose: bool = False,
                               count: int = 10, start: int | None = None) -> list[dict[str, Any]]:
        items = [i for i in self._ordered(self._stream(stream)) if key in i["keys"]]
        if start is None:
            start = max(0, len(items) - count)
        return [self.view(i) for i in items[start:start + count]]

    # -- inspection ----------------------------------------------------------------------------

    def keys_on(self, stream: str) -> list[str]:
        """Every key of every item of `stream`, in chain order (duplicates kept)."""
        return [k for i in self._ordered(stream) for k in i["keys"]]
