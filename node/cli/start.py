"""`chainmill start CHAIN`: run a node in the foreground, or with --daemon in the background
(returning once its JSON-RPC port answers)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.handlers
import os
import subprocess
import sys
import time
from pathlib import Path

from config import paths
from config.errors import ConfigError
from config.runtime import load_runtime_config, runtime_defaults

log = logging.getLogger(__name__)

DAEMON_WAIT = 120.0
DAEMON_LOG = "daemon.out"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("start", help="start a node for a chain",
                              description="Start the node of CHAIN (created with `chainmill "
                              "create`). The first start builds the genesis block.")
    p.add_argument("chain", metavar="CHAIN[@HOST:PORT]",
                   help="chain name; CHAIN@HOST:PORT joins the chain through that seed node")
    p.add_argument("--datadir", help="data directory (default ~/.chainmill or $CHAINMILL_DATADIR)")
    p.add_argument("--port", type=int, help="peer-to-peer port")
    p.add_argument("--rpcport", type=int, help="JSON-RPC port")
    p.add_argument("--db-url", dest="db_url", help="SQLAlchemy URL of the chain store "
                   "(default: a SQLite file in the chain directory)")
    p.add_argument("--reindex", action="store_true", help="rebuild the store from its blocks")
    p.add_argument("--checkblocks", type=int, metavar="N",
                   help="check the last N blocks against the store at start (0: all; "
                   "default 6)")
    p.add_argument("--new-wallet", dest="new_wallet", action="store_true",
                   help="create a new wallet (a new address) when the wallet file of a chain "
                   "this node has used is missing or empty")
    p.add_argument("--daemon", action="store_true",
                   help="run in the background; return once the JSON-RPC port answers")
    p.add_argument("-o", "--set", action="append", default=[], metavar="NAME=VALUE",
                   help="any runtime parameter of chainmill.conf, e.g. -o rpcallowip=10.0.0.0/8")


def cli_overrides(args: argparse.Namespace) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"expected NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        out.setdefault(name.strip(), [])
        out[name.strip()].append(value)  # type: ignore[union-attr]
    for name in ("port", "rpcport", "db_url"):
        v = getattr(args, name)
        if v is not None:
            out[name] = v
    if args.reindex:
        out["reindex"] = True
    if args.checkblocks is not None:
        out["checkblocks"] = args.checkblocks
    if args.new_wallet:
        out["newwallet"] = True
    return out


def _setup_logging(chain_dir: Path, foreground: bool) -> None:
    root = logging.getLogger()
    root.setLevel(min(root.level or logging.INFO, logging.INFO))
    fh = logging.handlers.RotatingFileHandler(chain_dir / "debug.log", maxBytes=50_000_000,
                                              backupCount=3)
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(fh)
    console = [h for h in root.handlers if isinstance(h, logging.StreamHandler)
               and not isinstance(h, logging.FileHandler)]
    for h in console:  # details go to debug.log; the console gets warnings and errors
        if h.level < logging.WARNING and root.level > logging.DEBUG:
            h.setLevel(logging.WARNING)
    if foreground and not console:
        sh = logging.StreamHandler(sys.stderr)
        sh.setLevel(logging.WARNING)
        sh.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(sh)


def join(datadir: Path, chain: str, seed: str, ports: dict[str, int | None],
         initprivkey: str | None = None, new_wallet: bool = False) -> None:
    """Fetch the chain's parameters from a seed (first start only), remember the seed, and
    tell the user how to get connect permission when the address lacks it."""
    from node.app import codec_for
    from node.join import ask_seed, install_params, remember_seed
    from node.p2p.network import parse_hostport
    from node.wallet import WALLET_FILE, Wallet

    try:
        host, port = parse_hostport(seed)
    except ValueError:
        raise ConfigError(f"expected CHAIN@HOST:PORT, got {chain}@{seed}") from None
    cdir = paths.chain_dir(datadir, chain)
    first = not (cdir / paths.PARAMS_FILE).exists()
    if first:
        print(f"Retrieving blockchain parameters from the seed node {host}:{port} ...",
              flush=True)
        text, _ = ask_seed(host, port)
        params = install_params(chain, cdir, text)
        print("Blockchain successfully initialized.", flush=True)
    else:
        from config.params import read_params_file

        params = read_params_file(cdir / paths.PARAMS_FILE)
    remember_seed(cdir, host, port, {k: v for k, v in ports.items() if v is not None})
    wallet = Wallet(cdir / WALLET_FILE, codec_for(params))
    if len(wallet) == 0:
        if not (first or new_wallet):
            return  # a used chain without its wallet: the node's start-up check decides
        if initprivkey:  # pre-provisioned: an admin may have granted this key already
            wallet.import_key(wallet.codec.decode_wif(initprivkey))
        else:
            wallet.new_key()
    address = wallet.codec.encode(wallet.default.pubkey_hash)
    _, may_connect = ask_seed(host, port, wallet.default.pubkey_hash)
    if not may_connect:
        print(f"""
Please ask a blockchain admin (or a holder of activate permission) to let this node
connect and transact, with:
chainmill cli {chain} grant {address} connect
chainmill cli {chain} grant {address} connect,send,receive

The node keeps trying to connect until the permission is granted.
""", flush=True)


def run(args: argparse.Namespace) -> int:
    datadir = paths.resolve_datadir(args.datadir)
    name, _, seed = args.chain.partition("@")
    chain = paths.validate_chain_name(name)
    if seed:
        overrides = cli_overrides(args)
        initprivkey = overrides.get("initprivkey")
        join(datadir, chain, seed, {"port": args.port, "rpcport": args.rpcport},
             initprivkey[-1] if isinstance(initprivkey, list) else None, args.new_wallet)
    if args.daemon:
        return _daemonize(args, datadir, chain)
    from node.app import NodeApp, load_chain_files

    cdir, _ = load_chain_files(datadir, chain)
    _setup_logging(cdir, foreground=True)

    def say(line: str) -> None:
        print(line, flush=True)

    app = NodeApp(datadir, chain, cli_overrides(args), announce=say)
    return asyncio.run(app.run())


def _daemonize(args: argparse.Namespace, datadir: Path, chain: str) -> int:
    """Start the node as a detached child and wait until its JSON-RPC port answers."""
    from node.app import load_chain_files
    from node.client import RpcClient, RpcConnectionError, RpcError
    from node.lockfile import ChainLock

    cdir, params = load_chain_files(datadir, chain)
    argv = [sys.executable, "-m", "node.cli.main", "start", chain, "--datadir", str(datadir)]
    for item in args.set:
        argv += ["--set", item]
    for flag, v in (("--port", args.port), ("--rpcport", args.rpcport), ("--db-url", args.db_url)):
        if v is not None:
            argv += [flag, str(v)]
    if args.reindex:
        argv.append("--reindex")
    if args.checkblocks is not None:
        argv += ["--checkblocks", str(args.checkblocks)]
    if args.new_wallet:
        argv.append("--new-wallet")
    # A running node keeps its files: refuse before daemon.out is truncated for a child
    # that would only find the lock taken.
    ChainLock(cdir).check_free()
    out_path = cdir / DAEMON_LOG
    with open(out_path, "wb") as out:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 env=os.environ.copy())
    deadline = time.monotonic() + DAEMON_WAIT
    client = None
    while time.monotonic() < deadline:
        code = child.poll()
        if code is not None:
            tail = out_path.read_text(errors="replace").strip().splitlines()[-5:]
            detail = "\n".join(tail) if tail else "(no output)"
            raise ConfigError(f"the node exited during start-up (code {code}):\n{detail}")
        try:
            if client is None:
                runtime = load_runtime_config(datadir, chain, cli=cli_overrides(args),
                                              defaults=runtime_defaults(params))
                port = runtime.rpcport if runtime.rpcport is not None else params.rpc_port
                client = RpcClient("127.0.0.1", port, runtime.rpcuser, runtime.rpcpassword,
                                   chain_name=chain, timeout=5)
            client.call("getinitstatus")
            for line in out_path.read_text(errors="replace").splitlines():
                print(line)
            print(f"Node started in the background (pid {child.pid}).", flush=True)
            return 0
        except (RpcConnectionError, RpcError, ConfigError, OSError):
            time.sleep(0.1)
    child.terminate()
    raise ConfigError(f"the node did not answer on its JSON-RPC port within {DAEMON_WAIT:.0f} s")
