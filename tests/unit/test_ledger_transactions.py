"""ledger.transactions: strict round trip of every operation, txid over every body field,
and a signature bound to one chain so a transaction cannot be replayed on another."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ledger.transactions as transactions_module
from ledger.codec import Writer
from ledger.errors import DecodeError
from ledger.keys import KeyPair
from ledger.transactions import (
    NO_END,
    PERM_BITS,
    RESTRICT_WRITE,
    CreateStream,
    DataFormat,
    OpKind,
    Permission,
    Publish,
    Transaction,
    _encode_publish,
    new_publish,
)

CHAIN_A = bytes.fromhex("aa" * 32)
CHAIN_B = bytes.fromhex("bb" * 32)
KEY = KeyPair((1).to_bytes(32, "big"))
OTHER_KEY = KeyPair((2).to_bytes(32, "big"))
BODY_START = 1 + 33 + 8 + 4
"""Offset of the operation count in an encoded transaction (after version, sender, nonce,
time)."""


def _utf8_at_most(n: int) -> st.SearchStrategy[str]:
    return st.text(max_size=n).filter(lambda s: len(s.encode()) <= n)


def publishes() -> st.SearchStrategy[Publish]:
    return st.builds(Publish, st.binary(min_size=32, max_size=32),
                     st.lists(_utf8_at_most(24), max_size=4).map(tuple),
                     st.sampled_from(DataFormat), st.binary(max_size=200), st.booleans())


def creates() -> st.SearchStrategy[CreateStream]:
    return st.builds(CreateStream, _utf8_at_most(32), st.integers(0, 15), st.booleans(),
                     _utf8_at_most(64).map(str.encode))  # custom fields are UTF-8 text


def permissions() -> st.SearchStrategy[Permission]:
    return st.builds(Permission, st.binary(min_size=20, max_size=20),
                     st.one_of(st.just(b""), st.binary(min_size=32, max_size=32)),
                     st.integers(1, 2**16 - 1), st.integers(0, NO_END), st.integers(0, NO_END))


def transactions(chain_id: bytes = CHAIN_A) -> st.SearchStrategy[Transaction]:
    ops = st.lists(st.one_of(publishes(), creates(), permissions()), min_size=1, max_size=4)
    return st.builds(lambda o, t, n: Transaction.create(KEY, o, chain_id, t, n), ops,
                     st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1))


def sample_tx(nonce: int = 42) -> Transaction:
    """A transaction with one operation of each kind."""
    ops = (
        Publish(b"\x11" * 32, ("k1", "k2"), DataFormat.JSON, b'{"a":1}'),
        CreateStream("orders", RESTRICT_WRITE, False, b"{}"),
        Permission(b"\x22" * 20, b"", PERM_BITS["send"], 0, NO_END),
    )
    return Transaction.create(KEY, ops, CHAIN_A, 1_700_000_000, nonce)


@given(publishes())
def test_ledger_decoders_publish_is_a_publish_like_any_other(op: Publish) -> None:
    """The cheaper construction of the builders and decoders gives an equal, equally hashed, frozen Publish."""
    made = new_publish(op.stream, op.keys, op.fmt, op.data, op.offchain)
    assert type(made) is Publish and made == op and hash(made) == hash(op)
    assert repr(made) == repr(op) and made.kind == OpKind.PUBLISH
    with pytest.raises(AttributeError):  # dataclasses.FrozenInstanceError
        made.data = b""  # type: ignore[misc]


@settings(max_examples=150, deadline=None)
@given(transactions())
def test_ledger_transaction_round_trip(tx):
    decoded = Transaction.decode(tx.raw)
    assert decoded == tx
    assert decoded.raw == tx.raw
    assert decoded.txid == tx.txid
    assert decoded.signature_valid(CHAIN_A)


@settings(max_examples=40, deadline=None)
@given(transactions())
def test_ledger_transaction_refuses_truncated_input_and_trailing_bytes(tx):
    raw = tx.raw
    for cut in range(len(raw)):
        with pytest.raises(DecodeError):
            Transaction.decode(raw[:cut])
    for extra in (b"\x00", b"\x01\x02"):
        with pytest.raises(DecodeError, match="trailing"):
            Transaction.decode(raw + extra)


def test_ledger_transaction_refuses_non_minimal_operation_count():
    raw = sample_tx().raw
    assert raw[BODY_START] == 3
    padded = raw[:BODY_START] + b"\xfd\x03\x00" + raw[BODY_START + 1:]
    with pytest.raises(DecodeError, match="non-canonical"):
        Transaction.decode(padded)


@pytest.mark.parametrize(("offset", "value", "reason"), [
    (0, 2, "version"),                    # unknown transaction version
    (BODY_START, 0, "operations"),        # no operations
    (BODY_START + 1, 9, "operation kind"),  # unknown operation kind
])
def test_ledger_transaction_refuses_bad_fields(offset, value, reason):
    raw = bytearray(sample_tx().raw)
    raw[offset] = value
    with pytest.raises(DecodeError, match=reason):
        Transaction.decode(bytes(raw))


def test_ledger_transaction_refuses_bad_flags_and_formats():
    tx = Transaction.create(KEY, [Publish(b"\x11" * 32, ("k",), DataFormat.RAW, b"")],
                            CHAIN_A, 1, 1)
    raw = tx.raw
    # publish: kind, stream(32), nkeys, keylen, "k", format, offchain flag, datalen
    fmt_at = BODY_START + 1 + 1 + 32 + 1 + 1 + 1
    assert raw[fmt_at - 1:fmt_at + 2] == b"k\x00\x00"
    for pos, bad, reason in [(fmt_at, 3, "format"), (fmt_at + 1, 2, "flag")]:
        broken = bytearray(raw)
        broken[pos] = bad
        with pytest.raises(DecodeError, match=reason):
            Transaction.decode(bytes(broken))


def test_ledger_txid_changes_with_every_body_field():
    base = sample_tx()
    other_ops = [
        (Publish(b"\x12" * 32, ("k1", "k2"), DataFormat.JSON, b'{"a":1}'),) + base.ops[1:],
        (Publish(b"\x11" * 32, ("k1",), DataFormat.JSON, b'{"a":1}'),) + base.ops[1:],
        (Publish(b"\x11" * 32, ("k1", "k2"), DataFormat.TEXT, b'{"a":1}'),) + base.ops[1:],
        (Publish(b"\x11" * 32, ("k1", "k2"), DataFormat.JSON, b'{"a":2}'),) + base.ops[1:],
        (Publish(b"\x11" * 32, ("k1", "k2"), DataFormat.JSON, b'{"a":1}', True),) + base.ops[1:],
        base.ops[:1] + (CreateStream("Orders", RESTRICT_WRITE, False, b"{}"),) + base.ops[2:],
        base.ops[:1] + (CreateStream("orders", 0, False, b"{}"),) + base.ops[2:],
        base.ops[:1] + (CreateStream("orders", RESTRICT_WRITE, True, b"{}"),) + base.ops[2:],
        base.ops[:1] + (CreateStream("orders", RESTRICT_WRITE, False, b"{ }"),) + base.ops[2:],
        base.ops[:2] + (Permission(b"\x23" * 20, b"", PERM_BITS["send"], 0, NO_END),),
        base.ops[:2] + (Permission(b"\x22" * 20, b"\x11" * 32, PERM_BITS["write"], 0, NO_END),),
        base.ops[:2] + (Permission(b"\x22" * 20, b"", PERM_BITS["connect"], 0, NO_END),),
        base.ops[:2] + (Permission(b"\x22" * 20, b"", PERM_BITS["send"], 1, NO_END),),
        base.ops[:2] + (Permission(b"\x22" * 20, b"", PERM_BITS["send"], 0, 100),),
        base.ops[:2],                      # one operation fewer
        base.ops[::-1],                    # same operations, other order
    ]
    variants = [
        Transaction.create(OTHER_KEY, base.ops, CHAIN_A, base.time, base.nonce),
        Transaction.create(KEY, base.ops, CHAIN_A, base.time + 1, base.nonce),
        Transaction.create(KEY, base.ops, CHAIN_A, base.time, base.nonce + 1),
        *(Transaction.create(KEY, ops, CHAIN_A, base.time, base.nonce) for ops in other_ops),
    ]
    txids = {base.txid} | {v.txid for v in variants}
    assert len(txids) == len(variants) + 1


def test_ledger_txid_covers_the_body_not_the_signature():
    """Signing the same body for another chain gives another signature but the same txid:
    the signature is bound to the chain, the txid to the content (and libsecp256k1's low-S
    signatures leave no way to re-sign it differently for the same chain)."""
    tx_a = Transaction.create(KEY, sample_tx().ops, CHAIN_A, 5, 7)
    tx_b = Transaction.create(KEY, sample_tx().ops, CHAIN_B, 5, 7)
    assert tx_a.txid == tx_b.txid
    assert tx_a.signature != tx_b.signature
    again = Transaction.create(KEY, sample_tx().ops, CHAIN_A, 5, 7)
    assert again.signature == tx_a.signature  # deterministic (RFC 6979)


def test_ledger_signature_verifies_only_on_its_own_chain():
    tx = sample_tx()
    assert tx.signature_valid(CHAIN_A)
    assert not tx.signature_valid(CHAIN_B)  # a replay on another chain fails
    replayed = Transaction.decode(tx.raw)
    assert not replayed.signature_valid(CHAIN_B)


def test_ledger_signature_refuses_tampering_and_other_signers():
    tx = sample_tx()
    forged = Transaction(OTHER_KEY.pubkey, tx.nonce, tx.time, tx.ops, tx.signature)
    assert not forged.signature_valid(CHAIN_A)
    changed = Transaction(tx.sender, tx.nonce + 1, tx.time, tx.ops, tx.signature)
    assert not changed.signature_valid(CHAIN_A)
    garbage = Transaction(tx.sender, tx.nonce, tx.time, tx.ops, b"\x30" + bytes(9))
    assert not garbage.signature_valid(CHAIN_A)


@pytest.mark.parametrize("keys", [(), ("k",), ("a", "ü" * 100, "x" * 256), ("k",) * 300])
@pytest.mark.parametrize("size", [0, 0xFC, 0xFD, 0xFFFF, 0x10000])
@pytest.mark.parametrize("offchain", [False, True])
def test_ledger_publish_encoding_is_the_field_by_field_encoding(keys, size, offchain):
    # The one-join encoding of a Publish (the fast path for transactions of many items)
    # writes exactly the bytes of the field-by-field Writer, one-byte and longer varints alike.
    op = Publish(b"\x07" * 32, keys, DataFormat.JSON, b"d" * size, offchain)
    w = Writer()
    w.u8(OpKind.PUBLISH)
    w.fixed(op.stream)
    w.varint(len(keys))
    for k in keys:
        w.var_bytes(k.encode())
    w.u8(op.fmt)
    w.u8(1 if offchain else 0)
    w.var_bytes(op.data)
    assert _encode_publish(op) == w.getvalue()
    tx = Transaction(KEY.pubkey, 5, 6, (op, op))
    tx.signature = KEY.sign(tx.sighash(CHAIN_A))
    assert Transaction.decode(tx.raw).ops == (op, op)


# -- the one-item decoder ---------------------------------------------------------------------
def _outcome(raw: bytes) -> tuple:
    """What decoding `raw` gives: the transaction's fields and cached bytes, or the error."""
    try:
        tx = Transaction.decode(raw)
    except DecodeError as e:
        return ("error", type(e), str(e))
    return ("tx", tx, tx._body, tx._raw, tx._checked)


def _general_outcome(raw: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple:
    """`_outcome` with the one-item shortcut off: the general decoder alone."""
    with monkeypatch.context() as m:
        m.setattr(transactions_module, "_decode_one_item", lambda cls, raw: None)
        return _outcome(raw)


def _one_item_raws() -> list[bytes]:
    """Transactions of one Publish with one key around every length and flag boundary of
    the shortcut (key and data lengths 0, 1, 252 and 253; each format; on and off chain)."""
    out = []
    for key in ("", "k", "é" * 126, "x" * 252, "y" * 253):
        for data in (b"", b"d", b"z" * 252, b"w" * 253):
            for fmt in DataFormat:
                for offchain in (False, True):
                    op = Publish(b"\x07" * 32, (key,), fmt, data, offchain)
                    out.append(Transaction.create(KEY, [op], CHAIN_A, 5, 9).raw)
    return out


def test_one_item_shortcut_decodes_as_the_general_decoder(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    for raw in _one_item_raws():
        fast = _outcome(raw)
        assert fast[0] == "tx"
        assert fast == _general_outcome(raw, monkeypatch)
        assert fast[1].raw == raw and fast[1].txid == Transaction.decode(raw).txid


def test_one_item_shortcut_refuses_what_the_general_decoder_refuses(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Every byte of a few one-item transactions set to each boundary value, and the input
    # cut short and extended: both decoders give the same transaction or the same error.
    raws = _one_item_raws()
    for raw in (raws[0], raws[9], raws[len(raws) // 2], raws[-1]):
        variants = [raw[:i] for i in range(len(raw))] + [raw + b"\x00", raw + raw]
        for i in range(len(raw)):
            for v in (0, 1, 2, 3, 8, 72, 73, 0x80, 0xC3, 0xFC, 0xFD, 0xFE, 0xFF, raw[i] ^ 1):
                variants.append(raw[:i] + bytes((v,)) + raw[i + 1:])
        for bad in variants:
            assert _outcome(bad) == _general_outcome(bad, monkeypatch)


# -- the one-item encoder ---------------------------------------------------------------------
def test_one_item_builder_encodes_as_the_general_encoder() -> None:
    # `Transaction.create` encodes a one-item transaction in one pack; the same fields built
    # without it (a plain Transaction's body()) give the same bytes, around every length
    # boundary, for keys of several bytes per character, and for shapes it leaves alone.
    ops = [[Publish(b"\x07" * 32, (key,), fmt, data, offchain)]
           for key in ("", "k", "é" * 126, "é" * 127, "x" * 252, "y" * 253)
           for data in (b"", b"d", b"z" * 252, b"w" * 253)
           for fmt in DataFormat
           for offchain in (False, True)]
    ops += [[Publish(b"\x07" * 32, (), DataFormat.RAW, b"d")],
            [Publish(b"\x07" * 32, ("a", "b"), DataFormat.RAW, b"d")],
            [Publish(b"\x07" * 32, ("a",), DataFormat.RAW, b"d")] * 2,
            [CreateStream("s", 0)]]
    for op_list in ops:
        built = Transaction.create(KEY, op_list, CHAIN_A, 5, 9)
        plain = Transaction(KEY.pubkey, 9, 5, tuple(op_list))
        assert built.body() == plain.body()
        assert built.txid == plain.txid
        assert Transaction.decode(built.raw).ops == tuple(op_list)
