"""Property: an RPC call either builds a transaction the chain can carry, or changes nothing.

Hypothesis generates publish, publishmulti, create stream, grant and revoke calls at and beyond
every limit (keys per item, key bytes, data size, items per tx, custom-field size, stream name
bytes, address lists, block ranges, tx and block size) against an in-process node on a real
SQLite store with small size limits. Whatever the method table accepts must be mined by the
miner's own selection into blocks that encode, decode, connect and re-index; whatever it
refuses must leave the mempool and the chain state as they were.
"""

from __future__ import annotations

import asyncio
import json
import random
import time

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from config.params import default_params, write_params_file
from config.runtime import ensure_chain_conf
from ledger.blocks import Block
from ledger.transactions import MAX_DETAILS_BYTES, MAX_KEY_BYTES, MAX_KEYS, MAX_NAME_BYTES
from node.app import NodeApp
from node.miner import Miner
from node.rpc.dispatch import Dispatcher, MethodTable
from node.rpc.methods import register_all

MAX_ITEM = 3000
MAX_TX = 70_000
MAX_BLOCK = 120_000
MAX_ITEMS = 8


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    base = tmp_path_factory.mktemp("limits")
    chain_dir = base / "lim"
    chain_dir.mkdir()
    params = default_params("lim", {
        "max-std-op-return-size": str(MAX_ITEM), "max-std-tx-size": str(MAX_TX),
        "maximum-block-size": str(MAX_BLOCK), "max-std-op-returns-count": str(MAX_ITEMS),
    }, random.Random(14))
    write_params_file(chain_dir / "params.dat", params)
    ensure_chain_conf(chain_dir)
    ctx, _ = NodeApp(base, "lim", {})._open()
    table = MethodTable()
    register_all(table, ctx)

    async def refuse(block: Block) -> None:  # the miner's submit is not used here
        raise AssertionError("not submitted")

    miner = Miner(ctx.chain, ctx.mempool, ctx.wallet, refuse, turnover=0.0, empty_rounds=-1,
                  requires_peers=False)
    yield ctx, Dispatcher(table, chain_name="lim"), miner
    ctx.chain.close()
    ctx.store.close()


def call(dispatcher: Dispatcher, name: str, params: list) -> dict:
    """One JSON-RPC request through the dispatcher, as the HTTP server hands it over. The body
    is made with the stdlib encoder, which writes lone surrogates as escapes."""
    body = json.dumps({"method": name, "params": params, "id": 1}).encode()
    out, _ = asyncio.run(dispatcher.handle_body(body))
    return json.loads(out)


def _text(nbytes: int, wide: bool) -> str:
    """A string of about `nbytes` UTF-8 bytes (2-byte characters when `wide`)."""
    return "é" * (nbytes // 2) + "e" * (nbytes % 2) if wide else "k" * nbytes


around = st.sampled_from  # values at, just below and just above each limit

key_sizes = around([0, 1, MAX_KEY_BYTES - 1, MAX_KEY_BYTES, MAX_KEY_BYTES + 1])
key_counts = around([0, 1, 2, MAX_KEYS - 1, MAX_KEYS, MAX_KEYS + 1])
data_sizes = around([0, 1, MAX_ITEM - 1, MAX_ITEM, MAX_ITEM + 1])


@st.composite
def keys(draw) -> list[str] | str:
    n = draw(key_counts)
    size = draw(key_sizes)
    wide = draw(st.booleans())
    out = [_text(size, wide)[:-4] + f"{i:04d}" if size >= 4 else f"{i}" for i in range(n)]
    if draw(st.integers(0, 9)) == 0 and out:
        out[0] = "bad\ud800"  # a lone surrogate: not encodable as UTF-8
    return out if n != 1 or draw(st.booleans()) else out[0]


@st.composite
def data(draw) -> str | dict:
    size = draw(data_sizes)
    kind = draw(st.sampled_from(["hex", "text", "json"]))
    if kind == "hex":
        return "ab" * size
    if kind == "text":
        return {"text": _text(size, draw(st.booleans()))}
    return {"json": {"v": "j" * max(0, size - 8)}}


@st.composite
def rpc_calls(draw) -> tuple[str, list]:
    kind = draw(st.sampled_from(["publish", "publishmulti", "create", "grant", "revoke"]))
    if kind == "publish":
        return "publish", ["root", draw(keys()), draw(data())]
    if kind == "publishmulti":
        n = draw(around([0, 1, MAX_ITEMS - 1, MAX_ITEMS, MAX_ITEMS + 1, 40]))
        items = [{"keys": ["m"], "data": draw(data())} for _ in range(n)]
        return "publishmulti", ["root", items]
    if kind == "create":
        name_size = draw(around([1, MAX_NAME_BYTES - 1, MAX_NAME_BYTES, MAX_NAME_BYTES + 1]))
        name = _text(name_size, draw(st.booleans())) + f"{draw(st.integers(0, 10**6))}"
        name = name[-name_size:] if len(name.encode()) > name_size else name
        fields = draw(around([0, MAX_DETAILS_BYTES - 20, MAX_DETAILS_BYTES - 9,
                              MAX_DETAILS_BYTES, MAX_DETAILS_BYTES + 1, 70_000]))
        details = {"b": "d" * fields} if fields else {}
        return "create", ["stream", name, draw(st.booleans()), details]
    addresses = draw(around(["", " ", ",", " , ", "own", "own,own", "many", "bad"]))
    perms = draw(around(["send", "send,receive", "connect", "", "write", "nonsense"]))
    args: list = [addresses, perms]
    if kind == "grant" and draw(st.booleans()):
        args += [0, draw(around([0, 1, 4294967295, 4294967296, -1])),
                 draw(around([0, 10, 4294967295, 4294967296, -1]))]
    return kind, args


def _resolve_addresses(ctx, value: str, draw_many: int, *, elsewhere: bool) -> str:
    # A revoke, or a grant for a block range, targets another address, so that later examples
    # keep this node's permissions (a grant of `send` for blocks 0-1 to itself would leave the
    # node unable to send anything, the next test included).
    own = ctx.codec.encode(b"\x07" * 20 if elsewhere else ctx.wallet.default.pubkey_hash)
    if value == "own":
        return own
    if value == "own,own":
        return f"{own},{own}"
    if value == "many":
        return ",".join([own] * draw_many)
    if value == "bad":
        return "1NotAnAddress"
    return value


def _fingerprint(ctx) -> tuple:
    mp = ctx.mempool
    return (len(mp), mp.bytes, len(mp.state.streams), len(mp.state.perms), ctx.chain.height)


def _mine_all(ctx, miner: Miner) -> list[Block]:
    """Mine the whole mempool with the miner's own selection; each block must round-trip."""
    blocks = []
    chain, key = ctx.chain, ctx.wallet.default
    while len(ctx.mempool):
        tip = chain.tip_header
        txs = miner._block_txs(tip.height + 1)
        assert txs, "a pooled transaction fits in no block"
        block = Block.build(key, chain.chain_id, tip.height + 1, tip.hash,
                            max(tip.time_ms + 1, int(time.time() * 1000)), txs)
        assert block.size <= chain.rules.max_block_size
        again = Block.decode(block.raw, chain.rules.max_block_size)
        assert again.raw == block.raw and again.hash == block.hash
        connected = chain.connect(block)
        ctx.mempool.on_connected(connected)
        blocks.append(block)
    return blocks


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(calls=st.lists(rpc_calls(), min_size=1, max_size=4), many=st.integers(1, 3000))
def test_rpc_limits_accepted_builds_are_mined_decoded_and_reindexed_refused_change_nothing(
        node, calls, many):
    ctx, table, miner = node
    accepted: list[str] = []
    for name, params in calls:
        if name in ("grant", "revoke"):
            elsewhere = name == "revoke" or len(params) > 2
            params = [_resolve_addresses(ctx, params[0], many, elsewhere=elsewhere),
                      *params[1:]]
        before = _fingerprint(ctx)
        reply = call(table, name, params)
        event(f"{name}: " + ("accepted" if reply["error"] is None
                             else f"refused {reply['error']['code']}"))
        if reply["error"] is not None:
            assert reply["error"]["code"] not in (-1, -32603), f"{name}: {reply['error']}"
            assert _fingerprint(ctx) == before, f"a refused {name} changed the node"
            continue
        txid = reply["result"]
        assert isinstance(txid, str) and len(txid) == 64
        accepted.append(txid)
    blocks = _mine_all(ctx, miner)
    confirmed = {t.txid.hex() for b in blocks for t in b.txs}
    assert set(accepted) <= confirmed, "an accepted transaction was not mined"
    for b in blocks:
        stored = ctx.store.block_raw(b.height)
        assert Block.decode(stored).hash == b.hash


def test_rpc_limits_chain_built_by_the_property_reindexes(node):
    """Runs after the property (same module fixture): every block it mined replays."""
    ctx, table, miner = node
    reply = call(table, "publish", ["root", [f"k{i}" for i in range(MAX_KEYS)], {"text": "x"}])
    assert reply["error"] is None, reply
    _mine_all(ctx, miner)
    height = ctx.chain.height
    streams = len(ctx.chain.state.streams)
    assert ctx.chain.reindex() == height
    assert len(ctx.chain.state.streams) == streams
    for h in range(height + 1):
        Block.decode(ctx.store.block_raw(h))
