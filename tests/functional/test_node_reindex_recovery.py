"""Recovery from a stored block that no longer decodes (issue 14.1, the bricked node).

What: a node whose store holds a block with a zero-operation transaction (as an older version
mined after `grant " " send`) is refused by a plain start with a line naming `--reindex`
(the start-up store check of issue 14.3); `start --reindex` stops the replay at that block,
moves it to `invalid-blocks-H-H.hex` in the chain directory, logs what failed, and the node
then runs from the block before and mines on; the next plain start works too.

How: a real node makes a few blocks and stops; the bad block is appended to its SQLite store
in-process, without validation (the damage); then the real node is started again.
"""

from __future__ import annotations

import logging
import time

import pytest
from framework import NodeStartError, wait_until

from consensus.blocks import BlockEffects
from ledger.blocks import Block
from ledger.transactions import Transaction
from node.app import NodeApp

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.node_reindex_recovery")


def append_zero_op_block(node) -> int:
    """Append, unvalidated, a block whose only transaction has no operations."""
    ctx, _ = NodeApp(node.datadir, node.chain, {})._open()
    try:
        chain, key = ctx.chain, ctx.wallet.default
        bad = Transaction(key.pubkey, 1, int(time.time()), ())
        bad.signature = key.sign(bad.sighash(chain.chain_id))
        tip = chain.tip_header
        block = Block.build(key, chain.chain_id, tip.height + 1, tip.hash, tip.time_ms + 1,
                            [bad])
        write, _ = chain._write_for(block, BlockEffects(key.pubkey_hash, [], []))
        chain.store.put_block(write)
        return block.height
    finally:
        ctx.chain.close()
        ctx.store.close()


def test_node_reindex_moves_an_undecodable_block_aside_and_mines_on(harness):
    node = harness.start_node()
    txid = node.publish("root", "before", {"text": "kept"})
    node.wait_for_confirmation(txid)
    node.stop()

    log.info("damage: append a block the decoder refuses")
    bad_height = append_zero_op_block(node)

    log.info("a plain start refuses the damaged store and names the fix")
    with pytest.raises(NodeStartError, match=rf"block {bad_height} in the chain store is "
                       rf"damaged: the raw block does not decode.*--reindex"):
        node.start()

    log.info("start --reindex stops at the bad block, moves it aside and goes on")
    node.start(["--reindex"])
    saved = node.chain_dir / f"invalid-blocks-{bad_height}-{bad_height}.hex"
    assert saved.exists()
    assert f"stored block {bad_height} cannot be replayed" in node.debug_log()
    assert node.liststreamitems("root", False, 10)[-1]["txid"] == txid
    after = node.publish("root", "after", {"text": "mined"})
    node.wait_for_confirmation(after)
    assert node.getblockcount() >= bad_height
    for h in range(node.getblockcount() + 1):
        node.getblock(str(h), 1)

    log.info("and the next plain start works")
    node.stop()
    node.start()
    wait_until(lambda: node.getblockcount() >= bad_height, msg="node answers at its height")
