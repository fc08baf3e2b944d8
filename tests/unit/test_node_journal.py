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
