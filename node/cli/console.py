"""``chainmill console CHAIN``: the admin console (web explorer and admin API) of a chain's node.

The console is its own process and talks to the node through JSON-RPC with the credentials of
the chain's chainmill.conf (as ``chainmill cli`` does), so it also runs against a node on
another machine. ``chainmill console adduser CHAIN NAME`` adds an admin user.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import ssl
import sys

from config.errors import ConfigError
from config.paths import resolve_datadir, validate_chain_name
from node.client import RpcClient

log = logging.getLogger(__name__)
DEFAULT_PORT = 8480


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``console`` subcommand."""
    parser = subparsers.add_parser(
        "console", help="serve the admin console (web explorer and admin API) of a chain",
        usage="%(prog)s CHAIN [options] | %(prog)s adduser CHAIN NAME",
        description="Serve the web console of CHAIN's node on 127.0.0.1:PORT, or add an "
                    "admin user with: chainmill console adduser CHAIN NAME "
                    "(password from the terminal or the CHAINMILL_CONSOLE_PASSWORD variable).")
    parser.add_argument("words", nargs="+", metavar="CHAIN", help=argparse.SUPPRESS)
    parser.add_argument("--datadir", metavar="DIR",
                        help="data directory (default: $CHAINMILL_DATADIR or ~/.chainmill)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on (default: {DEFAULT_PORT})")
    parser.add_argument("--rpcconnect", metavar="HOST", default="127.0.0.1",
                        help="the node's address (default: 127.0.0.1)")
    parser.add_argument("--rpcport", metavar="PORT", type=int, help="the node's JSON-RPC port")
    parser.add_argument("--tlscert", metavar="PEM", help="serve HTTPS with this certificate")
    parser.add_argument("--tlskey", metavar="PEM", help="the certificate's private key")


def run(args: argparse.Namespace) -> int:
    """Serve the console until interrupted, or add a user."""
    words = list(args.words)
    datadir = resolve_datadir(args.datadir)
    if words[0] == "adduser":
        return _adduser(words[1:], datadir)
    if len(words) != 1:
        raise ConfigError("usage: chainmill console CHAIN [--port P] | "
                          "chainmill console adduser CHAIN NAME")
    chain = validate_chain_name(words[0])
    if not 0 < args.port < 65536:
        raise ConfigError("--port must be between 1 and 65535")
    context = None
    if args.tlscert or args.tlskey:
        if not (args.tlscert and args.tlskey):
            raise ConfigError("--tlscert and --tlskey go together")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(args.tlscert, args.tlskey)
    rpc = RpcClient.from_datadir(chain, datadir, args.rpcconnect, port=args.rpcport, timeout=30)

    from aiohttp import web  # the web stack only for this command

    from node.console.app import build_app
    app = build_app(rpc, chain, datadir, tls=context is not None)
    scheme = "https" if context else "http"
    print(f"chainmill console of chain {chain}: {scheme}://{args.host}:{args.port}/",
          flush=True)
    web.run_app(app, host=args.host, port=args.port, ssl_context=context, print=None,
                access_log=None, handle_signals=True)
    return 0


def _adduser(words: list[str], datadir: os.PathLike[str]) -> int:
    from node.console.users import add_user, users_path
    if len(words) != 2:
        raise ConfigError("usage: chainmill console adduser CHAIN NAME")
    chain, name = validate_chain_name(words[0]), words[1]
    password = os.environ.get("CHAINMILL_CONSOLE_PASSWORD")
    if password is None:
        if not sys.stdin.isatty():
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass(f"password for {name}: ")
            if getpass.getpass("again: ") != password:
                raise ConfigError("the passwords differ")
    path = users_path(datadir, chain)
    if not path.parent.is_dir():
        raise ConfigError(f"no chain named {chain!r} in {datadir}")
    add_user(path, name, password)
    print(f"console user {name} saved in {path}")
    return 0
