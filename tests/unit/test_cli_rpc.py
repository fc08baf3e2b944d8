"""``chainmill cli``: argument typing, output, error reporting and interactive mode.

Calls go to FakeRpcServer (a stand-in endpoint, real HTTP on 127.0.0.1) through a chain
directory made by ``chainmill create`` whose chainmill.conf points at the fake's port.
"""

from __future__ import annotations

import importlib.util
import io
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config.runtime import read_conf_file
from node.cli.main import main
from node.cli.rpc_cli import error_exit_status, format_result, parse_cli_param, parse_cli_params


def _fake_server_class() -> type:
    """FakeRpcServer from its module, loaded by file path (independent of pytest's sys.path)."""
    path = Path(__file__).with_name("test_client_fakeserver.py")
    spec = importlib.util.spec_from_file_location("chainmill_fake_rpc_server", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FakeRpcServer


FakeRpcServer = _fake_server_class()


@pytest.fixture
def chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A created chain c1 in tmp_path; returns the data directory."""
    assert main(["create", "c1", "--datadir", str(tmp_path)]) == 0
    capsys.readouterr()
    return tmp_path


@pytest.fixture
def fake(chain: Path) -> Iterator[Any]:
    """A FakeRpcServer with c1's credentials, its port written into c1's chainmill.conf."""
    conf_path = chain / "c1" / "chainmill.conf"
    conf = read_conf_file(conf_path)
    with FakeRpcServer(user=conf["rpcuser"][0], password=conf["rpcpassword"][0]) as server:
        with conf_path.open("a") as handle:
            handle.write(f"rpcport={server.port}\n")
        yield server


def cli(datadir: Path, *words: str) -> int:
    return main(["cli", "c1", "--datadir", str(datadir), *words])


# ---------------------------------------------------------------- parameter typing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5", 5),
        ("-1", -1),
        ("2.5", 2.5),
        ("true", True),
        ("false", False),
        ("null", None),
        ('{"json":{"a":1}}', {"json": {"a": 1}}),
        ('["a","b"]', ["a", "b"]),
        ("orders", "orders"),
        ('"quoted"', '"quoted"'),
        ("007", "007"),
        ("NaN", "NaN"),
        ("1e999", "1e999"),
        ("", ""),
        ("{not json", "{not json"),
    ],
)
def test_cli_param_parsed_when_json_value(text: str, expected: object) -> None:
    assert parse_cli_param(text) == expected
    assert type(parse_cli_param(text)) is type(expected)


def test_cli_params_keep_names_and_keys_as_strings() -> None:
    assert parse_cli_params("publish", ["2024", "1001", '{"json":{"a":1}}']) == [
        "2024", "1001", {"json": {"a": 1}}]
    assert parse_cli_params("publish", ["orders", '["k1","k2"]', "cafe"]) == [
        "orders", ["k1", "k2"], "cafe"]
    assert parse_cli_params("liststreamkeyitems", ["orders", "42", "true", "5"]) == [
        "orders", "42", True, 5]
    assert parse_cli_params("getblock", ["5"]) == [5]
    assert parse_cli_params("liststreamitems", ["orders", "false", "10", "-5"]) == [
        "orders", False, 10, -5]


def test_cli_format_result() -> None:
    assert format_result(None) is None
    assert format_result("abc") == "abc"
    assert format_result(5) == "5"
    assert format_result({"a": [1]}) == '{\n    "a": [\n        1\n    ]\n}'


@pytest.mark.parametrize(("code", "status"), [(-708, 255), (-8, 8), (-1, 1), (0, 1), (-32601, 255)])
def test_cli_error_exit_status(code: int, status: int) -> None:
    assert error_exit_status(code) == status


# ---------------------------------------------------------------- against the fake node


def test_cli_prints_results_by_type(fake: Any, chain: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    fake.returns("getblockcount", 5)
    fake.returns("getbestblockhash", "ab" * 32)
    fake.returns("subscribe", None)
    fake.returns("getinfo", {"chainname": "c1", "blocks": 5})
    assert cli(chain, "getblockcount") == 0
    assert capsys.readouterr().out == "5\n"
    assert cli(chain, "getbestblockhash") == 0
    assert capsys.readouterr().out == "ab" * 32 + "\n"
    assert cli(chain, "subscribe", "orders") == 0
    assert capsys.readouterr().out == ""
    assert cli(chain, "getinfo") == 0
    assert capsys.readouterr().out == '{\n    "chainname": "c1",\n    "blocks": 5\n}\n'


def test_cli_sends_typed_params_and_chain_name(fake: Any, chain: Path) -> None:
    fake.on("publish", lambda params: "ff" * 32)
    assert cli(chain, "publish", "stream1", "key1", '{"json":{"a":1}}') == 0
    request = fake.requests[-1]
    assert request["method"] == "publish"
    assert request["params"] == ["stream1", "key1", {"json": {"a": 1}}]
    assert request["chain_name"] == "c1"


def test_cli_error_prints_code_and_message(fake: Any, chain: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    fake.fails("liststreamitems", -708, "Stream with this name not found: nope")
    assert cli(chain, "liststreamitems", "nope") == 255
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "error code: -708\nerror message:\nStream with this name not found: nope\n"
    fake.fails("getblock", -8, "Block height out of range")
    assert cli(chain, "getblock", "99") == 8


def test_cli_unknown_method_reports_32601(fake: Any, chain: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(chain, "nosuchmethod") == 255
    assert capsys.readouterr().err.startswith("error code: -32601\n")


def test_cli_wrong_password_exit_1(fake: Any, chain: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    fake.returns("getinfo", {})
    assert cli(chain, "--rpcpassword", "wrong", "getinfo") == 1
    assert "incorrect rpcuser or rpcpassword" in capsys.readouterr().err


def test_cli_node_not_running_says_so(chain: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert cli(chain, "--rpcport", str(port), "getinfo") == 1
    assert capsys.readouterr().err == (
        f"error: cannot connect to the node of chain c1 at 127.0.0.1:{port} "
        "\u2014 is it running? (chainmill start c1)\n"
    )


def test_cli_options_before_or_after_chain(fake: Any, chain: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    fake.returns("getblockcount", 1)
    assert main(["cli", "--datadir", str(chain), "c1", "getblockcount"]) == 0
    assert main(["cli", "c1", f"--datadir={chain}", "--rpcconnect", "127.0.0.1",
                 "getblockcount"]) == 0
    assert capsys.readouterr().out == "1\n1\n"


def test_cli_explicit_credentials_need_no_chain_files(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    with FakeRpcServer(user="u", password="p") as server:
        server.returns("getblockcount", 9)
        assert main(["cli", "c1", "--datadir", str(tmp_path), "--rpcuser", "u",
                     "--rpcpassword", "p", "--rpcport", str(server.port), "getblockcount"]) == 0
    assert capsys.readouterr().out == "9\n"


def test_cli_words_after_method_are_params(fake: Any, chain: Path) -> None:
    fake.on("liststreamkeyitems", lambda params: [])
    assert cli(chain, "liststreamkeyitems", "orders", "--rpcport", "-5") == 0
    assert fake.requests[-1]["params"] == ["orders", "--rpcport", -5]


def test_cli_missing_chain_hints_at_usage(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cli", "getinfo", "--datadir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no chain named 'getinfo'")
    assert "chainmill cli CHAIN" in err


def test_cli_unknown_option_refused(chain: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(chain, "--rpcprot", "5", "getinfo") == 1
    assert capsys.readouterr().err == "error: chainmill cli: unknown option --rpcprot\n"


def test_cli_request_echo(fake: Any, chain: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake.returns("getblockcount", 2)
    assert cli(chain, "--requestout", "stderr", "getblockcount") == 0
    assert capsys.readouterr().err == '{"method":"getblockcount","params":[],"chain_name":"c1"}\n'


# ---------------------------------------------------------------- interactive mode


class TtyInput(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_cli_interactive_reads_calls_from_a_pipe(
    fake: Any, chain: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.returns("getblockcount", 4)
    fake.on("publish", lambda params: "txid")
    fake.fails("getblock", -8, "Block height out of range")
    script = ("getblockcount\n"
              "\n"
              "publish s k1 '{\"json\":{\"a\":1}}'\n"
              "getblock 99\n"
              "broken 'quote\n"
              "quit\n"
              "getblockcount\n")
    monkeypatch.setattr("sys.stdin", io.StringIO(script))
    assert cli(chain) == 0
    captured = capsys.readouterr()
    assert captured.out == "4\ntxid\n"
    assert "error code: -8" in captured.err
    assert "No closing quotation" in captured.err
    assert [r["method"] for r in fake.requests] == ["getblockcount", "publish", "getblock"]
    assert fake.requests[1]["params"] == ["s", "k1", {"json": {"a": 1}}]


def test_cli_interactive_ends_on_eof(fake: Any, chain: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    fake.returns("getblockcount", 4)
    monkeypatch.setattr("sys.stdin", io.StringIO("getblockcount"))
    assert cli(chain) == 0
    assert capsys.readouterr().out == "4\n"


def test_cli_interactive_terminal_banner_prompt_and_history(
    fake: Any, chain: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("readline")
    fake.returns("getblockcount", 4)
    monkeypatch.setattr("sys.stdin", TtyInput("getblockcount\nbye\n"))
    assert cli(chain) == 0
    out = capsys.readouterr().out
    assert "Interactive mode" in out
    assert "c1: 4" in out
    history = chain / ".cli_history" / "c1.log"
    assert history.exists()
    assert stat.S_IMODE(os.stat(history).st_mode) == 0o600
