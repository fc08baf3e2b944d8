"""``chainmill cli CHAIN [METHOD [PARAMS ...]]``: send JSON-RPC calls like multichain-cli.

With a method: one call, the result on stdout, exit status 0 or derived from the error code.
Without: interactive mode, one call per line (shell-style quoting), until exit/quit/bye/EOF.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from config.errors import ConfigError
from config.params import PROTOCOL_VERSION
from config.paths import chain_dir, cli_history_path, resolve_datadir, validate_chain_name
from node.cli.main import chainmill_version
from node.client import RpcAuthError, RpcClient, RpcConnectionError, RpcError

_EXIT_WORDS = frozenset({"exit", "quit", "bye"})
_WARMUP_CODE = -28

# Parameter positions that name things (streams, keys, addresses, txids, ...): sent as the
# text typed even when it looks like JSON, so that key "1001" stays a string. "list" positions
# also accept a JSON array (several streams or keys). Everything else: parsed if it is JSON.
_STR, _STR_OR_LIST = "str", "list"
_TEXT_POSITIONS: dict[str, dict[int, str]] = {
    "help": {0: _STR},
    "setruntimeparam": {0: _STR},
    "getrawtransaction": {0: _STR},
    "gettxoutdata": {0: _STR},
    "validateaddress": {0: _STR},
    "verifypermission": {0: _STR, 1: _STR},
    "getnewaddress": {0: _STR},
    "create": {0: _STR, 1: _STR},
    "createfrom": {0: _STR, 1: _STR, 2: _STR},
    "getstreaminfo": {0: _STR},
    "publish": {0: _STR, 1: _STR_OR_LIST},
    "publishfrom": {0: _STR, 1: _STR, 2: _STR_OR_LIST},
    "publishmulti": {0: _STR},
    "publishmultifrom": {0: _STR, 1: _STR},
    "subscribe": {0: _STR_OR_LIST},
    "unsubscribe": {0: _STR_OR_LIST},
    "liststreams": {0: _STR_OR_LIST},
    "liststreamitems": {0: _STR},
    "liststreamkeys": {0: _STR, 1: _STR_OR_LIST},
    "liststreamkeyitems": {0: _STR, 1: _STR},
    "liststreampublishers": {0: _STR, 1: _STR_OR_LIST},
    "liststreampublisheritems": {0: _STR, 1: _STR},
    "getstreamitem": {0: _STR, 1: _STR},
    "liststreamtxitems": {0: _STR, 1: _STR_OR_LIST},
    "liststreamqueryitems": {0: _STR},
    "liststreamblockitems": {0: _STR},
    "addnode": {0: _STR, 1: _STR},
    "pause": {0: _STR},
    "resume": {0: _STR},
}


_VALUE_OPTIONS = ("--datadir", "--rpcconnect", "--rpcport", "--rpcuser", "--rpcpassword",
                  "--requestout")
_FLAG_OPTIONS = ("--rpcwait", "-v", "--verbose", "-h", "--help")
_REQUESTOUT = ("stderr", "stdout", "none")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``cli`` subcommand.

    Options may come before or after CHAIN but not after METHOD: everything after METHOD is a
    parameter, even text starting with ``-``. argparse cannot express that, so the words
    after CHAIN are collected whole and split by ``split_call``.
    """
    parser = subparsers.add_parser(
        "cli",
        usage="%(prog)s CHAIN [options] [METHOD [PARAMS ...]]",
        help="send JSON-RPC calls to a chain's node (interactive without METHOD)",
        description=(
            "Call METHOD with PARAMS on the node of CHAIN. A parameter that is a JSON number, "
            "boolean, null, array or object is sent as such, anything else as a string "
            "(names of streams, keys, addresses and txids always as strings). Without METHOD, "
            "read one call per line until exit, quit, bye or end of input."
        ),
    )
    parser.add_argument("--datadir", metavar="DIR",
                        help="data directory (default: $CHAINMILL_DATADIR or ~/.chainmill)")
    parser.add_argument("--rpcconnect", metavar="HOST", default="127.0.0.1",
                        help="node address (default: 127.0.0.1)")
    parser.add_argument("--rpcport", metavar="PORT", type=int,
                        help="JSON-RPC port (default: rpcport of chainmill.conf, "
                             "else default-rpc-port of params.dat)")
    parser.add_argument("--rpcuser", metavar="USER", help="default: from chainmill.conf")
    parser.add_argument("--rpcpassword", metavar="PASSWORD", help="default: from chainmill.conf")
    parser.add_argument("--rpcwait", action="store_true",
                        help="wait until the node is up and has finished starting")
    parser.add_argument("--requestout", choices=_REQUESTOUT, default="none",
                        help="echo each request's JSON (default: none)")
    parser.add_argument("words", nargs=argparse.REMAINDER, metavar="CHAIN [METHOD [PARAMS ...]]",
                        help=argparse.SUPPRESS)
    parser.set_defaults(cli_parser=parser, help=False)


def split_call(args: argparse.Namespace) -> None:
    """Set ``args.chain`` and ``args.call`` from ``args.words``, applying options found
    between CHAIN and METHOD. Raises ConfigError for an unknown or incomplete option."""
    words = list(args.words)
    if not words:
        raise ConfigError("chainmill cli needs a chain name: chainmill cli CHAIN [METHOD [PARAMS ...]]")
    args.chain = words.pop(0)
    while words and words[0].startswith("-") and parse_cli_param(words[0]) == words[0]:
        word = words.pop(0)
        if word == "--":
            break
        name, has_value, value = word.partition("=")
        if name in _FLAG_OPTIONS and not has_value:
            if name == "--rpcwait":
                args.rpcwait = True
            elif name in ("-h", "--help"):
                args.help = True
            else:
                logging.getLogger().setLevel(logging.DEBUG)
            continue
        if name not in _VALUE_OPTIONS:
            raise ConfigError(f"chainmill cli: unknown option {name}")
        if not has_value:
            if not words:
                raise ConfigError(f"chainmill cli: {name} needs a value")
            value = words.pop(0)
        if name == "--rpcport":
            try:
                args.rpcport = int(value)
            except ValueError:
                raise ConfigError(f"chainmill cli: --rpcport expects a number, got {value!r}") from None
        elif name == "--requestout" and value not in _REQUESTOUT:
            raise ConfigError(f"chainmill cli: --requestout is one of {', '.join(_REQUESTOUT)}")
        else:
            setattr(args, name[2:], value)
    args.call = words


# ---------------------------------------------------------------- parameters


def parse_cli_param(text: str) -> Any:
    """A command-line argument as a JSON-RPC parameter.

    JSON numbers, booleans, null, arrays and objects are sent parsed; anything else (including
    a quoted JSON string) is sent as the raw text.
    """
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, str):
        return text
    if isinstance(value, float) and not math.isfinite(value):
        return text
    return value


def parse_cli_params(method: str, texts: Sequence[str]) -> list[Any]:
    """All arguments of ``method``: name positions as text, the rest by parse_cli_param."""
    positions = _TEXT_POSITIONS.get(method.lower(), {})
    params: list[Any] = []
    for index, text in enumerate(texts):
        kind = positions.get(index)
        if kind == _STR:
            params.append(text)
        elif kind == _STR_OR_LIST:
            value = parse_cli_param(text)
            params.append(value if isinstance(value, list) else text)
        else:
            params.append(parse_cli_param(text))
    return params


# ---------------------------------------------------------------- output


def format_result(result: Any) -> str | None:
    """Text to print for a result: strings raw, nothing for null, else JSON indented by 4."""
    if result is None:
        return None
    if isinstance(result, str):
        return result
    return json.dumps(result, indent=4, ensure_ascii=False)


def error_exit_status(code: int) -> int:
    """Process exit status for an RPC error code: |code|, at most 255, and 1 for code 0."""
    return min(abs(code), 255) or 1


class _Session:
    """One chain's client plus what is needed to report on its calls."""

    def __init__(self, args: argparse.Namespace, client: RpcClient, out: TextIO, err: TextIO) -> None:
        self.args = args
        self.client = client
        self.out = out
        self.err = err

    def execute(self, method: str, texts: Sequence[str]) -> int:
        """Run one call, print its result or error; return the exit status."""
        params = parse_cli_params(method, texts)
        self._echo(method, params)
        try:
            result = self._call(method, params)
        except RpcAuthError:
            self.err.write("error: incorrect rpcuser or rpcpassword (authorization failed)\n")
            return 1
        except RpcError as exc:
            self.err.write(f"error code: {exc.code}\nerror message:\n{exc.message}\n")
            return error_exit_status(exc.code)
        except RpcConnectionError as exc:
            self.err.write(f"error: {self._connection_message(exc)}\n")
            return 1
        text = format_result(result)
        if text is not None:
            self.out.write(text + "\n")
        self.out.flush()
        return 0

    def _call(self, method: str, params: list[Any]) -> Any:
        while True:
            try:
                return self.client.call(method, *params)
            except RpcConnectionError as exc:
                if not self.args.rpcwait or not isinstance(exc.__cause__, ConnectionRefusedError):
                    raise
            except RpcError as exc:
                if not self.args.rpcwait or exc.code != _WARMUP_CODE:
                    raise
            time.sleep(0.5)

    def _echo(self, method: str, params: list[Any]) -> None:
        target = {"stderr": self.err, "stdout": self.out}.get(self.args.requestout)
        if target is not None:
            request = {"method": method, "params": params, "chain_name": self.args.chain}
            target.write(json.dumps(request, separators=(",", ":")) + "\n")

    def _connection_message(self, exc: RpcConnectionError) -> str:
        chain = self.args.chain
        if isinstance(exc.__cause__, ConnectionRefusedError):
            return (f"cannot connect to the node of chain {chain} at {exc.host}:{exc.port} "
                    f"\u2014 is it running? (chainmill start {chain})")
        return str(exc)


# ---------------------------------------------------------------- the command


def _client(args: argparse.Namespace, datadir: Path) -> RpcClient:
    explicit = args.rpcpassword is not None and args.rpcport is not None
    if not explicit and not args.call and not chain_dir(datadir, args.chain).is_dir():
        raise ConfigError(
            f"no chain named {args.chain!r} in {datadir}; did you leave out the chain name? "
            "usage: chainmill cli CHAIN [METHOD [PARAMS ...]]"
        )
    return RpcClient.from_datadir(
        args.chain, datadir, args.rpcconnect,
        user=args.rpcuser, password=args.rpcpassword, port=args.rpcport,
    )


def run(args: argparse.Namespace) -> int:
    """One call, or interactive mode when no METHOD is given."""
    split_call(args)
    if args.help:
        args.cli_parser.print_help()
        return 0
    validate_chain_name(args.chain)
    datadir = resolve_datadir(args.datadir)
    with _client(args, datadir) as client:
        session = _Session(args, client, sys.stdout, sys.stderr)
        if args.call:
            method, *texts = args.call
            return session.execute(method, texts)
        return _interactive(session, cli_history_path(datadir, args.chain))


def _interactive(session: _Session, history: Path) -> int:
    chain = session.args.chain
    tty = sys.stdin.isatty()
    readline = _start_history(history) if tty else None
    if tty:
        print(f"chainmill {chainmill_version()} RPC client (latest protocol {PROTOCOL_VERSION})")
        print()
        print("Interactive mode")
        print()
    try:
        while True:
            try:
                line = input(f"{chain}: " if tty else "")
            except EOFError:
                break
            except KeyboardInterrupt:
                print()
                continue
            try:
                words = shlex.split(line)
            except ValueError as exc:
                session.err.write(f"error: {exc}\n")
                continue
            if not words:
                continue
            if words[0].lower() in _EXIT_WORDS:
                break
            session.execute(words[0], words[1:])
    finally:
        if readline is not None:
            with contextlib.suppress(OSError):
                readline.write_history_file(str(history))
                history.chmod(0o600)
    if tty:
        print()
    return 0


def _start_history(history: Path) -> Any:
    """Load readline and the chain's history file; None if readline is not available."""
    try:
        import readline
    except ImportError:
        return None
    with contextlib.suppress(OSError):
        history.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if history.exists():
            readline.read_history_file(str(history))
    readline.set_history_length(1000)
    return readline
