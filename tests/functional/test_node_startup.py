"""Start-up: the chain directory's lock, `--daemon` beside a running node, and what a start
remembers for later starts and for `chainmill cli`.

What: a second start of a running chain (foreground or --daemon) fails with one clear line
and leaves the running node's files alone; after SIGKILL a start succeeds at once even when
the pid file names a live process (the lock decides, not the pid); ports and --db-url given
at a start are used by the next plain `chainmill start CHAIN` and by `chainmill cli CHAIN`.

How: one node per test, started by the harness (with --port/--rpcport) or by running the
`chainmill` command as a user would.
"""

from __future__ import annotations

import logging
import os
import subprocess

import pytest
from framework import chainmill_command, child_env, scaled, wait_until

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.node_startup")


def chainmill(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*chainmill_command(), *args], capture_output=True, text=True,
                          env=child_env(), timeout=scaled(timeout), stdin=subprocess.DEVNULL)


def test_second_start_is_refused_by_the_lock_and_sigkill_frees_it(harness):
    node = harness.start_node()
    lock = node.chain_dir / ".lock"
    assert lock.exists() and lock.stat().st_mode & 0o777 == 0o600

    log.info("a second foreground start is refused while the first runs")
    second = chainmill("start", node.chain, "--datadir", str(node.datadir),
                       "--rpcport", str(harness.port_factory()),
                       "--port", str(harness.port_factory()))
    assert second.returncode == 1
    assert f"already running (pid {node.process.pid})" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1

    log.info("--daemon is refused the same way and leaves daemon.out and the pid file alone")
    (node.chain_dir / "daemon.out").write_text("the running node's output\n")
    pid_before = node.pid_path.read_text()
    daemon = chainmill("start", node.chain, "--datadir", str(node.datadir), "--daemon")
    assert daemon.returncode == 1
    assert "already running" in daemon.stderr
    assert "Node started" not in daemon.stdout
    assert (node.chain_dir / "daemon.out").read_text() == "the running node's output\n"
    assert node.pid_path.read_text() == pid_before
    assert node.getblockcount() == 0

    log.info("after SIGKILL the next start succeeds at once, even if the stale pid file "
             "names a live process (the lock decides)")
    node.kill()
    node.pid_path.write_text(f"{os.getpid()}\n")
    node.start()
    assert node.pid_path.read_text().strip() == str(node.process.pid)
    node.stop()


def test_ports_and_db_url_given_once_are_remembered(harness, tmp_path):
    node = harness.add_node()
    store = tmp_path / "elsewhere.db"
    url = f"sqlite:///{store}"
    node.rpcport = harness.port_factory()  # not the chain's default-rpc-port
    node.port = harness.port_factory()
    log.info("first start with --rpcport, --port and --db-url")
    node.start(["--db-url", url])
    txid = node.create("stream", "orders", True)
    node.wait_for_confirmation(txid)
    height = node.getblockcount()
    assert store.exists() and not (node.chain_dir / "chain.db").exists()

    log.info("`chainmill cli CHAIN` finds the node without being told the port")
    shown = node.cli("getblockcount")
    assert shown.returncode == 0, shown.stderr
    assert int(shown.stdout) == height
    stopped = node.cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    node.wait_for_exit()

    log.info("a plain `chainmill start CHAIN --daemon` uses the same ports and store")
    started = chainmill("start", node.chain, "--datadir", str(node.datadir), "--daemon")
    assert started.returncode == 0, started.stderr
    try:
        assert node.client().call("getblockcount") == height
        assert [s["name"] for s in node.client().call("liststreams")] == ["root", "orders"]
        assert not (node.chain_dir / "chain.db").exists()
        conf = node.conf_path.read_text()
        assert f"rpcport={node.rpcport}\n" in conf and f"db-url={url}\n" in conf
        assert node.conf_path.stat().st_mode & 0o777 == 0o600
    finally:
        assert node.cli("stop").returncode == 0
    wait_until(lambda: not node.pid_path.exists(), msg="the daemon to stop")
