"""``chainmill create``: files, modes, overrides, refusals and what it prints."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from config.params import read_params_file
from config.runtime import read_conf_file
from node.cli.main import chainmill_version, main
from node.client import RpcClient


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_create_writes_params_and_conf_with_private_modes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["create", "c1", "--datadir", str(tmp_path)]) == 0
    chain = tmp_path / "c1"
    assert mode(chain) == 0o700
    assert mode(chain / "params.dat") == 0o600
    assert mode(chain / "chainmill.conf") == 0o600
    params = read_params_file(chain / "params.dat")
    assert params.chain_name == "c1"
    assert not params.locked
    conf = read_conf_file(chain / "chainmill.conf")
    assert conf["rpcuser"] == ["chainmillrpc"]
    assert len(conf["rpcpassword"][0]) >= 40
    assert sorted(p.name for p in chain.iterdir()) == ["chainmill.conf", "params.dat"]

    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"chainmill {chainmill_version()} utilities (latest protocol 20013)"
    assert "Blockchain parameter set was successfully generated." in out
    assert any(str(chain / "params.dat") in line and "before the first start" in line
               for line in out)
    assert out[-1] == f"To start the node: chainmill start c1 --datadir {tmp_path}"


def test_create_refuses_existing_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["create", "c1", "--datadir", str(tmp_path)]) == 0
    before = (tmp_path / "c1" / "params.dat").read_text()
    conf_before = (tmp_path / "c1" / "chainmill.conf").read_text()
    capsys.readouterr()
    assert main(["create", "c1", "--datadir", str(tmp_path), "--param", "mining-diversity=0.1"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: chain 'c1' already exists")
    assert captured.err.count("\n") == 1
    assert (tmp_path / "c1" / "params.dat").read_text() == before
    assert (tmp_path / "c1" / "chainmill.conf").read_text() == conf_before


def test_create_applies_param_overrides(tmp_path: Path) -> None:
    assert main(["create", "c1", "--datadir", str(tmp_path),
                 "--param", "target-block-time=0.5", "--param", "anyone-can-connect=true",
                 "--param", "chain-description=Gear works"]) == 0
    params = read_params_file(tmp_path / "c1" / "params.dat")
    assert params.target_block_time == 0.5
    assert params.anyone_can("connect")
    assert params["chain-description"] == "Gear works"


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("no-such=1", "unknown blockchain parameter 'no-such'"),
        ("genesis-hash=00", "'genesis-hash' is generated"),
        ("mining-diversity=2", "mining-diversity: 2.0 is out of range"),
        ("mining-diversity", "--param expects NAME=VALUE"),
    ],
)
def test_create_refuses_bad_params_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], param: str, message: str
) -> None:
    assert main(["create", "c1", "--datadir", str(tmp_path), "--param", param]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "c1").exists()


def test_create_refuses_bad_chain_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["create", "../escape", "--datadir", str(tmp_path)]) == 1
    assert "invalid chain name" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_create_uses_environment_datadir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHAINMILL_DATADIR", str(tmp_path / "data"))
    assert main(["create", "c2"]) == 0
    assert (tmp_path / "data" / "c2" / "params.dat").exists()
    assert capsys.readouterr().out.splitlines()[-1] == "To start the node: chainmill start c2"


def test_create_output_is_enough_for_a_client(tmp_path: Path) -> None:
    assert main(["create", "c1", "--datadir", str(tmp_path)]) == 0
    client = RpcClient.from_datadir("c1", tmp_path, environ={})
    assert client.port == read_params_file(tmp_path / "c1" / "params.dat").rpc_port
