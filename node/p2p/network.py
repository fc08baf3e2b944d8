"""The peer manager: listens, dials, runs the permissioned handshake, relays transactions and
blocks by announcement and request, syncs from peers in batches, chooses between forks and
penalises peers that send invalid data.

Fork choice: the longest valid chain; between equal heights the tip with the lower hash, so
every node picks the same branch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from config.errors import ConfigError
from config.runtime import parse_bind
from consensus.rules import has_permission
from ledger.blocks import Block
from ledger.errors import AlreadyInChain, ChainmillError, DecodeError, InvalidBlock
from ledger.hashing import hash160
from ledger.keys import is_valid_pubkey
from ledger.transactions import Transaction
from ledger.types import ZERO_HASH
from node.chain import collector_paused
from node.p2p import messages as m
from node.p2p.framing import HEADER_SIZE, FrameError, encode_frame, read_frame
from node.p2p.messages import Inv, Msg
from node.p2p.peer import Peer
from node.p2p.session import HandshakeError, NoiseHandshake, check_auth, sign_auth

log = logging.getLogger(__name__)

BOOTSTRAP_MAGIC = b"\xf9cmj"
"""Magic of the one exchange a joining node makes before it knows the chain's magic."""
HANDSHAKE_TIMEOUT = 10.0
"""Dialing: the TCP connect."""
PREAUTH_TIMEOUT = 3.0
"""Key exchange, transcript and permission check, from accept (or connect) to READY."""
MAX_CLEAR_FRAME = 4096
"""Clear frames are Noise messages (<= 96 bytes) and GETPARAMS (20 bytes)."""
MAX_HANDSHAKE_MESSAGE = 4096
MAX_PENDING = 64
"""Inbound connections that have not finished the handshake, in total ..."""
MAX_PENDING_PER_IP = 16
"""... and from one remote IP; when full, the oldest of them makes room for the new one."""
MAX_REQUESTED_PER_PEER = 10_000
"""Hashes asked of one peer and not answered yet; beyond it its announcements are ignored."""
REQUEST_TIMEOUT = 30.0
"""A hash asked for and not answered within this is forgotten (another peer may have it)."""
MAX_BLOCK_INV = 8
"""Block entries of one INV that are looked up (blocks are announced one at a time)."""
RELAY_BATCH = 2000
"""Relayed transactions verified in one call of the verifier (its threads split it)."""
RELAY_QUEUE = 20_000
"""Relayed transactions waiting for verification; beyond it peers' reading waits."""
RELAY_GATHER = 0.005
"""Seconds a relayed transaction waits for others before its batch is checked, unless
RELAY_GATHER_MIN are already queued. A GETDATA is answered with a burst of TX messages that
the node reads one loop turn each: checked as they came, batches held a few transactions
(5-6 measured), and each batch paid a thread hand-off, a store query and the verifier's
call, and was verified on the calling thread (below the verifier's process batch)."""
RELAY_GATHER_MIN = 64
"""Queued relayed transactions that are checked at once, without waiting."""
PREAUTH_LOG_EVERY = 10.0
"""Seconds between log lines about unauthenticated connections dropped for bad data."""
BAN_SCORE = 100
BAN_SECONDS = 3600
SYNC_BATCH = 500
VERIFY_CHUNK = 2000
"""Transactions whose signatures a catching-up node checks ahead of the blocks it connects."""
SYNC_CHECK_THREADS = 4
"""Threads that hand a sync's chunks to the signature verifier and wait for its answer: its
own pool, so that a catch-up's checks in flight do not take every thread of asyncio's default
executor from the block connects, the relay checks and the probes that run there."""
SYNC_BYTES = 2 * 1024 * 1024
"""A sync batch stops after the block that crosses this many bytes. Small enough that the
first batch arrives quickly and the next one can travel while one is connected (one batch
is asked for ahead), and that serving one does not hold the server's loop for long."""
MAX_REORG = 100_000
INV_FLUSH = 0.05
SERVE_SLICE = 0.001
"""Seconds a peer's buffered messages are handled before the loop is yielded to others (a
yield after every message cost an event-loop turn, 3-6 us, per relayed transaction)."""
PING_EVERY = 20.0
SYNC_STALL = 30.0
RECENT_BLOCKS = 8
"""Blocks this node connected last, kept to answer GETBLOCKTXN without a store read."""
"""A sync peer that sends no batch for this long is given up and another one tried."""


def parse_hostport(text: str, default_port: int | None = None) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        if default_port is None:
            raise ValueError(f"expected host:port, got {text!r}")
        return text, default_port
    host = host.strip("[]")
    return host, int(port)


@dataclass(slots=True)
class SyncChunk:
    """Consecutive blocks of a sync batch, the transactions whose signatures still need
    checking (not pooled here already), and the running check of those."""

    blocks: list[Block]
    txs: list[Transaction]
    verified: asyncio.Future


def _cancel(chunks: list[SyncChunk]) -> None:
    """Drop the checks of chunks that will not be connected (one already running on a
    worker finishes there; its answer is ignored)."""
    for c in chunks:
        c.verified.cancel()


class RateLimitedLog:
    """At most one warning per `every` seconds; the next one says how many were held back."""

    def __init__(self, logger: logging.Logger, every: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.every = every
        self.clock = clock
        self._next = 0.0
        self.suppressed = 0

    def warning(self, msg: str, *args: object) -> None:
        now = self.clock()
        if now < self._next:
            self.suppressed += 1
            return
        if self.suppressed:
            msg += " (%d similar lines suppressed)"
            args = (*args, self.suppressed)
        self.suppressed = 0
        self._next = now + self.every
        self.logger.warning(msg, *args)


class Network:
    def __init__(self, ctx: Any, *, port: int, listen: bool = True,
                 addnodes: tuple[str, ...] = (), max_connections: int = 125,
                 bind: tuple[str, ...] = ()) -> None:
        self.ctx = ctx
        self.chain = ctx.chain
        self.port = port
        self.listen = listen
        self.bind = [parse_bind(b, port) for b in bind]
        """(IP, port) to listen on; none: every interface on `port` (MultiChain's -bind)."""
        self.max_connections = max_connections
        self.magic: bytes = bytes(ctx.params["network-message-start"])
        self.genesis: bytes = bytes(ctx.params["genesis-hash"])
        self.max_frame = int(ctx.params["maximum-block-size"]) * 2 + (1 << 20)
        self.peers: dict[int, Peer] = {}
        self.added: dict[str, asyncio.Task] = {}
        self.bans: dict[bytes, float] = {}
        self.servers: list[asyncio.base_events.Server] = []
        self.tasks: set[asyncio.Task] = set()
        self._inv_queue: list[tuple[int, bytes, bytes]] = []
        self._inv_task: asyncio.Task | None = None
        self._tx_queue: list[tuple[Peer, Transaction]] = []
        self._tx_queued: dict[bytes, Transaction] = {}
        """Relayed txs queued or being checked, by txid (the first copy of each): a compact
        block that holds one is rebuilt with it rather than asking its sender again."""
        self._tx_task: asyncio.Task | None = None
        self._tx_drained = asyncio.Event()
        self._sync_peer: Peer | None = None
        self._sync_last = 0.0
        self._sync_connecting: tuple[asyncio.Task[bool], Block] | None = None
        """The connect of the last sync batch that continued the tip (its task, its last
        block), running while the next batch is read, decoded and checked (`on_blocks`)."""
        self._branch: list[Block] = []
        self._recent: OrderedDict[bytes, Block] = OrderedDict()
        self._recent_txs: dict[bytes, bytes] = {}
        """Txid -> signature of the transactions of the `_recent` blocks: confirmed, and
        verified when their block connected. Announcements of them are not followed, and
        copies of them that arrive late are not verified again."""
        self._requested: dict[bytes, int] = {}
        """Hash -> id of the peer it was asked of (each hash asked of one peer at a time)."""
        self._preauth_log = RateLimitedLog(log, PREAUTH_LOG_EVERY)
        self._noise_static = os.urandom(32)
        """This process's X25519 static key: throw-away, identity is the signed transcript."""
        self._initial = tuple(addnodes)
        self._checks: ThreadPoolExecutor | None = None
        self.last_error = ""
        self.refused_reason = ""

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.listen:
            ports: dict[int, list[str]] = {}
            for host, port in self.bind:
                ports.setdefault(port, []).append(host)
            for port, hosts in (ports or {self.port: []}).items():
                where = ", ".join(hosts) or "all interfaces"
                try:
                    self.servers.append(await asyncio.start_server(
                        self._accept, hosts or None, port, limit=1 << 16))
                except OSError as e:
                    raise ConfigError(f"cannot bind P2P port {port} on {where}: "
                                      f"{e.strerror or e}") from None
                log.info("P2P listening on %s port %d", where, port)
        for node in self._initial:
            self.addnode(node, "add", quiet=True)
        self._spawn(self._pinger())
        # Relayed and synced transactions are verified on worker processes: boot them now,
        # not when the first large batch (a catch-up) is waiting for them.
        self._spawn(asyncio.to_thread(self.chain.verifier.start))

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        for t in list(self.added.values()) + list(self.tasks):
            t.cancel()
        for p in list(self.peers.values()):
            p.close()
        for t in list(self.added.values()) + list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._checks is not None:  # checks still queued are dropped; a running one ends
            self._checks.shutdown(wait=False, cancel_futures=True)  # when the verifier closes
            self._checks = None

    def _spawn(self, coro: Any) -> asyncio.Task:
        t = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)
        return t

    # -- RPC-facing -----------------------------------------------------------------------------
    def ready_peers(self) -> list[Peer]:
        return [p for p in self.peers.values() if p.ready and not p.closed]

    def connection_count(self) -> int:
        return len(self.ready_peers())

    def peer_info(self) -> list[dict]:
        out = []
        for p in self.ready_peers():
            out.append({
                "id": p.id, "addr": p.addr, "addrlocal": p.addrlocal,
                "services": "0000000000000001", "lastsend": p.lastsend, "lastrecv": p.lastrecv,
                "bytessent": p.bytessent, "bytesrecv": p.bytesrecv, "conntime": p.conntime,
                "pingtime": round(p.pingtime, 6), "version": m.PROTOCOL,
                "subver": f"/chainmill:{self.ctx.version}/", "handshakelocal": p.local_address,
                "handshake": p.address, "inbound": p.inbound, "startingheight": p.start_height,
                "banscore": p.banscore, "synced_headers": p.best_height,
                "synced_blocks": p.best_height, "inflight": [],
            })
        return out

    def addnode(self, node: str, command: str, quiet: bool = False) -> None:
        from node.rpc.errors import (
            RPC_CLIENT_NODE_ALREADY_ADDED,
            RPC_CLIENT_NODE_NOT_ADDED,
            RPC_INVALID_PARAMETER,
            RpcError,
        )

        try:
            host, port = parse_hostport(node, int(self.ctx.params["default-network-port"]))
        except ValueError:
            raise RpcError(RPC_INVALID_PARAMETER, f"Invalid node address: {node}") from None
        key = f"{host}:{port}"
        if command == "add":
            if key in self.added:
                if quiet:
                    return
                raise RpcError(RPC_CLIENT_NODE_ALREADY_ADDED, "Error: Node already added")
            self.added[key] = asyncio.get_running_loop().create_task(self._dial_loop(host, port))
        elif command == "remove":
            task = self.added.pop(key, None)
            if task is None:
                raise RpcError(RPC_CLIENT_NODE_NOT_ADDED, "Error: Node has not been added.")
            task.cancel()
            for p in list(self.peers.values()):
                if p.dialed == key:
                    self._drop(p, "addnode remove")
        else:
            self._spawn(self._dial_once(host, port))

    def disconnect(self, node: str) -> bool:
        found = False
        for p in list(self.peers.values()):
            if node in (p.addr, p.dialed, p.address) or (
                    p.listen_port and node == f"{p.host}:{p.listen_port}"):
                self._drop(p, "disconnectnode")
                found = True
        return found

    def added_node_info(self) -> list[dict]:
        out = []
        for key in self.added:
            peers = [p for p in self.ready_peers() if p.dialed == key]
            out.append({"addednode": key, "connected": bool(peers),
                        "addresses": [{"address": key, "connected": "outbound"}] if peers else []})
        return out

    # -- connections ----------------------------------------------------------------------------
    async def _dial_loop(self, host: str, port: int) -> None:
        backoff = 0.25
        while True:
            started = time.monotonic()
            await self._dial_once(host, port)
            if time.monotonic() - started > 30:
                backoff = 0.25
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _dial_once(self, host: str, port: int) -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=1 << 16), HANDSHAKE_TIMEOUT)
        except (OSError, TimeoutError) as e:
            self.last_error = f"cannot connect to {host}:{port}: {e}"
            log.debug("%s", self.last_error)
            return
        peer = Peer(reader, writer, self.magic, inbound=False, dialed=f"{host}:{port}")
        await self._run_peer(peer)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.connection_count() >= self.max_connections:
            writer.close()
            return
        # The listening server started this task, not _spawn: count it among the network's
        # tasks so that close() cancels and awaits it too (a block it is connecting must end
        # before the node closes its chain and store).
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        peer = Peer(reader, writer, self.magic, inbound=True)
        self._make_room(peer.host)
        await self._run_peer(peer)

    def _make_room(self, host: str) -> None:
        """Keep unauthenticated inbound connections under the caps (in total and per remote
        IP) by closing the oldest of them, so idle or slow connections cannot hold slots a
        permitted peer needs: its handshake takes milliseconds, theirs never finishes."""
        pending = [p for p in self.peers.values() if p.inbound and not p.ready and not p.closed]
        same = [p for p in pending if p.host == host]
        if len(same) >= MAX_PENDING_PER_IP:
            victims = same
        elif len(pending) >= MAX_PENDING:
            by_host: dict[str, list[Peer]] = {}
            for p in pending:
                by_host.setdefault(p.host, []).append(p)
            victims = max(by_host.values(), key=len)
        else:
            return
        oldest = min(victims, key=lambda p: p.opened)
        log.debug("evicting unauthenticated connection %s to make room", oldest.addr)
        oldest.close()

    async def _run_peer(self, peer: Peer) -> None:
        self.peers[peer.id] = peer
        reason = "connection closed"
        try:
            if await self._handshake(peer):
                await self._serve(peer)
        except (asyncio.IncompleteReadError, ConnectionError):
            reason = "connection closed by peer"
        except FrameError as e:
            reason = f"framing error: {e}"
            self.misbehave(peer, BAN_SCORE, reason)
        except DecodeError as e:
            reason = f"malformed message: {e}"
            self.misbehave(peer, BAN_SCORE, reason)
        except TimeoutError:
            reason = "handshake timed out"
            log.debug("peer %s: handshake not finished within %.1f s", peer.addr,
                      PREAUTH_TIMEOUT)
        except asyncio.CancelledError:
            reason = "shutting down"
            raise
        finally:
            self.peers.pop(peer.id, None)
            forgotten = self._forget_peer(peer)
            if peer.ready:
                log.info("peer %s (%s) disconnected: %s (%d requested hashes forgotten)",
                         peer.addr, peer.address, reason, forgotten)
            peer.close()
            if self._sync_peer is peer:
                self._sync_peer = None
                self._branch = []

    def _drop(self, peer: Peer, reason: str) -> None:
        log.info("dropping peer %s (%s): %s", peer.addr, peer.address or "no handshake", reason)
        peer.close()

    def misbehave(self, peer: Peer, score: int, reason: str) -> None:
        peer.banscore += score
        if not peer.address_hash:
            # Anyone can open connections and send garbage: one line per interval, not one
            # per connection, and nothing to ban before a key was proven.
            self._preauth_log.warning("peer %s (no handshake) dropped: %s", peer.addr, reason)
            peer.close()
            return
        log.warning("peer %s (%s) misbehaved: %s (ban score %d)", peer.addr,
                    peer.address, reason, peer.banscore)
        if peer.banscore >= BAN_SCORE:
            self.bans[peer.address_hash] = time.time() + BAN_SECONDS
            log.warning("banning %s for %d s", peer.address, BAN_SECONDS)
            self._drop(peer, reason)

    def is_banned(self, address_hash: bytes) -> bool:
        until = self.bans.get(address_hash)
        if until is None:
            return False
        if until < time.time():
            del self.bans[address_hash]
            return False
        return True

    # -- handshake ------------------------------------------------------------------------------
    def _handshake_key(self) -> Any:
        wallet = self.ctx.wallet
        local = self.ctx.setting("handshakelocal")
        if local:
            key = wallet.get(self.ctx.codec.decode(local))
            if key is not None:
                return key
        return wallet.default

    async def _handshake(self, peer: Peer) -> bool:
        """Key exchange, then the signed transcript, then permission; True once both sides
        accepted (READY). Nothing of the chain's state is sent before the peer proved a key
        with connect permission (its READY carries our height and tip)."""
        # Short, because an unauthenticated connection holds a slot: a flood of idle ones
        # is cut loose quickly (the connection caps in _accept do the rest).
        async with asyncio.timeout(PREAUTH_TIMEOUT):
            return await self._run_handshake(peer)

    async def _key_exchange(self, peer: Peer) -> bool:
        noise = NoiseHandshake(initiator=not peer.inbound, static_secret=self._noise_static)
        if peer.inbound:
            msg_type, payload = await self._read_first(peer)
            if msg_type is None:
                return False  # a joining node's GETPARAMS, answered
        else:
            peer.send(Msg.NOISE, noise.first())
            msg_type, payload = await read_frame(peer.reader, self.magic, MAX_CLEAR_FRAME)
        while True:
            peer.bytesrecv += len(payload) + HEADER_SIZE
            if msg_type != Msg.NOISE:
                raise HandshakeError(f"message {msg_type} in clear during the key exchange")
            reply = noise.receive(payload)
            if reply is not None:
                peer.send(Msg.NOISE, reply)
            if noise.complete:
                break
            msg_type, payload = await read_frame(peer.reader, self.magic, MAX_CLEAR_FRAME)
        peer.session_hash = noise.handshake_hash
        peer.transport = noise.transport()
        return True

    async def _run_handshake(self, peer: Peer) -> bool:
        if not await self._key_exchange(peer):
            return False
        key = self._handshake_key()
        initiator = not peer.inbound
        peer.local_address = self.ctx.codec.encode(key.pubkey_hash)
        peer.send(Msg.HELLO, m.Hello(m.PROTOCOL, self.chain.chain_id, self.genesis,
                                     self.port if self.listen else 0, key.pubkey).encode())
        peer_hello: m.Hello | None = None
        ready: m.Ready | None = None
        authed = False
        # Neither side counts the connection before the other has accepted it (READY):
        # a node refused for lacking connect must never show up as connected, even briefly.
        while not (authed and ready is not None):
            msg_type, payload = await peer.read(MAX_HANDSHAKE_MESSAGE)
            if msg_type == Msg.REJECT:
                reason = m.decode_text(payload)
                self.refused_reason = reason
                log.warning("peer %s refused the connection: %s", peer.addr, reason)
                return False
            if msg_type == Msg.HELLO and peer_hello is None:
                peer_hello = m.Hello.decode(payload)
                if peer_hello.chain_id != self.chain.chain_id or peer_hello.genesis != self.genesis:
                    self._reject(peer, "different chain (parameters or genesis differ)")
                    return False
                if not is_valid_pubkey(peer_hello.pubkey):
                    raise HandshakeError("the HELLO claims an invalid public key")
                sig = sign_auth(key, self.chain.chain_id, peer.session_hash, initiator,
                                peer_hello.pubkey)
                peer.send(Msg.AUTH, m.encode_auth(key.pubkey, sig))
            elif msg_type == Msg.AUTH and peer_hello is not None and not authed:
                pub, sig = m.decode_auth(payload)
                try:
                    check_auth(pub, sig, chain_id=self.chain.chain_id,
                               handshake_hash=peer.session_hash, signer_initiator=not initiator,
                               claimed_pub=peer_hello.pubkey, my_pub=key.pubkey)
                except HandshakeError as e:
                    self._reject(peer, str(e))
                    return False
                peer.address_hash = hash160(pub)
                peer.address = self.ctx.codec.encode(peer.address_hash)
                why = self._refusal(peer.address_hash)
                if why:
                    self._reject(peer, why)
                    return False
                authed = True
                peer.send(Msg.READY, m.Ready(self.chain.height, bytes(
                    self.chain.state.tip_hash or ZERO_HASH)).encode())
            elif msg_type == Msg.READY and authed and ready is None:
                # The peer sends AUTH (on our HELLO) before READY (on our AUTH), so a READY
                # before we accepted its AUTH is out of order.
                ready = m.Ready.decode(payload)
            else:
                raise HandshakeError(f"unexpected message {msg_type} during the handshake")
        assert peer_hello is not None
        for other in self.ready_peers():
            if other.address_hash == peer.address_hash:
                # Keep the connection dialed by the node with the smaller address, so both
                # ends drop the same duplicate.
                mine = key.pubkey_hash
                keep_new = (not peer.inbound) == (mine < peer.address_hash)
                victim = other if keep_new else peer
                self._drop(victim, "duplicate connection")
                if victim is peer:
                    return False
        peer.listen_port = peer_hello.listen_port
        peer.version = peer_hello.version
        peer.start_height = peer.best_height = ready.height
        peer.best_tip = ready.tip
        peer.ready = True
        self.refused_reason = ""
        self._announce_pool(peer)
        log.info("connected to %s peer %s (address %s, height %d, encrypted)",
                 "inbound" if peer.inbound else "outbound", peer.addr, peer.address,
                 ready.height)
        self._maybe_sync(peer)
        return True

    async def _read_first(self, peer: Peer) -> tuple[int | None, bytes]:
        """An inbound connection's first frame: a Noise message, or a joining node's
        GETPARAMS (the one exchange open to anyone: the chain's parameters)."""
        head_magic = await peer.reader.readexactly(4)
        data = head_magic + await peer.reader.readexactly(HEADER_SIZE - 4)
        magic = head_magic
        if magic not in (self.magic, BOOTSTRAP_MAGIC):
            raise FrameError("wrong network magic (another chain?)")
        # Re-read the frame through the normal parser by pushing the header back.
        feeder = asyncio.StreamReader()
        feeder.feed_data(data)
        length = int.from_bytes(data[5:9], "little")
        if length > MAX_CLEAR_FRAME:
            raise FrameError("oversized first frame")
        feeder.feed_data(await peer.reader.readexactly(length))
        msg_type, payload = await read_frame(feeder, magic, MAX_CLEAR_FRAME)
        if magic == BOOTSTRAP_MAGIC:
            if msg_type != Msg.GETPARAMS:
                raise FrameError("only GETPARAMS may use the bootstrap magic")
            self._answer_params(peer, payload)
            return None, b""
        return msg_type, payload

    def _answer_params(self, peer: Peer, payload: bytes) -> None:
        from config.params import render_params

        asker = payload[:20] if len(payload) >= 20 else b""
        may = bool(asker) and not self._refusal(asker)
        text = render_params(self.ctx.params)
        peer.writer.write(encode_frame(BOOTSTRAP_MAGIC, Msg.PARAMS, m.encode_params(text, may)))
        log.info("sent chain parameters to joining node %s", peer.addr)

    def _refusal(self, address_hash: bytes) -> str:
        if self.is_banned(address_hash):
            return "address is banned for misbehaving"
        h = self.chain.height
        if h < 0:
            return ""  # a joining node cannot judge permissions before it has the chain
        if not has_permission(self.chain.state, self.chain.rules, address_hash, "connect", h + 1):
            addr = self.ctx.codec.encode(address_hash)
            return (f"address {addr} has no connect permission on chain "
                    f"{self.ctx.chain_name}; an admin can grant it with: chainmill cli "
                    f"{self.ctx.chain_name} grant {addr} connect,send,receive")
        return ""

    def _reject(self, peer: Peer, reason: str) -> None:
        log.warning("refusing peer %s (%s): %s", peer.addr, peer.address or "?", reason)
        peer.send(Msg.REJECT, m.encode_text(reason))

    # -- serving --------------------------------------------------------------------------------
    async def _serve(self, peer: Peer) -> None:
        handlers = {
            Msg.PING: self.on_ping, Msg.PONG: self.on_pong, Msg.INV: self.on_inv,
            Msg.GETDATA: self.on_getdata, Msg.TX: self.on_tx, Msg.BLOCK: self.on_block,
            Msg.GETBLOCKS: self.on_getblocks, Msg.BLOCKS: self.on_blocks,
            Msg.NOTFOUND: self.on_notfound, Msg.REJECT: self.on_reject,
            Msg.CMPCTBLOCK: self.on_cmpctblock, Msg.GETBLOCKTXN: self.on_getblocktxn,
            Msg.BLOCKTXN: self.on_blocktxn,
        }
        incoming = (Msg.TX, Msg.BLOCK, Msg.BLOCKS, Msg.CMPCTBLOCK, Msg.BLOCKTXN)
        clock = asyncio.get_running_loop().time
        turn_ends = clock() + SERVE_SLICE
        while not peer.closed:
            msg_type, payload = await peer.read(self.max_frame)
            handler = handlers.get(msg_type)
            if handler is None:
                self.misbehave(peer, 10, f"unknown message type {msg_type}")
                continue
            if "incoming" in self.ctx.paused and msg_type in incoming:
                continue
            await handler(peer, payload)
            # A peer whose messages are already buffered would otherwise keep the loop
            # (reading buffered data does not yield): let RPC and other peers run.
            if clock() >= turn_ends:
                await asyncio.sleep(0)
                turn_ends = clock() + SERVE_SLICE

    async def on_ping(self, peer: Peer, payload: bytes) -> None:
        peer.send(Msg.PONG, payload[:8])

    async def on_pong(self, peer: Peer, payload: bytes) -> None:
        if peer.ping_sent:
            peer.pingtime = time.monotonic() - peer.ping_sent
            peer.ping_sent = 0.0

    async def on_reject(self, peer: Peer, payload: bytes) -> None:
        log.warning("peer %s: %s", peer.addr, m.decode_text(payload))

    async def on_notfound(self, peer: Peer, payload: bytes) -> None:
        for _, h in m.decode_inv(payload):
            self._answered(peer, h)

    async def _pinger(self) -> None:
        while True:
            await asyncio.sleep(PING_EVERY)
            for p in self.ready_peers():
                self._expire_requests(p)
                p.ping_sent = time.monotonic()
                p.send(Msg.PING, os.urandom(8))

    # -- relay ----------------------------------------------------------------------------------
    def announce_tx(self, tx: Transaction, source: Peer | None = None) -> None:
        self._queue_inv(Inv.TX, tx.txid, source)

    def announce_block(self, block: Block, source: Peer | None = None) -> None:
        """Push a block just connected to the peers that do not have it: as a compact block
        to peers that take them (they rebuild it from their mempools, so its transactions
        cross the network once, not twice), as an INV to older ones."""
        h = block.hash
        self._recent[h] = block
        recent_txs = self._recent_txs
        for t in block.txs:
            recent_txs[t.txid] = t.signature
        while len(self._recent) > RECENT_BLOCKS:
            for t in self._recent.popitem(last=False)[1].txs:
                if recent_txs.get(t.txid) == t.signature:
                    del recent_txs[t.txid]
        compact: bytes | None = None
        for p in self.ready_peers():
            # A block may revoke a peer's connect permission: from then on it gets nothing
            # (as MultiChain, which disconnects such peers).
            why = self._refusal(p.address_hash)
            if why:
                self._drop(p, f"no longer permitted: {why}")
                continue
            if h not in p.known and p is not source:
                p.remember(h)
                if p.version >= m.COMPACT_BLOCKS_SINCE:
                    if compact is None:
                        compact = m.CompactBlock(block.header, block.signature, tuple(
                            (t.txid, m.raw_hash(t.raw)) for t in block.txs)).encode()
                    p.send(Msg.CMPCTBLOCK, compact)
                else:
                    p.send(Msg.INV, m.encode_inv([(Inv.BLOCK, h)]))

    def _announce_pool(self, peer: Peer) -> None:
        """Tell a newly connected peer what our mempool holds, so transactions made while
        the two were apart (a partition's minority side) reach miners."""
        txids = list(self.ctx.mempool.entries)
        for t in txids:
            peer.remember(t)
        for i in range(0, len(txids), m.MAX_INV):
            peer.send(Msg.INV, m.encode_inv([(Inv.TX, t) for t in txids[i:i + m.MAX_INV]]))

    def _queue_inv(self, kind: int, h: bytes, source: Peer | None) -> None:
        if source is not None:
            source.remember(h)
        self._inv_queue.append((kind, h, b""))
        if self._inv_task is None or self._inv_task.done():
            self._inv_task = self._spawn(self._flush_inv())

    async def _flush_inv(self) -> None:
        await asyncio.sleep(INV_FLUSH)
        queue, self._inv_queue = self._inv_queue, []
        for p in self.ready_peers():
            items = [(k, h) for k, h, _ in queue if h not in p.known]
            for _, h in items:
                p.remember(h)
            for i in range(0, len(items), m.MAX_INV):
                p.send(Msg.INV, m.encode_inv(items[i:i + m.MAX_INV]))

    async def on_inv(self, peer: Peer, payload: bytes) -> None:
        self._expire_requests(peer)
        room = MAX_REQUESTED_PER_PEER - len(peer.requested)
        blocks_looked_up = 0
        want = []
        for kind, h in m.decode_inv(payload):
            if h in self._requested:
                peer.remember(h)
                continue
            if kind == Inv.TX:
                if h in self.ctx.mempool.entries or h in self._recent_txs:
                    peer.remember(h)
                    continue
            else:
                blocks_looked_up += 1
                if blocks_looked_up > MAX_BLOCK_INV:
                    continue  # a store lookup each: not for a flood
                if self.ctx.store.block_row(hash_hex=h.hex()) is not None:
                    peer.remember(h)
                    continue
            if len(want) >= room:
                continue  # over this peer's budget: ignored (and not remembered)
            peer.remember(h)
            want.append((kind, h))
        if want:
            deadline = time.monotonic() + REQUEST_TIMEOUT
            for _, h in want:
                self._requested[h] = peer.id
                peer.requested[h] = deadline
            peer.send(Msg.GETDATA, m.encode_inv(want))

    def _answered(self, peer: Peer, h: bytes) -> None:
        """`h` arrived (or the peer has not got it): no longer outstanding."""
        if peer.requested.pop(h, None) is not None and self._requested.get(h) == peer.id:
            del self._requested[h]

    def _expire_requests(self, peer: Peer) -> None:
        """Forget hashes asked of `peer` that it never answered (oldest first)."""
        now = time.monotonic()
        while peer.requested:
            h, deadline = next(iter(peer.requested.items()))
            if deadline > now:
                break
            del peer.requested[h]
            if self._requested.get(h) == peer.id:
                del self._requested[h]

    def _forget_peer(self, peer: Peer) -> int:
        """Drop everything outstanding with a peer that left; returns how many hashes."""
        n = len(peer.requested)
        for h in peer.requested:
            if self._requested.get(h) == peer.id:
                del self._requested[h]
        peer.requested.clear()
        peer.known.clear()
        peer.known_order.clear()
        return n

    async def on_getdata(self, peer: Peer, payload: bytes) -> None:
        missing = []
        for kind, h in m.decode_inv(payload):
            if kind == Inv.TX:
                e = self.ctx.mempool.entries.get(h)
                if e is None:
                    missing.append((kind, h))
                else:
                    peer.send(Msg.TX, e.tx.raw)
            else:
                row = self.ctx.store.block_row(hash_hex=h.hex())
                raw = self.ctx.store.block_raw(row.height) if row else None
                if raw is None:
                    missing.append((kind, h))
                else:
                    peer.send(Msg.BLOCK, raw)
        if missing:
            peer.send(Msg.NOTFOUND, m.encode_inv(missing))

    async def on_tx(self, peer: Peer, payload: bytes) -> None:
        tx = Transaction.decode(payload)
        self._answered(peer, tx.txid)
        peer.remember(tx.txid)
        txid, sig = tx.txid, tx.signature
        if txid in self.ctx.mempool.entries or self._recent_txs.get(txid) == sig:
            return  # pooled already, or confirmed by a recent block (the very same tx)
        queued = self._tx_queued.get(txid)
        if queued is not None and queued.signature == sig:
            return  # the same tx from another peer, waiting for its check
        # Signatures are checked in batches on the verifier's threads, not one by one on
        # the event loop; a full queue holds this peer's reading back (TCP backpressure).
        while len(self._tx_queue) >= RELAY_QUEUE and not peer.closed:
            self._tx_drained.clear()
            await self._tx_drained.wait()
        self._tx_queue.append((peer, tx))
        self._tx_queued.setdefault(txid, tx)
        if self._tx_task is None or self._tx_task.done():
            self._tx_task = self._spawn(self._admit_relayed())

    async def _admit_relayed(self) -> None:
        """Verify queued relayed transactions a batch at a time (the queue fills while a
        batch is checked, so the batch size follows the load), then admit them in order."""
        while self._tx_queue:
            if len(self._tx_queue) < RELAY_GATHER_MIN:
                await asyncio.sleep(RELAY_GATHER)
            batch = self._tx_queue[:RELAY_BATCH]
            del self._tx_queue[:RELAY_BATCH]
            self._tx_drained.set()
            state = self.chain.state
            try:
                results, confirmed = await asyncio.to_thread(self._check_relayed,
                                                             [t for _, t in batch])
            finally:
                queued = self._tx_queued
                for _, tx in batch:
                    if queued.get(tx.txid) is tx:
                        del queued[tx.txid]
            # Confirmed-or-not was asked on `state`: if the chain changed meanwhile, each tx
            # is asked again on admission (a confirmed tx must never be pooled again). Every
            # change (a connect, a rollback, the restore after a failed reorganisation) puts
            # a new state object in place, so this also sees a rollback whose restore ended
            # on the same tip hash, which a comparison of tip hashes would not.
            unchanged = state is self.chain.state
            for (peer, tx), ok in zip(batch, results, strict=True):
                if not ok:
                    self.misbehave(peer, BAN_SCORE,
                                   f"transaction {tx.txid.hex()} has a bad signature")
                    continue
                if tx.txid in confirmed:
                    continue
                self._admit_tx(peer, tx, not_in_chain=unchanged)

    def _check_relayed(self, txs: list[Transaction]) -> tuple[list[bool], set[bytes]]:
        """Off the event loop: the signatures (worker processes), and which of the txs are
        confirmed already (one store query for the batch, not one per transaction).

        A tx that is, byte for byte, one of a recent block's (same txid, so same body, and
        same signature) is not verified again: connect_block verified it. Those are the txs
        that were asked for before their block arrived and answered after it connected."""
        recent = self._recent_txs  # changed by the loop meanwhile: each tx is read once
        seen = [recent.get(t.txid) == t.signature for t in txs]
        checked = iter(self.chain.verifier([t for t, s in zip(txs, seen, strict=True)
                                            if not s]))
        results = [True if s else next(checked) for s in seen]
        known = self.ctx.store.known_txids([t.txid.hex() for t in txs])
        return results, {bytes.fromhex(t) for t in known}

    def _admit_tx(self, peer: Peer, tx: Transaction, not_in_chain: bool = False) -> None:
        try:
            self.ctx.submit_tx(tx, local=False, verified=True, relay=False,
                               not_in_chain=not_in_chain)
        except AlreadyInChain:
            return
        except ChainmillError as e:
            # Often a state difference while one side is behind: not proof of malice.
            log.debug("transaction %s from %s refused: %s", tx.txid.hex(), peer.addr, e)
            return
        self.announce_tx(tx, source=peer)

    async def on_block(self, peer: Peer, payload: bytes) -> None:
        block = Block.decode(payload, self.max_frame)
        h = block.hash
        self._answered(peer, h)
        peer.remember(h)
        if block.height > peer.best_height:
            peer.best_height, peer.best_tip = block.height, h
        await self._connect_from(peer, block)

    async def on_cmpctblock(self, peer: Peer, payload: bytes) -> None:
        """A new block as txids and raw hashes: rebuilt from the mempool's transactions (the
        very bytes the miner had), the missing ones asked for with GETBLOCKTXN. Every check
        of a full block follows (connect_block): a forged one is refused and penalised."""
        cb = m.CompactBlock.decode(payload)
        header = cb.header
        h = header.hash
        self._answered(peer, h)
        peer.remember(h)
        if header.height > peer.best_height:
            peer.best_height, peer.best_tip = header.height, h
        if self.ctx.store.block_row(hash_hex=h.hex()) is not None:
            return
        if header.prev_hash != self.chain.state.tip_hash or self._sync_peer is not None:
            self._maybe_sync(peer)  # not the next block here: the full blocks come by sync
            return
        pooled, queued = self.ctx.mempool.entries, self._tx_queued
        txs: list[Transaction | None] = []
        missing: list[int] = []
        for i, (txid, rh) in enumerate(cb.ids):
            e = pooled.get(txid)
            # Not pooled yet: perhaps received and waiting for its relay check. The block's
            # check verifies it (only pooled txs count as verified), so it is safe to use.
            t = e.tx if e is not None else queued.get(txid)
            if t is not None and m.raw_hash(t.raw) == rh:
                txs.append(t)
            else:
                txs.append(None)
                missing.append(i)
        if missing:
            peer.pending_compact = (cb, txs)  # one per peer: a newer block replaces it
            peer.send(Msg.GETBLOCKTXN, m.encode_getblocktxn(h, missing))
            return
        await self._connect_from(peer, Block(header, cb.signature, txs))

    async def on_getblocktxn(self, peer: Peer, payload: bytes) -> None:
        h, indexes = m.decode_getblocktxn(payload)
        block = self._recent.get(h)
        if block is None:
            row = self.ctx.store.block_row(hash_hex=h.hex())
            raw = self.ctx.store.block_raw(row.height) if row else None
            if raw is None:
                peer.send(Msg.NOTFOUND, m.encode_inv([(Inv.BLOCK, h)]))
                return
            block = Block.decode(raw)
        n = len(block.txs)
        if any(i >= n for i in indexes):
            self.misbehave(peer, BAN_SCORE, "GETBLOCKTXN asks for transactions the block has not")
            return
        peer.send(Msg.BLOCKTXN, m.encode_blocktxn(h, [block.txs[i].raw for i in indexes]))

    async def on_blocktxn(self, peer: Peer, payload: bytes) -> None:
        h, raws = m.decode_blocktxn(payload, self.max_frame)
        pending = peer.pending_compact
        if pending is None or pending[0].header.hash != h:
            return  # not asked, or superseded by a newer compact block
        peer.pending_compact = None
        cb, txs = pending
        missing = [i for i, t in enumerate(txs) if t is None]
        if len(raws) != len(missing):
            self.misbehave(peer, BAN_SCORE, "BLOCKTXN does not answer the GETBLOCKTXN")
            return
        for i, raw in zip(missing, raws, strict=True):
            tx = Transaction.decode(raw)
            if (tx.txid, m.raw_hash(tx.raw)) != cb.ids[i]:
                self.misbehave(peer, BAN_SCORE, "BLOCKTXN transaction is not the one announced")
                return
            txs[i] = tx
        await self._connect_from(peer, Block(cb.header, cb.signature, txs))

    async def _connect_from(self, peer: Peer, block: Block) -> None:
        """A block a peer sent (whole or rebuilt): connected if it extends the tip, else a
        reason to sync with that peer."""
        h = block.hash
        tip = self.chain.state.tip_hash
        if block.header.prev_hash == tip and self._sync_peer is None:
            try:
                await self.ctx.connect_block(block)
            except InvalidBlock as e:
                if self._tip_moved(block):
                    # A rival block (our miner's, another peer's) was connected while this
                    # one waited for the chain lock: a fork to choose, not misbehaviour.
                    self._maybe_sync(peer)
                else:
                    self.misbehave(peer, BAN_SCORE, f"invalid block {h.hex()}: {e}")
            return
        if self.ctx.store.block_row(hash_hex=h.hex()) is not None:
            return
        self._maybe_sync(peer)

    # -- sync and fork choice -------------------------------------------------------------------
    def _better(self, height: int, tip: bytes) -> bool:
        mine = self.chain.height
        if height != mine:
            return height > mine
        return bool(tip) and tip != self.chain.state.tip_hash and tip < self.chain.state.tip_hash

    def _maybe_sync(self, peer: Peer) -> None:
        current = self._sync_peer
        if current is not None and not current.closed:
            if time.monotonic() - self._sync_last < SYNC_STALL:
                return
            log.warning("sync peer %s sent nothing for %.0f s; trying another", current.addr,
                        SYNC_STALL)
        if not self._better(peer.best_height, peer.best_tip):
            return
        self._sync_peer = peer
        self._branch = []
        self._sync_last = time.monotonic()
        self._request_blocks(peer, self._locator())

    def _locator(self) -> list[bytes]:
        out, step, h = [], 1, self.chain.height
        while h >= 0 and len(out) < m.MAX_LOCATOR - 1:
            out.append(bytes.fromhex(self.ctx.hash_at(h)))
            if len(out) >= 10:
                step *= 2
            h -= step
        if self.chain.height >= 0:
            out.append(bytes(self.genesis))
        return out

    def _request_blocks(self, peer: Peer, locator: list[bytes]) -> None:
        peer.send(Msg.GETBLOCKS, m.encode_locator(locator, SYNC_BATCH))

    async def on_getblocks(self, peer: Peer, payload: bytes) -> None:
        locator, limit = m.decode_locator(payload)
        start = 0
        for h in locator:
            row = self.ctx.store.block_row(hash_hex=h.hex())
            if row is not None:
                start = row.height + 1
                break
        limit = max(1, min(limit, SYNC_BATCH))
        raws, size = [], 0
        for raw in self.ctx.store.blocks_raw(start, limit):
            raws.append(raw)
            size += len(raw)
            if size > SYNC_BYTES:
                break
        peer.send(Msg.BLOCKS, m.encode_blocks(self.chain.height, raws))

    async def on_blocks(self, peer: Peer, payload: bytes) -> None:
        if peer.sync_stale:
            # The answer to a batch asked for ahead of one that then failed: moot (a peer
            # answers in order, so it is the next BLOCKS to arrive).
            peer.sync_stale -= 1
            return
        if peer.sync_ahead:
            peer.sync_ahead -= 1
        if peer is not self._sync_peer:
            return
        self._sync_last = time.monotonic()
        peer_height, raws = m.decode_blocks(payload, self.max_frame)
        peer.best_height = max(peer.best_height, peer_height)
        blocks, chunks = self._decode_batch(raws)
        connecting = self._sync_connecting
        if connecting is not None and not (blocks and chunks and self._extends_tip(blocks[0])):
            # Anything but the continuation of the batch being connected is handled on the
            # chain as it is once that connect is over: decoded again against that tip.
            _cancel(chunks)
            if not await self._settle_sync():
                return  # that batch failed: this one, asked for after it, is moot
            blocks, chunks = self._decode_batch(raws)
        if not blocks:
            self._finish_sync(peer)
            return
        for a, b in zip(blocks, blocks[1:], strict=False):
            if b.header.prev_hash != a.hash:
                _cancel(chunks)
                self.misbehave(peer, BAN_SCORE, "sync batch is not a chain")
                self._finish_sync(peer)
                return
        for b in blocks:
            # The peer has them: once connected, they are not pushed back to it (a compact
            # block hashes every transaction, and the peer would decode it for nothing).
            peer.remember(b.hash)
        first = blocks[0]
        if self._extends_tip(first):
            ahead = blocks[-1].height < peer.best_height and not peer.closed
            if ahead:
                # Pipelined: the peer reads and sends the next batch while this one is
                # verified and connected, instead of both sides taking turns to idle.
                self._request_blocks(peer, [blocks[-1].hash])
                peer.sync_ahead += 1
            # The batch connects after the one before it (if that is still connecting), in a
            # task of its own; this call waits for that one only. So the next batch is read
            # and decoded, and its signatures checked on the workers, while this one is
            # connected: the workers no longer idle through each batch's last connect and
            # the next batch's first decode. At most two batches are in hand.
            before = connecting[0] if connecting is not None else None
            task = self._spawn(self._connect_batch(peer, blocks, chunks, ahead, before))
            task.add_done_callback(lambda done: self._sync_connect_ended(peer, done))
            self._sync_connecting = (task, blocks[-1])
            if before is not None:
                await before
            return
        else:
            if not self._branch:
                fork = self.ctx.store.block_row(hash_hex=first.header.prev_hash.hex())
                if fork is None or fork.height != first.height - 1:
                    self.misbehave(peer, 20, "sync batch does not connect to this chain")
                    self._finish_sync(peer)
                    return
            elif first.header.prev_hash != self._branch[-1].hash:
                self.misbehave(peer, 20, "sync batch does not continue the branch")
                self._finish_sync(peer)
                return
            self._branch.extend(blocks)
            if len(self._branch) > MAX_REORG:
                self._finish_sync(peer)
                return
            last = self._branch[-1]
            if last.height < peer_height:
                self._request_blocks(peer, [last.hash])
                return
            branch, self._branch = self._branch, []
            if self._better(last.height, last.hash):
                await self._reorganise(peer, branch)
        last_height = blocks[-1].height
        if last_height < peer.best_height and not peer.closed:
            self._request_blocks(peer, self._locator())
        else:
            self._finish_sync(peer)

    def _finish_sync(self, peer: Peer) -> None:
        if self._sync_peer is peer:
            self._sync_peer = None
            self._branch = []
        # Another peer may be ahead of us now.
        for p in self.ready_peers():
            if p is not peer and self._better(p.best_height, p.best_tip):
                self._maybe_sync(p)
                break

    async def _connect_batch(self, peer: Peer, blocks: list[Block], chunks: list[SyncChunk],
                             ahead: bool, before: asyncio.Task[bool] | None) -> bool:
        """Connect a sync batch that continues the tip, once the batch `before` it is
        connected; then ask for more (unless asked already: `ahead`) or end the sync."""
        try:
            if before is not None and not await before:
                _cancel(chunks)  # the batch before failed: this one is moot
                return False
        except BaseException:
            _cancel(chunks)
            raise
        ok = await self._extend(peer, blocks, chunks)
        if not ok:
            peer.sync_stale += peer.sync_ahead
            peer.sync_ahead = 0
            return False
        if not ahead:
            if blocks[-1].height < peer.best_height and not peer.closed:
                self._request_blocks(peer, self._locator())
            else:
                self._finish_sync(peer)
        return True

    def _sync_connect_ended(self, peer: Peer, task: asyncio.Task[bool]) -> None:
        if self._sync_connecting is not None and self._sync_connecting[0] is task:
            self._sync_connecting = None
        if not task.cancelled() and task.exception() is not None:
            # As an error in a handler does: the peer goes (the next batch's handler, which
            # waits for this one, also raises it).
            self._drop(peer, f"sync batch could not be connected: {task.exception()!r}")

    async def _settle_sync(self) -> bool:
        """Wait for the sync batch being connected, if any; False if it failed."""
        connecting = self._sync_connecting
        if connecting is None:
            return True
        return await connecting[0]

    def _extends_tip(self, first: Block) -> bool:
        """True when a sync batch starting with `first` continues this node's chain, or the
        batch being connected (and no fork branch is being collected)."""
        if self._branch:
            return False
        if self._sync_connecting is not None:
            return first.header.prev_hash == self._sync_connecting[1].hash
        return first.header.prev_hash == self.chain.state.tip_hash or (
            first.height == 0 and self.chain.height < 0)

    def _decode_batch(self, raws: list[bytes]) -> tuple[list[Block], list[SyncChunk]]:
        """Decode a sync batch; if it continues the tip, hand each chunk of about
        VERIFY_CHUNK transactions to the verifier as soon as it is decoded.

        The worker processes check a chunk's signatures while the main process decodes the
        rest of the batch and connects the chunks before it (they used to idle while the
        whole batch was decoded, and the main process while the first chunk was checked). Any block that does not decode still refuses the whole batch before
        anything is connected (the checks already started are cancelled or dropped)."""
        blocks: list[Block] = []
        chunks: list[SyncChunk] = []
        if not raws:
            return blocks, chunks
        pooled = self.ctx.mempool.entries
        chunk: list[Block] = []
        txs: list[Transaction] = []
        verify = False
        try:
            with collector_paused():  # the decoded blocks live until connected (no cycles)
                for raw in raws:
                    b = Block.decode(raw, self.max_frame)
                    if not blocks:
                        verify = self._extends_tip(b)
                    blocks.append(b)
                    if not verify:
                        continue
                    chunk.append(b)
                    txs.extend(t for t in b.txs if t.txid not in pooled)
                    if len(txs) >= VERIFY_CHUNK:
                        chunks.append(SyncChunk(chunk, txs, self._verify(txs)))
                        chunk, txs = [], []
        except BaseException:
            _cancel(chunks)
            raise
        if chunk:
            chunks.append(SyncChunk(chunk, txs, self._verify(txs)))
        return blocks, chunks

    async def _extend(self, peer: Peer, blocks: list[Block], chunks: list[SyncChunk]) -> bool:
        """Connect a decoded batch that continues the tip, chunk by chunk as the verifier
        answers (`chunks` from `_decode_batch`: every chunk's check is already running)."""
        try:
            return await self._connect_chunks(peer, blocks, chunks)
        except BaseException:
            _cancel(chunks)  # a store error or shutdown: no check is left unanswered
            raise

    async def _connect_chunks(self, peer: Peer, blocks: list[Block],
                              chunks: list[SyncChunk]) -> bool:
        t0 = time.monotonic()
        items = 0
        for i, c in enumerate(chunks):
            results = await c.verified
            if not all(results):
                _cancel(chunks[i + 1:])
                self.misbehave(peer, BAN_SCORE, "sync batch has a bad transaction signature")
                self._finish_sync(peer)
                return False
            verified = {t.txid for t in c.txs}
            # The chunk's blocks are validated one by one and written in one store
            # transaction (one commit instead of one per block).
            done = await self.ctx.connect_blocks(c.blocks, [
                {t.txid for t in b.txs if t.txid in verified or self._pooled_same(t)}
                for b in c.blocks])
            items += sum(len(t.ops) for d in done.connected for t in d.block.txs)
            if done.error is not None:
                e, b = done.error, c.blocks[len(done.connected)]
                _cancel(chunks[i + 1:])
                if self._tip_moved(b):
                    # Our miner extended the chain while the batch was being verified:
                    # ask again from the new tip instead of blaming the peer.
                    log.info("sync: the tip moved during a batch; asking %s again",
                             peer.addr)
                    self._finish_sync(peer)
                    self._maybe_sync(peer)
                else:
                    self.misbehave(peer, BAN_SCORE, f"invalid block {b.hash.hex()}: {e}")
                    self._finish_sync(peer)
                return False
        dt = max(time.monotonic() - t0, 1e-6)
        log.info("sync: height %d / peer height %d (%d blocks, %.0f items/s)",
                 self.chain.height, peer.best_height, len(blocks), items / dt)
        return True

    def _verify(self, txs: list[Transaction]) -> asyncio.Future:
        """Start checking `txs` now, on a thread of the sync's own pool that feeds the worker
        processes: unlike a coroutine task, the check begins while the caller keeps the loop
        busy."""
        loop = asyncio.get_running_loop()
        if not txs:
            fut = loop.create_future()
            fut.set_result([])
            return fut
        if self._checks is None:
            self._checks = ThreadPoolExecutor(SYNC_CHECK_THREADS, thread_name_prefix="sync-check")
        return loop.run_in_executor(self._checks, self.chain.verifier, txs)

    def _tip_moved(self, block: Block) -> bool:
        """True when `block` no longer builds on the tip (it was checked against an older one
        and the chain changed before it could be connected)."""
        return block.header.prev_hash != self.chain.state.tip_hash

    def _pooled_same(self, tx: Transaction) -> bool:
        e = self.ctx.mempool.entries.get(tx.txid)
        return e is not None and e.tx.signature == tx.signature

    async def _reorganise(self, peer: Peer, branch: list[Block]) -> None:
        fork_height = branch[0].height - 1
        depth = self.chain.height - fork_height
        rounds = int(self.ctx.setting("lockadminminerounds") or 0)
        locked = self.chain.reorg_lock(fork_height, rounds)
        if locked is not None:
            # Not proof of malice (the peer may have been cut off that long): refuse, no ban.
            log.warning("refusing a reorganisation from %s back to height %d: it would undo "
                        "the admin/mine permission change at height %d, older than "
                        "lock-admin-mine-rounds (%d rounds)", peer.addr, fork_height, locked,
                        rounds)
            return
        log.warning("reorganisation: replacing %d blocks above height %d with %d blocks from %s",
                    depth, fork_height, len(branch), peer.addr)
        ok, removed = await self.ctx.reorganise(fork_height, branch)
        if not ok:
            self.misbehave(peer, BAN_SCORE, "branch offered for a reorganisation is invalid")
        del removed
