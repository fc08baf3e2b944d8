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

With `--batch B` the items go in as JSON-RPC batch bodies of B `publish` calls through the
node's Dispatcher (`handle_body_now`, as the RPC port calls it, without the socket), so the
publish phase also counts the dispatch of each batch element (parse, checks, the slices a
long batch runs in, the answer's encoding).

`--publish-only` leaves the items in the pool (no block is mined after the stream's), so
the same two runs count the publish handler alone.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import orjson

from bench.common import open_node_in_process, solo_miner
from node.rpc.dispatch import Dispatcher, MethodTable
from node.rpc.methods import register_all, streams


def _item(i: int) -> tuple[str, dict[str, object]]:
    serial = f"SN{i:08d}"
    return serial, {"json": {"serial": serial, "station": 10, "ok": True, "torque": 12.5}}


def _batch_body(first: int, count: int) -> bytes:
    calls = []
    for i in range(first, first + count):
        serial, data = _item(i)
        calls.append({"method": "publish", "params": ["bench", serial, data], "id": i})
    return orjson.dumps(calls)


async def _answered(dispatcher: Dispatcher, body: bytes) -> bytes:
    answer = dispatcher.handle_body_now(body, lambda out, status: out)
    if answer is None:
        return (await dispatcher.handle_body(body))[0]
    if isinstance(answer, bytes):
        return answer
    return await answer


async def run(items: int, block: int, batch: int = 0, mine_blocks: bool = True,
              ) -> tuple[list[float], list[float]]:
    """µs of CPU per item of each block's publish calls and of its mining and connecting
    (without `mine_blocks`, the items stay pooled and the second list is empty)."""
    tmp = Path(tempfile.mkdtemp(prefix="chainmill-node-work-"))
    try:
        ctx = open_node_in_process(tmp, "nw")
        try:
            miner = solo_miner(ctx)
            streams.create(ctx, None, ["stream", "bench", True])
            await miner.mine_one()
            table = MethodTable()
            register_all(table, ctx)
            dispatcher = Dispatcher(table, chain_name="nw")
            dispatcher.read_barrier = ctx.consistent
            publish, mine = [], []
            for start in range(0, items, block):
                n = min(block, items - start)
                bodies = [_batch_body(first, min(batch, start + n - first))
                          for first in range(start, start + n, batch)] if batch else []
                t0 = time.process_time()
                if batch:
                    for body in bodies:
                        if b'"error":null' not in await _answered(dispatcher, body):
                            raise RuntimeError("a batch element failed")
                else:
                    for i in range(start, start + n):
                        serial, data = _item(i)
                        streams.publish(ctx, None, ["bench", serial, data])
                t1 = time.process_time()
                publish.append((t1 - t0) / n * 1e6)
                if not mine_blocks:
                    continue
                await miner.mine_one()
                t2 = time.process_time()
                if len(ctx.mempool):
                    raise RuntimeError("the block did not take every pooled transaction")
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
    p.add_argument("--batch", type=int, default=0,
                   help="publish through the Dispatcher in JSON-RPC batches of this many calls "
                        "(default 0: call the handler directly)")
    p.add_argument("--publish-only", action="store_true",
                   help="no blocks: the handler's work alone (the items stay pooled)")
    args = p.parse_args(argv)
    publish, mine = asyncio.run(run(args.items, args.block, args.batch, not args.publish_only))
    med = statistics.median
    if not mine:
        print(f"publish handler {med(publish):.1f} us per item (min {min(publish):.1f}); "
              f"{len(publish)} rounds of {args.block}, no blocks"
              + (f", batches of {args.batch}" if args.batch else ""))
        return 0
    print(f"publish handler {med(publish):.1f} us per item (min {min(publish):.1f}); "
          f"mine + connect {med(mine):.1f} us per item (min {min(mine):.1f}); "
          f"{len(publish)} blocks of {args.block}"
          + (f", batches of {args.batch}" if args.batch else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
