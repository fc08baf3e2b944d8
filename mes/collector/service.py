"""The running collector: subscribe, hand messages to the dispatcher in batches, reconnect.

paho's network thread only queues each message. A writer thread takes what has arrived (up
to `batch_size`), dispatches it with the store deferred, commits the batch in one
transaction (retrying while the database is unavailable) and only then sends the QoS 1
PUBACKs (manual acknowledgement, in arrival order). So a message is acknowledged to the
broker only once it is stored or rejected: after a crash the broker delivers it again and
the unique index absorbs the redelivery. Acks of messages received on an earlier connection
are not sent (their packet ids may name other messages now); the broker redelivers those.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from sqlalchemy.exc import SQLAlchemyError

from mes.collector.broker import QOS, BrokerSettings, make_client
from mes.collector.dispatch import TOPIC, TOPIC_WILDCARD, Dispatcher

__all__ = ["Collector"]

log = logging.getLogger(__name__)


class Collector:
    """Connects `dispatcher` to a broker until `stop()` is called."""

    def __init__(self, settings: BrokerSettings, dispatcher: Dispatcher, *,
                 client_id: str = "chainmill-collector", stats_path: Path | None = None,
                 stats_interval: float = 1.0, batch_size: int = 500) -> None:
        self.settings = settings
        self.dispatcher = dispatcher
        self.stats_path = stats_path
        self.stats_interval = stats_interval
        self.connected = threading.Event()
        self.connections = 0
        self.batch_size = batch_size
        self._stop = threading.Event()
        self._queue: queue.Queue[tuple[int, mqtt.MQTTMessage]] = queue.Queue()
        self.client = make_client(settings, client_id, manual_ack=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.error("broker refused the connection: %s", reason)
            return
        self.connections += 1
        log.info("connected to %s:%d (session present: %s)", self.settings.host,
                 self.settings.port, getattr(flags, "session_present", "?"))
        client.subscribe([(TOPIC, QOS), (TOPIC_WILDCARD, QOS)])
        self.connected.set()
        self.write_stats()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("disconnected from the broker (%s); reconnecting", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._queue.put((self.connections, msg))

    def _take_batch(self) -> list[tuple[int, mqtt.MQTTMessage]]:
        try:
            batch = [self._queue.get(timeout=0.2)]
        except queue.Empty:
            return []
        while len(batch) < self.batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write_loop(self) -> None:
        store = self.dispatcher.db
        while not self._stop.is_set():
            batch = self._take_batch()
            if not batch:
                continue
            with store.deferred():
                for _, msg in batch:
                    try:
                        topic = msg.topic
                    except UnicodeDecodeError:
                        topic = "<topic not UTF-8>"
                    self.dispatcher.process(msg.payload, topic)
                while True:
                    try:
                        _, duplicates = store.flush()
                        break
                    except SQLAlchemyError as exc:
                        log.error("cannot store a batch of %d messages (retrying): %s",
                                  len(batch), exc)
                        if self._stop.wait(1.0):
                            return  # unacknowledged: the broker delivers them again
            self.dispatcher.stats.reclassify_duplicates(duplicates)
            for generation, msg in batch:
                if msg.qos > 0 and generation == self.connections:
                    self.client.ack(msg.mid, msg.qos)

    def write_stats(self) -> None:
        """Write the counters to the stats file (atomically), when one is configured."""
        if self.stats_path is None:
            return
        data = {**self.dispatcher.stats.as_dict(), "connections": self.connections,
                "connected": self.connected.is_set()}
        tmp = self.stats_path.with_name(self.stats_path.name + ".tmp")
        tmp.write_text(json.dumps(data, sort_keys=True))
        os.replace(tmp, self.stats_path)

    def _report_loop(self) -> None:
        while not self._stop.wait(self.stats_interval):
            self.write_stats()

    def run(self) -> None:
        """Connect (retrying until the broker is up) and collect until stop()."""
        reporter = threading.Thread(target=self._report_loop, name="collector-stats",
                                    daemon=True)
        reporter.start()
        writer = threading.Thread(target=self._write_loop, name="collector-writer")
        writer.start()
        self.client.connect_async(self.settings.host, self.settings.port,
                                  keepalive=self.settings.keepalive)
        try:
            self.client.loop_forever(retry_first_connection=True)
        finally:
            self._stop.set()
            writer.join()
            self.write_stats()
            log.info("collector stopped: %s", self.dispatcher.stats.as_dict())

    def stop(self) -> None:
        """Disconnect cleanly; run() returns once the loop has ended."""
        self._stop.set()
        self.client.disconnect()
