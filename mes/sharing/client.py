"""The partner's side: a small client with the calls of the platform it replaces
(`register`, `produce`, `subscribe`, `consume`), over a node's JSON-RPC.

`consume` returns only what this company was given: items of the system's stream whose
access entry (published by the item's own publisher, spec 1.9.3) names one of this node's
addresses and unwraps with one of our private keys. Everything else on the stream is
ciphertext to us and is skipped. A stream that is not closed is refused outright, since
anyone could have written to it.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mes.sharing.observations import SharingError, check_system_name
from triggers import crypto
from triggers.errors import DecryptionFailed
from triggers.keys_command import ensure_system_streams, publish_public_key
from triggers.nodes import ACCESS, NodeClient, item_bytes, private_keys, public_key_pem

__all__ = ["ObservationClient"]

log = logging.getLogger(__name__)
_MAX_OBSERVATION_BYTES = 64 * 1024


class ObservationClient:
    """Reads (and, for its own systems, writes) observations through one node."""

    def __init__(self, client: NodeClient, private_key_paths: Sequence[Path] = ()) -> None:
        self.client = client
        self.keys = private_keys(list(private_key_paths))
        self.positions: dict[str, int] = {}
        self._addresses: set[str] | None = None

    def addresses(self) -> set[str]:
        if self._addresses is None:
            self._addresses = set(self.client.call("getaddresses") or [])
        return self._addresses

    def register(self, public_pem: str, address: str | None = None) -> str:
        """Publish this company's RSA public key so owners can share with it; the txid."""
        ensure_system_streams(self.client)
        address = address or sorted(self.addresses())[0]
        return publish_public_key(self.client, address, public_pem)

    def subscribe(self, system: str) -> None:
        """Follow a system's stream on this node (refused when the stream is open)."""
        check_system_name(system)
        info = self.client.call("getstreaminfo", system, True)
        if not (info.get("restrict") or {}).get("write"):
            raise SharingError(f"stream {system} is open to every writer; not a system")
        self.client.call("subscribe", system)
        self.client.call("subscribe", ACCESS)

    def produce(self, system: str, observation: dict[str, Any], readers: Sequence[str],
                address: str | None = None) -> str:
        """Publish one observation on an own system, readable by `readers` (and us)."""
        address = address or sorted(self.addresses())[0]
        password = crypto.new_password()
        body = json.dumps({**observation, "system": system}, sort_keys=True).encode("utf-8")
        envelope = crypto.seal(body, password)
        key = observation.get("@iot.id")
        if not isinstance(key, str) or not key:
            raise SharingError("an observation needs an '@iot.id'")
        txid = str(self.client.call("publishfrom", address, system, key, envelope.hex()))
        items = []
        for reader in dict.fromkeys([address, *readers]):
            pem = public_key_pem(self.client, reader)
            if pem is None:
                raise SharingError(f"no public key on pubkeys for {reader}")
            entry = crypto.access_entry(txid, reader, crypto.load_public_key(pem), password)
            items.append({"key": txid, "data": json.dumps(entry).encode().hex()})
        self.client.call("publishmultifrom", address, ACCESS, items)
        return txid

    def _decode(self, system: str, item: dict[str, Any]) -> dict[str, Any] | None:
        publishers = item.get("publishers") or []
        txid = item.get("txid")
        if len(publishers) != 1 or not isinstance(txid, str):
            return None
        mine = self.addresses()
        for access in self.client.call("liststreamkeyitems", ACCESS, txid, False, 1000) or []:
            if publishers[0] not in (access.get("publishers") or []):
                continue
            try:
                entry = crypto.parse_access_entry(item_bytes(self.client, access))
            except (ValueError, DecryptionFailed):
                continue
            key = self.keys.get(entry["key_fingerprint"])
            if entry["address"] not in mine or entry["txid"] != txid or key is None:
                continue
            try:
                password = crypto.unwrap_password(key, base64.b64decode(entry["wrapped_key"]))
                data = item_bytes(self.client, item)
                if len(data) > 4 * _MAX_OBSERVATION_BYTES:
                    return None
                plain = crypto.open_envelope(data, password)
            except (DecryptionFailed, ValueError) as exc:
                log.warning("security: item %s does not decrypt with its access entry: %s",
                            txid, exc)
                continue
            try:
                observation = json.loads(plain)
            except ValueError:
                return None
            if not isinstance(observation, dict) or observation.get("system") != system:
                log.warning("security: item %s on %s claims another system", txid, system)
                return None
            return observation
        return None

    def consume(self, system: str, max_items: int = 1000) -> list[dict[str, Any]]:
        """Observations of `system` readable by us, after the previous consume's position."""
        start = self.positions.get(system, 0)
        items = self.client.call("liststreamitems", system, False, max_items, start) or []
        out = []
        for item in items:
            if not item.get("confirmations"):
                break  # keep the order: an unconfirmed item is read once it is mined
            start += 1
            observation = self._decode(system, item)
            if observation is not None:
                out.append(observation)
        self.positions[system] = start
        return out
