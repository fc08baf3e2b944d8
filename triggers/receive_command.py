"""`chainmill receive CHAIN TXID [HEIGHT]`: the walletnotify entry point of the receiver.

Configure the node with `walletnotify=chainmill receive CHAIN %s %n`. A notification only
wakes the ordered walk over the chain's streams (spec 1.10), which applies whatever is final,
so duplicate or lost notifications do no harm.
"""

from __future__ import annotations

import argparse

from triggers.catalog import Catalog
from triggers.cli import common_options, load_hooks, open_engine
from triggers.nodes import client_for
from triggers.receiver import Gate, Receiver

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `receive`."""
    p = subparsers.add_parser("receive", help="apply a notified transaction (walletnotify)")
    p.add_argument("chain")
    p.add_argument("txid")
    p.add_argument("height", nargs="?", default=None, help="block height; negative or empty: unconfirmed")
    p.add_argument("--gate", choices=Gate.CHOICES, default="final")
    common_options(p)


def run(args: argparse.Namespace) -> int:
    """Wake the receiver of CHAIN once."""
    engine, resolved = open_engine(args, args.chain)
    try:
        receiver = Receiver(
            engine, client_for(args.chain, args.datadir), args.chain, hooks=load_hooks(resolved),
            catalog=Catalog(engine), gate=Gate(args.gate),
        )
        receiver.receive(args.txid, args.height)
    finally:
        engine.dispose()
    return 0
