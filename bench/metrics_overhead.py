"""What /metrics costs on the hot paths: one JSON-RPC call through the dispatcher with and
without the metrics observer, one block-connect observation, and one scrape, each as a
fraction of one signature verification (bench/common.py's yardstick, measured in the same
run). All in-process, per second of this thread's CPU time, so other load on a shared machine
does not inflate the figures.

    python -m bench.metrics_overhead [--calls 200000] [--out bench/results/metrics.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from bench.common import machine_info, measure_verify
from node.metrics import NodeMetrics, NodeState
from node.rpc.dispatch import Dispatcher, MethodTable


def _dispatch_cpu_per_call(dispatcher: Dispatcher, calls: int) -> float:
    request = {"method": "echo", "params": [1], "id": 1}

    async def run() -> float:
        start = time.thread_time()
        for _ in range(calls):
            await dispatcher.handle_object(request)
        return (time.thread_time() - start) / calls

    return min(asyncio.run(run()) for _ in range(3))


def _cpu_per_op(fn: Any, n: int) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.thread_time()
        for _ in range(n):
            fn()
        best = min(best, (time.thread_time() - start) / n)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    verify = measure_verify()
    per_verify = 1.0 / verify["reference_per_s"]
    table = MethodTable()
    table.register("echo", lambda params: params, min_params=0, max_params=1, help="echo",
                   category="Control")
    plain = Dispatcher(table, chain_name="bench")
    observed = Dispatcher(table, chain_name="bench")
    metrics = NodeMetrics(lambda: NodeState(100, 10, 5000, 3, 0, 0))
    observed.observe = metrics.observe_rpc
    base = _dispatch_cpu_per_call(plain, args.calls)
    with_metrics = _dispatch_cpu_per_call(observed, args.calls)
    block = _cpu_per_op(lambda: metrics.observe_block(100, 0.01), args.calls // 4)
    scrape = _cpu_per_op(metrics.render, 500)
    report = {
        "bench": "metrics_overhead", "machine": machine_info(), "verify": verify,
        "rpc_call_cpu_s": base, "rpc_call_with_metrics_cpu_s": with_metrics,
        "rpc_metrics_overhead_ratio_to_verify": round((with_metrics - base) / per_verify, 4),
        "block_observation_ratio_to_verify": round(block / per_verify, 4),
        "scrape_ratio_to_verify": round(scrape / per_verify, 4),
    }
    print(f"verify: {verify['reference_per_s']:.0f}/s per CPU second")
    print(f"RPC call: {base * 1e6:.2f} us, with metrics {with_metrics * 1e6:.2f} us: overhead "
          f"{report['rpc_metrics_overhead_ratio_to_verify']} verify")
    print(f"block observation: {report['block_observation_ratio_to_verify']} verify; "
          f"a scrape: {report['scrape_ratio_to_verify']} verify")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
