"""The node's Prometheus metrics: one CollectorRegistry per node, rendered by /metrics.

Events are counted where they happen (the dispatcher, the block-connect path, the hook
runner, the reorganisation path) through the `observe_*` methods; levels (height, mempool,
peers, bans) are read from the node's own objects at scrape time by `NodeStateCollector`,
so nothing has to keep them up to date.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

UNKNOWN_METHOD = "(unknown)"
"""The method label of calls to names that are not registered: a hostile client must not be
able to create one time series per made-up name."""

BLOCK_CONNECT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                         5.0, 10.0, 30.0)
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
               5.0, 10.0, 30.0)
REORG_DEPTH_BUCKETS = (1, 2, 3, 5, 10, 20, 50, 100, 1000)


@dataclass(frozen=True, slots=True)
class NodeState:
    """The levels a scrape reports, read from the node at that moment."""

    height: int
    mempool_transactions: int
    mempool_bytes: int
    peers_connected: int
    peers_handshaking: int
    banned_peers: int


class NodeStateCollector(Collector):
    """Gauges computed at scrape time from a `NodeState` source."""

    def __init__(self, source: Callable[[], NodeState]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        state = self._source()
        yield GaugeMetricFamily("chainmill_height", "Height of the best block (-1: none yet).",
                                value=state.height)
        yield GaugeMetricFamily("chainmill_mempool_transactions",
                                "Unconfirmed transactions in the mempool.",
                                value=state.mempool_transactions)
        yield GaugeMetricFamily("chainmill_mempool_bytes",
                                "Serialized size of the mempool's transactions.",
                                value=state.mempool_bytes)
        peers = GaugeMetricFamily("chainmill_peers", "P2P connections by state.",
                                  labels=["state"])
        peers.add_metric(["connected"], state.peers_connected)
        peers.add_metric(["handshaking"], state.peers_handshaking)
        yield peers
        yield GaugeMetricFamily("chainmill_banned_peers", "Peer addresses banned now.",
                                value=state.banned_peers)

    def describe(self) -> Iterator[Metric]:
        # Without describe() the registry would call collect() at registration to learn the
        # names, i.e. read the node before it is fully built.
        return iter(())


class _Timing:
    """One method's latency histogram: calls per bucket (not cumulative), sum, creation."""

    __slots__ = ("buckets", "created", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(RPC_BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.created = time.time()


class RpcCallCollector(Collector):
    """`chainmill_rpc_calls` (counter by method and outcome) and `chainmill_rpc_call_seconds`
    (histogram by method), counted in plain ints and turned into metric families at scrape
    time, with the samples prometheus_client's own Counter and Histogram would show.

    Why not those: a labelled Counter and Histogram take a lock per increment and find the
    bucket in a Python loop, about 17,000 instructions per call, as much as the rest of the
    dispatch of a read call. `observe` runs on the event loop only (the dispatcher)."""

    _BOUNDS = (*RPC_BUCKETS, float("inf"))

    def __init__(self) -> None:
        self._calls: dict[tuple[str, str], list[float]] = {}
        """(method, outcome) -> [calls, creation time]."""
        self._times: dict[str, _Timing] = {}

    def observe(self, method: str, outcome: str, seconds: float) -> None:
        """One call ended."""
        calls = self._calls.get((method, outcome))
        if calls is None:
            calls = self._calls[method, outcome] = [0, time.time()]
        calls[0] += 1
        timing = self._times.get(method)
        if timing is None:
            timing = self._times[method] = _Timing()
        timing.buckets[bisect_left(self._BOUNDS, seconds)] += 1  # the first bound >= seconds
        timing.sum += seconds

    def collect(self) -> Iterator[Metric]:
        calls, times = self._families()
        # The library's own metrics leave out their `_created` series when
        # PROMETHEUS_DISABLE_CREATED_SERIES is set or disable_created_metrics() was called;
        # so do these (the flag is read at scrape time, as the library reads it).
        with_created = getattr(prometheus_metrics, "_use_created", True)
        for (method, outcome), (count, created) in list(self._calls.items()):
            calls.add_metric([method, outcome], count,
                             created=created if with_created else None)
        yield calls
        for method, timing in list(self._times.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(self._BOUNDS, list(timing.buckets), strict=True):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))
            times.add_metric([method], buckets, timing.sum)
            if with_created:
                times.samples.append(Sample("chainmill_rpc_call_seconds_created",
                                            {"method": method}, timing.created))
        yield times

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, HistogramMetricFamily]:
        return (CounterMetricFamily(
                    "chainmill_rpc_calls",
                    "JSON-RPC calls by method and outcome (ok or the error code).",
                    labels=["method", "outcome"]),
                HistogramMetricFamily("chainmill_rpc_call_seconds",
                                      "JSON-RPC call latency by method.", labels=["method"]))


class NodeMetrics:
    """Every metric of one node, in a registry of its own (not prometheus_client's global
    default, so several nodes or tests in one process never share a counter)."""

    def __init__(self, source: Callable[[], NodeState] | None = None) -> None:
        registry = CollectorRegistry(auto_describe=True)
        self.registry = registry
        self.blocks_connected = Counter(
            "chainmill_blocks_connected", "Blocks connected to the chain (mined or received).",
            registry=registry)
        self.transactions_connected = Counter(
            "chainmill_transactions_connected", "Transactions in connected blocks.",
            registry=registry)
        self.block_connect_seconds = Histogram(
            "chainmill_block_connect_seconds", "Time to validate and store one block.",
            buckets=BLOCK_CONNECT_BUCKETS, registry=registry)
        self._rpc = RpcCallCollector()
        registry.register(self._rpc)
        self.observe_rpc = self._rpc.observe
        """One JSON-RPC call ended: (method, outcome "ok" or its error code, seconds)."""
        self.hook_runs = Counter(
            "chainmill_hook_runs", "Hook program runs finished (walletnotify, blocknotify, ...).",
            ["hook"], registry=registry)
        self.hook_failures = Counter(
            "chainmill_hook_failures", "Hook runs that failed, by hook and reason.",
            ["hook", "reason"], registry=registry)
        self.reorganisations = Counter(
            "chainmill_reorganisations", "Switches to another branch.", registry=registry)
        self.reorganisation_depth = Histogram(
            "chainmill_reorganisation_depth", "Blocks removed by a reorganisation.",
            buckets=REORG_DEPTH_BUCKETS, registry=registry)
        if source is not None:
            registry.register(NodeStateCollector(source))

    # -- events ---------------------------------------------------------------------------------
    def observe_block(self, transactions: int, seconds: float) -> None:
        """A block was connected in `seconds`."""
        self.blocks_connected.inc()
        self.transactions_connected.inc(transactions)
        self.block_connect_seconds.observe(seconds)

    def observe_hook(self, hook: str, failure: str | None) -> None:
        """A hook run ended; `failure` names why it failed, None when it succeeded."""
        self.hook_runs.labels(hook).inc()
        if failure is not None:
            self.hook_failures.labels(hook, failure).inc()

    def observe_reorg(self, depth: int) -> None:
        """A reorganisation removed `depth` blocks."""
        self.reorganisations.inc()
        self.reorganisation_depth.observe(depth)

    def render(self) -> bytes:
        """The scrape: every metric in the Prometheus text format."""
        return generate_latest(self.registry)


def node_state(ctx: Any) -> NodeState:
    """The levels of a running node's context (its chain, mempool and P2P network)."""
    net = ctx.network
    connected = handshaking = banned = 0
    if net is not None:
        for peer in list(net.peers.values()):
            if peer.closed:
                continue
            if peer.ready:
                connected += 1
            else:
                handshaking += 1
        now = time.time()
        banned = sum(1 for until in list(net.bans.values()) if until >= now)
    return NodeState(height=ctx.chain.height, mempool_transactions=len(ctx.mempool.entries),
                     mempool_bytes=ctx.mempool.bytes, peers_connected=connected,
                     peers_handshaking=handshaking, banned_peers=banned)
