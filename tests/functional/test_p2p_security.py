"""P2P security: who may connect, and what happens to a peer that sends forged data.

What:
- a peer whose address lacks connect permission is refused during the handshake: it gets a
  REJECT naming the missing permission (with the grant command), the node's debug.log has
  the refusal and the node shows no connection;
- a peer that HAS connect permission (so its handshake passes) sends, over a raw P2P
  connection, a block signed by an address without mine permission; another one a block
  with a wrong Merkle root; another one (a granted miner) first a valid block and then a
  second one right after it, which breaks the mining-diversity rule (2 miners at 0.75:
  spacing 2, no miner signs two blocks in a row); another one a transaction whose signature
  does not verify. Each time the node refuses the data, its tip stays where it was (or at
  the one valid block), it drops and bans the sender ("banning" in its log) and refuses
  the sender's next connection as banned;
- afterwards the node still mines and serves normally.

How: one node (mining paused while blocks are forged, so the tip moves only by the test's
blocks) and `network_support.RawPeer`, a minimal peer built on node/p2p's framing and
messages with keys from `createkeypairs`.
"""

from __future__ import annotations

import logging
import os

import pytest
from framework import wait_until
from network_support import (
    PeerRefused,
    RawPeer,
    bad_signature_tx,
    log_lines,
    wait_confirmed,
    wait_for_log,
)

from ledger.keys import KeyPair
from node.p2p.messages import Msg

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.p2p_security")


def assert_banned(node, peer: RawPeer, reason: str) -> None:
    """The node dropped `peer`, logged why and banned it; a new connection is refused."""
    peer.wait_closed()
    misbehaved = wait_for_log(node, f"({peer.address}) misbehaved")
    assert reason in misbehaved, misbehaved
    wait_for_log(node, f"banning {peer.address}")
    assert node.getinfo()["connections"] == 0
    again = RawPeer(node, peer.key)
    with pytest.raises(PeerRefused, match="banned"):
        again.connect()
    again.close()
    assert log_lines(node, "refusing peer")[-1].endswith("address is banned for misbehaving")


def keypair(node) -> tuple[str, KeyPair]:
    """A fresh address and its key (createkeypairs), not yet granted anything."""
    pair = node.createkeypairs(1)[0]
    peer = RawPeer(node, KeyPair(os.urandom(32)))  # only for its codec
    key = KeyPair(peer.codec.decode_wif(pair["privkey"]))
    assert pair["address"] == peer.codec.encode(key.pubkey_hash)
    return pair["address"], key


def test_unpermitted_and_misbehaving_peers(harness):
    node = harness.start_node(chain="guarded", params={"setup-first-blocks": 3})
    stream = node.create("stream", "log", True)
    for i in range(4):
        node.wait_for_confirmation(node.publish("log", f"k{i}", {"text": "x"}))
    assert node.getblockcount() >= 4

    log.info("an address without connect permission is refused, with the reason")
    outsider = RawPeer(node, KeyPair.generate())
    with pytest.raises(PeerRefused, match="no connect permission") as refused:
        outsider.connect()
    outsider.close()
    assert f"grant {outsider.address} connect" in str(refused.value)
    line = wait_for_log(node, "refusing peer")
    assert outsider.address in line and "no connect permission" in line
    assert node.getinfo()["connections"] == 0 and node.getpeerinfo() == []

    log.info("keys with connect (one also with mine) for the forging peers")
    a_nonminer, k_nonminer = keypair(node)
    a_merkle, k_merkle = keypair(node)
    a_miner, k_miner = keypair(node)
    a_tx, k_tx = keypair(node)
    grants = [node.grant(f"{a_nonminer},{a_merkle}", "connect"),
              node.grant(a_tx, "connect,send"),
              node.grant(a_miner, "connect,mine")]  # after this the node may not sign twice
    wait_confirmed([node], *grants)                 # in a row: grant it all in one block
    node.pause("mining")
    tip = node.getbestblockhash()
    height = node.getblockcount()

    log.info("a block signed by an address without mine permission")
    with RawPeer(node, k_nonminer) as peer:
        peer.connect()
        assert peer.address in {p["handshake"] for p in node.getpeerinfo()}
        peer.send(Msg.BLOCK, peer.block_on_tip().raw)
        assert_banned(node, peer, "without mine permission")
    assert node.getbestblockhash() == tip

    log.info("a block with a wrong Merkle root")
    with RawPeer(node, k_merkle) as peer:
        peer.connect()
        peer.send(Msg.BLOCK, peer.block_on_tip(signer=k_miner, merkle=os.urandom(32)).raw)
        assert_banned(node, peer, "bad Merkle root")
    assert node.getbestblockhash() == tip

    log.info("a miner's valid block, then a second one in a row (breaks diversity)")
    with RawPeer(node, k_miner) as peer:
        peer.connect()
        first = peer.block_on_tip()
        peer.send(Msg.BLOCK, first.raw)
        wait_until(lambda: node.getbestblockhash() == first.hash.hex(),
                   msg="the valid forged block to become the tip")
        assert node.getblock(first.hash.hex())["miner"] == a_miner
        assert node.getpeerinfo()[0]["banscore"] == 0
        second = peer.block_on_tip()
        assert second.height == height + 2
        peer.send(Msg.BLOCK, second.raw)
        assert_banned(node, peer, "mining-diversity")
    assert node.getbestblockhash() == first.hash.hex()

    log.info("a transaction whose signature does not verify")
    chain_id = RawPeer(node, k_tx).chain_id
    with RawPeer(node, k_tx) as peer:
        peer.connect()
        bad = bad_signature_tx(k_tx, chain_id, stream)
        peer.send(Msg.TX, bad.raw)
        assert_banned(node, peer, "bad signature")
    assert bad.txid.hex() not in node.getrawmempool()

    log.info("the node still mines and serves (alone now, with a second permitted miner: "
             "mining-requires-peers off)")
    node.setruntimeparam("miningrequirespeers", False)
    node.resume("mining")
    txid = node.publish("log", "after", {"text": "still fine"})
    node.wait_for_confirmation(txid)
    assert node.getblockcount() == height + 2
    assert node.getblock(node.getbestblockhash())["previousblockhash"] == first.hash.hex()
