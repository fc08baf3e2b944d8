"""`chainmill triggers ...`: configure triggers, run the relay and the follower.

Subcommands: init, add, list, update, end, relate, import-streams, import-nodes, relay,
follow, status, outbox, inbox, retry. Registered through the `chainmill.commands` entry-point group; `main(argv)` runs the
same parser for tests.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.engine import Engine

from config.errors import ChainmillError
from config.paths import chain_dir
from triggers import configure, crypto, settings
from triggers.catalog import Catalog
from triggers.database import open_database
from triggers.hooks import HookRegistry, load_registry
from triggers.keys import check_participant_id
from triggers.nodes import client_for

__all__ = ["add_parser", "run", "main", "common_options", "open_engine", "load_hooks", "keys_dir"]

log = logging.getLogger(__name__)


def common_options(parser: argparse.ArgumentParser) -> None:
    """--db, --datadir, --hooks and -v, shared by every trigger command."""
    parser.add_argument("--db", help="SQLAlchemy URL of the application database")
    parser.add_argument("--datadir", help="node data directory (default ~/.chainmill)")
    parser.add_argument("--hooks", help="per-table hooks as module:attribute (a HookRegistry)")
    # SUPPRESS: a -v given before the subcommand (`chainmill -v triggers relay`) survives.
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log debug messages")


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
    p.add_argument("--create-stream", action="store_true",
                   help="create the stream on the node when it does not exist there yet")

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

    from triggers import ops_command

    ops_command.add_parsers(sub, common_options)


def open_engine(args: argparse.Namespace, chain: str | None = None) -> tuple[Engine, settings.Settings]:
    """The application database engine named by options, environment or triggers.conf.

    On SQLite, foreign keys are switched on for every connection (SQLite leaves them off
    unless asked): a received delete relies on the local foreign keys to cascade (spec
    1.10), as the application's own connections do.
    """
    resolved = settings.resolve(chain, args.datadir, args.db, getattr(args, "hooks", None))
    engine = open_database(resolved.db_url, prepare=_prepare, pool_pre_ping=True)
    return engine, resolved


def _prepare(engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_foreign_keys)


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


def _verbose_service_logs(args: argparse.Namespace) -> None:
    """Long-running services say what they do: their INFO lines show without -v."""
    if not getattr(args, "verbose", False):
        logging.getLogger("triggers").setLevel(logging.INFO)


def _add(args: argparse.Namespace, engine: Engine, catalog: Catalog) -> None:
    fields = _fields(args)
    chain_id, stream_id = fields.get("chain_id"), fields.get("stream_id")
    if chain_id and stream_id and not configure.has_stream(engine, chain_id, stream_id):
        _provide_stream(args, engine, chain_id, stream_id)
    trigger_id = configure.add_trigger(engine, catalog, **fields)
    print(f"trigger {trigger_id} added: {fields['subsys_dir']}.{fields['table_id']} -> "
          f"{chain_id}/{stream_id}")


def _provide_stream(args: argparse.Namespace, engine: Engine, chain_id: str, stream_id: str) -> None:
    """A trigger's stream missing from the configuration: import it from the node, or create
    it there with --create-stream; otherwise say exactly what to run."""
    client = client_for(chain_id, args.datadir)
    on_node = any(str(s.get("name", "")).lower() == stream_id.lower()
                  for s in client.call("liststreams", "*", True) or [])
    if not on_node:
        if not args.create_stream:
            raise configure.ConfigurationInvalid(
                f"stream {stream_id!r} does not exist on chain {chain_id!r}: add --create-stream "
                f"to create it, or run `chainmill cli {chain_id} create stream {stream_id} false` "
                f"and `chainmill triggers import-streams {chain_id}`")
        txid = client.call("create", "stream", stream_id, False)
        print(f"stream {stream_id} created on chain {chain_id} (closed: only this node and "
              f"addresses granted {stream_id}.write publish): {txid}", flush=True)
        # Partners import the stream from their own nodes next: return once it is in a block.
        deadline = time.monotonic() + 120
        while not any(s.get("name") == stream_id and s.get("streamref")
                      for s in client.call("liststreams", stream_id) or []):
            if time.monotonic() > deadline:
                raise configure.ConfigurationInvalid(
                    f"stream {stream_id} was created ({txid}) but is not confirmed after 120 s: "
                    "is the node mining?")
            time.sleep(0.2)
        print(f"stream {stream_id} confirmed")
    for name in configure.import_streams(engine, client, chain_id):
        print(f"stream {name} imported from the node")


def run(args: argparse.Namespace) -> int:
    """Run one `triggers` subcommand."""
    command = args.triggers_command
    chain = getattr(args, "chain", None)
    if command == "init":
        return _init(args)
    from triggers import ops_command

    if command in ops_command.COMMANDS:
        engine, resolved = open_engine(args, chain if isinstance(chain, str) else None)
        return ops_command.run(args, engine)
    engine, resolved = open_engine(args, chain if isinstance(chain, str) else None)
    catalog = Catalog(engine)
    if command == "add":
        _add(args, engine, catalog)
    elif command == "list":
        with engine.connect() as conn:
            rules = configure.list_triggers(engine, dt.date.today() if args.active else None)
            for rule in rules:
                entries = configure.related_entries(conn, rule.trigger_id)
                _print_rule(rule, configure.format_tree(rule.subsys_dir, rule.table_id, entries))
            if not rules:
                print("no triggers" + (" active today" if args.active else ""))
    elif command == "update":
        configure.update_trigger(engine, catalog, args.trigger_id, **_fields(args))
        print(f"trigger {args.trigger_id} updated")
    elif command == "end":
        configure.end_trigger(engine, args.trigger_id, args.date)
        print(f"trigger {args.trigger_id} ends {args.date or 'today'}")
    elif command == "relate":
        if args.kind == "all":
            added = configure.add_relations(engine, catalog, args.trigger_id, args.node_id_snr)
            for node_id in added:
                print(f"related table {node_id} added")
            if not added:
                print("no related tables found")
        else:
            if not args.table or not args.kind:
                raise configure.ConfigurationInvalid("give TABLE and --parent or --child (or --all)")
            node_id = configure.add_related(
                engine, catalog, args.trigger_id, args.table, args.kind,
                node_id_snr=args.node_id_snr, fk_columns=args.fk_columns,
            )
            print(f"related table {node_id} added: {args.table} ({args.kind})")
    elif command == "import-streams":
        names = configure.import_streams(engine, client_for(chain, args.datadir), chain)
        for name in names:
            print(f"stream {name} imported")
        if not names:
            print(f"no new streams on chain {chain}")
    elif command == "import-nodes":
        addresses = configure.import_nodes(engine, client_for(chain, args.datadir), chain)
        for address in addresses:
            print(f"node {address} imported")
        if not addresses:
            print(f"no nodes with permissions on chain {chain}")
    elif command == "relay":
        _relay(args, engine, resolved)
    elif command == "follow":
        _follow(args, engine, resolved, catalog)
    return 0


def _relay(args: argparse.Namespace, engine: Engine, resolved: settings.Settings) -> None:
    from triggers.relay import Relay

    clients: dict[str, Any] = {}

    def client_of(chain_id: str) -> Any:  # one client (one kept-alive connection) per chain
        if chain_id not in clients:
            clients[chain_id] = client_for(chain_id, args.datadir)
        return clients[chain_id]

    relay = Relay(engine, client_of, hooks=load_hooks(resolved))
    if args.once:
        print(f"{relay.run_once()} outbox row(s) sent or confirmed")
        return
    _verbose_service_logs(args)
    chains = sorted({r.chain_id for r in configure.list_triggers(engine, dt.date.today())})
    log.info("relay started: database %s, chains %s", engine.url.render_as_string(),
             ", ".join(chains) or "(no active triggers)")
    relay.run_forever(_stop_on_signals(), args.interval)
    log.info("relay stopped after %d row(s)", relay.sent_count)


def _follow(args: argparse.Namespace, engine: Engine, resolved: settings.Settings,
            catalog: Catalog) -> None:
    from triggers.locks import walk_lock
    from triggers.receiver import Gate, Receiver

    receiver = Receiver(
        engine, client_for(args.chain, args.datadir), args.chain, hooks=load_hooks(resolved),
        catalog=catalog, gate=Gate(args.gate),
    )
    receiver.guard = lambda: walk_lock(chain_dir(resolved.datadir, args.chain))
    if not args.once:
        _verbose_service_logs(args)
    streams = receiver.document_streams()
    log.info("follow started: chain %s, database %s, streams %s, gate %s", args.chain,
             engine.url.render_as_string(), ", ".join(streams) or "(none)", args.gate)
    if not streams:
        log.warning("no document streams are configured for chain %s: nothing will be "
                    "received; run `chainmill triggers import-streams %s` once the stream "
                    "exists", args.chain, args.chain)
    if args.once:
        print(f"{receiver.follow_once()} document(s) applied")
    else:
        receiver.follow_forever(_stop_on_signals(), args.interval)


def _init(args: argparse.Namespace) -> int:
    """Everything that can fail is checked before anything is written: the participant id,
    the key pair and the node's port, so a failed init leaves no half-made configuration."""
    engine, resolved = open_engine(args, None) if args.db else open_engine(args, args.chain)
    if args.participant_id is not None:
        check_participant_id(args.participant_id)
    chain_entry: dict[str, Any] | None = None
    if args.chain and not _chain_configured(engine, args.chain):
        keys = keys_dir(resolved.datadir, args.chain)
        public = Path(args.public_key) if args.public_key else keys / "public_key.pub"
        private = Path(args.private_key) if args.private_key else keys / "private_key.pem"
        if not private.exists() or not public.exists():
            missing = private if not private.exists() else public
            hint = (f"run `chainmill keys generate {args.chain}` first"
                    if not (args.public_key or args.private_key) else "check --public-key/--private-key")
            raise configure.ConfigurationInvalid(
                f"no key pair for chain {args.chain} ({missing} does not exist): {hint}; "
                "nothing was changed")
        crypto.check_keypair(private, public)
        port = args.rpc_port
        if port is None:
            port = getattr(client_for(args.chain, args.datadir), "port", None)
        chain_entry = dict(chain_desc=args.description or args.chain, rpc_host=args.rpc_host,
                           rpc_port=int(port or 0), public_key=str(public),
                           private_key=str(private))
    origin = configure.init(engine, args.participant_id)
    print(f"trigger tables ready; event ids start with {origin}-")
    if not args.chain:
        return 0
    if chain_entry is not None:
        configure.add_chain(engine, args.chain, **chain_entry)
    path = settings.write(resolved.datadir, args.chain, resolved.db_url, resolved.hooks)
    print(f"chain {args.chain} configured; database recorded in {path}")
    return 0


def _chain_configured(engine: Engine, chain: str) -> bool:
    if not inspect(engine).has_table(configure.schema.chain.name):
        return False
    with engine.connect() as conn:
        try:
            configure.get_chain(conn, chain)
            return True
        except configure.ConfigurationInvalid:
            return False


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
    if getattr(args, "verbose", False):
        logging.basicConfig(level=logging.DEBUG)
    try:
        return runners[args.command](args)
    except ChainmillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
