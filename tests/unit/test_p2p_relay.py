"""Network's transaction relay: relayed txs are checked in batches, a tx confirmed by a recent
block is neither fetched nor verified again (a forged copy still is, and bans its sender),
and a compact block is rebuilt with relayed txs still waiting for their check.

A real node context (store, chain, mempool) as in test_p2p_sync_decode.py, and peers whose
messages are recorded instead of sent."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from node_helpers import fresh_node, root_publish

from ledger.blocks import Block
from ledger.transactions import Transaction
from node.p2p import messages as m
from node.p2p import network as net_mod
from node.p2p.messages import Inv, Msg
from node.p2p.network import Network
from node.p2p.peer import Peer


@pytest.fixture
def node_ctx(tmp_path):
    with fresh_node(tmp_path, "cm", 12) as ctx:
        yield ctx


class _Writer:
    def get_extra_info(self, name: str) -> Any:
        return ("192.0.2.1", 1)

    def close(self) -> None:
        pass


class _Peer(Peer):
    """A peer past the handshake whose outgoing messages are kept in `sent`."""

    def __init__(self, address_hash: bytes) -> None:
        super().__init__(asyncio.StreamReader(), _Writer(), b"\0\0\0\0",  # type: ignore[arg-type]
                         inbound=True)
        self.address_hash = address_hash
        self.address = "peer"
        self.version = m.PROTOCOL
        self.ready = True
        self.sent: list[tuple[int, bytes]] = []

    def send(self, msg_type: int, payload: bytes) -> None:
        self.sent.append((msg_type, payload))


def _txs(ctx, tag: str, n: int) -> list[Transaction]:
    return [root_publish(ctx, f"{tag}-{i}", b"x") for i in range(n)]


def _block(ctx, txs: list[Transaction]) -> Block:
    tip = ctx.chain.tip_header
    return Block.build(ctx.wallet.default, ctx.chain.chain_id, tip.height + 1, tip.hash,
                       tip.time_ms + 1, txs)


def _forged(tx: Transaction) -> Transaction:
    """The same body (so the same txid) under another, invalid signature."""
    sig = bytearray(tx.signature)
    sig[-1] ^= 1
    return Transaction.decode(tx.raw[:-len(sig)] + bytes(sig))


def _network(ctx) -> Network:
    net = Network(ctx, port=0, listen=False)
    ctx.network = net
    return net


def test_p2p_relay_txs_read_in_a_burst_are_checked_in_one_batch(node_ctx, monkeypatch):
    txs = _txs(node_ctx, "burst", 10)
    batches: list[int] = []
    # The gathering wait made long enough that a loaded machine's slower loop turns still
    # read the whole burst inside it (5 ms in production; what is tested is that the check
    # waits for the burst, not how fast ten decodes are).
    monkeypatch.setattr(net_mod, "RELAY_GATHER", 1.0)

    async def run():
        net = _network(node_ctx)
        check = net._check_relayed

        def spy(batch):
            batches.append(len(batch))
            return check(batch)

        monkeypatch.setattr(net, "_check_relayed", spy)
        peer = _Peer(node_ctx.wallet.default.pubkey_hash)
        for tx in txs:  # as the serve loop reads them: the loop gets a turn in between
            await net.on_tx(peer, tx.raw)
            await asyncio.sleep(0)
        while net._tx_task is not None and not net._tx_task.done():
            await asyncio.sleep(0.001)
        await net.close()

    asyncio.run(run())
    assert batches == [10]
    assert all(tx.txid in node_ctx.mempool for tx in txs)


def test_p2p_relay_a_recent_blocks_tx_is_not_fetched_nor_verified_again(node_ctx,
                                                                         monkeypatch):
    txs = _txs(node_ctx, "recent", 3)
    block = _block(node_ctx, txs)
    node_ctx.chain.connect(block)
    verified: list[bytes] = []

    async def run():
        net = _network(node_ctx)
        real = node_ctx.chain.verifier

        def verifier(batch):
            verified.extend(t.txid for t in batch)
            return real(batch)

        monkeypatch.setattr(node_ctx.chain, "verifier", verifier)
        net.announce_block(block)
        peer = _Peer(node_ctx.wallet.default.pubkey_hash)
        await net.on_inv(peer, m.encode_inv([(Inv.TX, t.txid) for t in txs]))
        fetched = [p for t, p in peer.sent if t == Msg.GETDATA]
        # A copy that was asked for before the block came and arrives after it connected.
        results, confirmed = await asyncio.to_thread(net._check_relayed, txs)
        await net.close()
        return fetched, results, confirmed

    fetched, results, confirmed = asyncio.run(run())
    assert fetched == []
    assert results == [True] * 3
    assert confirmed == {t.txid for t in txs}
    assert verified == []


def test_p2p_relay_a_forged_copy_of_a_confirmed_tx_is_verified_and_bans(node_ctx):
    tx = _txs(node_ctx, "forged", 1)[0]
    block = _block(node_ctx, [tx])
    node_ctx.chain.connect(block)
    forged = _forged(tx)
    assert forged.txid == tx.txid and forged.signature != tx.signature

    async def run():
        net = _network(node_ctx)
        net.announce_block(block)
        peer = _Peer(b"\x07" * 20)
        await net.on_tx(peer, forged.raw)
        while net._tx_task is not None and not net._tx_task.done():
            await asyncio.sleep(0.001)
        await net.close()
        return peer, net

    peer, net = asyncio.run(run())
    assert peer.banscore >= net_mod.BAN_SCORE
    assert net.is_banned(b"\x07" * 20)


def test_p2p_relay_a_compact_block_uses_txs_waiting_for_their_relay_check(node_ctx,
                                                                          monkeypatch):
    txs = _txs(node_ctx, "waiting", 4)
    block = _block(node_ctx, txs)
    monkeypatch.setattr(net_mod, "RELAY_GATHER", 30.0)  # the relay check waits: none pooled

    async def run():
        net = _network(node_ctx)
        peer = _Peer(node_ctx.wallet.default.pubkey_hash)
        for tx in txs[1:]:
            await net.on_tx(peer, tx.raw)
        node_ctx.submit_tx(txs[0], local=False, verified=True, relay=False)
        await net.on_cmpctblock(peer, m.CompactBlock(block.header, block.signature, tuple(
            (t.txid, m.raw_hash(t.raw)) for t in txs)).encode())
        await net.close()
        return peer

    peer = asyncio.run(run())
    assert [t for t, _ in peer.sent if t == Msg.GETBLOCKTXN] == []
    assert node_ctx.chain.height == block.height
    assert node_ctx.chain.state.tip_hash == block.hash
    assert len(node_ctx.mempool) == 0


def test_p2p_relay_a_compact_block_with_a_forged_waiting_tx_is_refused(node_ctx, monkeypatch):
    txs = _txs(node_ctx, "forged-wait", 2)
    forged = _forged(txs[1])
    block = _block(node_ctx, [txs[0], forged])
    monkeypatch.setattr(net_mod, "RELAY_GATHER", 30.0)

    async def run():
        net = _network(node_ctx)
        relayer, miner = _Peer(b"\x05" * 20), _Peer(b"\x06" * 20)
        await net.on_tx(relayer, forged.raw)
        node_ctx.submit_tx(txs[0], local=False, verified=True, relay=False)
        await net.on_cmpctblock(miner, m.CompactBlock(block.header, block.signature, tuple(
            (t.txid, m.raw_hash(t.raw)) for t in block.txs)).encode())
        await net.close()
        return miner

    before = node_ctx.chain.height
    miner = asyncio.run(run())
    assert node_ctx.chain.height == before
    assert miner.banscore >= net_mod.BAN_SCORE


def test_p2p_relay_the_same_tx_from_two_peers_is_checked_once(node_ctx, monkeypatch):
    tx = _txs(node_ctx, "twice", 1)[0]
    checked: list[bytes] = []

    async def run():
        net = _network(node_ctx)
        check = net._check_relayed

        def spy(batch):
            checked.extend(t.txid for t in batch)
            return check(batch)

        monkeypatch.setattr(net, "_check_relayed", spy)
        a, c = _Peer(b"\x01" * 20), _Peer(b"\x02" * 20)
        await net.on_tx(a, tx.raw)
        await net.on_tx(c, tx.raw)
        while net._tx_task is not None and not net._tx_task.done():
            await asyncio.sleep(0.001)
        await net.close()

    asyncio.run(run())
    assert checked == [tx.txid]
    assert tx.txid in node_ctx.mempool


def test_p2p_close_cancels_and_awaits_inbound_connections(node_ctx):
    """An inbound connection's task (started by the listening server, not by the network)
    is cancelled and awaited by close() as a dialled one is: none is left running once
    close() returns, when the node goes on to close its chain and store."""
    net = Network(node_ctx, port=0)  # an ephemeral port
    node_ctx.network = net

    def inbound() -> list[asyncio.Task]:
        return [t for t in asyncio.all_tasks() if not t.done()
                and getattr(t.get_coro(), "__qualname__", "") == "Network._accept"]

    async def scenario() -> None:
        await net.start()
        import socket

        port = next(s.getsockname()[1] for s in net.servers[0].sockets
                    if s.family == socket.AF_INET)
        _, writer = await asyncio.open_connection("127.0.0.1", port)  # never says hello
        for _ in range(100):
            if inbound():
                break
            await asyncio.sleep(0.01)
        assert len(inbound()) == 1
        await net.close()
        assert inbound() == []
        writer.close()

    asyncio.run(scenario())
