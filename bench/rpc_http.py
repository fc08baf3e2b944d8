"""RPC transport benchmark: the node's CPU per JSON-RPC call that does no work of its own.

    python -m bench.rpc_http [--calls N] [--clients C] [--out bench/results/rpc_http.json]

Starts a node on a fresh chain (keep-alive on, mining off so nothing else runs) and sends
N `getblockcount` calls from C keep-alive connections of the cheap raw client. What the node
spends per call is then the HTTP layer, the event loop, the socket syscalls and the dispatch:
the transport's own cost, with no transaction work beside it. Reported in CPU microseconds
per call (all node threads, /proc) and in verifies (the verify rate measured in the same run),
with the load generator's and the other processes' CPU, like bench.publish.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

from bench.common import BenchNode, CpuMeter, machine_info, measure_verify
from bench.publish import RawHttpClient


async def _load(node: BenchNode, calls: int, clients: int) -> int:
    token = base64.b64encode(f"{node.user}:{node.password}".encode()).decode()
    body = b'{"method":"getblockcount","params":[],"id":1}'
    per_client = calls // clients

    async def one() -> None:
        client = RawHttpClient("127.0.0.1", node.port, f"Basic {token}", True)
        try:
            for _ in range(per_client):
                reply = await client.post(body)
                if b'"error":null' not in reply:
                    raise RuntimeError(f"getblockcount failed: {reply[:200]!r}")
        finally:
            client.close()

    await asyncio.gather(*(one() for _ in range(clients)))
    return per_client * clients


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=20_000, help="calls (default 20000)")
    p.add_argument("--clients", type=int, default=16, help="connections (default 16)")
    p.add_argument("--out", default="bench/results/rpc_http.json", help="JSON results file")
    args = p.parse_args(argv)

    print("measuring the coincurve verify rate...", flush=True)
    verify = measure_verify()
    rate = verify["reference_per_s"]
    node = BenchNode("rpchttp")
    try:
        node.create()
        node.start(["gen=0", "rpckeepalive=1"])
        assert node.pid is not None
        asyncio.run(_load(node, min(1000, args.calls), args.clients))  # warm-up
        meter = CpuMeter(node.pid)
        meter.start()
        started = time.monotonic()
        done = asyncio.run(_load(node, args.calls, args.clients))
        wall = time.monotonic() - started
        cpu = meter.stop()
    finally:
        node.close()
    node_us = 1e6 * cpu["node_cpu_s"] / done
    result: dict[str, Any] = {
        "bench": "rpc_http",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
        "verify": verify,
        "calls": done,
        "clients": args.clients,
        "calls_per_s": round(done / wall),
        "node_us_per_call": round(node_us, 1),
        "node_verifies_per_call": round(node_us * rate / 1e6, 2),
        "bench_client_us_per_call": round(1e6 * cpu["bench_cpu_s"] / done, 1),
        "cpu": cpu,
    }
    print(f"{done} getblockcount calls over {args.clients} keep-alive connections: "
          f"{result['calls_per_s']:,}/s; node CPU {node_us:.1f} us per call "
          f"({result['node_verifies_per_call']} verifies at {rate:,.0f}/s); load generator "
          f"{result['bench_client_us_per_call']} us per call; other processes "
          f"{cpu.get('other_processes_cores')} cores")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
