"""P2P floods (issue 15 item 3): idle connections and inventory floods stall nobody.

What:
- idle connections: 200 TCP connections that never speak are opened to a node (more than
  its 125 slots); a permitted peer still completes its handshake right after, and every
  idle connection is closed by the node (evicted, or cut at the pre-authentication
  deadline, far shorter than the old 10 s);
- an INV flood: an authenticated peer announces 300,000 transaction hashes nobody has, in
  the largest INV messages allowed, while another thread keeps calling getinfo (each call
  must answer within a generous client timeout). The node asks the flooder for at most
  MAX_REQUESTED_PER_PEER of them (its budget of unanswered requests), an oversized INV is
  refused as malformed, and when the flooder leaves the node forgets everything it had
  asked of it: a second peer announcing the same hashes is asked for them again.

How: one node, `RawPeer`s with keys granted connect, plain sockets for the idle ones.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading

import pytest
from framework import scaled, wait_until
from network_support import RawPeer, new_key_with, wait_for_log

from ledger.codec import Writer
from node.p2p import messages as m
from node.p2p.messages import Inv, Msg
from node.p2p.network import MAX_REQUESTED_PER_PEER

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.p2p_flood")

IDLE = 200
FLOOD = 300_000


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True when the other side closed (or reset) the connection within `timeout`."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionError:
        return True
    except TimeoutError:
        return False


def test_idle_connections_do_not_lock_a_permitted_peer_out(harness):
    node = harness.start_node(chain="idle")
    key = new_key_with(node, "connect")

    log.info("%d idle connections, none of them says anything", IDLE)
    idle = [socket.create_connection(("127.0.0.1", node.port), timeout=scaled(10))
            for _ in range(IDLE)]
    try:
        log.info("a permitted peer connects while they are open")
        with RawPeer(node, key) as peer:
            peer.connect()
            assert peer.address in {p["handshake"] for p in node.getpeerinfo()}
            log.info("the node closes every idle connection (evicted or timed out)")
            assert all(closed_by_peer(s, scaled(10)) for s in idle)
            assert node.getinfo()["connections"] == 1
    finally:
        for s in idle:
            with contextlib.suppress(OSError):
                s.close()


def getdata_hashes(peer: RawPeer) -> list[bytes]:
    return [h for t, payload in peer.received if t == Msg.GETDATA
            for _, h in m.decode_inv(payload)]


def received_after_drain(peer: RawPeer) -> list[tuple[int, bytes]]:
    """Everything the node sent so far (reading what is waiting first)."""
    while peer.recv(0.05) is not None:
        pass
    return peer.received


def test_inventory_flood_is_bounded_and_forgotten_when_the_peer_leaves(harness):
    node = harness.start_node(chain="flood")
    k_flood = new_key_with(node, "connect")
    k_second = new_key_with(node, "connect")
    hashes = [os.urandom(32) for _ in range(FLOOD)]

    errors: list[BaseException] = []
    calls = [0]
    done = threading.Event()

    def poll_rpc() -> None:
        client = node.client(timeout=5)
        try:
            while not done.is_set():
                client.call("getinfo")
                calls[0] += 1
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)
        finally:
            client.close()

    flooder = RawPeer(node, k_flood)
    flooder.connect()
    poller = threading.Thread(target=poll_rpc, daemon=True)
    poller.start()
    try:
        log.info("the flooder announces %d unknown transactions", FLOOD)
        for i in range(0, FLOOD, m.MAX_INV):
            flooder.send(Msg.INV, m.encode_inv([(Inv.TX, h) for h in hashes[i:i + m.MAX_INV]]))
        # The node asks for its budget and no more; the flood reached its end once the
        # node answers a ping sent after it.
        flooder.send(Msg.PING, b"floodend")
        wait_until(lambda: (Msg.PONG, b"floodend") in received_after_drain(flooder),
                   msg="the node to get through the flood")
    finally:
        done.set()
        poller.join(scaled(10))
    assert not errors, f"RPC failed during the flood: {errors[0]!r}"
    assert calls[0] >= 1
    asked = getdata_hashes(flooder)
    log.info("the node asked for %d hashes and answered %d getinfo calls meanwhile",
             len(asked), calls[0])
    assert len(asked) == MAX_REQUESTED_PER_PEER
    assert set(asked) == set(hashes[:MAX_REQUESTED_PER_PEER])

    log.info("an INV over the per-message cap is refused as malformed")
    w = Writer()
    w.varint(m.MAX_INV + 1)
    for h in hashes[:m.MAX_INV + 1]:
        w.u8(Inv.TX)
        w.fixed(h)
    flooder.send(Msg.INV, w.getvalue())
    flooder.wait_closed()
    flooder.close()
    line = wait_for_log(node, f"({flooder.address}) disconnected")
    assert f"{MAX_REQUESTED_PER_PEER} requested hashes forgotten" in line
    assert "too many inventory entries" in line

    log.info("a second peer announcing the same hashes is asked for them again")
    with RawPeer(node, k_second) as second:
        second.connect()
        first = hashes[:100]
        second.send(Msg.INV, m.encode_inv([(Inv.TX, h) for h in first]))
        wait_until(lambda: set(first) <= {h for t, p in received_after_drain(second)
                                          if t == Msg.GETDATA for _, h in m.decode_inv(p)},
                   msg="the node to ask the second peer for the forgotten hashes")
