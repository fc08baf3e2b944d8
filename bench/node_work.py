"""The node's own work per published item, in-process: publish handler → miner → connect.

No HTTP, no JSON-RPC dispatch, no load generator: the `publish` method handler is called
directly on a node's parts (a fresh chain in a temporary directory, SQLite store), and every
`--block` items the miner builds a block that the node connects as it does when running.
Prints the CPU per item (process time, all threads) of the two phases, median over blocks.

CPU time on a shared machine drifts with the other load; for a before/after figure count
instructions instead, which do not (two runs that differ only in `--items`, so that start-up
cancels out):

    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \\
        python -m bench.node_work --items 300      # then --items 1500
    # (I refs of the second - I refs of the first) / 1200 = instructions per item
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import open_node_in_process, solo_miner
from node.rpc.methods import streams


async def run(items: int, block: int) -> tuple[list[float], list[float]]:
    """µs of CPU per item of each block's publish calls and of its mining and connecting."""
    tmp = Path(tempfile.mkdtemp(prefix="chainmill-node-work-"))
    try:
        ctx = open_node_in_process(tmp, "nw")
        try:
            miner = solo_miner(ctx)
            streams.create(ctx, None, ["stream", "bench", True])
            await miner.mine_one()
            publish, mine = [], []
            for start in range(0, items, block):
                n = min(block, items - start)
                t0 = time.process_time()
                for i in range(start, start + n):
                    serial = f"SN{i:08d}"
                    streams.publish(ctx, None, ["bench", serial, {"json": {
                        "serial": serial, "station": 10, "ok": True, "torque": 12.5}}])
                t1 = time.process_time()
                await miner.mine_one()
                t2 = time.process_time()
                if len(ctx.mempool):
                    raise RuntimeError("the block did not take every pooled transaction")
                publish.append((t1 - t0) / n * 1e6)
                mine.append((t2 - t1) / n * 1e6)
            return publish, mine
        finally:
            ctx.chain.close()
            ctx.store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.node_work", description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=6000, help="items published (default 6000)")
    p.add_argument("--block", type=int, default=300, help="items per block (default 300)")
    args = p.parse_args(argv)
    publish, mine = asyncio.run(run(args.items, args.block))
    med = statistics.median
    print(f"publish handler {med(publish):.1f} us per item (min {min(publish):.1f}); "
          f"mine + connect {med(mine):.1f} us per item (min {min(mine):.1f}); "
          f"{len(publish)} blocks of {args.block}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
