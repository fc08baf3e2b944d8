"""Network benchmark: a 3-node cluster on this machine, throughput, latency and catch-up.

    python -m bench.network [--block-time 0.5] [--seconds 15] [--backlog 2000] [--clients 4] [--batch 16]
                            [--rate 200] [--latency-seconds 15] [--catchup-items 20000]
                            [--phases throughput,latency,catchup] [--profile DIR] [--keep]
                            [--out bench/results/network.json]

A cluster of three nodes (`chainmill cluster up 3`, all miners, mining-diversity 0.75 so
they take strict turns) runs in a temporary directory, with mine-empty-rounds=0 and
setup-first-blocks=1: below setup-first-blocks the diversity rule is off, every miner is
eligible, and under load the backup miners' rival blocks make the nodes reorganise over and
over, which is the start-up of a chain, not its steady state. Three figures:

1. throughput: items published round-robin on all three nodes by `clients` concurrent
   clients per node, each sending its next JSON-RPC batch of `batch` `publish` calls (one
   transaction per item) as soon as the previous one returns, for `seconds` seconds, all
   of them holding off while any node's mempool is over `backlog` transactions: the
   offered load follows the most the cluster confirms. Figure: items/s confirmed on all
   three = items accepted / (first send -> every item confirmed on all three nodes).
2. latency at a fixed rate: one `publish` every 1/`rate` s, round-robin over the nodes,
   for `latency-seconds`; per item, the time from the start of its publish call to the
   moment its block has been seen on all three nodes (each node's new blocks are polled
   every 50 ms, so the figures are at most ~50 ms pessimistic). Figures: p50, p99.
3. catch-up: the chain is topped up (one transaction per item) to at least
   `catchup-items` items; a fresh fourth node joins through node1 and is granted connect;
   figure: items on the chain / (its handshake -> its height equals the cluster's), timed
   from its debug.log (connection line to last sync line) and, as a check, by polling.

Each figure is also given relative to the raw coincurve verify rate measured in the same
run (bench.common.measure_verify, the higher of a measurement before and after): rates as
figure / verifies-per-second, latencies as latency x verifies-per-second (how many single-
thread verifications would fit in that time). Targets (issue 12, after issue 3's 1,000 and
5,000): >= 3,000 items/s confirmed on all 3; p99 <= 2 block times + 1 s at 200 items/s;
catch-up >= 20,000 items/s. Node CPU per item (all threads and the verification worker
processes) is reported beside each rate: on a shared machine it is the figure to compare.

Every phase has a deadline; the nodes are always stopped (cluster down, then any process
left in a pid file of this run's directory), and the directory removed unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    PySpy,
    latency_summary,
    machine_cpu,
    machine_info,
    measure_verify,
    proc_cpu,
    self_cpu,
    tree_cpu,
)

CHAIN = "bench"
TARGETS = {"confirmed_items_per_s": 3000.0, "catchup_items_per_s": 20000.0}
SYNC_LINE = re.compile(r"^(\S+ \S+) .*sync: height (\d+) / peer height (\d+) "
                       r"\((\d+) blocks, (\d+) items/s\)")
CONNECTED_LINE = re.compile(r"^(\S+ \S+) .*connected to outbound peer")
POLL = 0.02
WATCH_POLL = 0.05
"""How often the latency phase looks for new blocks on each node (bounds its error)."""


# -- processes --------------------------------------------------------------------------------
def child_env() -> dict[str, str]:
    """Node processes run this source tree (not an installed chainmill)."""
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("CHAINMILL_DATADIR", None)
    return env


def chainmill(*args: str, timeout: float = 240) -> str:
    p = subprocess.run([sys.executable, "-m", "node.cli.main", *args], cwd=REPO, env=child_env(),
                       capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise RuntimeError(f"chainmill {' '.join(args[:3])} failed ({p.returncode}):\n"
                           f"{p.stdout[-1500:]}\n{p.stderr[-1500:]}")
    return p.stdout


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def stop_everything(base: Path) -> None:
    """Stop every node of this run: `cluster down`, then SIGTERM/SIGKILL any process still
    named in a chainmill.pid under `base` (only processes this run started live there)."""
    if (base / "cluster" / "cluster.json").exists():
        with contextlib.suppress(Exception):
            chainmill("cluster", "down", "--dir", str(base / "cluster"), timeout=60)
    pids = []
    for pid_file in base.glob("**/chainmill.pid"):
        with contextlib.suppress(OSError, ValueError):
            pids.append(int(pid_file.read_text().strip()))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        live = [p for p in pids if pid_alive(p)]
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, sig)
        deadline = time.monotonic() + 15
        while any(pid_alive(p) for p in live) and time.monotonic() < deadline:
            time.sleep(0.1)


# -- JSON-RPC over plain asyncio streams --------------------------------------------------------
@dataclass
class Node:
    name: str
    datadir: str
    port: int
    rpcport: int
    user: str
    password: str
    pid: int | None = None

    @property
    def auth(self) -> str:
        return "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()


class Conn:
    """One keep-alive HTTP/1.1 connection posting JSON-RPC bodies (cheaper than aiohttp's
    client, so more of the two shared cores is left to the nodes)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.prefix = (f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{node.rpcport}\r\n"
                       f"Authorization: {node.auth}\r\nContent-Type: application/json\r\n"
                       "Content-Length: ").encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes, timeout: float = 60.0) -> bytes:
        try:
            return await asyncio.wait_for(self._post(body), timeout)
        except TimeoutError:
            self.close()
            raise

    async def _post(self, body: bytes) -> bytes:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1",
                                                                     self.node.rpcport)
        assert self.reader is not None
        self.writer.write(self.prefix + b"%d\r\n\r\n" % len(body) + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lower = head.lower()
        i = lower.find(b"content-length:")
        data = await self.reader.readexactly(int(head[i + 15:head.index(b"\r\n", i)]))
        if b"connection: close" in lower:
            self.close()
        return data

    async def call(self, method: str, *params: Any) -> Any:
        import orjson

        body = orjson.dumps({"method": method, "params": list(params), "id": 1})
        try:
            data = await self.post(body)
        except (asyncio.IncompleteReadError, ConnectionError):
            # The node closed a keep-alive connection that sat idle (a long phase on a
            # loaded machine): one retry on a new connection.
            self.close()
            data = await self.post(body)
        reply = orjson.loads(data)
        if reply.get("error"):
            raise RuntimeError(f"{self.node.name} {method}: {reply['error']}")
        return reply["result"]

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def wait_for(predicate, deadline: float, what: str, interval: float = 0.05) -> Any:
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


def publish_batch(stream: str, first: int, count: int, tag: str) -> bytes:
    import orjson

    return orjson.dumps([
        {"method": "publish", "params": [stream, f"{tag}{i:08d}",
                                         {"json": {"serial": i, "station": i % 16, "ok": True}}],
         "id": i} for i in range(first, first + count)])


async def confirmed_on_all(conns: list[Conn], stream: str, expected: int) -> bool:
    # Empty mempools first: getmempoolinfo is cheap, getstreaminfo counts keys over the
    # whole stream, and polling it would take CPU from the nodes being measured.
    for c in conns:
        if (await c.call("getmempoolinfo"))["size"]:
            return False
    for c in conns:
        if (await c.call("getstreaminfo", stream))["confirmed"] < expected:
            return False
    return True


async def new_stream(conns: list[Conn], name: str, deadline: float) -> None:
    await conns[0].call("create", "stream", name, True)

    async def everywhere() -> bool:
        for c in conns:
            try:
                streams = await c.call("liststreams", name)
            except RuntimeError as e:
                if "-708" in str(e):  # the creation has not reached this node yet
                    return False
                raise
            if not streams or streams[0].get("streamref") is None:
                return False
        return True
    await wait_for(everywhere, deadline, f"stream {name} confirmed on every node")
    for c in conns:
        await c.call("subscribe", name)


# -- 1. throughput ---------------------------------------------------------------------------------
async def throughput(nodes: list[Node], *, seconds: float, clients: int, batch: int,
                     backlog: int, deadline_s: float, profile_dir: Path | None
                     ) -> dict[str, Any]:
    setup = [Conn(n) for n in nodes]
    t_limit = time.monotonic() + deadline_s
    await new_stream(setup, "tput", t_limit)
    # Bodies are built before the clock starts (the generator shares the machine's cores).
    per_client_calls = int(seconds * 3000 / batch / clients / len(nodes)) + 50
    bodies = {(n.name, k): [publish_batch("tput", ((k * 100_000 + j) * batch), batch,
                                          f"{n.name}-") for j in range(per_client_calls)]
              for n in nodes for k in range(clients)}
    accepted = 0
    errors = 0
    first_error: str | None = None
    cpu0 = {n.name: tree_cpu(n.pid or 0) or 0.0 for n in nodes}
    machine0, self0 = machine_cpu(), self_cpu()
    spy = PySpy(nodes[0].pid or 0, profile_dir / "network-throughput.txt") \
        if profile_dir else None  # raw collapsed stacks, one line per stack
    t_first = time.monotonic()
    t_stop = t_first + seconds
    # Back-pressure: clients hold off while any node's mempool is over `backlog`, so the
    # offered load follows what the cluster confirms instead of piling up unconfirmed.
    flowing = asyncio.Event()
    flowing.set()
    held = 0.0

    async def monitor() -> None:
        nonlocal held
        conns = [Conn(n) for n in nodes]
        try:
            while time.monotonic() < t_stop:
                sizes = [(await c.call("getmempoolinfo"))["size"] for c in conns]
                if max(sizes) > backlog:
                    if flowing.is_set():
                        flowing.clear()
                    held += 0.05
                elif not flowing.is_set():
                    flowing.set()
                await asyncio.sleep(0.05)
        finally:
            flowing.set()
            for c in conns:
                c.close()

    async def client(node: Node, k: int) -> None:
        import orjson

        nonlocal accepted, errors, first_error
        conn = Conn(node)
        try:
            for body in bodies[(node.name, k)]:
                await flowing.wait()
                if time.monotonic() >= t_stop:
                    break
                try:
                    reply = orjson.loads(await conn.post(body))
                except Exception as e:  # noqa: BLE001 - counted, reported
                    errors += batch
                    first_error = first_error or f"{type(e).__name__}: {e}"
                    conn.close()
                    continue
                ok = sum(1 for r in reply if r.get("error") is None)
                accepted += ok
                if ok < len(reply):
                    errors += len(reply) - ok
                    first_error = first_error or str(
                        next(r["error"] for r in reply if r.get("error")))
        finally:
            conn.close()

    watch = asyncio.create_task(monitor())
    await asyncio.gather(*(client(n, k) for n in nodes for k in range(clients)))
    await watch
    t_sent = time.monotonic()
    pools = [(await c.call("getmempoolinfo"))["size"] for c in setup]
    await wait_for(lambda: confirmed_on_all(setup, "tput", accepted), t_limit,
                   "all throughput items confirmed on all nodes", interval=POLL)
    t_all = time.monotonic()
    profile = spy.stop() if spy else None
    cpu = {n.name: round((tree_cpu(n.pid or 0) or 0.0) - cpu0[n.name], 2) for n in nodes}
    bench_cpu = self_cpu() - self0
    others = machine_cpu() - machine0 - sum(cpu.values()) - bench_cpu
    height = await setup[0].call("getblockcount")
    for c in setup:
        c.close()
    total = t_all - t_first
    return {
        "clients_per_node": clients, "publish_calls_per_batch": batch, "load_seconds": seconds,
        "backlog_limit": backlog, "seconds_held_by_backlog": round(held, 2),
        "items_accepted": accepted, "item_errors": errors, "first_error": first_error,
        "send_items_per_s": round(accepted / (t_sent - t_first), 1),
        "mempool_sizes_at_send_end": pools,
        "send_to_confirmed_on_all_s": round(total, 3),
        "tail_after_send_s": round(t_all - t_sent, 3),
        "confirmed_items_per_s": round(accepted / total, 1),
        "node_cpu_s": cpu, "node_cores": {k: round(v / total, 2) for k, v in cpu.items()},
        "bench_client_cores": round(bench_cpu / total, 2),
        "other_processes_cores": round(max(0.0, others) / total, 2),
        "node_cpu_us_per_item_all_3": round(sum(cpu.values()) / accepted * 1e6) if accepted
        else None,
        "height_after": height,
        **({"profile_node1": profile} if profile else {}),
    }


# -- 2. latency at a fixed rate ----------------------------------------------------------------------
class BlockWatcher:
    """Polls one node's new blocks and notes when each transaction was first seen in the
    block that holds it (a later block wins, so a reorganised-away sighting is replaced)."""

    def __init__(self, node: Node) -> None:
        self.conn = Conn(node)
        self.seen: dict[str, float] = {}
        self.hashes: dict[int, str] = {}
        self.stopping = False

    async def run(self) -> None:
        height = await self.conn.call("getblockcount")
        for h in range(max(0, height - 3), height + 1):
            self.hashes[h] = await self.conn.call("getblockhash", h)
        while not self.stopping:
            now_height = await self.conn.call("getblockcount")
            h = min(now_height, max(self.hashes) if self.hashes else 0)
            # Walk back over any replaced blocks, then forward over the new ones.
            while h > 0 and self.hashes.get(h) != await self.conn.call("getblockhash", h):
                h -= 1
            for k in range(h + 1, now_height + 1):
                block = await self.conn.call("getblock", k, 1)
                t = time.perf_counter()
                self.hashes[k] = block["hash"]
                for txid in block["tx"]:
                    self.seen[txid] = t
            await asyncio.sleep(WATCH_POLL)

    def close(self) -> None:
        self.stopping = True
        self.conn.close()


async def latency(nodes: list[Node], *, rate: float, seconds: float, block_time: float,
                  deadline_s: float) -> dict[str, Any]:
    import orjson

    setup = [Conn(n) for n in nodes]
    t_limit = time.monotonic() + deadline_s
    await new_stream(setup, "lat", t_limit)
    watchers = [BlockWatcher(n) for n in nodes]
    watch_tasks = [asyncio.create_task(w.run()) for w in watchers]
    pools = {n.name: asyncio.Queue() for n in nodes}
    for n in nodes:
        for _ in range(6):
            pools[n.name].put_nowait(Conn(n))
    sent: dict[str, float] = {}
    errors = 0
    lagging = 0
    total = int(rate * seconds)
    tasks = []

    async def send(i: int) -> None:
        nonlocal errors
        node = nodes[i % len(nodes)]
        conn = await pools[node.name].get()
        body = orjson.dumps({"method": "publish", "params": [
            "lat", f"L{i:07d}", {"json": {"i": i, "station": i % 16}}], "id": i})
        t0 = time.perf_counter()
        try:
            reply = orjson.loads(await conn.post(body))
            if reply.get("error") is None:
                sent[reply["result"]] = t0
            else:
                errors += 1
        except Exception:  # noqa: BLE001 - counted
            errors += 1
            conn.close()
        finally:
            pools[node.name].put_nowait(conn)

    start = time.perf_counter() + 0.2
    for i in range(total):
        due = start + i / rate
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        elif wait < -0.05:
            lagging += 1
        tasks.append(asyncio.create_task(send(i)))
    await asyncio.gather(*tasks)
    send_s = time.perf_counter() - start

    async def all_seen() -> bool:
        return all(t in w.seen for w in watchers for t in sent)
    try:
        await wait_for(all_seen, t_limit, "every latency item in a block on every node")
    finally:
        for w in watchers:
            w.close()
        for t in watch_tasks:
            t.cancel()
        for t in watch_tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for n in nodes:
            while not pools[n.name].empty():
                pools[n.name].get_nowait().close()
        for c in setup:
            c.close()
    lat = [max(w.seen[t] for w in watchers) - t0 for t, t0 in sent.items()]
    out = latency_summary(lat)
    out.update({"rate_requested_per_s": rate, "items": len(sent), "errors": errors,
                "rate_achieved_per_s": round(len(sent) / send_s, 1),
                "sends_late_over_50ms": lagging,
                "target_p99_ms": round((2 * block_time + 1) * 1000)})
    return out


# -- 3. catch-up of a fresh node ------------------------------------------------------------------------
def log_time(stamp: str) -> float:
    return dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


async def top_up(nodes: list[Node], want_items: int, deadline: float) -> int:
    """Publish (one transaction per item) until the chain carries `want_items` items."""

    conns = [Conn(n) for n in nodes]
    have = 0
    for s in ("tput", "lat"):
        with contextlib.suppress(RuntimeError):
            have += (await conns[0].call("getstreaminfo", s))["confirmed"]
    missing = max(0, want_items - have)
    if missing:
        await conns[0].call("create", "stream", "topup", True)
        batch, i = 50, 0

        async def worker(k: int) -> None:
            nonlocal i
            conn = Conn(nodes[k % len(nodes)])
            try:
                while i < missing and time.monotonic() < deadline:
                    first = i
                    i += batch
                    await conn.post(publish_batch("topup", first, batch, "T"))
            finally:
                conn.close()
        await asyncio.gather(*(worker(k) for k in range(6)))

        async def settled() -> bool:
            for c in conns:
                if (await c.call("getmempoolinfo"))["size"]:
                    return False
            heights = {await c.call("getbestblockhash") for c in conns}
            return len(heights) == 1
        await wait_for(settled, deadline, "the top-up to be confirmed everywhere")
        await conns[0].call("subscribe", "topup")
        have += (await conns[0].call("getstreaminfo", "topup"))["confirmed"]
    for c in conns:
        c.close()
    return have


async def catchup(nodes: list[Node], base: Path, *, items_wanted: int, port: int,
                  rpcport: int, deadline_s: float, profile_dir: Path | None = None
                  ) -> dict[str, Any]:
    t_limit = time.monotonic() + deadline_s
    items = await top_up(nodes, items_wanted, t_limit)
    seed = Conn(nodes[0])
    height = await seed.call("getblockcount")
    txs = sum(b["txcount"] for b in await seed.call("listblocks", f"0-{height}"))
    datadir = base / "fresh"
    out = chainmill("start", f"{CHAIN}@127.0.0.1:{nodes[0].port}", "--datadir", str(datadir),
                    "--port", str(port), "--rpcport", str(rpcport), "--daemon")
    conf = dict(line.split("=", 1) for line in (datadir / CHAIN / "chainmill.conf")
                .read_text().splitlines() if "=" in line)
    fresh = Node("fresh", str(datadir), port, rpcport, conf["rpcuser"], conf["rpcpassword"])
    fc = Conn(fresh)
    address = (await fc.call("getaddresses"))[0]
    pid = int((datadir / CHAIN / "chainmill.pid").read_text())
    spy = PySpy(pid, profile_dir / "network-catchup.txt") if profile_dir is not None else None
    assert f"grant {address}" in out
    t_grant = time.monotonic()
    await seed.call("grant", address, "connect,send,receive")

    async def connected() -> bool:
        return (await fc.call("getinfo"))["connections"] >= 1
    # CPU from just before the grant (the fresh node idles until it is let in): the fresh
    # node with its verification workers, the serving node, this process, the machine.
    fresh0, seed0 = tree_cpu(pid) or 0.0, tree_cpu(nodes[0].pid or 0) or 0.0
    main0 = proc_cpu(pid) or 0.0  # the fresh node's own process, without its workers
    machine0, self0 = machine_cpu(), self_cpu()
    await wait_for(connected, t_limit, "the fresh node to connect", interval=POLL)
    t_conn = time.monotonic()
    target = await seed.call("getblockcount")  # the grant's block included

    async def caught_up() -> bool:
        return await fc.call("getblockcount") >= target
    await wait_for(caught_up, t_limit, "the fresh node to catch up", interval=POLL)
    t_done = time.monotonic()
    fresh_cpu = (tree_cpu(pid) or 0.0) - fresh0
    main_cpu = (proc_cpu(pid) or 0.0) - main0
    seed_cpu = (tree_cpu(nodes[0].pid or 0) or 0.0) - seed0
    bench_cpu = self_cpu() - self0
    span = t_done - t_grant
    others = machine_cpu() - machine0 - fresh_cpu - seed_cpu - bench_cpu
    profile = spy.stop() if spy else None
    same = await fc.call("getbestblockhash") == await seed.call("getbestblockhash")
    await fc.call("stop")
    fc.close()
    seed.close()

    log_text = (datadir / CHAIN / "debug.log").read_text(errors="replace").splitlines()
    conn_times = [log_time(m.group(1)) for line in log_text
                  if (m := CONNECTED_LINE.search(line))]
    syncs = [m for line in log_text if (m := SYNC_LINE.search(line))]
    by_log = None
    if conn_times and syncs:
        t_end = log_time(syncs[-1].group(1))
        t_start = max(t for t in conn_times if t <= t_end)
        by_log = t_end - t_start
    wall = t_done - t_conn
    seconds = by_log if by_log else wall
    return {
        "chain_items": items, "chain_txs": txs, "chain_height": target,
        "sync_lines": len(syncs),
        "sync_batches": [{"height": int(m.group(2)), "blocks": int(m.group(4)),
                          "items_per_s": int(m.group(5))} for m in syncs],
        "seconds_by_log": round(by_log, 3) if by_log else None,
        "seconds_by_polling": round(wall, 3),
        "grant_to_connected_s": round(t_conn - t_grant, 3),
        "catchup_items_per_s": round(items / seconds, 1),
        "catchup_txs_per_s": round(txs / seconds, 1),
        "same_tip": same,
        "fresh_node_cpu_s": round(fresh_cpu, 2),
        "fresh_node_cpu_us_per_item": round(fresh_cpu / items * 1e6, 1) if items else None,
        "fresh_node_main_process_cpu_us_per_item":
            round(main_cpu / items * 1e6, 1) if items else None,
        "serving_node_cpu_us_per_item": round(seed_cpu / items * 1e6, 1) if items else None,
        "other_processes_cores": round(max(0.0, others) / span, 2),
        **({"profile_fresh_node": profile} if profile else {}),
    }


# -- the run ----------------------------------------------------------------------------------------
def ratios(result: dict[str, Any], verify: float) -> dict[str, Any]:
    t, lat, c = result["throughput"], result["latency"], result["catchup"]
    return {
        "confirmed_items_per_s_over_verify": round(t["confirmed_items_per_s"] / verify, 4),
        "latency_p50_in_verifies": round(lat["p50_ms"] / 1000 * verify) if lat["p50_ms"] else None,
        "latency_p99_in_verifies": round(lat["p99_ms"] / 1000 * verify) if lat["p99_ms"] else None,
        "catchup_items_per_s_over_verify": round(c["catchup_items_per_s"] / verify, 4),
        "catchup_txs_per_s_over_verify": round(c["catchup_txs_per_s"] / verify, 4),
        "throughput_node_cpu_per_item_in_verifies": round(
            t["node_cpu_us_per_item_all_3"] * verify / 1e6, 2)
        if t["node_cpu_us_per_item_all_3"] else None,
        "catchup_fresh_node_cpu_per_item_in_verifies": round(
            c["fresh_node_cpu_us_per_item"] * verify / 1e6, 2)
        if c["fresh_node_cpu_us_per_item"] else None,
    }


def verdicts(result: dict[str, Any]) -> dict[str, bool]:
    t, lat, c = result["throughput"], result["latency"], result["catchup"]
    return {
        "confirmed_items_per_s>=3000": t["confirmed_items_per_s"] >= 3000,
        "p99<=2*block_time+1s": (lat["p99_ms"] or 1e9) <= lat["target_p99_ms"],
        "catchup_items_per_s>=20000": c["catchup_items_per_s"] >= 20000,
    }


def print_table(r: dict[str, Any]) -> None:
    v = r["verify"]["reference_per_s"]
    t, lat, c, q, ok = r["throughput"], r["latency"], r["catchup"], r["ratios"], r["targets_met"]
    print()
    print(f"3-node cluster, {r['params']['block_time']} s blocks, mining-diversity 0.75; "
          f"coincurve verify {v:,.0f}/s ({r['verify']['reference']}) on {r['machine']['cpus']} CPUs")
    print()
    rows = [
        ("items/s confirmed on all 3", f"{t['confirmed_items_per_s']:,.0f}",
         f"{q['confirmed_items_per_s_over_verify']:.3f}", ">= 3,000",
         ok["confirmed_items_per_s>=3000"]),
        (f"latency p50 at {lat['rate_requested_per_s']:.0f}/s", f"{lat['p50_ms']:,.0f} ms",
         f"{q['latency_p50_in_verifies']:,} verifies", "", None),
        (f"latency p99 at {lat['rate_requested_per_s']:.0f}/s", f"{lat['p99_ms']:,.0f} ms",
         f"{q['latency_p99_in_verifies']:,} verifies", f"<= {lat['target_p99_ms']:,} ms",
         ok["p99<=2*block_time+1s"]),
        ("catch-up items/s (fresh node)", f"{c['catchup_items_per_s']:,.0f}",
         f"{q['catchup_items_per_s_over_verify']:.3f}", ">= 20,000",
         ok["catchup_items_per_s>=20000"]),
        ("catch-up txs/s (fresh node)", f"{c['catchup_txs_per_s']:,.0f}",
         f"{q['catchup_txs_per_s_over_verify']:.3f}", "", None),
    ]
    print(f"{'figure':<32} {'value':>12} {'vs verify rate':>18} {'target':>12} {'met':>4}")
    print("-" * 82)
    for name, value, ratio, target, met in rows:
        mark = "" if met is None else ("yes" if met else "NO")
        print(f"{name:<32} {value:>12} {ratio:>18} {target:>12} {mark:>4}")
    print()
    print(f"throughput: {t['items_accepted']:,} items accepted in {t['load_seconds']} s "
          f"(send {t['send_items_per_s']:,.0f}/s), all confirmed on all 3 after "
          f"{t['send_to_confirmed_on_all_s']} s; node CPU cores {t['node_cores']}, "
          f"{t['node_cpu_us_per_item_all_3']} us node CPU per item (3 nodes; "
          f"{q['throughput_node_cpu_per_item_in_verifies']} verifies), load "
          f"generator {t['bench_client_cores']} cores, other processes "
          f"{t['other_processes_cores']} cores")
    print(f"latency: {lat['items']:,} items at {lat['rate_achieved_per_s']}/s, max "
          f"{lat['max_ms']:,.0f} ms, {lat['errors']} errors")
    print(f"catch-up: {c['chain_items']:,} items / {c['chain_txs']:,} txs in "
          f"{c['chain_height'] + 1} blocks; {c['seconds_by_log']} s by log, "
          f"{c['seconds_by_polling']} s by polling; {c['sync_lines']} sync batches; fresh "
          f"node CPU {c['fresh_node_cpu_us_per_item']} us per item "
          f"({q['catchup_fresh_node_cpu_per_item_in_verifies']} verifies; main process "
          f"{c['fresh_node_main_process_cpu_us_per_item']} us), serving node "
          f"{c['serving_node_cpu_us_per_item']} us, other processes "
          f"{c['other_processes_cores']} cores")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.network",
                                description=__doc__.split("\n")[0])
    p.add_argument("--block-time", type=float, default=0.5)
    p.add_argument("--seconds", type=float, default=15.0, help="throughput load duration")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients per node")
    p.add_argument("--batch", type=int, default=16, help="publish calls per JSON-RPC batch")
    p.add_argument("--backlog", type=int, default=2000,
                   help="clients pause while a node's mempool holds more transactions")
    p.add_argument("--rate", type=float, default=200.0, help="fixed rate of the latency phase")
    p.add_argument("--latency-seconds", type=float, default=15.0)
    p.add_argument("--catchup-items", type=int, default=20_000)
    p.add_argument("--profile", metavar="DIR", dest="profile_dir", type=Path,
                   help="py-spy node1 during the throughput phase and the fresh node during "
                        "the catch-up into DIR (raw stacks; needs py-spy)")
    p.add_argument("--phases", default="throughput,latency,catchup",
                   help="comma-separated subset to run (the full set writes the results)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "network.json"))
    return p.parse_args(argv)


async def run_phases(args: argparse.Namespace, nodes: list[Node], base: Path,
                     free_ports: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    phases = args.phases.split(",")
    if "throughput" in phases:
        out["throughput"] = await throughput(
            nodes, seconds=args.seconds, clients=args.clients, batch=args.batch,
            backlog=args.backlog, deadline_s=args.seconds + 120, profile_dir=args.profile_dir)
    if "latency" in phases:
        out["latency"] = await latency(nodes, rate=args.rate, seconds=args.latency_seconds,
                                       block_time=args.block_time,
                                       deadline_s=args.latency_seconds + 120)
    if "catchup" in phases:
        out["catchup"] = await catchup(nodes, base, items_wanted=args.catchup_items,
                                       port=free_ports[0], rpcport=free_ports[1],
                                       deadline_s=300, profile_dir=args.profile_dir)
    return out


def main(argv: list[str] | None = None) -> int:
    import socket

    args = parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="chainmill-bench-net-"))
    print("measuring the verify rate ...", flush=True)
    verify_start = measure_verify()
    result: dict[str, Any] = {
        "benchmark": "network", "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "params": {"block_time": args.block_time, "seconds": args.seconds,
                   "clients_per_node": args.clients, "batch": args.batch, "rate": args.rate,
                   "latency_seconds": args.latency_seconds,
                   "catchup_items": args.catchup_items, "mining_diversity": 0.75},
    }
    try:
        print(f"cluster up 3 ({args.block_time} s blocks) ...", flush=True)
        cdir = base / "cluster"
        chainmill("cluster", "up", "3", "--dir", str(cdir), "--chain", CHAIN,
                  "--param", f"target-block-time={args.block_time}",
                  "--param", "setup-first-blocks=1", "--param", "mine-empty-rounds=0")
        status = json.loads(chainmill("cluster", "status", "--dir", str(cdir), "--json",
                                     "--show-secrets"))
        nodes = [Node(s["name"], s["datadir"], s["port"], s["rpcport"], s["rpcuser"],
                      s["rpcpassword"], s["pid"]) for s in status]
        ports = []
        for _ in range(2):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                ports.append(s.getsockname()[1])
        print("throughput, latency, catch-up ...", flush=True)
        result.update(asyncio.run(run_phases(args, nodes, base, ports)))
    finally:
        stop_everything(base)
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    verify_end = measure_verify()
    verify = dict(verify_start)
    verify["reference_per_s"] = max(verify_start["reference_per_s"],
                                    verify_end["reference_per_s"])
    verify["at_start_per_s"] = round(verify_start["reference_per_s"])
    verify["at_end_per_s"] = round(verify_end["reference_per_s"])
    result["verify"] = verify
    if not all(k in result for k in ("throughput", "latency", "catchup")):
        print(json.dumps({k: result.get(k) for k in ("throughput", "latency", "catchup")},
                         indent=1))
        return 0  # a partial run is for investigation: no table, no results file
    result["ratios"] = ratios(result, verify["reference_per_s"])
    result["targets_met"] = verdicts(result)
    print_table(result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
