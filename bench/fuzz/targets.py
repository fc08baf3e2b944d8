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
from node.p2p.session import HandshakeError, NoiseHandshake, TransportError
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


Op = tuple[int, float, int, bytes]
"""One byte-level mutation: (operation, position as a fraction of the length, value, bytes)."""


def havoc() -> st.SearchStrategy[list[Op]]:
    """A few mutations, drawn before the bytes they apply to exist (a live session's)."""
    op = st.tuples(st.integers(0, 5), st.floats(0, 1), st.integers(0, 255),
                   st.binary(max_size=16))
    return st.lists(op, max_size=4)


def apply_ops(seed: bytes, ops: list[Op], splice: bytes | None = None) -> bytes:
    """`seed` after `ops` (AFL's havoc, in miniature); splicing takes from `splice` (no
    splicing when it is None)."""
    data = bytearray(seed)
    for code, where, value, blob in ops:
        pos = min(int(where * len(data)), max(0, len(data) - 1))
        if code == 0 and data:
            data[pos] ^= 1 << (value % 8)
        elif code == 1:
            del data[pos:]
        elif code == 2:
            data[pos:pos] = blob
        elif code == 3 and data:
            data[pos] = INTERESTING[value % len(INTERESTING)]
        elif code == 4:
            del data[pos:pos + 1 + value % 8]
        elif code == 5 and splice is not None:
            data[pos:] = splice[int(where * len(splice)):]
    return bytes(data)


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A valid seed with a few byte-level mutations."""
    return apply_ops(draw(st.sampled_from(seeds)), draw(havoc()), draw(st.sampled_from(seeds)))


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
    check_structure(fresh)  # decode marks its result as checked: check the plain fields


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
    "ready": m.Ready.decode,
    "inv": m.decode_inv,  # INV, GETDATA and NOTFOUND share it
    "locator": m.decode_locator,  # GETBLOCKS
    "blocks": lambda raw: m.decode_blocks(raw, 1 << 20),
    "params": m.decode_params,
    "text": m.decode_text,  # REJECT
}
_REENCODE: dict[str, Callable[[Any], bytes]] = {
    "hello": lambda v: v.encode(),
    "auth": lambda v: m.encode_auth(*v),
    "ready": lambda v: v.encode(),
    "inv": m.encode_inv,
    "locator": lambda v: m.encode_locator(*v),
    "blocks": lambda v: m.encode_blocks(*v),
}


def _check_decoder(kind: str, data: bytes) -> None:
    try:
        decoded = _HANDSHAKE[kind](data)
    except DecodeError:
        return
    encode = _REENCODE.get(kind)
    if encode is not None and encode(decoded) != data:
        raise AssertionError(f"{kind} message re-encodes to other bytes")


def _check_noise(stage: int, ops: list[Op]) -> None:
    """A real Noise XX exchange whose message `stage` (1: -> e; 2: <- e, ee, s, es;
    3: -> s, se) arrives mutated. `receive` returns or raises HandshakeError; a message 2 or
    3 that was changed at all must be refused (both are authenticated), and an exchange that
    completes gives both sides the same handshake hash."""
    i, r = NoiseHandshake(initiator=True), NoiseHandshake(initiator=False)
    msgs = [i.first()]
    sides = [(r, 1), (i, 2), (r, 3)]
    for side, n in sides:
        msg = msgs[-1]
        sent = apply_ops(msg, ops) if n == stage else msg
        try:
            reply = side.receive(sent)
        except HandshakeError:
            return
        if n == stage and n > 1 and sent != msg:
            raise AssertionError(f"a changed Noise message {n} was accepted")
        if reply is None:
            break
        msgs.append(reply)
    if not (i.complete and r.complete):
        raise AssertionError("the exchange neither completed nor failed")
    if i.handshake_hash != r.handshake_hash:
        raise AssertionError("the two sides completed with different handshake hashes")


_session: dict[str, Any] = {}


def _sealed() -> list[tuple[list[tuple[int, bytes]], bytes]]:
    """The transport seeds sealed once per run under one real session (records start at
    counter 0 in every fresh Transport of that session, so the seeds stay valid)."""
    if not _session:
        i, r = NoiseHandshake(initiator=True), NoiseHandshake(initiator=False)
        m3 = i.receive(r.receive(i.first()) or b"")
        r.receive(m3 or b"")
        _session["pair"] = (i, r)
        seeds = []
        for msgs in corpus.transport_messages():
            sender = i.transport()
            seeds.append((msgs, b"".join(sender.seal(t, p) for t, p in msgs)))
        _session["seeds"] = seeds
    return _session["seeds"]


def _check_record(index: int, ops: list[Op], max_size: int) -> None:
    """Mutated records on a StreamReader: `Transport.read` returns or raises TransportError
    or IncompleteReadError, and whatever it returns is the sender's messages, in order."""
    msgs, data = _sealed()[index % len(_sealed())]
    data = apply_ops(data, ops)
    receiver = _session["pair"][1].transport()

    async def read_all() -> list[tuple[int, bytes]]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        got = []
        try:
            while True:
                got.append(await receiver.read(reader, max_size))
        except (TransportError, asyncio.IncompleteReadError):
            return got

    got = _loop.run_until_complete(read_all())
    if got != msgs[:len(got)]:
        raise AssertionError("a mutated record decrypted to a message nobody sent")
    if any(len(p) > max_size for _, p in got):
        raise AssertionError("a message over the size limit was returned")


@st.composite
def handshake_inputs(draw: st.DrawFn) -> tuple[str, Any]:
    seeds = corpus.handshake_seeds()
    kind = draw(st.sampled_from([*dict.fromkeys(k for k, _ in seeds), "noise", "record"]))
    if kind == "noise":
        return kind, (draw(st.integers(1, 3)), draw(havoc()))
    if kind == "record":
        limit = draw(st.sampled_from([0, 16, 1000, 1 << 16, 1 << 20]))
        return kind, (draw(st.integers(0, 63)), draw(havoc()), limit)
    own = [raw for k, raw in seeds if k == kind]
    return kind, draw(hostile(own))


def check_handshake(value: tuple[str, Any]) -> None:
    kind, data = value
    if kind == "noise":
        _check_noise(*data)
    elif kind == "record":
        _check_record(*data)
    else:
        _check_decoder(kind, data)


# -- compact blocks (protocol 3) -----------------------------------------------------------------
def check_cmpctblock(data: bytes) -> None:
    """`CompactBlock.decode` returns or raises DecodeError; what decodes has a 65-byte
    signature and 32-byte ids and re-encodes to the same bytes."""
    try:
        cb = m.CompactBlock.decode(data)
    except DecodeError:
        return
    if len(cb.signature) != 65 or any(len(t) != 32 or len(r) != 32 for t, r in cb.ids):
        raise AssertionError("compact block fields of the wrong size")
    if cb.encode() != data:
        raise AssertionError("compact block re-encodes to other bytes")


def check_getblocktxn(data: bytes) -> None:
    """`decode_getblocktxn` returns or raises DecodeError; what decodes re-encodes to the
    same bytes (indexes are u32: on_getblocktxn compares each with the block's count)."""
    try:
        h, indexes = m.decode_getblocktxn(data)
    except DecodeError:
        return
    if len(h) != 32 or any(not 0 <= i < 1 << 32 for i in indexes):
        raise AssertionError("GETBLOCKTXN fields out of range")
    if m.encode_getblocktxn(h, indexes) != data:
        raise AssertionError("GETBLOCKTXN re-encodes to other bytes")


def check_blocktxn(value: tuple[bytes, int]) -> None:
    """`decode_blocktxn` returns or raises DecodeError, no transaction over the size limit;
    what decodes re-encodes to the same bytes, and each transaction in it meets the `tx`
    contract (on_blocktxn decodes each next)."""
    data, limit = value
    try:
        h, raws = m.decode_blocktxn(data, limit)
    except DecodeError:
        return
    if len(h) != 32 or any(len(r) > limit for r in raws):
        raise AssertionError("BLOCKTXN fields out of range")
    if m.encode_blocktxn(h, raws) != data:
        raise AssertionError("BLOCKTXN re-encodes to other bytes")
    for raw in raws:
        check_tx(raw)


_TX_LIMITS = st.sampled_from([0, 100, 1 << 16, 1 << 20])
"""The max_size a BLOCKTXN is decoded with (the node passes its frame limit)."""


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
           "P2P message decoders, Noise key exchange, transport records"),
    Target("cmpctblock", hostile(corpus.compact_seeds()), check_cmpctblock,
           "CompactBlock.decode (CMPCTBLOCK)"),
    Target("getblocktxn", hostile(corpus.getblocktxn_seeds()), check_getblocktxn,
           "decode_getblocktxn (GETBLOCKTXN)"),
    Target("blocktxn", st.tuples(hostile(corpus.blocktxn_seeds()), _TX_LIMITS), check_blocktxn,
           "decode_blocktxn (BLOCKTXN) and the transactions in it"),
    Target("rpc-params", param_inputs(), check_params, "node/rpc/params.py"),
    Target("rpc-body", hostile(_BODY_SEEDS), check_rpc_body, "JSON-RPC dispatcher bodies"),
    Target("xml", st.tuples(hostile(corpus.XML_SEEDS), st.booleans()), check_xml,
           "triggers/xmlsafe.parse"),
]


def all_targets() -> list[Target]:
    """Every target; the live handshake one starts a node only when it runs."""
    from bench.fuzz.live import TARGET

    return [*TARGETS, TARGET]
