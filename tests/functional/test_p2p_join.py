"""Joining a chain and running several nodes with one command, as a user does it.

What:
- `chainmill start CHAIN@HOST:PORT --daemon` on a new data directory fetches the chain's
  parameters, prints the exact grant command for its new address, and returns with its
  JSON-RPC serving; while the address lacks connect it has 0 connections and the seed's
  debug.log says why it refuses it. After `grant ADDRESS connect,send,receive` on the seed
  it connects by itself (its retry loop) and syncs the seed's stream items exactly.
  Stopped and restarted with only `chainmill start CHAIN --datadir D --daemon`, it comes back
  on the same ports, reconnects to the remembered seed and catches up what it missed.
- `chainmill cluster up 3` returns with all three nodes connected to each other and on one
  tip, printing each node's `chainmill cli` line; `cluster status --json` gives every
  documented field per node; an item published on node3 reaches node1; `cluster down`
  stops every node and removes every pid file.

How: the joiner and the cluster are real daemons (`--daemon`), stopped by the test at the
end through their pid files even when it fails (network_support.Daemons).
"""

from __future__ import annotations

import json
import logging

import pytest
from framework import TestNode, wait_until
from network_support import (
    Daemons,
    daemons_fixture,  # noqa: F401 - the `daemons` fixture
    log_lines,
    peer_addresses,
    pid_alive,
    publish_items,
    stream_digest,
    wait_for_log,
)

from node.client import RpcClient

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.p2p_join")


def daemon_handle(harness, datadir, chain: str, port: int, rpcport: int) -> TestNode:
    """A TestNode for RPC and file access to a daemon the test started itself."""
    node = TestNode(90 + len(harness.nodes), datadir, chain, port=port, rpcport=rpcport,
                    port_factory=harness.port_factory)
    node._read_credentials()
    node.rpc = node.client()
    return node


def test_joiner_refused_until_granted_then_syncs_and_restarts_by_chain_name(harness, daemons):
    seed = harness.start_node(chain="plant", params={"setup-first-blocks": 5})
    seed.create("stream", "orders", True)
    txids = publish_items(seed, "orders", 40, prefix="before-")
    seed.wait_for_confirmation(*txids)

    log.info("a new node joins through the seed: it prints the grant command")
    datadir = harness.base_dir / "joiner"
    port, rpcport = harness.port_factory(), harness.port_factory()
    daemons.track(datadir / "plant")
    out = daemons.run("start", f"plant@127.0.0.1:{seed.port}", "--datadir", str(datadir),
                      "--port", str(port), "--rpcport", str(rpcport), "--daemon").stdout
    joiner = daemon_handle(harness, datadir, "plant", port, rpcport)
    address = joiner.getaddresses()[0]
    assert f"chainmill cli plant grant {address} connect" in out, out
    assert "keeps trying to connect" in out
    assert (datadir / "plant" / "params.dat").read_text() == \
        (seed.chain_dir / "params.dat").read_text()

    log.info("its RPC serves at once; 0 connections while the address lacks connect")
    assert joiner.getinfo()["connections"] == 0
    assert joiner.getblockcount() == -1
    refusal = wait_for_log(seed, "refusing peer")
    assert address in refusal and "no connect permission" in refusal, refusal
    wait_for_log(joiner, "no connect permission")
    assert joiner.getinfo()["connections"] == 0
    assert joiner.getpeerinfo() == []
    assert seed.getinfo()["connections"] == 0

    log.info("the admin grants connect,send,receive: it connects by itself and syncs")
    seed.wait_for_confirmation(seed.grant(address, "connect,send,receive"))
    wait_until(lambda: joiner.getinfo()["connections"] >= 1, timeout=30,
               msg="the joiner to connect after the grant")
    seed_address = seed.getaddresses()[0]
    assert peer_addresses(joiner) == {seed_address}
    wait_until(lambda: joiner.getbestblockhash() == seed.getbestblockhash(),
               msg="the joiner to sync the seed's chain")
    assert log_lines(joiner, "sync: height")
    joiner.subscribe("orders")
    assert stream_digest(joiner, "orders") == stream_digest(seed, "orders")

    log.info("stop it; the restart needs only the chain name (seed, ports in its conf)")
    assert joiner.rpc.call("stop") == "chainmill server stopping"
    wait_until(lambda: not joiner.pid_path.exists(), msg="the joiner's pid file to go")
    conf = joiner.conf_path.read_text()
    assert f"addnode=127.0.0.1:{seed.port}" in conf
    more = publish_items(seed, "orders", 40, prefix="while-down-")
    seed.wait_for_confirmation(*more)
    daemons.run("start", "plant", "--datadir", str(datadir), "--daemon")
    joiner.rpc = joiner.client()  # same rpcport, from chainmill.conf
    assert int(joiner.pid_path.read_text()) == Daemons.pid_of(joiner.chain_dir)
    wait_until(lambda: joiner.getinfo()["connections"] >= 1, msg="the restarted joiner "
               "to reconnect to the seed")
    wait_until(lambda: joiner.getbestblockhash() == seed.getbestblockhash(),
               msg="the restarted joiner to catch up")
    assert stream_digest(joiner, "orders") == stream_digest(seed, "orders")
    assert len(stream_digest(joiner, "orders")) == 80


def test_cluster_up_status_down(harness, daemons):
    cdir = harness.base_dir / "cluster"
    for i in (1, 2, 3):
        daemons.track(cdir / f"node{i}" / "line")

    log.info("cluster up 3: returns once all are connected and on one tip")
    out = daemons.run("cluster", "up", "3", "--dir", str(cdir), "--chain", "line",
                      "--param", "target-block-time=0.2", "--param", "setup-first-blocks=5",
                      "--param", "mine-empty-rounds=0", timeout=200).stdout
    assert "Cluster of 3 nodes of chain line is up and synced" in out, out
    for i in (1, 2, 3):
        assert f"chainmill cli line --datadir {cdir / f'node{i}'} getinfo" in out
    assert f"chainmill console line --datadir {cdir / 'node1'}" in out  # offered with its URL

    shown = daemons.run("cluster", "status", "--dir", str(cdir), "--json")
    rows = json.loads(daemons.run("cluster", "status", "--dir", str(cdir), "--json",
                                  "--show-secrets").stdout)
    assert [r["name"] for r in rows] == ["node1", "node2", "node3"]
    assert all(r["rpcpassword"] not in shown.stdout for r in rows)  # only when asked
    assert {r["rpcpassword"] for r in json.loads(shown.stdout)} == {"***"}
    log.info("cluster up with another chain on this cluster fails and changes nothing")
    other = daemons.run("cluster", "up", "3", "--dir", str(cdir), "--chain", "other",
                        check=False)
    assert other.returncode == 1
    assert "runs chain line, not other" in other.stderr, other.stderr
    assert "is up" not in other.stdout
    fields = {"name", "address", "datadir", "chain", "port", "rpcport", "rpcuser",
              "rpcpassword", "pid", "blocks", "connections"}
    for r in rows:
        assert fields <= set(r), fields - set(r)
        assert r["chain"] == "line"
        assert r["connections"] == 2, r
        pid_file = cdir / r["name"] / "line" / "chainmill.pid"
        assert int(pid_file.read_text()) == r["pid"]
        assert pid_alive(r["pid"])
    assert len({r["address"] for r in rows}) == 3
    assert len({r["port"] for r in rows} | {r["rpcport"] for r in rows}) == 6

    clients = [RpcClient("127.0.0.1", r["rpcport"], r["rpcuser"], r["rpcpassword"],
                         chain_name="line", timeout=10) for r in rows]
    try:
        wait_until(lambda: len({c.call("getbestblockhash") for c in clients}) == 1,
                   msg="the cluster's nodes to share one tip")
        for c, r in zip(clients, rows, strict=True):
            peers = {p["handshake"] for p in c.call("getpeerinfo")}
            assert peers == {o["address"] for o in rows if o is not r}

        log.info("an item published on node3 reaches node1")
        c1, c3 = clients[0], clients[2]
        txid = c1.call("create", "stream", "lot", True)
        wait_until(lambda: any(s["name"] == "lot" and s["streamref"]
                               for s in c3.call("liststreams")), msg="the stream on node3")
        c3.call("subscribe", "lot")
        item = c3.call("publish", "lot", "k1", {"text": "from node3"})
        wait_until(lambda: any(i["txid"] == item and i["confirmations"] >= 1
                               for i in c1.call("liststreamitems", "lot")),
                   msg="node3's item confirmed on node1")
        del txid
    finally:
        for c in clients:
            c.close()

    text = daemons.run("cluster", "status", "--dir", str(cdir)).stdout
    assert text.count("2 connections") == 3, text

    log.info("cluster down stops every node and removes every pid file")
    out = daemons.run("cluster", "down", "--dir", str(cdir)).stdout
    assert out.count("stopped") == 3
    for r in rows:
        assert not (cdir / r["name"] / "line" / "chainmill.pid").exists()
        # The pid file goes last thing before the interpreter exits: allow it a moment.
        wait_until(lambda r=r: not pid_alive(r["pid"]), timeout=10,
                   msg=f"{r['name']}'s process to exit")
    stopped = daemons.run("cluster", "status", "--dir", str(cdir), "--json", check=False)
    assert stopped.returncode == 1  # stopped nodes: a failure for scripts and monitoring
    rows = json.loads(stopped.stdout)
    assert [r["pid"] for r in rows] == [None, None, None]
