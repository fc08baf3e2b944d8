"""Signature verification of batches of transactions on worker processes.

Why processes and not threads: coincurve releases the GIL inside libsecp256k1, but every call
also runs Python (the wrapper, the digest) that needs the GIL back, so a verifying thread
waits for it after each signature whenever the event loop or a block connect is busy in
Python (measured on 2 cores: about 1,400 verifies/s wall on a thread against 2,700-4,400 on
a process while the main thread runs Python). Worker processes have their own interpreter;
a batch costs the node one pickle of (public key, signature, txid) per transaction.

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
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from ledger.keys import verify
from ledger.transactions import Transaction, tx_sighash

log = logging.getLogger(__name__)

MIN_PROCESS_BATCH = 64
"""Below this many signatures a batch is checked on the calling thread."""
MIN_CHUNK = 32
PARENT_WATCH = 1.0
"""Seconds between a worker's checks that the node that started it is still alive."""

Signed = tuple[bytes, bytes, bytes]
"""(sender public key, DER signature, txid): what a worker needs of a transaction."""


def verify_signed(chain_id: bytes, items: list[Signed]) -> list[bool]:
    """The check itself, the same in a worker process and on a thread."""
    return [verify(pub, sig, tx_sighash(chain_id, txid)) for pub, sig, txid in items]


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


def _ping() -> int:
    return os.getpid()


class ParallelVerifier:
    """`verifier(txs) -> [valid, ...]`, in order, spread over `workers` processes."""

    def __init__(self, chain_id: bytes, workers: int = 2, processes: bool = True) -> None:
        self.chain_id = chain_id
        self.workers = max(1, workers)
        self.processes = processes
        self._lock = threading.Lock()
        self._procs: ProcessPoolExecutor | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._closed = False

    def start(self) -> None:
        """Start the worker processes now (the node's start) rather than on the first large
        batch, which would then wait for interpreters to boot. Blocks until they answer."""
        pool = self._pool()
        if isinstance(pool, ProcessPoolExecutor):
            try:
                for f in [pool.submit(_ping) for _ in range(self.workers)]:
                    f.result()
            except BrokenProcessPool:
                self._broken()

    def __call__(self, txs: list[Transaction]) -> list[bool]:
        items = [(t.sender, t.signature, t.txid) for t in txs]
        if len(items) < MIN_PROCESS_BATCH:
            return verify_signed(self.chain_id, items)
        size = max(MIN_CHUNK, -(-len(items) // (2 * self.workers)))
        parts = [items[i:i + size] for i in range(0, len(items), size)]
        pool = self._pool()
        try:
            return self._run(pool, parts)
        except BrokenProcessPool:
            self._broken()
            return self._run(self._pool(), parts)

    def _run(self, pool: Executor, parts: list[list[Signed]]) -> list[bool]:
        out: list[bool] = []
        for res in pool.map(verify_signed, [self.chain_id] * len(parts), parts):
            out.extend(res)
        return out

    def _pool(self) -> Executor:
        with self._lock:
            if self._closed:
                raise RuntimeError("verifier closed")
            if self.processes and self._procs is None:
                try:
                    self._procs = ProcessPoolExecutor(
                        max_workers=self.workers,
                        mp_context=multiprocessing.get_context("spawn"),
                        initializer=_worker_init, initargs=(os.getpid(),))
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
            procs.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            procs, threads = self._procs, self._threads
            self._procs = self._threads = None
        if procs is not None:
            procs.shutdown(wait=True, cancel_futures=True)
        if threads is not None:
            threads.shutdown(wait=False)
