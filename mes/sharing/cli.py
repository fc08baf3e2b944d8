"""`chainmill share`: declare systems and shares, run the forwarder, read what partners share.

    chainmill share system CHAIN NAME --db URL            # closed stream NAME, owned by us
    chainmill share add CHAIN --db URL --system NAME --partner ADDRESS \\
        --filter "variable = spin AND result > 1000" [--every 60]
    chainmill share list --db URL
    chainmill share end --db URL SHARE_ID
    chainmill share forward CHAIN --db URL [--once]       # cnc_data -> outbox -> chain
    chainmill share consume CHAIN --system NAME [--follow]   # partner side, JSON lines

Keys: the RSA pair made by `chainmill keys generate CHAIN` (DATADIR/CHAIN/triggers-keys).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from config.errors import ChainmillError
from config.paths import resolve_datadir

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def _chain(p: argparse.ArgumentParser) -> None:
    p.add_argument("chain", help="chain name (the local node's)")
    p.add_argument("--datadir", help="node data directory (default ~/.chainmill)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `share` and its subcommands."""
    top = subparsers.add_parser("share", help="share machine observations with partners")
    sub = top.add_subparsers(dest="share_command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("system", help="declare a system (a stream only we may write)")
    _chain(p)
    p.add_argument("name", help="system name, e.g. acme.plant1.cnc")
    p.add_argument("--db", required=True, help="SQLAlchemy URL of the MES database")
    p.add_argument("--owner", help="owning address (default: the node's first)")
    p.add_argument("--writer", action="append", default=[], help="another own address")
    p.add_argument("--description", default="")

    p = sub.add_parser("add", help="share a system's observations with a partner")
    p.add_argument("--db", required=True)
    p.add_argument("--system", required=True)
    p.add_argument("--partner", required=True, help="the partner's address")
    p.add_argument("--filter", default="", help="e.g. \"variable = spin AND result > 1000\"")
    p.add_argument("--every", type=int, default=0, help="at most one value per N seconds")

    p = sub.add_parser("list", help="list systems and shares")
    p.add_argument("--db", required=True)

    p = sub.add_parser("end", help="stop a share")
    p.add_argument("--db", required=True)
    p.add_argument("share_id", type=int)

    p = sub.add_parser("forward", help="publish shared observations (outbox, exactly once)")
    _chain(p)
    p.add_argument("--db", required=True)
    p.add_argument("--once", action="store_true", help="forward what is there, then exit")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between rounds")

    p = sub.add_parser("consume", help="print observations shared with us (JSON lines)")
    _chain(p)
    p.add_argument("--system", required=True)
    p.add_argument("--key", action="append", default=[], help="private key file(s)")
    p.add_argument("--follow", action="store_true", help="keep reading new items")
    p.add_argument("--interval", type=float, default=1.0)


def _engine(url: str) -> Any:
    from sqlalchemy import create_engine

    from mes.sharing.schema import create_tables

    engine = create_engine(url, pool_pre_ping=True)
    create_tables(engine)
    return engine


def _client(args: argparse.Namespace) -> Any:
    from node.client import RpcClient

    return RpcClient.from_datadir(args.chain, args.datadir)


def _stop_event() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def run(args: argparse.Namespace) -> int:
    """Dispatch the `share` subcommands."""
    from mes.sharing import systems
    from mes.sharing.observations import SharingError

    command = args.share_command
    try:
        if command == "system":
            client = _client(args)
            owner = args.owner or client.call("getaddresses")[0]
            systems.declare_system(_engine(args.db), client, args.name, owner, args.writer,
                                   args.description)
            print(f"system {args.name} owned by {owner}")
        elif command == "add":
            share_id = systems.add_share(_engine(args.db), args.system, args.partner,
                                         args.filter, args.every)
            print(f"share {share_id}")
        elif command == "end":
            systems.end_share(_engine(args.db), args.share_id)
        elif command == "list":
            _list(_engine(args.db))
        elif command == "forward":
            _forward(args)
        elif command == "consume":
            _consume(args)
    except SharingError:
        raise
    except ValueError as exc:  # a parse error below the command line (e.g. a filter)
        raise ChainmillError(str(exc)) from None
    return 0


def _list(engine: Any) -> None:
    from sqlalchemy import select

    from mes.sharing.schema import shares, systems

    with engine.connect() as conn:
        for s in conn.execute(select(systems)):
            print(f"system {s.name} owner {s.owner_address}")
        for s in conn.execute(select(shares)):
            state = "active" if s.active else "ended"
            every = f" every {s.every_seconds}s" if s.every_seconds else ""
            print(f"share {s.share_id} {s.system} -> {s.partner} [{s.filter}]{every} {state}")


def _forward(args: argparse.Namespace) -> None:
    from mes.sharing.forwarder import Forwarder
    from mes.sharing.observations import SharingError
    from triggers.nodes import rpc_errors

    forwarder = Forwarder(_engine(args.db), _client(args))
    stop = _stop_event()
    while True:
        try:
            captured, published = forwarder.run_once()
        except (SharingError, *rpc_errors()) as exc:
            # A partner key not yet on pubkeys, a node restarting: retried next round;
            # the outbox keeps every observation until it is published.
            if args.once:
                raise
            log.warning("forwarding paused: %s", exc)
        else:
            if captured or published:
                log.info("captured %d, published %d", captured, published)
        if args.once or stop.wait(args.interval):
            break


def _consume(args: argparse.Namespace) -> None:
    from mes.sharing.client import ObservationClient

    keys = [Path(k) for k in args.key] or [
        resolve_datadir(args.datadir) / args.chain / "triggers-keys" / "private_key.pem"]
    client = ObservationClient(_client(args), keys)
    client.subscribe(args.system)
    stop = _stop_event()
    while True:
        for observation in client.consume(args.system):
            sys.stdout.write(json.dumps(observation, sort_keys=True) + "\n")
        sys.stdout.flush()
        if not args.follow or stop.wait(args.interval):
            break
