"""The chain directory's start-up lock: an exclusive `flock` on `.lock`, held for the node's life.

As Bitcoin Core's `.lock`: the kernel releases the lock when the process ends, however it
ends (SIGKILL included), so a dead node never blocks the next start and a live one always
does, whatever the pid file says. The pid file stays beside it, for information only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from config import paths
from config.errors import ConfigError


class ChainLock:
    """`<chain_dir>/.lock`, locked exclusively by `acquire` until `release` or process exit."""

    def __init__(self, chain_dir: Path) -> None:
        self.chain_dir = chain_dir
        self.path = chain_dir / paths.LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ConfigError naming the running node's pid (when known)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = self._recorded_pid()
            who = f" (pid {pid})" if pid is not None else ""
            raise ConfigError(f"the node of this chain is already running{who}; stop it first "
                              f"with `chainmill cli {self.chain_dir.name} stop`") from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def check_free(self) -> None:
        """Raise as `acquire` would if a node holds the lock; leave it free either way."""
        self.acquire()
        self.release()

    def _recorded_pid(self) -> int | None:
        try:
            return int((self.chain_dir / paths.PID_FILE).read_text().strip())
        except (OSError, ValueError):
            return None
