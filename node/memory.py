"""Keeping the node's resident memory bounded: glibc malloc settings and handing freed heap
memory back to the system.

A long-running node frees most of what it allocates (a block's rows, an RPC answer of
thousands of items), but glibc's malloc keeps freed memory mapped unless it sits at the very
top of a heap, so after a few big answers the process holds tens of MiB it does not use, and
every thread that allocates can get its own arena (up to 8 per core) that grows the same way.
The node therefore caps the number of arenas at start-up and calls `malloc_trim` now and
then (bench/soak.py measures the effect). Both are no-ops where the C library is not glibc.

Python's cyclic collector is settled once the node has started (`settle_collector`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import logging
import time
from typing import Any

log = logging.getLogger(__name__)

ARENA_MAX = 2
"""malloc arenas: one for the event loop, one shared by the worker threads."""
TRIM_INTERVAL = 30.0
"""Seconds between malloc_trim calls while the node runs."""
_M_ARENA_MAX = -8  # mallopt parameter number, glibc malloc.h
GC_YOUNG = 7000
"""Container objects (allocations net of frees) between two collections of the collector's
youngest generation; CPython's default is 700."""


def _glibc() -> Any | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


def settle_collector(young: int = GC_YOUNG) -> None:
    """Once the node has started: collect, then move every object made so far (modules,
    classes, functions, the loaded state: some 64,000 at a node's start) to the collector's
    permanent generation, which no collection walks again, and collect the youngest
    generation every `young` objects instead of 700.

    Why: a node serving one-item publishes made one full collection per ~20,000 calls, each
    walking the whole start-up heap (74 ms with the event loop stopped), and a young
    collection every ~145 calls, most of whose objects (pool entries) then survive into the
    middle generation and are walked again. Measured in a node under `bench.publish --paths
    single` (collection time from gc.callbacks, 20,000 calls): 142 ms of collections, 7.1 us
    per call, by default; 72 ms with the start-up heap frozen (the full collection 74 -> 21
    ms); 27 ms (1.4 us per call) with the young generation also collected 10 times less
    often, in pauses of ~4.5 ms. Objects made later are collected as before; refcounting still
    frees what is frozen once nothing refers to it."""
    gc.collect()  # the start-up's garbage goes now instead of being frozen with the rest
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, old)
    if collector_clock not in gc.callbacks:
        gc.callbacks.append(collector_clock)


class CollectorClock:
    """The collections the cyclic collector made and the time they took, per generation
    (young, middle, full), from `gc.callbacks`: the node logs them when it stops."""

    def __init__(self) -> None:
        self.counts = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        # A collection runs start to stop on one thread, holding the GIL: they never overlap.
        if phase == "start":
            self._started = time.perf_counter()
        else:
            generation = info["generation"]
            self.counts[generation] += 1
            self.seconds[generation] += time.perf_counter() - self._started

    def summary(self) -> str:
        parts = ", ".join(f"{name} {n} in {t * 1e3:.1f} ms" for name, n, t in
                          zip(("young", "middle", "full"), self.counts, self.seconds,
                              strict=True))
        return (f"{sum(self.counts)} collections in {sum(self.seconds) * 1e3:.1f} ms "
                f"({parts})")


collector_clock = CollectorClock()


def limit_arenas(count: int = ARENA_MAX) -> bool:
    """Cap glibc's malloc arenas (as MALLOC_ARENA_MAX does); True when applied. Call it before
    worker threads start: arenas already made stay."""
    if _LIBC is None:
        return False
    return bool(_LIBC.mallopt(_M_ARENA_MAX, count))


def trim() -> bool:
    """Give freed heap memory back to the system (every arena); True when some was."""
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))


def resident_bytes() -> int | None:
    """The process's resident set size, from /proc (None elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    import resource

    return pages * resource.getpagesize()


async def trim_periodically(stopping: asyncio.Event, interval: float = TRIM_INTERVAL) -> None:
    """Call `trim` every `interval` seconds until `stopping` is set (a worker thread makes the
    call, so the event loop keeps serving while glibc walks its heaps)."""
    if _LIBC is None:
        return
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), interval)
        if stopping.is_set():
            return
        before = resident_bytes()
        t = time.perf_counter()
        released = await asyncio.to_thread(trim)
        after = resident_bytes()
        if released and before is not None and after is not None:
            log.debug("malloc_trim: RSS %.1f -> %.1f MiB in %.1f ms", before / 2**20,
                      after / 2**20, (time.perf_counter() - t) * 1000)
