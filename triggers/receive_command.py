"""`chainmill receive CHAIN TXID [HEIGHT]`: the walletnotify entry point of the receiver.

Configure the node with `walletnotify=chainmill receive CHAIN %s %n`, adding `--datadir DIR`
when the node's data directory is not the default one: the command finds the application
database in `DIR/CHAIN/triggers.conf` (written by `chainmill triggers init --chain CHAIN
--db URL`), and the node's RPC port and credentials in its chainmill.conf. The node runs
the line without a shell (split shell-style, tokens substituted per argument), so quote a
path with spaces as in a shell.

A notification only wakes the ordered walk over the chain's streams (spec 1.10), which
applies whatever is final, so duplicate or lost notifications do no harm. Notifications
arrive several at a time; one walk runs at a time per chain and data directory, and a
process that finds another already waiting for its turn leaves (that walk covers it).
With a finality depth above 1 an item becomes final only blocks after its own
notification; add `blocknotify=chainmill receive CHAIN %s` (same options) for that case.
"""

from __future__ import annotations

import argparse
import logging

from config.paths import chain_dir
from triggers.catalog import Catalog
from triggers.cli import common_options, load_hooks, open_engine
from triggers.locks import walk_lock
from triggers.nodes import client_for
from triggers.receiver import Gate, Receiver

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `receive`."""
    p = subparsers.add_parser("receive", help="apply a notified transaction (walletnotify)")
    p.add_argument("chain")
    p.add_argument("txid", help="the notified transaction (or block hash from blocknotify)")
    p.add_argument("height", nargs="?", default=None, help="block height; negative or empty: unconfirmed")
    p.add_argument("--gate", choices=Gate.CHOICES, default="final")
    common_options(p)


def run(args: argparse.Namespace) -> int:
    """Wake the receiver of CHAIN once."""
    engine, resolved = open_engine(args, args.chain)
    try:
        with walk_lock(chain_dir(resolved.datadir, args.chain), leave_if_queued=True) as mine:
            if not mine:
                log.info("%s: a walk is already queued; it covers this notification", args.txid)
                return 0
            receiver = Receiver(
                engine, client_for(args.chain, str(resolved.datadir)), args.chain,
                hooks=load_hooks(resolved), catalog=Catalog(engine), gate=Gate(args.gate),
            )
            applied = receiver.receive(args.txid, args.height)
            log.info("%s: %d document(s) applied", args.txid, applied)
    finally:
        engine.dispose()
    return 0
