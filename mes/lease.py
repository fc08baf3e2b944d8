"""A lease in the MES database: one holder at a time across processes and hosts.

The day-report job holds it while it runs, the unit sender while it sends, so two processes
of one deployment (a web server's reloader, two replicas) never do the same work at once.
A lease of a process on this host that is gone is taken over at once, any other when it
expires.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from mes import schema

__all__ = ["LEASE_MS", "SchedulerLock", "default_holder"]

log = logging.getLogger(__name__)

LEASE_MS = 600_000
JOB_NAME = "dayreport"


def _ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def default_holder() -> str:
    """This process's name in the lease: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _dead_here(holder: str) -> bool:
    """Whether ``holder`` (``host:pid``) names a process of this host that no longer runs."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class SchedulerLock:
    """A lease (a row of ``mes_scheduler_lock``): one holder at a time."""

    def __init__(self, engine: Engine, holder: str, *, name: str = JOB_NAME,
                 lease_ms: int = LEASE_MS) -> None:
        self.engine = engine
        self.holder = holder
        self.name = name
        self.lease_ms = lease_ms

    def _ensure_row(self) -> None:
        lock = schema.scheduler_lock
        with self.engine.begin() as conn:
            if conn.execute(select(lock.c.name).where(lock.c.name == self.name)).first():
                return
        try:
            with self.engine.begin() as conn:
                conn.execute(lock.insert().values(name=self.name, holder=None, lease_until=0))
        except IntegrityError:
            pass  # another process inserted it first

    def acquire(self, now: dt.datetime) -> bool:
        """Take or renew the lease at ``now``; True when this holder has it."""
        self._ensure_row()
        lock = schema.scheduler_lock
        now_ms = _ms(now)
        # One conditional UPDATE: atomic on every backend, no read-then-write race.
        with self.engine.begin() as conn:
            result = conn.execute(
                update(lock).where(lock.c.name == self.name)
                .where((lock.c.holder == self.holder) | (lock.c.holder.is_(None))
                       | (lock.c.lease_until < now_ms))
                .values(holder=self.holder, lease_until=now_ms + self.lease_ms))
        if result.rowcount == 1:
            return True
        with self.engine.begin() as conn:
            holder = conn.execute(select(lock.c.holder).where(lock.c.name == self.name)).scalar()
            if holder is None or not _dead_here(holder):
                return False
            # The holder was a process of this host that is gone (killed): take its lease now
            # instead of waiting for it to expire, still with one conditional UPDATE.
            result = conn.execute(update(lock).where(lock.c.name == self.name)
                                  .where(lock.c.holder == holder)
                                  .values(holder=self.holder, lease_until=now_ms + self.lease_ms))
        if result.rowcount == 1:
            log.warning("scheduler lease of %s taken over: that process is gone", holder)
        return result.rowcount == 1

    def release(self) -> None:
        lock = schema.scheduler_lock
        with self.engine.begin() as conn:
            conn.execute(update(lock).where(lock.c.name == self.name)
                         .where(lock.c.holder == self.holder).values(holder=None, lease_until=0))

    def last_run(self) -> dt.datetime | None:
        lock = schema.scheduler_lock
        with self.engine.connect() as conn:
            value = conn.execute(select(lock.c.last_run).where(lock.c.name == self.name)).scalar()
        return None if value is None else dt.datetime.fromtimestamp(value / 1000, dt.UTC)

    def set_last_run(self, moment: dt.datetime) -> None:
        lock = schema.scheduler_lock
        with self.engine.begin() as conn:
            conn.execute(update(lock).where(lock.c.name == self.name).values(last_run=_ms(moment)))
