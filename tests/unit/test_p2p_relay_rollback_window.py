"""A relayed transaction that is already confirmed is never pooled again, even when the
"already confirmed?" question of its batch was asked while a failed reorganisation had
rolled its block back, and the restore then ended on the same tip hash."""

from __future__ import annotations

import asyncio

from test_node_reindex import chain_with_blocks  # noqa: F401 - the fixture

from node.p2p.network import Network


class _Peer:
    """Where the relayed txs came from: the network only logs its address and remembers
    what it announced to it."""

    addr = "test peer"

    def __init__(self) -> None:
        self.known: set[bytes] = set()

    def remember(self, h: bytes) -> None:
        self.known.add(h)


def test_confirmed_tx_asked_during_a_rollback_window_is_not_pooled(chain_with_blocks):  # noqa: F811
    ctx, _, _ = chain_with_blocks
    chain = ctx.chain
    tip_hash = chain.tip_header.hash
    confirmed = chain.block_at(chain.height).txs[-1]
    net = Network(ctx, port=0, listen=False)
    real_check = net._check_relayed

    def asked_in_the_window(txs):
        # What a failed switch does around the query: the old tip's block is rolled back,
        # the branch fails, the old block is connected again (the same hash).
        removed = chain.rollback_to(chain.height - 1)
        try:
            return real_check(txs)
        finally:
            for block in removed:
                chain.connect(block)

    net._check_relayed = asked_in_the_window
    net._tx_queue.append((_Peer(), confirmed))
    asyncio.run(net._admit_relayed())

    assert chain.tip_header.hash == tip_hash, "the window ended on the same tip"
    assert ctx.store.known_txids([confirmed.txid.hex()]), "the tx is confirmed"
    assert confirmed.txid not in ctx.mempool.entries, "and was not pooled again"
