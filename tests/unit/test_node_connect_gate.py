"""node.context connect_block: the RPC gate closes for a block's commit, not for its check.

A block is checked (validated, its store rows made) while RPC methods go on, since checking
changes nothing; the gate (`consistent`) is closed only from the store commit until the
mempool has dropped the block's transactions. `Chain.commit` refuses a block checked on a
tip that has moved since. Real in-process node parts on a SQLite store.
"""

from __future__ import annotations

import asyncio
import gc

import pytest
from node_helpers import fresh_node, root_publish

from ledger.blocks import Block


@pytest.fixture
def ctx(tmp_path):
    with fresh_node(tmp_path, "cg", 5) as ctx:
        yield ctx


def _pooled_block(ctx, text: bytes) -> Block:
    chain, key = ctx.chain, ctx.wallet.default
    tx = root_publish(ctx, "k", text)
    ctx.mempool.add(tx, verified=True, local=True)
    tip = chain.tip_header
    return Block.build(key, chain.chain_id, tip.height + 1, tip.hash, tip.time_ms + 1, [tx])


def test_node_connect_gate_open_while_checking_closed_while_committing(ctx):
    chain = ctx.chain
    seen: dict[str, bool] = {}
    check, commit = chain.check, chain.commit

    def watched_check(*args):
        seen["check"] = ctx.consistent.is_set()
        return check(*args)

    def watched_commit(checked):
        seen["commit"] = ctx.consistent.is_set()
        return commit(checked)

    chain.check, chain.commit = watched_check, watched_commit
    block = _pooled_block(ctx, b"one")
    connected = asyncio.run(ctx.connect_block(block))
    assert seen == {"check": True, "commit": False}
    assert ctx.consistent.is_set()
    assert connected.block.hash == block.hash and chain.height == block.height
    assert not ctx.mempool.entries  # the block's tx left the pool before the gate opened


def test_node_connect_commit_refuses_a_block_checked_on_another_tip(ctx):
    chain = ctx.chain
    first = _pooled_block(ctx, b"first")
    checked = chain.check(first)
    chain.connect(_pooled_block(ctx, b"second"))  # the tip moves past `first`'s parent
    height = chain.height
    with pytest.raises(RuntimeError, match="checked on another tip"):  # not the block's fault
        chain.commit(checked)
    assert chain.height == height and ctx.store.tip().height == height


def test_node_connect_rows_made_and_written_with_the_collector_paused(ctx):
    chain = ctx.chain
    seen: dict[str, bool] = {}
    write_for, put_block = chain._write_for, ctx.store.put_block

    def watched_write_for(*args):
        seen["rows"] = gc.isenabled()
        return write_for(*args)

    def watched_put_block(*args, **kwargs):
        seen["write"] = gc.isenabled()
        return put_block(*args, **kwargs)

    chain._write_for, ctx.store.put_block = watched_write_for, watched_put_block
    assert gc.isenabled()
    chain.connect(_pooled_block(ctx, b"rows"))
    assert seen == {"rows": False, "write": False}
    assert gc.isenabled()  # restored
    gc.disable()
    try:  # a collector the caller had turned off stays off
        chain.connect(_pooled_block(ctx, b"off"))
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_node_connect_cancelled_mid_commit_holds_the_lock_until_the_commit_and_its_consequences_end(ctx):
    """A task cancelled while its block is committed in a thread (`addnode … remove` cancels
    a peer's task; a shutdown cancels them all) cannot stop that thread: the connect lock and
    the RPC gate stay held until the commit and the mempool update are over, so no second
    connect runs beside it and no reader sees a half-applied block; then it is cancelled."""
    import threading
    import time

    chain = ctx.chain
    commit = chain.commit
    inside = threading.Event()
    spans: list[tuple[float, float]] = []

    def slow_commit(checked):
        start = time.perf_counter()
        inside.set()
        time.sleep(0.2)
        try:
            return commit(checked)
        finally:
            spans.append((start, time.perf_counter()))

    chain.commit = slow_commit
    first = _pooled_block(ctx, b"first")

    async def scenario() -> None:
        task = asyncio.ensure_future(ctx.connect_block(first))
        while not inside.is_set():
            await asyncio.sleep(0.005)
        task.cancel()
        await asyncio.sleep(0.02)
        assert ctx._connect_lock.locked() and not ctx.consistent.is_set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert ctx.consistent.is_set() and not ctx._connect_lock.locked()
        assert chain.height == first.height and not ctx.mempool.entries
        second = _pooled_block(ctx, b"second")
        await ctx.connect_block(second)
        assert chain.height == second.height

    asyncio.run(scenario())
    assert len(spans) == 2 and spans[0][1] <= spans[1][0]  # one commit after the other
