"""config.params: the parameter table, params.dat round trips, refusals and the params hash."""

import os
import pickle
import random
import stat
from pathlib import Path

import pytest

from config.errors import ConfigError
from config.params import (
    PARAM_SPECS,
    PROTOCOL_VERSION,
    SECTIONS,
    ChainParams,
    default_params,
    params_hash,
    read_params_file,
    write_params_file,
)


def make(chain: str = "c1", seed: int = 7, **overrides: str) -> ChainParams:
    return default_params(chain, {k.replace("_", "-"): v for k, v in overrides.items()},
                          random.Random(seed))


# ---------------------------------------------------------------- defaults


def test_params_table_covers_every_section() -> None:
    assert {spec.section for spec in PARAM_SPECS.values()} == set(SECTIONS)
    for name in ("chain-protocol", "anyone-can-receive-empty", "admin-consensus-txfilter",
                 "mining-turnover", "native-currency-multiple", "pow-minimum-bits",
                 "max-std-op-drop-size", "genesis-op-return-script", "chain-params-hash"):
        assert name in PARAM_SPECS


def test_params_defaults_carry_chainmill_differences() -> None:
    params = make("erp")
    assert params["mining-diversity"] == 0.75
    assert params.mining_diversity == 0.75
    assert params["chain-description"] == "chainmill erp"
    assert params["protocol-version"] == PROTOCOL_VERSION == 20013
    assert isinstance(params.target_block_time, float)
    assert params.target_block_time == 15.0


def test_params_defaults_match_multichain_elsewhere() -> None:
    params = make()
    assert params["root-stream-name"] == "root"
    assert params.setup_first_blocks == 60
    assert params["mine-empty-rounds"] == 10.0
    assert isinstance(params["mine-empty-rounds"], float)
    assert params["mining-turnover"] == 0.5
    assert params.maximum_block_size == 8_388_608
    assert params.max_std_tx_size == 4_194_304
    assert params.max_std_element_size == 40_000
    assert params.max_std_op_returns_count == 32
    assert not params.anyone_can("connect")
    assert params.anyone_can("receive-empty")


def test_params_admin_consensus_defaults() -> None:
    params = make()
    expected = {"admin": 0.5, "activate": 0.5, "mine": 0.5, "create": 0.0, "issue": 0.0,
                "upgrade": 0.5, "txfilter": 0.5}
    assert {perm: params.admin_consensus(perm) for perm in expected} == expected
    with pytest.raises(ConfigError):
        params.admin_consensus("write")


def test_params_target_block_time_accepts_fractions_down_to_tenth() -> None:
    assert make(target_block_time="0.1").target_block_time == 0.1
    assert make(target_block_time="2.5").target_block_time == 2.5
    assert make(target_block_time="86400").target_block_time == 86400.0
    for bad in ("0.09", "0", "86400.5"):
        with pytest.raises(ConfigError, match="target-block-time"):
            make(target_block_time=bad)


def test_params_generated_values_follow_the_rules() -> None:
    for seed in range(50):
        params = make(seed=seed)
        assert 10000 <= params.network_port <= 65000
        assert params.network_port % 2 == 1
        assert params.rpc_port == params.network_port - 1
        assert len(params.message_start) == 4
        assert params["address-pubkeyhash-version"][:1] == b"\x00"
        assert params["address-scripthash-version"][:1] == b"\x05"
        assert params["private-key-version"][:1] == b"\x80"
        for name in ("address-pubkeyhash-version", "address-scripthash-version",
                     "private-key-version", "address-checksum-value"):
            assert len(params[name]) == 4


def test_params_generation_is_seeded_by_the_rng() -> None:
    assert make(seed=1) == make(seed=1)
    assert make(seed=1) != make(seed=2)


def test_params_genesis_values_start_unset() -> None:
    params = make()
    for name in ("genesis-pubkey", "genesis-version", "genesis-timestamp", "genesis-nbits",
                 "genesis-nonce", "genesis-pubkey-hash", "genesis-hash", "chain-params-hash"):
        assert params[name] is None
    assert not params.locked
    assert params.as_display()["genesis-hash"] is None


def test_params_locked_once_genesis_hash_set() -> None:
    locked = make().replace({"genesis-hash": bytes(range(32))})
    assert locked.locked
    assert locked.as_display()["genesis-hash"] == bytes(range(32)).hex()


def test_params_overrides_are_parsed_per_type() -> None:
    params = make(anyone_can_connect="true", setup_first_blocks="5", mining_diversity="0.3",
                  root_stream_name="", chain_description="Widgets and gears")
    assert params.anyone_can("connect") is True
    assert params.setup_first_blocks == 5
    assert params.mining_diversity == 0.3
    assert params["root-stream-name"] == ""
    assert params["chain-description"] == "Widgets and gears"


def test_params_network_port_override_moves_rpc_port() -> None:
    params = make(default_network_port="7447")
    assert (params.network_port, params.rpc_port) == (7447, 7446)
    params = make(default_network_port="7447", default_rpc_port="8000")
    assert (params.network_port, params.rpc_port) == (7447, 8000)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("no-such-param", "1", "unknown blockchain parameter 'no-such-param'"),
        ("genesis-hash", "00" * 32, "'genesis-hash' is generated"),
        ("network-message-start", "01020304", "'network-message-start' is generated"),
        ("chain-name", "other", "'chain-name' is generated"),
        ("mining-diversity", "1.5", "mining-diversity: 1.5 is out of range"),
        ("mining-diversity", "lots", "mining-diversity: expected a number"),
        ("setup-first-blocks", "1.5", "setup-first-blocks: expected an integer"),
        ("anyone-can-send", "maybe", "anyone-can-send: expected true or false"),
        ("chain-description", "x" * 91, "chain-description: 91 characters is out of range"),
        ("chain-protocol", "bitcoin", "chain-protocol"),
    ],
)
def test_params_overrides_refused(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        default_params("c1", {name: value}, random.Random(1))


def test_params_display_and_compact_names() -> None:
    params = make()
    display = params.as_display()
    compact = params.as_compact()
    assert list(display) == list(PARAM_SPECS)
    assert display["mining-diversity"] == 0.75
    assert compact["miningdiversity"] == 0.75
    assert compact["anyonecanconnect"] is False
    assert isinstance(display["network-message-start"], str)
    assert bytes.fromhex(display["network-message-start"]) == params.message_start


def test_params_display_shows_whole_block_time_as_integer() -> None:
    assert make().as_display()["target-block-time"] == 15
    assert isinstance(make().as_display()["target-block-time"], int)
    assert make(target_block_time="0.5").as_compact()["targetblocktime"] == 0.5
    assert isinstance(make().as_display()["mine-empty-rounds"], float)


def test_params_survive_pickling() -> None:
    params = make()
    assert pickle.loads(pickle.dumps(params)) == params


def test_params_mapping_is_immutable_and_replace_checks() -> None:
    params = make()
    with pytest.raises(TypeError):
        params["mining-diversity"] = 0.1  # type: ignore[index]
    changed = params.replace({"mining-diversity": 0.5})
    assert changed.mining_diversity == 0.5 and params.mining_diversity == 0.75
    with pytest.raises(ConfigError, match="out of range"):
        params.replace({"mining-diversity": 2})
    with pytest.raises(ConfigError, match="unknown"):
        params.replace({"bogus": 1})
    with pytest.raises(ConfigError, match="true or false"):
        params.replace({"anyone-can-send": 1})


def test_params_ports_must_differ() -> None:
    with pytest.raises(ConfigError, match="must differ"):
        make(default_network_port="7000", default_rpc_port="7000")


# ---------------------------------------------------------------- the file


def test_params_file_round_trip_equals(tmp_path: Path) -> None:
    params = make(mining_diversity="0.333333", target_block_time="0.5")
    path = tmp_path / "params.dat"
    write_params_file(path, params)
    assert read_params_file(path) == params
    locked = params.replace({
        "genesis-pubkey": b"\x02" + bytes(32), "genesis-version": 1,
        "genesis-timestamp": 1_700_000_000, "genesis-nbits": 0x207FFFFF, "genesis-nonce": 3,
        "genesis-pubkey-hash": bytes(20), "genesis-op-return-script": b"\x6a\x01\x00",
        "genesis-hash": bytes(range(32)), "chain-params-hash": bytes(32),
    })
    write_params_file(path, locked)
    assert read_params_file(path) == locked


def test_params_file_mode_0600_and_header(tmp_path: Path) -> None:
    path = tmp_path / "params.dat"
    write_params_file(path, make())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    assert "chainmill" in text.splitlines()[0]
    assert "Protocol version: 20013" in text
    assert "editable until the first start" in text
    assert "# Basic chain parameters" in text
    assert "# Global permissions" in text
    assert "mining-diversity = 0.75" in text
    assert "anyone-can-connect = false" in text
    write_params_file(path, make().replace({"genesis-hash": bytes(32)}))
    assert "locked: chain started" in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["params.dat"]


def test_params_file_hand_edited_reads_back(tmp_path: Path) -> None:
    params = make()
    path = tmp_path / "params.dat"
    write_params_file(path, params)
    lines = path.read_text().splitlines()
    edited = []
    for line in lines:
        if line.startswith("mining-diversity"):
            line = "   mining-diversity=0.6       # my own comment"
        elif line.startswith("chain-description"):
            line = "chain-description   =    Gear works chain   "
        elif line.startswith("anyone-can-connect"):
            line = "anyone-can-connect = TRUE"
        elif line.startswith("max-std-op-drop-size"):
            continue  # a deleted line takes its default
        edited.append(line)
    edited.insert(3, "")
    edited.insert(3, "#   a note the operator added")
    path.write_text("\n".join(edited) + "\n")
    back = read_params_file(path)
    assert back.mining_diversity == 0.6
    assert back["chain-description"] == "Gear works chain"
    assert back.anyone_can("connect")
    assert back["max-std-op-drop-size"] == 64
    assert back == params.replace({"mining-diversity": 0.6, "anyone-can-connect": True,
                                   "chain-description": "Gear works chain"})


def _edit_line(path: Path, prefix: str, replacement: str) -> int:
    lines = path.read_text().splitlines()
    for index, line in enumerate(lines):
        if line.startswith(prefix):
            lines[index] = replacement
            path.write_text("\n".join(lines) + "\n")
            return index + 1
    raise AssertionError(prefix)


@pytest.mark.parametrize(
    ("prefix", "replacement", "message"),
    [
        ("chain-is-testnet", "chain-is-testing = false", "unknown blockchain parameter 'chain-is-testing'"),
        ("mining-diversity", "mining-diversity = 1.01", "mining-diversity: 1.01 is out of range"),
        ("target-block-time", "target-block-time = 0.01", "target-block-time: 0.01 is out of range"),
        ("maximum-block-size", "maximum-block-size = big", "maximum-block-size: expected an integer"),
        ("network-message-start", "network-message-start = 0102zz04", "expected hexadecimal"),
        ("network-message-start", "network-message-start = 010203", "3 bytes is out of range"),
        ("setup-first-blocks", "setup-first-blocks 60", "expected 'name = value'"),
        ("default-rpc-port", "default-rpc-port =", "default-rpc-port: a value is required"),
    ],
)
def test_params_file_refusals_name_file_and_line(
    tmp_path: Path, prefix: str, replacement: str, message: str
) -> None:
    path = tmp_path / "params.dat"
    write_params_file(path, make())
    line = _edit_line(path, prefix, replacement)
    with pytest.raises(ConfigError, match=message) as info:
        read_params_file(path)
    assert str(info.value).startswith(f"{path}:{line}: ")


def test_params_file_duplicate_line_refused(tmp_path: Path) -> None:
    path = tmp_path / "params.dat"
    write_params_file(path, make())
    first = _edit_line(path, "mining-diversity", "mining-diversity = 0.5")
    with path.open("a") as handle:
        handle.write("mining-diversity = 0.9\n")
    last = len(path.read_text().splitlines())
    with pytest.raises(ConfigError) as info:
        read_params_file(path)
    assert str(info.value) == (
        f"{path}:{last}: duplicate parameter 'mining-diversity' (first set on line {first})"
    )


def test_params_file_missing_generated_value_refused(tmp_path: Path) -> None:
    path = tmp_path / "params.dat"
    write_params_file(path, make())
    text = "".join(line + "\n" for line in path.read_text().splitlines()
                   if not line.startswith("address-checksum-value"))
    path.write_text(text)
    with pytest.raises(ConfigError, match="missing blockchain parameter 'address-checksum-value'"):
        read_params_file(path)


def test_params_file_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such parameter file"):
        read_params_file(tmp_path / "params.dat")


# ---------------------------------------------------------------- hash


def test_params_hash_is_32_bytes_and_deterministic() -> None:
    digest = params_hash(make())
    assert len(digest) == 32
    assert digest == params_hash(make())


def test_params_hash_ignores_its_own_field_and_genesis_hash() -> None:
    params = make()
    filled = params.replace({"chain-params-hash": bytes(32), "genesis-hash": b"\x01" * 32})
    assert params_hash(filled) == params_hash(params)


def _changed_value(params: ChainParams, name: str) -> object:
    spec = PARAM_SPECS[name]
    value = params[name]
    if spec.type == "bool":
        return not value
    if spec.type == "int":
        return value + 1 if value is not None and value < spec.maximum else spec.minimum
    if spec.type == "float":
        step = 0.1 if spec.maximum - spec.minimum >= 0.2 else 0.000001
        return value + step if value + step <= spec.maximum else value - step
    if spec.type == "hex":
        size = len(value) if value is not None else int(spec.minimum or 1)
        return bytes([0x05]) + bytes(size - 1) if value != bytes([0x05]) + bytes(size - 1) else bytes(size)
    if name == "chain-name":
        return "other"
    return (value or "") + "x"


def test_params_hash_changes_when_any_parameter_changes() -> None:
    params = make()
    base = params_hash(params)
    for name in PARAM_SPECS:
        if name in ("chain-params-hash", "genesis-hash", "protocol-version", "chain-protocol"):
            continue
        if name in ("address-pubkeyhash-version", "address-scripthash-version",
                    "private-key-version"):
            changed = params.replace({name: bytes([params[name][0] ^ 1]) + params[name][1:]})
        elif name == "default-rpc-port":
            changed = params.replace({name: params.rpc_port - 2})
        else:
            changed = params.replace({name: _changed_value(params, name)})
        assert params_hash(changed) != base, name
