"""One peer connection: a framed reader and a queued writer, with the stats getpeerinfo shows.

Until the key exchange finishes only clear frames (Noise messages, the bootstrap GETPARAMS)
pass; after it every message is sealed by the session's `Transport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

from node.p2p.framing import encode_frame
from node.p2p.session import Transport

log = logging.getLogger(__name__)

WRITE_QUEUE_BYTES = 64 * 1024 * 1024
KNOWN_LIMIT = 50_000
"""Hashes remembered per peer so they are not announced back to it (oldest forgotten)."""


class Peer:
    """A connected peer. `address` is the chain address it proved in the handshake."""

    _next_id = 0

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 magic: bytes, inbound: bool, dialed: str | None = None) -> None:
        Peer._next_id += 1
        self.id = Peer._next_id
        self.reader = reader
        self.writer = writer
        self.magic = magic
        self.inbound = inbound
        self.dialed = dialed
        peer = writer.get_extra_info("peername") or ("?", 0)
        local = writer.get_extra_info("sockname") or ("?", 0)
        self.host, self.port = peer[0], peer[1]
        self.addr = f"{peer[0]}:{peer[1]}"
        self.addrlocal = f"{local[0]}:{local[1]}"
        self.address = ""
        self.address_hash = b""
        self.local_address = ""
        self.listen_port = 0
        self.start_height = -1
        self.best_height = -1
        self.best_tip = b""
        self.conntime = int(time.time())
        self.lastsend = 0
        self.lastrecv = 0
        self.bytessent = 0
        self.bytesrecv = 0
        self.banscore = 0
        self.ping_sent = 0.0
        self.pingtime = 0.0
        self.known: set[bytes] = set()
        self.known_order: deque[bytes] = deque()
        self.requested: dict[bytes, float] = {}
        """Hashes asked of this peer (GETDATA) and not answered yet, with their deadline
        (monotonic); insertion order is deadline order."""
        self.version = 0
        """The protocol version of the peer's HELLO."""
        self.pending_compact: tuple[Any, list[Any]] | None = None
        """A compact block waiting for the BLOCKTXN answering our GETBLOCKTXN, with the
        transactions found so far (None where one is missing)."""
        self.sync_ahead = 0
        """Sync batches asked of this peer ahead of the one being connected."""
        self.sync_stale = 0
        """... of which the answers are to be dropped (the batch before them failed)."""
        self.transport: Transport | None = None
        self.session_hash = b""
        self.ready = False
        self.closed = False
        self.opened = time.monotonic()
        self._out: list[bytes] = []
        """Frames queued in this turn of the event loop, written together by `flush`."""
        self._out_bytes = 0

    @property
    def encrypted(self) -> bool:
        """True once the key exchange finished: every message since is sealed."""
        return self.transport is not None
    def remember(self, h: bytes) -> None:
        """Inventory this peer is known to have, so it is not announced back to it."""
        if h not in self.known:
            self.known.add(h)
            self.known_order.append(h)
            if len(self.known_order) > KNOWN_LIMIT:
                self.known.discard(self.known_order.popleft())

    def send(self, msg_type: int, payload: bytes) -> None:
        """Queue a message, sealed by the session (clear only before the key exchange)."""
        if self.transport is None:
            self._write(encode_frame(self.magic, msg_type, payload))
        else:
            self._write(self.transport.seal(msg_type, payload))

    async def read(self, max_size: int) -> tuple[int, bytes]:
        """The next sealed message; raises TransportError, or IncompleteReadError at EOF."""
        assert self.transport is not None, "read before the key exchange"
        msg_type, payload = await self.transport.read(self.reader, max_size)
        self.bytesrecv += len(payload)
        self.lastrecv = int(time.time())
        return msg_type, payload

    def _write(self, frame: bytes) -> None:
        """Queue `frame`; the frames of one event-loop turn go out in one write. A GETDATA
        for a thousand transactions is answered with a thousand messages, and a write each
        was a send() system call each (the largest part of serving them)."""
        if self.closed:
            return
        if self.writer.transport.get_write_buffer_size() + self._out_bytes > WRITE_QUEUE_BYTES:
            log.warning("peer %s does not read its messages; dropping it", self.addr)
            self.close()
            return
        if not self._out:
            asyncio.get_running_loop().call_soon(self.flush)
        self._out.append(frame)
        self._out_bytes += len(frame)
        self.bytessent += len(frame)
        self.lastsend = int(time.time())

    def flush(self) -> None:
        """Hand the queued frames to the transport (in order)."""
        if not self._out:
            return
        out, self._out, self._out_bytes = self._out, [], 0
        if not self.closed:
            with contextlib.suppress(Exception):  # a transport closed under us: nothing to do
                self.writer.write(out[0] if len(out) == 1 else b"".join(out))

    def close(self) -> None:
        if not self.closed:
            self.flush()  # a REJECT queued just before closing must still go out
            self.closed = True
            with contextlib.suppress(Exception):
                self.writer.close()
