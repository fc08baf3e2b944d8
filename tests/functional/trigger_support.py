"""Helpers for the trigger functional tests: real node processes, application databases, waits.

A node is a real `chainmill start --daemon` process with its own data directory; the tests
talk to it only through node.client, like the triggers do. Until multi-node networking
exists, two *instances* (application databases) can share one node, each with its own
address: the receiver treats only its configured `is_mine` address as its own.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from node.client import RpcClient
from triggers import configure, crypto
from triggers.keys_command import ensure_system_streams, publish_public_key

log = logging.getLogger("trigger_functional")
REPO = Path(__file__).resolve().parents[2]
TIMEOUT_FACTOR = float(os.environ.get("CHAINMILL_TEST_TIMEOUT_FACTOR", "1"))


def chainmill(*argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the chainmill command from this source tree."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, "-m", "node.cli.main", *argv],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"chainmill {' '.join(argv)} failed: {result.stderr or result.stdout}")
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` (scaled)."""
    deadline = time.monotonic() + timeout * TIMEOUT_FACTOR
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout * TIMEOUT_FACTOR:.0f} s waiting for {what}")
        time.sleep(0.05)


@dataclass
class TestNode:
    __test__ = False

    """One node process of a chain, with its data directory and RPC client."""

    chain: str
    datadir: Path
    port: int = field(default_factory=free_port)
    rpcport: int = field(default_factory=free_port)
    client: RpcClient | None = None

    def create(self, *params: str) -> None:
        args = ["create", self.chain, "--datadir", str(self.datadir), "--param", "target-block-time=0.2"]
        for param in params:
            args += ["--param", param]
        chainmill(*args)

    def start(self) -> None:
        chainmill(
            "start", self.chain, "--datadir", str(self.datadir), "--port", str(self.port),
            "--rpcport", str(self.rpcport), "--daemon",
        )
        self.client = RpcClient.from_datadir(self.chain, self.datadir, port=self.rpcport)
        wait_until(lambda: self._answers(), 60, "the node's RPC port")
        log.info("node %s up on rpc port %s", self.chain, self.rpcport)

    def _answers(self) -> bool:
        probe = RpcClient.from_datadir(self.chain, self.datadir, port=self.rpcport, timeout=2)
        try:
            probe.call("getblockcount")
            return True
        except Exception:  # noqa: BLE001 - still starting, or stopping
            return False
        finally:
            probe.close()

    def rpc(self, method: str, *params: Any) -> Any:
        assert self.client is not None
        return self.client.call(method, *params)

    def stop(self) -> None:
        if self.client is None or not self._answers():
            return
        try:
            self.rpc("stop")
        except Exception:  # noqa: BLE001 - already gone
            pass
        wait_until(lambda: not self._answers(), 30, "the node to stop")
        self.client.close()  # stays usable: it reconnects when the node is back

    def wait_mined(self, txid: str, final: bool = True) -> None:
        """Wait until `txid` is confirmed (and final) on this node."""

        def done() -> bool:
            if txid in (self.rpc("getrawmempool") or []):
                return False
            return True

        wait_until(done, 30, f"{txid} to be mined")


@dataclass
class Instance:
    """One application database bound to a node, with its own address and key pair."""

    name: str
    engine: Engine
    node: TestNode
    address: str
    keys: crypto.KeyPair


def sqlite_engine(path: Path) -> Engine:
    return create_engine(f"sqlite:///{path}")


def make_instance(
    name: str,
    engine: Engine,
    node: TestNode,
    keydir: Path,
    participant_id: int,
    address: str | None = None,
    streams: tuple[str, ...] = ("rfq",),
) -> Instance:
    """Initialise the trigger tables, a key pair published on pubkeys, chain and streams."""
    if address is None:
        address = node.rpc("getnewaddress")
        node.wait_mined(node.rpc("grant", address, "connect,send,receive"))
    ensure_system_streams(node.client)
    pair = crypto.write_keypair(keydir, crypto.generate_keypair())
    node.wait_mined(publish_public_key(node.client, address, pair.public_pem))
    configure.init(engine, participant_id)
    configure.add_chain(
        engine, node.chain, chain_desc=name, rpc_host="127.0.0.1", rpc_port=node.rpcport,
        public_key=str(pair.public_path), private_key=str(pair.private_path),
    )
    for stream in streams:
        configure.add_stream(engine, node.chain, stream)
    return Instance(name, engine, node, address, pair)


def register_nodes(instances: list[Instance]) -> None:
    """Each instance knows every instance's address; its own one is `is_mine`."""
    for inst in instances:
        for other in instances:
            configure.add_node(
                inst.engine, inst.node.chain, other.address, is_mine=other is inst,
                ip_address="::1" if other is inst else "127.0.0.1",
            )


def seed() -> int:
    value = int(os.environ.get("CHAINMILL_TEST_SEED", random.randrange(2**32)))
    log.info("random seed %s", value)
    return value
