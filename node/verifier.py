"""Signature verification of batches of transactions on worker processes.

Why processes and not threads: coincurve releases the GIL inside libsecp256k1, but every call
also runs Python (the wrapper, the digest) that needs the GIL back, so a verifying thread
waits for it after each signature whenever the event loop or a block connect is busy in
Python (measured on 2 cores: about 1,400 verifies/s wall on a thread against 2,700-4,400 on
a process while the main thread runs Python).

Each worker process has a pipe of its own: the calling thread writes a batch as one byte
string (public key, signature, txid per transaction) and reads the answer (one byte per
transaction) itself. A `ProcessPoolExecutor` had cost the node 400-550 us of CPU per part of
a batch (pickling on a feeder thread, a manager thread reading results and waking the
caller), about 10-20 us per tx for the 100-300 tx batches of the relay.

Small batches are checked on the calling thread (the IPC round trip would cost more); if the
worker processes cannot start or die, verification goes on with threads and says so once.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import Connection, wait
from typing import Any

from ledger.keys import verify
from ledger.transactions import Transaction, tx_sighash

log = logging.getLogger(__name__)

MIN_PROCESS_BATCH = 64
"""Below this many signatures a batch is checked on the calling thread."""
MIN_CHUNK = 64
"""Fewest signatures sent to a worker at once: each part costs the node a pipe round trip
(~100 us of CPU measured), and a batch of 100 in 4 parts cost twice what it did in 2."""
PARENT_WATCH = 1.0
"""Seconds between a worker's checks that the node that started it is still alive."""
STOP_WAIT = 5.0
"""Seconds `close` waits for a worker process to exit before killing it."""

Signed = tuple[bytes, bytes, bytes]
"""(sender public key, DER signature, txid): what a worker needs of a transaction."""


def verify_signed(chain_id: bytes, items: Iterable[Signed]) -> list[bool]:
    """The check itself, the same in a worker process and on a thread."""
    return [verify(pub, sig, tx_sighash(chain_id, txid)) for pub, sig, txid in items]


_BYTE = tuple(bytes((i,)) for i in range(256))
"""The one-byte signature lengths of `pack_signed` (a tuple index instead of building each)."""


def pack_signed(items: Iterable[Signed]) -> bytes:
    """A batch as a worker reads it: per tx, public key (33) | signature length (1) |
    signature | txid (32). Every signature must be under 256 bytes (`packable`)."""
    return b"".join([pub + _BYTE[len(sig)] + sig + txid for pub, sig, txid in items])


def packable(items: Iterable[Signed]) -> bool:
    """Whether every item has the field sizes `pack_signed` writes without their lengths: a
    33-byte public key and a 32-byte txid (what every decoded transaction has), and a
    signature under 256 bytes. Anything else is checked on a thread, never misframed.
    (A list, not a generator: nearly every batch passes, and resuming a generator per
    item cost more than the list.)"""
    return all([len(pub) == 33 and len(txid) == 32 and len(sig) < 256
                for pub, sig, txid in items])


def unpack_signed(blob: bytes) -> list[Signed]:
    """The inverse of `pack_signed` (the node's own bytes: a short blob is a bug, raised)."""
    out, pos, n = [], 0, len(blob)
    while pos < n:
        end = pos + 34 + blob[pos + 33]
        out.append((blob[pos:pos + 33], blob[pos + 34:end], blob[end:end + 32]))
        pos = end + 32
    if pos != n:
        raise ValueError("truncated verification batch")
    return out


def _worker_init(parent: int) -> None:
    # Ctrl-C of a node in the foreground reaches its whole process group: the node shuts
    # its pool down; a worker must not die first with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:  # a node killed with SIGKILL leaves no orphans behind
        while True:
            time.sleep(PARENT_WATCH)
            if os.getppid() != parent:
                os._exit(0)
    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _worker_main(conn: Connection, chain_id: bytes, parent: int) -> None:
    """A worker process: answer batches on `conn` until the node closes it."""
    _worker_init(parent)
    while True:
        try:
            blob = conn.recv_bytes()
        except (EOFError, OSError):
            return
        conn.send_bytes(bytes(verify_signed(chain_id, unpack_signed(blob))))


class _Worker:
    __slots__ = ("conn", "process")

    def __init__(self, conn: Connection, process: Any) -> None:
        self.conn = conn
        self.process = process


class WorkerPool:
    """Worker processes, each answering the batches written on its pipe, in order.

    Any number of threads may call `run` at once: each takes one idle worker (waiting for
    one if need be) and whichever others are idle, and feeds its parts to the workers it
    holds as they answer, so no caller waits for a worker while holding another."""

    def __init__(self, chain_id: bytes, workers: int, mp: Any) -> None:
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._all: list[_Worker] = []
        self._closed = False
        self._processes: dict[int, Any] = {}
        """pid -> process, as ProcessPoolExecutor names it."""
        try:
            for _ in range(workers):
                mine, theirs = mp.Pipe(duplex=True)
                proc = mp.Process(target=_worker_main, args=(theirs, chain_id, os.getpid()),
                                  daemon=True, name="chainmill-verify")
                proc.start()
                theirs.close()
                w = _Worker(mine, proc)
                self._all.append(w)
                self._idle.append(w)
                self._processes[proc.pid] = proc
        except BaseException:
            self.shutdown(wait=False)
            raise

    def _take(self, block: bool) -> _Worker | None:
        with self._cond:
            while not self._idle:
                if self._closed:
                    raise BrokenProcessPool("verification workers stopped")
                if not block:
                    return None
                self._cond.wait()
            if self._closed:
                raise BrokenProcessPool("verification workers stopped")
            return self._idle.pop()

    def _give_back(self, workers: list[_Worker]) -> None:
        with self._cond:
            self._idle.extend(workers)
            self._cond.notify_all()

    def run(self, parts: list[bytes]) -> list[bytes]:
        """Each part's answer, in order; raises BrokenProcessPool if a worker is gone."""
        held = [self._take(block=True)]
        while len(held) < len(parts) and (w := self._take(block=False)) is not None:
            held.append(w)
        answers: list[bytes] = [b""] * len(parts)
        busy: dict[Connection, tuple[_Worker, int]] = {}
        todo = iter(range(len(parts)))
        try:
            for w in held:
                i = next(todo, None)
                if i is None:
                    break
                w.conn.send_bytes(parts[i])
                busy[w.conn] = (w, i)
            while busy:
                for conn in wait(list(busy)):
                    w, i = busy.pop(conn)  # type: ignore[index]
                    answers[i] = w.conn.recv_bytes()
                    nxt = next(todo, None)
                    if nxt is not None:
                        w.conn.send_bytes(parts[nxt])
                        busy[w.conn] = (w, nxt)
        except (EOFError, OSError) as e:
            self._fail()
            raise BrokenProcessPool(f"a verification worker died: {e!r}") from None
        except BaseException:
            self._fail()  # a reply may be left unread on a pipe: the pool is not reusable
            raise
        self._give_back(held)
        return answers

    def _fail(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._stop(wait=False)

    def shutdown(self, wait: bool = True) -> None:
        """Stop the workers; with `wait`, after the batches being checked are answered."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            if wait:
                deadline = time.monotonic() + STOP_WAIT
                while len(self._idle) < len(self._all) and time.monotonic() < deadline:
                    self._cond.wait(0.1)
        self._stop(wait)

    def _stop(self, wait: bool) -> None:
        for w in self._all:
            try:
                w.conn.close()
            except OSError:
                pass
        for w in self._all:
            if wait:
                w.process.join(STOP_WAIT)
            if w.process.is_alive():
                w.process.kill()
                if wait:
                    w.process.join(STOP_WAIT)


class ParallelVerifier:
    """`verifier(txs) -> [valid, ...]`, in order, spread over `workers` processes."""

    def __init__(self, chain_id: bytes, workers: int = 2, processes: bool = True) -> None:
        self.chain_id = chain_id
        self.workers = max(1, workers)
        self.processes = processes
        self._lock = threading.Lock()
        self._procs: WorkerPool | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._closed = False

    def start(self) -> None:
        """Start the worker processes now (the node's start) rather than on the first large
        batch, which would then wait for interpreters to boot. Blocks until they answer."""
        pool = self._pool()
        if isinstance(pool, WorkerPool):
            try:
                pool.run([b""] * self.workers)
            except BrokenProcessPool:
                self._broken()

    def __call__(self, txs: list[Transaction]) -> list[bool]:
        items = [(t.sender, t.signature, t.txid) for t in txs]
        if len(items) < MIN_PROCESS_BATCH:
            return verify_signed(self.chain_id, items)
        size = max(MIN_CHUNK, -(-len(items) // (2 * self.workers)))
        parts = [items[i:i + size] for i in range(0, len(items), size)]
        pool = self._pool()
        if isinstance(pool, WorkerPool) and packable(items):
            try:
                oks = [b == 1 for answer in pool.run([pack_signed(p) for p in parts])
                       for b in answer]
                if len(oks) != len(items):
                    raise BrokenProcessPool(f"{len(oks)} answers for {len(items)} signatures")
                return oks
            except BrokenProcessPool:
                self._broken()
                pool = self._pool()
        if isinstance(pool, WorkerPool):  # fields of sizes the pipe format cannot carry
            return verify_signed(self.chain_id, items)
        return [ok for res in pool.map(verify_signed, [self.chain_id] * len(parts), parts)
                for ok in res]

    def _pool(self) -> WorkerPool | ThreadPoolExecutor:
        with self._lock:
            if self._closed:
                raise RuntimeError("verifier closed")
            if self.processes and self._procs is None:
                try:
                    self._procs = WorkerPool(self.chain_id, self.workers,
                                             multiprocessing.get_context("spawn"))
                except (OSError, ValueError) as e:
                    log.warning("signature verification on threads: cannot start worker "
                                "processes (%s)", e)
                    self.processes = False
            if self.processes and self._procs is not None:
                return self._procs
            if self._threads is None:
                self._threads = ThreadPoolExecutor(max_workers=self.workers,
                                                   thread_name_prefix="verify")
            return self._threads

    def _broken(self) -> None:
        with self._lock:
            if self.processes:
                log.warning("signature verification worker processes died; verifying on "
                            "threads from now on")
            self.processes = False
            procs, self._procs = self._procs, None
        if procs is not None:
            procs.shutdown(wait=False)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            procs, threads = self._procs, self._threads
            self._procs = self._threads = None
        if procs is not None:
            procs.shutdown(wait=True)
        if threads is not None:
            threads.shutdown(wait=False)
