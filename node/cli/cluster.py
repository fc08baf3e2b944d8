"""`chainmill cluster up|status|down`: several local nodes of one chain with one command.

`up N` creates a chain on the first node, starts N-1 more that join through it, grants them
connect, send, receive and mine, and returns once all are connected and on the same tip.
Node processes are ordinary `chainmill start --daemon` nodes, one data directory each.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from config import paths
from config.errors import ConfigError

CLUSTER_FILE = "cluster.json"
DEFAULT_CHAIN = "chainmill"
WAIT = 180.0
GRANTS = "connect,send,receive,mine"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("cluster", help="run several local nodes of one chain",
                              description=__doc__)
    sub = p.add_subparsers(dest="action", required=True)
    up = sub.add_parser("up", help="create (or restart) a cluster of N local nodes")
    up.add_argument("n", type=int, metavar="N", help="number of nodes (1 to 16)")
    up.add_argument("--dir", help="cluster directory (default: DATADIR/cluster)")
    up.add_argument("--chain", default=None,
                    help="chain name (default: chainmill, or the existing cluster's chain)")
    up.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="chain parameter for the new chain, e.g. target-block-time=1")
    st = sub.add_parser("status", help="show the cluster's nodes")
    st.add_argument("--dir", help="cluster directory")
    st.add_argument("--json", action="store_true", help="print a JSON list")
    st.add_argument("--show-secrets", action="store_true",
                    help="include the nodes' RPC passwords (hidden by default)")
    dn = sub.add_parser("down", help="stop the cluster's nodes")
    dn.add_argument("--dir", help="cluster directory")


def _dir(args: argparse.Namespace) -> Path:
    if args.dir:
        return Path(args.dir).expanduser().resolve()
    return paths.resolve_datadir(None) / "cluster"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chainmill(argv: list[str]) -> str:
    proc = subprocess.run([sys.executable, "-m", "node.cli.main", *argv], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=WAIT)
    if proc.returncode != 0:
        raise ConfigError(f"`chainmill {' '.join(argv[:2])}` failed: "
                          f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return proc.stdout


def _client(node: dict) -> Any:
    from node.client import RpcClient

    return RpcClient.from_datadir(node["chain"], node["datadir"], port=node["rpcport"],
                                  timeout=10)


def _load(cdir: Path) -> list[dict]:
    f = cdir / CLUSTER_FILE
    if not f.exists():
        raise ConfigError(f"no cluster in {cdir} (start one with `chainmill cluster up N`)")
    return json.loads(f.read_text())["nodes"]


def _pid(node: dict) -> int | None:
    try:
        pid = int((Path(node["datadir"]) / node["chain"] / "chainmill.pid").read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def _wait_converged(nodes: list[dict], deadline: float) -> None:
    from node.client import RpcConnectionError, RpcError

    last = ""
    while time.monotonic() < deadline:
        try:
            infos = [_client(n).call("getinfo") for n in nodes]
            tips = {_client(n).call("getbestblockhash") for n in nodes}
            # Full mesh: every node connected to every other one, not merely to someone.
            if len(tips) == 1 and all(i["connections"] >= len(nodes) - 1 for i in infos):
                return
            last = f"tips {len(tips)}, connections {[i['connections'] for i in infos]}"
        except (RpcConnectionError, RpcError, ConfigError) as e:
            last = str(e)
        time.sleep(0.2)
    raise ConfigError(f"the cluster did not converge in {WAIT:.0f} s ({last})")


def _mesh(nodes: list[dict]) -> None:
    """Connect every node to every earlier one (node1 is already everyone's seed), now and,
    through chainmill.conf, on later starts: losing one node does not split the rest."""
    from config.runtime import read_conf_file, write_conf_file

    for i, n in enumerate(nodes):
        peers = [f"127.0.0.1:{m['port']}" for m in nodes[1:i]]
        if not peers:
            continue
        conf = paths.chain_conf_path(n["datadir"], n["chain"])
        values = read_conf_file(conf)
        known = values.setdefault("addnode", [])
        client = _client(n)
        for p in peers:
            if p not in known:
                known.append(p)
                client.call("addnode", p, "add")
        write_conf_file(conf, values)


def up(args: argparse.Namespace) -> int:
    if not 1 <= args.n <= 16:
        raise ConfigError("N must be between 1 and 16")
    cdir = _dir(args)
    chain = paths.validate_chain_name(args.chain or DEFAULT_CHAIN)
    deadline = time.monotonic() + WAIT
    if (cdir / CLUSTER_FILE).exists():
        nodes = _load(cdir)
        existing = nodes[0]["chain"] if nodes else chain
        if args.chain is not None and existing != chain:
            raise ConfigError(f"the cluster in {cdir} runs chain {existing}, not {chain}; "
                              f"use `chainmill cluster up {len(nodes)}` for it, another --dir "
                              "for a new cluster, or `chainmill cluster down` and remove it")
        chain = existing
        if len(nodes) != args.n:
            raise ConfigError(f"the cluster in {cdir} has {len(nodes)} nodes, not {args.n}; "
                              "use another --dir, or `chainmill cluster down` and remove it")
        stopped = [n for n in nodes if not _pid(n)]
        if stopped:
            print(f"Starting {len(stopped)} stopped node(s) of the cluster in {cdir}", flush=True)
        for n in stopped:
            _chainmill(["start", n["chain"], "--datadir", n["datadir"], "--daemon"])
    else:
        cdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        nodes = []
        for i in range(1, args.n + 1):
            nodes.append({"name": f"node{i}", "datadir": str(cdir / f"node{i}"), "chain": chain,
                          "port": free_port(), "rpcport": free_port()})
        first = nodes[0]
        params = [f"default-network-port={first['port']}", f"default-rpc-port={first['rpcport']}"]
        argv = ["create", chain, "--datadir", first["datadir"]]
        for p in params + list(args.param):
            argv += ["--param", p]
        _chainmill(argv)
        _chainmill(["start", chain, "--datadir", first["datadir"], "--daemon"])
        print(f"node1 created chain {chain}", flush=True)
        admin = _client(first)
        for n in nodes[1:]:
            _chainmill(["start", f"{chain}@127.0.0.1:{first['port']}", "--datadir",
                        n["datadir"], "--port", str(n["port"]), "--rpcport", str(n["rpcport"]),
                        "--daemon"])
            address = _client(n).call("getaddresses")[0]
            admin.call("grant", address, GRANTS)
            print(f"{n['name']} joined as {address}", flush=True)
        _mesh(nodes)
        (cdir / CLUSTER_FILE).write_text(json.dumps({"nodes": nodes}, indent=2))
    _wait_converged(nodes, deadline)
    print(f"\nCluster of {len(nodes)} nodes of chain {chain} is up and synced:", flush=True)
    for n in nodes:
        print(f"  {n['name']}: port {n['port']}, rpcport {n['rpcport']}:  chainmill cli "
              f"{n['chain']} --datadir {n['datadir']} getinfo")
    print(f"Admin console of node1 (then open http://127.0.0.1:8480/):  chainmill console "
          f"{nodes[0]['chain']} --datadir {nodes[0]['datadir']}", flush=True)
    return 0


def status(args: argparse.Namespace) -> int:
    from node.client import RpcConnectionError, RpcError

    rows = []
    for n in _load(_dir(args)):
        conf = paths.chain_conf_path(n["datadir"], n["chain"])
        from config.runtime import read_conf_file

        values = read_conf_file(conf) if conf.exists() else {}
        row = dict(n)
        row.update({"rpcuser": values.get("rpcuser", [""])[0],
                    "rpcpassword": values.get("rpcpassword", [""])[0],
                    "pid": _pid(n), "address": None, "blocks": None, "connections": None})
        if row["pid"]:
            try:
                c = _client(n)
                info = c.call("getinfo")
                row.update({"address": c.call("getaddresses")[0], "blocks": info["blocks"],
                            "connections": info["connections"]})
            except (RpcConnectionError, RpcError, ConfigError):
                pass
        if not getattr(args, "show_secrets", False):
            row["rpcpassword"] = "***" if row["rpcpassword"] else ""
        rows.append(row)
    # Not all nodes up and answering is a failure, for scripts and monitoring alike.
    down = [r["name"] for r in rows if not r["pid"] or r["blocks"] is None]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 1 if down else 0
    for r in rows:
        if not r["pid"]:
            state = "stopped"
        elif r["blocks"] is None:
            state = f"pid {r['pid']}, not answering RPC"
        else:
            state = f"pid {r['pid']}, height {r['blocks']}, {r['connections']} connections"
        print(f"{r['name']}: {r['chain']} port {r['port']} rpcport {r['rpcport']} "
              f"{r['address'] or ''} ({state})")
    if down:
        print(f"{len(down)} of {len(rows)} node(s) not running: {', '.join(down)} "
              "(`chainmill cluster up N` starts them)", file=sys.stderr)
    return 1 if down else 0


def down(args: argparse.Namespace) -> int:
    from node.client import RpcConnectionError, RpcError

    nodes = _load(_dir(args))
    for n in nodes:
        if _pid(n) is None:
            continue
        try:
            _client(n).call("stop")
        except (RpcConnectionError, RpcError, ConfigError):
            pid = _pid(n)
            if pid:
                os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    for n in nodes:
        while _pid(n) and time.monotonic() < deadline:
            time.sleep(0.1)
        pid = _pid(n)
        if pid:
            os.kill(pid, signal.SIGKILL)
        print(f"{n['name']} stopped", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    return {"up": up, "status": status, "down": down}[args.action](args)
