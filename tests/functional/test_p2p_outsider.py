"""P2P against an outsider on the network: a peer without a permitted key gets only params.

What:
- reflection (issue 15 item 1): an outsider with no permitted key opens a connection to
  each of two live, connected nodes, tells each that it is the other one, and hands each
  node's handshake signature to the other. Both refuse it ("does not verify"), neither
  lists it as a peer, and all it ever received is the key exchange, HELLO (no height, no
  tip), AUTH and REJECT: no block, inventory, transaction or READY;
- an outsider with its own key is refused for lacking connect and again gets nothing more;
  one that skips the handshake and asks for blocks (in clear, or encrypted before its
  AUTH) is dropped unanswered; the bootstrap GETPARAMS, the one thing open to anyone, is
  answered with params.dat and "may not connect";
- encryption: node1 reaches node0 only through a relay that records every byte; an item
  published on node0 reaches node1 and its text is nowhere in the recorded bytes;
- `bind`: a node started with bind=127.0.0.1 accepts peers there and does not answer on
  127.0.0.2 (also loopback), where a node without bind does; bound to an address the
  machine does not have, a node exits with "cannot bind P2P port".

How: `start_network` (node0 seeds, node1 joins and is granted), `RawPeer` driven step by
step, `TcpRelay` as the eavesdropper.
"""

from __future__ import annotations

import logging
import socket

import pytest
from framework import wait_until
from network_support import (
    PeerRefused,
    RawPeer,
    TcpRelay,
    cut_link,
    new_key_with,
    peer_addresses,
    start_network,
    wait_confirmed,
    wait_for_log,
)

from config.params import read_params_file
from ledger.keys import KeyPair
from node.join import ask_seed
from node.p2p import messages as m
from node.p2p.framing import encode_frame
from node.p2p.messages import Msg

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.p2p_outsider")

HANDSHAKE_ONLY = {Msg.NOISE, Msg.HELLO, Msg.AUTH, Msg.REJECT}
"""All an unpermitted peer may receive on a P2P connection."""
SECRET = "order 0: 500 units at 3.10"


def received_types(*peers: RawPeer) -> set[int]:
    return {t for p in peers for t, _ in p.received}


def test_outsider_reflecting_handshakes_between_two_nodes_gets_nothing(harness):
    a, b = start_network(harness, 2, chain="reflect")
    a.create("stream", "orders", True)
    txid = a.publish("orders", "o0", {"text": SECRET})
    wait_confirmed([a, b], txid)
    addr_a, addr_b = a.getaddresses()[0], b.getaddresses()[0]

    log.info("the outsider opens a session with each node and reads each one's HELLO")
    outsider = KeyPair.generate()
    to_a, to_b = RawPeer(a, outsider), RawPeer(b, outsider)
    to_a.key_exchange()
    to_b.key_exchange()
    to_a.read_handshake(Msg.HELLO)
    to_b.read_handshake(Msg.HELLO)
    assert to_a.node_hello is not None and to_b.node_hello is not None
    pub_a, pub_b = to_a.node_hello.pubkey, to_b.node_hello.pubkey

    log.info("it claims to be B towards A and A towards B; each node signs its session")
    to_a.send_hello(pubkey=pub_b)
    to_b.send_hello(pubkey=pub_a)
    to_a.read_handshake(Msg.AUTH)
    to_b.read_handshake(Msg.AUTH)
    assert to_a.node_auth is not None and to_b.node_auth is not None
    assert to_a.node_auth[0] == pub_a and to_b.node_auth[0] == pub_b

    log.info("it hands each node the other's signature: both refuse")
    to_b.send(Msg.AUTH, m.encode_auth(*to_a.node_auth))
    to_a.send(Msg.AUTH, m.encode_auth(*to_b.node_auth))
    for peer in (to_a, to_b):
        with pytest.raises(PeerRefused, match="does not verify"):
            peer.read_handshake(Msg.READY)
        peer.wait_closed()
        peer.close()
    for node in (a, b):
        line = wait_for_log(node, "handshake signature does not verify")
        assert "refusing peer" in line
    assert received_types(to_a, to_b) <= HANDSHAKE_ONLY
    assert all(SECRET.encode() not in payload for p in (to_a, to_b) for _, payload in p.received)
    assert peer_addresses(a) == {addr_b} and peer_addresses(b) == {addr_a}

    log.info("a node's signature from one session does not open another one either")
    replay = RawPeer(b, outsider)
    replay.key_exchange()
    replay.send_hello(pubkey=pub_a)
    replay.send(Msg.AUTH, m.encode_auth(*to_a.node_auth))
    with pytest.raises(PeerRefused, match="does not verify"):
        replay.read_handshake(Msg.READY)
    replay.close()
    assert received_types(replay) <= HANDSHAKE_ONLY

    log.info("with its own key it is refused for lacking connect, and gets nothing more")
    own = RawPeer(a, outsider)
    with pytest.raises(PeerRefused, match="no connect permission"):
        own.connect()
    own.close()
    assert received_types(own) <= HANDSHAKE_ONLY and own.node_ready is None

    log.info("asking for blocks without a handshake: in clear, then encrypted before AUTH")
    genesis = bytes(read_params_file(a.chain_dir / "params.dat")["genesis-hash"])
    locator = m.encode_locator([genesis], 500)
    clear = RawPeer(a, outsider)
    clear.sock = socket.create_connection(("127.0.0.1", a.port))
    clear.send_raw(encode_frame(clear.magic, Msg.GETBLOCKS, locator))
    clear.wait_closed()
    early = RawPeer(a, outsider)
    early.key_exchange()
    early.send(Msg.GETBLOCKS, locator)
    early.send(Msg.GETDATA, m.encode_inv([(m.Inv.TX, bytes.fromhex(txid))]))
    early.wait_closed()
    for p in (clear, early):
        p.close()
    assert received_types(clear, early) <= HANDSHAKE_ONLY

    log.info("the bootstrap exchange still serves the chain's parameters, and only them")
    text, may_connect = ask_seed("127.0.0.1", a.port, outsider.pubkey_hash)
    assert "chain-name = reflect" in text and not may_connect
    assert SECRET not in text
    assert peer_addresses(a) == {addr_b} and peer_addresses(b) == {addr_a}


def test_transport_is_encrypted_end_to_end(harness):
    a, b = start_network(harness, 2, chain="sealed")
    a.create("stream", "orders", True)
    cut_link(a, b)
    relay = TcpRelay(a.port)
    try:
        log.info("node1 dials node0 through a recording relay")
        b.addnode(f"127.0.0.1:{relay.port}", "add")
        addr_a = a.getaddresses()[0]
        wait_until(lambda: addr_a in peer_addresses(b), msg="node1 connected through the relay")
        txid = a.publish("orders", "o0", {"text": SECRET})
        wait_confirmed([a, b], txid)
        raw = bytes.fromhex(a.getrawtransaction(txid))
        assert SECRET.encode() in raw  # the transaction carries the text in clear ...
        with relay._lock:
            wire = bytes(relay.recorded)
        assert relay.connections >= 1 and len(wire) > len(raw)
        assert SECRET.encode() not in wire  # ... the wire does not
        assert raw[-40:] not in wire
    finally:
        relay.close()


def test_bind_limits_the_p2p_listener(harness):
    bound = harness.start_node(["-o", "bind=127.0.0.1"], chain="bound")
    free = harness.start_node(chain="free")
    key = new_key_with(bound, "connect")

    log.info("a permitted peer connects on the bound address")
    with RawPeer(bound, key) as peer:
        peer.connect()
    log.info("127.0.0.2 is loopback too, but the bound node does not listen there")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", bound.port), timeout=5).close()
    socket.create_connection(("127.0.0.2", free.port), timeout=5).close()
    line = wait_for_log(bound, "P2P listening on")
    assert "127.0.0.1" in line and "all interfaces" not in line

    log.info("an address this machine does not have: the node refuses to start, saying why")
    nowhere = harness.add_node(chain="nowhere")
    nowhere.start(["-o", "bind=192.0.2.1"], wait=False)
    assert nowhere.process is not None
    wait_until(lambda: nowhere.process.poll() is not None, msg="the unbindable node to exit")
    assert nowhere.process.returncode == 1
    assert "error: cannot bind P2P port" in nowhere.output(this_start=True)
    assert "on 192.0.2.1" in nowhere.output(this_start=True)


def test_outsider_cannot_pose_as_a_permitted_key_without_it(harness):
    """Claiming a permitted node's key in HELLO and signing with another key is refused as
    a key mismatch, whatever the outsider signs."""
    node = harness.start_node(chain="claim")
    granted = new_key_with(node, "connect")
    outsider = KeyPair.generate()
    peer = RawPeer(node, outsider)
    peer.key_exchange()
    peer.send_hello(pubkey=granted.pubkey)
    peer.read_handshake(Msg.HELLO)
    assert peer.node_hello is not None
    peer.send(Msg.AUTH, peer.auth_for(peer.node_hello.pubkey))
    with pytest.raises(PeerRefused, match="claimed"):
        peer.read_handshake(Msg.READY)
    peer.close()
    assert received_types(peer) <= HANDSHAKE_ONLY
    assert node.getpeerinfo() == []


def test_peer_whose_connect_is_revoked_gets_nothing_more(harness):
    """Connect permission is checked at the handshake and again at every new block: the
    block that revokes it is not announced to the peer, which is dropped."""
    node = harness.start_node(chain="revoked")
    key = new_key_with(node, "connect")
    peer = RawPeer(node, key)
    peer.connect()
    txid = node.revoke(peer.address, "connect")
    peer.wait_closed()
    peer.close()
    node.wait_for_confirmation(txid)
    line = wait_for_log(node, "no longer permitted")
    assert peer.address in line and "no connect permission" in line
    revoking_block = bytes.fromhex(node.getrawtransaction(txid, 1)["blockhash"])
    announced = {h for t, p in peer.received if t == Msg.INV for _, h in m.decode_inv(p)}
    assert revoking_block not in announced
    again = RawPeer(node, key)
    with pytest.raises(PeerRefused, match="no connect permission"):
        again.connect()
    again.close()
