"""node.cli.main: subcommand discovery, plugin commands, error and interrupt handling."""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import sys
import types
from collections.abc import Callable
from typing import Any

import pytest

from config.errors import ChainmillError, ConfigError
from node.cli import main as cli_main
from node.client import RpcError


def plugin_module(name: str, command: str, behaviour: Callable[[argparse.Namespace], Any]) -> types.ModuleType:
    """A command module as an upper layer would ship it: add_parser plus run."""
    module = types.ModuleType(name)

    def add_parser(subparsers: argparse._SubParsersAction) -> None:
        parser = subparsers.add_parser(command, help="test command")
        parser.add_argument("word", nargs="?")

    module.add_parser = add_parser  # type: ignore[attr-defined]
    module.run = behaviour  # type: ignore[attr-defined]
    return module


@pytest.fixture
def install_plugins(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Expose modules through the chainmill.commands entry-point group."""

    def install(*modules: types.ModuleType, broken: tuple[str, ...] = ()) -> None:
        entry_points = []
        for module in modules:
            monkeypatch.setitem(sys.modules, module.__name__, module)
            entry_points.append(importlib.metadata.EntryPoint(
                module.__name__.rsplit("_", 1)[-1], module.__name__, cli_main.ENTRY_POINT_GROUP))
        for name in broken:
            entry_points.append(importlib.metadata.EntryPoint(
                name, "chainmill_no_such_plugin_module", cli_main.ENTRY_POINT_GROUP))

        def fake_entry_points(**kwargs: Any) -> list[importlib.metadata.EntryPoint]:
            assert kwargs == {"group": cli_main.ENTRY_POINT_GROUP}
            return entry_points

        monkeypatch.setattr(cli_main.importlib.metadata, "entry_points", fake_entry_points)

    return install


def test_main_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"chainmill {cli_main.chainmill_version()}"
    assert cli_main.chainmill_version() != "unknown"


def test_main_without_command_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main([]) == 2
    assert "usage: chainmill" in capsys.readouterr().err


def test_main_has_builtin_commands() -> None:
    parser = cli_main.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"create", "cli"} <= set(subparsers.choices)


def test_main_usage_error_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["no-such-command"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_main_runs_plugin_command(install_plugins: Callable[..., None]) -> None:
    seen: list[argparse.Namespace] = []
    install_plugins(plugin_module("chainmill_plugin_hello", "hello",
                                  lambda args: seen.append(args) or 7))
    assert cli_main.main(["hello", "world"]) == 7
    assert seen[0].word == "world"


def test_main_verbose_before_or_after_command(install_plugins: Callable[..., None]) -> None:
    seen: list[bool] = []
    install_plugins(plugin_module("chainmill_plugin_hello", "hello",
                                  lambda args: seen.append(args.verbose) or 0))
    try:
        cli_main.main(["-v", "hello"])
        assert logging.getLogger().level == logging.DEBUG
        cli_main.main(["hello", "-v"])
        cli_main.main(["hello"])
    finally:
        logging.getLogger().setLevel(logging.WARNING)
    assert seen == [True, True, False]


def test_main_chainmill_error_is_one_line_exit_1(
    install_plugins: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(args: argparse.Namespace) -> int:
        raise ConfigError("the thing is misconfigured")

    install_plugins(plugin_module("chainmill_plugin_fail", "fail", fail))
    assert cli_main.main(["fail"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "error: the thing is misconfigured\n"
    assert "Traceback" not in captured.err


def test_main_rpc_error_names_its_code(
    install_plugins: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(args: argparse.Namespace) -> int:
        raise RpcError(-708, "Stream with this name not found: orders")

    install_plugins(plugin_module("chainmill_plugin_fail", "fail", fail))
    assert cli_main.main(["fail"]) == 1
    assert capsys.readouterr().err == "error: Stream with this name not found: orders (code -708)\n"


def test_main_keyboard_interrupt_exits_130(install_plugins: Callable[..., None]) -> None:
    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    install_plugins(plugin_module("chainmill_plugin_stop", "stop-me", interrupted))
    assert cli_main.main(["stop-me"]) == 130


def test_main_other_exceptions_are_not_swallowed(install_plugins: Callable[..., None]) -> None:
    def bug(args: argparse.Namespace) -> int:
        raise ZeroDivisionError("a bug")

    install_plugins(plugin_module("chainmill_plugin_bug", "bug", bug))
    with pytest.raises(ZeroDivisionError):
        cli_main.main(["bug"])


def test_main_broken_or_clashing_plugin_is_skipped(
    install_plugins: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    clash = plugin_module("chainmill_plugin_create", "create", lambda args: 99)
    install_plugins(clash, broken=("ghost",))
    with caplog.at_level(logging.WARNING):
        parser = cli_main.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert "ghost" not in subparsers.choices
    assert subparsers.choices["create"].get_default("_run") is not clash.run
    assert "ghost" in caplog.text and "create" in caplog.text


def test_main_error_root_is_chainmill_error() -> None:
    assert issubclass(RpcError, ChainmillError)
