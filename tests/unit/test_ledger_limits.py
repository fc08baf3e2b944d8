"""ledger.transactions limits: one structural check, applied by the builder and the decoder.

Every over-limit operation is refused by `Transaction.create` (before signing) with
TxLimitExceeded; the same body encoded by hand is refused by `Transaction.decode`; what is at
the limit builds, encodes and decodes again.
"""

from __future__ import annotations

import pytest

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
