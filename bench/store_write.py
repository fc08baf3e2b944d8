"""The chain store's write cost per transaction, in-process: row making and `put_block`.

    python -m bench.store_write [--blocks 20] [--txs 500] [--rounds 3] [--many 0]

Builds `--blocks` blocks of `--txs` one-item transactions (a ~70-byte JSON item with its own
key each, as bench.publish sends) by connecting them on a node's chain once, keeps each
block with its consensus effects, then, each round, writes them all into a fresh SQLite
store: `Chain._write_for` (the rows of a block) and `ChainStore.put_block` (or
`put_blocks` of `--many` blocks at a time, as initial sync does), timed with the thread's
CPU time. Prints µs per transaction of each, median and min over the rounds.

CPU time drifts with the other load of a shared machine: run the base and the changed tree
alternately, or count instructions (valgrind) on two runs that differ in `--blocks`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import open_node_in_process
from ledger.blocks import Block
from ledger.store import ChainStore
from ledger.transactions import DataFormat, Publish, Transaction


def _record(i: int) -> bytes:
    return json.dumps({"serial": f"SN{i:08d}", "station": i % 40, "ok": True,
                       "torque": 12.5}, separators=(",", ":")).encode()


def build(tmp: Path, blocks: int, txs: int) -> tuple[Any, list[tuple[Block, Any]]]:
    """A chain with `blocks` blocks of `txs` transactions; returns it and (block, effects)."""
    ctx = open_node_in_process(tmp, "sw")
    chain, key = ctx.chain, ctx.wallet.default
    root = next(iter(chain.state.streams))
    now = int(time.time())
    out = []
    for b in range(blocks):
        tip = chain.tip_header
        block = Block.build(key, chain.chain_id, tip.height + 1, tip.hash, tip.time_ms + 1, [
            Transaction.create(key, [Publish(root, (f"SN{i:08d}",), DataFormat.JSON,
                                             _record(i))], chain.chain_id, now)
            for i in range(b * txs, (b + 1) * txs)])
        checked = chain.check(block)
        chain.commit(checked)
        out.append((block, checked.effects))
    return ctx, out


def one_round(tmp: Path, ctx: Any, made: list[tuple[Block, Any]], many: int
              ) -> tuple[float, float]:
    """Seconds of thread CPU: making every block's rows, and writing them to a fresh store."""
    path = tmp / f"round-{time.monotonic_ns()}.db"
    store = ChainStore(f"sqlite:///{path}")
    try:
        t0 = time.thread_time()
        writes = [ctx.chain._write_for(b, fx)[0] for b, fx in made]
        rows_s = time.thread_time() - t0
        t0 = time.thread_time()
        if many:
            for i in range(0, len(writes), many):
                store.put_blocks(writes[i:i + many])
        else:
            for w in writes:
                store.put_block(w)
        put_s = time.thread_time() - t0
    finally:
        store.close()
        for p in tmp.glob(f"{path.name}*"):
            p.unlink()
    return rows_s, put_s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.store_write",
                                description=__doc__.split("\n")[0])
    p.add_argument("--blocks", type=int, default=20, help="blocks (default 20)")
    p.add_argument("--txs", type=int, default=500, help="one-item txs per block (default 500)")
    p.add_argument("--rounds", type=int, default=3, help="fresh stores written (default 3)")
    p.add_argument("--many", type=int, default=0,
                   help="put_blocks of this many blocks at a time (default 0: put_block)")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="chainmill-store-write-"))
    try:
        ctx, made = build(tmp, args.blocks, args.txs)
        try:
            rows, puts = [], []
            for _ in range(args.rounds):
                r, w = one_round(tmp, ctx, made, args.many)
                n = args.blocks * args.txs
                rows.append(r / n * 1e6)
                puts.append(w / n * 1e6)
        finally:
            ctx.chain.close()
            ctx.store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = statistics.median
    print(f"rows {med(rows):.2f} us per tx (min {min(rows):.2f}); put_block "
          f"{med(puts):.2f} us per tx (min {min(puts):.2f}); {args.blocks} blocks of "
          f"{args.txs} txs, {args.rounds} rounds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
