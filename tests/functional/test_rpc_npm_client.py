"""The npm MultiChain client `multichain-node` drives a real chainmill node.

What: tests/js/drive_node.js calls, through that client's own parameter building and HTTP
code, the methods it exposes that chainmill implements (getinfo, getblockchainparams,
getruntimeparams, grant with the nulls it sends, revoke, listpermissions, create, liststreams,
publish, liststreamitems with its start = -count default, getstreamitem, getwallettransaction,
listwallettransactions, getrawtransaction verbose, getblock, getpeerinfo, getmempoolinfo ...)
and asserts on every answer; it exits non-zero on any mismatch. The test then checks its
summary against the node through the harness's own client.

How: two nodes of one chain, so getpeerinfo has a peer. The client is the version pinned in
tests/js/package.json, installed by `npm ci --prefix tests/js` (.ci/run does it when node is
present). Without node or the package the test fails in CI (CI=true) and skips elsewhere.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from framework import scaled
from network_support import start_network

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.rpc_npm_client")

JS_DIR = Path(__file__).resolve().parents[1] / "js"
SCRIPT = JS_DIR / "drive_node.js"
PACKAGE = JS_DIR / "node_modules" / "multichain-node" / "package.json"

EXPECTED_CALLS = {
    "getinfo", "getblockchainparams", "getruntimeparams", "setruntimeparam", "getaddresses",
    "getnewaddress", "validateaddress", "listaddresses", "createkeypairs", "importaddress",
    "dumpprivkey", "importprivkey", "signmessage", "verifymessage", "getwalletinfo",
    "gettotalbalances", "getaddressbalances", "getmultibalances", "listunspent",
    "getaddresstransaction", "listaddresstransactions", "grant", "grantfrom", "revoke",
    "revokefrom", "listpermissions", "create", "createfrom", "liststreams", "subscribe",
    "unsubscribe", "publish", "publishfrom", "liststreamitems", "getstreamitem",
    "liststreamkeyitems", "liststreamkeys", "liststreampublishers", "liststreampublisheritems",
    "getwallettransaction", "listwallettransactions", "getrawtransaction",
    "decoderawtransaction", "getblock", "getblockhash", "listblocks", "getpeerinfo",
    "getaddednodeinfo", "ping", "getmempoolinfo", "getrawmempool", "getmininginfo",
    "getblockchaininfo", "getnetworkinfo", "pause", "resume", "help",
}


def _unavailable(reason: str) -> None:
    """Fail in CI, skip elsewhere (the pattern of tests/conftest.py's service_unavailable)."""
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"the npm client test is required in CI: {reason}", pytrace=False)
    pytest.skip(f"npm client not available: {reason}")


@pytest.fixture
def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        _unavailable("no `node` on PATH")
    pinned = json.loads((JS_DIR / "package.json").read_text())["dependencies"]["multichain-node"]
    npm = shutil.which("npm")
    if npm is not None and (not PACKAGE.exists()
                            or json.loads(PACKAGE.read_text())["version"] != pinned):
        # The README's test command alone must run this test: install the pinned client.
        subprocess.run([npm, "ci", "--prefix", str(JS_DIR)], capture_output=True, timeout=300)
    if not PACKAGE.exists():
        _unavailable("multichain-node is not installed (run `npm ci --prefix tests/js`)")
    installed = json.loads(PACKAGE.read_text())["version"]
    if installed != pinned:
        _unavailable(f"multichain-node {installed} is installed, {pinned} is pinned "
                     "(run `npm ci --prefix tests/js`)")
    return node


def test_npm_multichain_node_client(harness, node_binary):
    seed, joiner = start_network(harness, 2)
    env = {**os.environ, "MC_PORT": str(seed.rpcport), "MC_USER": seed.rpcuser,
           "MC_PASS": seed.rpcpassword, "MC_CHAIN": seed.chain,
           "MC_PEER_ADDRESS": joiner.address, "MC_TIMEOUT": str(scaled(30))}
    run = subprocess.run([node_binary, str(SCRIPT)], cwd=JS_DIR, env=env, capture_output=True,
                         text=True, timeout=scaled(120))
    log.info("drive_node.js stderr:\n%s", run.stderr)
    assert run.returncode == 0, f"drive_node.js failed:\n{run.stdout}\n{run.stderr}"
    summary = json.loads(run.stdout.strip().splitlines()[-1])

    assert set(summary["called"]) == EXPECTED_CALLS
    rpc = seed.rpc
    items = rpc.call("liststreamitems", summary["stream"])
    assert [i["txid"] for i in items] == [summary["one"], summary["two"]]
    assert items[0]["data"] == {"json": {"text": "one"}}
    assert rpc.call("getstreamitem", summary["stream"], summary["two"])["data"] == "00ff"
