"""From a received body to a plug-in call: validation, routing by cnc_id, counting.

No I/O of its own (the plug-ins do theirs): the MQTT edge hands each body here, the tests and
the benchmark call it directly. A plug-in that raises is logged and counted, never
propagated, so one broken machine driver cannot stop the collector.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mes.collector.message import MAX_MESSAGE_BYTES, Rejected, validate
from mes.collector.plugins import PluginSet
from mes.collector.store import CncStore

__all__ = ["Outcome", "Stats", "RejectionLog", "Dispatcher", "TOPIC", "TOPIC_WILDCARD", "topic_cnc_id"]

log = logging.getLogger(__name__)

TOPIC = "sensor/CNC"
TOPIC_WILDCARD = "sensor/CNC/+"


@dataclass
class Stats:
    """Counters since the collector started (thread-safe increments)."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    handled: int = 0
    rejected: int = 0
    plugin_errors: int = 0
    rejected_by_rule: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, rule: int | None = None) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)
            if rule is not None:
                self.rejected_by_rule[str(rule)] += 1

    def reclassify_duplicates(self, n: int) -> None:
        """`n` messages counted as stored turned out, at the batch's commit, to be stored
        already (redeliveries)."""
        if n:
            with self._lock:
                self.stored -= n
                self.duplicates += n

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot."""
        with self._lock:
            return {
                "received": self.received, "stored": self.stored,
                "duplicates": self.duplicates, "handled": self.handled,
                "rejected": self.rejected, "plugin_errors": self.plugin_errors,
                "rejected_by_rule": dict(self.rejected_by_rule),
            }


class RejectionLog:
    """Logs rejected messages with their reason, at most `burst` per `window` seconds: a
    flood of garbage on the broker must not become a flood in the log. What is held back is
    summarised (count by rule) when the next window opens."""

    def __init__(self, clock: Callable[[], float], burst: int = 20, window: float = 60.0) -> None:
        self.clock = clock
        self.burst = burst
        self.window = window
        self._start = clock()
        self._logged = 0
        self._held: Counter = Counter()

    def __call__(self, rule: int, reason: str, topic: str) -> None:
        now = self.clock()
        if now - self._start >= self.window:
            if self._held:
                log.warning("%d more rejected messages not logged in the last %.0f s "
                            "(by rule: %s)", sum(self._held.values()), self.window,
                            dict(sorted(self._held.items())))
            self._start, self._logged, self._held = now, 0, Counter()
        if self._logged < self.burst:
            self._logged += 1
            log.warning("rejected message on %s (rule %d): %s", topic, rule, reason)
        else:
            self._held[str(rule)] += 1


class Outcome:
    """What became of one message."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    HANDLED = "handled"  # a custom plug-in returned something other than True/False
    REJECTED = "rejected"
    PLUGIN_ERROR = "plugin-error"


def topic_cnc_id(topic: str) -> str | None:
    """The machine named by a `sensor/CNC/<cnc_id>` topic, None for plain `sensor/CNC`."""
    prefix = TOPIC + "/"
    return topic[len(prefix):] if topic.startswith(prefix) else None


class Dispatcher:
    """Validates each body and hands it to its machine's plug-in instance."""

    def __init__(self, plugins: PluginSet, db: CncStore, *,
                 clock: Callable[[], float] = time.time,
                 max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.plugins = plugins
        self.db = db
        self.clock = clock
        self.max_bytes = max_bytes
        self.known = plugins.known()
        self.stats = Stats()
        self.rejection_log = RejectionLog(clock)

    def _reject(self, rule: int, reason: str, topic: str) -> str:
        self.stats.add("rejected", rule)
        self.rejection_log(rule, reason, topic)
        return Outcome.REJECTED

    def process(self, body: bytes, topic: str = TOPIC) -> str:
        """Validate, dispatch and count one message; return its Outcome."""
        self.stats.add("received")
        try:
            message = validate(body, self.known, self.clock(), self.max_bytes)
        except Rejected as exc:
            return self._reject(exc.rule, exc.reason, topic)
        named = topic_cnc_id(topic)
        if named is not None and named != message.cnc_id:
            return self._reject(4, f"topic names {named!r} but the message is from "
                                   f"{message.cnc_id!r}", topic)
        plugin = self.plugins.instances.get(message.cnc_id)
        if plugin is None:
            return self._reject(4, self.plugins.errors.get(message.cnc_id, "no plug-in"), topic)
        try:
            result = plugin.handle(message, self.db)
        except Exception as exc:  # foreign plug-in code: the outermost loop for one message
            self.stats.add("plugin_errors")
            log.error("plug-in for %s failed on the message at %d: %r",
                      message.cnc_id, message.timestamp, exc)
            return Outcome.PLUGIN_ERROR
        if result is True:
            self.stats.add("stored")
            return Outcome.STORED
        if result is False:
            self.stats.add("duplicates")
            return Outcome.DUPLICATE
        self.stats.add("handled")
        return Outcome.HANDLED
