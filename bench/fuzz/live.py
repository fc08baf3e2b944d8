"""The handshake state machine of a real in-process node, driven over loopback TCP.

A node (NodeApp's own composition of store, chain, mempool and wallet on a temporary SQLite
chain) listens with its real `Network`. Each input is a script of steps a client plays on one
connection: garbage before the key exchange (raw bytes, frames of any type, wrong and bootstrap
magics), a correct Noise XX key exchange or one whose first or third message is mutated, then
sealed HELLO, AUTH (signed over this session's handshake hash) and READY messages, correct or
mutated, sealed messages of any type, correct records with their bytes mutated, or an early
close. The contract: whatever the script, no exception escapes the node's connection handler
(the loop's exception handler records any), the node keeps no peer after the client has gone,
and a correct full handshake on a fresh connection still succeeds afterwards.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import tempfile
from pathlib import Path

from hypothesis import strategies as st

from bench.fuzz.targets import INTERESTING, Op, Target, apply_ops, havoc, mutated
from config.params import default_params, write_params_file
from config.runtime import ensure_chain_conf
from ledger.keys import KeyPair
from node.app import NodeApp
from node.p2p import messages as m
from node.p2p.framing import HEADER_SIZE, encode_frame
from node.p2p.network import BOOTSTRAP_MAGIC, Network
from node.p2p.session import HandshakeError, NoiseHandshake, Transport, TransportError, sign_auth

STEPS = ("noise", "noise-m1-mutated", "noise-m3-mutated", "hello", "hello-mutated", "auth",
         "auth-mutated", "ready", "message", "record-mutated", "frame", "wrong-magic",
         "bootstrap", "raw", "close")
"""Steps that need a finished key exchange fall back to clear frames before one."""
HANDSHAKE = [("noise", b"", 0, []), ("hello", b"", 0, []), ("auth", b"", 0, []),
             ("ready", b"", 0, [])]
"""A correct full handshake: key exchange, HELLO, AUTH, READY."""
WAIT = 0.05
"""How long the client listens for the node's answer after each step."""

Step = tuple[str, bytes, int, list[Op]]


class ScriptEnded(Exception):
    """The client cannot go on (the node refused or closed, or the client's own side of the
    key exchange refused the node's answer to a mutated message)."""


class Client:
    """One connection's client side: clear frames until the key exchange, sealed records
    after it; keeps the node's HELLO public key (for AUTH) and the message types it sent."""

    def __init__(self, live: LiveNode, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.live = live
        self.reader = reader
        self.writer = writer
        self.buf = b""
        self.noise: NoiseHandshake | None = None
        self.transport: Transport | None = None
        self.session_hash = b""
        self.node_pub = bytes(33)
        self.types: list[int] = []
        self._partial: tuple[int, int, bytearray] | None = None

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, msg_type: int, payload: bytes) -> None:
        if self.transport is None:
            await self.write(encode_frame(self.live.magic, msg_type, payload))
        else:
            await self.write(self.transport.seal(msg_type, payload))

    async def fill(self, timeout: float) -> bool:
        """More bytes from the node within `timeout`; False if none came."""
        try:
            chunk = await asyncio.wait_for(self.reader.read(1 << 16), timeout)
        except TimeoutError:
            return False
        if not chunk:
            raise ScriptEnded("the node closed the connection")
        self.buf += chunk
        return True

    def take(self) -> tuple[int, bytes] | None:
        """The next whole message from the buffer (a clear frame before the key exchange,
        sealed records after it), or None."""
        if self.transport is None:
            if len(self.buf) < HEADER_SIZE:
                return None
            n = int.from_bytes(self.buf[5:9], "little")
            if len(self.buf) < HEADER_SIZE + n:
                return None
            msg = (self.buf[4], self.buf[HEADER_SIZE:HEADER_SIZE + n])
            self.buf = self.buf[HEADER_SIZE + n:]
            return msg
        while len(self.buf) >= 2:
            n = int.from_bytes(self.buf[:2], "big")
            if len(self.buf) < 2 + n:
                return None
            try:
                plain = self.transport.open(self.buf[2:2 + n])
            except TransportError as e:
                raise ScriptEnded(f"the node sent a record we cannot open: {e}") from None
            self.buf = self.buf[2 + n:]
            if self._partial is None:
                msg_type, length = struct.unpack_from("<BI", plain)
                self._partial = (msg_type, length, bytearray(plain[5:]))
            else:
                self._partial[2].extend(plain)
            msg_type, length, body = self._partial
            if len(body) >= length:
                self._partial = None
                return msg_type, bytes(body)
        return None

    def note(self, msg: tuple[int, bytes]) -> None:
        msg_type, payload = msg
        self.types.append(msg_type)
        if msg_type == m.Msg.HELLO and self.transport is not None:
            self.node_pub = m.Hello.decode(payload).pubkey

    async def drain(self, until: tuple[int, ...] = ()) -> None:
        """Read and note what the node sends until it pauses for WAIT seconds, or until a
        message of a type in `until` (the answer a correct step expects) arrived."""
        while True:
            msg = self.take()
            if msg is not None:
                self.note(msg)
                if msg[0] in until:
                    return
                continue
            if not await self.fill(WAIT):
                return

    async def noise_reply(self) -> bytes:
        """The node's next Noise message (waiting up to half a second for it)."""
        for _ in range(10):
            msg = self.take()
            if msg is not None:
                self.types.append(msg[0])
                if msg[0] != m.Msg.NOISE:
                    raise ScriptEnded(f"message {msg[0]} during the key exchange")
                return msg[1]
            await self.fill(WAIT)
        raise ScriptEnded("the node did not answer the key exchange")

    async def key_exchange(self, m1_ops: list[Op] | None, m3_ops: list[Op] | None) -> None:
        noise = NoiseHandshake(initiator=True)
        self.noise = noise
        m1 = noise.first()
        await self.send(m.Msg.NOISE, apply_ops(m1, m1_ops) if m1_ops is not None else m1)
        try:
            m3 = noise.receive(await self.noise_reply())
        except HandshakeError as e:
            raise ScriptEnded(f"the node's answer to our message 1: {e}") from None
        await self.send(m.Msg.NOISE, apply_ops(m3 or b"", m3_ops) if m3_ops is not None
                        else m3 or b"")
        self.session_hash = noise.handshake_hash
        self.transport = noise.transport()

    def auth(self) -> bytes:
        key = self.live.key
        return m.encode_auth(key.pubkey, sign_auth(key, self.live.chain_id, self.session_hash,
                                                   True, self.node_pub))

    async def step(self, step: str, blob: bytes, kind: int, ops: list[Op]) -> None:
        live = self.live
        expect: tuple[int, ...] = ()
        if step == "close":
            raise ScriptEnded("closed by the script")
        if step in ("noise", "noise-m1-mutated", "noise-m3-mutated"):
            if self.noise is not None:
                raise ScriptEnded("one key exchange per connection")
            await self.key_exchange(ops if step == "noise-m1-mutated" else None,
                                    ops if step == "noise-m3-mutated" else None)
            expect = (m.Msg.HELLO,)
        elif step == "hello":
            await self.send(m.Msg.HELLO, live.hello())
            expect = (m.Msg.AUTH, m.Msg.REJECT)
        elif step == "hello-mutated":
            await self.send(m.Msg.HELLO, apply_ops(live.hello(), ops, blob))
        elif step == "auth":
            await self.send(m.Msg.AUTH, self.auth())
            expect = (m.Msg.READY, m.Msg.REJECT)
        elif step == "auth-mutated":
            await self.send(m.Msg.AUTH, apply_ops(self.auth(), ops, blob))
        elif step == "ready":
            await self.send(m.Msg.READY, m.Ready(-1, bytes(32)).encode())
        elif step == "message":
            await self.send(kind, blob)
        elif step == "record-mutated":
            if self.transport is None:
                await self.write(apply_ops(encode_frame(live.magic, kind, blob), ops))
            else:
                sealed = self.transport.seal(kind, blob)
                await self.write(apply_ops(sealed, ops))
        elif step == "frame":
            await self.write(encode_frame(live.magic, kind, blob))
        elif step == "wrong-magic":
            await self.write(encode_frame(bytes((kind, 1, 2, 3)), m.Msg.NOISE, bytes(32)))
        elif step == "bootstrap":
            await self.write(encode_frame(BOOTSTRAP_MAGIC, kind, blob))
        else:
            await self.write(blob)  # raw bytes, framing and all
        await self.drain(expect)


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
        self.net = Network(self.ctx, port=self.port, bind=("127.0.0.1",))
        self.ctx.network = self.net
        self.loop.run_until_complete(self.net.start())
        self.key: KeyPair = self.ctx.wallet.default
        self.magic = bytes(self.ctx.params["network-message-start"])
        self.chain_id = self.ctx.chain.chain_id
        self.genesis = bytes(self.ctx.params["genesis-hash"])

    def hello(self) -> bytes:
        return m.Hello(m.PROTOCOL, self.chain_id, self.genesis, 0, self.key.pubkey).encode()

    async def play(self, script: list[Step], *, stay: bool = False) -> Client:
        """Play `script` on one connection; with `stay`, keep it open until the node lists
        the client as a ready peer (or a second passed) before closing."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        client = Client(self, reader, writer)
        try:
            for step in script:
                await client.step(*step)
            if stay:
                for _ in range(200):
                    if any(p.ready for p in self.net.peers.values()):
                        client.types.append(-1)  # marker: the node counted the peer
                        break
                    await asyncio.sleep(0.005)
        except (ScriptEnded, ConnectionError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass
        return client

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
def scripts(draw: st.DrawFn) -> list[Step]:
    from bench.fuzz import corpus

    seeds = [raw for _, raw in corpus.handshake_seeds()] + corpus.tx_seeds()
    steps = draw(st.lists(st.sampled_from(STEPS), min_size=1, max_size=6))
    if draw(st.booleans()):
        steps = ["noise", *steps]  # half the scripts get past the key exchange first
    return [(s, draw(st.one_of(mutated(seeds), st.binary(max_size=64))),
             draw(st.sampled_from([*range(1, 17), *INTERESTING])), draw(havoc()))
            for s in steps]


def check_live(script: list[Step]) -> None:
    live = node()
    # A ban from an earlier script would stop this one at AUTH: every script starts clean.
    live.net.bans.clear()
    live.loop.run_until_complete(live.play(script))
    live.loop.run_until_complete(live.settle())
    if live.errors:
        errors, live.errors[:] = list(live.errors), []
        raise AssertionError(f"exception escaped the node: {errors[0]}")
    # A script that misbehaved after a correct AUTH got the client's key banned, which is the
    # node doing its job; the check here is that a well-behaved peer can still connect.
    live.net.bans.clear()
    client = live.loop.run_until_complete(live.play(HANDSHAKE, stay=True))
    live.loop.run_until_complete(live.settle())
    if m.Msg.READY not in client.types or -1 not in client.types:
        raise AssertionError(f"a correct handshake failed afterwards (got {client.types})")


TARGET = Target("handshake-live", scripts(), check_live,
                "the P2P handshake state machine of a real node over TCP")
