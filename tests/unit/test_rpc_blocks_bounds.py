"""listblocks' bounds and its run off the event loop (issue 15.3), against a fake chain context.

FakeBlockContext implements only what the block methods read (chain height, block rows); its
store can hold a read open so the test sees other calls answered meanwhile.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import pytest

from ledger.blocks import BLOCK_VERSION, BlockHeader
from node.rpc.dispatch import Dispatcher, MethodTable
from node.rpc.errors import RPC_INVALID_PARAMETER, RpcError
from node.rpc.methods import blocks


@dataclass
class FakeRow:
    height: int
    hash: str
    prev_hash: str
    time_s: int
    miner: str
    txcount: int
    size: int


class FakeChain:
    def __init__(self, height: int) -> None:
        self.height = height


class FakeBlockStore:
    """Block rows by height; `hold` makes block_rows wait (in its worker thread) until set."""

    def __init__(self) -> None:
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()

    def block_rows(self, heights):
        self.entered.set()
        assert self.hold.wait(30)
        return [FakeRow(h, f"{h:064x}", f"{h - 1:064x}", 1000 + h, "miner", 1, 300)
                for h in heights]

    def block_raw(self, height):
        # listblocks verbose reads the header (version, merkle root) of each block.
        return BlockHeader(BLOCK_VERSION, height, bytes(32), bytes(32), 0).encode()


class FakeBlockContext:
    def __init__(self, height: int) -> None:
        self.chain = FakeChain(height)
        self.store = FakeBlockStore()


def block_table(ctx: FakeBlockContext) -> MethodTable:
    table = MethodTable()
    blocks.register_methods(table, ctx)
    table.register("echo", lambda p: p, min_params=0, max_params=3, help="echo",
                   category="Control")
    return table


def test_rpc_blocks_block_set_caps_parts_and_blocks():
    ctx = FakeBlockContext(height=500_000)
    with pytest.raises(RpcError, match="at most 1000") as many:
        blocks.parse_block_set(ctx, ",".join(["0-0"] * 10_000))
    assert many.value.code == RPC_INVALID_PARAMETER
    with pytest.raises(RpcError, match="at most 100000"):
        blocks.parse_block_set(ctx, "0-60000,100000-160000")
    with pytest.raises(RpcError, match="Invalid block range"):
        blocks.parse_block_set(ctx, "0-100001")
    with pytest.raises(RpcError, match="at most 100000"):
        blocks.parse_block_set(ctx, "-100002")
    assert blocks.parse_block_set(ctx, ",".join(["7-9"] * 1_000)) == [7, 8, 9]
    # Ranges beyond the tip are cut at the tip before anything is counted.
    short = FakeBlockContext(height=10)
    assert blocks.parse_block_set(short, ",".join(["5-99999"] * 1_000)) == list(range(5, 11))


def test_rpc_blocks_listblocks_runs_off_the_event_loop():
    ctx = FakeBlockContext(height=50)
    dispatcher = Dispatcher(block_table(ctx), chain_name="c")

    async def main():
        ctx.store.hold.clear()
        listing = asyncio.create_task(dispatcher.handle_object(
            {"method": "listblocks", "params": ["0-50", True], "id": 1}))
        assert await asyncio.to_thread(ctx.store.entered.wait, 30)
        # The store read is still held open in its worker thread; another call is answered.
        reply, status = await dispatcher.handle_object({"method": "echo", "params": [1], "id": 2})
        assert (reply["result"], status) == ([1], 200)
        assert not listing.done()
        ctx.store.hold.set()
        reply, status = await listing
        assert status == 200 and len(reply["result"]) == 51
        assert reply["result"][50]["height"] == 50 and reply["result"][50]["size"] == 300

    asyncio.run(main())


def test_rpc_blocks_array_parameters_are_capped_before_the_handler_runs():
    ctx = FakeBlockContext(height=5)
    dispatcher = Dispatcher(block_table(ctx), chain_name="c")
    ctx.store.hold.clear()  # the handler must not even start

    async def main():
        reply, status = await dispatcher.handle_object(
            {"method": "listblocks", "params": [list(range(10_001))], "id": 1})
        assert reply["error"] == {"code": -8, "message": "Too many entries in parameter 1: "
                                  "10001 (at most 10000 in one call)"}
        assert status == 500 and not ctx.store.entered.is_set()

    asyncio.run(main())
