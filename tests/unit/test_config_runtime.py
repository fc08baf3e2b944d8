"""config.runtime: chainmill.conf files, the merge of all sources, and generated credentials."""

import ipaddress
import os
import random
import re
import stat
from pathlib import Path

import pytest

from config.errors import ConfigError
from config.params import default_params
from config.runtime import (
    RUNTIME_SPECS,
    SETTABLE_RUNTIME,
    RuntimeConfig,
    base58,
    ensure_chain_conf,
    load_runtime_config,
    merge_runtime,
    parse_setruntimeparam,
    read_conf_file,
    runtime_defaults,
    write_conf_file,
)

CREDENTIALS = {"rpcuser": ["chainmillrpc"], "rpcpassword": ["s3cret"]}


def merge(**sources: object) -> RuntimeConfig:
    layers = {"defaults": {}, "global_file": {}, "chain_file": CREDENTIALS, "environ": {},
              "cli": {}}
    layers.update(sources)
    return merge_runtime(**layers)  # type: ignore[arg-type]


def test_runtime_table_has_chainmill_defaults() -> None:
    config = merge()
    assert config.rpcuser == "chainmillrpc"
    assert config.maxshowndata == 16384
    assert config.maxqueryscanitems == 5000
    assert config.hooktimeout == 30.0
    assert config.rpcmaxbody == 32 * 1024 * 1024
    assert config.rpckeepalive is True  # on by default, as in MultiChain 2.3 (issue 11 item 7)
    assert config.rpcssl is False and config.rpcservertimeout == 30
    assert config.db_url is None
    assert config.rpcport is None
    assert "db-url" in RUNTIME_SPECS and RUNTIME_SPECS["db-url"].env_name == "CHAINMILL_DB_URL"


def test_runtime_merge_precedence_cli_env_chain_global_defaults() -> None:
    defaults = {"rpcport": 1000, "maxshowndata": 1, "gen": True, "hooktimeout": 5, "txindex": True}
    global_file = {"rpcport": ["2000"], "maxshowndata": ["2"], "gen": ["0"], "hooktimeout": ["6"]}
    chain_file = {**CREDENTIALS, "rpcport": ["3000"], "maxshowndata": ["3"], "gen": ["1"]}
    environ = {"CHAINMILL_RPCPORT": "4000", "CHAINMILL_MAXSHOWNDATA": "4", "HOME": "/x"}
    cli = {"rpcport": 5000, "maxshowndata": None}
    config = merge(defaults=defaults, global_file=global_file, chain_file=chain_file,
                   environ=environ, cli=cli)
    assert config.rpcport == 5000          # command line
    assert config.maxshowndata == 4        # environment (cli value None = not given)
    assert config.gen is True              # chain file over global file
    assert config.hooktimeout == 6.0       # global file over defaults
    assert config.txindex is True          # defaults


def test_runtime_env_names_replace_dash_with_underscore() -> None:
    config = merge(environ={"CHAINMILL_DB_URL": "sqlite:///x.db"})
    assert config.db_url == "sqlite:///x.db"


def test_runtime_cli_keys_may_use_underscores() -> None:
    assert merge(cli={"db_url": "sqlite://"}).db_url == "sqlite://"


def test_runtime_lists_come_whole_from_the_highest_source() -> None:
    config = merge(global_file={"addnode": ["a:1", "b:2"]},
                   chain_file={**CREDENTIALS, "addnode": ["c:3"]})
    assert config.addnode == ("c:3",)
    assert merge(cli={"rpcallowmethod": "getinfo,Publish"}).rpcallowmethod == ("getinfo", "publish")


@pytest.mark.parametrize("source", ["defaults", "global_file", "chain_file", "cli"])
def test_runtime_unknown_keys_refused_by_name(source: str) -> None:
    value: object = ["1"] if source.endswith("file") else "1"
    layer = {"rpcprot": value}
    if source == "chain_file":
        layer.update(CREDENTIALS)
    with pytest.raises(ConfigError, match="unknown runtime parameter 'rpcprot'"):
        merge(**{source: layer})


def test_runtime_unknown_environment_variables_ignored() -> None:
    merge(environ={"CHAINMILL_DATADIR": "/somewhere", "CHAINMILL_WHATEVER": "1"})


def test_runtime_password_equal_to_user_refused() -> None:
    with pytest.raises(ConfigError, match="rpcpassword must differ from rpcuser"):
        merge(chain_file={"rpcuser": ["same"], "rpcpassword": ["same"]})


def test_runtime_missing_password_refused() -> None:
    with pytest.raises(ConfigError, match="rpcpassword is not set"):
        merge(chain_file={})
    with pytest.raises(ConfigError, match="rpcpassword is not set"):
        merge(chain_file={"rpcpassword": [""]})


@pytest.mark.parametrize("port", ["0", "65536", "-1", "http"])
def test_runtime_ports_must_be_in_range(port: str) -> None:
    with pytest.raises(ConfigError, match="rpcport"):
        merge(cli={"rpcport": port})
    with pytest.raises(ConfigError, match="port"):
        merge(environ={"CHAINMILL_PORT": port})


def test_runtime_errors_say_where_the_value_came_from() -> None:
    with pytest.raises(ConfigError, match="CHAINMILL_MAXSHOWNDATA in the environment"):
        merge(environ={"CHAINMILL_MAXSHOWNDATA": "lots"})


def test_runtime_rpcallowip_accepts_ip_netmask_and_cidr() -> None:
    config = merge(chain_file={**CREDENTIALS,
                               "rpcallowip": ["192.168.1.7", "10.0.0.0/255.0.0.0",
                                              "172.16.0.0/12,fd00::/8"]})
    assert config.rpcallowip == (
        ipaddress.ip_network("192.168.1.7/32"),
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("172.16.0.0/12"),
        ipaddress.ip_network("fd00::/8"),
    )
    assert config.allows_ip("10.9.8.7") and config.allows_ip("fd00::1")
    assert config.allows_ip("127.0.0.1") and config.allows_ip("::1")
    assert not config.allows_ip("192.168.1.8")


@pytest.mark.parametrize("entry", ["10.0.0.300", "host.example", "10.0.0.0/33", "10.0.0.0/255.0.255.0"])
def test_runtime_rpcallowip_refuses_garbage(entry: str) -> None:
    with pytest.raises(ConfigError, match="rpcallowip"):
        merge(cli={"rpcallowip": entry})


def test_runtime_bool_spellings() -> None:
    for text, expected in [("1", True), ("0", False), ("true", True), ("no", False), ("", True)]:
        assert merge(cli={"rpckeepalive": text}).rpckeepalive is expected
    with pytest.raises(ConfigError, match="rpckeepalive"):
        merge(cli={"rpckeepalive": "2"})


def test_runtime_defaults_from_params() -> None:
    params = default_params("c1", {}, random.Random(3))
    config = merge(defaults=runtime_defaults(params))
    assert config.rpcport == params.rpc_port
    assert config.port == params.network_port
    assert config.miningturnover == 0.5
    assert config.lockadminminerounds == 10


def test_runtime_repr_hides_secrets() -> None:
    config = merge(cli={"initprivkey": "VERYSECRET"})
    assert "s3cret" not in repr(config) and "VERYSECRET" not in repr(config)


# ---------------------------------------------------------------- files


def test_conf_file_reads_repeatable_keys_comments_and_spacing(tmp_path: Path) -> None:
    path = tmp_path / "chainmill.conf"
    path.write_text("# comment\n\n rpcuser = u \nrpcpassword=p=q\nrpcallowip=10.0.0.1\n"
                    "rpcallowip=10.0.0.2\n")
    assert read_conf_file(path) == {"rpcuser": ["u"], "rpcpassword": ["p=q"],
                                    "rpcallowip": ["10.0.0.1", "10.0.0.2"]}


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("rpcuser=u\nbogus=1\n", 2, "unknown runtime parameter 'bogus'"),
        ("rpcport=1\n\nrpcport=2\n", 3, "duplicate parameter 'rpcport' \\(first set on line 1\\)"),
        ("rpcport=x\n", 1, "rpcport: expected an integer"),
        ("justaword\n", 1, "expected 'name=value'"),
    ],
)
def test_conf_file_refusals_name_file_and_line(tmp_path: Path, text: str, line: int,
                                               message: str) -> None:
    path = tmp_path / "chainmill.conf"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        read_conf_file(path)
    assert str(info.value).startswith(f"{path}:{line}: ")


def test_conf_file_write_round_trip_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "chainmill.conf"
    write_conf_file(path, {"rpcuser": "u", "rpcpassword": "p", "addnode": ["a:1", "b:2"]})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read_conf_file(path) == {"rpcuser": ["u"], "rpcpassword": ["p"],
                                    "addnode": ["a:1", "b:2"]}
    with pytest.raises(ConfigError, match="unknown"):
        write_conf_file(path, {"nope": "1"})


def test_ensure_chain_conf_writes_mode_0600_credentials(tmp_path: Path) -> None:
    chain = tmp_path / "c1"
    ensure_chain_conf(chain, random.Random(5))
    path = chain / "chainmill.conf"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    values = read_conf_file(path)
    assert values["rpcuser"] == ["chainmillrpc"]
    (password,) = values["rpcpassword"]
    assert 40 <= len(password) <= 44
    assert set(password) <= set("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz")
    assert sorted(p.name for p in chain.iterdir()) == ["chainmill.conf"]


def test_ensure_chain_conf_never_overwrites(tmp_path: Path) -> None:
    chain = tmp_path / "c1"
    chain.mkdir()
    path = chain / "chainmill.conf"
    path.write_text("rpcuser=mine\nrpcpassword=kept\n")
    os.chmod(path, 0o644)
    ensure_chain_conf(chain, random.Random(5))
    assert path.read_text() == "rpcuser=mine\nrpcpassword=kept\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_ensure_chain_conf_passwords_differ_per_seed(tmp_path: Path) -> None:
    ensure_chain_conf(tmp_path / "a", random.Random(1))
    ensure_chain_conf(tmp_path / "b", random.Random(2))
    assert (read_conf_file(tmp_path / "a" / "chainmill.conf")["rpcpassword"]
            != read_conf_file(tmp_path / "b" / "chainmill.conf")["rpcpassword"])


def test_base58_matches_bitcoin_alphabet() -> None:
    assert base58(b"") == ""
    assert base58(b"\0\0\x01") == "112"
    assert base58(b"hello world") == "StV1DL6CwTryKyV"


def test_load_runtime_config_reads_global_and_chain_files(tmp_path: Path) -> None:
    (tmp_path / "chainmill.conf").write_text("maxshowndata=7\nrpcport=1111\n")
    ensure_chain_conf(tmp_path / "c1", random.Random(1))
    with (tmp_path / "c1" / "chainmill.conf").open("a") as handle:
        handle.write("rpcport=2222\n")
    config = load_runtime_config(tmp_path, "c1", environ={}, cli={"gen": "0"})
    assert (config.maxshowndata, config.rpcport, config.gen) == (7, 2222, False)


def test_runtime_metricsallowip_is_a_network_list_named_in_its_errors() -> None:
    config = merge(chain_file={**CREDENTIALS, "metricsallowip": ["10.0.0.0/8,192.0.2.7"]})
    assert config.metricsallowip == (ipaddress.ip_network("10.0.0.0/8"),
                                     ipaddress.ip_network("192.0.2.7/32"))
    assert merge(chain_file=CREDENTIALS).metricsallowip == ()
    with pytest.raises(ConfigError, match="metricsallowip: 'nowhere'"):
        merge(cli={"metricsallowip": "nowhere"})


# -- setruntimeparam --------------------------------------------------------------------------


def test_config_runtime_settable_set_is_multichains():
    assert set(SETTABLE_RUNTIME) == {
        "miningrequirespeers", "mineemptyblocks", "mineblocksondemand", "hideknownopdrops",
        "lockinlinemetadata", "mineemptyrounds", "miningturnover", "lockadminminerounds",
        "maxshowndata", "maxqueryscanitems", "acceptfiltertimeout", "sendfiltertimeout",
        "bantx", "lockblock", "handshakelocal", "autosubscribe"}


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("miningrequirespeers", "true", True), ("hideknownopdrops", 0, False),
    ("lockinlinemetadata", "1", True), ("miningturnover", "0.5", 0.5),
    ("miningturnover", 1, 1.0), ("mineemptyrounds", -1, -1.0), ("maxshowndata", "20", 20),
    ("maxqueryscanitems", 0, 0), ("autosubscribe", "streams,assets", ("streams", "assets")),
    ("autosubscribe", "", ()), ("bantx", "AB" * 32, "ab" * 32), ("lockblock", "", ""),
    ("handshakelocal", " 1abc ", "1abc"),
])
def test_config_runtime_setruntimeparam_accepts(name, value, expected):
    assert parse_setruntimeparam(name, value) == expected


@pytest.mark.parametrize(("name", "value", "message"), [
    ("nosuch", 1, "Unsupported runtime parameter: nosuch"),
    ("rpcpassword", "x", "Unsupported runtime parameter"),
    ("maxshowndata", -1, "Should be non-negative"),
    ("maxshowndata", "ten", "Invalid parameter value type"),
    ("maxshowndata", 1.5, "Invalid parameter value type"),
    ("maxshowndata", True, "Invalid parameter value type"),
    ("miningturnover", 1.5, "Should be in range (0,1)"),
    ("mineemptyrounds", "nan", "Invalid parameter value type"),
    ("miningrequirespeers", "maybe", "should be boolean"),
    ("autosubscribe", "bogus", "Invalid parameter value"),
    ("autosubscribe", "streams,bogus", "Invalid parameter value"),
    ("autosubscribe", ["streams"], "Invalid parameter value type"),
    ("bantx", "00ff", "Invalid txid"), ("lockblock", "zz", "Invalid block hash"),
    ("handshakelocal", "", "Invalid address"), ("handshakelocal", 5, "value type"),
])
def test_config_runtime_setruntimeparam_refuses(name, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_setruntimeparam(name, value)
