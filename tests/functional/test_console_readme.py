"""The README's admin console commands, run as written on a real node.

What: the two lines of the README's "Admin console" section (serve the console, add a user)
work when the cluster's chain name and node1's data directory are replaced by a test node's,
and the user they add can log in.

How: the code block is read from README.md; `chainmill console` runs on a free port (the
README's default 8480 may be taken on a shared machine), the password comes from
CHAINMILL_CONSOLE_PASSWORD.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import urllib.error

import pytest
from console_support import Browser
from framework import REPO_ROOT, chainmill_command, child_env, scaled, wait_until

pytestmark = pytest.mark.functional


def _readme_lines() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Admin console", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def _answers(web: Browser) -> bool:
    try:
        return web.get("/login").status == 200
    except urllib.error.URLError:
        return False


def test_console_readme_commands_serve_and_add_a_user(harness, free_port_factory):
    node = harness.start_node(chain="chainmill")
    serve, adduser = _readme_lines()
    here = str(node.datadir)

    def argv(line: str) -> list[str]:
        words = shlex.split(line.replace("~/.chainmill/cluster/node1", here))
        assert words[0] == "chainmill"
        return [*chainmill_command(), *words[1:]]

    done = subprocess.run(argv(adduser), env=child_env({"CHAINMILL_CONSOLE_PASSWORD":
                                                        "readme password"}),
                          capture_output=True, text=True, timeout=scaled(60))
    assert done.returncode == 0, done.stderr
    port = free_port_factory()
    console = subprocess.Popen([*argv(serve), "--port", str(port), "--rpcport",
                                str(node.rpcport)], env=child_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        first_line = console.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in first_line, first_line
        web = Browser(f"http://127.0.0.1:{port}")
        wait_until(lambda: _answers(web), msg="the console to answer")
        assert web.login("auditor", "readme password").status == 303
        assert web.get("/api/summary").json()["chain"] == "chainmill"
    finally:
        console.terminate()
        console.wait(timeout=scaled(10))
