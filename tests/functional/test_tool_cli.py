"""`chainmill cli` against a running node, as a user would type it.

What: strings print raw, JSON results pretty-printed, null prints nothing; arguments that
are JSON are sent as JSON, names (stream, key) as strings even when they look like numbers;
an RPC error prints `error code:` and the message to stderr with a non-zero exit status;
wrong credentials and a stopped node give one clear line; interactive mode reads calls
until `exit`; `chainmill cli CHAIN stop` stops the node.

How: one node; every call is a separate `chainmill cli` process reading the credentials
from the chain's chainmill.conf.
"""

from __future__ import annotations

import json
import logging
import re

import pytest

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.tool_cli")


def ok(result) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result.stdout


def test_cli_calls_results_and_errors(harness):
    node = harness.start_node()

    log.info("interactive mode: integers and strings raw, objects as indented JSON, "
             "null as nothing, until exit")
    out = ok(node.cli(input="getblockcount\ngetbestblockhash\ngetinfo\n"
                            "create stream 1001 true\nsubscribe 1001\nbogus-method\n"
                            "exit\ngetblockcount\n"))
    lines = out.splitlines()
    assert lines[0] == "0"
    assert lines[1] == node.getblockhash(0)
    end = lines.index("}")
    assert lines[2] == "{" and lines[3].startswith('    "')
    assert json.loads("\n".join(lines[2:end + 1]))["chainname"] == node.chain
    created = lines[end + 1]
    assert re.fullmatch(r"[0-9a-f]{64}", created)
    assert lines[end + 2:] == []  # subscribe printed nothing; nothing ran after exit

    log.info("one call per process: JSON where JSON is meant, names always as strings")
    txid = ok(node.cli("publish", "1001", "2002", '{"json":{"qty":5}}')).strip()
    node.wait_for_confirmation(created, txid)
    items = json.loads(ok(node.cli("liststreamitems", "1001")))
    assert items[0]["keys"] == ["2002"] and items[0]["data"] == {"json": {"qty": 5}}

    log.info("an RPC error: code and message on stderr, exit status from the code")
    failed = node.cli("liststreamitems", "nosuch")
    assert failed.returncode == 255  # |-708| capped to what an exit status can hold
    assert failed.stdout == ""
    assert "error code: -708" in failed.stderr

    log.info("wrong password: one clear line")
    failed = node.cli("--rpcpassword", "wrong", "getinfo")
    assert failed.returncode == 1
    assert "rpcuser or rpcpassword" in failed.stderr
    assert "Traceback" not in failed.stderr

    log.info("chainmill cli CHAIN stop stops the node")
    assert ok(node.cli("stop")).strip() == "chainmill server stopping"
    assert node.wait_for_exit() == 0
    failed = node.cli("getinfo")
    assert failed.returncode == 1 and "cannot connect" in failed.stderr
