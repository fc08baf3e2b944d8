"""Chain.reorg_lock reads the stored permission log: an admin/mine change deeper than
lock-admin-mine-rounds rounds forbids rolling back below it."""

from __future__ import annotations

import time

from test_node_reindex import chain_with_blocks  # noqa: F401 - the fixture

from ledger.blocks import Block
from ledger.keys import KeyPair
from ledger.transactions import NO_END, PERM_BITS, Permission, Transaction


def _extend(chain, key, n: int, txs_first: list | None = None) -> None:
    for i in range(n):
        tip = chain.tip_header
        txs = txs_first if (i == 0 and txs_first) else []
        chain.connect(Block.build(key, chain.chain_id, tip.height + 1, tip.hash,
                                  tip.time_ms + 1, txs))


def test_node_reorg_lock_protects_an_old_mine_grant(chain_with_blocks):  # noqa: F811
    ctx, _, _ = chain_with_blocks
    chain, admin = ctx.chain, ctx.wallet.default
    miner2 = KeyPair.generate()
    grant = Transaction.create(admin, [Permission(miner2.pubkey_hash, b"", PERM_BITS["mine"],
                                                  0, NO_END)], chain.chain_id, int(time.time()))
    _extend(chain, admin, 1, [grant])
    granted_at = chain.height
    assert chain.permitted_miners() == 2
    # 5 rounds of 2 miners = 10 blocks: not yet deep enough right after the grant.
    assert chain.reorg_lock(granted_at - 1, 5) is None
    _extend(chain, admin, 10)
    assert chain.reorg_lock(granted_at - 1, 5) == granted_at
    assert chain.reorg_lock(granted_at, 5) is None  # a fork above the grant keeps it
    assert chain.reorg_lock(granted_at - 1, 0) is None
