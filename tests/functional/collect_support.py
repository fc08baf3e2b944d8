"""Helpers for the collector's functional tests: a private Mosquitto, the collector and the
emulator as real `chainmill collect` processes, and reading their counters.

Each test starts its own `mosquitto` on a free port (with persistence in the test directory),
so it can stop and restart the broker without disturbing the machine's shared one on 1883
and without seeing other tests' traffic.
"""

from __future__ import annotations

import getpass
import json
import logging
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from framework import chainmill_command, child_env, scaled, wait_until

log = logging.getLogger("collect_functional")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Broker:
    """A mosquitto process of this test, restartable on the same port with its saved state."""

    def __init__(self, directory: Path, port: int, extra_conf: str = "",
                 anonymous: bool = True) -> None:
        if shutil.which("mosquitto") is None:
            pytest.fail("mosquitto is not installed (apt-get install mosquitto)", pytrace=False)
        self.directory = directory
        self.port = port
        directory.mkdir(parents=True, exist_ok=True)
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text(
            # user: a root mosquitto would otherwise drop to user "mosquitto", which cannot
            # write its saved state into this test's directory.
            f"user {getpass.getuser()}\n"
            f"listener {port} 127.0.0.1\nallow_anonymous {str(anonymous).lower()}\n"
            "persistence true\n"
            f"persistence_location {directory}/\nautosave_interval 0\n"
            "max_queued_messages 0\nmax_inflight_messages 100\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            "log_type subscribe\n" + extra_conf)
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        out = (self.directory / f"mosquitto-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=out,
                                        stderr=subprocess.STDOUT)
        wait_until(lambda: port_open(self.port) or self.process.poll() is not None,
                   msg=f"mosquitto on port {self.port}")
        assert self.process.poll() is None, "mosquitto exited at start"
        log.info("broker up on %d (start %d)", self.port, self.starts)

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace")
                       for p in sorted(self.directory.glob("mosquitto-*.log")))

    def wait_subscribed(self, topic: str = "sensor/CNC/+") -> None:
        """Until a client has subscribed to `topic` (the broker logs each subscription)."""
        wait_until(lambda: f" {topic}" in self.log_text(), msg=f"a subscription to {topic}")

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its sessions and queued messages before it exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=scaled(30))
        self.process = None


class Process:
    """A `chainmill ...` child process with its output in a file."""

    def __init__(self, directory: Path, name: str, args: list[str],
                 env: dict[str, str] | None = None) -> None:
        self.output = directory / f"{name}.log"
        self.process = subprocess.Popen([*chainmill_command(), *args], env=child_env(env),
                                        stdout=self.output.open("wb"), stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 60) -> int:
        return self.process.wait(timeout=scaled(timeout))

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.wait(30)

    def text(self) -> str:
        return self.output.read_text(errors="replace")


def write_map(path: Path, cnc_ids: list[str]) -> Path:
    path.write_text(json.dumps([{"cnc_id": c, "class_name": "CncData"} for c in cnc_ids]))
    return path


def start_collector(directory: Path, broker: Broker, db_url: str, cnc_ids: list[str],
                    *extra: str, env: dict[str, str] | None = None) -> tuple[Process, Path]:
    stats = directory / "collector-stats.json"
    map_path = write_map(directory / "cnc_classes.json", cnc_ids)
    proc = Process(directory, "collector", [
        "collect", "--broker", broker.address, "--db", db_url, "--map", str(map_path),
        "--plugins", str(directory), "--stats", str(stats), "--client-id", "test-collector",
        *extra], env=env)
    wait_until(lambda: read_stats(stats).get("connected") or proc.process.poll() is not None,
               msg="the collector connected")
    assert proc.process.poll() is None, proc.text()
    return proc, stats


def read_stats(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def recorded(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
