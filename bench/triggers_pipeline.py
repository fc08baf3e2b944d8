"""Trigger pipeline benchmark: commit on instance A -> relay -> node -> receiver -> applied on B.

Measures, through the whole pipeline (capture into the outbox, relay publishing, the node
mining, the receiver applying in chain order):

* commit-to-applied latency p50/p99 at a steady offered rate (default 100 rows/s), one row
  per application transaction;
* sustained rows/s when the application commits as fast as it can;
* the raw coincurve verify rate measured in the same run, and rows/s as a ratio to it.

Until multi-node networking exists both instances share one node (each with its own address,
as in the functional tests); with two nodes the same code runs with a second client.

    python -m bench.triggers_pipeline [--rate 100] [--seconds 20] [--burst 3000] [--db sqlite]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Float, MetaData, String, Table, event, select

from bench.common import REPO, BenchNode, machine_info, measure_verify
from node.client import RpcClient
from triggers import capture, configure, crypto, schema
from triggers.catalog import Catalog
from triggers.keys import GlobalKey, make_key
from triggers.keys_command import ensure_system_streams, publish_public_key
from triggers.receiver import Receiver
from triggers.relay import Relay
from triggers.tools.databases import temporary_database

log = logging.getLogger("bench.triggers")
RESULTS = REPO / "bench" / "results" / "triggers_pipeline.json"


def _table(md: MetaData) -> Table:
    return Table(
        "reading", md,
        Column("reading_id", GlobalKey, primary_key=True),
        Column("machine", String(20), nullable=False),
        Column("value", Float, nullable=False),
        Column("committed_at", Float, nullable=False, doc="epoch seconds at commit (bench only)"),
    )


def _wait_mined(client: RpcClient, txid: str) -> None:
    deadline = time.monotonic() + 60
    while txid in (client.call("getrawmempool") or []):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{txid} not mined")
        time.sleep(0.05)


def _instance(engine: Any, client: RpcClient, chain: str, keydir: Path, pid: int, address: str) -> None:
    pair = crypto.write_keypair(keydir, crypto.generate_keypair())
    _wait_mined(client, publish_public_key(client, address, pair.public_pem))
    configure.init(engine, pid)
    configure.add_chain(engine, chain, chain_desc="bench", rpc_host="127.0.0.1", rpc_port=client.port,
                        public_key=str(pair.public_path), private_key=str(pair.private_path))
    configure.add_stream(engine, chain, "readings")


def _latencies(a_engine: Any, b_engine: Any, table: Table, keys: list[int]) -> list[float]:
    with a_engine.connect() as conn:
        committed = {
            int(k): t for k, t in conn.execute(
                select(table.c.reading_id, table.c.committed_at).where(table.c.reading_id.in_(keys)))
        }
        by_event = {}
        for message_id, pkey in conn.execute(select(schema.outbox.c.message_id, schema.outbox.c.pkey)):
            by_event[message_id] = int(json.loads(pkey)["reading_id"])
    with b_engine.connect() as conn:
        applied = conn.execute(select(schema.applied_event.c.message_id, schema.applied_event.c.applied_at)).all()
    out = []
    for message_id, applied_at in applied:
        key = by_event.get(message_id)
        if key in committed:
            out.append(applied_at.replace(tzinfo=__import__("datetime").UTC).timestamp() - committed[key])
    return out


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    verify = measure_verify()
    node = BenchNode("trgbench", block_time=args.block_time)
    node.create()
    node.start()
    tmp = Path(tempfile.mkdtemp(prefix="chainmill-trg-bench-"))
    try:
        client = RpcClient("127.0.0.1", node.port, node.user, node.password, chain_name=node.chain)
        _wait_mined(client, client.call("create", "stream", "readings", True))
        ensure_system_streams(client)
        a_addr = client.call("getaddresses")[0]
        b_addr = client.call("getnewaddress")
        _wait_mined(client, client.call("grant", b_addr, "connect,send,receive"))
        kw: dict[str, Any] = {}
        if args.db == "sqlite":
            kw = {"connect_args": {"timeout": 30}}
        with temporary_database(args.db, tmp, **kw) as a_engine, \
                temporary_database(args.db, tmp, **kw) as b_engine:
            if args.db == "sqlite":  # WAL: readers and the writer do not block each other
                for engine in (a_engine, b_engine):
                    event.listen(engine, "connect",
                                 lambda dbapi, _: dbapi.execute("PRAGMA journal_mode=WAL"))
            md_a, md_b = MetaData(), MetaData()
            table = _table(md_a)
            _table(md_b)
            md_a.create_all(a_engine)
            md_b.create_all(b_engine)
            _instance(a_engine, client, node.chain, tmp / "ka", 4711, a_addr)
            _instance(b_engine, client, node.chain, tmp / "kb", 202020, b_addr)
            for engine in (a_engine, b_engine):
                for address, mine in ((a_addr, engine is a_engine), (b_addr, engine is b_engine)):
                    configure.add_node(engine, node.chain, address, is_mine=mine)
            configure.add_trigger(a_engine, Catalog(a_engine), subsys_dir="mes", table_id="reading",
                                  chain_id=node.chain, stream_id="readings")
            capture.enable(a_engine)
            stop = threading.Event()
            relay = Relay(a_engine, lambda chain: client)
            receiver = Receiver(b_engine, client, node.chain)
            workers = [threading.Thread(target=relay.run_forever, args=(stop, 0.02), daemon=True),
                       threading.Thread(target=receiver.follow_forever, args=(stop, 0.05), daemon=True)]
            for w in workers:
                w.start()
            counter = iter(range(1, 10**9))

            def commit_one() -> int:
                key = make_key(4711, next(counter))
                with a_engine.begin() as conn:
                    conn.execute(table.insert().values(reading_id=key, machine="CNC-07", value=1.5,
                                                       committed_at=time.time()))
                return key

            def applied() -> int:
                with b_engine.connect() as conn:
                    return len(conn.execute(select(schema.applied_event.c.message_id)).all())

            def wait_applied(n: int, limit: float) -> float:
                deadline = time.monotonic() + limit
                while applied() < n:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"only {applied()} of {n} rows applied in {limit:.0f} s")
                    time.sleep(0.02)
                return time.monotonic()

            log.info("latency phase: %s rows/s for %s s", args.rate, args.seconds)
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
            wait_applied(total, 120)
            lat = _latencies(a_engine, b_engine, table, steady_keys)

            log.info("throughput phase: %s rows as fast as the application can commit", args.burst)
            t0 = time.monotonic()
            for _ in range(args.burst):
                commit_one()
            commit_s = time.monotonic() - t0
            t1 = wait_applied(total + args.burst, 600)
            rows_per_s = args.burst / (t1 - t0)
            stop.set()
            for w in workers:
                w.join(10)
    finally:
        node.stop()
    result = {
        "benchmark": "triggers_pipeline",
        "topology": "one node, two application databases (instances with their own addresses)",
        "database": args.db,
        "block_time_s": args.block_time,
        "latency": {
            "offered_rows_per_s": round(offered, 1),
            "rows": len(lat),
            "p50_s": round(_percentile(lat, 0.50), 3),
            "p99_s": round(_percentile(lat, 0.99), 3),
            "mean_s": round(statistics.fmean(lat), 3),
        },
        "throughput": {
            "rows": args.burst,
            "app_commit_rows_per_s": round(args.burst / commit_s, 1),
            "sustained_rows_per_s": round(rows_per_s, 1),
        },
        "verify": verify,
        "ratio_rows_to_verify": round(rows_per_s / verify["reference_per_s"], 5),
        "targets": {"sustained_rows_per_s": 300, "p99_s_at_100_rows_per_s": 3.0},
        "machine": machine_info(),
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="offered rows/s in the latency phase")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the latency phase")
    parser.add_argument("--burst", type=int, default=3000, help="rows in the throughput phase")
    parser.add_argument("--db", choices=("sqlite", "postgres", "mariadb"), default="sqlite")
    parser.add_argument("--block-time", type=float, default=0.2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    log.setLevel(logging.INFO)
    result = run(args)
    lat, thr = result["latency"], result["throughput"]
    print(f"latency at {lat['offered_rows_per_s']} rows/s: p50 {lat['p50_s']} s, p99 {lat['p99_s']} s "
          f"({lat['rows']} rows)")
    print(f"sustained: {thr['sustained_rows_per_s']} rows/s "
          f"(application committed {thr['app_commit_rows_per_s']} rows/s)")
    print(f"verify rate: {result['verify']['reference_per_s']:.0f}/s; "
          f"rows/verify ratio {result['ratio_rows_to_verify']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
