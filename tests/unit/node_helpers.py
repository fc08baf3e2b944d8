"""A node's parts on a fresh chain, for unit tests that need a real store, chain, mempool
and wallet but no RPC port and no P2P (as `chainmill start` opens them, in-process)."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from config.params import default_params, write_params_file
from config.runtime import ensure_chain_conf
from ledger.transactions import DataFormat, Publish, Transaction
from node.app import NodeApp


def open_fresh_node(tmp_path: Path, chain: str, seed: int) -> Any:
    """The opened NodeContext of a new chain `chain` under tmp_path, its parameters drawn
    from random.Random(seed); the caller closes its chain and store."""
    chain_dir = tmp_path / chain
    chain_dir.mkdir()
    write_params_file(chain_dir / "params.dat", default_params(chain, {}, random.Random(seed)))
    ensure_chain_conf(chain_dir)
    ctx, _ = NodeApp(tmp_path, chain, {})._open()
    return ctx


@contextlib.contextmanager
def fresh_node(tmp_path: Path, chain: str, seed: int) -> Iterator[Any]:
    """open_fresh_node, closed again when the block ends."""
    ctx = open_fresh_node(tmp_path, chain, seed)
    try:
        yield ctx
    finally:
        ctx.chain.close()
        ctx.store.close()


def root_publish(ctx: Any, key: str, data: bytes) -> Transaction:
    """A new transaction of the node's default address publishing `data` under `key` in
    the root stream."""
    chain = ctx.chain
    root = next(iter(chain.state.streams))
    return Transaction.create(ctx.wallet.default, [Publish(root, (key,), DataFormat.TEXT, data)],
                              chain.chain_id, int(time.time()))
