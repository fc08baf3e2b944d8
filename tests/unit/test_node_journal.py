"""The own-transaction journal: records, torn lines, group commit, compaction."""

from __future__ import annotations

import asyncio
import os
import threading

from node import journal as j
from node.journal import OwnTxJournal, decode_records, encode_record


class CountingFsync:
    """A real fsync that also counts its calls and can be held back (to overlap calls)."""

    def __init__(self) -> None:
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, fd: int) -> None:
        self.gate.wait(10)
        self.calls += 1
        os.fsync(fd)


def test_journal_records_round_trip_and_torn_lines_are_skipped():
    raws = [b"\x01\x02", b"tx-two", b""]
    data = b"".join(encode_record(r) for r in raws)
    assert decode_records(data) == (raws, 0)
    torn = data + encode_record(b"lost in the crash")[:-7]
    assert decode_records(torn) == (raws, 1)
    flipped = bytearray(data)
    flipped[12] ^= 0x01  # inside the first record's hex
    assert decode_records(bytes(flipped))[0] == raws[1:]


def test_journal_zeros_are_blank_and_a_record_after_lost_pages_still_reads():
    one, two = encode_record(b"first"), encode_record(b"second")
    assert decode_records(one + bytes(100)) == ([b"first"], 0)  # the space written ahead
    # a crash kept the pages between two records from the disk: they read as zeros
    assert decode_records(one[:5] + bytes(20) + two + bytes(7)) == ([b"second"], 1)
    assert decode_records(bytes(50) + one + two) == ([b"first", b"second"], 0)


def test_journal_appends_write_over_zeros_written_ahead(tmp_path, monkeypatch):
    """An fdatasync after an append that grows the file also commits its size (a file system
    journal commit); records go over zeros written ahead instead, PREALLOCATE at a time."""
    monkeypatch.setattr(j, "PREALLOCATE", 256)
    path = tmp_path / j.JOURNAL_FILE
    journal = OwnTxJournal(path)
    journal.open([(b"a" * 32, b"A")])
    kept = len(encode_record(b"A"))
    assert path.stat().st_size == kept  # the rewrite writes the records alone
    journal.append(b"b" * 32, b"B")
    assert path.stat().st_size == kept + 256  # zeros ahead, the record over them
    raws = [b"A", b"B"]
    for i in range(30):  # past several extensions, one record longer than PREALLOCATE
        raw = bytes([i]) * (300 if i == 7 else 10)
        journal.append(bytes([i]) * 32, raw)
        raws.append(raw)
        size = path.stat().st_size
        assert (size - kept) % 256 == 0
        assert decode_records(path.read_bytes()) == (raws, 0)
    assert size - sum(len(encode_record(r)) for r in raws) < 256
    journal.close()  # the zeros are cut off: a stopped node's directory holds records only
    assert path.stat().st_size == sum(len(encode_record(r)) for r in raws)
    assert decode_records(path.read_bytes()) == (raws, 0)


def test_journal_group_commit_shares_fsyncs_between_concurrent_calls(tmp_path):
    fsync = CountingFsync()
    journal = OwnTxJournal(tmp_path / j.JOURNAL_FILE, fsync=fsync)
    journal.open([])
    assert (tmp_path / j.JOURNAL_FILE).stat().st_mode & 0o777 == 0o600
    opened = fsync.calls

    async def calls() -> None:
        fsync.gate.clear()  # the first fsync waits until every call has appended
        async def one(i: int) -> None:
            journal.append(bytes([i]) * 32, b"raw%d" % i)
            await journal.sync()
        tasks = [asyncio.ensure_future(one(i)) for i in range(50)]
        await asyncio.sleep(0)
        fsync.gate.set()
        await asyncio.gather(*tasks)

    asyncio.run(calls())
    assert journal.synced == journal.written == 50
    assert fsync.calls - opened <= 2  # 50 calls, one or two fsyncs
    assert decode_records((tmp_path / j.JOURNAL_FILE).read_bytes())[0] == \
        [b"raw%d" % i for i in range(50)]
    journal.close()


async def _record(journal: OwnTxJournal, i: int) -> None:
    journal.append(bytes([i]) * 32, b"raw%d" % i)
    await journal.sync()


async def _calls_sharing_one_fsync(journal: OwnTxJournal, fsync: CountingFsync,
                                   count: int) -> None:
    """`count` calls whose fsync is held until all of them have appended."""
    fsync.gate.clear()
    tasks = [asyncio.ensure_future(_record(journal, i)) for i in range(count)]
    await asyncio.sleep(0)
    fsync.gate.set()
    await asyncio.gather(*tasks)


def test_journal_shared_fsync_waits_for_as_many_calls_as_the_last_one(tmp_path, monkeypatch):
    """After an fsync shared by 5 calls, the next one starts when 5 calls wait again (or after
    COMMIT_DELAY): calls arriving one loop iteration apart share one fsync."""
    monkeypatch.setattr(j, "COMMIT_DELAY", 60.0)  # only the count can end the wait here
    fsync = CountingFsync()
    journal = OwnTxJournal(tmp_path / j.JOURNAL_FILE, fsync=fsync)
    journal.open([])

    async def calls() -> None:
        await _calls_sharing_one_fsync(journal, fsync, 5)
        assert journal._last_group == 5
        counted = fsync.calls
        fsync.gate.clear()  # an fsync started by the first call alone would be held here
        later = []
        for i in range(5, 10):
            later.append(asyncio.ensure_future(_record(journal, i)))
            await asyncio.sleep(0)
        fsync.gate.set()
        await asyncio.wait_for(asyncio.gather(*later), 10)
        assert fsync.calls == counted + 1

    asyncio.run(calls())
    assert journal.synced == journal.written == 10
    journal.close()


def test_journal_fsync_wait_ends_after_commit_delay_and_a_lone_caller_never_waits(
        tmp_path, monkeypatch):
    monkeypatch.setattr(j, "COMMIT_DELAY", 0.05)
    fsync = CountingFsync()
    journal = OwnTxJournal(tmp_path / j.JOURNAL_FILE, fsync=fsync)
    journal.open([])

    async def calls() -> None:
        await _calls_sharing_one_fsync(journal, fsync, 6)
        counted = fsync.calls
        await asyncio.wait_for(asyncio.gather(_record(journal, 6), _record(journal, 7)), 10)  # 2 of 6: the wait ends
        assert fsync.calls == counted + 1
        assert journal._last_group == 2
        monkeypatch.setattr(j, "COMMIT_DELAY", 60.0)
        for i in range(8, 12):  # one at a time: each has its own fsync, none waits
            await asyncio.wait_for(_record(journal, i), 10)
            assert journal._timer is None
        assert fsync.calls == counted + 5

    asyncio.run(calls())
    journal.close()


def test_journal_compaction_keeps_only_unconfirmed_records(tmp_path, monkeypatch):
    monkeypatch.setattr(j, "COMPACT_MIN_DEAD", 3)
    journal = OwnTxJournal(tmp_path / j.JOURNAL_FILE)
    journal.open([(b"a" * 32, b"A")])
    for name in (b"b", b"c", b"d", b"e"):
        journal.append(name * 32, name.upper())
    journal.confirmed([b"a" * 32, b"b" * 32])
    assert len(decode_records((tmp_path / j.JOURNAL_FILE).read_bytes())[0]) == 5
    journal.confirmed([b"c" * 32, b"d" * 32])  # 4 dead > 1 live: rewritten
    assert decode_records((tmp_path / j.JOURNAL_FILE).read_bytes())[0] == [b"E"]
    journal.append(b"f" * 32, b"F")  # appends go to the new file
    journal.close()
    assert decode_records((tmp_path / j.JOURNAL_FILE).read_bytes())[0] == [b"E", b"F"]


def test_journal_sync_after_close_returns(tmp_path):
    journal = OwnTxJournal(tmp_path / j.JOURNAL_FILE)
    journal.open([])
    journal.append(b"a" * 32, b"A")
    journal.close()  # a stop while a call waits: close() fsyncs what was written

    asyncio.run(asyncio.wait_for(journal.sync(), 5))
    assert journal.synced == journal.written == 1


def test_journal_sync_on_a_new_loop_after_the_old_one_closed_mid_fsync(tmp_path):
    fsync = CountingFsync()
    journal = OwnTxJournal(tmp_path / j.JOURNAL_FILE, fsync=fsync)
    journal.open([])

    async def first() -> None:
        fsync.gate.clear()  # the fsync started on this loop outlives it
        journal.append(b"a" * 32, b"A")
        assert journal.after_sync(lambda error: None)
        await asyncio.sleep(0.01)

    asyncio.run(first())
    fsync.gate.set()
    journal.append(b"b" * 32, b"B")
    asyncio.run(asyncio.wait_for(journal.sync(), 5))  # on base: TimeoutError
    assert journal.synced == journal.written == 2
    journal.close()


def test_journal_fsyncs_run_in_one_thread_of_their_own(tmp_path):
    threads: list[int] = []

    def fsync(fd: int) -> None:
        threads.append(threading.get_ident())
        os.fsync(fd)

    journal = OwnTxJournal(tmp_path / j.JOURNAL_FILE, fsync=fsync)
    journal.open([])
    threads.clear()  # open() fsyncs on the caller's thread

    async def calls() -> None:
        for i in range(5):  # one at a time: one fsync each
            journal.append(bytes([i]) * 32, b"raw%d" % i)
            await journal.sync()

    asyncio.run(calls())
    assert len(threads) == journal.fsyncs == 5
    assert len(set(threads)) == 1 and threads[0] != threading.get_ident()
    journal.close()


def test_journal_failed_fsync_fails_the_waiting_calls_and_the_next_call_retries(tmp_path):
    failing = True

    def fsync(fd: int) -> None:
        if failing:
            raise OSError(5, "Input/output error")
        os.fsync(fd)

    journal = OwnTxJournal(tmp_path / j.JOURNAL_FILE, fsync=os.fsync)
    journal.open([])
    journal._fsync = fsync

    async def calls() -> None:
        nonlocal failing
        for i in range(3):
            journal.append(bytes([i]) * 32, b"raw%d" % i)
        results = await asyncio.gather(journal.sync(), journal.sync(), return_exceptions=True)
        assert all(isinstance(r, OSError) for r in results)
        assert journal.synced == 0
        failing = False
        await journal.sync()

    asyncio.run(calls())
    assert journal.synced == journal.written == 3
    journal.close()


def test_journal_cancelled_call_leaves_the_other_calls_waiting(tmp_path):
    fsync = CountingFsync()
    journal = OwnTxJournal(tmp_path / j.JOURNAL_FILE, fsync=fsync)
    journal.open([])

    async def calls() -> None:
        fsync.gate.clear()
        journal.append(b"a" * 32, b"A")
        first = asyncio.ensure_future(journal.sync())
        second = asyncio.ensure_future(journal.sync())
        await asyncio.sleep(0.01)
        first.cancel()
        fsync.gate.set()
        await asyncio.wait_for(second, 5)
        assert first.cancelled()

    asyncio.run(calls())
    assert journal.synced == journal.written == 1
    journal.close()


def test_journal_compaction_waits_for_several_confirmed_records_per_live_one(tmp_path,
                                                                              monkeypatch):
    """A rewrite copies every live record: with a large backlog it would run after every few
    blocks, so it waits until COMPACT_DEAD_PER_LIVE records are confirmed per live one."""
    monkeypatch.setattr(j, "COMPACT_MIN_DEAD", 3)
    journal = OwnTxJournal(tmp_path / j.JOURNAL_FILE)
    journal.open([])
    txids = [bytes([i]) * 32 for i in range(10)]
    for i, txid in enumerate(txids):
        journal.append(txid, b"R%d" % i)
    journal.confirmed(txids[:7])  # 7 confirmed, 3 live: not yet (7 < 4 x 3)
    assert len(decode_records((tmp_path / j.JOURNAL_FILE).read_bytes())[0]) == 10
    journal.confirmed(txids[7:8])  # 8 confirmed, 2 live: 8 >= 4 x 2, rewritten
    assert decode_records((tmp_path / j.JOURNAL_FILE).read_bytes())[0] == [b"R8", b"R9"]
    journal.close()
