"""Broker settings and the paho-mqtt client built from them (the collector's and emulator's edge).

The broker must be configured explicitly (no public default broker, unlike the reference);
user/password and TLS are supported. Clients use MQTT 3.1.1 with a persistent session
(clean_session=False): while the collector is disconnected the broker keeps its QoS 1
messages, and on reconnect they are delivered; paho reconnects by itself with a capped
back-off.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass

import paho.mqtt.client as mqtt

from config.errors import ChainmillError

__all__ = ["BrokerSettings", "BrokerError", "parse_broker", "make_client", "QOS"]

log = logging.getLogger(__name__)

QOS = 1
DEFAULT_PORT = 1883


class BrokerError(ChainmillError):
    """Broker settings that cannot work."""


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    """Where and how to connect."""

    host: str
    port: int = DEFAULT_PORT
    username: str | None = None
    password: str | None = None
    tls: bool = False
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    keepalive: int = 30


def parse_broker(text: str) -> tuple[str, int]:
    """`HOST` or `HOST:PORT` (port 1883 by default)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, str(DEFAULT_PORT)
    if not host:
        raise BrokerError(f"broker {text!r}: expected HOST:PORT")
    try:
        port = int(port_text)
    except ValueError:
        raise BrokerError(f"broker {text!r}: port is not a number") from None
    if not 1 <= port <= 65535:
        raise BrokerError(f"broker {text!r}: port out of range")
    return host, port


def make_client(settings: BrokerSettings, client_id: str, *,
                persistent: bool = True, manual_ack: bool = False) -> mqtt.Client:
    """A paho client configured for `settings` (not yet connected)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=not persistent, protocol=mqtt.MQTTv311,
                         manual_ack=manual_ack)
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    client.max_inflight_messages_set(100)
    client.max_queued_messages_set(0)  # unbounded: a QoS 1 publish is never dropped locally
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls or settings.cafile or settings.certfile:
        context = ssl.create_default_context(cafile=settings.cafile)
        if settings.certfile:
            context.load_cert_chain(settings.certfile, settings.keyfile)
        client.tls_set_context(context)
    return client
