"""node.client: RpcClient against FakeRpcServer (real HTTP, canned replies) and from_datadir."""

from __future__ import annotations

import base64
import importlib.util
import logging
import random
import socket
import threading
from pathlib import Path

import pytest

from config.errors import ConfigError
from config.params import default_params, write_params_file
from config.runtime import ensure_chain_conf, read_conf_file
from node.client import RpcAuthError, RpcClient, RpcConnectionError, RpcError


def _fake_server_class() -> type:
    """FakeRpcServer from its module, loaded by file path (independent of pytest's sys.path)."""
    path = Path(__file__).with_name("test_client_fakeserver.py")
    spec = importlib.util.spec_from_file_location("chainmill_fake_rpc_server", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FakeRpcServer


FakeRpcServer = _fake_server_class()


def client_for(fake, **kwargs) -> RpcClient:  # noqa: ANN001
    return RpcClient("127.0.0.1", fake.port, fake.user, fake.password, **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_client_call_returns_result_and_sends_envelope() -> None:
    with FakeRpcServer() as fake:
        fake.on("publish", lambda params: "ab" * 32)
        with client_for(fake, chain_name="c1") as client:
            assert client.call("publish", "orders", "PO-1", {"json": {"qty": 5}}) == "ab" * 32
        (request,) = fake.requests
        assert request["method"] == "publish"
        assert request["params"] == ["orders", "PO-1", {"json": {"qty": 5}}]
        assert request["chain_name"] == "c1"
        assert "id" in request


def test_client_call_omits_chain_name_when_unset() -> None:
    with FakeRpcServer() as fake:
        fake.returns("getinfo", {"chainname": "c1"})
        assert client_for(fake).call("getinfo") == {"chainname": "c1"}
        assert "chain_name" not in fake.requests[0]


def test_client_null_result_is_none() -> None:
    with FakeRpcServer() as fake:
        fake.returns("subscribe", None)
        assert client_for(fake).call("subscribe", "orders") is None


@pytest.mark.parametrize(
    ("method", "code", "message", "status"),
    [
        ("liststreamitems", -708, "Stream with this name not found: nope", 500),
        ("create", -32600, "Invalid Request", 400),
    ],
)
def test_client_error_envelopes_raise_rpc_error(method: str, code: int, message: str,
                                               status: int) -> None:
    with FakeRpcServer() as fake:
        fake.fails(method, code, message)
        with pytest.raises(RpcError) as info:
            client_for(fake).call(method, "nope")
    assert (info.value.code, info.value.message, info.value.http_status) == (code, message, status)
    assert not isinstance(info.value, RpcAuthError)


def test_client_unknown_method_404_envelope() -> None:
    with FakeRpcServer() as fake, pytest.raises(RpcError) as info:
        client_for(fake).call("nosuchmethod")
    assert (info.value.code, info.value.http_status) == (-32601, 404)


def test_client_wrong_password_raises_auth_error() -> None:
    with FakeRpcServer() as fake:
        fake.returns("getinfo", {})
        client = RpcClient("127.0.0.1", fake.port, fake.user, "wrong")
        with pytest.raises(RpcAuthError) as info:
            client.call("getinfo")
    assert info.value.code == 0
    assert info.value.message == "incorrect rpcuser or rpcpassword"
    assert info.value.http_status == 401


def test_client_non_json_status_names_http_status() -> None:
    with FakeRpcServer() as fake:
        fake.raw("getinfo", 403, "text/plain", b"Forbidden")
        with pytest.raises(RpcError, match="HTTP 403") as info:
            client_for(fake).call("getinfo")
    assert info.value.http_status == 403


def test_client_sends_basic_auth() -> None:
    with FakeRpcServer(user="alice", password="pa:ss") as fake:
        fake.returns("getblockcount", 7)
        # the fake compares the whole Authorization header with its own encoding
        assert RpcClient("127.0.0.1", fake.port, "alice", "pa:ss").call("getblockcount") == 7


def test_client_batch_returns_results_and_errors_in_order() -> None:
    with FakeRpcServer() as fake:
        fake.returns("getblockcount", 12)
        fake.fails("getstreaminfo", -708, "no such stream")
        fake.on("echo", lambda params: params)
        results = client_for(fake, chain_name="c1").batch(
            [("getblockcount", []), ("getstreaminfo", ["x"]), ("echo", [1, "a"]), ("nope", [])]
        )
        (request,) = fake.requests
    assert isinstance(request, list) and len(request) == 4
    assert all(item["chain_name"] == "c1" for item in request)
    assert results[0] == 12
    assert isinstance(results[1], RpcError) and results[1].code == -708
    assert results[2] == [1, "a"]
    assert isinstance(results[3], RpcError) and results[3].code == -32601


def test_client_batch_empty_sends_nothing() -> None:
    with FakeRpcServer() as fake:
        assert client_for(fake).batch([]) == []
        assert fake.requests == []


def test_client_connection_close_reconnects_each_call() -> None:
    with FakeRpcServer() as fake:
        fake.returns("getblockcount", 1)
        client = client_for(fake)
        for _ in range(3):
            assert client.call("getblockcount") == 1
        assert fake.connections == 3


def test_client_reuses_kept_alive_connection() -> None:
    with FakeRpcServer(keep_alive=True) as fake:
        fake.returns("getblockcount", 1)
        with client_for(fake) as client:
            for _ in range(5):
                assert client.call("getblockcount") == 1
        assert fake.connections == 1
        assert client.call("getblockcount") == 1  # usable after close, on a new connection
        assert fake.connections == 2


def test_client_resends_once_when_server_dropped_idle_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="node.client")
    with FakeRpcServer(keep_alive=True, drop_idle=True) as fake:
        fake.returns("getblockcount", 1)
        with client_for(fake) as client:
            for _ in range(3):
                assert client.call("getblockcount") == 1
        assert len(fake.requests) == 3
        assert fake.connections == 3
    assert caplog.text.count("reconnecting") == 2


def test_client_connection_refused_raises_connection_error() -> None:
    port = free_port()
    with pytest.raises(RpcConnectionError, match=f"127.0.0.1:{port}") as info:
        RpcClient("127.0.0.1", port, "u", "p", timeout=5).call("getinfo")
    assert (info.value.host, info.value.port) == ("127.0.0.1", port)


def test_client_timeout_raises_connection_error() -> None:
    with FakeRpcServer(delay=1.0) as fake:
        fake.returns("getinfo", {})
        with pytest.raises(RpcConnectionError, match="no reply"):
            client_for(fake, timeout=0.2).call("getinfo")


def test_client_is_thread_safe() -> None:
    with FakeRpcServer(keep_alive=True) as fake:
        fake.on("echo", lambda params: params[0])
        client = client_for(fake)
        failures: list[str] = []

        def work(worker: int) -> None:
            for index in range(25):
                value = f"{worker}-{index}"
                if client.call("echo", value) != value:
                    failures.append(value)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        client.close()
    assert failures == []
    assert len(fake.requests) == 200
    assert len({request["id"] for request in fake.requests}) == 200


def test_client_repr_hides_password() -> None:
    assert "secret" not in repr(RpcClient("h", 1, "u", "secret"))


# ---------------------------------------------------------------- from_datadir


def make_chain(datadir: Path, chain: str = "c1") -> Path:
    directory = datadir / chain
    directory.mkdir(parents=True)
    write_params_file(directory / "params.dat", default_params(chain, {}, random.Random(4)))
    ensure_chain_conf(directory, random.Random(4))
    return directory


def test_client_from_datadir_reads_conf_and_params_port(tmp_path: Path) -> None:
    directory = make_chain(tmp_path)
    client = RpcClient.from_datadir("c1", tmp_path, environ={})
    password = read_conf_file(directory / "chainmill.conf")["rpcpassword"][0]
    params = default_params("c1", {}, random.Random(4))
    assert (client.host, client.port, client.user) == ("127.0.0.1", params.rpc_port, "chainmillrpc")
    assert client.chain_name == "c1"
    assert client._headers["Authorization"] == "Basic " + base64.b64encode(
        f"chainmillrpc:{password}".encode()).decode()


def test_client_from_datadir_calls_the_node(tmp_path: Path) -> None:
    directory = make_chain(tmp_path)
    conf = read_conf_file(directory / "chainmill.conf")
    with FakeRpcServer(user=conf["rpcuser"][0], password=conf["rpcpassword"][0]) as fake:
        fake.returns("getblockcount", 3)
        with (directory / "chainmill.conf").open("a") as handle:
            handle.write(f"rpcport={fake.port}\n")
        client = RpcClient.from_datadir("c1", str(tmp_path), environ={})
        assert client.call("getblockcount") == 3
    assert fake.requests[0]["chain_name"] == "c1"


def test_client_from_datadir_uses_environment_datadir(tmp_path: Path) -> None:
    make_chain(tmp_path)
    client = RpcClient.from_datadir("c1", environ={"CHAINMILL_DATADIR": str(tmp_path)})
    assert client.chain_name == "c1"


def test_client_from_datadir_missing_chain_hints(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"no chain named 'c9' in {tmp_path}"):
        RpcClient.from_datadir("c9", tmp_path, environ={})


def test_client_from_datadir_missing_password_refused(tmp_path: Path) -> None:
    directory = make_chain(tmp_path)
    (directory / "chainmill.conf").write_text("rpcuser=someone\n")
    with pytest.raises(ConfigError, match="rpcpassword is not set"):
        RpcClient.from_datadir("c1", tmp_path, environ={})


def test_client_from_datadir_explicit_values_need_no_files(tmp_path: Path) -> None:
    client = RpcClient.from_datadir("c1", tmp_path, user="u", password="p", port=1234, environ={})
    assert (client.user, client.port) == ("u", 1234)
