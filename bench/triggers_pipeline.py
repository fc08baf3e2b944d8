"""Trigger pipeline benchmark on two nodes: commit on A -> relay -> node 1 -> network -> node 2
-> receiver -> applied on B.

Node 1 creates the chain and mines; node 2 joins it (``chainmill start CHAIN@HOST:PORT``)
and is granted connect, send and receive. Instance A (its own application database) is
bound to node 1, instance B to node 2. Measured through the whole pipeline (capture into the
outbox, the relay publishing on node 1, node 1 mining, the block reaching node 2, B's
receiver applying in chain order):

* commit-to-applied-on-the-partner latency p50/p99 at a steady offered rate (default 100
  rows/s), one row per application transaction: from just before A's commit to the moment
  the row is visible in B's database (polled every 5 ms);
* sustained rows/s: the application commits a burst as fast as it can, from the first
  commit to the last row applied on B (one application thread: its commit rate can be the
  limit);
* backlog drain rows/s: rows committed while the relay and the receiver are stopped, from
  their start to the last row applied on B (the pipeline's own capacity);
* the raw coincurve verify rate measured in the same run, and rows/s as a ratio to it.

By default the relay and the receiver run as their own processes, `chainmill triggers relay`
and `chainmill triggers follow`, as deployed; `--workers thread` runs them as threads of
the benchmark process instead.

    python -m bench.triggers_pipeline [--rate 100] [--seconds 20] [--burst 3000]
        [--db sqlite|postgres|mariadb] [--block-time 0.5] [--workers process|thread]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Double, Float, MetaData, String, Table, event, func, select

from bench.common import (
    REPO,
    _cli_argv,
    _env,
    _pid_alive,
    _read_kv,
    free_port,
    machine_info,
    measure_verify,
)
from node.client import RpcClient, RpcConnectionError, RpcError
from triggers import capture, configure, crypto, schema
from triggers.catalog import Catalog
from triggers.keys import GlobalKey, make_key
from triggers.keys_command import ensure_system_streams, publish_public_key
from triggers.receiver import Receiver
from triggers.relay import Relay
from triggers.tools.databases import temporary_database

log = logging.getLogger("bench.triggers")
RESULTS = REPO / "bench" / "results" / "triggers_pipeline.json"
CHAIN = "trgbench"
STREAM = "readings"
TARGETS = {"sustained_rows_per_s": 300, "p99_s_at_100_rows_per_s": 3.0}


# -- two nodes --------------------------------------------------------------------------------


class Node:
    """A node process of the benchmark chain in a temporary data directory (started with
    --daemon; stopped over RPC, else by signals to the pid it wrote)."""

    def __init__(self, name: str, base: Path) -> None:
        self.name = name
        self.datadir = base / name
        self.chain_dir = self.datadir / CHAIN
        self.port = 0
        self.rpcport = 0
        self.pid: int | None = None
        self.client: RpcClient | None = None

    def _run(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run([*_cli_argv(), *args], cwd=REPO, env=_env(), capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"chainmill {' '.join(args[:2])} failed ({done.returncode}):\n"
                               f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        return done.stdout

    def create(self, block_time: float) -> None:
        self.port, self.rpcport = free_port(), free_port()
        self._run("create", CHAIN, "--datadir", str(self.datadir),
                  "--param", f"target-block-time={block_time}",
                  "--param", f"default-network-port={self.port}",
                  "--param", f"default-rpc-port={self.rpcport}")

    def start(self, seed: Node | None = None) -> None:
        """Start (the first start of a joining node names its seed); the ports are free ones,
        and a start that finds one taken is retried on others."""
        for attempt in range(3):
            if attempt or not self.port:
                self.port, self.rpcport = free_port(), free_port()
            target = CHAIN if seed is None else f"{CHAIN}@127.0.0.1:{seed.port}"
            try:
                self._run("start", target, "--datadir", str(self.datadir), "--port",
                          str(self.port), "--rpcport", str(self.rpcport), "--daemon")
                break
            except RuntimeError as e:
                if "already in use" not in str(e) or attempt == 2:
                    raise
        conf = _read_kv(self.chain_dir / "chainmill.conf")
        self.pid = int((self.chain_dir / "chainmill.pid").read_text().strip())
        self.client = RpcClient("127.0.0.1", self.rpcport, conf.get("rpcuser", "chainmillrpc"),
                                conf["rpcpassword"], chain_name=CHAIN, timeout=120)

    def call(self, method: str, *params: Any) -> Any:
        assert self.client is not None
        return self.client.call(method, *params)

    def env(self) -> dict[str, str]:
        """Environment for a command reaching this node through its data directory."""
        env = _env()
        env["CHAINMILL_RPCPORT"] = str(self.rpcport)
        return env

    def stop(self) -> None:
        pid, self.pid = self.pid, None
        if pid is None:
            return
        with contextlib.suppress(RpcError, RpcConnectionError):
            self.call("stop")
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None and _pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 30
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if not _pid_alive(pid):
                return


def _wait(predicate: Any, limit: float, what: str) -> Any:
    deadline = time.monotonic() + limit
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {limit:.0f} s waiting for {what}")
        time.sleep(0.05)


def _confirmed_on(node: Node, txid: str) -> bool:
    try:
        return int(node.call("getrawtransaction", txid, 1).get("confirmations", 0)) >= 1
    except RpcError:
        return False


def _network(base: Path, block_time: float) -> tuple[Node, Node]:
    n1, n2 = Node("node1", base), Node("node2", base)
    n1.create(block_time)
    n1.start()
    n2.start(seed=n1)
    address = n2.call("getaddresses")[0]
    txids = [n1.call("grant", address, "connect,send,receive"),
             n1.call("create", "stream", STREAM, True)]
    ensure_system_streams(n1.client)
    _wait(lambda: all(n.call("getinfo")["connections"] >= 1 for n in (n1, n2)), 60,
          "the two nodes to connect")
    _wait(lambda: all(_confirmed_on(n, t) for n in (n1, n2) for t in txids), 60,
          "the grant and the stream on both nodes")
    _wait(lambda: n2.call("liststreams", ["pubkeys", "access"]), 60, "the key streams on node 2")
    n2.call("subscribe", [STREAM, "pubkeys", "access"])
    return n1, n2


# -- the two instances --------------------------------------------------------------------------


def _table(md: MetaData) -> Table:
    return Table(
        "reading", md,
        Column("reading_id", GlobalKey, primary_key=True),
        Column("machine", String(20), nullable=False),
        Column("value", Float, nullable=False),
        # Double: MariaDB's FLOAT is single precision, 128 s steps at today's epoch seconds.
        Column("committed_at", Double, nullable=False, doc="epoch seconds at commit (bench only)"),
    )


def _instance(engine: Any, node: Node, keydir: Path, pid: int, address: str) -> None:
    pair = crypto.write_keypair(keydir, crypto.generate_keypair())
    txid = publish_public_key(node.client, address, pair.public_pem)
    _wait(lambda: _confirmed_on(node, txid), 60, "the public key")
    configure.init(engine, pid)
    configure.add_chain(engine, CHAIN, chain_desc="bench", rpc_host="127.0.0.1",
                        rpc_port=node.rpcport, public_key=str(pair.public_path),
                        private_key=str(pair.private_path))
    configure.add_stream(engine, CHAIN, STREAM)


class Watcher:
    """Polls B's table every few milliseconds and notes when each row first became visible
    there (committed by B's receiver): the partner-side end of the latency, measured the same
    way on every database (MariaDB's DATETIME drops the fraction of applied_at)."""

    def __init__(self, engine: Any, table: Table, interval: float = 0.005) -> None:
        self.engine, self.table, self.interval = engine, table, interval
        self.seen: dict[int, float] = {}
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        last: int | None = None
        column = self.table.c.reading_id
        while not self.stop_event.is_set():
            query = select(column).order_by(column)
            if last is not None:
                query = query.where(column > last)
            with self.engine.connect() as conn:
                keys = conn.execute(query).scalars().all()
            now = time.time()
            for key in keys:
                self.seen.setdefault(int(key), now)
            if keys:
                last = int(keys[-1])
            self.stop_event.wait(self.interval)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(10)


def _latencies(a_engine: Any, table: Table, keys: list[int], seen: dict[int, float]
               ) -> list[float]:
    with a_engine.connect() as conn:
        committed = {
            int(k): t for k, t in conn.execute(
                select(table.c.reading_id, table.c.committed_at).where(table.c.reading_id.in_(keys)))
        }
    return [seen[k] - t for k, t in committed.items() if k in seen]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Workers:
    """The relay (on node 1) and the receiver (on node 2): processes or threads."""

    def __init__(self, mode: str, a_engine: Any, b_engine: Any, n1: Node, n2: Node,
                 base: Path) -> None:
        self.mode = mode
        self.procs: list[subprocess.Popen] = []
        self.threads: list[threading.Thread] = []
        self.stop_event = threading.Event()
        self.logs: list[Path] = []
        if mode == "thread":
            relay = Relay(a_engine, lambda chain: n1.client)
            receiver = Receiver(b_engine, n2.client, CHAIN)
            self.threads = [
                threading.Thread(target=relay.run_forever, args=(self.stop_event, 0.02), daemon=True),
                threading.Thread(target=receiver.follow_forever, args=(self.stop_event, 0.05),
                                 daemon=True),
            ]
            for t in self.threads:
                t.start()
            return
        url_a = a_engine.url.render_as_string(hide_password=False)
        url_b = b_engine.url.render_as_string(hide_password=False)
        commands = [
            (n1, ["triggers", "relay", "--db", url_a, "--datadir", str(n1.datadir),
                  "--interval", "0.02"]),
            (n2, ["triggers", "follow", CHAIN, "--db", url_b, "--datadir", str(n2.datadir),
                  "--interval", "0.05"]),
        ]
        for node, argv in commands:
            out = base / f"{argv[1]}.log"
            self.logs.append(out)
            with out.open("ab") as f:
                self.procs.append(subprocess.Popen([*_cli_argv(), *argv], cwd=REPO,
                                                   env=node.env(), stdout=f,
                                                   stderr=subprocess.STDOUT,
                                                   stdin=subprocess.DEVNULL))

    def check(self) -> None:
        for proc, out in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                raise RuntimeError(f"{out.stem} exited with {proc.returncode}:\n"
                                   f"{out.read_text()[-2000:]}")

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(10)
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run(args: argparse.Namespace) -> dict[str, Any]:
    verify = measure_verify()
    load_before = os.getloadavg()
    base = Path(tempfile.mkdtemp(prefix="chainmill-trg-bench-"))
    nodes: list[Node] = []
    try:
        n1, n2 = _network(base, args.block_time)
        nodes = [n1, n2]
        a_addr, b_addr = n1.call("getaddresses")[0], n2.call("getaddresses")[0]
        kw: dict[str, Any] = {}
        if args.db == "sqlite":
            kw = {"connect_args": {"timeout": 30}}
        with temporary_database(args.db, base, **kw) as a_engine, \
                temporary_database(args.db, base, **kw) as b_engine:
            if args.db == "sqlite":  # WAL: readers and the writer do not block each other
                for engine in (a_engine, b_engine):
                    event.listen(engine, "connect",
                                 lambda dbapi, _: dbapi.execute("PRAGMA journal_mode=WAL"))
            md_a, md_b = MetaData(), MetaData()
            table = _table(md_a)
            table_b = _table(md_b)
            md_a.create_all(a_engine)
            md_b.create_all(b_engine)
            _instance(a_engine, n1, base / "ka", 4711, a_addr)
            _instance(b_engine, n2, base / "kb", 202020, b_addr)
            for engine in (a_engine, b_engine):
                for address, mine in ((a_addr, engine is a_engine), (b_addr, engine is b_engine)):
                    configure.add_node(engine, CHAIN, address, is_mine=mine)
            configure.add_trigger(a_engine, Catalog(a_engine), subsys_dir="mes", table_id="reading",
                                  chain_id=CHAIN, stream_id=STREAM)
            capture.enable(a_engine)
            workers = Workers(args.workers, a_engine, b_engine, n1, n2, base)
            counter = iter(range(1, 10**9))

            def commit_one() -> int:
                key = make_key(4711, next(counter))
                with a_engine.begin() as conn:
                    conn.execute(table.insert().values(reading_id=key, machine="CNC-07", value=1.5,
                                                       committed_at=time.time()))
                return key

            def applied() -> int:
                with b_engine.connect() as conn:
                    return int(conn.execute(select(func.count())
                                            .select_from(schema.applied_event)).scalar() or 0)

            def wait_applied(n: int, limit: float) -> float:
                deadline = time.monotonic() + limit
                while applied() < n:
                    workers.check()
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"only {applied()} of {n} rows applied in {limit:.0f} s")
                    time.sleep(0.02)
                return time.monotonic()

            try:
                log.info("warm-up: one row through the pipeline")
                commit_one()
                wait_applied(1, 60)
                log.info("latency phase: %s rows/s for %s s", args.rate, args.seconds)
                watcher = Watcher(b_engine, table_b)
                steady_keys = []
                start = time.monotonic()
                total = int(args.rate * args.seconds)
                for i in range(total):
                    target = start + i / args.rate
                    delay = target - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    steady_keys.append(commit_one())
                offered = total / (time.monotonic() - start)
                wait_applied(1 + total, 300)
                _wait(lambda: all(k in watcher.seen for k in steady_keys), 10,
                      "the last rows to be seen on B")
                watcher.stop()
                lat = _latencies(a_engine, table, steady_keys, watcher.seen)

                log.info("throughput phase: %s rows as fast as the application can commit",
                         args.burst)
                t0 = time.monotonic()
                for _ in range(args.burst):
                    commit_one()
                commit_s = time.monotonic() - t0
                t1 = wait_applied(1 + total + args.burst, 900)
                rows_per_s = args.burst / (t1 - t0)

                log.info("backlog phase: %s rows committed while the relay and the receiver "
                         "are stopped, then drained", args.backlog)
                workers.stop()
                for _ in range(args.backlog):
                    commit_one()
                t2 = time.monotonic()
                workers = Workers(args.workers, a_engine, b_engine, n1, n2, base)
                t3 = wait_applied(1 + total + args.burst + args.backlog, 900)
                drain_per_s = args.backlog / (t3 - t2)
            finally:
                workers.stop()
            with a_engine.connect() as conn:
                txs = conn.execute(select(func.count(func.distinct(schema.outbox.c.txid)))).scalar()
    finally:
        for node in reversed(nodes):
            node.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    rows = 1 + total + args.burst + args.backlog
    return {
        "benchmark": "triggers_pipeline",
        "topology": "two nodes: A's relay publishes on node 1 (the miner); node 2 joined it "
                    "and B's receiver applies from node 2",
        "workers": ("relay and receiver as their own processes (chainmill triggers relay / "
                    "follow)" if args.workers == "process" else "relay and receiver as threads "
                    "of the benchmark process"),
        "database": args.db,
        "block_time_s": args.block_time,
        "finality": "final items only (1 confirmation: finaldepth with one miner)",
        "latency": {
            "offered_rows_per_s": round(offered, 1),
            "rows": len(lat),
            "p50_s": round(_percentile(lat, 0.50), 3),
            "p99_s": round(_percentile(lat, 0.99), 3),
            "mean_s": round(statistics.fmean(lat), 3),
            "max_s": round(max(lat), 3),
        },
        "throughput": {
            "rows": args.burst,
            "app_commit_rows_per_s": round(args.burst / commit_s, 1),
            "sustained_rows_per_s": round(rows_per_s, 1),
            "backlog_rows": args.backlog,
            "backlog_drain_rows_per_s": round(drain_per_s, 1),
            "backlog_note": "rows committed while relay and receiver were stopped, drained "
                            "from their (re)start to the last row applied on B: the "
                            "pipeline's own capacity, without the application committing "
                            "at the same time",
        },
        "transactions": {"rows": rows, "publish_transactions": txs,
                         "rows_per_transaction": round(rows / txs, 1) if txs else None},
        "verify": verify,
        "ratio_rows_to_verify": round(rows_per_s / verify["reference_per_s"], 5),
        "ratio_to_targets": {
            "sustained": round(rows_per_s / TARGETS["sustained_rows_per_s"], 2),
            "p99": round(_percentile(lat, 0.99) / TARGETS["p99_s_at_100_rows_per_s"], 3),
        },
        "targets": TARGETS,
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "machine": machine_info(),
    }


def compare(result: dict[str, Any], before: dict[str, Any], label: str) -> None:
    """Keep an earlier run's figures in `result`, with after/before ratios."""
    keep = ("topology", "workers", "database", "block_time_s", "latency", "throughput",
            "transactions", "ratio_rows_to_verify", "load_average_before_after")
    result["before"] = {"code": label, **{k: before[k] for k in keep if k in before},
                        "verify_reference_per_s": before["verify"]["reference_per_s"]}
    b_lat, b_thr = before["latency"], before["throughput"]
    lat, thr = result["latency"], result["throughput"]
    ratios = {
        "sustained_rows_per_s": round(thr["sustained_rows_per_s"] / b_thr["sustained_rows_per_s"], 1),
        "p50_s": round(lat["p50_s"] / b_lat["p50_s"], 3),
        "p99_s": round(lat["p99_s"] / b_lat["p99_s"], 3),
    }
    if "backlog_drain_rows_per_s" in b_thr:
        ratios["backlog_drain_rows_per_s"] = round(
            thr["backlog_drain_rows_per_s"] / b_thr["backlog_drain_rows_per_s"], 1)
    result["after_over_before"] = ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="offered rows/s in the latency phase")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the latency phase")
    parser.add_argument("--burst", type=int, default=3000, help="rows in the throughput phase")
    parser.add_argument("--backlog", type=int, default=3000,
                        help="rows committed while the workers are stopped, then drained")
    parser.add_argument("--db", choices=("sqlite", "postgres", "mariadb"), default="sqlite")
    parser.add_argument("--block-time", type=float, default=0.5)
    parser.add_argument("--workers", choices=("process", "thread"), default="process")
    parser.add_argument("--keep", action="store_true", help="keep the data directories and logs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--before", type=Path,
                        help="a result of this benchmark run on earlier code: kept in the output "
                             "with the after/before ratios")
    parser.add_argument("--before-label", default="earlier code",
                        help="what the --before result measured (e.g. a commit)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    log.setLevel(logging.INFO)
    result = run(args)
    if args.before is not None:
        compare(result, json.loads(args.before.read_text()), args.before_label)
    lat, thr = result["latency"], result["throughput"]
    print(f"latency at {lat['offered_rows_per_s']} rows/s: p50 {lat['p50_s']} s, p99 {lat['p99_s']} s "
          f"({lat['rows']} rows)")
    print(f"sustained: {thr['sustained_rows_per_s']} rows/s "
          f"(application committed {thr['app_commit_rows_per_s']} rows/s); backlog drained at "
          f"{thr['backlog_drain_rows_per_s']} rows/s")
    print(f"verify rate: {result['verify']['reference_per_s']:.0f}/s; "
          f"rows/verify ratio {result['ratio_rows_to_verify']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
