"""Storage benchmark: bytes on disk per confirmed stream item, by table and for the data dir.

    python -m bench.storage [--items N] [--path batch] [--out bench/results/storage.json]

Starts a node on a fresh chain (as bench.publish does), publishes N items of the publish
benchmark (a ~70-byte JSON record with its own key, one item per transaction unless
`--path multi`), waits until all are confirmed, stops the node cleanly and then measures:

- the data directory: every file's size (chain.db, its -wal, the own-transaction journal,
  mempool.dat, keys, logs) and the total, per item;
- the chain store: SQLite's `dbstat` virtual table, bytes per table and per index (what the
  pages take, with their free space), per item; `blocks` alone is the raw chain;
- the fill's CPU per item (node, load generator) in µs and in verifies, with the verify rate
  of the same run (bench.common.measure_verify) and the other processes' load.

`--put-block N` measures, in this process, the CPU time (thread time) of the chain store's
`put_block` and of a few readers on a store of N one-item transactions in blocks of 1,000
connected through node.chain.Chain: the store's own cost, free of RPC and of other load.

`--datadir DIR --measure-only` measures an existing, stopped node's data directory instead
(e.g. one kept by `bench.publish --keep`). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

from bench.common import BenchNode, machine_info, measure_verify, open_node_in_process
from bench.publish import add_ratios, combine_verify, run_path


def dir_sizes(root: Path) -> dict[str, int]:
    """Bytes of every regular file under `root`, by path relative to it."""
    return {str(p.relative_to(root)): p.stat().st_size
            for p in sorted(root.rglob("*")) if p.is_file()}


def table_sizes(db_path: Path) -> dict[str, int]:
    """Bytes of pages per table and index of a SQLite file (the dbstat virtual table)."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name "
                          "ORDER BY SUM(pgsize) DESC").fetchall()
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0] * page_size
    finally:
        db.close()
    out = {name: int(size) for name, size in rows}
    out["(free pages)"] = free
    return out


def confirmed_items(db_path: Path) -> int:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    finally:
        db.close()


def measure(chain_dir: Path, items: int) -> dict[str, Any]:
    files = dir_sizes(chain_dir)
    tables = table_sizes(chain_dir / "chain.db")
    total = sum(files.values())
    return {
        "items": items,
        "data_dir_bytes": total,
        "data_dir_bytes_per_item": round(total / items, 1),
        "files_bytes_per_item": {k: round(v / items, 1) for k, v in files.items()
                                 if v / items >= 0.05},
        "tables_bytes_per_item": {k: round(v / items, 1) for k, v in tables.items()},
        "blocks_bytes_per_item": round(tables.get("blocks", 0) / items, 1),
    }


def print_report(m: dict[str, Any]) -> None:
    print(f"\n{m['items']:,} items: data directory {m['data_dir_bytes']:,} bytes = "
          f"{m['data_dir_bytes_per_item']:,} bytes per item")
    print("files (bytes per item):")
    for k, v in m["files_bytes_per_item"].items():
        print(f"  {k:<28} {v:>9,.1f}")
    print("chain.db tables and indexes (bytes per item):")
    for k, v in m["tables_bytes_per_item"].items():
        print(f"  {k:<28} {v:>9,.1f}")


def put_block_cost(items: int, per_block: int = 1000) -> dict[str, Any]:
    """CPU µs per item of ChainStore.put_block, and of reading items back, in-process."""
    import tempfile
    import time

    from ledger.blocks import Block
    from ledger.transactions import DataFormat, Publish, Transaction

    with tempfile.TemporaryDirectory() as tmp:
        ctx = open_node_in_process(Path(tmp), "pb")
        chain, key, store = ctx.chain, ctx.wallet.default, ctx.store
        root = next(iter(chain.state.streams))
        spent = [0.0]
        real_put = store.put_block

        def timed_put(write: Any, **kw: Any) -> None:
            t0 = time.thread_time()
            real_put(write, **kw)
            spent[0] += time.thread_time() - t0

        store.put_block = timed_put
        now = int(time.time())
        for b in range(0, items, per_block):
            txs = [Transaction.create(key, [Publish(root, (f"SN{i:08d}",), DataFormat.JSON,
                                                    _record(i))], chain.chain_id, now)
                   for i in range(b, min(items, b + per_block))]
            tip = chain.tip_header
            chain.connect(Block.build(key, chain.chain_id, tip.height + 1, tip.hash,
                                      tip.time_ms + 1, txs))
        hexroot = root.hex()
        t0 = time.thread_time()
        read = 0
        for off in range(0, items, 100):
            read += len(store.items(hexroot, off, 100))
        read_s = time.thread_time() - t0
        t0 = time.thread_time()
        for i in range(0, items, max(1, items // 1000)):
            store.last_item(hexroot, key=f"SN{i:08d}")
        key_s = time.thread_time() - t0
        ctx.chain.close()
        store.close()
        return {"items": items, "items_per_block": per_block,
                "put_block_us_per_item": round(spent[0] / items * 1e6, 1),
                "liststreamitems_us_per_item": round(read_s / read * 1e6, 1),
                "last_item_by_key_us": round(key_s / len(range(0, items,
                                                               max(1, items // 1000))) * 1e6, 1)}


def _record(i: int) -> bytes:
    return json.dumps({"serial": f"SN{i:08d}", "station": i % 40, "ok": True,
                       "torque": 12.5}, separators=(",", ":")).encode()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.storage", description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=100_000, help="items to publish (100000)")
    p.add_argument("--path", choices=("batch", "single", "multi"), default="batch",
                   help="how to publish (bench.publish paths; default batch: JSON-RPC "
                        "batches of B one-item publish calls)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--batch", type=int, default=32, help="B (default 32)")
    p.add_argument("--block-time", type=float, default=2.0, help="target-block-time (2.0)")
    p.add_argument("--deadline", type=float, default=300.0, help="send deadline, s (300)")
    p.add_argument("--out", default="bench/results/storage.json", help="JSON results file")
    p.add_argument("--datadir", help="use (and keep) this data directory")
    p.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    p.add_argument("--put-block", type=int, metavar="N",
                   help="only the in-process put_block and reader cost on N items")
    p.add_argument("--measure-only", action="store_true",
                   help="only measure the stopped node in --datadir (chain `bench`)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    if args.put_block:
        verify = measure_verify(0.5)
        r = put_block_cost(args.put_block)
        per_verify = verify["reference_per_s"] / 1e6
        r["put_block_verifies_per_item"] = round(r["put_block_us_per_item"] * per_verify, 2)
        print(json.dumps({"verify_per_s": round(verify["reference_per_s"]), **r}))
        return 0
    if args.measure_only:
        if not args.datadir:
            print("error: --measure-only needs --datadir", file=sys.stderr)
            return 1
        chain_dir = Path(args.datadir) / "bench"
        m = measure(chain_dir, confirmed_items(chain_dir / "chain.db"))
        print_report(m)
        return 0
    verify_start = measure_verify(0.5)
    print(f"{verify_start['reference_per_s']:,.0f} verifies per CPU second (1 thread, DER)",
          flush=True)
    node = BenchNode(block_time=args.block_time, datadir=args.datadir, keep=args.keep)
    fill: dict[str, Any] = {}
    try:
        node.create()
        node.start(["rpckeepalive=1"])
        print(f"publishing {args.items:,} items ({args.path}) to node pid {node.pid}...",
              flush=True)
        fill = asyncio.run(run_path(node, args.path, items=args.items, clients=args.clients,
                                    batch=args.batch, deadline_s=args.deadline,
                                    keepalive=True))
        node.stop()
        m = measure(node.chain_dir, confirmed_items(node.chain_dir / "chain.db"))
    finally:
        node.stop()
        node.close()
    verify = combine_verify(verify_start, measure_verify(0.5))
    add_ratios(fill, verify["reference_per_s"])
    print_report(m)
    print(f"fill: {fill['confirmed_items_per_s']:,.0f} confirmed items/s, node CPU "
          f"{fill['cpu_per_item']['node_us']} us per item "
          f"({fill['cpu_per_item_in_verifies']['node']} verifies), other processes "
          f"{fill['cpu']['other_processes_cores']} cores")
    out = {"bench": "storage", "started": started, "machine": machine_info(),
           "config": {"items": args.items, "path": args.path, "clients": args.clients,
                      "batch": args.batch, "block_time_s": args.block_time},
           "verify": verify, "storage": m, "fill": fill}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
        print(f"results written to {args.out}")
    return 0 if fill.get("complete") else 1


if __name__ == "__main__":
    sys.exit(main())
