"""Helpers of the erp functional tests: two real nodes of one chain, an Erp per company.

Node 1 creates the chain (items up to 80 kB, so an oversized action reaches the chain and
the projection must reject it) and mines; node 2 joins and is granted connect, send and
receive. Each company's Erp talks to its own node through JSON-RPC only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from framework import Harness, TestNode, sync_blocks, wait_until
from network_support import add_joiner, wait_confirmed
from sqlalchemy.engine import Engine
from trigger_support import pin_ports, wait_linked

from erp.api import Erp

log = logging.getLogger("erp_functional")

BLOCK_TIME = 0.2
GRANTS = "connect,send,receive"
PARAMS = {"max-std-element-size": 80_000}


def two_nodes(harness: Harness, chain: str) -> tuple[TestNode, TestNode]:
    """Node 1 (creates the chain, mines) and node 2 (joined, granted GRANTS), linked."""
    n1 = harness.add_node(chain=chain, block_time=BLOCK_TIME, params=PARAMS)
    n1.start()
    pin_ports(n1)
    n2 = add_joiner(harness, n1)
    n2.start()
    pin_ports(n2)
    txid = n1.grant(n2.address, GRANTS)
    wait_linked(n1, n2)
    wait_confirmed([n1, n2], txid, timeout=60)
    sync_blocks([n1, n2])
    return n1, n2


def company(node: TestNode, engine: Engine, name: str) -> tuple[Erp, str]:
    """An Erp bound to `node` whose agent `name` is published; (erp, agent txid)."""
    erp = Erp(engine, node.rpc)
    wait_until(lambda: _stream_visible(node), msg=f"node{node.index} to see the stream",
               timeout=60) if node.index else None
    txid = erp.init(agent_name=name)
    log.info("company %s: agent %s at %s", name, erp.public_key, erp.address)
    return erp, txid


def _stream_visible(node: TestNode) -> bool:
    return any(s.get("name") == "supplychain" for s in node.rpc.call("liststreams"))


def projected(erp: Erp, txid: str) -> dict[str, Any]:
    """Follow until `txid` is projected; its verdict."""
    return erp.wait(txid, timeout=60)


def wait_same_state(erps: list[Erp], items: Callable[[], int]) -> str:
    """Follow on every projection until each has applied `items()` items and all digests
    agree; the digest."""
    def agreed() -> str | None:
        for erp in erps:
            erp.follow()
        digests = {erp.digest()["digest"] for erp in erps}
        positions = {erp.digest()["items"] for erp in erps}
        if len(digests) == 1 and positions == {items()}:
            return digests.pop()
        return None
    return wait_until(agreed, timeout=60, msg="projections to agree")
