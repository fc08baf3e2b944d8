"""One peer connection: a framed reader and a queued writer, with the stats getpeerinfo shows."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

from node.p2p.framing import encode_frame

log = logging.getLogger(__name__)

WRITE_QUEUE_BYTES = 64 * 1024 * 1024


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
        self.ready = False
        self.closed = False

    def remember(self, h: bytes) -> None:
        """Inventory this peer is known to have, so it is not announced back to it."""
        if h not in self.known:
            self.known.add(h)
            self.known_order.append(h)
            if len(self.known_order) > 200_000:
                self.known.discard(self.known_order.popleft())

    def send(self, msg_type: int, payload: bytes) -> None:
        if self.closed:
            return
        if self.writer.transport.get_write_buffer_size() > WRITE_QUEUE_BYTES:
            log.warning("peer %s does not read its messages; dropping it", self.addr)
            self.close()
            return
        frame = encode_frame(self.magic, msg_type, payload)
        self.writer.write(frame)
        self.bytessent += len(frame)
        self.lastsend = int(time.time())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                self.writer.close()
