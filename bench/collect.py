"""CNC collector and observation-sharing benchmark.

Measured in one run, with the raw coincurve verify rate as the yardstick (DESIGN.md
"Performance stance"):

* validated/s: spec 3.4 validation and dispatch only (a plug-in that stores nothing);
* stored/s on SQLite and PostgreSQL: validation + the default plug-in (one row per message,
  one transaction each, the unique index checked) through `Dispatcher.process`;
* end-to-end/s: messages published at QoS 1 to a private mosquitto, received by the
  collector (paho) and stored in SQLite, from the first publish to the last row stored;
* forwarded/s: observations captured from `cnc_data` into the outbox, encrypted, wrapped
  for two readers and published with their access entries to a real node (until accepted
  by the node; confirmed/s until all are mined).

    python -m bench.collect [--messages 5000] [--observations 500] [--out bench/results/collect.json]
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import logging
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select

from bench.common import BenchNode, free_port, machine_info, measure_verify
from mes.collector.broker import BrokerSettings
from mes.collector.dispatch import Dispatcher
from mes.collector.plugins import PluginSet, load_plugins
from mes.collector.store import CncStore, cnc_data, open_store

log = logging.getLogger("bench.collect")

CNCS = [f"CNC{n:03d}" for n in range(1, 11)]


def bodies(n: int, start: int) -> list[bytes]:
    out = []
    for i in range(n):
        message = {"cnc_id": CNCS[i % len(CNCS)], "part_program": "program_01",
                   "timestamp": str(start + i // len(CNCS)),
                   "payload": {"status": "running", "spin": 800 + i % 900, "X-Axis": i % 500,
                               "Y-Axis": (i * 7) % 500, "feed": 250.5, "seq": i}}
        out.append(json.dumps(message).encode())
    return out


class Discard:
    def handle(self, message: Any, db: Any) -> None:
        return None


def rate(n: int, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else 0.0


def bench_validate(msgs: list[bytes]) -> dict[str, Any]:
    plugins = PluginSet(instances={c: Discard() for c in CNCS})
    dispatcher = Dispatcher(plugins, None)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    for body in msgs:
        dispatcher.process(body)
    elapsed = time.perf_counter() - t0
    assert dispatcher.stats.handled == len(msgs)
    return {"messages": len(msgs), "seconds": round(elapsed, 3), "per_s": rate(len(msgs), elapsed)}


def bench_store(msgs: list[bytes], url: str, batch: int) -> dict[str, Any]:
    """Validate + store through the default plug-in; `batch` messages per transaction, as
    the collector's writer thread does (1: one transaction per message)."""
    store = open_store(url)
    with store.engine.begin() as conn:
        conn.execute(cnc_data.delete())
    dispatcher = Dispatcher(load_plugins({c: "CncData" for c in CNCS}, None), store)
    t0 = time.perf_counter()
    if batch == 1:
        for body in msgs:
            dispatcher.process(body)
    else:
        for start in range(0, len(msgs), batch):
            with store.deferred():
                for body in msgs[start:start + batch]:
                    dispatcher.process(body)
                store.flush()
    elapsed = time.perf_counter() - t0
    redelivered = time.perf_counter()
    for body in msgs[:500]:
        dispatcher.process(body)
    dup_elapsed = time.perf_counter() - redelivered
    with store.engine.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(cnc_data)).scalar()
    store.engine.dispose()
    assert rows == len(msgs), rows
    return {"messages": len(msgs), "batch": batch, "seconds": round(elapsed, 3),
            "per_s": rate(len(msgs), elapsed), "redelivered_per_s": rate(500, dup_elapsed)}


@contextlib.contextmanager
def postgres_url() -> Any:
    import psycopg

    name = f"chainmill_bench_{secrets.token_hex(4)}"
    admin = psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres",
                            autocommit=True, connect_timeout=5)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def bench_end_to_end(msgs: list[bytes], workdir: Path) -> dict[str, Any]:
    import paho.mqtt.client as mqtt

    from mes.collector.service import Collector

    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\n"
                    "allow_anonymous true\nmax_queued_messages 0\n")
    broker = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        store = open_store(f"sqlite:///{workdir / 'e2e.db'}")
        dispatcher = Dispatcher(load_plugins({c: "CncData" for c in CNCS}, None), store)
        # the production path: writer thread, batches, manual acks
        collector = Collector(BrokerSettings("127.0.0.1", port), dispatcher,
                              client_id="bench-collector")
        thread = threading.Thread(target=collector.run, daemon=True)
        thread.start()
        collector.connected.wait(10)
        time.sleep(0.2)  # the SUBSCRIBE is sent right after CONNACK
        publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-publisher")
        publisher.max_inflight_messages_set(1000)
        publisher.connect("127.0.0.1", port)
        publisher.loop_start()
        t0 = time.perf_counter()
        infos = [publisher.publish("sensor/CNC", body, qos=1) for body in msgs]
        for info in infos:
            info.wait_for_publish(60)
        published = time.perf_counter() - t0
        deadline = time.monotonic() + 120
        while dispatcher.stats.stored < len(msgs) and time.monotonic() < deadline:
            time.sleep(0.01)
        elapsed = time.perf_counter() - t0
        publisher.loop_stop()
        publisher.disconnect()
        collector.stop()
        thread.join(10)
        return {"messages": len(msgs), "stored": dispatcher.stats.stored,
                "seconds": round(elapsed, 3), "per_s": rate(dispatcher.stats.stored, elapsed),
                "publish_seconds": round(published, 3)}
    finally:
        broker.terminate()
        broker.wait(10)


def wait_confirmed(client: Any, txid: str | None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while txid and time.monotonic() < deadline:
        if (client.call("getrawtransaction", txid, 1) or {}).get("confirmations"):
            return
        time.sleep(0.1)


def bench_forward(n: int, workdir: Path) -> dict[str, Any]:
    from mes.collector.message import CncMessage
    from mes.sharing.client import ObservationClient
    from mes.sharing.forwarder import Forwarder
    from mes.sharing.schema import create_tables
    from mes.sharing.systems import add_share, declare_system
    from node.client import RpcClient
    from triggers import crypto

    node = BenchNode("benchshare", block_time=0.5)
    try:
        node.create()
        node.start()
        client = RpcClient("127.0.0.1", node.port, node.user, node.password,
                           chain_name=node.chain, timeout=60)
        owner = client.call("getaddresses")[0]
        partner = client.call("getnewaddress")
        wait_confirmed(client, client.call("grant", partner, "send,receive"))
        obs_client = ObservationClient(client)
        for address, name in ((owner, "owner"), (partner, "partner")):
            pair = crypto.write_keypair(workdir / f"keys-{name}", crypto.generate_keypair())
            obs_client.register(pair.public_pem, address)
        engine = create_engine(f"sqlite:///{workdir / 'share.db'}")
        create_tables(engine)
        store = CncStore(engine)
        start = int(time.time()) - n
        for i in range(n):
            store.store(CncMessage("CNC001", "p1", start + i, {"spin": 1001 + i, "feed": 1.0}))
        wait_confirmed(client, declare_system(engine, client, "acme.bench.cnc", owner))
        add_share(engine, "acme.bench.cnc", partner, "variable = spin AND result > 1000")
        forwarder = Forwarder(engine, client)
        t0 = time.perf_counter()
        captured = forwarder.capture(limit=n)
        captured_s = time.perf_counter() - t0
        published = forwarder.publish()
        published_s = time.perf_counter() - t0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            info = client.call("getstreaminfo", "acme.bench.cnc")
            if info.get("confirmed", 0) >= published:
                break
            time.sleep(0.05)
        confirmed_s = time.perf_counter() - t0
        return {"observations": published, "captured": captured,
                "capture_per_s": rate(captured, captured_s),
                "forwarded_per_s": rate(published, published_s),
                "confirmed_per_s": rate(published, confirmed_s),
                "node_transactions_per_observation": 2, "block_time_s": 0.5}
    finally:
        node.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--observations", type=int, default=500)
    parser.add_argument("--out", default="bench/results/collect.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="chainmill-bench-collect-"))
    try:
        verify = measure_verify()
        msgs = bodies(args.messages, int(time.time()) - args.messages)
        results: dict[str, Any] = {"validate": bench_validate(msgs)}
        sqlite_url = f"sqlite:///{workdir / 'mes.db'}"
        results["store_sqlite_batch500"] = bench_store(msgs, sqlite_url, 500)
        results["store_sqlite_per_message"] = bench_store(msgs[:1000], sqlite_url, 1)
        try:
            with postgres_url() as url:
                results["store_postgres_batch500"] = bench_store(msgs, url, 500)
                results["store_postgres_per_message"] = bench_store(msgs[:1000], url, 1)
        except Exception as exc:  # the server may be down: report, do not fail the others
            results["store_postgres"] = {"skipped": str(exc)[:200]}
        if shutil.which("mosquitto"):
            results["end_to_end_mqtt_sqlite"] = bench_end_to_end(msgs, workdir)
        results["forward"] = bench_forward(args.observations, workdir)
        verify_again = measure_verify()
        ref = max(verify["reference_per_s"], verify_again["reference_per_s"])
        for part in results.values():
            for key in ("per_s", "forwarded_per_s", "confirmed_per_s"):
                if key in part:
                    part[f"{key}_ratio_to_verify"] = round(part[key] / ref, 4)
        report = {"bench": "collect", "verify": verify, "verify_after": verify_again,
                  "verify_reference_per_s": ref, "machine": machine_info(), "results": results}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        for name, part in results.items():
            figures = {k: v for k, v in part.items() if "per_s" in k}
            print(f"{name:24s} {figures}")
        print(f"verify rate (reference): {ref:.0f}/s; written to {args.out}")
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
