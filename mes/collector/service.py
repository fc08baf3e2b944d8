"""The running collector: subscribe, hand each message to the dispatcher, reconnect, report.

paho calls `on_message` from its network loop and sends the QoS 1 PUBACK only after the
callback returns, so a message is acknowledged to the broker only once it is stored (or
rejected): a crash between receipt and storage makes the broker deliver it again, and the
unique index absorbs the redelivery.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from mes.collector.broker import QOS, BrokerSettings, make_client
from mes.collector.dispatch import TOPIC, TOPIC_WILDCARD, Dispatcher

__all__ = ["Collector"]

log = logging.getLogger(__name__)


class Collector:
    """Connects `dispatcher` to a broker until `stop()` is called."""

    def __init__(self, settings: BrokerSettings, dispatcher: Dispatcher, *,
                 client_id: str = "chainmill-collector", stats_path: Path | None = None,
                 stats_interval: float = 1.0) -> None:
        self.settings = settings
        self.dispatcher = dispatcher
        self.stats_path = stats_path
        self.stats_interval = stats_interval
        self.connected = threading.Event()
        self.connections = 0
        self._stop = threading.Event()
        self.client = make_client(settings, client_id)
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
        self.dispatcher.process(msg.payload, msg.topic)

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
        self.client.connect_async(self.settings.host, self.settings.port,
                                  keepalive=self.settings.keepalive)
        try:
            self.client.loop_forever(retry_first_connection=True)
        finally:
            self._stop.set()
            self.write_stats()
            log.info("collector stopped: %s", self.dispatcher.stats.as_dict())

    def stop(self) -> None:
        """Disconnect cleanly; run() returns once the loop has ended."""
        self._stop.set()
        self.client.disconnect()
