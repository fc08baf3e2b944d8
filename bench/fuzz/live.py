"""The handshake state machine of a real in-process node, driven over loopback TCP.

A node (NodeApp's own composition of store, chain, mempool and wallet on a temporary SQLite
chain) listens with its real `Network`. Each input is a script of steps a client plays on one
connection: a correct HELLO, AUTH (signed over the node's challenge) or READY, mutated ones,
frames of any type with mutated payloads, wrong magics, raw bytes, or an early close. The
contract: whatever the script, no exception escapes the node's connection handler (the loop's
exception handler records any), the node keeps no peer after the client has gone, and a
correct handshake on a fresh connection still succeeds afterwards.
"""

from __future__ import annotations

import asyncio
import random
import socket
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from bench.fuzz.targets import INTERESTING, Target, mutated
from config.params import default_params, write_params_file
from config.runtime import ensure_chain_conf
from ledger.keys import KeyPair
from node.app import NodeApp
from node.p2p import messages as m
from node.p2p.framing import HEADER_SIZE, encode_frame
from node.p2p.network import BOOTSTRAP_MAGIC, Network, handshake_digest

STEPS = ("hello", "hello-mutated", "auth", "auth-mutated", "ready", "frame", "wrong-magic",
         "bootstrap", "raw", "close")


class LiveNode:
    """One node for the whole run, started lazily on its own event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.errors: list[str] = []
        self.loop.set_exception_handler(
            lambda _loop, c: self.errors.append(f"{c.get('message')}: {c.get('exception')!r}"))
        self.dir = tempfile.TemporaryDirectory(prefix="chainmill-fuzz-")
        base = Path(self.dir.name)
        (base / "fz").mkdir()
        write_params_file(base / "fz" / "params.dat",
                          default_params("fz", {}, random.Random(6)))
        ensure_chain_conf(base / "fz")
        self.ctx, _ = NodeApp(base, "fz", {})._open()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.net = Network(self.ctx, port=self.port, bind_host="127.0.0.1")
        self.ctx.network = self.net
        self.loop.run_until_complete(self.net.start())
        self.key: KeyPair = self.ctx.wallet.default
        self.magic = bytes(self.ctx.params["network-message-start"])
        self.chain_id = self.ctx.chain.chain_id
        self.genesis = bytes(self.ctx.params["genesis-hash"])

    def hello(self) -> bytes:
        return m.Hello(m.PROTOCOL, self.chain_id, self.genesis, -1, bytes(32), 0,
                       bytes(32)).encode()

    async def _read(self, reader: asyncio.StreamReader, got: dict[str, Any]) -> None:
        """Read the node's frames (with a short timeout), noting its HELLO challenge."""
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(HEADER_SIZE), 0.05)
                n = int.from_bytes(head[5:9], "little")
                payload = await asyncio.wait_for(reader.readexactly(n), 0.5)
                if head[4] == m.Msg.HELLO and len(payload) == 4 + 32 * 4 + 4 + 2:
                    got["challenge"] = m.Hello.decode(payload).challenge
                got.setdefault("types", []).append(head[4])
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            return

    async def play(self, script: list[tuple[str, bytes, int]]) -> dict[str, Any]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        got: dict[str, Any] = {}
        try:
            for step, blob, kind in script:
                frame = self._frame(step, blob, kind, got)
                if frame is None:
                    break
                writer.write(frame)
                await writer.drain()
                await self._read(reader, got)
        except ConnectionError:
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass
        return got

    def _frame(self, step: str, blob: bytes, kind: int, got: dict[str, Any]) -> bytes | None:
        if step == "close":
            return None
        if step == "hello":
            return encode_frame(self.magic, m.Msg.HELLO, self.hello())
        if step == "hello-mutated":
            return encode_frame(self.magic, m.Msg.HELLO, blob)
        if step == "auth":
            challenge = got.get("challenge", bytes(32))
            sig = self.key.sign(handshake_digest(self.chain_id, challenge, self.key.pubkey))
            return encode_frame(self.magic, m.Msg.AUTH, m.encode_auth(self.key.pubkey, sig))
        if step == "auth-mutated":
            return encode_frame(self.magic, m.Msg.AUTH, blob)
        if step == "ready":
            return encode_frame(self.magic, m.Msg.READY, b"")
        if step == "frame":
            return encode_frame(self.magic, kind, blob)
        if step == "wrong-magic":
            return encode_frame(bytes((kind, 1, 2, 3)), m.Msg.HELLO, self.hello())
        if step == "bootstrap":
            return encode_frame(BOOTSTRAP_MAGIC, kind, blob)
        return blob  # raw bytes, framing and all

    async def settle(self) -> None:
        """Wait until the node has dropped every peer of the finished connection."""
        for _ in range(200):
            if not self.net.peers:
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"{len(self.net.peers)} peers left after the client closed")


_node: LiveNode | None = None


def node() -> LiveNode:
    global _node  # noqa: PLW0603 - one live node per fuzz run, started on first use
    if _node is None:
        _node = LiveNode()
    return _node


@st.composite
def scripts(draw: st.DrawFn) -> list[tuple[str, bytes, int]]:
    from bench.fuzz import corpus

    seeds = [raw for _, raw in corpus.handshake_seeds()] + corpus.tx_seeds()
    steps = draw(st.lists(st.sampled_from(STEPS), min_size=1, max_size=6))
    return [(s, draw(st.one_of(mutated(seeds), st.binary(max_size=64))),
             draw(st.sampled_from([*range(1, 16), *INTERESTING]))) for s in steps]


def check_live(script: list[tuple[str, bytes, int]]) -> None:
    live = node()
    live.loop.run_until_complete(live.play(script))
    live.loop.run_until_complete(live.settle())
    if live.errors:
        errors, live.errors[:] = list(live.errors), []
        raise AssertionError(f"exception escaped the node: {errors[0]}")
    if any(step == "close" for step, _, _ in script):
        return
    # A script that misbehaved after a correct AUTH got the client's key banned, which is the
    # node doing its job; the check here is that a well-behaved peer can still connect.
    live.net.bans.clear()
    got = live.loop.run_until_complete(
        live.play([("hello", b"", 0), ("auth", b"", 0), ("ready", b"", 0)]))
    live.loop.run_until_complete(live.settle())
    if m.Msg.READY not in got.get("types", []):
        raise AssertionError(f"a correct handshake failed afterwards (got {got.get('types')})")


TARGET = Target("handshake-live", scripts(), check_live,
                "the P2P handshake state machine of a real node over TCP")
