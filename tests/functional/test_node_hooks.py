"""walletnotify, walletnotifynew and blocknotify hooks on a real node.

What: the hooks are called with the right arguments: txid (%s), the first-seen flag %c (1 when
the transaction is first seen, then 0 when it is confirmed), the height (%n, -1 while
unconfirmed), the block hash (%b), wallet addresses (%a), the createtxid of the subscribed
stream (%e), the chain name (%m) and the decoded transaction (%j); blocknotify gets the hash
of every new best block. Item data and keys full of shell metacharacters arrive as literal
text and execute nothing, because hooks run without a shell.

How: the hook is a small Python script written into the test directory that appends its
argv as one JSON line to a file; the test waits for the expected lines.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path

import pytest
from framework import json_lines, wait_until

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.node_hooks")

HOOK_SCRIPT = """\
import json, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
os.write(fd, (json.dumps(sys.argv[2:]) + "\\n").encode())
os.close(fd)
"""
ZERO_HASH = "0" * 64


def write_hook(directory: Path) -> Path:
    path = directory / "record_argv.py"
    path.write_text(HOOK_SCRIPT)
    return path


def hook_line(script: Path, record: Path, *args: str) -> str:
    """A hook command line: python script.py RECORD ARGS... (tokens stay inside arguments)."""
    return shlex.join([sys.executable, str(script), str(record)]) + " " + " ".join(args)


def test_walletnotify_and_blocknotify_arguments(harness):
    script = write_hook(harness.base_dir)
    wallet_rec = harness.base_dir / "wallet.jsonl"
    block_rec = harness.base_dir / "block.jsonl"
    node = harness.add_node()
    node.set_conf(
        walletnotify=hook_line(script, wallet_rec, "%s", "%c", "%n", "%b", "%a", "%e", "%m"),
        blocknotify=hook_line(script, block_rec, "block=%s"),
    )
    node.start()
    admin = node.getaddresses()[0]

    log.info("publish to a subscribed stream: a first-seen call, then a confirmation call")
    stream = node.create("stream", "orders", True)
    node.wait_for_confirmation(stream)
    node.pause("mining")
    txid = node.publish("orders", "PO-1", {"json": {"qty": 1}})
    first = wait_until(lambda: [r for r in json_lines(wallet_rec) if r[0] == txid],
                       msg="walletnotify for the unconfirmed transaction")
    assert first == [[txid, "1", "-1", ZERO_HASH, admin, stream, node.chain]]
    node.resume("mining")
    node.wait_for_confirmation(txid)
    tx = node.getrawtransaction(txid, 1)
    height = node.getblock(tx["blockhash"])["height"]
    calls = wait_until(lambda: (lambda rs: rs if len(rs) == 2 else None)(
        [r for r in json_lines(wallet_rec) if r[0] == txid]),
        msg="walletnotify for the confirmation")
    assert calls[1] == [txid, "0", str(height), tx["blockhash"], admin, stream, node.chain]

    log.info("blocknotify: every new best block, once")
    tip = node.getblockcount()
    expected = [f"block={node.getblockhash(h)}" for h in range(1, tip + 1)]
    seen = wait_until(lambda: (lambda rs: rs if len(rs) >= tip else None)(
        [r[0] for r in json_lines(block_rec)]), msg=f"{tip} blocknotify calls")
    assert sorted(seen) == sorted(expected)

    log.info("after unsubscribing, %e no longer names the stream; %a still names us")
    node.unsubscribe("orders")
    later = node.publish("orders", "PO-2", {"json": {"qty": 2}})
    node.wait_for_confirmation(later)
    calls = wait_until(lambda: (lambda rs: rs if len(rs) == 2 else None)(
        [r for r in json_lines(wallet_rec) if r[0] == later]), msg="walletnotify calls")
    assert sorted(r[1] for r in calls) == ["0", "1"]
    assert all(r[4] == admin and r[5] == "" for r in calls)


def test_item_data_with_shell_metacharacters_executes_nothing(harness):
    script = write_hook(harness.base_dir)
    record = harness.base_dir / "wallet.jsonl"
    canary = harness.base_dir / "pwned"
    node = harness.add_node()
    node.set_conf(walletnotifynew=hook_line(script, record, "%s", "%c", "%j", "%h"))
    node.start()

    hostile = [
        f"$(touch {canary})", f"`touch {canary}`", f"; touch {canary}", f"| touch {canary}",
        f"&& touch {canary} &", f"' \" $HOME > {canary}", f"%s %j\n touch {canary}",
    ]
    node.create("stream", "evil", True)
    log.info("publish items whose keys and data are shell syntax")
    txids = [node.publish("evil", [f"k{i}", text[:200]], {"text": text})
             for i, text in enumerate(hostile)]
    node.wait_for_confirmation(*txids)

    lines = wait_until(lambda: (lambda rs: rs if len(rs) >= len(txids) else None)(
        [r for r in json_lines(record) if r[0] in txids]), msg="walletnotifynew calls")
    assert not canary.exists()
    by_txid = {r[0]: r for r in lines}
    assert len(lines) == len(txids)  # walletnotifynew: first sighting only, no "0" calls
    for txid, text in zip(txids, hostile, strict=True):
        _, flag, tx_json, raw_hex = by_txid[txid]
        assert flag == "1"
        decoded = json.loads(tx_json)  # one argument, exactly the JSON, unquoted
        assert decoded["txid"] == txid
        assert decoded["vout"][0]["items"][0]["data"] == {"text": text}
        assert decoded["vout"][0]["items"][0]["keys"][1] == text[:200]
        assert raw_hex == node.getrawtransaction(txid)
    assert not canary.exists()
