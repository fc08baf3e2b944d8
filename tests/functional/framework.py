"""A Bitcoin-Core-style functional test harness: real chainmill node processes over JSON-RPC.

A test reads like a story: create nodes, start them, act through RPC, wait for a condition,
assert. `TestNode` wraps one `chainmill start` process with its own data directory, chain and
loopback ports; `Harness` owns the nodes of one test, its temporary directory and its random
seed. Waiting is always for a condition (`wait_until`), never a bare sleep, with one timeout
scale for slow machines: every timeout is multiplied by ``CHAINMILL_TIMEOUT_FACTOR``.

Environment:
  CHAINMILL_TIMEOUT_FACTOR  multiply every timeout (default 1)
  CHAINMILL_CMD             the chainmill command (default: the console script next to this
                            Python, else ``python -m node.cli.main``)
  CHAINMILL_TEST_SEED       the random seed (default: a fresh one, always logged)
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from node.client import RpcAuthError, RpcClient, RpcConnectionError, RpcError

log = logging.getLogger("functional")

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_FACTOR = float(os.environ.get("CHAINMILL_TIMEOUT_FACTOR") or 1)
DEFAULT_TIMEOUT = 30.0
"""Seconds a condition may take before the test fails (before scaling)."""
POLL_INTERVAL = 0.05
DEFAULT_BLOCK_TIME = 0.2
RPC_IN_WARMUP = -28


def scaled(seconds: float) -> float:
    """A timeout scaled by CHAINMILL_TIMEOUT_FACTOR."""
    return seconds * TIMEOUT_FACTOR


def chainmill_command() -> list[str]:
    """argv prefix that runs the `chainmill` command of this source tree."""
    if os.environ.get("CHAINMILL_CMD"):
        return shlex.split(os.environ["CHAINMILL_CMD"])
    script = Path(sys.executable).with_name("chainmill")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "node.cli.main"]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of node processes: this source tree first on the import path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.pop("CHAINMILL_DATADIR", None)
    env.update(extra or {})
    return env


# -- waiting and asserting ------------------------------------------------------------------


def wait_until(predicate: Callable[[], Any], *, timeout: float = DEFAULT_TIMEOUT,
               msg: str = "condition", interval: float = POLL_INTERVAL) -> Any:
    """Poll `predicate` until it returns a true value (which is returned); fail after the
    scaled `timeout` with `msg`. Exceptions from the predicate propagate at once."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {scaled(timeout):.1f} s waiting for {msg}")
        time.sleep(interval)


def ensure_for(predicate: Callable[[], Any], *, duration: float, msg: str = "condition",
               interval: float = POLL_INTERVAL) -> None:
    """Check that `predicate` stays true for `duration` seconds (for things that must NOT
    happen, e.g. a block while mining is paused; this is an observation window, not a wait
    for synchronisation, so it is not scaled)."""
    deadline = time.monotonic() + duration
    while True:
        if not predicate():
            raise AssertionError(f"{msg} stopped holding within {duration:.1f} s")
        if time.monotonic() > deadline:
            return
        time.sleep(interval)


def assert_raises_rpc_error(code: int | None, message: str | None, fn: Callable[..., Any],
                            *args: Any, **kwargs: Any) -> RpcError:
    """Call fn(*args) and check it fails with JSON-RPC error `code` (None: any code) whose
    message contains `message` (None: any message). Returns the error for further checks."""
    try:
        result = fn(*args, **kwargs)
    except RpcError as e:
        if code is not None and e.code != code:
            raise AssertionError(f"expected RPC error {code}, got {e.code}: {e.message}") from e
        if message is not None and message not in e.message:
            raise AssertionError(f"expected {message!r} in the error message, got "
                                 f"{e.message!r}") from e
        return e
    raise AssertionError(f"expected RPC error {code}, but the call returned {result!r}")


# -- one node ---------------------------------------------------------------------------------


class NodeStartError(AssertionError):
    """The node process exited or did not answer while starting."""


class TestNode:
    """One chainmill node process with its own data directory, chain and ports.

    RPC methods can be called as attributes: ``node.getinfo()`` is
    ``node.rpc.call("getinfo")``. Chains are created with short blocks (0.2 s) and
    mine-empty-rounds=0, so blocks are mined only for transactions and heights stay
    predictable; pass `params` to change either.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, index: int, datadir: Path, chain: str, *, port: int, rpcport: int,
                 port_factory: Callable[[], int], block_time: float = DEFAULT_BLOCK_TIME,
                 params: dict[str, Any] | None = None) -> None:
        self.index = index
        self.datadir = datadir
        self.chain = chain
        self.port = port
        self.rpcport = rpcport
        self.port_factory = port_factory
        self.block_time = block_time
        self.params = {"target-block-time": block_time, "mine-empty-rounds": 0,
                       **(params or {})}
        self.process: subprocess.Popen | None = None
        self.rpc: RpcClient | None = None
        self.rpcuser = ""
        self.rpcpassword = ""
        self.extra_args: list[str] = []
        self.starts = 0
        self._output_offset = 0
        self.log = logging.getLogger(f"functional.node{index}")

    def __repr__(self) -> str:
        return f"TestNode(node{self.index}, chain={self.chain}, rpcport={self.rpcport})"

    # -- files ------------------------------------------------------------------------------
    @property
    def chain_dir(self) -> Path:
        return self.datadir / self.chain

    @property
    def conf_path(self) -> Path:
        return self.chain_dir / "chainmill.conf"

    @property
    def pid_path(self) -> Path:
        return self.chain_dir / "chainmill.pid"

    @property
    def output_path(self) -> Path:
        return self.datadir / f"node{self.index}.out"

    def output(self, *, this_start: bool = False) -> str:
        """What the node process printed: over all starts, or since the latest start."""
        try:
            with self.output_path.open("rb") as f:
                if this_start:
                    f.seek(self._output_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def debug_log(self) -> str:
        try:
            return (self.chain_dir / "debug.log").read_text(errors="replace")
        except OSError:
            return ""

    def set_conf(self, **values: Any) -> None:
        """Add `name=value` lines to the chain's chainmill.conf (takes effect at next start)."""
        with self.conf_path.open("a") as f:
            for name, value in values.items():
                f.write(f"{name}={value}\n")

    # -- life cycle -------------------------------------------------------------------------
    def create_chain(self) -> None:
        """`chainmill create` with this node's parameters and ports."""
        argv = [*chainmill_command(), "create", self.chain, "--datadir", str(self.datadir)]
        params = {"default-network-port": self.port, "default-rpc-port": self.rpcport,
                  **self.params}
        for name, value in params.items():
            argv += ["--param", f"{name}={value}"]
        self.log.debug("create: %s", shlex.join(argv))
        done = subprocess.run(argv, capture_output=True, text=True, env=child_env(),
                              timeout=scaled(60))
        if done.returncode != 0:
            raise AssertionError(f"chainmill create failed ({done.returncode}): "
                                 f"{done.stderr.strip() or done.stdout.strip()}")
        self._read_credentials()

    def _read_credentials(self) -> None:
        conf = self.conf_path.read_text()
        user = re.findall(r"^rpcuser=(.*)$", conf, re.M)
        password = re.findall(r"^rpcpassword=(.*)$", conf, re.M)
        self.rpcuser = user[-1].strip() if user else "chainmillrpc"
        self.rpcpassword = password[-1].strip()

    def client(self, *, user: str | None = None, password: str | None = None,
               timeout: float = 30) -> RpcClient:
        """A new RPC client for this node (optionally with other credentials)."""
        return RpcClient("127.0.0.1", self.rpcport, self.rpcuser if user is None else user,
                         self.rpcpassword if password is None else password,
                         chain_name=self.chain, timeout=scaled(timeout))

    def start(self, extra_args: Sequence[str] = (), *, wait: bool = True) -> None:
        """Start `chainmill start` as a child process and (by default) wait for its RPC.

        If a port given to the node was taken by someone else meanwhile, the node is started
        once more on fresh ports.
        """
        if self.is_running():
            raise AssertionError(f"node{self.index} is already running")
        self.extra_args = list(extra_args)
        for attempt in (1, 2):
            self._spawn()
            if not wait:
                return
            try:
                self.wait_for_rpc()
                return
            except NodeStartError as e:
                if attempt == 2 or "cannot bind" not in str(e):
                    raise
                self.port, self.rpcport = self.port_factory(), self.port_factory()
                self.log.warning("node%d: a port was taken, retrying on %d/%d", self.index,
                                 self.port, self.rpcport)

    def _spawn(self) -> None:
        self._launch(self.chain, "start")
        self._read_credentials()
        self.rpc = self.client()

    def _launch(self, target: str, label: str) -> None:
        """Run `chainmill start TARGET` for this node's datadir and ports, output to a file."""
        argv = [*chainmill_command(), "start", target, "--datadir", str(self.datadir),
                "--rpcport", str(self.rpcport), "--port", str(self.port), *self.extra_args]
        self.log.info("node%d %s: %s", self.index, label,
                      shlex.join(argv[len(chainmill_command()):]))
        with self.output_path.open("ab") as out:
            out.write(f"\n=== start {self.starts}: {shlex.join(argv)}\n".encode())
            out.flush()
            self._output_offset = out.tell()
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT, env=child_env())
        self.starts += 1

    def wait_for_rpc(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until the node answers RPC calls (and is out of warm-up)."""
        def exited(code: int) -> NodeStartError:
            tail = "\n".join(self.output(this_start=True).strip().splitlines()[-15:])
            return NodeStartError(f"node{self.index} exited with code {code} while "
                                  f"starting:\n{tail}")

        def ready() -> bool:
            assert self.process is not None and self.rpc is not None
            code = self.process.poll()
            if code is not None:
                raise exited(code)
            try:
                self.rpc.call("getinitstatus")
                return True
            except RpcConnectionError:
                return False
            except RpcAuthError as refused:
                # Someone else listens on the port given to this node (another test's node
                # took it between free_port and the bind): this node then fails to bind and
                # exits, which is the error to report (start() retries on fresh ports).
                try:
                    code = self.process.wait(timeout=scaled(10))
                except subprocess.TimeoutExpired:
                    raise refused from None
                raise exited(code) from None
            except RpcError as e:
                if e.code == RPC_IN_WARMUP:
                    return False
                raise
        wait_until(ready, timeout=timeout, msg=f"node{self.index} RPC on port {self.rpcport}")
        self.log.info("node%d ready at height %d", self.index, self.rpc.call("getblockcount"))

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Stop through the `stop` RPC and wait for the process to exit cleanly.

        On timeout the process is killed and the test fails: a node must stop by itself.
        Returns the exit status (asserted to be 0).
        """
        if self.process is None:
            return 0
        self.log.info("node%d stop", self.index)
        if self.process.poll() is None:
            try:
                assert self.rpc is not None
                reply = self.rpc.call("stop")
                assert reply == "chainmill server stopping", reply
            except RpcConnectionError:
                pass  # already on its way down
        try:
            code = self.process.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"node{self.index} did not stop within {scaled(timeout):.0f} s "
                                 "and was killed") from None
        self._forget_process()
        if code != 0:
            raise AssertionError(f"node{self.index} exited with code {code}:\n"
                                 + "\n".join(self.output(this_start=True).splitlines()[-15:]))
        return code

    def wait_for_exit(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Wait for a node that was told to stop some other way; returns its exit status."""
        assert self.process is not None
        code = self.process.wait(scaled(timeout))
        self._forget_process()
        return code

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (a crash or power cut, as far as the node knows)."""
        if self.process is None:
            return
        self.log.info("node%d kill (SIGKILL)", self.index)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(scaled(DEFAULT_TIMEOUT))
        self._forget_process()

    def terminate(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """SIGTERM and wait for the exit status."""
        assert self.process is not None
        self.log.info("node%d terminate (SIGTERM)", self.index)
        self.process.send_signal(signal.SIGTERM)
        return self.wait_for_exit(timeout)

    def _forget_process(self) -> None:
        if self.rpc is not None:
            self.rpc.close()
        self.process = None

    def restart(self, extra_args: Sequence[str] | None = None) -> None:
        self.stop()
        self.start(self.extra_args if extra_args is None else extra_args)

    # -- RPC ----------------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        rpc = self.__dict__.get("rpc")
        if rpc is None:
            raise AttributeError(f"node{self.__dict__.get('index')} has no RPC client "
                                 f"(not started) for {name}")
        return functools.partial(rpc.call, name)

    def cli(self, *args: str, input: str | None = None,
            timeout: float = DEFAULT_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Run `chainmill cli CHAIN --datadir D ARGS...`."""
        argv = [*chainmill_command(), "cli", self.chain, "--datadir", str(self.datadir), *args]
        return subprocess.run(argv, capture_output=True, text=True, input=input,
                              env=child_env(), timeout=scaled(timeout))

    # -- waiting helpers ------------------------------------------------------------------------
    def wait_for_height(self, height: int, timeout: float = DEFAULT_TIMEOUT) -> int:
        return wait_until(lambda: self.getblockcount() >= height and self.getblockcount(),
                          timeout=timeout, msg=f"node{self.index} to reach height {height}")

    def wait_for_confirmation(self, *txids: str, confirmations: int = 1,
                              timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until every txid has at least `confirmations` confirmations."""
        def confirmed() -> bool:
            return all(self.getrawtransaction(t, 1).get("confirmations", 0) >= confirmations
                       for t in txids)
        wait_until(confirmed, timeout=timeout,
                   msg=f"{len(txids)} transaction(s) confirmed on node{self.index}")

    def wait_for_empty_mempool(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        wait_until(lambda: self.getmempoolinfo()["size"] == 0, timeout=timeout,
                   msg=f"node{self.index} mempool to empty")


# -- several nodes ----------------------------------------------------------------------------


def start_nodes(nodes: Iterable[TestNode], extra_args: Sequence[str] = ()) -> None:
    """Start every node, then wait for each one's RPC (start-ups overlap)."""
    nodes = list(nodes)
    for node in nodes:
        node.start(extra_args, wait=False)
    for node in nodes:
        node.wait_for_rpc()


def stop_nodes(nodes: Iterable[TestNode]) -> None:
    for node in nodes:
        node.stop()


def connect_nodes(a: TestNode, b: TestNode, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Ask `a` to connect to `b` and wait until both see the connection (handshake done)."""
    target = f"127.0.0.1:{b.port}"
    log.info("connect node%d -> node%d (%s)", a.index, b.index, target)
    a.addnode(target, "onetry")

    def handshaken() -> bool:
        out = [p for p in a.getpeerinfo() if p.get("addr") == target and not p.get("inbound")]
        inbound = [p for p in b.getpeerinfo() if p.get("inbound")]
        return bool(out) and bool(inbound) and all(p.get("handshake") for p in out + inbound)
    wait_until(handshaken, timeout=timeout, msg=f"node{a.index} and node{b.index} to connect")


def sync_blocks(nodes: Sequence[TestNode], timeout: float = DEFAULT_TIMEOUT) -> str:
    """Wait until every node has the same best block; returns its hash."""
    def same_tip() -> str | None:
        tips = {n.getbestblockhash() for n in nodes}
        return tips.pop() if len(tips) == 1 else None
    return wait_until(same_tip, timeout=timeout,
                      msg=f"best block hashes of {len(nodes)} nodes to agree")


# -- the nodes of one test ----------------------------------------------------------------------


class Harness:
    """The nodes, temporary directory and random seed of one functional test."""

    def __init__(self, base_dir: Path, port_factory: Callable[[], int], seed: int) -> None:
        self.base_dir = base_dir
        self.port_factory = port_factory
        self.seed = seed
        self.rng = random.Random(seed)
        self.nodes: list[TestNode] = []

    def add_node(self, *, chain: str | None = None, block_time: float = DEFAULT_BLOCK_TIME,
                 params: dict[str, Any] | None = None, create: bool = True) -> TestNode:
        """A new node on a chain of its own (created unless create=False)."""
        index = len(self.nodes)
        datadir = self.base_dir / f"node{index}"
        datadir.mkdir(parents=True)
        node = TestNode(index, datadir, chain or f"chain{index}", port=self.port_factory(),
                        rpcport=self.port_factory(), port_factory=self.port_factory,
                        block_time=block_time, params=params)
        if create:
            node.create_chain()
        self.nodes.append(node)
        return node

    def start_node(self, extra_args: Sequence[str] = (), **kwargs: Any) -> TestNode:
        """add_node then start: the common one-node case."""
        node = self.add_node(**kwargs)
        node.start(extra_args)
        return node

    def shutdown(self) -> None:
        """Stop every running node; a node that does not stop is killed and reported."""
        errors = []
        for node in self.nodes:
            if node.is_running():
                try:
                    node.stop(timeout=10)
                except AssertionError as e:
                    errors.append(str(e))
        if errors:
            raise AssertionError("; ".join(errors))


def chain_snapshot(node: TestNode, streams: Sequence[str]) -> dict[str, Any]:
    """What a restart, a reindex or a change of store must preserve, as the API shows it:
    tip, blocks, streams, permissions (with pending votes) and the items, keys and
    publishers of `streams`."""
    return {
        "height": node.getblockcount(),
        "tip": node.getbestblockhash(),
        "blocks": node.listblocks(f"0-{node.getblockcount()}"),
        "streams": node.liststreams("*", True),
        "permissions": node.listpermissions("*", "*", True),
        "items": {s: node.liststreamitems(s, True, 100_000) for s in streams},
        "keys": {s: node.liststreamkeys(s) for s in streams},
        "publishers": {s: node.liststreampublishers(s) for s in streams},
    }


def json_lines(path: Path) -> list[Any]:
    """The JSON documents of a file written one per line (by hook scripts); [] if absent."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]
