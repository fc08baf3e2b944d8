"""Crash: a node killed with SIGKILL in the middle of a load restarts and converges.

What: three nodes take a continuous publishing load (round-robin over all three). node0 —
the seed the others joined through — is killed with SIGKILL mid-load, while the load goes on
on the two others (which keep mining); it is then restarted with nothing but
`chainmill start CHAIN --datadir D --daemon`. It comes back without repair (stale pid file),
reconnects, catches up the blocks it missed, and takes load again. In the end all three nodes
share one tip and one stream content, every item confirmed anywhere before the kill is
there on every node, and every item any live node accepted is confirmed everywhere.

How: 0.2 s blocks and mining-diversity 0.5, so with three miners the spacing is 2 and the
two survivors can keep alternating while node0 is down (at 0.75 the spacing would be 3 and
the chain would wait for node0 — also correct, but then nothing would need catching up).
The load is a thread sending 4-item publishmulti calls every 20 ms; calls to the dead node
fail and are counted, not retried.
"""

from __future__ import annotations

import logging
import threading

import pytest
from framework import TestNode, sync_blocks, wait_until
from network_support import (
    adopt_daemon,
    confirmed_txids,
    daemons_fixture,  # noqa: F401 - the `daemons` fixture
    start_network,
    stream_digest,
    wait_all_confirmed,
    wait_confirmed,
    wait_for_mesh,
)

from node.client import RpcConnectionError, RpcError

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.p2p_crash")


class Load(threading.Thread):
    """Publishes 4-item transactions round-robin on the nodes until stopped."""

    def __init__(self, nodes: list[TestNode], stream: str) -> None:
        super().__init__(name="load", daemon=True)
        self.nodes = nodes
        self.stream = stream
        self.accepted: dict[str, int] = {}  # txid -> node index
        self.failed = 0
        self.down: set[int] = set()
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        clients = {n.index: n.client(timeout=5) for n in self.nodes}
        i = 0
        try:
            while not self.stopping.is_set():
                node = self.nodes[i % len(self.nodes)]
                i += 1
                if node.index in self.down:
                    continue
                items = [{"key": f"n{node.index}-{i}-{j}", "data": {"json": {"i": i, "j": j}}}
                         for j in range(4)]
                try:
                    txid = clients[node.index].call("publishmulti", self.stream, items)
                    self.accepted[txid] = node.index
                except (RpcConnectionError, RpcError, OSError):
                    self.failed += 1
                    clients[node.index] = node.client(timeout=5)
                self.stopping.wait(0.02)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e
        finally:
            for c in clients.values():
                c.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)
        if self.error is not None:
            raise self.error


def test_sigkill_mid_load_restart_and_converge(harness, daemons):
    nodes = start_network(harness, 3, params={"mining-diversity": 0.5})
    victim, others = nodes[0], nodes[1:]
    wait_confirmed(nodes, victim.create("stream", "load", True))
    for n in others:
        n.subscribe("load")

    log.info("load on all three nodes")
    load = Load(nodes, "load")
    load.start()
    try:
        wait_until(lambda: len(confirmed_txids(victim, "load")) >= 30, timeout=30,
                   msg="some load confirmed on node0")
        before = confirmed_txids(victim, "load")
        for n in others:
            before |= confirmed_txids(n, "load")
        height_before = victim.getblockcount()

        log.info("SIGKILL node0 at height %d with %d items confirmed", height_before,
                 len(before))
        load.down.add(victim.index)
        victim.kill()
        assert victim.pid_path.exists()  # stale: nobody removed it
        survivors_from = max(n.getblockcount() for n in others)
        wait_until(lambda: min(n.getblockcount() for n in others) >= survivors_from + 5,
                   timeout=30, msg="the two survivors to keep mining without node0")

        log.info("restart node0 with only `chainmill start CHAIN --datadir D --daemon`")
        out = daemons.run("start", victim.chain, "--datadir", str(victim.datadir),
                          "--daemon").stdout
        assert "Node started in the background" in out
        adopt_daemon(victim, daemons)
        assert victim.getblockcount() >= height_before - 1  # nothing confirmed was unwound
        lost = before - confirmed_txids(victim, "load")
        assert not lost, f"{len(lost)} confirmed items missing on node0 after SIGKILL"
        wait_for_mesh(nodes)
        load.down.discard(victim.index)
        sync_blocks(nodes, timeout=60)
        log.info("node0 caught up to height %d; load on it again", victim.getblockcount())
        start = len(load.accepted)
        wait_until(lambda: sum(v == victim.index
                               for v in list(load.accepted.values())[start:]) >= 20,
                   msg="node0 to take load again")
    finally:
        load.stop()

    log.info("converge: one tip, one stream, nothing confirmed lost, everything accepted "
             "by a live node confirmed (%d accepted, %d calls failed)", len(load.accepted),
             load.failed)
    accepted = set(load.accepted)
    wait_all_confirmed(nodes, "load", before, timeout=60)
    # An item node0 accepted just before the kill may have died with it (never relayed);
    # everything else must be confirmed everywhere.
    for n in nodes:
        n.wait_for_empty_mempool(timeout=60)
    sync_blocks(nodes)
    final = confirmed_txids(victim, "load")
    unconfirmed = accepted - final
    killed_with_node0 = {t for t in unconfirmed if load.accepted[t] == victim.index}
    assert unconfirmed == killed_with_node0, \
        f"{len(unconfirmed - killed_with_node0)} accepted items never confirmed"
    log.info("%d items node0 accepted just before SIGKILL were lost with it (unconfirmed)",
             len(killed_with_node0))
    digests = [stream_digest(n, "load") for n in nodes]
    assert digests[0] == digests[1] == digests[2]
    assert before <= final
