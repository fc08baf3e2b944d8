"""`chainmill triggers ...`: configure triggers, run the relay and the follower.

Subcommands: init, add, list, update, end, relate, import-streams, import-nodes, relay,
follow. Registered through the `chainmill.commands` entry-point group; `main(argv)` runs the
same parser for tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

from config.errors import ChainmillError
from config.paths import chain_dir
from triggers import configure, crypto, settings
from triggers.catalog import Catalog
from triggers.hooks import HookRegistry, load_registry
from triggers.nodes import client_for

__all__ = ["add_parser", "run", "main", "common_options", "open_engine", "load_hooks", "keys_dir"]

log = logging.getLogger(__name__)


def common_options(parser: argparse.ArgumentParser) -> None:
    """--db, --datadir and --hooks, shared by every trigger command."""
    parser.add_argument("--db", help="SQLAlchemy URL of the application database")
    parser.add_argument("--datadir", help="node data directory (default ~/.chainmill)")
    parser.add_argument("--hooks", help="per-table hooks as module:attribute (a HookRegistry)")


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _trigger_fields(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--subsys", dest="subsys_dir", required=required, help="subsystem")
    parser.add_argument("--table", dest="table_id", required=required, help="root table")
    parser.add_argument("--alias", dest="table_id_alias", help="table alias")
    parser.add_argument("--chain", dest="chain_id", required=required, help="target chain")
    parser.add_argument("--stream", dest="stream_id", required=required, help="target stream")
    parser.add_argument("--column", dest="trigger_column", help="trigger column")
    parser.add_argument("--value", dest="trigger_value", help="trigger value")
    parser.add_argument(
        "--distribution", dest="distribution_type", help="all nodes | party in record | database table"
    )
    parser.add_argument("--distribution-table", dest="distribution_table")
    parser.add_argument("--start", dest="start_date", type=_date)
    parser.add_argument("--end", dest="end_date", type=_date)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `triggers` and its subcommands."""
    top = subparsers.add_parser("triggers", help="replicate database changes through the chain")
    sub = top.add_subparsers(dest="triggers_command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("init", help="create the trigger tables (and a chain entry)")
    common_options(p)
    p.add_argument("--participant-id", type=int, help="this instance's participant id")
    p.add_argument("--chain", help="also add this chain and record the database for it")
    p.add_argument("--description", default="", help="chain description")
    p.add_argument("--rpc-host", default="127.0.0.1")
    p.add_argument("--rpc-port", type=int, help="default: the node's configured RPC port")
    p.add_argument("--public-key", help="default: DATADIR/CHAIN/triggers-keys/public_key.pub")
    p.add_argument("--private-key", help="default: DATADIR/CHAIN/triggers-keys/private_key.pem")

    p = sub.add_parser("add", help="add a trigger")
    common_options(p)
    _trigger_fields(p, required=True)

    p = sub.add_parser("list", help="list triggers with their related-table trees")
    common_options(p)
    p.add_argument("--active", action="store_true", help="only triggers active today")

    p = sub.add_parser("update", help="change fields of a trigger")
    common_options(p)
    p.add_argument("trigger_id", type=int)
    _trigger_fields(p, required=False)

    p = sub.add_parser("end", help="end a trigger's activity window")
    common_options(p)
    p.add_argument("trigger_id", type=int)
    p.add_argument("--date", type=_date, help="last active day (default today)")

    p = sub.add_parser("relate", help="add related tables to a trigger's tree")
    common_options(p)
    p.add_argument("trigger_id", type=int)
    p.add_argument("table", nargs="?", help="related table (omit with --all)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--parent", action="store_const", const="parent", dest="kind")
    kind.add_argument("--child", action="store_const", const="child", dest="kind")
    kind.add_argument("--all", action="store_const", const="all", dest="kind",
                      help="every table related by a foreign key")
    p.add_argument("--under", type=int, dest="node_id_snr", help="senior entry (default root)")
    p.add_argument("--fk", dest="fk_columns", help="foreign-key columns when ambiguous")

    for name, text in (("import-streams", "streams"), ("import-nodes", "nodes and permissions")):
        p = sub.add_parser(name, help=f"fill the {text} of a chain from its node")
        common_options(p)
        p.add_argument("chain")

    p = sub.add_parser("relay", help="deliver the outbox to the node(s)")
    common_options(p)
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.add_argument("--interval", type=float, default=0.05, help="seconds between empty polls")

    p = sub.add_parser("follow", help="apply received items as they become final")
    common_options(p)
    p.add_argument("chain")
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.add_argument("--interval", type=float, default=0.2, help="seconds between polls")
    p.add_argument("--gate", choices=("final", "confirmed", "any"), default="final")


def open_engine(args: argparse.Namespace, chain: str | None = None) -> tuple[Engine, settings.Settings]:
    """The application database engine named by options, environment or triggers.conf.

    On SQLite, foreign keys are switched on for every connection (SQLite leaves them off
    unless asked): a received delete relies on the local foreign keys to cascade (spec
    1.10), as the application's own connections do.
    """
    resolved = settings.resolve(chain, args.datadir, args.db, getattr(args, "hooks", None))
    engine = create_engine(resolved.db_url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_foreign_keys)
    return engine, resolved


def _sqlite_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def load_hooks(resolved: settings.Settings) -> HookRegistry:
    """The configured hook registry, or an empty one."""
    return load_registry(resolved.hooks) if resolved.hooks else HookRegistry()


def keys_dir(datadir: Path, chain: str) -> Path:
    """Default directory of an instance's RSA key pair for `chain`."""
    return datadir / chain / "triggers-keys"


def _print_rule(rule: Any, tree: str) -> None:
    window = f"{rule.start_date or ''}..{rule.end_date or ''}"
    condition = f" when {rule.trigger_column} = {rule.trigger_value!r}" if rule.trigger_column else ""
    alias = f" ({rule.table_id_alias})" if rule.table_id_alias else ""
    dist = rule.distribution_type + (f" [{rule.distribution_table}]" if rule.distribution_table else "")
    print(
        f"{rule.trigger_id}: {rule.subsys_dir}.{rule.table_id}{alias}{condition} -> "
        f"{rule.chain_id}/{rule.stream_id}, {dist}, {window}"
    )
    for line in tree.splitlines()[1:]:
        print(f"    {line}")


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    names = (
        "subsys_dir", "table_id", "table_id_alias", "chain_id", "stream_id", "trigger_column",
        "trigger_value", "distribution_type", "distribution_table", "start_date", "end_date",
    )
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def run(args: argparse.Namespace) -> int:
    """Run one `triggers` subcommand."""
    command = args.triggers_command
    chain = getattr(args, "chain", None)
    if command == "init":
        return _init(args)
    engine, resolved = open_engine(args, chain if isinstance(chain, str) else None)
    catalog = Catalog(engine)
    if command == "add":
        trigger_id = configure.add_trigger(engine, catalog, **_fields(args))
        print(trigger_id)
    elif command == "list":
        with engine.connect() as conn:
            for rule in configure.list_triggers(engine, dt.date.today() if args.active else None):
                entries = configure.related_entries(conn, rule.trigger_id)
                _print_rule(rule, configure.format_tree(rule.subsys_dir, rule.table_id, entries))
    elif command == "update":
        configure.update_trigger(engine, catalog, args.trigger_id, **_fields(args))
    elif command == "end":
        configure.end_trigger(engine, args.trigger_id, args.date)
    elif command == "relate":
        if args.kind == "all":
            for node_id in configure.add_relations(engine, catalog, args.trigger_id, args.node_id_snr):
                print(node_id)
        else:
            if not args.table or not args.kind:
                raise configure.ConfigurationInvalid("give TABLE and --parent or --child (or --all)")
            print(
                configure.add_related(
                    engine, catalog, args.trigger_id, args.table, args.kind,
                    node_id_snr=args.node_id_snr, fk_columns=args.fk_columns,
                )
            )
    elif command == "import-streams":
        for name in configure.import_streams(engine, client_for(chain, args.datadir), chain):
            print(name)
    elif command == "import-nodes":
        for address in configure.import_nodes(engine, client_for(chain, args.datadir), chain):
            print(address)
    elif command == "relay":
        from triggers.relay import Relay

        clients: dict[str, Any] = {}

        def client_of(chain_id: str) -> Any:  # one client (one kept-alive connection) per chain
            if chain_id not in clients:
                clients[chain_id] = client_for(chain_id, args.datadir)
            return clients[chain_id]

        relay = Relay(engine, client_of, hooks=load_hooks(resolved))
        if args.once:
            print(relay.run_once())
        else:
            relay.run_forever(_stop_on_signals(), args.interval)
    elif command == "follow":
        from triggers.receiver import Gate, Receiver

        receiver = Receiver(
            engine, client_for(chain, args.datadir), chain, hooks=load_hooks(resolved),
            catalog=catalog, gate=Gate(args.gate),
        )
        from triggers.locks import walk_lock

        receiver.guard = lambda: walk_lock(chain_dir(resolved.datadir, chain))
        if args.once:
            print(receiver.follow_once())
        else:
            receiver.follow_forever(_stop_on_signals(), args.interval)
    return 0


def _init(args: argparse.Namespace) -> int:
    engine, resolved = open_engine(args, None) if args.db else open_engine(args, args.chain)
    origin = configure.init(engine, args.participant_id)
    print(f"trigger tables ready; event ids start with {origin}-")
    if not args.chain:
        return 0
    keys = keys_dir(resolved.datadir, args.chain)
    public = Path(args.public_key) if args.public_key else keys / "public_key.pub"
    private = Path(args.private_key) if args.private_key else keys / "private_key.pem"
    port = args.rpc_port
    if port is None:
        port = getattr(client_for(args.chain, args.datadir), "port", None)
    with engine.connect() as conn:
        try:
            configure.get_chain(conn, args.chain)
            exists = True
        except configure.ConfigurationInvalid:
            exists = False
    if not exists:
        crypto.check_keypair(private, public)
        configure.add_chain(
            engine, args.chain, chain_desc=args.description or args.chain, rpc_host=args.rpc_host,
            rpc_port=int(port or 0), public_key=str(public), private_key=str(private),
        )
    path = settings.write(resolved.datadir, args.chain, resolved.db_url, resolved.hooks)
    print(f"chain {args.chain} configured; database recorded in {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run `triggers`, `keys` and `receive` without the node's CLI (tests, scripts)."""
    from triggers import keys_command, receive_command

    parser = argparse.ArgumentParser(prog="chainmill")
    subparsers = parser.add_subparsers(dest="command", required=True)
    runners = {}
    for module in (sys.modules[__name__], keys_command, receive_command):
        before = set(subparsers.choices)
        module.add_parser(subparsers)
        for name in set(subparsers.choices) - before:
            runners[name] = module.run
    args = parser.parse_args(argv)
    try:
        return runners[args.command](args)
    except ChainmillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
