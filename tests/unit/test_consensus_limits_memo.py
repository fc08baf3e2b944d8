"""consensus.rules.check_tx_limits remembers a pass per rules object, never across rules.

The node checks its own transaction's limits on admission, in the miner and in connect_block;
the pass is remembered on the transaction for the chain's rules, so a stricter rule set (or
a transaction decoded afresh from a peer's block) is checked in full again."""

from __future__ import annotations

import pytest

from consensus.rules import Rules, check_tx_limits
from ledger.errors import InvalidTransaction
from ledger.keys import KeyPair
from ledger.transactions import DataFormat, Publish, Transaction

CHAIN_ID = b"\xcc" * 32
USER = KeyPair((21).to_bytes(32, "big"))


def make_rules(**changes) -> Rules:
    values = dict(
        chain_id=CHAIN_ID, anyone_can=frozenset(), admin_consensus={}, setup_first_blocks=1,
        mining_diversity=0.75, max_block_size=1_000_000, max_tx_size=100_000,
        max_items_per_tx=32, max_item_size=50_000, genesis_pubkey=USER.pubkey,
        root_stream_name="", root_stream_open=True, target_block_time=0.2)
    values.update(changes)
    return Rules(**values)


def _tx(data: bytes) -> Transaction:
    return Transaction.create(USER, [Publish(b"\x01" * 32, ("k",), DataFormat.RAW, data)],
                              CHAIN_ID, 1_700_000_000, nonce=7)


def test_consensus_limits_memo_is_per_rules_object():
    tx = _tx(b"x" * 100)
    loose, strict = make_rules(), make_rules(max_item_size=50)
    check_tx_limits(tx, loose)
    assert tx._limits_of is loose
    check_tx_limits(tx, loose)  # remembered
    with pytest.raises(InvalidTransaction, match="max-std-op-return-size"):
        check_tx_limits(tx, strict)
    assert tx._limits_of is loose  # a refusal is not remembered


def test_consensus_limits_memo_does_not_travel_with_the_bytes():
    tx = _tx(b"x" * 100)
    check_tx_limits(tx, make_rules())
    again = Transaction.decode(tx.raw)
    assert again._limits_of is None
    with pytest.raises(InvalidTransaction, match="max-std-tx-size"):
        check_tx_limits(again, make_rules(max_tx_size=100))
