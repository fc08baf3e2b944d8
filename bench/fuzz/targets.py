"""The fuzz targets: a strategy of hostile inputs and a check that states the target's contract.

Each check returns normally when the input was handled as promised (decoded, or refused with
the target's documented error) and raises anything else: that is a crash.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from bench.fuzz import corpus
from ledger.blocks import Block
from ledger.errors import DecodeError
from ledger.transactions import Transaction, check_structure
from node.p2p import messages as m
from node.p2p.framing import HEADER_SIZE, FrameError, encode_frame, read_frame
from node.rpc import params as rp
from node.rpc.dispatch import Dispatcher, MethodTable
from node.rpc.errors import RpcError
from triggers.errors import DocumentRejected
from triggers.xmlsafe import Limits, parse

INTERESTING = (0, 1, 0x7F, 0x80, 0xFC, 0xFD, 0xFE, 0xFF)
"""Byte values that hit boundaries: compact-size markers, flag values, sign bits."""


@dataclass(frozen=True)
class Target:
    name: str
    strategy: st.SearchStrategy
    check: Callable[[Any], None]
    what: str


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A valid seed with a few byte-level mutations (AFL's havoc, in miniature)."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.integers(0, 5))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == 0 and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == 1:
            del data[pos:]
        elif op == 2:
            data[pos:pos] = draw(st.binary(max_size=16))
        elif op == 3 and data:
            data[pos] = draw(st.sampled_from(INTERESTING))
        elif op == 4:
            del data[pos:pos + draw(st.integers(1, 8))]
        else:
            other = draw(st.sampled_from(seeds))
            cut = draw(st.integers(0, len(other)))
            data[pos:] = other[cut:]
    return bytes(data)


def hostile(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(mutated(seeds), st.binary(max_size=512))


# -- ledger decoders ---------------------------------------------------------------------------
def check_tx(data: bytes) -> None:
    try:
        tx = Transaction.decode(data)
    except DecodeError:
        return
    if tx.raw != data:
        raise AssertionError("decoded transaction does not keep its bytes")
    fresh = Transaction(tx.sender, tx.nonce, tx.time, tx.ops, tx.signature, tx.version)
    if fresh.raw != data:
        raise AssertionError("decoded fields re-encode to other bytes (non-canonical)")
    check_structure(tx)


def check_block(data: bytes) -> None:
    try:
        block = Block.decode(data, 1 << 20)
    except DecodeError:
        return
    fresh = Block(block.header, block.signature, [
        Transaction(t.sender, t.nonce, t.time, t.ops, t.signature, t.version)
        for t in block.txs])
    if fresh.raw != data:
        raise AssertionError("decoded block re-encodes to other bytes (non-canonical)")
    if block.tx_offsets() != fresh.tx_offsets():
        raise AssertionError("transaction offsets differ after re-encoding")


# -- P2P -----------------------------------------------------------------------------------------
_loop = asyncio.new_event_loop()


def check_frame(data: bytes) -> None:
    async def read() -> tuple[int, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await read_frame(reader, corpus.MAGIC, 1 << 16)

    try:
        msg_type, payload = _loop.run_until_complete(read())
    except (FrameError, asyncio.IncompleteReadError):
        return
    if encode_frame(corpus.MAGIC, msg_type, payload) != data[:HEADER_SIZE + len(payload)]:
        raise AssertionError("frame re-encodes to other bytes")


_HANDSHAKE: dict[str, Callable[[bytes], Any]] = {
    "hello": m.Hello.decode,
    "auth": m.decode_auth,
    "inv": m.decode_inv,
    "locator": m.decode_locator,
    "blocks": lambda raw: m.decode_blocks(raw, 1 << 20),
    "params": m.decode_params,
    "text": m.decode_text,
}
_REENCODE: dict[str, Callable[[Any], bytes]] = {
    "hello": lambda v: v.encode(),
    "auth": lambda v: m.encode_auth(*v),
    "inv": m.encode_inv,
    "locator": lambda v: m.encode_locator(*v),
    "blocks": lambda v: m.encode_blocks(*v),
}


@st.composite
def handshake_inputs(draw: st.DrawFn) -> tuple[str, bytes]:
    seeds = corpus.handshake_seeds()
    kind = draw(st.sampled_from([k for k, _ in seeds]))
    own = [raw for k, raw in seeds if k == kind]
    return kind, draw(hostile(own))


def check_handshake(value: tuple[str, bytes]) -> None:
    kind, data = value
    try:
        decoded = _HANDSHAKE[kind](data)
    except DecodeError:
        return
    encode = _REENCODE.get(kind)
    if encode is not None and encode(decoded) != data:
        raise AssertionError(f"{kind} message re-encodes to other bytes")


# -- JSON-RPC parameters -------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=4),
    max_leaves=12)

_PARSERS: dict[str, Callable[[Any], Any]] = {
    "as_bool": lambda v: rp.as_bool(v, "x"),
    "as_bool_lenient": lambda v: rp.as_bool_lenient(v, "x"),
    "as_int": lambda v: rp.as_int(v, "x"),
    "as_count": rp.as_count,
    "as_str": lambda v: rp.as_str(v, "x"),
    "identifier_list": rp.identifier_list,
    "as_hex": lambda v: rp.as_hex(v, "x"),
}


@st.composite
def param_inputs(draw: st.DrawFn) -> tuple[str, Any, tuple[int, int, int | None]]:
    name = draw(st.sampled_from(sorted(_PARSERS)))
    value = draw(json_values | st.text(alphabet="0123456789abcdefABCDEF,* -", max_size=12))
    big = st.integers(-(2**70), 2**70)
    window = (draw(st.integers(0, 2**40)), draw(st.integers(0, 2**40) | big),
              draw(st.none() | big))
    return name, value, window


def check_params(value: tuple[str, Any, tuple[int, int, int | None]]) -> None:
    name, arg, (total, count, start) = value
    try:
        _PARSERS[name](arg)
    except RpcError:
        pass
    if count < 0:
        return  # callers pass only counts that as_count accepted
    off, n = rp.window(total, count, start)
    if not (0 <= off <= total and 0 <= n <= count and off + n <= total):
        raise AssertionError(f"window({total}, {count}, {start}) = ({off}, {n})")


def _dispatcher() -> Dispatcher:
    table = MethodTable()
    for name, fn in _PARSERS.items():
        table.register(name, lambda p, fn=fn: [repr(fn(x)) for x in p], min_params=0,
                       max_params=4,
                       help=f"{name} ( x ... )\n\nParses each parameter.", category="Control")
    return Dispatcher(table, chain_name="fuzz")


_DISPATCH = _dispatcher()
_BODY_SEEDS = [json.dumps(b).encode() for b in [
    {"method": "as_int", "params": [1, 2], "id": 1},
    {"method": "identifier_list", "params": ["a,b", ["c"]], "id": "x", "chain_name": "fuzz"},
    [{"method": "as_hex", "params": ["00ff"], "id": 2}, {"method": "as_bool", "id": 3}],
]]


def check_rpc_body(data: bytes) -> None:
    out, status = _loop.run_until_complete(_DISPATCH.handle_body(data))
    if not out.endswith(b"\n"):
        raise AssertionError("reply does not end in a newline")
    json.loads(out)  # every reply, error or not, is JSON
    if not 200 <= status <= 599:
        raise AssertionError(f"HTTP status {status}")


# -- XML -----------------------------------------------------------------------------------------
_SMALL = Limits(max_bytes=4096, max_depth=16, max_elements=200)


def check_xml(value: tuple[bytes, bool]) -> None:
    data, small = value
    try:
        parse(data, _SMALL if small else Limits())
    except DocumentRejected:
        return


TARGETS = [
    Target("tx", hostile(corpus.tx_seeds()), check_tx, "Transaction.decode"),
    Target("block", hostile(corpus.block_seeds()), check_block, "Block.decode"),
    Target("frame", hostile(corpus.frame_seeds()), check_frame, "p2p read_frame"),
    Target("handshake", handshake_inputs(), check_handshake,
           "P2P handshake and sync message decoders"),
    Target("rpc-params", param_inputs(), check_params, "node/rpc/params.py"),
    Target("rpc-body", hostile(_BODY_SEEDS), check_rpc_body, "JSON-RPC dispatcher bodies"),
    Target("xml", st.tuples(hostile(corpus.XML_SEEDS), st.booleans()), check_xml,
           "triggers/xmlsafe.parse"),
]


def all_targets() -> list[Target]:
    """Every target; the live handshake one starts a node only when it runs."""
    from bench.fuzz.live import TARGET

    return [*TARGETS, TARGET]
