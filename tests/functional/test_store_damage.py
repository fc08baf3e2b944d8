"""A damaged store must not start silently: each kind of damage the issue lists.

What: with the node stopped, (1) an item's data changed with SQL (the row's pointer into
its block), (2) bits flipped in
chain.db inside the latest block, (3) an old item changed: found by a full check
(--checkblocks 0), not by the bounded default; (4) the -wal file deleted after SIGKILL: the
node says how many blocks were lost, and its own transactions of those blocks come back
from its journal and are mined again; (5) wallet.keys deleted or emptied: refused unless
--new-wallet. Each refusal is one line naming the fix, and the fix works.

How: one node per test, 0.2 s blocks, damage done on the files with sqlite3 and plain
byte edits while the node is stopped (or killed).
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess

import pytest
from framework import TestNode, chainmill_command, child_env, scaled, sync_blocks
from network_support import publish_items, start_network, wait_confirmed

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.store_damage")


def start_fails(node: TestNode, *extra: str) -> str:
    """Run a start that must be refused; returns its one-line error."""
    done = subprocess.run(
        [*chainmill_command(), "start", node.chain, "--datadir", str(node.datadir),
         "--rpcport", str(node.rpcport), "--port", str(node.port), *extra],
        capture_output=True, text=True, env=child_env(), timeout=scaled(60),
        stdin=subprocess.DEVNULL)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [x for x in done.stderr.splitlines() if not x.split(" ", 3)[2:3] == ["WARNING"]]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def publish_blocks(node: TestNode, stream: str, n: int, prefix: str) -> list[str]:
    """n items, each confirmed before the next is sent (one block each)."""
    txids = []
    for i in range(n):
        txid = node.publish(stream, f"{prefix}{i}", {"text": f"{prefix}-payload-{i:04d}"})
        node.wait_for_confirmation(txid)
        txids.append(txid)
    return txids


def sql(node: TestNode, statement: str, *args: object) -> None:
    db = sqlite3.connect(node.chain_dir / "chain.db")
    with db:
        db.execute(statement, args)
    db.close()


FORGE_ITEM_DATA = (
    "UPDATE items SET data_start = data_start + 1 WHERE height = "
    "(SELECT height FROM transactions WHERE txid = ?)")
"""An item's data is where its row says in the raw block: one byte further is other data."""


def test_changed_item_data_is_found_and_reindex_repairs_it(harness):
    node = harness.start_node()
    node.wait_for_confirmation(node.create("stream", "orders", True))
    txids = publish_blocks(node, "orders", 10, "po")
    node.stop()

    log.info("the latest item's data changed with SQL: refused, the message names --reindex")
    sql(node, FORGE_ITEM_DATA, bytes.fromhex(txids[-1]))
    line = start_fails(node)
    assert "disagrees with block" in line and "stream item rows" in line
    assert f"chainmill start {node.chain} --reindex" in line

    log.info("--reindex rebuilds the rows from the raw blocks: the genuine data again")
    node.start(["--reindex"])
    assert node.getstreamitem("orders", txids[-1])["data"] == {"text": "po-payload-0009"}
    node.stop()

    log.info("an old item is beyond the bounded check but not beyond --checkblocks 0")
    sql(node, FORGE_ITEM_DATA, bytes.fromhex(txids[0]))
    node.start([])
    node.stop()
    line = start_fails(node, "--checkblocks", "0")
    assert "disagrees with block" in line and "--reindex" in line


def test_flipped_bits_in_chain_db_are_refused(harness):
    node = harness.start_node()
    node.wait_for_confirmation(node.create("stream", "orders", True))
    publish_blocks(node, "orders", 3, "po")
    node.stop()
    db_path = node.chain_dir / "chain.db"
    assert not (node.chain_dir / "chain.db-wal").exists() or \
        (node.chain_dir / "chain.db-wal").stat().st_size == 0

    log.info("20 bits flipped in every stored copy of the latest item's payload")
    data = bytearray(db_path.read_bytes())
    needle = b"po-payload-0002"
    spots = []
    at = data.find(needle)
    while at >= 0:
        spots.append(at)
        at = data.find(needle, at + 1)
    assert spots  # the raw block holds it (the rows point into it)
    flipped = 0
    while flipped < 20:
        for at in spots:
            data[at + (flipped % len(needle))] ^= 1 << (flipped % 7)
        flipped += 1
    db_path.write_bytes(bytes(data))
    line = start_fails(node)
    assert "chain store" in line and ("damaged" in line or "disagrees" in line)

    log.info("a damaged page header fails SQLite's quick_check")
    node2 = harness.start_node()
    node2.stop()
    db2 = node2.chain_dir / "chain.db"
    raw = bytearray(db2.read_bytes())
    page = int.from_bytes(raw[16:18], "big") or 65536
    raw[page] = 0x07  # page 2's b-tree page type: no such type
    db2.write_bytes(bytes(raw))
    line = start_fails(node2)
    assert "chain store" in line and "damaged" in line


def test_deleted_wal_after_sigkill_is_reported_and_own_txs_come_back(harness):
    node = harness.start_node()
    node.wait_for_confirmation(node.create("stream", "orders", True))
    txids = publish_blocks(node, "orders", 4, "po")
    height = node.getblockcount()
    node.kill()
    wal = node.chain_dir / "chain.db-wal"
    assert wal.exists() and wal.stat().st_size > 0
    wal.unlink()
    (node.chain_dir / "chain.db-shm").unlink(missing_ok=True)

    log.info("start: the node says it lost blocks; its own transactions are mined again")
    node.start()
    out = node.output(this_start=True)
    assert "block(s) lost" in out and f"had reached block {height}" in out
    node.wait_for_confirmation(*txids)
    assert sorted(i["data"]["text"] for i in node.liststreamitems("orders")) == \
        [f"po-payload-{i:04d}" for i in range(4)]


def test_missing_or_empty_wallet_is_refused_unless_new_wallet(harness):
    node = harness.start_node()
    address = node.getaddresses()[0]
    node.stop()
    wallet = node.chain_dir / "wallet.keys"
    saved = wallet.read_bytes()

    log.info("wallet deleted: refused, naming the lost address and --new-wallet")
    wallet.unlink()
    line = start_fails(node)
    assert "wallet.keys is missing or empty" in line and address in line
    assert "--new-wallet" in line
    assert not wallet.exists()

    log.info("wallet emptied: refused the same way")
    wallet.write_bytes(b"")
    assert "missing or empty" in start_fails(node)
    assert wallet.read_bytes() == b""

    log.info("garbage in the wallet: refused as damaged")
    wallet.write_bytes(b"{not json")
    assert "wallet file wallet.keys is damaged" in start_fails(node)

    log.info("restored from the backup: starts with its address")
    wallet.write_bytes(saved)
    node.start()
    assert node.getaddresses() == [address]
    node.stop()

    log.info("--new-wallet: the operator asks for a new address explicitly")
    wallet.write_bytes(b"")
    node.start(["--new-wallet"])
    assert node.getaddresses() != [address] and len(node.getaddresses()) == 1


def test_lost_wal_blocks_are_fetched_again_from_a_peer(harness):
    seed, peer = start_network(harness, 2)
    seed.wait_for_confirmation(seed.create("stream", "orders", True))
    txids = publish_items(seed, "orders", 20)
    wait_confirmed([seed, peer], *txids)
    tip = sync_blocks([seed, peer])
    height = peer.getblockcount()

    log.info("SIGKILL the peer and delete its -wal file: it comes back lower and says so")
    peer.kill()
    (peer.chain_dir / "chain.db-wal").unlink()
    (peer.chain_dir / "chain.db-shm").unlink(missing_ok=True)
    peer.start()
    out = peer.output(this_start=True)
    assert f"had reached block {height}" in out and "fetched again from peers" in out
    log.info("the lost blocks come back from the seed")
    assert sync_blocks([seed, peer]) == tip
    wait_confirmed([peer], *txids)
