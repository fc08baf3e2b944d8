"""consensus.blocks.connect_block: a good block is accepted; a bad Merkle root, a wrong
previous hash, a non-miner's block, a diversity violation, a replayed transaction, a bad
transaction signature (including one made for another chain) and the other header rules
are refused, and a refused block leaves the input state exactly as it was."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import pytest
from test_consensus_rules import ADMIN, CHAIN_ID, OTHER, USER, grant, make_rules, revoke, tx

from consensus.blocks import MAX_FUTURE_MS, connect_block, verify_sequential
from consensus.rules import Rules, apply_tx
from consensus.state import ChainState
from ledger.blocks import BLOCK_VERSION, Block, BlockHeader
from ledger.errors import InvalidBlock, InvalidTransaction
from ledger.keys import KeyPair
from ledger.merkle import merkle_root
from ledger.transactions import RESTRICT_WRITE, CreateStream, DataFormat, Publish, Transaction
from ledger.types import ZERO_HASH

T0 = 1_700_000_000_000
SETUP = 3
"""Blocks below this height are in the setup phase (no diversity rule)."""


def signed(key: KeyPair, header: BlockHeader, txs: list[Transaction]) -> Block:
    """A block with an arbitrary header, correctly signed by `key`."""
    block = Block(header, b"", txs)
    block.signature = key.sign_recoverable(Block.sighash(CHAIN_ID, block.hash))
    return Block.decode(block.raw)  # as a peer would receive it


@dataclass
class Chain:
    """A chain built block by block with connect_block, as the node does."""

    rules: Rules
    state: ChainState = field(default_factory=ChainState)
    headers: list[BlockHeader] = field(default_factory=list)
    txids: set[bytes] = field(default_factory=set)

    def build(self, key: KeyPair, txs: list[Transaction], **header_changes) -> Block:
        prev = self.headers[-1] if self.headers else None
        fields = dict(version=BLOCK_VERSION, height=prev.height + 1 if prev else 0,
                      prev_hash=prev.hash if prev else ZERO_HASH,
                      merkle_root=merkle_root([t.txid for t in txs]),
                      time_ms=(prev.time_ms if prev else T0) + 200)
        fields.update(header_changes)
        return signed(key, BlockHeader(**fields), txs)

    def connect(self, block: Block, now_ms: int | None = None):
        prev = self.headers[-1] if self.headers else None
        new, fx = connect_block(
            self.state, self.rules, block, prev, T0 + 3_600_000 if now_ms is None else now_ms,
            already_known=lambda ids: {i for i in ids if i in self.txids},
            verify_many=verify_sequential(CHAIN_ID))
        self.state = new
        self.headers.append(block.header)
        self.txids.update(t.txid for t in block.txs)
        return fx

    def refuses(self, block: Block, match: str, now_ms: int | None = None) -> None:
        before = copy.deepcopy(self.state)
        with pytest.raises(InvalidBlock, match=match):
            self.connect(block, now_ms)
        assert self.state == before


@pytest.fixture
def chain() -> Chain:
    """Genesis by ADMIN (who gets every permission), then block 1 granting USER send and
    OTHER mine (admin-consensus-mine 0 so one vote suffices) and creating a stream."""
    c = Chain(make_rules(genesis_pubkey=ADMIN.pubkey, setup_first_blocks=SETUP,
                         admin_consensus={"admin": 0.5, "activate": 0.5, "mine": 0.0,
                                          "create": 0.0, "issue": 0.0}))
    c.connect(c.build(ADMIN, []))
    c.stream_tx = tx(ADMIN, CreateStream("s", 0))
    c.connect(c.build(ADMIN, [tx(ADMIN, grant(USER, "send")), tx(ADMIN, grant(OTHER, "mine")),
                              c.stream_tx]))
    return c


def publish(key: KeyPair, stream: bytes, n: int = 0) -> Transaction:
    return tx(key, Publish(stream, (f"k{n}",), DataFormat.TEXT, b"x"))


def test_blocks_good_chain_connects(chain):
    assert chain.state.height == 1
    assert chain.state.holds(OTHER.pubkey_hash, "mine", 2)
    fx = chain.connect(chain.build(OTHER, [publish(USER, chain.stream_tx.txid)]))
    assert fx.miner == OTHER.pubkey_hash
    assert chain.state.height == 2 and chain.state.last_mined[OTHER.pubkey_hash] == 2
    assert chain.state.tip_hash == chain.headers[-1].hash


def test_blocks_refuse_a_bad_merkle_root(chain):
    txs = [publish(USER, chain.stream_tx.txid)]
    chain.refuses(chain.build(OTHER, txs, merkle_root=b"\x01" * 32), "Merkle")
    chain.refuses(chain.build(OTHER, txs, merkle_root=merkle_root([])), "Merkle")
    two = [publish(USER, chain.stream_tx.txid, 1), publish(USER, chain.stream_tx.txid, 2)]
    swapped = chain.build(OTHER, two, merkle_root=merkle_root([t.txid for t in two[::-1]]))
    chain.refuses(swapped, "Merkle")


def test_blocks_refuse_a_wrong_previous_block(chain):
    chain.refuses(chain.build(OTHER, [], prev_hash=b"\x02" * 32), "previous")
    chain.refuses(chain.build(OTHER, [], prev_hash=chain.headers[0].hash), "previous")
    chain.refuses(chain.build(OTHER, [], height=3), "height")
    chain.refuses(chain.build(OTHER, [], height=1), "height")


def test_blocks_refuse_a_miner_without_mine_permission(chain):
    chain.refuses(chain.build(USER, []), "mine permission")
    chain.refuses(chain.build(KeyPair.generate(), []), "mine permission")


def test_blocks_refuse_a_bad_block_signature(chain):
    good = chain.build(OTHER, [])
    chain.refuses(Block(good.header, bytes(65), []), "signature|mine permission")
    # A signature made for another chain recovers another key, which has no mine permission.
    other_chain = Block(good.header, b"", [])
    other_chain.signature = OTHER.sign_recoverable(Block.sighash(b"\xdd" * 32, good.hash))
    chain.refuses(Block.decode(other_chain.raw), "signature|mine permission")


def test_blocks_refuse_a_diversity_violation(chain):
    # 2 miners at diversity 0.75: spacing 2, so no miner may sign two blocks in a row
    chain.connect(chain.build(OTHER, []))           # height 2 (setup phase)
    chain.connect(chain.build(ADMIN, []))           # height 3
    chain.refuses(chain.build(ADMIN, []), "diversity")
    chain.connect(chain.build(OTHER, []))           # height 4
    chain.connect(chain.build(ADMIN, []))           # height 5


def test_blocks_setup_phase_has_no_diversity_rule(chain):
    assert chain.state.height == SETUP - 2
    chain.connect(chain.build(ADMIN, []))           # height 2 after ADMIN's block 1


def test_blocks_refuse_replayed_and_duplicated_transactions(chain):
    item = publish(USER, chain.stream_tx.txid)
    chain.connect(chain.build(OTHER, [item]))
    chain.refuses(chain.build(ADMIN, [item]), "repeats confirmed")
    replay = Transaction.decode(chain.stream_tx.raw)  # the same bytes, sent again
    chain.refuses(chain.build(ADMIN, [replay]), "repeats confirmed")
    fresh = publish(USER, chain.stream_tx.txid, 9)
    chain.refuses(chain.build(ADMIN, [fresh, fresh]), "duplicate")


def test_blocks_refuse_a_bad_transaction_signature(chain):
    good = publish(USER, chain.stream_tx.txid)
    forged = Transaction(good.sender, good.nonce, good.time, good.ops,
                         ADMIN.sign(good.sighash(CHAIN_ID)))
    chain.refuses(chain.build(OTHER, [forged]), "signature")
    elsewhere = Transaction.create(USER, list(good.ops), b"\xdd" * 32, good.time, good.nonce)
    assert elsewhere.txid == good.txid
    chain.refuses(chain.build(OTHER, [elsewhere]), "signature")  # replay from another chain
    chain.connect(chain.build(OTHER, [good]))


def test_blocks_refuse_an_invalid_transaction(chain):
    nobody = KeyPair.generate()
    chain.refuses(chain.build(OTHER, [publish(nobody, chain.stream_tx.txid)]), "send")
    half_good = [publish(USER, chain.stream_tx.txid), tx(USER, grant(nobody, "admin"))]
    chain.refuses(chain.build(OTHER, half_good), "admin")
    chain.refuses(chain.build(OTHER, [tx(ADMIN, CreateStream("S", 0))]), "already exists")


def test_blocks_refuse_bad_times_and_sizes(chain):
    before_parent = chain.headers[-1].time_ms - 1
    chain.refuses(chain.build(OTHER, [], time_ms=before_parent), "before its parent")
    now = chain.headers[-1].time_ms
    chain.refuses(chain.build(OTHER, [], time_ms=now + MAX_FUTURE_MS + 1), "future", now_ms=now)
    chain.rules = make_rules(genesis_pubkey=ADMIN.pubkey, setup_first_blocks=SETUP,
                             max_block_size=400)
    big = [publish(USER, chain.stream_tx.txid, n) for n in range(5)]
    chain.refuses(chain.build(OTHER, big), "maximum-block-size")


def test_blocks_genesis_must_be_signed_by_the_genesis_key():
    c = Chain(make_rules(genesis_pubkey=ADMIN.pubkey))
    c.refuses(c.build(USER, []), "genesis")
    c.refuses(c.build(ADMIN, [], height=1), "genesis")
    c.refuses(c.build(ADMIN, [], prev_hash=b"\x01" * 32), "genesis")
    fx = c.connect(c.build(ADMIN, []))
    assert {ch.perm for ch in fx.perm_log} >= {"admin", "mine", "send", "create"}


def _unchecked(key: KeyPair, ops: tuple) -> Transaction:
    """A transaction signed without Transaction.create's structural check."""
    t = Transaction(key.pubkey, 9, 1, ops)
    t.signature = key.sign(t.sighash(CHAIN_ID))
    return t


def _mined_locally(chain: Chain, key: KeyPair, txs: list[Transaction]) -> Block:
    """A block as this node's miner builds it (never decoded, unlike a peer's)."""
    prev = chain.headers[-1]
    return Block.build(key, CHAIN_ID, prev.height + 1, prev.hash, prev.time_ms + 200, txs)


def test_blocks_refuse_a_transaction_the_decoder_would_refuse(chain):
    # What used to make an undecodable tip: a tx with no operations, one with 1,025 keys.
    chain.refuses(_mined_locally(chain, OTHER, [_unchecked(USER, ())]),
                  "1 to 100000 operations")
    keys = tuple(f"k{i}" for i in range(1025))
    too_many = _unchecked(USER, (Publish(chain.stream_tx.txid, keys, DataFormat.TEXT, b""),))
    chain.refuses(_mined_locally(chain, OTHER, [too_many]), "keys")


def test_blocks_a_transaction_larger_than_an_empty_block_is_refused_on_admission(chain):
    # max-std-tx-size may exceed maximum-block-size: such a tx must not wait in the mempool
    # for a block it can never fit in (apply_tx is what mempool admission runs).
    rules = make_rules(genesis_pubkey=ADMIN.pubkey, setup_first_blocks=SETUP,
                       max_block_size=400, max_tx_size=100_000)
    big = tx(USER, Publish(chain.stream_tx.txid, ("k",), DataFormat.TEXT, b"x" * 300))
    with pytest.raises(InvalidTransaction, match="does not fit in a block"):
        apply_tx(chain.state.copy(), rules, big, chain.state.height + 1)


# -- permissions checked once per block until a transaction changes them -------------------------
# connect_block remembers the send and write checks passed in a block (a Publish changes
# nothing); a permission op in between must make the later transactions be checked again.

def test_blocks_a_send_revoked_in_the_block_applies_to_the_later_transactions(chain):
    s = chain.stream_tx.txid
    chain.refuses(chain.build(OTHER, [publish(USER, s, 1), tx(ADMIN, revoke(USER, "send")),
                                      publish(USER, s, 2)]), "no send permission")
    chain.connect(chain.build(OTHER, [publish(USER, s, 3), publish(USER, s, 4)]))


def test_blocks_a_write_revoked_in_the_block_applies_to_the_later_transactions(chain):
    closed = tx(ADMIN, CreateStream("closed", RESTRICT_WRITE))
    chain.connect(chain.build(OTHER, [closed]))
    chain.connect(chain.build(ADMIN, [tx(ADMIN, grant(USER, "write", closed.txid))]))
    block = chain.build(OTHER, [publish(USER, closed.txid, 1),
                                tx(ADMIN, revoke(USER, "write", closed.txid)),
                                publish(USER, closed.txid, 2)])
    chain.refuses(block, "no write permission")
    chain.connect(chain.build(OTHER, [publish(USER, closed.txid, 3),
                                      tx(ADMIN, revoke(USER, "write", closed.txid))]))


# A block of this node's miner carries the state its transactions were applied on
# (Block._applied_on); only on that very state object are its publishes taken as applied.
def test_blocks_a_miner_mark_for_another_state_does_not_spare_any_check(chain):
    nobody = KeyPair.generate()
    block = chain.build(OTHER, [publish(nobody, chain.stream_tx.txid)])
    block._applied_on = chain.state.copy()  # equal, but not the state it is connected on
    chain.refuses(block, "send")
    unknown = chain.build(OTHER, [publish(USER, b"\x07" * 32)])
    unknown._applied_on = ChainState()
    chain.refuses(unknown, "does not exist")


def test_blocks_an_own_block_connects_with_the_effects_of_a_full_check(chain):
    s = chain.stream_tx.txid
    txs = [publish(USER, s, 1), tx(ADMIN, CreateStream("t", 0)), publish(USER, s, 2)]
    full = copy.deepcopy(chain)
    expected = full.connect(full.build(OTHER, txs))
    own = chain.build(OTHER, txs)
    own._applied_on = chain.state
    assert chain.connect(own) == expected
    assert chain.state == full.state
