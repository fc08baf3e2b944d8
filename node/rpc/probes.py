"""`GET /health` and `GET /metrics` beside JSON-RPC: who may read them, and their answers.

Clients on loopback, and those in `metricsallowip`, read them without credentials; any other
client that passed the RPC server's address filter (rpcallowip) needs the RPC credentials.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson

from node.rpc.http import JSON, Response

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

HEALTH_PATH = "/health"
METRICS_PATH = "/metrics"
PROBE_PATHS = frozenset({HEALTH_PATH, METRICS_PATH})
METRICS_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format."""
_NOT_ALLOWED = Response(405, b"Method Not Allowed", b"text/plain; charset=utf-8",
                        headers=((b"Allow", b"GET, HEAD"),))


@dataclass
class Probes:
    """The node's answers to the two paths, and the networks that read them openly."""

    health: Callable[[], Awaitable[tuple[int, dict[str, Any]]]]
    metrics: Callable[[], bytes]
    open_networks: Sequence[IPNetwork] = field(default_factory=tuple)
    """metricsallowip: networks besides loopback that need no credentials."""


def open_access(open_networks: Sequence[IPNetwork]) -> Callable[[str | None], bool]:
    """A cached predicate: may a client at this address read the probes without credentials?
    Loopback always may; others only inside `open_networks`."""
    networks = tuple(open_networks)

    @lru_cache(maxsize=4096)
    def is_open(host: str | None) -> bool:
        if host is None:
            return False
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_loopback:
            return True
        return any(ip.version == net.version and ip in net for net in networks)

    return is_open


async def probe_response(probes: Probes, method: bytes, path: str) -> Response:
    """The answer to an already admitted request for /health or /metrics."""
    if method not in (b"GET", b"HEAD"):
        return _NOT_ALLOWED
    if path == HEALTH_PATH:
        status, body = await probes.health()
        return Response(status, orjson.dumps(body), JSON)
    return Response(200, probes.metrics(), METRICS_CONTENT_TYPE)
