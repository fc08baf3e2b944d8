"""GET /health and GET /metrics on real nodes (issue 13 item 1).

What: (1) a started node answers /health with 200, ready, live and its miner state; its
/metrics scrape parses with prometheus_client's own text parser, and the counters move as
blocks, transactions and RPC calls (including a failing one, counted under its error code)
happen; POST on either path is 405; a second node of the chain reports its peer as connected
and is ready and synced. (2) A client beyond loopback (admitted by rpcallowip) needs the RPC
credentials for both paths, unless metricsallowip lets its network in. (3) The README's
"Health and metrics" commands, run as written against a `chainmill cluster up` cluster,
print a ready /health and a scrape that parses.

How: real node processes; the "remote" client runs in a network namespace of the test's own,
joined to this host by a veth pair on a private /30 (netns_support.py), so the node sees a
client on another host while nothing leaves the machine.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import re
import subprocess
from pathlib import Path

import pytest
from framework import REPO_ROOT, chainmill_command, child_env, scaled, wait_until
from netns_support import NetNamespace
from network_support import daemons_fixture, start_network  # noqa: F401 - `daemons`

from node.client import RpcError

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.node_metrics")


def http_get(host: str, port: int, path: str, *, method: str = "GET",
             source: str | None = None, credentials: tuple[str, str] | None = None
             ) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=30,
                                      source_address=(source, 0) if source else None)
    headers = {}
    if credentials is not None:
        token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    try:
        conn.request(method, path, body=b"" if method == "POST" else None, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def scrape(node, **kwargs) -> dict[tuple[str, tuple], float]:
    """The node's /metrics as {(sample name, sorted labels): value}, parsed by the official
    Prometheus text parser."""
    from prometheus_client.parser import text_string_to_metric_families

    status, headers, body = http_get("127.0.0.1", node.rpcport, "/metrics", **kwargs)
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def health(node) -> tuple[int, dict]:
    status, headers, body = http_get("127.0.0.1", node.rpcport, "/health")
    assert headers["Content-Type"].startswith("application/json")
    return status, json.loads(body)


REMOTE_GET = """
import base64, http.client, sys
host, port, path, method, user, password = sys.argv[1:7]
conn = http.client.HTTPConnection(host, int(port), timeout=30)
headers = {}
if user:
    headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
conn.request(method, path, body=b"" if method == "POST" else None, headers=headers)
r = conn.getresponse()
print(r.status, r.getheader("WWW-Authenticate") or "")
"""


def remote_get(ns: NetNamespace, node, path: str, *, method: str = "GET",
               credentials: tuple[str, str] | None = None) -> tuple[int, str]:
    """(status, WWW-Authenticate) of a request from the namespace to the node's RPC port."""
    user, password = credentials or ("", "")
    out = ns.python(REMOTE_GET, ns.host_address, str(node.rpcport), path, method, user,
                    password).split(maxsplit=1)
    return int(out[0]), out[1] if len(out) > 1 else ""


def test_health_and_metrics_follow_the_chain(harness):
    node0, node1 = start_network(harness, 2)

    log.info("/health: live, ready, synced, mining")
    status, body = health(node0)
    assert status == 200, body
    assert body["live"] is True and body["ready"] is True and body["reasons"] == []
    assert body["store"] == "open" and body["synced"] is True
    assert body["miner"] == "mining"
    assert body["height"] == node0.getblockcount()

    log.info("/metrics parses; the second node shows its peer connected")
    before = scrape(node0)
    assert value(before, "chainmill_height") == node0.getblockcount()
    wait_until(lambda: value(scrape(node1), "chainmill_peers", state="connected") == 1,
               msg="node1's metrics to show one connected peer")
    assert value(scrape(node0), "chainmill_peers", state="connected") == 1
    assert value(before, "chainmill_banned_peers") == 0
    status, body = health(node1)
    assert status == 200 and body["peers"] == 1 and body["synced"] is True, body
    assert body["best_peer_height"] >= body["height"] - 1

    log.info("RPC calls are counted by method and outcome, failures under their error code")
    for _ in range(3):
        node0.getinfo()
    with pytest.raises(RpcError):
        node0.getblock("not-a-block")
    after_rpc = scrape(node0)
    assert (value(after_rpc, "chainmill_rpc_calls_total", method="getinfo", outcome="ok")
            >= value(before, "chainmill_rpc_calls_total", method="getinfo", outcome="ok") + 3)
    errors = [k for k in after_rpc if k[0] == "chainmill_rpc_calls_total"
              and dict(k[1])["method"] == "getblock" and dict(k[1])["outcome"] != "ok"]
    assert errors and all(dict(k[1])["outcome"].startswith("-") for k in errors), errors
    assert value(after_rpc, "chainmill_rpc_call_seconds_count", method="getinfo") >= 3

    log.info("blocks and transactions connected move with a published item")
    stream_tx = node0.create("stream", "metered", True)
    txid = node0.publish("metered", "k1", {"json": {"n": 1}})
    node0.wait_for_confirmation(stream_tx, txid)

    def settled() -> bool:
        # Both miners may have made a block at this height: wait until one branch won on
        # both nodes (same best block) with the two txs on it, not just for equal heights;
        # a fork settled later would put them back in node0's pool and into the count below.
        return (node1.getbestblockhash() == node0.getbestblockhash()
                and all(node0.getrawtransaction(t, 1).get("confirmations", 0) >= 1
                        for t in (stream_tx, txid)))
    wait_until(settled, msg="node1 to sync and both txs on the common branch")
    after = scrape(node0)
    assert (value(after, "chainmill_blocks_connected_total")
            > value(before, "chainmill_blocks_connected_total"))
    assert (value(after, "chainmill_transactions_connected_total")
            >= value(before, "chainmill_transactions_connected_total") + 2)
    assert (value(after, "chainmill_block_connect_seconds_count")
            == value(after, "chainmill_blocks_connected_total"))
    assert value(after, "chainmill_height") == node0.getblockcount()
    # node1 received the blocks over P2P: its connect path counts them too.
    assert value(scrape(node1), "chainmill_transactions_connected_total") >= 2

    log.info("a transaction waiting in the mempool shows in its size and bytes")
    node0.rpc.call("pause", "mining")
    pending = node0.publish("metered", "k2", {"json": {"n": 2}})
    pooled = scrape(node0)
    assert value(pooled, "chainmill_mempool_transactions") == 1
    assert value(pooled, "chainmill_mempool_bytes") > 0
    status, body = health(node0)
    assert status == 200 and body["miner"] == "paused", body
    node0.rpc.call("resume", "mining")
    node0.wait_for_confirmation(pending)

    log.info("only GET (and HEAD) is served on the two paths")
    for path in ("/health", "/metrics"):
        status, headers, _ = http_get("127.0.0.1", node0.rpcport, path, method="POST")
        assert status == 405 and "GET" in headers["Allow"]


def test_credentials_needed_beyond_loopback_unless_metricsallowip(harness):
    with NetNamespace() as ns:
        node = harness.add_node()
        node.set_conf(rpcallowip=f"{ns.address}/32")
        node.start()
        creds = (node.rpcuser, node.rpcpassword)

        log.info("from %s (another host) without credentials: 401; with them: 200; "
                 "loopback: open", ns.address)
        for path in ("/health", "/metrics"):
            status, challenge = remote_get(ns, node, path)
            assert status == 401 and "Basic" in challenge
            assert remote_get(ns, node, path, credentials=(creds[0], "wrong"))[0] == 401
            assert remote_get(ns, node, path, credentials=creds)[0] == 200
            status, _, _ = http_get("127.0.0.1", node.rpcport, path)
            assert status == 200
        # An unauthenticated POST from beyond loopback learns nothing, not even the 405.
        assert remote_get(ns, node, "/metrics", method="POST")[0] == 401

        log.info("metricsallowip=%s: the same client reads them without credentials",
                 ns.address)
        node.stop()
        node.set_conf(metricsallowip=ns.address)
        node.start()
        for path in ("/health", "/metrics"):
            assert remote_get(ns, node, path)[0] == 200
        # JSON-RPC itself still needs the credentials.
        assert remote_get(ns, node, "/", method="POST")[0] == 401
        node.stop()


def readme_lines() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Health and metrics", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```sh\n(.*?)```", section, re.S)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_readme_health_and_metrics_commands(harness, daemons):
    from prometheus_client.parser import text_string_to_metric_families

    cdir = harness.base_dir / "cluster"  # the default cluster directory of this datadir
    daemons.track(cdir / "node1" / "chainmill")
    daemons.run("cluster", "up", "1", "--dir", str(cdir), "--param", "target-block-time=0.2",
                timeout=120)
    lines = readme_lines()
    assert len(lines) == 3 and lines[0].startswith("P=$(chainmill cluster status --json")
    command = Path(chainmill_command()[0])
    env = child_env({"CHAINMILL_DATADIR": str(harness.base_dir)})
    if command.name == "chainmill":  # the README says `chainmill`: this tree's one first
        env["PATH"] = f"{command.parent}{os.pathsep}{env.get('PATH', '')}"
    outputs = []
    for n in (1, 2):  # each curl line with the port line before it, as a reader pastes them
        script = "set -e\n" + lines[0] + "\n" + lines[n] + "\n"
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                              env=env, cwd=harness.base_dir, timeout=scaled(60))
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    body = json.loads(outputs[0])
    assert body["ready"] is True and body["live"] is True and body["miner"] == "mining", body
    names = {f.name for f in text_string_to_metric_families(outputs[1])}
    assert {"chainmill_height", "chainmill_peers", "chainmill_rpc_calls"} <= names
