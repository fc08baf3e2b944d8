"""Golden vectors: serialized transactions (one per operation kind) and a block in
tests/unit/golden/ledger_*.hex. Each must decode, re-encode to the same bytes, keep its id
and signature, and be what the current encoder builds from the same values; every operation
kind must have one. A change here is a change of the wire and storage format.

Regenerate deliberately with `python tests/unit/test_ledger_golden.py` from the repository
root (then update EXPECTED_IDS below).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ledger.blocks import HEADER_SIZE, Block
from ledger.hashing import sha256d
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
)

GOLDEN = Path(__file__).parent / "golden"
CHAIN_ID = hashlib.sha256(b"chainmill golden vectors").digest()
KEY = KeyPair((1).to_bytes(32, "big"))
MINER = KeyPair((2).to_bytes(32, "big"))
TIME = 1_700_000_000

EXPECTED_IDS = {
    "ledger_tx_create_stream.hex":
        "6df1b32d5e7bd736d52a6a245dd30d88ca68425bd88ed7e2c6d87f3b99d136ee",
    "ledger_tx_publish.hex": "a1ac9abffccd1f0e9cf61fec27b626539b9ceb7aa780d1800b205e6293ed35c1",
    "ledger_tx_permission.hex":
        "978c1a529aa024faadca16e2aa49c924bdfc5096ac694e6292e79b4d273fcf3a",
    "ledger_block.hex": "f462d3adc670ae4d5ce403b013f65a6db2d0cd80d71cf2b1c0fd4d75a504a740",
}
"""txid of each transaction file, block hash of the block file."""


def build_vectors() -> dict[str, bytes]:
    """The golden objects, built from fixed values with the current encoder."""
    create = Transaction.create(
        KEY, [CreateStream("orders", RESTRICT_WRITE, False, b'{"plant":"north"}')],
        CHAIN_ID, TIME, 1)
    stream = create.txid
    publish = Transaction.create(KEY, [
        Publish(stream, ("PO-1001", "rush"), DataFormat.JSON, b'{"qty":5,"sku":"A-17"}'),
        Publish(stream, ("PO-1002",), DataFormat.TEXT, "grüße".encode()),
        Publish(stream, (), DataFormat.RAW, bytes(range(16))),
    ], CHAIN_ID, TIME + 1, 2)
    permission = Transaction.create(KEY, [
        Permission(MINER.pubkey_hash, b"", PERM_BITS["connect"] | PERM_BITS["send"], 0, NO_END),
        Permission(MINER.pubkey_hash, stream, PERM_BITS["write"], 10, 20),
        Permission(MINER.pubkey_hash, b"", PERM_BITS["mine"], 0, 0),  # a revoke
    ], CHAIN_ID, TIME + 2, 3)
    block = Block.build(MINER, CHAIN_ID, 1, hashlib.sha256(b"parent").digest(),
                        TIME * 1000 + 250, [create, publish, permission])
    return {
        "ledger_tx_create_stream.hex": create.raw,
        "ledger_tx_publish.hex": publish.raw,
        "ledger_tx_permission.hex": permission.raw,
        "ledger_block.hex": block.raw,
    }


def read(name: str) -> bytes:
    return bytes.fromhex((GOLDEN / name).read_text().strip())


def golden_tx_files() -> list[str]:
    return sorted(p.name for p in GOLDEN.glob("ledger_tx_*.hex"))


def regenerate() -> None:
    for name, raw in build_vectors().items():
        (GOLDEN / name).write_text(raw.hex() + "\n")
        print(f"wrote {name}")


@pytest.mark.parametrize("name", sorted(EXPECTED_IDS))
def test_golden_files_are_what_the_encoder_builds(name):
    assert read(name) == build_vectors()[name]


@pytest.mark.parametrize("name", [n for n in sorted(EXPECTED_IDS) if "_tx_" in n])
def test_golden_transactions_decode_and_keep_their_ids(name):
    raw = read(name)
    tx = Transaction.decode(raw)
    assert tx.raw == raw
    assert tx.txid.hex() == EXPECTED_IDS[name]
    body = raw[:-(len(tx.signature) + 1)]  # the txid is over the unsigned body
    assert sha256d(body).hex() == EXPECTED_IDS[name]
    assert tx.signature_valid(CHAIN_ID)
    assert tx.sender == KEY.pubkey


def test_golden_every_operation_kind_has_a_transaction():
    files = golden_tx_files()
    assert set(files) == {n for n in EXPECTED_IDS if "_tx_" in n}
    kinds = {op.kind for name in files for op in Transaction.decode(read(name)).ops}
    assert kinds == set(OpKind)
    data_formats = {op.fmt for name in files for op in Transaction.decode(read(name)).ops
                    if isinstance(op, Publish)}
    assert data_formats == set(DataFormat)


def test_golden_block_decodes_and_names_its_miner():
    raw = read("ledger_block.hex")
    block = Block.decode(raw)
    assert block.raw == raw
    assert block.hash.hex() == EXPECTED_IDS["ledger_block.hex"]
    assert sha256d(raw[:HEADER_SIZE]).hex() == EXPECTED_IDS["ledger_block.hex"]
    assert block.miner_pubkey(CHAIN_ID) == MINER.pubkey
    assert [t.raw for t in block.txs] == [read(n) for n in (
        "ledger_tx_create_stream.hex", "ledger_tx_publish.hex", "ledger_tx_permission.hex")]


if __name__ == "__main__":
    regenerate()
