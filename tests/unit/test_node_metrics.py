"""The node's metrics (node/metrics.py) and where they are counted: the collectors, the
dispatcher's RPC counting, the hook runner's runs and failures, the context's block-connect
and reorganisation paths, all read back through a real scrape and the Prometheus parser."""

from __future__ import annotations

import asyncio
import shlex
import sys
import time
from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families
from test_node_reindex import chain_with_blocks  # noqa: F401 - the fixture

from ledger.blocks import Block
from node.hooks import HookRunner
from node.metrics import UNKNOWN_METHOD, NodeMetrics, NodeState, node_state
from node.rpc.dispatch import Dispatcher, MethodTable
from node.rpc.errors import RPC_INVALID_PARAMETER, RpcError


def samples(metrics: NodeMetrics) -> dict[tuple[str, tuple], float]:
    """One scrape, parsed by prometheus_client's text parser."""
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(scraped: dict, name: str, **labels: str) -> float | None:
    return scraped.get((name, tuple(sorted(labels.items()))))


STATE = NodeState(height=12, mempool_transactions=3, mempool_bytes=900, peers_connected=2,
                  peers_handshaking=1, banned_peers=4)


def test_node_metrics_state_gauges_are_read_at_scrape_time():
    state = {"now": STATE}
    metrics = NodeMetrics(lambda: state["now"])
    first = samples(metrics)
    assert value(first, "chainmill_height") == 12
    assert value(first, "chainmill_mempool_transactions") == 3
    assert value(first, "chainmill_mempool_bytes") == 900
    assert value(first, "chainmill_peers", state="connected") == 2
    assert value(first, "chainmill_peers", state="handshaking") == 1
    assert value(first, "chainmill_banned_peers") == 4
    state["now"] = NodeState(13, 0, 0, 3, 0, 0)
    second = samples(metrics)
    assert value(second, "chainmill_height") == 13
    assert value(second, "chainmill_mempool_transactions") == 0
    assert value(second, "chainmill_peers", state="connected") == 3


def test_node_metrics_registries_are_independent_per_node():
    a, b = NodeMetrics(lambda: STATE), NodeMetrics(lambda: STATE)
    a.observe_block(5, 0.01)
    assert value(samples(a), "chainmill_blocks_connected_total") == 1
    assert value(samples(b), "chainmill_blocks_connected_total") == 0


def test_node_metrics_blocks_transactions_and_connect_time():
    metrics = NodeMetrics()
    metrics.observe_block(3, 0.002)
    metrics.observe_block(0, 0.2)
    s = samples(metrics)
    assert value(s, "chainmill_blocks_connected_total") == 2
    assert value(s, "chainmill_transactions_connected_total") == 3
    assert value(s, "chainmill_block_connect_seconds_count") == 2
    assert value(s, "chainmill_block_connect_seconds_bucket", le="0.0025") == 1
    assert value(s, "chainmill_block_connect_seconds_bucket", le="0.25") == 2
    assert abs(value(s, "chainmill_block_connect_seconds_sum") - 0.202) < 1e-9


def test_node_metrics_reorganisations_and_depth():
    metrics = NodeMetrics()
    metrics.observe_reorg(1)
    metrics.observe_reorg(7)
    s = samples(metrics)
    assert value(s, "chainmill_reorganisations_total") == 2
    assert value(s, "chainmill_reorganisation_depth_count") == 2
    assert value(s, "chainmill_reorganisation_depth_sum") == 8
    assert value(s, "chainmill_reorganisation_depth_bucket", le="1.0") == 1
    assert value(s, "chainmill_reorganisation_depth_bucket", le="5.0") == 1
    assert value(s, "chainmill_reorganisation_depth_bucket", le="10.0") == 2


def _dispatcher(metrics: NodeMetrics) -> Dispatcher:
    table = MethodTable()
    table.register("echo", lambda params: params, min_params=0, max_params=1, help="echo",
                   category="Control")

    def bad(params):
        raise RpcError(RPC_INVALID_PARAMETER, "no")

    table.register("bad", bad, min_params=0, max_params=0, help="bad", category="Control")
    dispatcher = Dispatcher(table, chain_name="c")
    dispatcher.observe = metrics.observe_rpc
    return dispatcher


def test_node_metrics_rpc_calls_by_method_and_outcome_at_the_dispatcher():
    metrics = NodeMetrics()
    dispatcher = _dispatcher(metrics)

    async def calls():
        await dispatcher.handle_body(b'{"method":"echo","params":[1],"id":1}')
        await dispatcher.handle_body(b'[{"method":"echo","id":2},{"method":"bad","id":3}]')
        await dispatcher.handle_body(b'{"method":"echo","params":[1,2],"id":4}')  # -1: count

    asyncio.run(calls())
    s = samples(metrics)
    assert value(s, "chainmill_rpc_calls_total", method="echo", outcome="ok") == 2
    assert value(s, "chainmill_rpc_calls_total", method="echo", outcome="-1") == 1
    assert value(s, "chainmill_rpc_calls_total", method="bad", outcome="-8") == 1
    assert value(s, "chainmill_rpc_call_seconds_count", method="echo") == 3
    assert value(s, "chainmill_rpc_call_seconds_count", method="bad") == 1


def test_node_metrics_unregistered_method_names_share_one_label():
    metrics = NodeMetrics()
    dispatcher = _dispatcher(metrics)

    async def calls():
        for i in range(50):
            await dispatcher.handle_body(b'{"method":"made-up-%d","id":1}' % i)
        await dispatcher.handle_body(b'{"method":7,"id":1}')
        await dispatcher.handle_body(b'[3]')

    asyncio.run(calls())
    s = samples(metrics)
    methods = {dict(k[1])["method"] for k in s if k[0] == "chainmill_rpc_calls_total"}
    assert methods == {UNKNOWN_METHOD}
    assert value(s, "chainmill_rpc_calls_total", method=UNKNOWN_METHOD, outcome="-32601") == 50
    assert value(s, "chainmill_rpc_calls_total", method=UNKNOWN_METHOD, outcome="-32600") == 2


def test_node_metrics_hook_runs_and_failures_at_the_runner(tmp_path):
    metrics = NodeMetrics()
    python = shlex.quote(sys.executable)

    async def run():
        ok = HookRunner(walletnotify=None, walletnotifynew=None,
                        blocknotify=f"{python} -c pass %s")
        fails = HookRunner(walletnotify=None, walletnotifynew=None,
                           blocknotify=f"{python} -c 'import sys; sys.exit(3)' %s")
        missing = HookRunner(walletnotify=None, walletnotifynew=None,
                             blocknotify=f"{tmp_path / 'no-such-program'} %s")
        hangs = HookRunner(walletnotify=None, walletnotifynew=None,
                           blocknotify=f"{python} -c 'import time; time.sleep(60)' %s",
                           timeout=0.2)
        runners = (ok, fails, missing, hangs)
        for runner in runners:
            runner.observe = metrics.observe_hook
        await ok.block_event("aa")
        await ok.block_event("bb")
        for runner in runners[1:]:
            await runner.block_event("cc")
        deadline = time.monotonic() + 30
        while any(r.running or r.queued for r in runners) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for runner in runners:
            await runner.close()

    asyncio.run(run())
    s = samples(metrics)
    assert value(s, "chainmill_hook_runs_total", hook="blocknotify") == 5
    assert value(s, "chainmill_hook_failures_total", hook="blocknotify", reason="exit-code") == 1
    assert value(s, "chainmill_hook_failures_total", hook="blocknotify", reason="cannot-run") == 1
    assert value(s, "chainmill_hook_failures_total", hook="blocknotify", reason="timeout") == 1


def _peer(ready: bool, closed: bool = False) -> SimpleNamespace:
    return SimpleNamespace(ready=ready, closed=closed)


def test_node_metrics_node_state_counts_peers_by_state_and_live_bans():
    now = time.time()
    network = SimpleNamespace(
        peers={1: _peer(True), 2: _peer(True), 3: _peer(False), 4: _peer(True, closed=True)},
        bans={b"a": now + 600, b"b": now + 60, b"c": now - 1})  # the last one has expired
    mempool = SimpleNamespace(entries={b"t1": None, b"t2": None}, bytes=321)
    ctx = SimpleNamespace(network=network, mempool=mempool, chain=SimpleNamespace(height=9))
    assert node_state(ctx) == NodeState(9, 2, 321, 2, 1, 2)
    ctx.network = None  # offline node
    assert node_state(ctx) == NodeState(9, 2, 321, 0, 0, 0)


def test_node_metrics_counted_on_the_contexts_connect_and_reorg_paths(
        chain_with_blocks):  # noqa: F811
    ctx, _, _ = chain_with_blocks
    ctx.metrics = NodeMetrics(lambda: node_state(ctx))
    chain, key = ctx.chain, ctx.wallet.default
    assert chain.height == 7

    async def run():
        tip = chain.tip_header
        await ctx.connect_block(Block.build(key, chain.chain_id, 8, tip.hash,
                                            tip.time_ms + 1, []))
        # A competing branch from block 5: blocks 6', 7', 8', 9' replace 6, 7, 8.
        fork = chain.block_at(5).header
        branch, prev, t = [], fork.hash, fork.time_ms + 1000
        for h in range(6, 10):
            block = Block.build(key, chain.chain_id, h, prev, t + h, [])
            branch.append(block)
            prev = block.hash
        ok, removed = await ctx.reorganise(5, branch)
        assert ok and len(removed) == 3

    asyncio.run(run())
    s = samples(ctx.metrics)
    assert value(s, "chainmill_height") == 9
    assert value(s, "chainmill_blocks_connected_total") == 5  # block 8, then 6'..9'
    assert value(s, "chainmill_block_connect_seconds_count") == 5
    assert value(s, "chainmill_reorganisations_total") == 1
    assert value(s, "chainmill_reorganisation_depth_sum") == 3


def test_node_metrics_readme_names_every_metric_the_node_serves():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Health and metrics", 1)[1].split("\n## ", 1)[0]
    documented = {re.sub(r"_total$", "", n) for n in re.findall(r"`(chainmill_\w+)", section)}
    served = {f.name for f in text_string_to_metric_families(
        NodeMetrics(lambda: STATE).render().decode()) if not f.name.endswith("_created")}
    assert documented == served


def test_node_metrics_rpc_scrape_is_what_prometheus_counter_and_histogram_show():
    """The RPC counts are plain ints exported at scrape time; the text is the library's own
    Counter and Histogram's for the same calls (bucket edges included), creation times aside."""
    import re

    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from node.metrics import RPC_BUCKETS

    calls = [("publish", "ok", 0.0001), ("publish", "ok", 0.0005), ("publish", "ok", 0.001),
             ("publish", "-8", 0.3), ("getinfo", "ok", 40.0), (UNKNOWN_METHOD, "-32601", 0.0)]
    reference = CollectorRegistry()
    counter = Counter("chainmill_rpc_calls",
                      "JSON-RPC calls by method and outcome (ok or the error code).",
                      ["method", "outcome"], registry=reference)
    histogram = Histogram("chainmill_rpc_call_seconds", "JSON-RPC call latency by method.",
                          ["method"], buckets=RPC_BUCKETS, registry=reference)
    metrics = NodeMetrics()
    for method, outcome, seconds in calls:
        counter.labels(method, outcome).inc()
        histogram.labels(method).observe(seconds)
        metrics.observe_rpc(method, outcome, seconds)

    def rpc_lines(text: bytes) -> list[str]:
        return [re.sub(r"_created(\{[^}]*\})? \S+", r"_created\1 T", line)
                for line in text.decode().splitlines() if "chainmill_rpc_call" in line]

    ours = rpc_lines(metrics.render())
    assert ours == rpc_lines(generate_latest(reference)) and len(ours) > 40


def test_node_metrics_rpc_created_series_follow_the_library_switch():
    """With the library's `_created` series switched off (PROMETHEUS_DISABLE_CREATED_SERIES,
    or disable_created_metrics()), the RPC families leave theirs out too, as its own Counter
    and Histogram do; switched back on, they are there again."""
    from prometheus_client import disable_created_metrics, enable_created_metrics

    metrics = NodeMetrics()
    metrics.observe_rpc("publish", "ok", 0.001)
    disable_created_metrics()
    try:
        off = metrics.render().decode()
    finally:
        enable_created_metrics()
    on = metrics.render().decode()
    assert "chainmill_rpc_calls_total" in off and "chainmill_rpc_call_seconds_count" in off
    assert "_created" not in off
    assert "chainmill_rpc_calls_created{" in on and "chainmill_rpc_call_seconds_created{" in on
