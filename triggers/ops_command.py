"""`chainmill triggers status|outbox|inbox|retry`: see what the relay and receiver did, fix it.

status: per trigger the outbox rows pending / sent / failed and the newest error; per chain
the inbox rows applied / failed / waiting and the receiver cursor of every stream.
outbox, inbox: the newest rows with their errors (`--status FAILED`, `--limit N`).
retry: make rows due again, by outbox sequence number or inbox event id, or all failed ones.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine

from triggers import ops
from triggers.errors import ConfigurationInvalid

__all__ = ["COMMANDS", "add_parsers", "run"]

COMMANDS = frozenset({"status", "outbox", "inbox", "retry"})


def add_parsers(sub: argparse._SubParsersAction,
                common_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add the operator subcommands to `chainmill triggers`."""
    p = sub.add_parser("status", help="outbox and inbox counts, last errors, cursors")
    common_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    for name, what in (("outbox", "sent"), ("inbox", "received")):
        p = sub.add_parser(name, help=f"list the newest {what} rows with their errors")
        common_options(p)
        p.add_argument("--status", help="only these statuses (comma separated)")
        p.add_argument("--limit", type=int, default=50)
    p = sub.add_parser("retry", help="send or apply failed rows again")
    common_options(p)
    p.add_argument("ids", nargs="*", metavar="ID",
                   help="outbox sequence number (as `triggers outbox` shows) or inbox event id")
    p.add_argument("--all-failed", action="store_true", help="every FAILED outbox and inbox row")


def _short(text: Any, width: int = 160) -> str:
    value = " ".join(str(text).split()) if text is not None else ""
    return value if len(value) <= width else value[: width - 1] + "…"


def _status(args: argparse.Namespace, engine: Engine) -> int:
    triggers = ops.status(engine)
    inbox = ops.inbox_summary(engine)
    if args.json:
        print(json.dumps({
            "triggers": [{"trigger_id": t.trigger_id, "table": t.table_id, "chain": t.chain_id,
                          "stream": t.stream_id, "outbox": t.counts, "last_error": t.last_error}
                         for t in triggers],
            "inbox": inbox,
        }, indent=2, sort_keys=True))
        return 0
    if not triggers:
        print("no triggers (nothing is sent from this database)")
    for t in triggers:
        c = t.counts
        line = (f"trigger {t.trigger_id} {t.table_id} -> {t.chain_id}/{t.stream_id}: outbox "
                f"pending {c.get('PENDING', 0)}, sent {c.get('SENT', 0)}, "
                f"failed {c.get('FAILED', 0)}")
        print(line + (f"; last error: {_short(t.last_error)}" if t.last_error else ""))
    if not inbox:
        print("inbox: empty (nothing received yet)")
    for chain_id, entry in sorted(inbox.items()):
        c = entry["counts"]
        waiting = c.get("DEFERRED", 0)
        others = ", ".join(f"{k.lower()} {v}" for k, v in sorted(c.items())
                           if k not in ("APPLIED", "FAILED", "DEFERRED"))
        cursors = ", ".join(f"{s} {p}" for s, p in entry["cursors"].items()) or "none"
        line = (f"chain {chain_id}: inbox applied {c.get('APPLIED', 0)}, failed "
                f"{c.get('FAILED', 0)}, waiting {waiting}" + (f", {others}" if others else "")
                + f"; cursor {cursors}")
        print(line + (f"; last error: {_short(entry['last_error'])}" if entry["last_error"]
                      else ""))
    return 0


def _outbox(args: argparse.Namespace, engine: Engine) -> int:
    rows = ops.outbox_rows(engine, args.status, args.limit)
    if not rows:
        print("outbox: no rows" + (f" with status {args.status}" if args.status else ""))
    for r in rows:
        print(f"{r['sequence']} {r['status']} trigger {r['trigger_id']} {r['operation']} "
              f"{r['table_id']} {r['pkey']} attempts {r['attempts']}"
              + (f" event {r['message_id']}" if r["message_id"] else "")
              + (f" tx {r['txid']}" if r["txid"] else "")
              + (f"\n    error: {_short(r['last_error'], 400)}" if r["last_error"] else ""))
    return 0


def _inbox(args: argparse.Namespace, engine: Engine) -> int:
    rows = ops.inbox_rows(engine, args.status, args.limit)
    if not rows:
        print("inbox: no rows" + (f" with status {args.status}" if args.status else ""))
    for r in rows:
        where = (f"block {r['block_height']} tx {r['block_index']}"
                 if r["block_height"] is not None else "unconfirmed")
        print(f"{r['message_id']} {r['status']} {r['chain_id']}/{r['stream_id']} "
              f"{r['root_element'] or '-'} {where} item {r['txid']}:{r['item_index']} "
              f"attempts {r['attempts']}"
              + (f"\n    error: {_short(r['error'], 400)}" if r["error"] else ""))
    return 0


def _retry(args: argparse.Namespace, engine: Engine) -> int:
    if not args.ids and not args.all_failed:
        raise ConfigurationInvalid("give outbox sequence numbers or inbox event ids, or --all-failed")
    if args.ids and args.all_failed:
        raise ConfigurationInvalid("give IDs or --all-failed, not both")
    if args.all_failed:
        sent = ops.retry_outbox(engine, None)
        received = ops.retry_inbox(engine, None)
    else:
        sequences = [int(i) for i in args.ids if i.isdigit()]
        events = [i for i in args.ids if not i.isdigit()]
        sent = ops.retry_outbox(engine, sequences) if sequences else 0
        received = ops.retry_inbox(engine, events) if events else 0
        if sent + received < len(args.ids):
            missing = len(args.ids) - sent - received
            print(f"{missing} of the given rows were not found or had nothing to retry")
    print(f"{sent} outbox row(s) and {received} inbox row(s) due again; the running relay "
          "and receiver take them on their next pass")
    # Nothing failed is no error for --all-failed; IDs that match nothing are.
    return 0 if args.all_failed or sent + received else 1


def run(args: argparse.Namespace, engine: Engine) -> int:
    """Run one operator subcommand."""
    try:
        handler = {"status": _status, "outbox": _outbox, "inbox": _inbox,
                   "retry": _retry}[args.triggers_command]
        return handler(args, engine)
    finally:
        engine.dispose()
