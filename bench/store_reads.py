"""Store readers benchmark: what the chain store's per-call reads cost, in this process.

    python -m bench.store_reads [--items N] [--calls C] [--db-url URL] [--out FILE]
    python -m bench.store_reads --slice-block-txs T [--db-url URL]

Builds a chain in a temporary directory through node.chain.Chain, as `bench.storage
--put-block` does (N one-item transactions, each item with its own key, in blocks of
1,000), on SQLite or on an empty database given by `--db-url` (PostgreSQL, MariaDB), then
calls each reader the RPC layer uses C times with varying arguments and reports the thread
CPU time per call (µs, and in verifies with the verify rate of the same run): `last_item`
by key, one page of `liststreamitems` / `liststreamkeyitems` / `liststreampublisheritems`,
`count_items` of a key, `tx_row`, `item_by_id`, `block_row`, `get_meta`, ...

`--slice-block-txs T` instead stores one block of T transactions (a JSON item each, about
250 bytes per transaction) and times reading the last transaction and the last item of that
block (slices at its end) and the first ones: wall time per read (on a SQL server the work
is the server's, not this process's), median of C reads. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import machine_cpu, machine_info, measure_verify, open_node_in_process, self_cpu


def _record(i: int) -> bytes:
    return json.dumps({"serial": f"SN{i:08d}", "station": i % 40, "ok": True,
                       "torque": 12.5 + i % 7}, separators=(",", ":")).encode()


def _open_chain(tmp: Path, db_url: str | None) -> Any:
    return open_node_in_process(tmp, "sr", options={"db_url": db_url} if db_url else None)


def _connect(ctx: Any, first: int, count: int) -> list[str]:
    """One block of `count` one-item transactions on the tip; their txids."""
    from ledger.blocks import Block
    from ledger.transactions import DataFormat, Publish, Transaction

    chain, key = ctx.chain, ctx.wallet.default
    root = next(iter(chain.state.streams))
    now = int(time.time())
    txs = [Transaction.create(key, [Publish(root, (f"SN{i:08d}",), DataFormat.JSON,
                                            _record(i))], chain.chain_id, now)
           for i in range(first, first + count)]
    tip = chain.tip_header
    chain.connect(Block.build(key, chain.chain_id, tip.height + 1, tip.hash, tip.time_ms + 1,
                              txs))
    return [t.txid.hex() for t in txs]


def reader_costs(items: int, calls: int, db_url: str | None) -> tuple[dict[str, float], float]:
    """Thread CPU µs per call of each reader on a chain of `items` one-item transactions,
    and the cores other processes kept busy meanwhile (a SQL server's work among them)."""
    with tempfile.TemporaryDirectory() as tmp:
        ctx = _open_chain(Path(tmp), db_url)
        try:
            store = ctx.store
            txids: list[str] = []
            for b in range(0, items, 1000):
                txids += _connect(ctx, b, min(1000, items - b))
            stream = next(iter(ctx.chain.state.streams)).hex()
            publisher = store.items(stream, 0, 1)[0].publisher
            tip = store.tip()
            readers: dict[str, Callable[[int], object]] = {
                "last_item_by_key": lambda i: store.last_item(stream, key=f"SN{i:08d}"),
                "items_page_20": lambda i: store.items(stream, i, 20),
                "items_newest_20": lambda i: store.items(stream, items - 20, 20),
                "key_items": lambda i: store.items(stream, 0, 10, key=f"SN{i:08d}"),
                "count_key": lambda i: store.count_items(stream, key=f"SN{i:08d}"),
                "count_stream": lambda i: store.count_items(stream),
                "publisher_newest_20": lambda i: store.items(stream, items - 20, 20,
                                                             publisher=publisher),
                "items_by_txids_1": lambda i: store.items_by_txids(stream, [txids[i]]),
                "items_by_tx": lambda i: store.items_by_tx(txids[i]),
                "tx_row": lambda i: store.tx_row(txids[i]),
                "item_by_id": lambda i: store.item_by_id(i + 1),
                "key_counts_1": lambda i: store.key_counts(stream, [f"SN{i:08d}"]),
                "distinct_counts": lambda i: store.distinct_counts(stream),
                "block_row": lambda i: store.block_row(1 + i % tip.height),
                "block_row_by_hash": lambda i: store.block_row(hash_hex=tip.hash),
                "tip": lambda i: store.tip(),
                "get_meta": lambda i: store.get_meta("schema"),
            }
            out: dict[str, float] = {}
            wall0, machine0, self0 = time.monotonic(), machine_cpu(), self_cpu()
            for name, read in readers.items():
                for i in range(20):  # warm: connections, caches
                    read(i)
                t0 = time.thread_time()
                for i in range(calls):
                    read(i * 7919 % items)
                out[name] = round((time.thread_time() - t0) / calls * 1e6, 1)
            others = machine_cpu() - machine0 - (self_cpu() - self0)
            return out, round(max(0.0, others) / (time.monotonic() - wall0), 2)
        finally:
            ctx.chain.close()
            ctx.store.close()


def slice_costs(txs: int, calls: int, db_url: str | None) -> dict[str, Any]:
    """Wall µs (median of `calls`) to read slices at the start and at the end of one big
    block: its first and last transaction (`tx_row`) and item (`item_by_id`)."""
    with tempfile.TemporaryDirectory() as tmp:
        ctx = _open_chain(Path(tmp), db_url)
        try:
            store = ctx.store
            txids = _connect(ctx, 0, txs)
            block = store.tip()
            first_item = store.items_by_tx(txids[0])[0].id
            last_item = store.items_by_tx(txids[-1])[0].id
            reads: dict[str, Callable[[], object]] = {
                "first_tx": lambda: store.tx_row(txids[0]),
                "last_tx": lambda: store.tx_row(txids[-1]),
                "first_item": lambda: store.item_by_id(first_item),
                "last_item": lambda: store.item_by_id(last_item),
            }
            out: dict[str, Any] = {"block_bytes": block.size, "block_txs": txs}
            if store.engine.dialect.name == "postgresql":
                out.update(_postgres_slices(store, block.height, txids, calls))
            for name, read in reads.items():
                read()
                times = []
                for _ in range(calls):
                    t0 = time.perf_counter()
                    read()
                    times.append(time.perf_counter() - t0)
                out[f"{name}_us"] = round(statistics.median(times) * 1e6, 1)
            return out
        finally:
            ctx.chain.close()
            ctx.store.close()


def _postgres_slices(store: Any, height: int, txids: list[str], calls: int) -> dict[str, Any]:
    """PostgreSQL: the block's stored size (TOAST-compressed or not) and the server's own
    execution time (EXPLAIN ANALYZE, median) of `substr` for the first and the last
    transaction, free of the round trip and of this process."""
    import sqlalchemy as sa

    out: dict[str, Any] = {}
    with store.engine.connect() as c:
        out["block_stored_bytes"] = c.scalar(sa.text(
            "SELECT pg_column_size(raw) FROM blocks WHERE height = :h"), {"h": height})
        for name, txid in (("first", txids[0]), ("last", txids[-1])):
            start, size = c.execute(sa.text(
                "SELECT raw_start, raw_size FROM transactions WHERE txid = :t"),
                {"t": bytes.fromhex(txid)}).one()
            times = []
            for _ in range(calls):
                plan = c.scalars(sa.text(
                    "EXPLAIN (ANALYZE, FORMAT JSON) SELECT substr(raw, :s, :n) FROM blocks "
                    "WHERE height = :h"), {"s": start + 1, "n": size, "h": height}).one()
                times.append(plan[0]["Execution Time"])
            out[f"{name}_tx_substr_server_us"] = round(statistics.median(times) * 1e3, 1)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.store_reads",
                                description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=10_000, help="items on the chain (10000)")
    p.add_argument("--calls", type=int, default=400, help="calls per reader (400)")
    p.add_argument("--db-url", help="an empty PostgreSQL or MariaDB database (default SQLite)")
    p.add_argument("--slice-block-txs", type=int, metavar="T",
                   help="only the slice reads of one block of T transactions")
    p.add_argument("--out", help="also write the JSON results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    verify = measure_verify(0.5)
    per_us = verify["reference_per_s"] / 1e6
    database = args.db_url.split(":", 1)[0] if args.db_url else "sqlite"
    result: dict[str, Any] = {"started": started, "database": database,
                              "verify_per_s": round(verify["reference_per_s"]),
                              "machine": machine_info()}
    if args.slice_block_txs:
        result["slices"] = slice_costs(args.slice_block_txs, args.calls, args.db_url)
    else:
        costs, others = reader_costs(args.items, args.calls, args.db_url)
        result.update(items=args.items, calls=args.calls, other_processes_cores=others,
                      us_per_call=costs,
                      verifies_per_call={k: round(v * per_us, 2) for k, v in costs.items()})
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
