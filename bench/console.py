"""Console benchmark: the explorer's item pages and the API's item list on a big stream.

    python -m bench.console [--items N] [--requests R] [--block-time T]
                            [--out bench/results/console.json]

Starts a node (0.5 s blocks) on a fresh chain in a temporary directory, fills one stream with
N items (default 1,000,000) by `publishmulti` in JSON-RPC batches, waits until all are
confirmed, starts `chainmill console` against it, logs in, and times R requests each of

    api_items_newest GET /api/streams/S/items?count=20            (the newest page)
    page_stream_newest GET /stream/S                              (the explorer's first page)
    api_items        GET /api/streams/S/items?start=X&count=20   (X random over the stream)
    api_items_key    GET /api/streams/S/items?key=K              (K random)
    page_stream      GET /stream/S?start=X                        (the explorer's item list)
    page_item        GET /item/S/TXID                             (one item, decoded)
    rpc_items        liststreamitems S false 20 -X-20, straight to the node (what the two
                     list routes cost the node, to tell the console's share from the node's)
    rpc_items_newest liststreamitems S false 20 -20 (the newest page, straight to the node)
    rpc_txitems      liststreamtxitems S TXID true, straight to the node (page_item's call)

reporting p50/p99 per route, requests/s, and each rate as a ratio to the raw coincurve
verify rate measured in the same run; and, robust to a loaded machine, the CPU each request
cost the node and the console processes (ms, and in verifies: CPU seconds x verify rate),
beside the cores other processes kept busy meanwhile. Figures are printed and written to
--out.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import http.cookiejar
import json
import random
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    BenchNode,
    CpuMeter,
    _cli_argv,
    _env,
    free_port,
    latency_summary,
    machine_info,
    measure_verify,
    proc_cpu,
)

STREAM = "bench"
TARGET_P99_MS = 100.0


def _item(i: int) -> dict[str, Any]:
    return {"key": f"SN{i:08d}", "data": {"json": {"serial": f"SN{i:08d}", "station": i % 16,
                                                   "ok": True}}}


def fill(node: BenchNode, items: int, per_tx: int, per_request: int = 40,
         workers: int = 2) -> tuple[float, list[str]]:
    """Publish ``items`` items; seconds until all are confirmed, and a sample of txids."""
    from node.client import RpcClient, RpcError

    calls = [("publishmulti", [STREAM, [_item(i) for i in range(first, min(first + per_tx,
                                                                           items))]])
             for first in range(0, items, per_tx)]
    requests = [calls[i:i + per_request] for i in range(0, len(calls), per_request)]
    txids: list[str] = []

    def send(chunk: list) -> list[str]:
        client = RpcClient("127.0.0.1", node.port, node.user, node.password, timeout=300)
        try:
            for _ in range(50):
                results = client.batch(chunk)
                failed = [r for r in results if isinstance(r, RpcError)]
                if not failed:
                    return list(results)
                # the mempool is full: wait for a block and send what failed again
                chunk = [c for c, r in zip(chunk, results, strict=True)
                         if isinstance(r, RpcError)]
                txids.extend(r for r in results if not isinstance(r, RpcError))
                time.sleep(node.block_time)
            raise RuntimeError(f"publishing failed: {failed[0]}")
        finally:
            client.close()

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for done in pool.map(send, requests):
            txids.extend(done)
    while True:
        info = node.call("liststreams", STREAM)[0]
        if info["confirmed"] >= items and node.call("getmempoolinfo")["size"] == 0:
            break
        time.sleep(0.5)
    return time.monotonic() - started, txids


class _Web:
    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with self.opener.open(self.base + path, timeout=60) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def login(self, user: str, password: str) -> None:
        data = urllib.parse.urlencode({"username": user, "password": password,
                                       "next": "/"}).encode()
        with self.opener.open(self.base + "/login", data=data, timeout=60) as reply:
            if "Log out" not in reply.read().decode():
                raise RuntimeError("console login failed")


def timed(fn: Any, count: int) -> list[float]:
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--block-time", type=float, default=0.5)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "console.json"))
    args = parser.parse_args(argv)

    verify = measure_verify()
    node = BenchNode("bench", block_time=args.block_time)
    console = None
    rng = random.Random(13)
    try:
        node.create()
        node.start()
        node.call("create", "stream", STREAM, True)
        while node.call("getmempoolinfo")["size"]:
            time.sleep(0.1)
        print(f"filling {STREAM} with {args.items} items ({node.max_items_per_tx} per tx)",
              flush=True)
        fill_s, txids = fill(node, args.items, node.max_items_per_tx)
        print(f"filled in {fill_s:.1f} s ({args.items / fill_s:.0f} items/s confirmed)",
              flush=True)

        port = free_port()
        console = subprocess.Popen(
            [*_cli_argv(), "console", node.chain, "--datadir", str(node.datadir), "--port",
             str(port), "--rpcport", str(node.port)], env=_env(),
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        web = _Web(f"http://127.0.0.1:{port}")
        for _ in range(200):
            try:
                if web.get("/login")[0] == 200:
                    break
            except urllib.error.URLError:
                time.sleep(0.1)
        web.login(node.user, node.password)

        def check(path: str) -> None:
            status, body = web.get(path)
            if status != 200:
                raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")

        def offset() -> int:
            return rng.randrange(0, max(1, args.items - 20))

        from node.client import RpcClient
        rpc = RpcClient("127.0.0.1", node.port, node.user, node.password)
        routes = {
            "api_items_newest": lambda: check(f"/api/streams/{STREAM}/items?count=20"),
            "page_stream_newest": lambda: check(f"/stream/{STREAM}"),
            "api_items": lambda: check(f"/api/streams/{STREAM}/items?start={offset()}&count=20"),
            "api_items_key": lambda: check(
                f"/api/streams/{STREAM}/items?key=SN{rng.randrange(args.items):08d}"),
            "page_stream": lambda: check(f"/stream/{STREAM}?start={offset()}"),
            "page_item": lambda: check(f"/item/{STREAM}/{rng.choice(txids)}"),
            "rpc_items": lambda: rpc.call("liststreamitems", STREAM, False, 20,
                                          -(offset() + 20)),
            "rpc_items_newest": lambda: rpc.call("liststreamitems", STREAM, False, 20, -20),
            "rpc_txitems": lambda: rpc.call("liststreamtxitems", STREAM, rng.choice(txids),
                                            True),
        }
        results = {}
        rate = verify["reference_per_s"]
        for name, fn in routes.items():
            timed(fn, 10)  # warm-up
            meter = CpuMeter(node.pid)
            meter.start()
            console0 = proc_cpu(console.pid) or 0.0
            latencies = timed(fn, args.requests)
            console_s = (proc_cpu(console.pid) or 0.0) - console0
            cpu = meter.stop()
            summary = latency_summary(latencies)
            per_s = len(latencies) / sum(latencies)
            # the machine's busy CPU less the node's, the bench's and the console's
            others = max(0.0, (cpu["other_processes_cores"] or 0.0) - console_s / cpu["wall_s"])
            node_ms = cpu["node_cpu_s"] * 1000 / len(latencies)
            console_ms = console_s * 1000 / len(latencies)
            summary.update({
                "requests_per_s": round(per_s, 1),
                "ratio_to_verify": round(per_s / rate, 5),
                "p99_under_target": summary["p99_ms"] is not None
                and summary["p99_ms"] < TARGET_P99_MS,
                "node_cpu_ms_per_request": round(node_ms, 2),
                "console_cpu_ms_per_request": round(console_ms, 2),
                "cpu_per_request_in_verifies": round((node_ms + console_ms) / 1000 * rate, 1),
                "other_processes_cores": round(others, 2),
            })
            results[name] = summary
            print(f"{name:18s} p50 {summary['p50_ms']:8.2f} ms  p99 {summary['p99_ms']:8.2f} ms"
                  f"  {per_s:8.1f} req/s  ratio {summary['ratio_to_verify']}  CPU node "
                  f"{node_ms:.2f} + console {console_ms:.2f} ms"
                  f" ({summary['cpu_per_request_in_verifies']} verifies)  other load "
                  f"{others:.2f} cores", flush=True)
        rpc.close()
        report = {
            "bench": "console",
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": machine_info(),
            "config": {"items": args.items, "requests": args.requests,
                       "block_time_s": args.block_time, "page": 20,
                       "items_per_tx": node.max_items_per_tx},
            "verify": verify,
            "fill": {"seconds": round(fill_s, 1),
                     "confirmed_items_per_s": round(args.items / fill_s, 1),
                     "ratio_to_verify": round(args.items / fill_s / verify["reference_per_s"],
                                              4)},
            "target_p99_ms": TARGET_P99_MS,
            "routes": results,
        }
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"written to {out}")
    finally:
        if console is not None:
            console.terminate()
            console.wait(timeout=30)
        node.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
