"""Harness helpers for the P2P functional tests: networks of nodes, links, loads, a raw peer.

Builds on framework.py (which stays the one place for a single node). What is here:

- `JoiningNode`: a `TestNode` whose first start is ``chainmill start CHAIN@HOST:PORT`` (it
  fetches the chain's parameters from a seed and remembers the seed in chainmill.conf);
  later starts are plain ``chainmill start CHAIN``.
- `start_network(harness, n, ...)`: node0 creates the chain, the others join through it and
  are granted connect,send,receive,mine; a full mesh is added; returns once every node sees
  every other one and all share one tip.
- `cut_link` / `heal_link`: take a link down so neither side redials (addnode remove and
  disconnectnode both ways), and bring it back.
- `publish_items`: many items fast (publishmulti in JSON-RPC batches).
- `stream_digest`: everything a stream holds on one node, for exact comparison.
- `RawPeer`: a minimal P2P peer speaking node/p2p's key exchange, handshake and sealed
  messages over a blocking socket, with its own key, so a test can send forged blocks and
  transactions or take the handshake apart.
- `TcpRelay`: a man in the middle on loopback that forwards a link and records every byte,
  to check what crosses the wire.
- `Daemons`: ``chainmill start --daemon`` processes a test started, stopped by their pid
  files at the end (the harness only knows its own child processes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from framework import (
    DEFAULT_BLOCK_TIME,
    DEFAULT_TIMEOUT,
    Harness,
    TestNode,
    chainmill_command,
    child_env,
    scaled,
    sync_blocks,
    wait_until,
)

from config.params import read_params_file
from ledger.addresses import AddressCodec
from ledger.blocks import BLOCK_VERSION, Block, BlockHeader
from ledger.keys import KeyPair
from ledger.merkle import merkle_root
from ledger.transactions import DataFormat, Publish, Transaction
from ledger.types import ZERO_HASH
from node.client import RpcError
from node.p2p import messages as m
from node.p2p.framing import HEADER_SIZE, encode_frame
from node.p2p.messages import Msg
from node.p2p.session import NoiseHandshake, Transport, check_auth, sign_auth

log = logging.getLogger("functional.network")

GRANTS = "connect,send,receive,mine"
RPC_TX_UNKNOWN = -710
"""getrawtransaction of a transaction this node has not seen."""
ITEMS_PER_TX = 32
"""max-std-op-returns-count of a default chain: items per publishmulti transaction."""


# -- nodes that join through a seed -------------------------------------------------------------


class JoiningNode(TestNode):
    """A node without a chain of its own: its first start joins `seed`'s chain."""

    __test__ = False

    def __init__(self, *args: Any, seed: TestNode, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seed = seed

    @property
    def params_path(self) -> Path:
        return self.chain_dir / "params.dat"

    def _spawn(self) -> None:
        if self.params_path.exists():
            super()._spawn()
            return
        # First start: CHAIN@HOST:PORT. The child writes chainmill.conf (with the RPC
        # credentials) while it joins, so the credentials are read once it exists.
        self._launch(f"{self.chain}@127.0.0.1:{self.seed.port}", "join")

        def conf_written() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"node{self.index} exited while joining:\n"
                                     + self.output(this_start=True)[-2000:])
            return self.conf_path.exists() and "rpcpassword=" in self.conf_path.read_text()
        wait_until(conf_written, msg=f"node{self.index} to write its chainmill.conf")
        self._read_credentials()
        self.rpc = self.client()

    @property
    def address(self) -> str:
        return self.getaddresses()[0]


def add_joiner(harness: Harness, seed: TestNode) -> JoiningNode:
    """A new node (not started) that will join `seed`'s chain on its first start."""
    index = len(harness.nodes)
    datadir = harness.base_dir / f"node{index}"
    datadir.mkdir(parents=True)
    node = JoiningNode(index, datadir, seed.chain, port=harness.port_factory(),
                       rpcport=harness.port_factory(), port_factory=harness.port_factory,
                       block_time=seed.block_time, params=seed.params, seed=seed)
    harness.nodes.append(node)
    return node


def peer_addresses(node: TestNode) -> set[str]:
    """Chain addresses of the peers `node` has completed a handshake with."""
    return {p["handshake"] for p in node.getpeerinfo() if p.get("handshake")}


def wait_for_mesh(nodes: Sequence[TestNode], timeout: float = DEFAULT_TIMEOUT) -> None:
    """Wait until every node has a handshaken connection to every other one."""
    addresses = {n.index: n.getaddresses()[0] for n in nodes}

    def meshed() -> bool:
        return all(peer_addresses(n) >= {addresses[o.index] for o in nodes if o is not n}
                   for n in nodes)
    wait_until(meshed, timeout=timeout, msg=f"a full mesh of {len(nodes)} nodes")


def start_network(harness: Harness, n: int, *, block_time: float = DEFAULT_BLOCK_TIME,
                  params: dict[str, Any] | None = None, chain: str = "net",
                  grants: str = GRANTS) -> list[TestNode]:
    """n nodes of one chain: node0 creates it, the others join and are granted `grants`;
    every node adds every other one (full mesh). Returns once all are connected and synced.

    The grants go out in one transaction once every joiner is up, and the function waits
    until it is confirmed everywhere, so mine permissions are effective when it returns;
    its txid is kept as `nodes[0].grant_txid`.
    """
    params = {"setup-first-blocks": 5, **(params or {})}
    seed = harness.add_node(chain=chain, block_time=block_time, params=params)
    seed.start()
    joiners = [add_joiner(harness, seed) for _ in range(n - 1)]
    for j in joiners:
        j.start(wait=False)
    for j in joiners:
        j.wait_for_rpc()
    nodes: list[TestNode] = [seed, *joiners]
    if joiners:
        txid = seed.grant(",".join(j.address for j in joiners), grants)
        seed.grant_txid = txid
        log.info("granted %s to %d joining nodes", grants, len(joiners))
        for a in nodes:
            for b in nodes:
                if a.index < b.index and b is not seed:
                    a.addnode(f"127.0.0.1:{b.port}", "add")
        wait_for_mesh(nodes, timeout=60)
        wait_confirmed(nodes, txid)
        sync_blocks(nodes)
    return nodes


# -- links --------------------------------------------------------------------------------------


def cut_link(a: TestNode, b: TestNode) -> None:
    """Take the link between a and b down for good: neither side redials the other."""
    for x, y in ((a, b), (b, a)):
        with contextlib.suppress(RpcError):  # not every side added the other
            x.addnode(f"127.0.0.1:{y.port}", "remove")
    addr_a, addr_b = a.getaddresses()[0], b.getaddresses()[0]
    for x, y in ((a, addr_b), (b, addr_a)):
        with contextlib.suppress(RpcError):  # already gone
            x.disconnectnode(y)
    wait_until(lambda: addr_b not in peer_addresses(a) and addr_a not in peer_addresses(b),
               msg=f"node{a.index} and node{b.index} to disconnect")


def heal_link(a: TestNode, b: TestNode) -> None:
    """Bring the link back (a dials b and keeps redialling it), waiting for the handshake."""
    a.addnode(f"127.0.0.1:{b.port}", "add")
    addr_b = b.getaddresses()[0]
    wait_until(lambda: addr_b in peer_addresses(a),
               msg=f"node{a.index} and node{b.index} to reconnect")


def partition(left: Sequence[TestNode], right: Sequence[TestNode]) -> None:
    for a in left:
        for b in right:
            cut_link(a, b)


# -- load and contents ----------------------------------------------------------------------------


def publish_items(node: TestNode, stream: str, count: int, *, prefix: str = "k",
                  per_tx: int = ITEMS_PER_TX, per_request: int = 40,
                  start: int = 0) -> list[str]:
    """Publish `count` items (key `<prefix><i>`, small JSON data) as publishmulti
    transactions of `per_tx` items, `per_request` transactions per JSON-RPC batch.
    Returns the txids in order."""
    client = node.client(timeout=120)
    txids: list[str] = []
    try:
        calls = []
        for first in range(start, start + count, per_tx):
            last = min(first + per_tx, start + count)
            calls.append(("publishmulti", [stream, [
                {"key": f"{prefix}{i}", "data": {"json": {"i": i, "p": prefix}}}
                for i in range(first, last)]]))
        for i in range(0, len(calls), per_request):
            for r in client.batch(calls[i:i + per_request]):
                if isinstance(r, RpcError):
                    raise r
                txids.append(r)
    finally:
        client.close()
    return txids


def publish_blobs(node: TestNode, stream: str, count: int, size: int,
                  per_block: int = 4) -> list[str]:
    """`count` items of `size` bytes of raw data on `stream`, published `per_block` at a time
    (each group waits for the mempool to empty), so that they span many blocks; their txids."""
    txids = []
    for i in range(count):
        txids.append(node.publish(stream, f"blob{i}", (bytes([i % 256]) * size).hex()))
        if i % per_block == per_block - 1:
            wait_until(lambda: node.getmempoolinfo()["size"] == 0,
                       msg=f"node{node.index}'s mempool to empty")
    return txids


def stream_digest(node: TestNode, stream: str) -> list[tuple]:
    """Every confirmed item of a stream in chain order: (txid, vout, keys, publishers, data,
    blockhash). Equal digests mean equal stream contents."""
    items = node.liststreamitems(stream, True, 10_000_000, 0)
    return [(i["txid"], i["vout"], tuple(i["keys"]), tuple(i["publishers"]),
             json.dumps(i["data"], sort_keys=True), i.get("blockhash"))
            for i in items]


def confirmed_txids(node: TestNode, stream: str) -> set[str]:
    return {i["txid"] for i in node.liststreamitems(stream, False, 10_000_000, 0)
            if i.get("confirmations", 0) >= 1}


def wait_all_confirmed(nodes: Sequence[TestNode], stream: str, txids: set[str],
                       timeout: float = DEFAULT_TIMEOUT) -> None:
    """Wait until every node has every txid confirmed in `stream`."""
    def done() -> bool:
        return all(txids <= confirmed_txids(n, stream) for n in nodes)
    wait_until(done, timeout=timeout, interval=0.2,
               msg=f"{len(txids)} items confirmed on {len(nodes)} nodes")


def confirmations(node: TestNode, txid: str) -> int:
    """Confirmations of a transaction on `node`; 0 while it is unknown there (not yet
    relayed) or in the mempool."""
    try:
        return node.getrawtransaction(txid, 1).get("confirmations", 0)
    except RpcError as e:
        if e.code == RPC_TX_UNKNOWN:
            return 0
        raise


def wait_confirmed(nodes: Sequence[TestNode], *txids: str, timeout: float = DEFAULT_TIMEOUT
                   ) -> None:
    """Wait until every txid is confirmed on every node (unknown counts as unconfirmed,
    unlike TestNode.wait_for_confirmation, which expects the node to know it already)."""
    wait_until(lambda: all(confirmations(n, t) >= 1 for n in nodes for t in txids),
               timeout=timeout, interval=0.1,
               msg=f"{len(txids)} transaction(s) confirmed on {len(nodes)} node(s)")


def log_lines(node: TestNode, needle: str) -> list[str]:
    return [line for line in node.debug_log().splitlines() if needle in line]


def wait_for_log(node: TestNode, needle: str, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Wait until node's debug.log has a line containing `needle`; returns the first."""
    return wait_until(lambda: (log_lines(node, needle) or [None])[0], timeout=timeout,
                      msg=f"{needle!r} in node{node.index}'s debug.log")


def miners_by_height(node: TestNode, first: int, last: int) -> dict[int, str]:
    return {b["height"]: b["miner"] for b in node.listblocks(f"{first}-{last}")}


# -- a raw P2P peer ---------------------------------------------------------------------------------


class PeerRefused(AssertionError):
    """The node answered the handshake with REJECT (the reason is the message)."""


class PeerClosed(AssertionError):
    """The node closed the connection."""


class RawPeer:
    """A minimal peer: the node's framing, key exchange and sealed messages over a blocking
    socket.

    It dials the node, runs the Noise key exchange and the signed handshake with `key`
    (which needs connect permission to be accepted), and can then send any message. The
    steps are separate methods (`key_exchange`, `send_hello`, `auth_for`) so an attack test
    can take them out of order or claim another node's key. Everything the node sends after
    the key exchange is kept in `received` (type, payload); the peer never answers requests,
    so keep it from being the node's sync source (it never sends blocks unless told to).
    """

    def __init__(self, node: TestNode, key: KeyPair, port: int | None = None) -> None:
        self.node = node
        self.port = port or node.port
        self.key = key
        params = read_params_file(node.chain_dir / "params.dat")
        self.magic = bytes(params["network-message-start"])
        self.chain_id = bytes(params["chain-params-hash"])
        self.genesis = bytes(params["genesis-hash"])
        self.codec = AddressCodec(params["address-pubkeyhash-version"],
                                  params["private-key-version"],
                                  params["address-checksum-value"])
        self.address = self.codec.encode(key.pubkey_hash)
        self.sock: socket.socket | None = None
        self.buf = b""
        self.received: list[tuple[int, bytes]] = []
        self.transport: Transport | None = None
        self.session_hash = b""
        self.node_hello: m.Hello | None = None
        self.node_auth: tuple[bytes, bytes] | None = None
        self.node_ready: m.Ready | None = None
        self._partial: tuple[int, int, bytearray] | None = None

    # -- frames -----------------------------------------------------------------------------
    def send(self, msg_type: int, payload: bytes) -> None:
        """A message: sealed after the key exchange, a clear frame before it."""
        assert self.sock is not None
        # recv() leaves a short timeout on the socket; a node busy reading a flood must not
        # make sendall fail with it.
        self.sock.settimeout(scaled(DEFAULT_TIMEOUT))
        if self.transport is None:
            self.sock.sendall(encode_frame(self.magic, msg_type, payload))
        else:
            self.sock.sendall(self.transport.seal(msg_type, payload))

    def send_raw(self, data: bytes) -> None:
        assert self.sock is not None
        self.sock.settimeout(scaled(DEFAULT_TIMEOUT))
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        """Read more bytes into the buffer; False when `deadline` passed first."""
        assert self.sock is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(1 << 16)
        except TimeoutError:
            return False
        except ConnectionError as e:
            raise PeerClosed(f"connection reset: {e}") from None
        if not chunk:
            raise PeerClosed("the node closed the connection")
        self.buf += chunk
        return True

    def _take_frame(self) -> tuple[int, bytes] | None:
        if len(self.buf) < HEADER_SIZE:
            return None
        magic, msg_type, length, _ = struct.unpack("<4sBI4s", self.buf[:HEADER_SIZE])
        assert magic == self.magic, "the node sent a frame with another magic"
        if len(self.buf) < HEADER_SIZE + length:
            return None
        payload = self.buf[HEADER_SIZE:HEADER_SIZE + length]
        self.buf = self.buf[HEADER_SIZE + length:]
        return msg_type, payload

    def _take_message(self) -> tuple[int, bytes] | None:
        """The next whole sealed message (records: u16 length | ciphertext), decrypting
        each record once, in order, as it completes."""
        assert self.transport is not None
        while len(self.buf) >= 2:
            n = int.from_bytes(self.buf[:2], "big")
            if len(self.buf) < 2 + n:
                return None
            plain = self.transport.open(self.buf[2:2 + n])
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

    def recv(self, timeout: float) -> tuple[int, bytes] | None:
        """The next message, or None if none arrives within `timeout`; raises PeerClosed."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self._take_frame() if self.transport is None else self._take_message()
            if frame is not None:
                self.received.append(frame)
                return frame
            if not self._fill(deadline):
                return None

    # -- handshake ---------------------------------------------------------------------------
    def key_exchange(self, timeout: float = 10.0) -> None:
        """Dial and run the Noise XX exchange (anyone may: it proves nothing yet)."""
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        self.buf = b""
        noise = NoiseHandshake(initiator=True)
        self.send(Msg.NOISE, noise.first())
        while not noise.complete:
            frame = self.recv(scaled(timeout))
            if frame is None:
                raise AssertionError("the node did not answer the key exchange")
            msg_type, payload = frame
            assert msg_type == Msg.NOISE, f"message {msg_type} during the key exchange"
            reply = noise.receive(payload)
            if reply is not None:
                self.send(Msg.NOISE, reply)
        self.session_hash = noise.handshake_hash
        self.transport = noise.transport()

    def send_hello(self, pubkey: bytes | None = None) -> None:
        """HELLO claiming `pubkey` (default: this peer's own key)."""
        self.send(Msg.HELLO, m.Hello(m.PROTOCOL, self.chain_id, self.genesis, 0,
                                     pubkey or self.key.pubkey).encode())

    def auth_for(self, node_pub: bytes, key: KeyPair | None = None) -> bytes:
        """The AUTH payload this (initiator) side owes the node on this session."""
        key = key or self.key
        return m.encode_auth(key.pubkey, sign_auth(key, self.chain_id, self.session_hash,
                                                   True, node_pub))

    def read_handshake(self, until: int, timeout: float = 10.0) -> None:
        """Read the node's handshake messages (kept as node_hello, node_auth, node_ready)
        until one of type `until` arrived; raises PeerRefused on REJECT."""
        deadline = time.monotonic() + scaled(timeout)
        while time.monotonic() < deadline:
            frame = self.recv(0.1)
            if frame is None:
                continue
            msg_type, payload = frame
            if msg_type == Msg.REJECT:
                raise PeerRefused(m.decode_text(payload))
            if msg_type == Msg.HELLO:
                self.node_hello = m.Hello.decode(payload)
            elif msg_type == Msg.AUTH:
                self.node_auth = m.decode_auth(payload)
            elif msg_type == Msg.READY:
                self.node_ready = m.Ready.decode(payload)
            if msg_type == until:
                return
        raise AssertionError(f"no message {until} from node{self.node.index}")

    def connect(self, timeout: float = 10.0) -> None:
        """Key exchange and signed handshake; returns once the node lists this peer as
        connected. Raises PeerRefused with the node's reason, or PeerClosed."""
        self.key_exchange(timeout)
        self.send_hello()
        self.read_handshake(Msg.HELLO, timeout)
        assert self.node_hello is not None
        self.send(Msg.AUTH, self.auth_for(self.node_hello.pubkey))
        self.read_handshake(Msg.AUTH, timeout)
        assert self.node_auth is not None
        pub, sig = self.node_auth
        check_auth(pub, sig, chain_id=self.chain_id, handshake_hash=self.session_hash,
                   signer_initiator=False, claimed_pub=self.node_hello.pubkey,
                   my_pub=self.key.pubkey)
        self.read_handshake(Msg.READY, timeout)
        self.send(Msg.READY, m.Ready(-1, ZERO_HASH).encode())
        wait_until(lambda: self.address in peer_addresses(self.node), timeout=timeout,
                   msg=f"node{self.node.index} to list {self.address} as a peer")

    def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Read (and keep) frames until the node closes the connection."""
        deadline = time.monotonic() + scaled(timeout)
        while time.monotonic() < deadline:
            try:
                self.recv(0.2)
            except PeerClosed:
                return
        raise AssertionError(f"node{self.node.index} kept the connection of {self.address}")

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- forging -------------------------------------------------------------------------------
    def tip_header(self) -> BlockHeader:
        raw = self.node.getblock(self.node.getbestblockhash(), 0)
        return Block.decode(bytes.fromhex(raw)).header

    def block_on_tip(self, *, signer: KeyPair | None = None, txs: Sequence[Transaction] = (),
                     merkle: bytes | None = None) -> Block:
        """A block on the node's current tip signed by `signer` (default: this peer's key),
        optionally with a wrong Merkle root."""
        tip = self.tip_header()
        header = BlockHeader(BLOCK_VERSION, tip.height + 1, tip.hash,
                             merkle if merkle is not None else merkle_root([t.txid for t in txs]),
                             max(int(time.time() * 1000), tip.time_ms))
        block = Block(header, b"", list(txs))
        block.signature = (signer or self.key).sign_recoverable(
            Block.sighash(self.chain_id, block.hash))
        return block


class TcpRelay:
    """Forwards every connection made to `port` on to 127.0.0.1:`target` and keeps the bytes
    of both directions (`recorded`): what an eavesdropper between two nodes would see."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.server.getsockname()[1]
        self.recorded = bytearray()
        self.connections = 0
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = [self.server]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                return
            with self._lock:
                self._socks += [client, upstream]
                self.connections += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := src.recv(1 << 16):
                with self._lock:
                    self.recorded += chunk
                dst.sendall(chunk)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            for s in self._socks:
                with contextlib.suppress(OSError):
                    s.close()


def new_key_with(node: TestNode, permissions: str | None) -> KeyPair:
    """A fresh key pair (from createkeypairs); `permissions` granted to it when given (the
    grant is waited for until confirmed)."""
    pair = node.createkeypairs(1)[0]
    params = read_params_file(node.chain_dir / "params.dat")
    codec = AddressCodec(params["address-pubkeyhash-version"], params["private-key-version"],
                         params["address-checksum-value"])
    key = KeyPair(codec.decode_wif(pair["privkey"]))
    assert codec.encode(key.pubkey_hash) == pair["address"]
    if permissions:
        node.wait_for_confirmation(node.grant(pair["address"], permissions))
    return key


def bad_signature_tx(key: KeyPair, chain_id: bytes, stream_txid: str) -> Transaction:
    """A publish transaction by `key` whose signature is over other data (it does not verify)."""
    op = Publish(bytes.fromhex(stream_txid), ("forged",), DataFormat.TEXT, b"forged", False)
    tx = Transaction(key.pubkey, 1, int(time.time()), (op,))
    tx.signature = key.sign(hashlib.sha256(b"not this transaction").digest())
    assert not tx.signature_valid(chain_id)
    return tx


# -- daemons ----------------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """True while the process runs (a zombie, exited but not yet reaped by whoever adopted
    the detached daemon, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


class Daemons:
    """``chainmill`` commands a test runs that leave daemons behind (start --daemon, cluster
    up); `stop_all` stops each daemon through its pid file, SIGKILL as a last resort."""

    def __init__(self) -> None:
        self.chain_dirs: list[Path] = []

    def run(self, *args: str, timeout: float = 120, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        """Run a chainmill command; unless `check` is False, a non-zero exit fails the test."""
        argv = [*chainmill_command(), *args]
        log.info("run: chainmill %s", " ".join(args))
        done = subprocess.run(argv, capture_output=True, text=True, env=child_env(),
                              stdin=subprocess.DEVNULL, timeout=scaled(timeout))
        if check and done.returncode != 0:
            raise AssertionError(f"chainmill {' '.join(args[:2])} failed ({done.returncode}):\n"
                                 f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        return done

    def track(self, chain_dir: Path) -> None:
        if chain_dir not in self.chain_dirs:
            self.chain_dirs.append(chain_dir)

    @staticmethod
    def pid_of(chain_dir: Path) -> int | None:
        """The pid in the chain's pid file if that process is alive."""
        try:
            pid = int((chain_dir / "chainmill.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def stop_all(self, timeout: float = 30) -> None:
        for cdir in self.chain_dirs:
            pid = self.pid_of(cdir)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for cdir in self.chain_dirs:
            while self.pid_of(cdir) is not None and time.monotonic() < deadline:
                time.sleep(0.1)
            pid = self.pid_of(cdir)
            if pid is not None:
                log.warning("daemon %d of %s did not stop; killing it", pid, cdir)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture(name="daemons")
def daemons_fixture():
    """`daemons`: a `Daemons` whose daemons are stopped after the test, passed or failed
    (import `daemons_fixture` into a test module to use it)."""
    d = Daemons()
    try:
        yield d
    finally:
        d.stop_all()


def adopt_daemon(node: TestNode, daemons: Daemons) -> None:
    """After `chainmill start ... --daemon` for `node`'s data directory: talk to the daemon
    through `node` (RPC, files) and have `daemons` stop it at the end."""
    daemons.track(node.chain_dir)
    node._read_credentials()
    node.rpc = node.client()
