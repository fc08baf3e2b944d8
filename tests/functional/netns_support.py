"""A second host for tests: a network namespace of this test's own, joined by a veth pair.

Traffic between the host side and the namespace stays inside this machine, on addresses the
test made itself (a private /30), so a test can see a node from "another machine" without
sending anything to a real network. Needs root and iproute2 (`ip netns`); in CI a missing
capability fails the test, elsewhere it skips with the reason.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys

import pytest


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


class NetNamespace:
    """`with NetNamespace() as ns:` — ns.host_address is this side, ns.address the other."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.name = f"cmt{tag}"
        self.host_if, self.ns_if = f"cmh{tag}", f"cmn{tag}"
        third = 16 + secrets.randbelow(200)
        fourth = 4 * secrets.randbelow(60)
        self.host_address = f"10.254.{third}.{fourth + 1}"
        self.address = f"10.254.{third}.{fourth + 2}"

    def __enter__(self) -> NetNamespace:
        if shutil.which("ip") is None or os.geteuid() != 0:
            self._unavailable("needs root and iproute2's `ip`")
        try:
            _ip("netns", "add", self.name)
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _ip("link", "set", self.ns_if, "netns", self.name)
            _ip("addr", "add", f"{self.host_address}/30", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            self.exec_ip("addr", "add", f"{self.address}/30", "dev", self.ns_if)
            self.exec_ip("link", "set", self.ns_if, "up")
            self.exec_ip("link", "set", "lo", "up")
        except subprocess.CalledProcessError as e:
            self.__exit__(None, None, None)
            self._unavailable(f"`ip {' '.join(e.cmd[1:])}` failed: {e.stderr.strip()}")
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)

    def exec_ip(self, *args: str) -> None:
        _ip("netns", "exec", self.name, "ip", *args)

    def python(self, code: str, *args: str, timeout: float = 60) -> str:
        """Run `python -c code args...` inside the namespace; its stdout."""
        done = subprocess.run(["ip", "netns", "exec", self.name, sys.executable, "-c", code,
                               *args], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(f"in namespace {self.name}: {done.stderr.strip()}")
        return done.stdout

    @staticmethod
    def _unavailable(reason: str) -> None:
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(f"a network namespace is required in CI: {reason}", pytrace=False)
        pytest.skip(f"no network namespace: {reason}")
