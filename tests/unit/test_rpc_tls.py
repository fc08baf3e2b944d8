"""JSON-RPC over TLS (`rpcssl=1`, issue 15.1): a real server with a self-signed certificate
made in the test, and the real RpcClient checking it (against the certificate as its CA, or
with verification explicitly off)."""

from __future__ import annotations

import asyncio
import ssl

import pytest
from test_rpc_server import CHAIN, PASSWORD, USER, build_table
from tls_support import write_self_signed

from config.errors import ConfigError
from node.client import RpcClient, RpcConnectionError
from node.rpc.dispatch import Dispatcher
from node.rpc.server import RpcSettings, server_ssl_context, start_rpc_server


def serve_and(tmp_path, calls):
    """Start a TLS server, run the blocking `calls(port, cert)` in a thread, return its value."""
    cert, key = write_self_signed(tmp_path)

    async def main():
        settings = RpcSettings(chain_name=CHAIN, user=USER, password=PASSWORD, port=0,
                               ssl_context=server_ssl_context(cert, key))
        server = await start_rpc_server(Dispatcher(build_table(), chain_name=CHAIN), settings)
        try:
            return await asyncio.to_thread(calls, server.port, cert)
        finally:
            await server.close()

    return asyncio.run(main())


def test_rpc_tls_client_verifies_the_certificate_and_calls(tmp_path):
    def calls(port, cert):
        with RpcClient("127.0.0.1", port, USER, PASSWORD, tls=True, cafile=cert) as rpc:
            first = rpc.call("echo", "over", "tls")
            second = rpc.call("echo", 2)  # same keep-alive TLS connection
        with RpcClient("localhost", port, USER, PASSWORD, tls=True, verify=False) as rpc:
            third = rpc.call("echo", 3)
        return first, second, third

    assert serve_and(tmp_path, calls) == (["over", "tls"], [2], [3])


def test_rpc_tls_refuses_untrusted_certificates_and_plain_http(tmp_path):
    def calls(port, cert):
        failures = []
        # The system CAs do not know a self-signed certificate.
        with pytest.raises(RpcConnectionError, match="TLS") as untrusted:
            RpcClient("127.0.0.1", port, USER, PASSWORD, tls=True).call("echo")
        failures.append(untrusted.value)
        # A plain-HTTP client gets no JSON-RPC service from a TLS port.
        with pytest.raises(RpcConnectionError):
            RpcClient("127.0.0.1", port, USER, PASSWORD, timeout=10).call("echo")
        return failures

    (untrusted,) = serve_and(tmp_path, calls)
    assert "certificate" in str(untrusted).lower()


def test_rpc_tls_missing_or_bad_files_refuse_start_with_a_clear_message(tmp_path):
    with pytest.raises(ConfigError, match="rpcsslcertificatechainfile .*server.cert does not exist"):
        server_ssl_context(tmp_path / "server.cert", tmp_path / "server.pem")
    cert, key = write_self_signed(tmp_path)
    key.unlink()
    with pytest.raises(ConfigError, match="rpcsslprivatekeyfile .*server.pem does not exist"):
        server_ssl_context(cert, key)
    key.write_text("not a key\n")
    with pytest.raises(ConfigError, match="cannot be used"):
        server_ssl_context(cert, key)
    context = server_ssl_context(*write_self_signed(tmp_path, "b.cert", "b.pem"))
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_rpc_tls_options_need_tls():
    with pytest.raises(ConfigError, match="tls=True"):
        RpcClient("127.0.0.1", 1, USER, PASSWORD, verify=False)


def test_rpc_tls_connections_count_against_the_caps_before_their_handshake(tmp_path):
    # Connections that never start TLS are held to the same caps and idle deadline as any
    # other: otherwise rpcssl=1 would reopen the descriptor-exhaustion attack (issue 15.2).
    cert, key = write_self_signed(tmp_path)

    async def main():
        settings = RpcSettings(chain_name=CHAIN, user=USER, password=PASSWORD, port=0,
                               ssl_context=server_ssl_context(cert, key),
                               max_connections_per_host=3, idle_timeout=1.0)
        server = await start_rpc_server(Dispatcher(build_table(), chain_name=CHAIN), settings)
        try:
            silent = [await asyncio.open_connection("127.0.0.1", server.port,
                                                    local_addr=("127.0.0.6", 0))
                      for _ in range(6)]

            async def closed(reader) -> bool:
                try:
                    return await asyncio.wait_for(reader.read(), 20) == b""
                except ConnectionResetError:
                    return True
            for reader, _ in silent[:3]:  # evicted for the newer ones
                assert await closed(reader)
            assert server.guard.count("127.0.0.6") == 3
            with RpcClient("127.0.0.1", server.port, USER, PASSWORD, tls=True,
                           cafile=cert) as rpc:
                assert await asyncio.to_thread(rpc.call, "echo", 7) == [7]
            for reader, _ in silent[3:]:  # the idle deadline covers the handshake
                assert await closed(reader)
            assert server.guard.count("127.0.0.6") == 0
            for _, writer in silent:
                writer.close()
        finally:
            await server.close()

    asyncio.run(main())
