"""Helpers of the bridge-service tests: a MES node and an ERP node, the bridge in a thread or
as its own process, and MES-side clients on the real broker.

Node 1 creates the chain and mines; the bridge acts there as the MES's agent (node 1 holds
admin, so the bridge can grant send permission to the reporter addresses it makes). Node 2
joins and carries the ERP's agent (`erp.api.Erp`).
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from erp_support import company, projected, two_nodes
from framework import REPO_ROOT, Harness, TestNode, child_env, scaled, wait_until
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from erp.api import Erp
from mes.bridge import messages as m
from mes.bridge.client import BridgeClient
from mes.bridge.executor import Executor
from mes.bridge.service import BridgeService, serve
from mes.bridge.store import BridgeStore, open_engine

log = logging.getLogger("functional.mes_bridge")

PRODUCTION_UNIT = [{"name": "Status", "data_type": "STRING", "required": False},
                   {"name": "ProcessName", "data_type": "STRING", "required": False}]


class BridgeThread:
    """The bridge service in a thread of the test process (its own event loop)."""

    def __init__(self, node: TestNode, engine: Engine, bootstrap: str, *,
                 agent_name: str = "ACME MES") -> None:
        self.erp = Erp(engine, node.client())  # its own client: outlives node restarts
        self.erp.init(agent_name=agent_name)
        self.store = BridgeStore(engine)
        self.store.create()
        self.executor = Executor(self.erp, self.store)
        self.service = BridgeService(self.executor, self.store, bootstrap)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.error: BaseException | None = None

    def start(self) -> BridgeThread:
        def main() -> None:
            async def go() -> None:
                self._loop = asyncio.get_running_loop()
                await serve(self.service, self._ready.set)
            try:
                asyncio.run(go())
            except BaseException as exc:  # reported by stop()
                self.error = exc
                self._ready.set()
        self._thread = threading.Thread(target=main, name="bridge", daemon=True)
        self._thread.start()
        assert self._ready.wait(scaled(30)), "bridge did not start"
        if self.error is not None:
            raise self.error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.service.stop)
            self._thread.join(scaled(30))
            assert not self._thread.is_alive(), "bridge did not stop"
        if self.error is not None:
            raise self.error


class BridgeProcess:
    """`python -m mes.bridge.cli` as a child process (for SIGKILL)."""

    def __init__(self, node: TestNode, db_url: str, bootstrap: str, log_path: Path) -> None:
        self.argv = [sys.executable, "-m", "mes.bridge.cli", node.chain, "--datadir",
                     str(node.datadir), "--kafka", bootstrap, "--db", db_url,
                     "--agent-name", "ACME MES", "--session-timeout-ms", "3000"]
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT, env=child_env(),
                                            cwd=REPO_ROOT)
        log.info("bridge process %d", self.process.pid)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(scaled(30))
        log.info("bridge process killed (SIGKILL)")

    def terminate(self) -> int:
        assert self.process is not None
        self.process.terminate()
        return self.process.wait(scaled(30))


def erp_and_mes(harness: Harness, chain: str, tmp: Path) -> tuple[TestNode, TestNode, Erp, Engine]:
    """Nodes 1 (MES) and 2 (ERP), the ERP's agent published; (mes node, erp node, erp,
    the MES bridge's database engine)."""
    n1, n2 = two_nodes(harness, chain)
    mes_engine = open_engine(f"sqlite:///{tmp / 'bridge.db'}")
    # The MES agent is published by the bridge; the stream is created from node 1 first.
    Erp(mes_engine, n1.rpc).init()
    erp, _txid = company(n2, create_engine(f"sqlite:///{tmp / 'erp.db'}"), "ACME ERP")
    return n1, n2, erp, mes_engine


def wait_projected(erp: Erp, txid: str) -> None:
    assert projected(erp, txid)["status"] == "applied", txid


def request(bootstrap: str, topic: str, auth: str, body: dict[str, Any] | None = None, *,
            client_id: str = "mes-1", **paging: int) -> m.Response:
    """One request through a fresh BridgeClient; the response."""
    async def go() -> m.Response:
        async with BridgeClient(bootstrap, client_id, timeout=scaled(30)) as client:
            return await client.request(topic, auth, body, **paging)
    return asyncio.run(go())


def wait_listed(bootstrap: str, topic: str, auth: str, count: int) -> list[Any]:
    """List until ``count`` requests are there (the bridge's projection follows the chain)."""
    def listed() -> list[Any] | None:
        response = request(bootstrap, topic, auth, limit=100)
        assert response.kind == "data", response
        return response.data if len(response.data) >= count else None
    return wait_until(listed, timeout=60, msg=f"{count} requests listed on {topic}")
