"""One receiver walk per chain and data directory at a time, across processes.

The node runs `chainmill receive` for every notification, several at once; `chainmill
triggers follow` may run as well. Two walks over the same database would race for the same
items, so a walk holds an exclusive lock file in the chain's directory. A notified process
that finds another one already *queued* behind the running walk leaves at once: the queued
walk starts after this notification, so it sees everything this one would have seen.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: walks are not serialised
    fcntl = None  # type: ignore[assignment]

__all__ = ["walk_lock", "LOCK_FILE", "QUEUE_FILE"]

LOCK_FILE = "triggers-walk.lock"
QUEUE_FILE = "triggers-walk.queue"


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


@contextlib.contextmanager
def walk_lock(directory: Path, leave_if_queued: bool = False) -> Iterator[bool]:
    """Hold the walk lock of `directory`; yields True, or False (holding nothing) when
    `leave_if_queued` and another process already waits for its turn."""
    if fcntl is None:
        yield True
        return
    directory.mkdir(parents=True, exist_ok=True)
    queue = _open(directory / QUEUE_FILE)
    try:
        try:
            fcntl.flock(queue, fcntl.LOCK_EX | (fcntl.LOCK_NB if leave_if_queued else 0))
        except BlockingIOError:
            yield False
            return
        lock = _open(directory / LOCK_FILE)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            fcntl.flock(queue, fcntl.LOCK_UN)  # the next process may queue behind this walk
            yield True
        finally:
            os.close(lock)  # closing releases the lock
    finally:
        os.close(queue)
