"""A relaying node's own work per transaction, in-process: INV, TX, admission, compact block.

One node's parts (a fresh chain in a temporary directory, SQLite store, the verifier's worker
processes) and its `Network`, with two peers on real Noise sessions whose other ends are
played here: peer A announces `--block` transactions (INV), sends them (one TX message each,
sealed), peer C announces them too, C asks for them all (GETDATA: the node serves them), then A
sends the block as a CMPCTBLOCK that the node rebuilds from its pool and connects. With
`--late F`, a fraction F of the transactions reach the node only after the block (it asks
for them with GETBLOCKTXN, then the late TX messages arrive), as when a miner includes
transactions its peers have not received yet.

Prints the CPU per transaction of each phase: the node's main process (all threads) and its
verifier worker processes, median over blocks. The peers' own sealing is done beforehand and
not counted. On a shared machine compare base and new alternated in the same minutes, or
count instructions (`valgrind --tool=cachegrind`, two runs differing in `--blocks`).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import open_node_in_process, proc_cpu
from ledger.blocks import Block
from ledger.transactions import DataFormat, Publish, Transaction
from node.p2p import messages as m
from node.p2p.messages import Inv, Msg
from node.p2p.network import Network
from node.p2p.peer import Peer
from node.p2p.session import NoiseHandshake, Transport

INV_CHUNK = 100
"""Announcements per INV (about what a 50 ms flush carries at 2,000 transactions/s)."""


class _Sink:
    """The write side of a peer connection whose bytes go nowhere."""

    class _T:
        def get_write_buffer_size(self) -> int:
            return 0

    def __init__(self) -> None:
        self.transport = self._T()
        self.written = 0

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1)

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def close(self) -> None:
        pass


def _session() -> tuple[Transport, Transport]:
    """Both ends of a completed Noise session: (node's end, the peer's end)."""
    a, b = NoiseHandshake(initiator=True), NoiseHandshake(initiator=False)
    msg: bytes | None = a.first()
    sides = [b, a]
    while msg is not None:
        side = sides[0]
        msg = side.receive(msg)
        sides.reverse()
        if a.complete and b.complete:
            break
    return b.transport(), a.transport()


class _RemotePeer:
    """A peer as the node sees it, and the sealing end of the other side."""

    def __init__(self, address_hash: bytes) -> None:
        mine, theirs = _session()
        self.sink = _Sink()
        self.peer = Peer(asyncio.StreamReader(), self.sink, b"\0\0\0\0", inbound=True)  # type: ignore[arg-type]
        self.peer.transport = mine
        self.peer.address_hash = address_hash
        self.peer.address = "peer"
        self.peer.version = m.PROTOCOL
        self.peer.ready = True
        self.theirs = theirs

    def seal(self, msgs: list[tuple[int, bytes]]) -> bytes:
        return b"".join(self.theirs.seal(t, p) for t, p in msgs)


async def _deliver(net: Network, rp: _RemotePeer, data: bytes) -> None:
    """The node reads and handles `data` as it does a live peer's stream, to its end."""
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    rp.peer.reader = reader
    try:
        await net._serve(rp.peer)
    except asyncio.IncompleteReadError:
        pass


async def _settle(net: Network) -> None:
    while (net._tx_task is not None and not net._tx_task.done()) or net._tx_queue:
        await asyncio.sleep(0.001)
    if net._inv_task is not None:
        await net._inv_task


def _worker_cpu(net: Network) -> float:
    procs = getattr(net.chain.verifier, "_procs", None)
    return sum(proc_cpu(pid) or 0.0 for pid in list(getattr(procs, "_processes", {}) or {}))


async def run(blocks: int, block: int, late: float) -> dict[str, list[tuple[float, float]]]:
    tmp = Path(tempfile.mkdtemp(prefix="chainmill-relay-work-"))
    phases: dict[str, list[tuple[float, float]]] = {}
    try:
        ctx = open_node_in_process(tmp, "rw")
        net = Network(ctx, port=0, listen=False)
        ctx.network = net
        try:
            ctx.chain.verifier.start()
            key = ctx.wallet.default
            chain = ctx.chain
            root = next(iter(chain.state.streams))
            a, c = _RemotePeer(key.pubkey_hash), _RemotePeer(key.pubkey_hash)
            for rp in (a, c):
                net.peers[rp.peer.id] = rp.peer
            rng = random.Random(5)
            for k in range(blocks):
                txs = [Transaction.create(key, [Publish(
                    root, (f"SN{k:04d}{i:06d}",), DataFormat.JSON,
                    b'{"serial":"SN%08d","station":10,"ok":true,"torque":12.5}' % i)],
                    chain.chain_id, int(time.time())) for i in range(block)]
                tip = chain.tip_header
                b = Block.build(key, chain.chain_id, tip.height + 1, tip.hash, tip.time_ms + 1,
                                txs)
                held = set(rng.sample(range(block), int(block * late)))
                early = [t for i, t in enumerate(txs) if i not in held]
                invs = [(Msg.INV, m.encode_inv([(Inv.TX, t.txid) for t in txs[i:i + INV_CHUNK]]))
                        for i in range(0, block, INV_CHUNK)]
                steps = [
                    ("inv from A", a, invs),
                    ("tx from A + admission", a, [(Msg.TX, t.raw) for t in early]),
                    ("inv from C (pooled)", c, invs),
                    ("getdata from C (serve)", c, [(Msg.GETDATA, m.encode_inv(
                        [(Inv.TX, t.txid) for t in early[i:i + INV_CHUNK]]))
                        for i in range(0, len(early), INV_CHUNK)]),
                    ("cmpctblock from A + connect", a, [(Msg.CMPCTBLOCK, m.CompactBlock(
                        b.header, b.signature, tuple((t.txid, m.raw_hash(t.raw)) for t in txs)
                    ).encode())]),
                ]
                if held:
                    order = sorted(held)
                    steps += [
                        ("blocktxn from A + connect", a, [(Msg.BLOCKTXN, m.encode_blocktxn(
                            b.hash, [txs[i].raw for i in order]))]),
                        ("late tx from A", a, [(Msg.TX, txs[i].raw) for i in order]),
                    ]
                sealed = [(name, rp, rp.seal(msgs)) for name, rp, msgs in steps]
                for name, rp, data in sealed:
                    w0, t0 = _worker_cpu(net), time.process_time()
                    await _deliver(net, rp, data)
                    await _settle(net)
                    t1, w1 = time.process_time(), _worker_cpu(net)
                    phases.setdefault(name, []).append(((t1 - t0) / block * 1e6,
                                                        (w1 - w0) / block * 1e6))
                if chain.height != b.height or len(ctx.mempool):
                    raise RuntimeError("the block was not connected from the relayed txs")
            return phases
        finally:
            await net.close()
            ctx.chain.close()
            ctx.store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.relay_work",
                                description=__doc__.split("\n")[0])
    p.add_argument("--blocks", type=int, default=10, help="blocks relayed (default 10)")
    p.add_argument("--block", type=int, default=1000, help="transactions per block")
    p.add_argument("--late", type=float, default=0.0,
                   help="fraction of the transactions that arrive after the block")
    args = p.parse_args(argv)
    phases = asyncio.run(run(args.blocks, args.block, args.late))
    med = statistics.median
    total_main = total_workers = 0.0
    for name, vals in phases.items():
        main_us, workers_us = med(v[0] for v in vals), med(v[1] for v in vals)
        total_main += main_us
        total_workers += workers_us
        print(f"{name:32s} main {main_us:7.1f} us per tx, verifier workers {workers_us:6.1f}")
    print(f"{'all':32s} main {total_main:7.1f} us per tx, verifier workers {total_workers:6.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
