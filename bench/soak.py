"""Soak benchmark: the node's resident memory while it takes a long, steady publishing load.

    python -m bench.soak [--items 1000000] [--rate 2500] [--interval 10]
                         [--out bench/results/soak.json]

Starts a node on a fresh chain in a temporary directory and publishes `--items` items to one
stream at a steady `--rate` (items per second; 0 = as fast as the node takes them) from
`--clients` connections: mostly `publishmulti` of `--batch` items, every `--single-every`-th
call a single `publish`; keys are mixed (every item has its own key, some also share a lot or
station key with many others). Every `--big-every` seconds a reader asks for a big answer
(`liststreamitems` of the last `--big-count` items, verbose; `liststreamkeyitems` of a shared
key; `liststreampublishers`). Every `--interval` seconds the node's RSS (and its anonymous
and file-backed parts, from /proc/PID/status) is sampled with the confirmed item count.

The curve is printed and written with the verify rate and the other-process load to the
JSON file. Memory is bounded when RSS stops growing with the chain: `growth` in the results
gives MiB per 100,000 items over the first and the second half of the run.

See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import BenchNode, CpuMeter, machine_info, measure_verify
from bench.publish import RawHttpClient, combine_verify

MIB = 1024 * 1024
STREAM = "soak"


# -- what the node holds ----------------------------------------------------------------------
def proc_memory(pid: int) -> dict[str, float] | None:
    """VmRSS, VmHWM (peak RSS), RssAnon and RssFile of a process in MiB, from /proc."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
            parts = rest.split()
            value = float(parts[0])
            out[name] = value if name == "Threads" else round(value / 1024, 1)  # kB -> MiB
    return out


def dir_bytes(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:
            pass
    return total


# -- the load ---------------------------------------------------------------------------------
def item(i: int) -> dict[str, Any]:
    """Item i of the run: its own serial key, every 4th also a lot key shared by ~250 items
    per 1,000, every 10th also one of 16 station keys."""
    keys = [f"SN{i:08d}"]
    if i % 4 == 0:
        keys.append(f"lot-{i % 1000:03d}")
    if i % 10 == 0:
        keys.append(f"station-{i % 16}")
    return {"key": keys if len(keys) > 1 else keys[0],
            "data": {"json": {"serial": f"SN{i:08d}", "station": i % 16, "ok": i % 13 != 0,
                              "torque": 12.5 + (i % 7) / 10}}}


def call_body(start: int, count: int, rid: int) -> bytes:
    import orjson

    if count == 1:
        it = item(start)
        return orjson.dumps({"method": "publish", "params": [STREAM, it["key"], it["data"]],
                             "id": rid})
    return orjson.dumps({"method": "publishmulti",
                         "params": [STREAM, [item(i) for i in range(start, start + count)]],
                         "id": rid})


class Load:
    """The shared progress of the publishing clients."""

    def __init__(self, items: int, batch: int, single_every: int, rate: float) -> None:
        self.items = items
        self.batch = batch
        self.single_every = single_every
        self.rate = rate
        self.next_item = 0
        self.calls = 0
        self.sent = 0
        self.accepted = 0
        self.errors = 0
        self.first_error: str | None = None
        self.t0 = 0.0

    def claim(self) -> tuple[int, int, int] | None:
        """(first item, count, call number) of the next call, or None when all are sent."""
        if self.next_item >= self.items:
            return None
        c = self.calls
        self.calls += 1
        n = 1 if self.single_every and c % self.single_every == self.single_every - 1 \
            else self.batch
        n = min(n, self.items - self.next_item)
        start = self.next_item
        self.next_item += n
        return start, n, c

    async def pace(self) -> None:
        """Sleep until the steady rate allows the items claimed so far."""
        if self.rate > 0:
            due = self.t0 + self.next_item / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)


async def publisher(node: BenchNode, load: Load, auth: str, deadline: float) -> None:
    import orjson

    client = RawHttpClient("127.0.0.1", node.port, auth, keepalive=True)
    try:
        while time.monotonic() < deadline:
            claim = load.claim()
            if claim is None:
                break
            start, n, c = claim
            await load.pace()
            try:
                reply = orjson.loads(await client.post(call_body(start, n, c)))
            except Exception as e:  # noqa: BLE001 - counted and reported, not fatal
                client.close()
                reply = {"error": f"{type(e).__name__}: {e}"}
            load.sent += n
            if isinstance(reply, dict) and reply.get("error") is None:
                load.accepted += n
            else:
                load.errors += n
                load.first_error = load.first_error or str(
                    reply.get("error") if isinstance(reply, dict) else reply)[:200]
    finally:
        client.close()


class Rpc:
    """Calls for sampling and the big answers, on their own keep-alive connection."""

    def __init__(self, node: BenchNode, auth: str) -> None:
        self.client = RawHttpClient("127.0.0.1", node.port, auth, keepalive=True)
        self.rid = 0

    async def call(self, method: str, *params: Any) -> tuple[Any, int]:
        """(result, reply bytes)."""
        import orjson

        self.rid += 1
        body = orjson.dumps({"method": method, "params": list(params), "id": self.rid})
        try:
            data = await self.client.post(body)
        except (asyncio.IncompleteReadError, ConnectionError):
            # The node closes keep-alive connections that stay idle; open a new one.
            self.client.close()
            data = await self.client.post(body)
        reply = orjson.loads(data)
        if reply.get("error"):
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"], len(data)

    def close(self) -> None:
        self.client.close()


async def big_answers(rpc: Rpc, count: int, log: list[dict[str, Any]]) -> None:
    """One round of big reads, each logged with its size and time."""
    for method, params in (("liststreamitems", (STREAM, True, count)),
                           ("liststreamkeyitems", (STREAM, "lot-000", False, count)),
                           ("liststreampublishers", (STREAM,))):
        t = time.monotonic()
        try:
            result, size = await rpc.call(method, *params)
            entry = {"method": method, "entries": len(result), "bytes": size}
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            entry = {"method": method, "error": f"{type(e).__name__}: {e}"[:200]}
        entry["s"] = round(time.monotonic() - t, 3)
        log.append(entry)


async def run(node: BenchNode, args: argparse.Namespace) -> dict[str, Any]:
    token = base64.b64encode(f"{node.user}:{node.password}".encode()).decode()
    auth = f"Basic {token}"
    pid = node.pid or 0
    rpc = Rpc(node, auth)
    sampler_rpc = Rpc(node, auth)
    samples: list[dict[str, Any]] = []
    big: list[dict[str, Any]] = []
    load = Load(args.items, args.batch, args.single_every, args.rate)
    try:
        await rpc.call("create", "stream", STREAM, True)
        while (await rpc.call("getmempoolinfo"))[0]["size"]:
            await asyncio.sleep(0.05)

        async def sample(phase: str) -> dict[str, Any]:
            mem = proc_memory(pid) or {}
            try:
                confirmed = (await sampler_rpc.call("getstreaminfo", STREAM))[0]["confirmed"]
                pool = (await sampler_rpc.call("getmempoolinfo"))[0]["size"]
            except Exception:  # noqa: BLE001 - a missed reading, the node may be gone
                confirmed, pool = None, None
            s = {"t_s": round(time.monotonic() - load.t0, 1), "phase": phase,
                 "items_sent": load.sent, "items_confirmed": confirmed, "mempool_txs": pool,
                 "rss_mib": mem.get("VmRSS"), "peak_rss_mib": mem.get("VmHWM"),
                 "anon_mib": mem.get("RssAnon"), "file_mib": mem.get("RssFile"),
                 "threads": mem.get("Threads")}
            samples.append(s)
            print(f"  {s['t_s']:>7.1f} s  sent {load.sent:>9,}  confirmed "
                  f"{confirmed if confirmed is not None else '?':>9}  RSS {s['rss_mib']} MiB "
                  f"(anon {s['anon_mib']}, file {s['file_mib']}, peak {s['peak_rss_mib']})",
                  flush=True)
            return s

        meter = CpuMeter(pid)
        load.t0 = time.monotonic()
        deadline = load.t0 + args.deadline
        meter.start()
        await sample("start")
        done = asyncio.Event()

        async def sampler() -> None:
            next_big = load.t0 + args.big_every
            while not done.is_set():
                try:
                    await asyncio.wait_for(done.wait(), args.interval)
                except TimeoutError:
                    pass
                if done.is_set():
                    break
                await sample("load")
                if args.big_every and time.monotonic() >= next_big:
                    next_big += args.big_every
                    await big_answers(rpc, args.big_count, big)

        sampling = asyncio.create_task(sampler())
        await asyncio.gather(*(publisher(node, load, auth, deadline)
                               for _ in range(args.clients)))
        t_sent = time.monotonic()
        # Until every accepted item is confirmed, then a quiet while: does memory settle?
        confirmed = 0
        while time.monotonic() < deadline:
            pool = (await rpc.call("getmempoolinfo"))[0]["size"]
            confirmed = (await rpc.call("getstreaminfo", STREAM))[0]["confirmed"]
            if pool == 0 and confirmed >= load.accepted:
                break
            await asyncio.sleep(0.2)
        t_confirmed = time.monotonic()
        cpu = meter.stop()
        done.set()
        await sampling
        await sample("confirmed")
        await big_answers(rpc, args.big_count, big)
        await sample("after big answers")
        await asyncio.sleep(args.idle)
        await sample("idle")
    finally:
        rpc.close()
        sampler_rpc.close()
    return {
        "items_requested": args.items,
        "items_sent": load.sent,
        "items_accepted": load.accepted,
        "items_confirmed": confirmed,
        "item_errors": load.errors,
        "first_error": load.first_error,
        "calls": load.calls,
        "complete": load.sent == args.items and confirmed >= load.accepted == args.items,
        "send_s": round(t_sent - load.t0, 1),
        "send_to_confirmed_s": round(t_confirmed - load.t0, 1),
        "confirmed_items_per_s": round(confirmed / (t_confirmed - load.t0), 1),
        "cpu": cpu,
        "samples": samples,
        "big_answers": big,
        "datadir_bytes": dir_bytes(node.chain_dir),
    }


# -- the summary ------------------------------------------------------------------------------
def rss_at(samples: list[dict[str, Any]], confirmed: int) -> float | None:
    """RSS of the first sample that shows at least `confirmed` items confirmed."""
    for s in samples:
        if s["items_confirmed"] is not None and s["items_confirmed"] >= confirmed:
            return s["rss_mib"]
    return None


def growth(samples: list[dict[str, Any]], items: int) -> dict[str, float | None]:
    """RSS growth in MiB per 100,000 confirmed items over each half of the run (least-squares
    slope of the samples taken under load, so the dips after a malloc_trim do not decide it):
    bounded memory shows a second-half slope near 0."""
    def slope(lo: int, hi: int) -> float | None:
        pts = [(s["items_confirmed"], s["rss_mib"]) for s in samples
               if s["phase"] == "load" and s["items_confirmed"] is not None
               and s["rss_mib"] is not None and lo <= s["items_confirmed"] <= hi]
        if len(pts) < 3:
            return None
        mx = sum(x for x, _ in pts) / len(pts)
        my = sum(y for _, y in pts) / len(pts)
        var = sum((x - mx) ** 2 for x, _ in pts)
        if not var:
            return None
        return round(sum((x - mx) * (y - my) for x, y in pts) / var * 100_000, 1)

    half = items // 2
    return {"first_half_mib_per_100k": slope(0, half),
            "second_half_mib_per_100k": slope(half, items)}


def summarize(result: dict[str, Any], verify_per_s: float) -> dict[str, Any]:
    items = result["items_requested"]
    samples = result["samples"]
    marks = {f"{f:g}": rss_at(samples, int(items * f)) for f in (0.25, 0.5, 0.75, 1.0)}
    n = result["items_confirmed"] or 0
    cpu = result["cpu"]
    node_us = cpu["node_cpu_s"] / n * 1e6 if n else None
    return {
        "rss_mib_at_fraction_of_items": marks,
        "rss_mib_max": max((s["rss_mib"] or 0) for s in samples),
        "peak_rss_mib": max((s["peak_rss_mib"] or 0) for s in samples),
        "growth": growth(samples, items),
        "confirmed_items_ratio": round(result["confirmed_items_per_s"] / verify_per_s, 4),
        "node_cpu_per_item_us": round(node_us, 1) if node_us else None,
        "node_cpu_per_item_in_verifies": round(node_us * verify_per_s / 1e6, 2)
        if node_us else None,
        "other_processes_cores": cpu["other_processes_cores"],
        "datadir_bytes_per_item": round(result["datadir_bytes"] / n, 1) if n else None,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=1_000_000, help="items to publish (1000000)")
    p.add_argument("--rate", type=float, default=2500,
                   help="items per second, steady (default 2500; 0 = as fast as accepted)")
    p.add_argument("--clients", type=int, default=4, help="publishing connections (4)")
    p.add_argument("--batch", type=int, default=32, help="items per publishmulti (32)")
    p.add_argument("--single-every", type=int, default=8,
                   help="every N-th call is a single publish (8; 0 = never)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between samples (10)")
    p.add_argument("--big-every", type=float, default=30.0,
                   help="seconds between rounds of big answers (30; 0 = only at the end)")
    p.add_argument("--big-count", type=int, default=10_000,
                   help="items asked for by each big answer (10000)")
    p.add_argument("--idle", type=float, default=15.0,
                   help="seconds of quiet after the load before the last sample (15)")
    p.add_argument("--block-time", type=float, default=0.5, help="target-block-time (0.5)")
    p.add_argument("--deadline", type=float, default=1800.0,
                   help="seconds allowed for sending and confirming (1800)")
    p.add_argument("--option", "-o", action="append", default=[],
                   help="a node runtime option NAME=VALUE (repeatable)")
    p.add_argument("--verify-seconds", type=float, default=0.5)
    p.add_argument("--out", default="bench/results/soak.json", help="JSON results file")
    p.add_argument("--datadir", help="use (and keep) this data directory")
    p.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    args = p.parse_args(argv)
    if args.items < 1 or args.clients < 1 or args.batch < 1 or args.interval <= 0:
        p.error("--items, --clients, --batch and --interval must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    verify_start = measure_verify(args.verify_seconds)
    print(f"verify rate: {verify_start['reference_per_s']:,.0f} per CPU second (1 thread, DER)",
          flush=True)
    node = BenchNode(block_time=args.block_time, datadir=args.datadir, keep=args.keep)
    result: dict[str, Any] | None = None
    status = "ok"
    try:
        node.create()
        node.start(["rpckeepalive=1", *args.option])
        print(f"node pid {node.pid}; {args.items:,} items at "
              f"{args.rate or 'max':} items/s, sampling every {args.interval:g} s", flush=True)
        result = asyncio.run(run(node, args))
    except KeyboardInterrupt:
        status = "interrupted"
        print("interrupted; stopping the node", file=sys.stderr)
    finally:
        node.close()
    if result is None:
        return 1
    verify = combine_verify(verify_start, measure_verify(args.verify_seconds))
    summary = summarize(result, verify["reference_per_s"])
    marks = ", ".join(f"{f} {v} MiB" for f, v in summary["rss_mib_at_fraction_of_items"].items())
    print(f"\nRSS at fractions of {args.items:,} items: {marks}")
    print(f"max RSS {summary['rss_mib_max']} MiB (peak {summary['peak_rss_mib']}); growth "
          f"{summary['growth']}; node CPU {summary['node_cpu_per_item_us']} us per item "
          f"({summary['node_cpu_per_item_in_verifies']} verifies); other processes "
          f"{summary['other_processes_cores']} cores; verify "
          f"{verify['reference_per_s']:,.0f}/s")
    out = {"bench": "soak", "started": started, "status": status, "machine": machine_info(),
           "config": {k: v for k, v in vars(args).items() if k not in ("out", "datadir")},
           "verify": verify, "summary": summary, **result}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
        print(f"results written to {args.out}")
    return 0 if status == "ok" and result["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
