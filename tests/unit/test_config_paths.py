"""config.paths: where the data directory and chain directories are."""

from pathlib import Path

import pytest

from config.errors import ConfigError
from config.paths import chain_dir, cli_history_path, resolve_datadir, validate_chain_name


def test_datadir_cli_value_wins_over_environment(tmp_path: Path) -> None:
    env = {"CHAINMILL_DATADIR": str(tmp_path / "env")}
    assert resolve_datadir(str(tmp_path / "cli"), env) == tmp_path / "cli"


def test_datadir_environment_used_without_cli_value(tmp_path: Path) -> None:
    env = {"CHAINMILL_DATADIR": str(tmp_path / "env")}
    assert resolve_datadir(None, env) == tmp_path / "env"
    assert resolve_datadir("", env) == tmp_path / "env"


def test_datadir_defaults_to_dot_chainmill_in_home() -> None:
    assert resolve_datadir(None, {}) == Path.home() / ".chainmill"


def test_chain_dir_joins_valid_names(tmp_path: Path) -> None:
    assert chain_dir(tmp_path, "erp-chain_1.test") == tmp_path / "erp-chain_1.test"
    assert cli_history_path(tmp_path, "c1") == tmp_path / ".cli_history" / "c1.log"


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a b", "x" * 65, "ünï", "c1\n"])
def test_chain_name_refuses_unsafe_names(name: str) -> None:
    with pytest.raises(ConfigError, match="invalid chain name"):
        validate_chain_name(name)


def test_chain_name_accepts_64_characters() -> None:
    assert validate_chain_name("a" * 64) == "a" * 64
