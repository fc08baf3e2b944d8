"""node/memory.py: glibc's arena cap and malloc_trim, on this process's real heap."""

from __future__ import annotations

import asyncio
import platform

import pytest

from node import memory

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                                reason="malloc_trim and mallopt are glibc's")


@glibc_only
def test_trim_gives_freed_heap_memory_back() -> None:
    # 1,000-byte objects come from malloc's heap (not pymalloc, not mmap); freeing all but
    # the newest leaves ~120 MiB free below a used chunk, which glibc keeps until a trim.
    blocks = [bytes(1000) + i.to_bytes(4, "little") for i in range(120_000)]
    pin = blocks[-1]
    del blocks
    before = memory.resident_bytes()
    assert before is not None
    assert memory.trim() is True
    after = memory.resident_bytes()
    assert after is not None
    assert before - after > 60 * 2**20, (before, after)
    assert pin[-4:] == (119_999).to_bytes(4, "little")


@glibc_only
def test_limit_arenas_is_accepted() -> None:
    assert memory.limit_arenas(memory.ARENA_MAX) is True


def test_trim_periodically_trims_until_stopping(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake_trim() -> bool:
        calls.append(1)
        return False

    monkeypatch.setattr(memory, "trim", fake_trim)
    monkeypatch.setattr(memory, "_LIBC", object())  # as on glibc, wherever this runs

    async def scenario() -> None:
        stopping = asyncio.Event()
        task = asyncio.create_task(memory.trim_periodically(stopping, interval=0.01))
        while len(calls) < 3:
            await asyncio.sleep(0.01)
        stopping.set()
        await asyncio.wait_for(task, 5)
        assert task.done() and task.exception() is None

    asyncio.run(scenario())
    assert len(calls) >= 3


def test_block_hash_cache_is_bounded() -> None:
    from types import SimpleNamespace

    from node.context import HASH_CACHE_MAX, NodeContext

    ctx_stand_in = SimpleNamespace(_hash_cache={})  # the only attribute the cache uses
    for h in range(HASH_CACHE_MAX + 500):
        NodeContext._remember_hash(ctx_stand_in, h, f"{h:064x}")
    cache = ctx_stand_in._hash_cache
    assert len(cache) == HASH_CACHE_MAX
    assert min(cache) == 500 and cache[HASH_CACHE_MAX + 499] == f"{HASH_CACHE_MAX + 499:064x}"
    NodeContext._remember_hash(ctx_stand_in, 600, "ab" * 32)  # a known height: replaced
    assert len(cache) == HASH_CACHE_MAX and cache[600] == "ab" * 32 and 500 in cache


def test_settle_collector_freezes_the_start_up_heap_and_still_collects_later_cycles() -> None:
    import gc
    import weakref

    class Node:
        pass

    before = gc.get_threshold()
    early = Node()
    early.self = early  # a cycle made "at start-up", still referred to
    try:
        memory.settle_collector(young=5000)
        assert gc.get_freeze_count() > 1000
        assert gc.get_threshold() == (5000, *before[1:])
        assert not any(o is early for o in gc.get_objects())  # no collection walks it
        late = Node()
        late.self = late
        gone = weakref.ref(late)
        del late
        full = memory.collector_clock.counts[2]
        gc.collect()
        assert gone() is None  # a cycle made after the freeze is collected as before
        assert memory.collector_clock.counts[2] == full + 1  # and timed, for the stop's log
        assert memory.collector_clock.seconds[2] > 0
        assert "collections in" in memory.collector_clock.summary()
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
        gc.callbacks.remove(memory.collector_clock)
