"""A catching-up node's main-process work per synced item, in-process: decode + connect.

A chain of one-item `publish` transactions is built once (a node's parts in a temporary
directory, as `bench.node_work` does); its blocks are then synced into a fresh store the
way a joining node's main process handles a sync batch, phase by phase, with signatures
counted as checked (they are verified on the worker processes):

* decode: `Block.decode` of each block and the txid of each transaction, with the cyclic
  collector paused as the node's `_decode_batch` does;
* handoff: what the verifier makes for its worker processes (the (public key, signature,
  txid) triples, checked for the pipe format and packed as `ParallelVerifier` does);
* connect: `Chain.connect_many` of the batch (validation, store rows, the store commit).

Prints CPU µs per item of each phase (process time), median over `--rounds` fresh stores.
For a load-independent figure count instructions: two runs that differ only in `--rounds`
under `valgrind --tool=cachegrind --cache-sim=no`, difference / (extra rounds × items).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import open_node_in_process, solo_miner
from ledger.blocks import Block
from ledger.store import ChainStore
from node.chain import Chain, collector_paused
from node.rpc.methods import streams
from node.verifier import pack_signed, packable


async def build_chain(tmp: Path, items: int, block: int) -> tuple[dict, object, list[bytes]]:
    """A chain of `items` one-item transactions in blocks of `block`: params, codec, raws."""
    ctx = open_node_in_process(tmp, "sw", seed=5)
    try:
        miner = solo_miner(ctx)
        streams.create(ctx, None, ["stream", "bench", True])
        await miner.mine_one()
        for start in range(0, items, block):
            for i in range(start, min(items, start + block)):
                serial = f"SN{i:08d}"
                streams.publish(ctx, None, ["bench", serial, {"json": {
                    "serial": serial, "station": 10, "ok": True, "torque": 12.5}}])
            await miner.mine_one()
        raws = [ctx.store.block_raw(h) for h in range(ctx.chain.height + 1)]
        return dict(ctx.chain.params), ctx.chain.codec, [r for r in raws if r is not None]
    finally:
        ctx.chain.close()
        ctx.store.close()


def sync_once(tmp: Path, n: int, params: dict, codec: object, raws: list[bytes]
              ) -> tuple[float, float, float, int]:
    """Sync `raws` into a fresh store: CPU seconds of decode, handoff, connect; items."""
    store = ChainStore(f"sqlite:///{tmp / f'fresh-{n}.db'}")
    chain = Chain(store, params, codec)  # type: ignore[arg-type]
    try:
        gc.collect()
        t0 = time.process_time()
        with collector_paused():  # as the node's `_decode_batch` decodes a sync batch
            blocks = [Block.decode(r) for r in raws]
            pre = [{t.txid for t in b.txs} for b in blocks]
        t1 = time.process_time()
        for b in blocks:
            signed = [(t.sender, t.signature, t.txid) for t in b.txs]
            if packable(signed):
                pack_signed(signed)
        t2 = time.process_time()
        done = chain.connect_many(blocks, pre)
        t3 = time.process_time()
        if done.error is not None:
            raise RuntimeError(f"sync refused a block: {done.error}")
        items = sum(len(t.ops) for b in blocks for t in b.txs)
        return t1 - t0, t2 - t1, t3 - t2, items
    finally:
        chain.close()
        store.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sync_work",
                                description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=6000, help="items in the chain (default 6000)")
    p.add_argument("--block", type=int, default=1000, help="items per block (default 1000)")
    p.add_argument("--rounds", type=int, default=5, help="fresh stores synced (default 5)")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="chainmill-sync-work-"))
    try:
        params, codec, raws = asyncio.run(build_chain(tmp, args.items, args.block))
        rows = [sync_once(tmp, n, params, codec, raws) for n in range(args.rounds)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    items = rows[0][3]
    med = statistics.median
    dec, hand, conn = ([r[k] / items * 1e6 for r in rows] for k in range(3))
    print(f"decode {med(dec):.1f} (min {min(dec):.1f}); handoff {med(hand):.1f} "
          f"(min {min(hand):.1f}); connect {med(conn):.1f} (min {min(conn):.1f}) us per item; "
          f"{items} items in {len(raws)} blocks, {len(rows)} rounds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
