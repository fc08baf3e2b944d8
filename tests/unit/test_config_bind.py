"""config.runtime `bind`: the P2P listener's addresses, as MultiChain's -bind."""

import pytest

from config.errors import ConfigError
from config.runtime import RUNTIME_SPECS, merge_runtime, parse_bind

CREDENTIALS = {"rpcuser": ["chainmillrpc"], "rpcpassword": ["s3cret"]}


def merge(cli: dict):
    return merge_runtime(defaults={}, global_file={}, chain_file=CREDENTIALS, environ={},
                         cli=cli)


def test_config_bind_defaults_to_all_interfaces() -> None:
    assert RUNTIME_SPECS["bind"].default == ()
    assert merge({}).bind == ()


def test_config_bind_accepts_ip_ip_port_and_bracketed_ipv6() -> None:
    assert merge({"bind": "127.0.0.1,10.1.2.3:9000"}).bind == ("127.0.0.1", "10.1.2.3:9000")
    assert parse_bind("127.0.0.1", 8571) == ("127.0.0.1", 8571)
    assert parse_bind("10.1.2.3:9000", 8571) == ("10.1.2.3", 9000)
    assert parse_bind("[::1]:9001", 8571) == ("::1", 9001)
    assert parse_bind("[::1]", 8571) == ("::1", 8571)
    assert parse_bind("::1", 8571) == ("::1", 8571)


@pytest.mark.parametrize("entry", ["localhost", "host.example:80", "10.0.0.300", "1.2.3.4:0",
                                   "1.2.3.4:70000", "1.2.3.4:x", "[::1", "[::1]x"])
def test_config_bind_refuses_garbage_by_name(entry: str) -> None:
    with pytest.raises(ConfigError, match="bind"):
        merge({"bind": [entry]})
