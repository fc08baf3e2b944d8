"""The narrow view of a node the trigger subsystem uses: JSON-RPC calls through node.client.

Nothing here knows node internals; any MultiChain-compatible node will do. Also the helpers
that read stream items the same way on every node: item data in all its published forms
(hex, `{"text"}`, `{"json"}`, or a large-data reference fetched with `gettxoutdata`),
finality, and public keys on the `pubkeys` stream.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from triggers import crypto
from triggers.errors import ConfigurationInvalid

__all__ = [
    "NodeClient",
    "NOT_IN_STREAM",
    "batch_call",
    "rpc_errors",
    "rpc_error_code",
    "client_for",
    "item_bytes",
    "finaldepth",
    "is_final",
    "public_key_pem",
    "PUBKEYS",
    "ACCESS",
]

log = logging.getLogger(__name__)

PUBKEYS = "pubkeys"
ACCESS = "access"
NOT_IN_STREAM = -710
"""getstreamitem/liststreamtxitems: no item of this transaction in the stream (on chain or in
the mempool)."""


class NodeClient(Protocol):
    """What the triggers need of `node.client.RpcClient`."""

    def call(self, method: str, *params: Any) -> Any: ...


def batch_call(client: NodeClient, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
    """Several calls in one JSON-RPC batch (one HTTP request) when the client can, else one
    by one. Results in order; a call the node refused is its RpcError in the list, while a
    node that cannot be reached raises."""
    if not calls:
        return []
    batch = getattr(client, "batch", None)
    if callable(batch):
        return list(batch(calls))
    results: list[Any] = []
    for method, params in calls:
        try:
            results.append(client.call(method, *params))
        except rpc_errors() as exc:
            if rpc_error_code(exc) is None:
                raise
            results.append(exc)
    return results


def rpc_errors() -> tuple[type[BaseException], ...]:
    """Exception types meaning "the node said no or could not be reached" (retryable)."""
    try:
        from node import client as node_client
    except ImportError:  # the client module is not there yet: only OS-level failures
        return (OSError,)
    names = ("RpcError", "RpcAuthError", "RpcConnectionError")
    found = tuple(getattr(node_client, n) for n in names if hasattr(node_client, n))
    return found + (OSError,)


def rpc_error_code(exc: BaseException) -> int | None:
    """The JSON-RPC error code of an RpcError, else None."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) else None


def client_for(chain_id: str, datadir: str | None = None, timeout: float = 60) -> NodeClient:
    """A JSON-RPC client for the chain's node, credentials read from its runtime config."""
    try:
        from node.client import RpcClient
    except ImportError as exc:
        raise ConfigurationInvalid(f"node client unavailable: {exc}") from None
    return RpcClient.from_datadir(chain_id, datadir)


def item_bytes(client: NodeClient, item: dict[str, Any]) -> bytes:
    """The raw bytes of a stream item's data, whatever form the node returned it in."""
    return _data_bytes(client, item.get("data"))


def _data_bytes(client: NodeClient, data: Any) -> bytes:
    if data is None:
        return b""
    if isinstance(data, str):
        try:
            return bytes.fromhex(data)
        except ValueError:
            return data.encode("utf-8")
    if isinstance(data, dict):
        if "text" in data:
            return (data["text"] or "").encode("utf-8")
        if "json" in data:
            return json.dumps(data["json"], separators=(",", ":")).encode("utf-8")
        if "txid" in data and "vout" in data:
            return _data_bytes(client, client.call("gettxoutdata", data["txid"], data["vout"]))
    raise ValueError(f"unrecognised item data of type {type(data).__name__}")


def finaldepth(client: NodeClient) -> int:
    """The node's finality depth (chainmill extension of getinfo); 1 when not reported."""
    info = client.call("getinfo")
    depth = info.get("finaldepth") if isinstance(info, dict) else None
    return int(depth) if isinstance(depth, int) and depth > 0 else 1


def is_final(item: dict[str, Any], depth: int) -> bool:
    """An item is final when the node says so, or has at least `depth` confirmations."""
    if "final" in item:
        return bool(item["final"])
    return int(item.get("confirmations") or 0) >= depth


def public_key_pem(client: NodeClient, address: str) -> bytes | None:
    """The newest `pubkeys` item under `address` published by that same address, or None."""
    items = client.call("liststreamkeyitems", PUBKEYS, address, False, 1000)
    for item in reversed(items or []):
        if address in (item.get("publishers") or []):
            try:
                return item_bytes(client, item)
            except ValueError:
                log.warning("unreadable public key item %s for %s", item.get("txid"), address)
    return None


def private_keys(paths: list[Path]) -> dict[str, Any]:
    """Fingerprint -> private key for every readable key file (old keys kept after rotation)."""
    keys = {}
    for path in paths:
        key = crypto.load_private_key(path)
        keys[crypto.fingerprint(key.public_key())] = key
    return keys
