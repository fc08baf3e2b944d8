"""Shared pieces of the benchmarks: the verify-rate yardstick, a throw-away node, CPU readings.

Every throughput figure a benchmark reports is also given as a ratio to the raw coincurve
verify rate measured in the same run on the same machine (DESIGN.md "Performance stance":
the cost floor of a transaction is one signature verification), so figures from different
machines and runs can be compared.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# -- the yardstick ----------------------------------------------------------------------------
def _verify_loop(kind: str, seconds: float) -> tuple[int, float, float]:
    """Verify one fixed signature over a 32-byte digest for `seconds`:
    (count, wall seconds, CPU seconds of this thread)."""
    import coincurve
    from coincurve.context import GLOBAL_CONTEXT
    from coincurve.ecdsa import der_to_cdata, deserialize_compact, lib, serialize_compact

    key = coincurve.PrivateKey(hashlib.sha256(b"chainmill-bench").digest())
    pub = coincurve.PublicKey(key.public_key.format(compressed=True))
    digest = hashlib.sha256(b"an item").digest()
    der = key.sign(digest, hasher=None)
    ctx = GLOBAL_CONTEXT.ctx
    if kind == "der":
        def one() -> bool:
            return pub.verify(der, digest, hasher=None)
    elif kind == "compact":
        compact = serialize_compact(der_to_cdata(der))

        def one() -> bool:
            return bool(lib.secp256k1_ecdsa_verify(ctx, deserialize_compact(compact), digest,
                                                   pub.public_key))
    else:
        raise ValueError(kind)
    assert one()
    n = 0
    t0 = time.perf_counter()
    c0 = time.thread_time()
    end = t0 + seconds
    while True:
        for _ in range(200):
            one()
        n += 200
        now = time.perf_counter()
        if now >= end:
            return n, now - t0, time.thread_time() - c0


def verify_rate(kind: str = "der", threads: int = 1, seconds: float = 1.0
                ) -> tuple[float, float]:
    """(verifies per wall second, verifies per CPU second) with `threads` threads
    (cffi releases the GIL during the call, so threads run in parallel)."""
    results: list[tuple[int, float, float]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def work() -> None:
        barrier.wait()
        r = _verify_loop(kind, seconds)
        with lock:
            results.append(r)

    if threads == 1:
        results.append(_verify_loop(kind, seconds))
    else:
        ts = [threading.Thread(target=work) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    n = sum(r[0] for r in results)
    return n / max(r[1] for r in results), n / sum(r[2] for r in results)


def measure_verify(seconds: float = 0.5, repeats: int = 3) -> dict[str, Any]:
    """The yardstick: DER verifies (the node's tx signature format) per second of one
    core's CPU time, single thread. Per CPU second rather than per wall second because the
    machine may be shared: time slices taken by other processes do not count against it, so
    it stays the machine's capacity while wall-clock rates drop with the load. Wall-clock
    rates (best of `repeats`), the compact format and 2 threads are reported alongside."""
    def best(kind: str, threads: int) -> tuple[float, float]:
        runs = [verify_rate(kind, threads, seconds) for _ in range(repeats)]
        return max(w for w, _ in runs), max(c for _, c in runs)

    der1_wall, der1_cpu = best("der", 1)
    compact1_wall, compact1_cpu = best("compact", 1)
    der2_wall, _ = best("der", 2)
    return {
        "reference": "der_1thread_per_cpu_s",
        "reference_per_s": der1_cpu,
        "der_1thread_per_cpu_s": der1_cpu,
        "der_1thread_per_s": der1_wall,
        "compact_1thread_per_cpu_s": compact1_cpu,
        "compact_1thread_per_s": compact1_wall,
        "der_2threads_per_s": der2_wall,
        "seconds_each": seconds,
        "repeats_best_of": repeats,
    }


def machine_info() -> dict[str, Any]:
    import coincurve  # noqa: F401

    try:
        from importlib.metadata import version
        cc = version("coincurve")
    except Exception:  # noqa: BLE001
        cc = "unknown"
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "platform": platform.platform(), "coincurve": cc}


# -- in-process nodes ---------------------------------------------------------------------------
def open_node_in_process(tmp: Path, chain: str, seed: int = 3,
                         options: dict[str, Any] | None = None) -> Any:
    """The opened NodeContext of a new chain `chain` under `tmp` (its parameters drawn from
    random.Random(seed)), as `chainmill start` opens it but with no RPC port and no P2P: the
    in-process benches. The caller closes its chain and store."""
    import random

    from config.params import default_params, write_params_file
    from config.runtime import ensure_chain_conf
    from node.app import NodeApp

    chain_dir = tmp / chain
    chain_dir.mkdir()
    write_params_file(chain_dir / "params.dat", default_params(chain, {}, random.Random(seed)))
    ensure_chain_conf(chain_dir)
    ctx, _ = NodeApp(tmp, chain, options or {})._open()
    return ctx


def solo_miner(ctx: Any) -> Any:
    """A miner of the node's own that mines whenever asked: no turnover wait, no empty
    rounds, no peers needed."""
    from node.miner import Miner

    return Miner(ctx.chain, ctx.mempool, ctx.wallet, ctx.connect_block, turnover=0.0,
                 empty_rounds=-1, requires_peers=False)


# -- CPU readings from /proc ------------------------------------------------------------------
def proc_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu(pid: int) -> float | None:
    """CPU seconds of a process and of its live child processes (a node's signature
    verification workers), or None when the process is gone."""
    own = proc_cpu(pid)
    if own is None:
        return None
    kids = 0.0
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_path.read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            kids += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return own + kids


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (threads of one name summed), from /proc/PID/task."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            # pool threads are numbered (verify_0, asyncio_3): group them by prefix
            base = name.rstrip("0123456789").rstrip("_-") or name
            if task.name == str(pid):
                base = "main (event loop)"
            elif base == "python":
                base = "worker threads"  # CPython 3.11 does not name OS threads
            fields = stat[stat.rindex(")") + 2:].split()
            out[base] = out.get(base, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def machine_cpu() -> float:
    """Busy CPU seconds of the whole machine (all processes), from /proc/stat."""
    try:
        line = Path("/proc/stat").read_text().splitlines()[0]
    except OSError:
        return 0.0
    f = [int(x) for x in line.split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return (sum(f[:8]) - idle) / CLK_TCK


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


@dataclass
class CpuMeter:
    """CPU used by the node and by this process between start() and stop()."""

    pid: int
    wall0: float = 0.0
    node0: float = 0.0
    self0: float = 0.0
    machine0: float = 0.0
    threads0: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        self.wall0 = time.monotonic()
        self.node0 = proc_cpu(self.pid) or 0.0
        self.self0 = self_cpu()
        self.machine0 = machine_cpu()
        self.threads0 = thread_cpu(self.pid)

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self.wall0
        node = (proc_cpu(self.pid) or 0.0) - self.node0
        mine = self_cpu() - self.self0
        others = machine_cpu() - self.machine0 - node - mine
        threads = {k: round(v - self.threads0.get(k, 0.0), 2)
                   for k, v in thread_cpu(self.pid).items()
                   if v - self.threads0.get(k, 0.0) > 0.005}
        return {
            "wall_s": round(wall, 3),
            "node_cpu_s": round(node, 2),
            "node_cores": round(node / wall, 2) if wall else None,
            "node_threads_cpu_s": threads,
            "bench_cpu_s": round(mine, 2),
            "bench_cores": round(mine / wall, 2) if wall else None,
            "other_processes_cores": round(max(0.0, others) / wall, 2) if wall else None,
        }


# -- a throw-away node ------------------------------------------------------------------------
class NodeError(RuntimeError):
    pass


def _cli_argv() -> list[str]:
    # The same interpreter as the benchmark, from this source tree: no reliance on the
    # `chainmill` script being installed for this interpreter.
    return [sys.executable, "-m", "node.cli.main"]


def _env() -> dict[str, str]:
    env = os.environ.copy()
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"]
                                     if env.get("PYTHONPATH") else "")
    env.pop("CHAINMILL_DATADIR", None)
    return env


def _read_kv(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


class BenchNode:
    """A chainmill node on a fresh chain in a temporary data directory.

    `create()` then `start()`; `stop()` asks it to stop over RPC and, if it does not exit,
    signals the process this object started (by pid, never by name). `close()` also removes
    the data directory unless `keep` is set.
    """

    def __init__(self, chain: str = "bench", *, block_time: float = 0.5,
                 params: Sequence[str] = (), datadir: Path | None = None,
                 keep: bool = False) -> None:
        self.chain = chain
        self.block_time = block_time
        self.params = list(params)
        self.keep = keep or datadir is not None
        self.datadir = Path(datadir) if datadir else Path(tempfile.mkdtemp(prefix="chainmill-bench-"))
        self.chain_dir = self.datadir / chain
        self.pid: int | None = None
        self.port = 0
        self.user = ""
        self.password = ""
        self.options: list[str] = []

    def _run(self, *args: str, timeout: float = 180) -> str:
        p = subprocess.run([*_cli_argv(), *args], cwd=REPO, env=_env(), capture_output=True,
                           text=True, timeout=timeout)
        if p.returncode != 0:
            raise NodeError(f"chainmill {' '.join(args)} failed ({p.returncode}):\n"
                            f"{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        return p.stdout

    def create(self) -> None:
        args = ["create", self.chain, "--datadir", str(self.datadir),
                "--param", f"target-block-time={self.block_time}"]
        for p in self.params:
            args += ["--param", p]
        self._run(*args)
        params = _read_kv(self.chain_dir / "params.dat")
        self.port = int(params["default-rpc-port"])
        self.max_items_per_tx = int(params.get("max-std-op-returns-count", "32"))

    def start(self, options: Sequence[str] = (), attempts: int = 3) -> None:
        """Start the node with `--daemon` on free loopback ports (the machine may be shared:
        the ports written at create time can be taken by then)."""
        self.options = list(options)
        for attempt in range(attempts):
            rpcport, port = free_port(), free_port()
            args = ["start", self.chain, "--datadir", str(self.datadir), "--daemon",
                    "--rpcport", str(rpcport), "--port", str(port)]
            for o in options:
                args += ["-o", o]
            try:
                self._run(*args)
                break
            except NodeError as e:
                if "address already in use" not in str(e) or attempt == attempts - 1:
                    raise
        self.port = rpcport
        conf = _read_kv(self.chain_dir / "chainmill.conf")
        self.user, self.password = conf["rpcuser"], conf["rpcpassword"]
        self.pid = int((self.chain_dir / "chainmill.pid").read_text().strip())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def alive(self) -> bool:
        if self.pid is None:
            return False
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return False
        return stat[stat.rindex(")") + 2] != "Z"

    def call(self, method: str, *params: Any, timeout: float = 30) -> Any:
        """One synchronous call (setup and teardown; the load itself uses aiohttp)."""
        from node.client import RpcClient

        client = RpcClient("127.0.0.1", self.port, self.user, self.password,
                           chain_name=self.chain, timeout=timeout)
        return client.call(method, *params)

    def stop(self, wait: float = 30) -> None:
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        with contextlib.suppress(Exception):
            self.call("stop", timeout=5)
        deadline = time.monotonic() + wait
        sig_sent = None
        while _pid_alive(pid):
            if time.monotonic() > deadline:
                if sig_sent is None:
                    sig_sent = signal.SIGTERM
                elif sig_sent == signal.SIGTERM:
                    sig_sent = signal.SIGKILL
                else:
                    break
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig_sent)
                deadline = time.monotonic() + 10
            time.sleep(0.05)

    def close(self) -> None:
        self.stop()
        if not self.keep:
            shutil.rmtree(self.datadir, ignore_errors=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


# -- small statistics -------------------------------------------------------------------------
def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def latency_summary(values_s: list[float]) -> dict[str, float | None]:
    v = sorted(values_s)

    def ms(x: float | None) -> float | None:
        return None if x is None else round(x * 1000, 2)

    return {"p50_ms": ms(percentile(v, 0.50)), "p99_ms": ms(percentile(v, 0.99)),
            "max_ms": ms(v[-1] if v else None),
            "mean_ms": ms(sum(v) / len(v) if v else None), "calls": len(v)}


# -- sampling profiles ------------------------------------------------------------------------
class PySpy:
    """`py-spy record` on the node for the life of this object; `stop()` returns a summary.

    Raw (collapsed-stack) output, per thread, non-blocking sampling so the node is not paused.
    With `gil`, only samples of the thread holding the GIL are kept: py-spy otherwise counts a
    thread waiting for the GIL as busy, which inflates whatever it waits in (epoll, a lock).
    """

    def __init__(self, pid: int, out: Path, rate: int = 100, *, gil: bool = False) -> None:
        self.out = out
        # The one installed beside this interpreter (a venv that is not on PATH), else PATH's.
        exe = (shutil.which("py-spy", path=str(Path(sys.executable).parent))
               or shutil.which("py-spy"))
        if exe is None:
            raise NodeError("py-spy is not installed (pip install py-spy)")
        self.proc = subprocess.Popen(
            [exe, "record", "-p", str(pid), "-o", str(out), "-f", "raw", "-t", "--nolineno",
             "-r", str(rate), "--nonblocking", *(["--gil"] if gil else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)

    def stop(self) -> dict[str, Any]:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return summarize_stacks(self.out)


# Ordered: the first rule whose text occurs in a sample's stack names the sample's category.
PROFILE_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("socket send syscall (loopback TCP)", ("_SelectorSocketTransport.write (",)),
    ("epoll wait syscall", ("EpollSelector.select (",)),
    ("tx sign (secp256k1)", ("sign (ledger/keys.py)",)),
    ("sig verify (secp256k1)", ("signature_valid (ledger/transactions.py)",)),
    ("block: DB write (put_block)", ("put_block (ledger/store.py)",)),
    ("mempool: re-check after block", ("on_connected (node/mempool.py)",
                                       "readmit (node/mempool.py)")),
    ("block: txid replay lookup (DB)", ("known_txids (ledger/store.py)",)),
    ("block: build (merkle, sign)", ("build (ledger/blocks.py)",)),
    ("block: rows for the store", ("_write_for (node/chain.py)",)),
    ("block: validate (apply_tx, hashes)", ("connect (node/chain.py)",)),
    ("block: after_connect (hooks, subs)", ("after_connect (node/context.py)",)),
    ("mempool.add (apply_tx, item rows)", ("add (node/mempool.py)",)),
    ("tx build (encode, txid)", ("create (ledger/transactions.py)",)),
    ("publish: params, stream, permission", ("publish (node/rpc/methods/streams.py)",
                                             "publishmulti (node/rpc/methods/streams.py)")),
    ("dispatch per call, other methods", ("handle_object (node/rpc/dispatch.py)",
                                          "_handle_object_now (node/rpc/dispatch.py)")),
    ("JSON parse/encode (dispatch)", ("handle_body (node/rpc/dispatch.py)",
                                      "handle_body_now (node/rpc/dispatch.py)")),
    ("journal: fsync hand-off and wake-up", ("node/journal.py",)),
    ("HTTP server (rpc/connection.py, rpc/http.py)", ("node/rpc/connection.py",
                                                      "node/rpc/http.py",
                                                      "node/rpc/server.py")),
    ("HTTP server (aiohttp)", ("aiohttp",)),
    ("miner loop", ("node/miner.py",)),
    ("asyncio event loop", ("asyncio/",)),
)


def summarize_stacks(path: Path) -> dict[str, Any]:
    """Share of samples per category, for the main thread and for the other threads."""
    main: dict[str, int] = {}
    other: dict[str, int] = {}
    total = 0
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    threads: dict[str, int] = {}
    for line in lines:
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        thread = stack.split(";", 1)[0]
        threads[thread] = threads.get(thread, 0) + count
    # py-spy labels threads "thread (TID): NAME"; the event loop runs in MainThread.
    main_thread = next((t for t in threads if t.endswith("MainThread")), "")
    for line in lines:
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        total += count
        cat = next((name for name, needles in PROFILE_RULES
                    if any(x in stack for x in needles)), "other")
        bucket = main if main_thread and stack.startswith(main_thread) else other
        bucket[cat] = bucket.get(cat, 0) + count

    def pct(d: dict[str, int]) -> dict[str, float]:
        return {k: round(100 * v / total, 1) for k, v in sorted(d.items(), key=lambda kv: -kv[1])}

    return {"samples": total, "file": path.name,
            "main_thread_pct": pct(main), "other_threads_pct": pct(other)}


def measure_fsync(directory: Path, calls: int = 200) -> dict[str, Any]:
    """The cost of one write + fdatasync in `directory` (what the node's own-transaction
    journal pays per group commit): mean and p50/p99 microseconds, fsyncs per second and CPU
    microseconds (user and kernel) per fsync, for a record appended (the file grows, so each
    fdatasync also commits its size) and, under `in_place`, for one written over zeros
    written ahead, as the journal does (node/journal.py)."""
    record = b"%08x " % 0 + b"ab" * 150 + b"\n"

    def one_way(in_place: bool) -> dict[str, Any]:
        path = Path(directory) / ".bench-fsync"
        times: list[float] = []
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if in_place:
                os.write(fd, bytes(len(record) * calls))
                os.fsync(fd)
            sync = getattr(os, "fdatasync", os.fsync)
            cpu0 = time.thread_time()
            for i in range(calls):
                t = time.perf_counter()
                os.pwrite(fd, record, i * len(record))
                sync(fd)
                times.append(time.perf_counter() - t)
            cpu = time.thread_time() - cpu0
        finally:
            os.close(fd)
            path.unlink()
        times.sort()
        mean = sum(times) / len(times)
        return {"calls": calls, "mean_us": round(mean * 1e6, 1),
                "p50_us": round(percentile(times, 0.5) * 1e6, 1),
                "p99_us": round(percentile(times, 0.99) * 1e6, 1),
                "per_s": round(1 / mean, 1), "cpu_us": round(cpu / calls * 1e6, 1)}

    out = one_way(in_place=False)
    out["in_place"] = one_way(in_place=True)
    return out


def collector_stats(chain_dir: Path) -> dict[str, Any] | None:
    """The node's cyclic-collector collections and their time, summed over the runs in its
    debug.log (node/memory.py logs them when the node stops)."""
    import re

    try:
        text = (Path(chain_dir) / "debug.log").read_text(errors="replace")
    except OSError:
        return None
    runs = re.findall(r"cyclic collector: (\d+) collections in ([\d.]+) ms", text)
    if not runs:
        return None
    return {"collections": sum(int(n) for n, _ in runs),
            "ms": round(sum(float(t) for _, t in runs), 1)}


def journal_stats(chain_dir: Path) -> dict[str, Any] | None:
    """Records and fsyncs of the node's journal, summed over the runs in its debug.log, and
    the CPU its fsync thread used per record (what a group commit costs the node)."""
    import re

    try:
        text = (Path(chain_dir) / "debug.log").read_text(errors="replace")
    except OSError:
        return None
    runs = re.findall(r"own-transaction journal closed: (\d+) records written, (\d+) fsyncs"
                      r"(?:, fsync thread CPU ([\d.]+) s)?", text)
    if not runs:
        return None
    records = sum(int(r) for r, _, _ in runs)
    fsyncs = sum(int(f) for _, f, _ in runs)
    cpu = sum(float(c) for _, _, c in runs if c)
    return {"records": records, "fsyncs": fsyncs,
            "records_per_fsync": round(records / fsyncs, 1) if fsyncs else None,
            "fsync_thread_cpu_us_per_record": round(cpu / records * 1e6, 1) if records else None}
