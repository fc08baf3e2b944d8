"""Compact block relay: a block announced by txids and raw hashes is rebuilt from the
mempool, missing transactions are fetched, and a forged or mismatched one is refused.

What:
- a granted miner's compact block whose one transaction the node has not seen: the node asks
  for it (GETBLOCKTXN with its index), gets it (BLOCKTXN), and the rebuilt block becomes the
  tip with exactly that transaction;
- a compact block signed by an address without mine permission, whose transactions are all
  in the node's mempool: refused like the whole block would be (the sender is dropped and
  banned, the tip does not move, the transaction stays pooled);
- a BLOCKTXN answering with a different transaction than the one announced (same sender,
  another nonce): refused, the sender banned.

How: one node with mining paused, `network_support.RawPeer` speaking protocol 3.
"""

from __future__ import annotations

import logging
import time

import pytest
from framework import wait_until
from network_support import RawPeer, wait_confirmed
from test_p2p_security import assert_banned, keypair

from ledger.transactions import DataFormat, Publish, Transaction
from node.p2p import messages as m
from node.p2p.messages import Msg

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.p2p_compact_blocks")


def compact(block) -> bytes:
    return m.CompactBlock(block.header, block.signature, tuple(
        (t.txid, m.raw_hash(t.raw)) for t in block.txs)).encode()


def publish_tx(key, chain_id: bytes, stream: str, nonce: int) -> Transaction:
    op = Publish(bytes.fromhex(stream), (f"n{nonce}",), DataFormat.TEXT, b"compact", False)
    return Transaction.create(key, [op], chain_id, int(time.time()), nonce)


def expect(peer: RawPeer, msg_type: int, timeout: float = 10.0) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = peer.recv(max(0.05, deadline - time.monotonic()))
        if got is not None and got[0] == msg_type:
            return got[1]
    raise AssertionError(f"no message {msg_type} from the node within {timeout} s")


def test_compact_blocks_rebuilt_fetched_and_checked(harness):
    node = harness.start_node(chain="compact", params={"setup-first-blocks": 3})
    stream = node.create("stream", "log", True)
    for i in range(4):
        node.wait_for_confirmation(node.publish("log", f"k{i}", {"text": "x"}))
    a_miner, k_miner = keypair(node)
    a_plain, k_plain = keypair(node)
    a_liar, k_liar = keypair(node)
    a_writer, k_writer = keypair(node)
    grants = [node.grant(f"{a_plain},{a_liar}", "connect"),
              node.grant(a_writer, "send"),
              node.grant(a_miner, "connect,mine")]
    wait_confirmed([node], *grants)
    node.pause("mining")
    chain_id = RawPeer(node, k_miner).chain_id

    log.info("a miner's compact block with a transaction the node lacks: fetched, connected")
    tx = publish_tx(k_writer, chain_id, stream, 1)
    with RawPeer(node, k_miner) as peer:
        peer.connect()
        block = peer.block_on_tip(txs=[tx])
        peer.send(Msg.CMPCTBLOCK, compact(block))
        h, indexes = m.decode_getblocktxn(expect(peer, Msg.GETBLOCKTXN))
        assert (h, indexes) == (block.hash, [0])
        peer.send(Msg.BLOCKTXN, m.encode_blocktxn(block.hash, [tx.raw]))
        wait_until(lambda: node.getbestblockhash() == block.hash.hex(),
                   msg="the rebuilt block to become the tip")
        assert node.getblock(block.hash.hex())["tx"] == [tx.txid.hex()]
        assert node.getblock(block.hash.hex(), False) == block.raw.hex()
        assert node.getpeerinfo()[0]["banscore"] == 0
    tip = node.getbestblockhash()

    log.info("a compact block of pooled transactions signed by a non-miner: refused")
    pooled = node.publish("log", "pooled", {"text": "y"})
    wait_until(lambda: pooled in node.getrawmempool(), msg="the tx to be pooled")
    raw = bytes.fromhex(node.getrawtransaction(pooled))
    with RawPeer(node, k_plain) as peer:
        peer.connect()
        forged = peer.block_on_tip(txs=[Transaction.decode(raw)])
        peer.send(Msg.CMPCTBLOCK, compact(forged))
        assert_banned(node, peer, "without mine permission")
    assert node.getbestblockhash() == tip
    assert pooled in node.getrawmempool()

    log.info("a BLOCKTXN with another transaction than the one announced: refused")
    announced, other = publish_tx(k_writer, chain_id, stream, 2), publish_tx(
        k_writer, chain_id, stream, 3)
    with RawPeer(node, k_liar) as peer:
        peer.connect()
        block = peer.block_on_tip(signer=k_miner, txs=[announced])
        peer.send(Msg.CMPCTBLOCK, compact(block))
        h, indexes = m.decode_getblocktxn(expect(peer, Msg.GETBLOCKTXN))
        assert indexes == [0]
        peer.send(Msg.BLOCKTXN, m.encode_blocktxn(h, [other.raw]))
        assert_banned(node, peer, "not the one announced")
    assert node.getbestblockhash() == tip
