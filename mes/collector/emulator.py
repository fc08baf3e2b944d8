"""A CNC emulator for demos and tests: machines that run, idle and fail, published over MQTT.

`MachineModel` is pure (seeded randomness, explicit time): each machine alternates between
`running` (spindle speed and feed moving the axes), `idle` (spindle stopped) and now and then
`error` (an alarm code), with period lengths drawn from realistic ranges. `Emulator` is the
edge that publishes each sample at QoS 1 to `sensor/CNC/<cnc_id>` and records which ones the
broker acknowledged.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from mes.collector.broker import QOS, BrokerSettings, make_client
from mes.collector.dispatch import TOPIC

__all__ = ["MachineModel", "samples", "Emulator", "PERIODS"]

log = logging.getLogger(__name__)

PERIODS = {"running": (120, 1800), "idle": (30, 600), "error": (60, 900)}
"""Seconds each state lasts, (shortest, longest)."""
_NEXT = {"running": (("idle", 0.8), ("error", 0.2)), "idle": (("running", 1.0),),
         "error": (("idle", 0.3), ("running", 0.7))}
PROGRAMS = ("program_01", "program_02", "program_07")
ALARMS = ("E100 spindle overload", "E214 tool breakage", "E330 coolant low")


@dataclass
class MachineModel:
    """One emulated CNC: its state, the time it leaves it, and its axis positions."""

    cnc_id: str
    rng: random.Random
    state: str = "idle"
    until: float = 0.0
    program: str = PROGRAMS[0]
    axes: dict[str, float] = field(default_factory=lambda: {"X-Axis": 0.0, "Y-Axis": 0.0,
                                                              "Z-Axis": 0.0})
    seq: int = 0

    def _enter(self, state: str, now: float) -> None:
        self.state = state
        low, high = PERIODS[state]
        self.until = now + self.rng.uniform(low, high)
        if state == "running":
            self.program = self.rng.choice(PROGRAMS)

    def _transition(self, now: float) -> None:
        choices, weights = zip(*_NEXT[self.state], strict=True)
        self._enter(self.rng.choices(choices, weights)[0], now)

    def sample(self, now: float) -> dict[str, Any]:
        """The message this machine sends at time `now` (Unix seconds)."""
        if self.until == 0.0:
            self._enter(self.rng.choice(("running", "idle")), now)
        while now >= self.until:
            self._transition(self.until)
        self.seq += 1
        payload: dict[str, Any] = {"status": self.state, "seq": self.seq}
        if self.state == "running":
            payload["spin"] = int(self.rng.gauss(1200, 400)) if self.rng.random() < 0.9 else 0
            payload["spin"] = max(payload["spin"], 0)
            payload["feed"] = round(self.rng.uniform(100, 800), 1)
            for axis in self.axes:
                self.axes[axis] = round(min(max(self.axes[axis] + self.rng.uniform(-5, 5), 0),
                                            500), 3)
        else:
            payload["spin"] = 0
            payload["feed"] = 0.0
        payload.update(self.axes)
        if self.state == "error":
            payload["alarm"] = self.rng.choice(ALARMS)
        return {"cnc_id": self.cnc_id, "part_program": self.program,
                "timestamp": str(int(now)), "payload": payload}


def samples(cnc_ids: Sequence[str], seed: int, start: float, step: float,
            count: int | None) -> Iterator[dict[str, Any]]:
    """`count` messages (None: forever), round-robin over the machines, `step` s apart each round."""
    rng = random.Random(seed)
    machines = [MachineModel(c, random.Random(rng.random())) for c in cnc_ids]
    produced = 0
    now = start
    while count is None or produced < count:
        for machine in machines:
            if count is not None and produced >= count:
                return
            yield machine.sample(now)
            produced += 1
        now += step


class Emulator:
    """Publishes samples to the broker at QoS 1 and records the acknowledged ones."""

    def __init__(self, settings: BrokerSettings, *, client_id: str = "chainmill-emulator",
                 record_path: Path | None = None) -> None:
        self.settings = settings
        self.record_path = record_path
        self.client = make_client(settings, client_id)
        self.client.on_publish = self._on_publish
        self._pending: dict[int, str] = {}
        self._early: set[int] = set()
        self._lock = threading.Lock()
        self.acked = 0
        self.published = 0
        self._record = record_path.open("a", encoding="utf-8") if record_path else None

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        with self._lock:
            line = self._pending.pop(mid, None)
            if line is None:
                self._early.add(mid)  # acked before publish() registered it
                return
            self._acked(line)

    def _acked(self, line: str) -> None:
        self.acked += 1
        if self._record is not None:
            self._record.write(line + "\n")
            self._record.flush()

    def outstanding(self) -> int:
        """Messages published but not yet acknowledged by the broker."""
        with self._lock:
            return len(self._pending)

    def publish(self, message: dict[str, Any]) -> None:
        """Queue one message (paho resends it after a reconnect until the broker acks it)."""
        line = json.dumps(message, separators=(",", ":"))
        topic = f"{TOPIC}/{message['cnc_id']}"
        # Not under self._lock: paho calls on_publish while holding its own message lock,
        # which publish() also takes, so holding ours here could deadlock.
        info = self.client.publish(topic, line, qos=QOS)
        with self._lock:
            self.published += 1
            if info.mid in self._early:
                self._early.discard(info.mid)
                self._acked(line)
            else:
                self._pending[info.mid] = line

    def run(self, messages: Iterator[dict[str, Any]], rate: float,
            drain_timeout: float = 60.0) -> int:
        """Publish every message (`rate` per second, 0 = as fast as possible); wait for the acks.

        Returns the number of messages still unacknowledged at the end (0 when all arrived)."""
        self.client.connect_async(self.settings.host, self.settings.port,
                                  keepalive=self.settings.keepalive)
        self.client.loop_start()
        try:
            started = time.monotonic()
            for n, message in enumerate(messages, 1):
                self.publish(message)
                if rate > 0:
                    delay = started + n / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)  # pacing the emulated machines, not a test wait
            deadline = time.monotonic() + drain_timeout
            while self.outstanding() and time.monotonic() < deadline:
                time.sleep(0.05)
            left = self.outstanding()
            if left:
                log.warning("%d messages not acknowledged by the broker", left)
            return left
        finally:
            self.client.disconnect()
            self.client.loop_stop()
            if self._record is not None:
                self._record.close()
