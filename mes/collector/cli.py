"""`chainmill collect`: run the CNC collector; `chainmill collect emulate`: emulated machines.

    chainmill collect --broker HOST:PORT --db URL --plugins DIR --map cnc_classes.json
    chainmill collect emulate --broker HOST:PORT --cnc CNC001,CNC002 [--count N] [--rate R]

The broker password may come from CHAINMILL_MQTT_PASSWORD instead of the command line (where
other users of the machine could read it in the process list).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from config.errors import ChainmillError

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def _broker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", help="MQTT broker as HOST:PORT (port 1883 by default)")
    parser.add_argument("--username", help="broker user name")
    parser.add_argument("--password", help="broker password (or CHAINMILL_MQTT_PASSWORD)")
    parser.add_argument("--tls", action="store_true", help="connect with TLS")
    parser.add_argument("--cafile", help="CA certificates for TLS (implies --tls)")
    parser.add_argument("--certfile", help="client certificate for TLS")
    parser.add_argument("--keyfile", help="client key for TLS")
    parser.add_argument("--client-id", help="MQTT client id (one per collector: it names the "
                                            "broker session that keeps messages while away)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `collect` and `collect emulate`."""
    top = subparsers.add_parser("collect", help="collect CNC data from an MQTT broker")
    _broker_options(top)
    top.add_argument("--db", help="SQLAlchemy URL of the MES database (table cnc_data)")
    top.add_argument("--plugins", help="directory of the plug-in modules")
    top.add_argument("--map", dest="map_path", help="JSON plug-in map (cnc_id -> class_name)")
    top.add_argument("--max-bytes", type=int, default=None, help="largest message accepted")
    top.add_argument("--stats", help="write the counters as JSON to this file every second")
    sub = top.add_subparsers(dest="collect_command", metavar="COMMAND")

    emu = sub.add_parser("emulate", help="publish emulated CNC messages")
    _broker_options(emu)
    emu.add_argument("--cnc", default="CNC001,CNC002,CNC003", help="machine ids, comma-separated")
    emu.add_argument("--count", type=int, help="messages to publish (default: forever)")
    emu.add_argument("--rate", type=float, default=5.0, help="messages per second (0: no pacing)")
    emu.add_argument("--step", type=float, default=10.0,
                     help="emulated seconds between two samples of one machine")
    emu.add_argument("--backfill", type=float, default=0.0,
                     help="start the emulated clock this many seconds in the past")
    emu.add_argument("--seed", type=int, default=1, help="random seed")
    emu.add_argument("--record", help="append every message the broker acknowledged to this file")

    shift = sub.add_parser("shift", help="day-report inputs of one shift from cnc_data")
    shift.add_argument("--db", required=True, help="SQLAlchemy URL of the MES database")
    shift.add_argument("--cnc", required=True, help="machine id")
    shift.add_argument("--start", required=True, type=int, help="shift start, Unix seconds")
    shift.add_argument("--end", required=True, type=int, help="shift end, Unix seconds")
    shift.add_argument("--calendar", help="plant calendar JSON (planned stops)")


def _settings(args: argparse.Namespace) -> Any:
    from mes.collector.broker import BrokerSettings, parse_broker

    if not args.broker:
        raise ChainmillError("--broker HOST:PORT is required")
    host, port = parse_broker(args.broker)
    password = args.password or os.environ.get("CHAINMILL_MQTT_PASSWORD") or None
    if password is not None and args.username is None:
        raise ChainmillError("a broker password needs --username")
    return BrokerSettings(host, port, username=args.username, password=password,
                          tls=bool(args.tls), cafile=args.cafile, certfile=args.certfile,
                          keyfile=args.keyfile)


def _stop_on_signals(stop: Any) -> None:
    def handler(signum: int, frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def _collect(args: argparse.Namespace) -> int:
    from mes.collector.dispatch import Dispatcher
    from mes.collector.message import MAX_MESSAGE_BYTES
    from mes.collector.plugins import load_map, load_plugins
    from mes.collector.service import Collector
    from mes.collector.store import open_store

    settings = _settings(args)
    if not args.db or not args.map_path:
        raise ChainmillError("--db URL and --map FILE are required")
    mapping = load_map(Path(args.map_path))
    plugins = load_plugins(mapping, Path(args.plugins) if args.plugins else None)
    if not plugins.instances:
        raise ChainmillError("no plug-in could be loaded; nothing to collect")
    store = open_store(args.db)
    dispatcher = Dispatcher(plugins, store, max_bytes=args.max_bytes or MAX_MESSAGE_BYTES)
    collector = Collector(settings, dispatcher,
                          client_id=args.client_id or f"chainmill-collector-{socket.gethostname()}",
                          stats_path=Path(args.stats) if args.stats else None)
    _stop_on_signals(collector.stop)
    log.warning("collecting from %s:%d for %d machine(s)", settings.host, settings.port,
                len(plugins.instances))
    collector.run()
    return 0


def _emulate(args: argparse.Namespace) -> int:
    from mes.collector.emulator import Emulator, samples

    settings = _settings(args)
    cnc_ids = [c.strip() for c in args.cnc.split(",") if c.strip()]
    if not cnc_ids:
        raise ChainmillError("--cnc names no machine")
    emulator = Emulator(settings, client_id=args.client_id or f"chainmill-emulator-{os.getpid()}",
                        record_path=Path(args.record) if args.record else None)
    stopping = threading.Event()
    _stop_on_signals(stopping.set)

    def messages() -> Any:
        for message in samples(cnc_ids, args.seed, time.time() - args.backfill, args.step,
                               args.count):
            if stopping.is_set():
                return
            if int(message["timestamp"]) > time.time():
                message["timestamp"] = str(int(time.time()))
            yield message

    left = emulator.run(messages(), args.rate)
    print(f"published {emulator.published}, acknowledged {emulator.acked}")
    return 1 if left else 0


def _shift(args: argparse.Namespace) -> int:
    import json

    from mes.collector.shifts import Calendar, shift_inputs
    from mes.collector.store import open_store

    store = open_store(args.db)
    calendar = Calendar.load(Path(args.calendar)) if args.calendar else Calendar(())
    inputs = shift_inputs(store.rows(args.cnc), args.start, args.end, calendar)
    print(json.dumps(inputs.as_dict(), indent=2, sort_keys=True))
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch `collect` and its subcommands."""
    command = getattr(args, "collect_command", None)
    if command == "emulate":
        return _emulate(args)
    if command == "shift":
        return _shift(args)
    return _collect(args)
