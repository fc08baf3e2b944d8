"""Network._decode_batch: a sync batch is decoded and its chunks handed to the signature
verifier as they are decoded; a block that does not decode refuses the whole batch.

A real node context (store, chain, mempool) as in test_chain_connect_many.py; the chunks are
small, so the verifier checks them on its calling thread (no worker processes start)."""

from __future__ import annotations

import asyncio
import gc
import threading
import time

import pytest
from node_helpers import fresh_node

from ledger.blocks import Block
from ledger.errors import DecodeError
from ledger.transactions import DataFormat, Publish, Transaction
from node.p2p import network as net_mod
from node.p2p.network import Network


@pytest.fixture
def node_ctx(tmp_path):
    with fresh_node(tmp_path, "cm", 12) as ctx:
        yield ctx


def _blocks(ctx, sizes: list[int]) -> list[Block]:
    """Consecutive blocks of one-item transactions on the tip, not connected."""
    chain, key = ctx.chain, ctx.wallet.default
    root = next(iter(chain.state.streams))
    tip, out = chain.tip_header, []
    height, prev, t = tip.height, tip.hash, tip.time_ms
    for k, n in enumerate(sizes):
        txs = [Transaction.create(key, [Publish(root, (f"b{k}-{i}",), DataFormat.RAW, b"x")],
                                  chain.chain_id, int(time.time())) for i in range(n)]
        height, t = height + 1, t + 1
        b = Block.build(key, chain.chain_id, height, prev, t, txs)
        out.append(b)
        prev = b.hash
    return out


def test_p2p_sync_decode_hands_every_chunk_to_the_verifier_in_order(node_ctx, monkeypatch):
    monkeypatch.setattr(net_mod, "VERIFY_CHUNK", 4)
    blocks = _blocks(node_ctx, [3, 2, 5, 1])

    async def run():
        net = Network(node_ctx, port=0, listen=False)
        decoded, chunks = net._decode_batch([b.raw for b in blocks])
        return decoded, chunks, [await c.verified for c in chunks]

    decoded, chunks, results = asyncio.run(run())
    assert [b.hash for b in decoded] == [b.hash for b in blocks]
    assert [[b.height for b in c.blocks] for c in chunks] == [
        [blocks[0].height, blocks[1].height], [blocks[2].height], [blocks[3].height]]
    assert [[t.txid for t in c.txs] for c in chunks] == [
        [t.txid for b in c.blocks for t in b.txs] for c in chunks]
    assert results == [[True] * len(c.txs) for c in chunks]


def test_p2p_sync_checks_run_on_the_syncs_own_threads_not_the_default_executor(
        node_ctx, monkeypatch):
    monkeypatch.setattr(net_mod, "VERIFY_CHUNK", 2)
    blocks = _blocks(node_ctx, [2, 2, 2])
    real = node_ctx.chain.verifier
    threads: list[str] = []

    def verifier(txs):
        threads.append(threading.current_thread().name)
        return real(txs)

    monkeypatch.setattr(node_ctx.chain, "verifier", verifier)

    async def run():
        net = Network(node_ctx, port=0, listen=False)
        _, chunks = net._decode_batch([b.raw for b in blocks])
        results = [await c.verified for c in chunks]
        await net.close()
        return results

    assert asyncio.run(run()) == [[True, True]] * 3
    assert len(threads) == 3
    assert all(name.startswith("sync-check") for name in threads), threads


def test_p2p_sync_decode_a_batch_not_on_the_tip_is_not_verified_here(node_ctx):
    blocks = _blocks(node_ctx, [2, 2])

    async def run():
        net = Network(node_ctx, port=0, listen=False)
        return net._decode_batch([b.raw for b in blocks[1:]])  # does not follow the tip

    decoded, chunks = asyncio.run(run())
    assert [b.hash for b in decoded] == [blocks[1].hash]
    assert chunks == []


def test_p2p_sync_decode_an_undecodable_block_refuses_the_batch_and_drops_the_checks(
        node_ctx, monkeypatch):
    monkeypatch.setattr(net_mod, "VERIFY_CHUNK", 2)
    blocks = _blocks(node_ctx, [2, 2, 2])
    raws = [b.raw for b in blocks]
    raws[-1] = raws[-1] + b"\x00"  # trailing byte: strict decoding refuses it
    started: list[asyncio.Future] = []

    async def run():
        net = Network(node_ctx, port=0, listen=False)
        verify = net._verify

        def spy(txs):
            fut = verify(txs)
            started.append(fut)
            return fut

        net._verify = spy
        with pytest.raises(DecodeError, match="trailing"):
            net._decode_batch(raws)
        await asyncio.sleep(0)

    asyncio.run(run())
    assert len(started) == 2  # the two chunks decoded before the bad block
    assert all(f.cancelled() for f in started)
    assert node_ctx.chain.height == blocks[0].height - 1  # nothing connected


class _Peer:
    """What Network.misbehave and _finish_sync read of a peer that passed the handshake."""

    def __init__(self) -> None:
        self.banscore = 0
        self.address_hash = bytes(20)
        self.address = "forger"
        self.addr = "192.0.2.1:1"
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_p2p_sync_decode_a_forged_signature_bans_and_connects_only_the_chunks_before(
        node_ctx, monkeypatch):
    monkeypatch.setattr(net_mod, "VERIFY_CHUNK", 1)  # a chunk per block
    good = _blocks(node_ctx, [2])
    chain, key = node_ctx.chain, node_ctx.wallet.default
    tx = _blocks(node_ctx, [1])[0].txs[0]
    forged = Transaction(tx.sender, tx.nonce, tx.time, tx.ops, key.sign(bytes(32)))
    tip = good[0]
    bad = Block.build(key, chain.chain_id, tip.height + 1, tip.hash, tip.header.time_ms + 1,
                      [forged])
    after = Block.build(key, chain.chain_id, bad.height + 1, bad.hash, bad.header.time_ms + 1,
                        _blocks(node_ctx, [1])[0].txs)
    peer = _Peer()

    async def run():
        net = Network(node_ctx, port=0, listen=False)
        blocks, chunks = net._decode_batch([b.raw for b in (*good, bad, after)])
        assert len(chunks) == 3
        ok = await net._extend(peer, blocks, chunks)
        return ok, chunks

    ok, chunks = asyncio.run(run())
    assert ok is False
    assert peer.closed and peer.banscore >= net_mod.BAN_SCORE
    assert node_ctx.chain.height == good[0].height  # neither the forged block nor the next


def test_p2p_sync_decode_decodes_with_the_collector_paused_and_restores_it(node_ctx,
                                                                            monkeypatch):
    blocks = _blocks(node_ctx, [2, 2])
    seen = []
    decode = Block.decode

    def watched(raw, max_size=None):
        seen.append(gc.isenabled())
        return decode(raw, max_size)

    monkeypatch.setattr(net_mod.Block, "decode", watched)

    async def run():
        net = Network(node_ctx, port=0, listen=False)
        decoded, chunks = net._decode_batch([b.raw for b in blocks])
        for c in chunks:
            await c.verified
        with pytest.raises(DecodeError):  # a refused batch restores it too
            net._decode_batch([blocks[0].raw, b"\x01junk"])

    assert gc.isenabled()
    asyncio.run(run())
    assert seen and not any(seen)
    assert gc.isenabled()


def test_p2p_sync_next_batch_is_decoded_and_checked_while_the_last_one_connects(node_ctx):
    """on_blocks hands a batch that continues the tip to a connect task of its own, so the
    serve loop reads, decodes and starts checking the next batch while it is connected; the
    connects still run one after the other, in order, and the sync then ends."""
    from test_p2p_relay import _Peer

    from node.p2p import messages as m

    blocks = _blocks(node_ctx, [2, 2, 2, 2])
    first, second = blocks[:2], blocks[2:]
    net = Network(node_ctx, port=0, listen=False)
    events: list[str] = []
    release = asyncio.Event()
    connect_blocks, verify = node_ctx.connect_blocks, net._verify

    async def slow_connect_blocks(batch, preverified):
        events.append(f"connect {batch[0].height}")
        if batch[0].hash == first[0].hash:
            await release.wait()
        done = await connect_blocks(batch, preverified)
        events.append(f"connected {batch[-1].height}")
        return done

    def spy_verify(txs):
        events.append(f"verify {len(txs)}")
        return verify(txs)

    node_ctx.connect_blocks, net._verify = slow_connect_blocks, spy_verify

    async def scenario() -> None:
        peer = _Peer(b"\x01" * 20)  # (its stream reader wants the running loop)
        peer.best_height = height = blocks[-1].height
        net._sync_peer = peer
        async def until(n: int) -> None:
            for _ in range(500):
                if len(events) >= n:
                    return
                await asyncio.sleep(0.01)

        await net.on_blocks(peer, m.encode_blocks(height, [b.raw for b in first]))
        await until(2)  # its check runs on a thread, then its connect starts
        assert events == ["verify 4", f"connect {first[0].height}"]
        later = asyncio.ensure_future(
            net.on_blocks(peer, m.encode_blocks(height, [b.raw for b in second])))
        await until(3)
        await asyncio.sleep(0.05)
        # The second batch is decoded and being checked; its handler waits for the first.
        assert events[2:] == ["verify 4"] and not later.done()
        assert node_ctx.chain.height == first[0].height - 1
        release.set()
        await later
        while net._sync_connecting is not None:
            await asyncio.sleep(0.01)
        await net.close()

    asyncio.run(scenario())
    assert events == ["verify 4", f"connect {first[0].height}", "verify 4",
                      f"connected {first[-1].height}", f"connect {second[0].height}",
                      f"connected {second[-1].height}"]
    assert node_ctx.chain.height == blocks[-1].height and net._sync_peer is None
