"""Builders of erp actions for the unit tests: agents with real keys, a MemoryState world."""

from __future__ import annotations

import hashlib
from typing import Any

import coincurve

from erp import rules
from erp.addresses import address_function

ADDRESS_OF = address_function(b"\x00", b"\x00\x00\x00\x00")
BLOCKTIME = 1_700_000_000


def key(n: int) -> str:
    """The compressed public key (hex) of a fixed secret derived from n."""
    secret = hashlib.sha256(f"erp-test-{n}".encode()).digest()
    return coincurve.PrivateKey(secret).public_key.format(compressed=True).hex()


def act(kind: str, signer: str, timestamp: int = BLOCKTIME, **body: Any) -> dict[str, Any]:
    return {"erp": 1, "action": kind, "signer": signer, "timestamp": timestamp, **body}


class World:
    """A MemoryState and helpers that apply actions published by their own signer."""

    def __init__(self) -> None:
        self.state = rules.MemoryState()
        self.n = 0

    def ctx(self, publisher: str) -> rules.Context:
        self.n += 1
        return rules.Context(publisher=publisher, txid=f"{self.n:064x}", blocktime=BLOCKTIME,
                             address_of=ADDRESS_OF)

    def run(self, action: dict[str, Any], publisher: str | None = None) -> rules.Outcome:
        """Apply an action (published from its signer's address unless told otherwise)."""
        ctx = self.ctx(publisher or ADDRESS_OF(action["signer"]))
        outcome = rules.decide(self.state, action, ctx)
        self.state.apply(outcome)
        return outcome

    def agent(self, n: int, name: str | None = None) -> str:
        k = key(n)
        self.run(act("CREATE_AGENT", k, name=name or f"agent {n}"))
        return k

    def record_type(self, signer: str, name: str = "pallet") -> None:
        self.run(act("CREATE_RECORD_TYPE", signer, name=name, properties=[
            {"name": "weight", "data_type": "INT", "required": True},
            {"name": "label", "data_type": "STRING", "required": False},
            {"name": "where", "data_type": "LOCATION", "required": False},
        ]))

    def record(self, signer: str, rid: str = "SN-1", weight: int = 10) -> None:
        self.run(act("CREATE_RECORD", signer, record_id=rid, record_type="pallet",
                     properties=[{"name": "weight", "data_type": "INT", "value": weight}]))
