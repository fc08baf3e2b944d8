"""`chainmill mes bridge CHAIN --kafka HOST:PORT`: the Kafka bridge between a MES and a node.

    chainmill mes bridge trade --kafka 127.0.0.1:9092 [--db URL] [--agent-name "Plant 1 MES"]
    chainmill mes bridge trade --issue-master-token "Plant 1 MES"    # prints a Master token once

The bridge acts as the node's first wallet address (or ``--address``), registered as the
MES's agent on the supply-chain stream. Its database (projection, token store, response
store) is a SQLite file in the chain's directory unless ``--db`` names another SQLAlchemy
URL (PostgreSQL, MariaDB). SIGTERM or SIGINT stop it after the request in hand.
Until the `mes` command group wires it, ``python -m mes.bridge.cli CHAIN ...`` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence

from config.errors import ChainmillError

__all__ = ["add_parser", "run", "main", "DB_FILE"]

log = logging.getLogger(__name__)

DB_FILE = "mesbridge.db"


def arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the bridge command."""
    parser.add_argument("chain", help="chain name")
    parser.add_argument("--kafka", metavar="HOST:PORT", help="Kafka bootstrap servers")
    parser.add_argument("--datadir", help="node data directory (default ~/.chainmill)")
    parser.add_argument("--db", help=f"SQLAlchemy URL of the bridge's database "
                                     f"(default: {DB_FILE} in the chain's directory)")
    parser.add_argument("--stream", help="the supply-chain stream (default supplychain)")
    parser.add_argument("--address", help="act from this wallet address (default: the node's "
                                          "first)")
    parser.add_argument("--agent-name", default="MES",
                        help="agent name registered for that address if it is not an agent yet")
    parser.add_argument("--group-id", help="Kafka consumer group (default chainmill-mes-bridge)")
    parser.add_argument("--session-timeout-ms", type=int, default=10_000,
                        help="consumer-group session timeout: how soon a killed bridge's "
                             "partitions go to its successor (default 10000)")
    parser.add_argument("--fetch-wait-ms", type=int, default=500,
                        help="longest wait of a fetch for new requests (Kafka's default 500; "
                             "lower it on brokers that hold a fetch for its whole wait)")
    parser.add_argument("--issue-master-token", metavar="NAME",
                        help="print a new Master token for the MES called NAME and exit")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add the `bridge` subcommand (to the `mes` command group)."""
    parser = subparsers.add_parser("bridge", help="serve the BLK_* Kafka topics for a MES")
    arguments(parser)
    parser.set_defaults(func=run)


def _db_url(args: argparse.Namespace) -> str:
    if args.db:
        return str(args.db)
    from config.paths import chain_dir, resolve_datadir

    directory = chain_dir(resolve_datadir(args.datadir), args.chain)
    if not directory.is_dir():
        raise ChainmillError(f"no chain {args.chain!r} in {directory.parent} (pass --datadir "
                             "or --db)")
    return f"sqlite:///{directory / DB_FILE}"


def _consumer_options(args: argparse.Namespace) -> dict[str, int]:
    if not 1_000 <= args.session_timeout_ms <= 300_000:
        raise ChainmillError("--session-timeout-ms must be from 1000 to 300000")
    if not 1 <= args.fetch_wait_ms <= 10_000:
        raise ChainmillError("--fetch-wait-ms must be from 1 to 10000")
    return {"session_timeout_ms": args.session_timeout_ms,
            "heartbeat_interval_ms": max(300, args.session_timeout_ms // 3),
            "fetch_max_wait_ms": args.fetch_wait_ms}


def run(args: argparse.Namespace) -> int:
    """Run the bridge (or issue a Master token)."""
    from mes.bridge.store import BridgeStore, open_engine

    engine = open_engine(_db_url(args))
    store = BridgeStore(engine)
    store.create()
    if args.issue_master_token:
        token = store.issue_master(args.issue_master_token)
        json.dump({"kind": "Master", "name": args.issue_master_token, "token": token},
                  sys.stdout)
        sys.stdout.write("\n")
        return 0
    if not args.kafka:
        raise ChainmillError("--kafka HOST:PORT is required")

    from erp.api import Erp
    from erp.settings import DEFAULT_STREAM
    from mes.bridge.executor import Executor
    from mes.bridge.service import DEFAULT_GROUP, BridgeService, serve
    from node.client import RpcClient

    client = RpcClient.from_datadir(args.chain, args.datadir)
    erp = Erp(engine, client, stream=args.stream or DEFAULT_STREAM, address=args.address)
    erp.init(agent_name=args.agent_name)
    service = BridgeService(Executor(erp, store), store, args.kafka,
                            group_id=args.group_id or DEFAULT_GROUP,
                            consumer_options=_consumer_options(args))

    async def main_task() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, service.stop)
        await serve(service, lambda: log.warning(
            "bridge for %s serving %s as agent %s", args.chain, args.kafka, erp.public_key))

    try:
        asyncio.run(main_task())
    finally:
        engine.dispose()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m mes.bridge.cli CHAIN --kafka HOST:PORT ...`; the exit status."""
    parser = argparse.ArgumentParser(prog="chainmill mes bridge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except ChainmillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
