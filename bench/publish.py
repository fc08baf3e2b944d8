"""Publish benchmark: confirmed stream items per second through the JSON-RPC API.

    python -m bench.publish [--items N] [--clients C] [--batch B] [--block-time T]
                            [--out bench/results/publish.json]

Starts a node on a fresh chain in a temporary directory, and for each path publishes N items
from C concurrent asyncio/aiohttp clients, waits until the node shows all of them confirmed
(mempool empty and the stream's `confirmed` count complete), and reports

    confirmed items/s = items / (first send -> all confirmed)

plus the send rate, per-call latency (p50/p99), node and load-generator CPU, and every
throughput as a ratio to the raw coincurve verify rate measured at the start of the run.
Each publish is fsynced to the node's own-transaction journal before its reply; `journal`
in the results holds the raw append+fsync cost in the data directory and how many records
the node's group commit put behind each fsync.

Paths:
    single       one `publish` per HTTP request, keep-alive connections (rpckeepalive=1)
    multi        `publishmulti` with B items per call (one transaction of B items)
    batch        JSON-RPC batch arrays of B `publish` calls (B transactions per request)
    single-noka  one `publish` per request on a node restarted with keep-alive off
                 (MultiChain's default: one TCP connection per call)

See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    BenchNode,
    CpuMeter,
    PySpy,
    collector_stats,
    journal_stats,
    latency_summary,
    machine_info,
    measure_fsync,
    measure_verify,
)

ALL_PATHS = ("single", "multi", "batch", "single-noka")
TARGETS = {"single": 2000, "single_goal": 5000, "batched_goal": 10000}


# -- request bodies ---------------------------------------------------------------------------
def _item(i: int) -> tuple[str, dict]:
    """A small manufacturing-style record; every item has its own key."""
    return f"SN{i:08d}", {"json": {"serial": f"SN{i:08d}", "station": i % 16, "ok": True,
                                   "torque": 12.5 + (i % 7) / 10}}


def body_for(path: str, stream: str, start: int, count: int, rid: int) -> bytes:
    import orjson

    if path in ("single", "single-noka"):
        key, data = _item(start)
        return orjson.dumps({"method": "publish", "params": [stream, key, data], "id": rid})
    if path == "multi":
        items = []
        for i in range(start, start + count):
            key, data = _item(i)
            items.append({"key": key, "data": data})
        return orjson.dumps({"method": "publishmulti", "params": [stream, items], "id": rid})
    if path == "batch":
        calls = []
        for j, i in enumerate(range(start, start + count)):
            key, data = _item(i)
            calls.append({"method": "publish", "params": [stream, key, data], "id": j})
        return orjson.dumps(calls)
    raise ValueError(path)


def accepted_items(path: str, reply: Any, count: int) -> tuple[int, str | None]:
    """How many items of one call the node accepted, and the first error message."""
    if path == "batch":
        if not isinstance(reply, list):
            return 0, str(reply)[:200]
        ok = sum(1 for r in reply if isinstance(r, dict) and r.get("error") is None)
        err = next((str(r.get("error")) for r in reply
                    if isinstance(r, dict) and r.get("error") is not None), None)
        return ok, err
    if isinstance(reply, dict) and reply.get("error") is None:
        return count, None
    return 0, str(reply.get("error") if isinstance(reply, dict) else reply)[:200]


# -- the load ---------------------------------------------------------------------------------
class Rpc:
    """A small async JSON-RPC caller for setup and polling (its own keep-alive connection)."""

    def __init__(self, session: Any, url: str) -> None:
        self.session = session
        self.url = url

    async def call(self, method: str, *params: Any) -> Any:
        import orjson

        body = orjson.dumps({"method": method, "params": list(params), "id": 0})
        async with self.session.post(self.url, data=body) as r:
            reply = orjson.loads(await r.read())
        if reply.get("error"):
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]


class RawHttpClient:
    """A minimal HTTP/1.1 JSON-RPC poster on one asyncio stream connection (`--client raw`).

    Far cheaper per call than aiohttp's client, so less of the two shared cores goes to the
    load generator; the node sees the same requests (POST /, Basic auth, Content-Length).
    """

    def __init__(self, host: str, port: int, auth: str, keepalive: bool) -> None:
        self.host, self.port, self.keepalive = host, port, keepalive
        self.prefix = (f"POST / HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: {auth}\r\n"
                       "Content-Type: application/json\r\n"
                       + ("" if keepalive else "Connection: close\r\n")
                       + "Content-Length: ").encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> bytes:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(self.prefix + b"%d\r\n\r\n" % len(body) + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lower = head.lower()
        i = lower.find(b"content-length:")
        if i >= 0:
            data = await self.reader.readexactly(int(head[i + 15:head.index(b"\r\n", i)]))
        else:
            data = await self.reader.read()
        if not self.keepalive or b"connection: close" in lower:
            self.close()
        return data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def wait_confirmed(rpc: Rpc, stream: str, expected: int, deadline: float,
                         interval: float = 0.05) -> tuple[float | None, int]:
    """Poll until the mempool is empty and the stream shows `expected` confirmed items.

    Returns (monotonic time it was seen, confirmed count); time is None on deadline."""
    confirmed = 0
    while time.monotonic() < deadline:
        pool = await rpc.call("getmempoolinfo")
        if pool["size"] == 0:
            info = await rpc.call("getstreaminfo", stream)
            confirmed = info["confirmed"]
            if confirmed >= expected:
                return time.monotonic(), confirmed
        await asyncio.sleep(interval)
    with contextlib.suppress(Exception):
        confirmed = (await rpc.call("getstreaminfo", stream))["confirmed"]
    return None, confirmed


async def run_path(node: BenchNode, path: str, *, items: int, clients: int, batch: int,
                   deadline_s: float, keepalive: bool, client_kind: str = "aiohttp",
                   pyspy_dir: Path | None = None, pyspy_gil: bool = False) -> dict[str, Any]:
    import aiohttp
    import orjson

    per_call = 1 if path in ("single", "single-noka") else batch
    token = base64.b64encode(f"{node.user}:{node.password}".encode()).decode()
    auth_header = {"Authorization": f"Basic {token}"}
    headers = {"Content-Type": "application/json", **auth_header}
    timeout = aiohttp.ClientTimeout(total=120)
    stream = f"bench-{path}"

    async with aiohttp.ClientSession(headers=auth_header, timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=2)) as setup:
        rpc = Rpc(setup, node.url)
        await rpc.call("create", "stream", stream, True)
        await rpc.call("subscribe", stream)
        t_end = time.monotonic() + 60
        while (await rpc.call("getmempoolinfo"))["size"] and time.monotonic() < t_end:
            await asyncio.sleep(0.05)
        height0 = await rpc.call("getblockcount")

        # Bodies are made before the clock starts: the load generator shares the machine's
        # two cores with the node, and JSON encoding here is not what is being measured.
        n_calls = -(-items // per_call)
        bodies = [body_for(path, stream, c * per_call, min(per_call, items - c * per_call), c)
                  for c in range(n_calls)]

        latencies: list[float] = []
        accepted = 0
        errors = 0
        first_error: str | None = None
        next_call = 0
        sent_items = 0
        meter = CpuMeter(node.pid or 0)
        connector = aiohttp.TCPConnector(limit=clients, force_close=not keepalive)
        session = aiohttp.ClientSession(timeout=timeout, connector=connector,
                                        headers=headers)
        spy = (PySpy(node.pid or 0, pyspy_dir / f"{path}.txt", gil=pyspy_gil)
               if pyspy_dir else None)
        t_first = time.monotonic()
        deadline = t_first + deadline_s
        meter.start()

        async def post_aiohttp(body: bytes) -> bytes:
            async with session.post(node.url, data=body) as r:
                return await r.read()

        async def client() -> None:
            nonlocal next_call, accepted, errors, first_error, sent_items
            perf = time.perf_counter
            raw_client = (RawHttpClient("127.0.0.1", node.port, auth_header["Authorization"],
                                        keepalive) if client_kind == "raw" else None)
            post = raw_client.post if raw_client is not None else post_aiohttp
            while next_call < n_calls and time.monotonic() < deadline:
                c = next_call
                next_call += 1
                count = min(per_call, items - c * per_call)
                t0 = perf()
                try:
                    reply = orjson.loads(await post(bodies[c]))
                except Exception as e:  # noqa: BLE001 - counted and reported, not fatal
                    reply = {"error": f"{type(e).__name__}: {e}"}
                latencies.append(perf() - t0)
                sent_items += count
                ok, err = accepted_items(path, reply, count)
                accepted += ok
                if ok < count:
                    errors += count - ok
                    first_error = first_error or err
            if raw_client is not None:
                raw_client.close()

        try:
            await asyncio.gather(*(client() for _ in range(clients)))
        finally:
            await session.close()
        t_sent = time.monotonic()
        pool_at_send_end = (await rpc.call("getmempoolinfo"))["size"]
        t_conf, confirmed = await wait_confirmed(rpc, stream, accepted, deadline)
        cpu = meter.stop()
        profile = spy.stop() if spy else None
        height1 = await rpc.call("getblockcount")
        blocks = await rpc.call("listblocks", f"{height0 + 1}-{height1}") \
            if height1 > height0 else []

    send_s = t_sent - t_first
    complete = t_conf is not None and sent_items == items
    total_s = (t_conf if t_conf is not None else time.monotonic()) - t_first
    txcounts = [b["txcount"] for b in blocks]
    return {
        "path": path,
        "keepalive": keepalive,
        "client": client_kind,
        "clients": clients,
        "items_per_call": per_call,
        "items_requested": items,
        "items_sent": sent_items,
        "items_accepted": accepted,
        "items_confirmed": confirmed,
        "item_errors": errors,
        "first_error": first_error,
        "calls": len(latencies),
        "complete": complete,
        "send_s": round(send_s, 3),
        "send_to_confirmed_s": round(total_s, 3),
        "tail_after_send_s": round(total_s - send_s, 3),
        "send_items_per_s": round(sent_items / send_s, 1) if send_s else None,
        "send_calls_per_s": round(len(latencies) / send_s, 1) if send_s else None,
        "confirmed_items_per_s": round(confirmed / total_s, 1) if total_s else None,
        "latency": latency_summary(latencies),
        "mempool_at_send_end": pool_at_send_end,
        "blocks": len(blocks),
        "txs_per_block_max": max(txcounts) if txcounts else 0,
        "txs_per_block_mean": round(sum(txcounts) / len(txcounts), 1) if txcounts else 0,
        "cpu": cpu,
        **({"profile": profile} if profile else {}),
    }


# -- the run ----------------------------------------------------------------------------------
def add_ratios(result: dict[str, Any], verify_per_s: float) -> None:
    """Throughputs as ratios to the verify rate, and CPU per item in microseconds and in
    verifies' worth (1.0 = the CPU of one signature verification per item). CPU per item
    barely depends on what else runs on the machine, so it is the figure to compare
    before/after a change when the machine is shared."""
    for name in ("confirmed_items_per_s", "send_items_per_s"):
        v = result.get(name)
        result[name.replace("_per_s", "_ratio")] = round(v / verify_per_s, 4) if v else None
    n = result.get("items_confirmed") or 0
    cpu = result["cpu"]
    main = cpu["node_threads_cpu_s"].get("main (event loop)", 0.0)
    per_item = {
        "node_us": cpu["node_cpu_s"] / n * 1e6 if n else None,
        "node_main_thread_us": main / n * 1e6 if n else None,
        "bench_client_us": cpu["bench_cpu_s"] / n * 1e6 if n else None,
    }
    result["cpu_per_item"] = {k: round(v, 1) if v is not None else None
                              for k, v in per_item.items()}
    if per_item["node_us"] and per_item["node_main_thread_us"]:
        # What the node could confirm with the machine to itself, from its CPU per item:
        # between "all its CPU is serialised by the GIL" and "only the event loop is".
        result["cpu_bound_estimate_items_per_s"] = {
            "all_node_cpu_serial": round(1e6 / per_item["node_us"]),
            "event_loop_thread_only": round(1e6 / per_item["node_main_thread_us"]),
        }
    prof = result.get("profile")
    if prof and n:
        # Spread each thread group's measured CPU per item over its sampled categories.
        worker_us = (cpu["node_cpu_s"] - main) / n * 1e6
        for key, us in (("main_thread", per_item["node_main_thread_us"]),
                        ("other_threads", worker_us)):
            shares = prof.get(f"{key}_pct") or {}
            total = sum(shares.values())
            prof[f"{key}_us_per_item"] = {k: round(v / total * us, 1)
                                          for k, v in shares.items()} if total else {}
    result["cpu_per_item_in_verifies"] = {
        k.replace("_us", ""): round(v * verify_per_s / 1e6, 2) if v is not None else None
        for k, v in per_item.items()}


def combine_verify(start: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
    def rate(k: str) -> bool:
        return "_per_" in k and k.endswith("_s")

    out = {k: max(start[k], end[k]) if rate(k) else start[k] for k in start}
    out["at_start"] = {k: round(v) for k, v in start.items() if rate(k)}
    out["at_end"] = {k: round(v) for k, v in end.items() if rate(k)}
    out["taken"] = "the higher of the start and end measurements"
    return out


def print_table(verify: dict[str, Any], results: list[dict[str, Any]]) -> None:
    ref = verify["reference_per_s"]
    print()
    print(f"coincurve verify (DER, 32-byte digest), 1 thread: {ref:,.0f} per CPU second "
          f"(start {verify['at_start']['reference_per_s']:,}, end "
          f"{verify['at_end']['reference_per_s']:,}); wall clock: "
          f"{verify['der_1thread_per_s']:,.0f}/s 1 thread, "
          f"{verify['der_2threads_per_s']:,.0f}/s 2 threads; compact "
          f"{verify['compact_1thread_per_cpu_s']:,.0f} per CPU second")
    print(f"ratios are to {ref:,.0f} verifies/s (one core, DER)")
    print()
    hdr = (f"{'path':<12} {'per call':>8} {'items':>7} {'confirmed/s':>11} {'ratio':>6} "
           f"{'send/s':>8} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} {'node cores':>10} "
           f"{'bench cores':>11} {'others':>6} {'node us/item':>12} {'main us/item':>12} "
           f"{'blocks':>6} {'ok':>3}")
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        lat = r["latency"]
        cpu = r["cpu"]
        print(f"{r['path']:<12} {r['items_per_call']:>8} {r['items_confirmed']:>7} "
              f"{r['confirmed_items_per_s'] or 0:>11,.0f} {r['confirmed_items_ratio'] or 0:>6.3f} "
              f"{r['send_items_per_s'] or 0:>8,.0f} {r['send_items_ratio'] or 0:>6.3f} "
              f"{lat['p50_ms'] or 0:>7.1f} {lat['p99_ms'] or 0:>7.1f} "
              f"{cpu['node_cores'] or 0:>10.2f} {cpu['bench_cores'] or 0:>11.2f} "
              f"{cpu['other_processes_cores'] or 0:>6.2f} "
              f"{r['cpu_per_item']['node_us'] or 0:>12.0f} "
              f"{r['cpu_per_item']['node_main_thread_us'] or 0:>12.0f} {r['blocks']:>6} "
              f"{'yes' if r['complete'] else 'NO':>3}")
        if r["first_error"]:
            print(f"    {r['item_errors']} item errors; first: {r['first_error']}")
    print()
    for r in results:
        threads = ", ".join(f"{k} {v:.1f}s" for k, v in
                            sorted(r["cpu"]["node_threads_cpu_s"].items(), key=lambda kv: -kv[1]))
        print(f"{r['path']:<12} node CPU by thread: {threads}")
    for r in results:
        prof = r.get("profile")
        if not prof:
            continue
        print(f"\n{r['path']}: sampled node CPU per item (py-spy, {prof['samples']} samples)")
        for key, label in (("main_thread", "event loop thread"),
                           ("other_threads", "worker threads")):
            parts = prof.get(f"{key}_us_per_item") or {}
            print(f"  {label}: " + ", ".join(f"{k} {v:.0f} us" for k, v in parts.items()
                                              if v >= 0.5))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.publish", description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=20_000, help="items per path (default 20000)")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    p.add_argument("--batch", type=int, default=32,
                   help="items per publishmulti call / calls per batch array (default 32, at "
                        "most max-std-op-returns-count for publishmulti)")
    p.add_argument("--client", choices=("aiohttp", "raw"), default="aiohttp",
                   help="load generator: aiohttp client sessions (default), or a minimal "
                        "HTTP/1.1 poster that leaves more of the shared CPU to the node")
    p.add_argument("--block-time", type=float, default=0.5, help="target-block-time (0.5)")
    p.add_argument("--paths", default=",".join(ALL_PATHS),
                   help=f"comma-separated subset of {','.join(ALL_PATHS)}")
    p.add_argument("--deadline", type=float, default=120.0,
                   help="seconds allowed per path, sending and confirming (default 120)")
    p.add_argument("--verify-seconds", type=float, default=0.5,
                   help="seconds per verify-rate sample (best of 3; default 0.5)")
    p.add_argument("--out", default="bench/results/publish.json", help="JSON results file")
    p.add_argument("--datadir", help="use (and keep) this data directory instead of a temp one")
    p.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    p.add_argument("--pyspy", metavar="DIR",
                   help="sample the node with py-spy during each path (raw stacks in DIR/PATH.txt "
                        "and a breakdown in the results; slows the node a little)")
    p.add_argument("--pyspy-gil", action="store_true",
                   help="with --pyspy: keep only samples holding the GIL (py-spy --gil), so a "
                        "thread waiting for the GIL does not count as busy")
    args = p.parse_args(argv)
    args.paths = [x.strip() for x in args.paths.split(",") if x.strip()]
    for x in args.paths:
        if x not in ALL_PATHS:
            p.error(f"unknown path {x!r}")
    if args.items < 1 or args.clients < 1 or args.batch < 1:
        p.error("--items, --clients and --batch must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    print(f"measuring the coincurve verify rate ({args.verify_seconds} s x 3 per figure)...",
          flush=True)
    verify_start = measure_verify(args.verify_seconds)
    print(f"  {verify_start['reference_per_s']:,.0f} verifies per CPU second (1 thread, DER); "
          f"{verify_start['der_1thread_per_s']:,.0f}/s wall clock", flush=True)

    pyspy = Path(args.pyspy) if args.pyspy else None
    if pyspy:
        pyspy.mkdir(parents=True, exist_ok=True)
    node = BenchNode(block_time=args.block_time, datadir=args.datadir, keep=args.keep)
    results: list[dict[str, Any]] = []
    status = "ok"
    fsync: dict[str, Any] = {}
    try:
        node.create()
        fsync = measure_fsync(node.chain_dir)
        print(f"  write + fdatasync in the data directory: appended {fsync['mean_us']:,.0f} us "
              f"({fsync['cpu_us']:,.0f} us CPU), in place {fsync['in_place']['mean_us']:,.0f} us "
              f"({fsync['in_place']['cpu_us']:,.0f} us CPU)", flush=True)
        if "multi" in args.paths and args.batch > node.max_items_per_tx:
            raise SystemExit(f"--batch {args.batch} exceeds max-std-op-returns-count "
                             f"({node.max_items_per_tx}) for publishmulti")
        ka_paths = [x for x in args.paths if x != "single-noka"]
        if ka_paths:
            node.start(["rpckeepalive=1"])
            print(f"node pid {node.pid}, rpc port {node.port}, data {node.datadir}", flush=True)
            for path in ka_paths:
                print(f"path {path}: {args.items} items, {args.clients} clients...", flush=True)
                r = asyncio.run(run_path(node, path, items=args.items, clients=args.clients,
                                         batch=args.batch, deadline_s=args.deadline,
                                         keepalive=True, pyspy_dir=pyspy,
                                         pyspy_gil=args.pyspy_gil, client_kind=args.client))
                results.append(r)
                print(f"  {r['confirmed_items_per_s']:,.0f} confirmed items/s "
                      f"(send {r['send_items_per_s']:,.0f}/s)", flush=True)
        if "single-noka" in args.paths:
            node.stop()
            node.start([])
            print(f"node restarted without keep-alive, pid {node.pid}", flush=True)
            r = asyncio.run(run_path(node, "single-noka", items=args.items,
                                     clients=args.clients, batch=args.batch,
                                     deadline_s=args.deadline, keepalive=False,
                                     pyspy_dir=pyspy, pyspy_gil=args.pyspy_gil,
                                     client_kind=args.client))
            results.append(r)
            print(f"  {r['confirmed_items_per_s']:,.0f} confirmed items/s "
                  f"(send {r['send_items_per_s']:,.0f}/s)", flush=True)
    except KeyboardInterrupt:
        status = "interrupted"
        print("interrupted; stopping the node", file=sys.stderr)
    except Exception as e:
        status = f"error: {type(e).__name__}: {e}"
        print(status, file=sys.stderr)
        raise
    finally:
        node.stop()
        journal = journal_stats(node.chain_dir)
        collector = collector_stats(node.chain_dir)
        node.close()
        if results:
            # Again at the end: on a shared machine one sample can land in someone else's
            # busy moment; the yardstick is the better of the two (the machine's capacity).
            verify_end = measure_verify(args.verify_seconds)
            verify = combine_verify(verify_start, verify_end)
            for r in results:
                add_ratios(r, verify["reference_per_s"])
            print_table(verify, results)
            out = {
                "bench": "publish",
                "started": started,
                "status": status,
                "machine": machine_info(),
                "config": {"items": args.items, "clients": args.clients, "batch": args.batch,
                           "client": args.client,
                           "block_time_s": args.block_time, "deadline_s": args.deadline,
                           "paths": args.paths},
                "verify": verify,
                "targets_items_per_s": TARGETS,
                "paths": results,
                # The node's own-transaction journal: every publish waits for an fsync it
                # shares with concurrent calls (group commit); the raw cost of one fsync
                # here, and how many records each fsync covered over the run.
                "journal": {"fsync": fsync, "node": journal,
                            "fsync_ratio_to_verify": round(
                                fsync["per_s"] / verify["reference_per_s"], 4)
                            if fsync else None},
                # Python's cyclic collector in the node over the whole run (all paths).
                "collector": collector,
            }
            if journal:
                print(f"journal: {journal['records']:,} records in {journal['fsyncs']:,} "
                      f"fsyncs ({journal['records_per_fsync']} per fsync), fsync thread "
                      f"{journal['fsync_thread_cpu_us_per_record']} us CPU per record")
            if collector and journal and journal["records"]:
                print(f"cyclic collector: {collector['collections']:,} collections, "
                      f"{collector['ms']:,.1f} ms, {collector['ms'] * 1e3 / journal['records']:.1f}"
                      f" us per own transaction")
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
                print(f"\nresults written to {args.out}")
    return 0 if status == "ok" and all(r["complete"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
