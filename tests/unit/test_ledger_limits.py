"""ledger.transactions limits: one structural check, applied by the builder and the decoder.

Every over-limit operation is refused by `Transaction.create` (before signing) with
TxLimitExceeded; the same body encoded by hand is refused by `Transaction.decode`; what is at
the limit builds, encodes and decodes again.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.codec import Writer
from ledger.errors import DecodeError, InvalidTransaction, TxLimitExceeded
from ledger.keys import KeyPair
from ledger.transactions import (
    MAX_DETAILS_BYTES,
    MAX_KEY_BYTES,
    MAX_KEYS,
    MAX_NAME_BYTES,
    CreateStream,
    DataFormat,
    Permission,
    Publish,
    Transaction,
    _encode_op,
    check_structure,
)

CHAIN = bytes(32)
KEY = KeyPair((5).to_bytes(32, "big"))
STREAM = bytes(range(32))


def pub(keys: tuple[str, ...]) -> Publish:
    return Publish(STREAM, keys, DataFormat.TEXT, b"x")


AT_LIMIT = [
    pub(tuple(f"k{i}" for i in range(MAX_KEYS))),
    pub(("é" * (MAX_KEY_BYTES // 2),)),
    CreateStream("n" * MAX_NAME_BYTES, 0, False, b'"' + b"d" * (MAX_DETAILS_BYTES - 2) + b'"'),
    Permission(bytes(20), b"", 2, 0, 2**32 - 1),
]

OVER_LIMIT = {
    "1025 keys": pub(tuple(f"k{i}" for i in range(MAX_KEYS + 1))),
    "257-byte key": pub(("é" * (MAX_KEY_BYTES // 2) + "e",)),
    "surrogate key": pub(("bad\ud800",)),
    "33-byte name": CreateStream("é" * 16 + "e", 0),
    "70 KB custom fields": CreateStream("x", 0, False, b"{" + b" " * 70_000 + b"}"),
    "non-UTF-8 custom fields": CreateStream("x", 0, False, b"\xff"),
    "restriction bits": CreateStream("x", 16),
    "zero permission bits": Permission(bytes(20), b"", 0, 0, 1),
    "17-bit permission": Permission(bytes(20), b"", 1 << 16, 0, 1),
    "short entity": Permission(bytes(20), b"abc", 2, 0, 1),
    "end past u32": Permission(bytes(20), b"", 2, 0, 2**32),
    "short stream": Publish(b"abc", (), DataFormat.TEXT, b""),
    "bad format": Publish(STREAM, (), 7, b""),
}


@pytest.mark.parametrize("op", AT_LIMIT, ids=lambda o: type(o).__name__)
def test_ledger_limits_at_the_limit_build_and_decode(op):
    tx = Transaction.create(KEY, [op], CHAIN, 1)
    check_structure(tx)
    assert Transaction.decode(tx.raw).ops == (op,)


@pytest.mark.parametrize("what", sorted(OVER_LIMIT))
def test_ledger_limits_over_the_limit_refused_by_the_builder(what):
    with pytest.raises(TxLimitExceeded):
        Transaction.create(KEY, [OVER_LIMIT[what]], CHAIN, 1)


def test_ledger_limits_no_operations_refused_by_builder_and_decoder():
    with pytest.raises(TxLimitExceeded, match="1 to 100000 operations"):
        Transaction.create(KEY, [], CHAIN, 1)
    tx = Transaction(KEY.pubkey, 1, 1, ())
    tx.signature = KEY.sign(tx.sighash(CHAIN))
    with pytest.raises(DecodeError, match="operations"):
        Transaction.decode(tx.raw)


def _raw_with(op) -> bytes:
    """The encoding of a one-op transaction written without the builder's check."""
    w = Writer()
    w.u8(1)
    w.fixed(KEY.pubkey)
    w.u64(1)
    w.u32(1)
    w.varint(1)
    _encode_op(w, op)
    body = w.getvalue()
    sig = KEY.sign(b"\x00" * 32)
    return body + bytes((len(sig),)) + sig


@pytest.mark.parametrize("what", ["1025 keys", "257-byte key", "33-byte name",
                                  "70 KB custom fields", "non-UTF-8 custom fields",
                                  "zero permission bits", "short entity"])
def test_ledger_limits_over_the_limit_refused_by_the_decoder(what):
    with pytest.raises(DecodeError):
        Transaction.decode(_raw_with(OVER_LIMIT[what]))


def test_ledger_limits_error_is_both_a_decode_and_a_transaction_error():
    # The decoder raises it (DecodeError) and consensus refuses with it (InvalidTransaction).
    assert issubclass(TxLimitExceeded, DecodeError)
    assert issubclass(TxLimitExceeded, InvalidTransaction)


# -- the decoder and check_structure hold a transaction to the same limits ------------------------
# The decoder does not call check_structure: its reads refuse everything check_structure would,
# and what it returns is marked as checked. Ops written by hand around every limit must get the
# same answer from both.

def _around(limit: int) -> st.SearchStrategy[int]:
    return st.integers(0, limit + 2) | st.integers(max(0, limit - 2), limit + 2)


_TEXT = st.sampled_from(["", "a", "é", "\ud800", "\U0001f600"])
"""Pieces of text: ASCII, two- and four-byte UTF-8, and a lone surrogate (not encodable)."""


@st.composite
def _text_near(draw: st.DrawFn, limit: int) -> str:
    n = draw(_around(limit))
    piece = draw(_TEXT) or "a"
    return (piece * (n // max(1, len(piece.encode("utf-8", "surrogatepass")))))[:n]


@st.composite
def _hand_ops(draw: st.DrawFn) -> object:
    kind = draw(st.sampled_from(["publish", "create", "permission"]))
    if kind == "publish":
        keys = tuple(draw(st.lists(_text_near(MAX_KEY_BYTES), max_size=3)))
        if draw(st.booleans()):
            keys = tuple(["k"] * draw(_around(MAX_KEYS)))
        return Publish(draw(st.binary(min_size=31, max_size=33)), keys,
                       draw(st.integers(0, 3)), draw(st.binary(max_size=8)), draw(st.booleans()))
    if kind == "create":
        details = draw(st.sampled_from([b"{}", b"\xff", b"{\xc3}", '"é"'.encode(),
                                        b'"' + b"d" * (MAX_DETAILS_BYTES - 1) + b'"']))
        return CreateStream(draw(_text_near(MAX_NAME_BYTES)), draw(st.integers(0, 31)),
                            draw(st.booleans()), details)
    entity = draw(st.sampled_from([b"", bytes(31), bytes(32)]))
    return Permission(draw(st.binary(min_size=20, max_size=20)), entity,
                      draw(st.integers(0, (1 << 16) + 1)), draw(st.integers(0, 3)),
                      draw(st.sampled_from([0, 5, 2**32 - 1])))


@given(_hand_ops())
@settings(max_examples=400, deadline=None)
def test_ledger_limits_decoder_refuses_exactly_what_check_structure_refuses(op):
    try:
        raw = _raw_with(op)
    except UnicodeEncodeError:  # a lone surrogate cannot even be written
        return
    try:
        decoded = Transaction.decode(raw)
    except DecodeError:
        decoded = None
    if decoded is not None:
        # What the decoder accepts and marks as checked passes the check itself.
        assert decoded._checked
        decoded._checked = False
        check_structure(decoded)
    # The same transaction as plain fields, never checked: what check_structure accepts,
    # the decoder accepts too, as the same operation.
    fresh = Transaction(KEY.pubkey, 1, 1, (op,), KEY.sign(b"\x00" * 32))
    try:
        check_structure(fresh)
    except TxLimitExceeded:
        return
    assert decoded is not None and decoded.ops == (op,)


def test_ledger_limits_custom_fields_checked_after_the_whole_transaction_is_read():
    # As when decode called check_structure last: a body that is also truncated or followed
    # by trailing bytes is a plain decode error (RPC -22), not a limit (TxLimitExceeded).
    raw = _raw_with(OVER_LIMIT["non-UTF-8 custom fields"])
    with pytest.raises(TxLimitExceeded, match="not UTF-8"):
        Transaction.decode(raw)
    with pytest.raises(DecodeError, match="trailing") as e:
        Transaction.decode(raw + b"\x00")
    assert not isinstance(e.value, TxLimitExceeded)
