"""The node's own-transaction journal: every transaction this node creates is on disk before
its txid is returned, and goes back into the memory pool after any restart.

As the wallet of Bitcoin Core and MultiChain keeps the node's own transactions: a record is
appended (`append`) when the transaction enters the pool, and the RPC call that made it
waits (`sync`) until an fsync covers the record. Group commit: one fsync runs at a time in
the journal's own fsync thread, and every record appended while it runs is covered by the
next one, so concurrent calls share fsyncs and the cost per call stays small under load.

The file holds one record per line, `<crc32 hex> <raw tx hex>`; a line torn by a crash
fails its checksum and is skipped (its call never returned). Confirmed transactions are
dropped by compaction (an atomic rewrite), and at start-up (`restore`) every record is
checked again: mined ones are dropped, invalid ones dropped with a log line.

After the records the file holds zeros, written ahead (`PREALLOCATE`), and records are
written over them in place: on ext4 an fdatasync of a file that grew must also commit its
new size through the file system's journal, and that cost 88-98 us of CPU and 0.22-0.24 ms
per fsync on this project's test machine against 59-60 us and 0.14 ms in place (the way
PostgreSQL zero-fills its WAL segments before use). A reader treats the zeros as blank.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import os
import queue
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

from config.paths import write_private_file
from ledger.errors import AlreadyInChain, ChainmillError
from ledger.transactions import Transaction
from node.mempool import Mempool

log = logging.getLogger(__name__)

JOURNAL_FILE = "wallet.txs"
DATA_SYNC: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)
"""Appends need the data and the file size on disk, not the other metadata."""
PREALLOCATE = 1 << 20
"""Bytes of zeros the file is extended by whenever the records reach its end (one fsync in
about 2,500 records then carries a size change and 1 MiB)."""
COMMIT_SIBLINGS = 4
"""When the last fsync covered at least this many calls, the next one waits (COMMIT_DELAY)..."""
COMMIT_DELAY = 0.001
"""... up to this many seconds, until as many calls wait again: with 16 clients calling one
item at a time, fsyncs covered 5-7 calls each when every fsync started at once, and 15-16
(half the fsync CPU per call) with this wait, which ends as soon as they are all back (as
MySQL's binlog_group_commit_sync_delay with its sync_no_delay_count). A lone caller, or a
few, never waits."""
COMPACT_MIN_DEAD = 1000
"""Compaction waits until at least this many records are confirmed."""
COMPACT_DEAD_PER_LIVE = 4
"""... and until at least this many are confirmed per live record: a rewrite copies every
live record and fsyncs on the event loop (40 ms for 4,000 live records on a slow disk), so
with a large backlog it must be rare; the file stays within five times the live records
(or COMPACT_MIN_DEAD more)."""


def encode_record(raw: bytes) -> bytes:
    # hexlify gives the hex as bytes at once (raw.hex().encode() made a str and copied it).
    return b"%08x %s\n" % (zlib.crc32(raw), binascii.hexlify(raw))


def decode_records(data: bytes) -> tuple[list[bytes], int]:
    """The raw transactions of a journal file's bytes, and how many lines were unreadable.
    Zeros are blank: the space written ahead of the records, or a record's pages that a
    crash kept from the disk (the lines around them still count)."""
    out: list[bytes] = []
    bad = 0
    for line in data.replace(b"\0", b"\n").split(b"\n"):
        if not line:
            continue
        crc, _, body = line.partition(b" ")
        try:
            raw = bytes.fromhex(body.decode("ascii"))
            ok = len(crc) == 8 and int(crc, 16) == zlib.crc32(raw)
        except ValueError:
            ok = False
        if ok:
            out.append(raw)
        else:
            bad += 1
    return out, bad


class OwnTxJournal:
    """Append-only file of the node's own unconfirmed transactions (mode 0600)."""

    def __init__(self, path: Path, *, fsync: Callable[[int], None] = DATA_SYNC) -> None:
        self.path = path
        self._fsync = fsync
        self.live: dict[bytes, bytes] = {}
        """txid -> the record (the encoded line) of each transaction not yet known to be
        confirmed, in append order: a compaction writes them as they are."""
        self.dead = 0
        self.written = 0
        self.synced = 0
        self.fsyncs = 0
        self._fd: int | None = None
        self._end = 0
        """Where the next record goes: the end of the records, before the zeros."""
        self._size = 0
        """The file's size: records and the zeros after them."""
        self._waiters: deque[tuple[int, Callable[[BaseException | None], None]]] = deque()
        """(records written when the call came, its callback) of the calls waiting for an
        fsync, in call order, so in order of their targets too."""
        self._inflight = False
        """An fsync is running in the fsync thread (or queued for it, or waiting to start)."""
        self._timer: asyncio.TimerHandle | None = None
        """The start of the next fsync, while it waits for more calls (COMMIT_DELAY)."""
        self._last_group = 0
        """Calls the last fsync released."""
        self._loop: asyncio.AbstractEventLoop | None = None
        """The event loop whose calls the fsync in flight will release."""
        self._fsyncer: _FsyncThread | None = None
        self._retired: list[int] = []
        """Descriptors replaced by a compaction while an fsync on them may be running."""

    # -- start-up -------------------------------------------------------------------------
    def read(self) -> list[bytes]:
        """The raw transactions recorded in the file (torn or damaged lines skipped)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        raws, bad = decode_records(data)
        if bad:
            log.warning("own-transaction journal: %d unreadable record(s) skipped (a write "
                        "cut short by a crash is one)", bad)
        return raws

    def open(self, keep: Iterable[tuple[bytes, bytes]]) -> None:
        """Rewrite the file with `keep` (txid, raw) pairs, fsynced, and open it for appends."""
        self.live = {txid: encode_record(raw) for txid, raw in keep}
        self._rewrite()

    def _rewrite(self) -> None:
        records = b"".join(self.live.values())
        # tmp file, fsync, rename: atomic. No zeros yet: the first append writes them, so
        # that they reach the disk in the fsync thread, not in this fsync on the event loop.
        write_private_file(self.path, records.decode("ascii"))
        self._fsync_dir()
        if self._fd is not None:
            if self._inflight:
                self._retired.append(self._fd)  # closed once that fsync is over
            else:
                os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY)
        self._end = self._size = len(records)
        self.dead = 0
        self.synced = self.written  # everything appended so far is in the rewritten file

    def _fsync_dir(self) -> None:
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself must reach the disk
        finally:
            os.close(fd)

    # -- running ----------------------------------------------------------------------------
    def append(self, txid: bytes, raw: bytes) -> None:
        """Write a record (to the OS, not yet to the disk: `sync` waits for that)."""
        if self._fd is None:
            raise RuntimeError("the own-transaction journal is not open")
        record = encode_record(raw)
        end = self._end + len(record)
        while end > self._size:
            # Zeros ahead of the records (the module's docstring says why), on disk with this
            # record's fsync: about 1 ms once in ~2,500 records.
            _write_at(self._fd, bytes(PREALLOCATE), self._size)
            self._size += PREALLOCATE
        _write_at(self._fd, record, self._end)
        self._end = end
        self.live[txid] = record
        self.written += 1

    async def sync(self) -> None:
        """Return once every record appended before this call is on disk (group commit)."""
        waiter = asyncio.get_running_loop().create_future()

        def synced(error: BaseException | None) -> None:
            if waiter.done():  # the call was cancelled: only its own future is
                return
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

        if self.after_sync(synced):
            await waiter

    def after_sync(self, done: Callable[[BaseException | None], None]) -> bool:
        """`sync` as a callback, for replies sent without a task: False if every record
        appended so far is already on disk; else True, and `done(None)` (or `done(error)`
        if the fsync failed) is called on the event loop once an fsync covers them."""
        target = self.written
        if self.synced >= target:
            return False
        if self._fd is None:  # closed: close() fsynced every record written before it
            self.synced = target
            return False
        loop = asyncio.get_running_loop()
        if self._inflight and self._loop is not loop:
            # The fsync in flight was started on a loop that has closed since (a node runs
            # on one loop; tools and tests may run several in turn): its release can never
            # run, and the calls it would release went with their loop.
            self._inflight = False
            self._timer = None
            self._waiters.clear()
        self._waiters.append((target, done))
        if not self._inflight:
            self._inflight = True
            self._loop = loop
            if not self._wait_for_siblings(loop):
                # Started once the callbacks ready now have run, not at once: the calls
                # that arrived in the same loop iteration (epoll hands several sockets at a
                # time) join this fsync instead of waiting a whole fsync for the next one.
                loop.call_soon(self._start_fsync, loop)
        elif self._timer is not None and len(self._waiters) >= self._last_group:
            self._timer.cancel()  # as many calls wait as the last fsync had: go now
            self._timer = None
            loop.call_soon(self._start_fsync, loop)
        return True

    def _wait_for_siblings(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Hold the next fsync back for more calls (COMMIT_SIBLINGS, COMMIT_DELAY) if the
        last one was shared and fewer calls wait now; True if it is held."""
        if self._last_group < COMMIT_SIBLINGS or len(self._waiters) >= self._last_group:
            return False
        self._timer = loop.call_later(COMMIT_DELAY, self._start_fsync, loop)
        return True

    def _start_fsync(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hand one fsync, covering every record written so far, to the fsync thread."""
        self._timer = None
        if self._fd is None:  # closed meanwhile: close() fsynced every record
            self._inflight = False
            self._release_all()
            return
        if self._fsyncer is None:
            self._fsyncer = _FsyncThread(self._fsync)
        self._inflight = True
        upto = self.written
        self._fsyncer.request(self._fd, loop, lambda error: self._fsynced(upto, error))

    def _fsynced(self, upto: int, error: BaseException | None) -> None:
        """On the event loop, once per fsync: release the calls it covers, start the next."""
        self._inflight = False
        retired, self._retired = self._retired, []
        for old in retired:
            os.close(old)
        if error is None:
            self.fsyncs += 1
            self.synced = max(self.synced, upto)
        waiters = self._waiters
        before = len(waiters)
        while waiters and (error is not None or waiters[0][0] <= self.synced):
            waiters.popleft()[1](error)  # on error every waiting call fails, as the fsync did
        self._last_group = before - len(waiters)
        if not waiters:
            return
        if self._fd is None:  # closed meanwhile: close() fsynced every record
            self._release_all()
            return
        loop = asyncio.get_running_loop()
        self._inflight = True
        if not self._wait_for_siblings(loop):
            self._start_fsync(loop)

    def _release_all(self) -> None:
        self.synced = self.written
        while self._waiters:
            self._waiters.popleft()[1](None)

    def confirmed(self, txids: Iterable[bytes]) -> None:
        """Forget records of confirmed transactions; compact when most records are dead."""
        for txid in txids:
            if self.live.pop(txid, None) is not None:
                self.dead += 1
        if self.dead >= COMPACT_MIN_DEAD and self.dead >= COMPACT_DEAD_PER_LIVE * len(self.live):
            self._rewrite()

    def close(self) -> None:
        fsync_cpu = 0.0
        if self._fsyncer is not None:
            self._fsyncer.stop()  # after the fsync it may be running
            fsync_cpu = self._fsyncer.cpu_s
            self._fsyncer = None
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, self._end)  # a stopped node keeps no zeros on disk
                self._fsync(self._fd)
                self.synced = self.written
            finally:
                os.close(self._fd)
                self._fd = None
            log.info("own-transaction journal closed: %d records written, %d fsyncs, "
                     "fsync thread CPU %.3f s", self.written, self.fsyncs, fsync_cpu)


def _write_at(fd: int, data: bytes, offset: int) -> None:
    written = os.pwrite(fd, data, offset)
    if written < len(data):  # a short write (rare for a regular file): write the rest
        view = memoryview(data)
        while written < len(data):
            written += os.pwrite(fd, view[written:], offset + written)


class _FsyncThread:
    """The thread that runs a journal's fsyncs, one at a time, off the event loop.

    Handing an fsync over is one put on a queue and getting it back one
    `call_soon_threadsafe`: `asyncio.to_thread` cost an executor submit (locks, a work item,
    a concurrent future chained to an asyncio one) and more loop iterations per fsync,
    which is per call when calls come one at a time (bench/README.md).
    """

    def __init__(self, fsync: Callable[[int], None]) -> None:
        self._fsync = fsync
        self._requests: queue.SimpleQueue[
            tuple[int, asyncio.AbstractEventLoop, Callable[[BaseException | None], None]]
            | None] = queue.SimpleQueue()
        self.cpu_s = 0.0
        """CPU seconds the thread used (kernel time of its fsyncs included), once stopped."""
        self._thread = threading.Thread(target=self._run, name="journal-fsync", daemon=True)
        self._thread.start()

    def request(self, fd: int, loop: asyncio.AbstractEventLoop,
                done: Callable[[BaseException | None], None]) -> None:
        """fsync `fd`, then call `done(None)` or `done(exception)` on `loop`."""
        self._requests.put((fd, loop, done))

    def stop(self) -> None:
        """Finish the fsync under way (its `done` still goes to the loop) and end the thread."""
        self._requests.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (job := self._requests.get()) is not None:
            fd, loop, done = job
            error: BaseException | None = None
            try:
                self._fsync(fd)
            except Exception as exc:  # handed to the waiting calls, which fail with it
                error = exc
            try:
                loop.call_soon_threadsafe(done, error)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                log.debug("own-transaction journal: fsync finished after its loop closed")
        self.cpu_s = time.thread_time()


def restore(journal: OwnTxJournal, mempool: Mempool) -> tuple[int, int, int]:
    """Put the journal's transactions back into the pool, re-validated, and reopen the
    journal with those that are still pending. Returns (re-admitted or already pooled,
    mined, invalid); each invalid one is logged with its reason."""
    keep: list[tuple[bytes, bytes]] = []
    mined = invalid = 0
    store = mempool.chain.store
    for raw in journal.read():
        try:
            tx = Transaction.decode(raw)
        except (ChainmillError, ValueError) as e:
            log.warning("own-transaction journal: undecodable record dropped: %s", e)
            invalid += 1
            continue
        if tx.txid in mempool:
            keep.append((tx.txid, raw))
            continue
        if store.known_txids([tx.txid.hex()]):
            mined += 1
            continue
        try:
            mempool.add(tx, verified=False)
        except AlreadyInChain:
            mined += 1
            continue
        except ChainmillError as e:
            log.warning("own transaction %s dropped from the journal: no longer valid (%s)",
                        tx.txid.hex(), e)
            invalid += 1
            continue
        keep.append((tx.txid, raw))
    journal.open(keep)
    return len(keep), mined, invalid
