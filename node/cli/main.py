"""The ``chainmill`` command: one subcommand per module, plus plugins from entry points.

A subcommand module has ``add_parser(subparsers) -> None`` (adds its parser to the argparse
subparsers action) and ``run(args) -> int``. Built-in modules are listed in
BUILTIN_COMMAND_MODULES; upper layers (triggers/, erp/) add theirs through the entry-point
group ``chainmill.commands`` (each entry point names such a module), so node/ never imports
them.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.metadata
import logging
import sys
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

from config.errors import ChainmillError

log = logging.getLogger(__name__)

BUILTIN_COMMAND_MODULES = (
    "node.cli.create", "node.cli.start", "node.cli.rpc_cli", "node.cli.cluster",
    "node.cli.console",
)
ENTRY_POINT_GROUP = "chainmill.commands"


@functools.cache
def chainmill_version() -> str:
    """The installed chainmill version (from pyproject.toml when run from a source tree)."""
    try:
        return importlib.metadata.version("chainmill")
    except importlib.metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    try:
        with pyproject.open("rb") as handle:
            return str(tomllib.load(handle)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def _builtin_modules() -> Iterator[ModuleType]:
    for name in BUILTIN_COMMAND_MODULES:
        try:
            yield importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # Only a missing subcommand module is tolerated (a partial checkout); a broken one,
            # or one whose own imports fail, still raises.
            if exc.name != name:
                raise
            log.debug("subcommand module %s is not available", name)


def _plugin_modules() -> Iterator[tuple[str, ModuleType]]:
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            module = entry_point.load()
        except Exception as exc:  # a broken plugin must not take the whole CLI down
            log.warning("cannot load chainmill command %r (%s): %s",
                        entry_point.name, entry_point.value, exc)
            continue
        yield entry_point.name, module


def _register(subparsers: argparse._SubParsersAction, module: ModuleType) -> None:
    """Let ``module`` add its parser(s) and attach its ``run`` to each one it added."""
    if not callable(getattr(module, "add_parser", None)) or not callable(getattr(module, "run", None)):
        raise TypeError(f"{module.__name__} lacks add_parser(subparsers) or run(args)")
    before = set(subparsers.choices)
    module.add_parser(subparsers)
    for name in set(subparsers.choices) - before:
        command = subparsers.choices[name]
        command.set_defaults(_run=module.run)
        try:
            # SUPPRESS: a -v given before the subcommand must survive the subparser's defaults
            command.add_argument("-v", "--verbose", action="store_true",
                                 default=argparse.SUPPRESS, help="log debug messages")
        except argparse.ArgumentError:
            pass  # the subcommand defines its own -v


BUILTIN_COMMANDS = frozenset({"create", "start", "cli", "cluster", "console"})


def build_parser(with_plugins: bool = True) -> argparse.ArgumentParser:
    """The ``chainmill`` parser with built-in and (unless told not to) plugin subcommands.

    Plugins are skipped when a built-in command is run: loading them imports their whole
    stacks (SQLAlchemy, lxml), which would add a second to every `chainmill cli` call."""
    parser = argparse.ArgumentParser(
        prog="chainmill",
        description="chainmill: a permissioned blockchain node compatible with MultiChain's API.",
    )
    parser.add_argument("--version", action="version", version=f"chainmill {chainmill_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _builtin_modules():
        _register(subparsers, module)
    for name, module in (_plugin_modules() if with_plugins else ()):
        try:
            _register(subparsers, module)
        except (argparse.ArgumentError, TypeError) as exc:
            log.warning("cannot add chainmill command %r: %s", name, exc)
    return parser


def _configure_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if verbose:
        logging.getLogger().setLevel(logging.DEBUG)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``chainmill`` with ``argv`` (default: the process arguments); return the exit status."""
    words = list(sys.argv[1:] if argv is None else argv)
    first = next((w for w in words if not w.startswith("-")), None)
    parser = build_parser(with_plugins=first not in BUILTIN_COMMANDS)
    try:
        args = parser.parse_args(words)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    _configure_logging(bool(getattr(args, "verbose", False)))
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(run(args) or 0)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except ChainmillError as exc:
        code = getattr(exc, "code", None)
        suffix = f" (code {code})" if isinstance(code, int) and code else ""
        print(f"error: {exc}{suffix}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
