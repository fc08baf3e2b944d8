"""RPC flood benchmark: a legitimate client's latency while idle connections flood the port.

    python -m bench.rpc_flood [--connections N] [--calls C] [--out bench/results/rpc_flood.json]

Starts a node on a fresh chain (default limits: rpcmaxconnections 256, 64 per address), then
measures `getblockcount` latency over one keep-alive connection (p50/p99/max), first without
load, then while N idle, half-sent connections (issue 15.2: 1,139) are held open from 40
loopback source addresses and re-opened as the node closes them; also the time of refused
`listblocks` with 10,000 ranges (issue 15.3: 20.5 s before the bound). Calls per second are
reported as a ratio to the raw verify rate measured in the same run, as the other benches do.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import BenchNode, latency_summary, machine_info, measure_verify

HALF_REQUEST = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Le"


class Flood:
    """Holds `count` idle connections open from several source addresses, in a thread."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self.sources = [f"127.0.0.{n}" for n in range(2, 42)]
        self.sockets: list[socket.socket] = []
        self.opened = 0
        self._ports = itertools.cycle(range(22_000, 32_000))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, i: int) -> None:
        # Source ports below the ephemeral range (32768-60999), so the flood does not take
        # ports that other programs on the machine are about to listen on.
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.settimeout(5)
        try:
            s.bind((self.sources[i % len(self.sources)], next(self._ports)))
            s.connect(("127.0.0.1", self.port))
        except OSError:
            s.close()
            return
        with contextlib.suppress(OSError):
            s.sendall(HALF_REQUEST)
        self.sockets.append(s)
        self.opened += 1

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            while len(self.sockets) < self.count and not self._stop.is_set():
                self._open(i)
                i += 1
            # Drop the connections the node has closed, so they are re-opened.
            alive = []
            for s in self.sockets:
                try:
                    s.setblocking(False)
                    gone = s.recv(1, socket.MSG_PEEK) == b""
                except BlockingIOError:
                    gone = False
                except OSError:
                    gone = True
                if gone:
                    s.close()
                else:
                    alive.append(s)
            self.sockets = alive
            self._stop.wait(0.05)

    def __enter__(self) -> Flood:
        self._thread.start()
        while len(self.sockets) < self.count and self.opened < self.count:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for s in self.sockets:
            s.close()


def latencies(node: BenchNode, calls: int) -> tuple[list[float], int]:
    from node.client import RpcClient, RpcConnectionError

    values, failures = [], 0
    with RpcClient("127.0.0.1", node.port, node.user, node.password, timeout=30) as rpc:
        for _ in range(calls):
            t0 = time.perf_counter()
            try:
                rpc.call("getblockcount")
            except RpcConnectionError:
                failures += 1
                continue
            values.append(time.perf_counter() - t0)
    return values, failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=1139)
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    verify = measure_verify()
    node = BenchNode("flood")
    result: dict[str, Any] = {"machine": machine_info(), "verify": verify,
                              "connections": args.connections}
    try:
        node.create()
        node.start()
        quiet, failed_quiet = latencies(node, args.calls)
        with Flood(node.port, args.connections) as flood:
            t0 = time.perf_counter()
            loaded, failed_loaded = latencies(node, args.calls)
            loaded_s = time.perf_counter() - t0
            opened = flood.opened
        t0 = time.perf_counter()
        from node.client import RpcClient, RpcError
        with contextlib.suppress(RpcError):
            RpcClient("127.0.0.1", node.port, node.user, node.password).call(
                "listblocks", ",".join(["0-100000"] * 10_000))
        refused_s = time.perf_counter() - t0
        ref = verify["reference_per_s"]
        rate = len(loaded) / loaded_s if loaded_s else 0.0
        result.update({
            "quiet": {**latency_summary(quiet), "failures": failed_quiet},
            "flooded": {**latency_summary(loaded), "failures": failed_loaded,
                        "calls_per_s": round(rate, 1),
                        "calls_per_s_to_verify": round(rate / ref, 4),
                        "flood_connections_opened": opened},
            "listblocks_10000_ranges_refused_ms": round(refused_s * 1000, 1),
        })
    finally:
        node.close()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
