"""``chainmill create CHAIN``: write a new chain's params.dat and its chainmill.conf."""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Sequence

from config.errors import ConfigError
from config.params import PROTOCOL_VERSION, default_params, write_params_file
from config.paths import PARAMS_FILE, chain_dir, resolve_datadir, validate_chain_name
from config.runtime import ensure_chain_conf
from node.cli.main import chainmill_version


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``create`` subcommand."""
    parser = subparsers.add_parser(
        "create",
        help="generate the parameter set of a new chain",
        description=(
            "Write DATADIR/CHAIN/params.dat with default and generated parameters (editable "
            "until the chain's first start) and DATADIR/CHAIN/chainmill.conf with fresh RPC "
            "credentials."
        ),
    )
    parser.add_argument("chain", metavar="CHAIN", help="name of the new chain")
    parser.add_argument("--datadir", metavar="DIR",
                        help="data directory (default: $CHAINMILL_DATADIR or ~/.chainmill)")
    parser.add_argument("--param", dest="params", action="append", default=[],
                        metavar="NAME=VALUE",
                        help="set a blockchain parameter, e.g. --param target-block-time=5 "
                             "(repeatable)")


def parse_param_overrides(items: Sequence[str]) -> dict[str, str]:
    """``NAME=VALUE`` texts to a dict; a missing ``=`` or a name given twice is a ConfigError."""
    overrides: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().lstrip("-")
        if not sep or not name:
            raise ConfigError(f"--param expects NAME=VALUE, got {item!r}")
        if name in overrides:
            raise ConfigError(f"--param {name} is given more than once")
        overrides[name] = value
    return overrides


def run(args: argparse.Namespace) -> int:
    """Create the chain's files; refuse if its params.dat exists already."""
    chain = validate_chain_name(args.chain)
    overrides = parse_param_overrides(args.params)
    datadir = resolve_datadir(args.datadir)
    directory = chain_dir(datadir, chain)
    params_file = directory / PARAMS_FILE
    if params_file.exists():
        raise ConfigError(
            f"chain {chain!r} already exists ({params_file}); refusing to overwrite its parameters"
        )
    params = default_params(chain, overrides)  # checked before anything is written

    datadir.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.mkdir(mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    write_params_file(params_file, params)
    ensure_chain_conf(directory)

    start = f"chainmill start {shlex.quote(chain)}"
    if args.datadir:
        start += f" --datadir {shlex.quote(str(args.datadir))}"
    print(f"chainmill {chainmill_version()} utilities (latest protocol {PROTOCOL_VERSION})")
    print()
    print("Blockchain parameter set was successfully generated.")
    print(f"You can edit it in {params_file} before the first start of the chain.")
    print()
    print(f"To start the node: {start}")
    return 0
