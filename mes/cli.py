"""`chainmill mes ...`: the MES side of the bridge from the shell.

    chainmill mes init --db URL [--key-file PATH]       reference schema + token key (0600)
    chainmill mes token master [--public-key HEX]       store the Master token (read from stdin)
    chainmill mes token list                            the token store, secrets left out
    chainmill mes unit add ID CODE | unit set ID [--status S] [--process-name P] | unit list
    chainmill mes shift UNIT DAY SHIFT --length ...      one shift's indicator inputs
    chainmill mes serve --kafka HOST:PORT --tz ZONE      HTTP endpoints, unit sender, 09:30 job
    chainmill mes publish --kafka HOST:PORT --tz ZONE    run the day-report job once, now
    chainmill mes bridge ...                            the bridge service (mes.bridge.cli)

The database comes from ``--db`` or ``CHAINMILL_MES_DB``; the token key from
``CHAINMILL_MES_KEY`` or ``--key-file`` (default ``~/.chainmill/mes.key``); the broker from
``--kafka`` or ``CHAINMILL_MES_KAFKA``. Secrets never go on the command line (other users of
the machine could read them in the process list). Registered through ``chainmill.commands``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import signal
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import create_engine, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from config.errors import ChainmillError

__all__ = ["add_parser", "run", "MesCliError"]

log = logging.getLogger(__name__)

DB_ENV = "CHAINMILL_MES_DB"
KAFKA_ENV = "CHAINMILL_MES_KAFKA"
TZ_ENV = "CHAINMILL_MES_TZ"
TOKEN_ENV = "CHAINMILL_MES_MASTER_TOKEN"


class MesCliError(ChainmillError):
    """A `chainmill mes` command that cannot run as asked."""


try:  # the bridge service lives in its own module (another part of issue 8)
    from mes.bridge import cli as bridge_cli
except ImportError:  # pragma: no cover - a checkout without the bridge service
    bridge_cli = None


def _default_key_file() -> Path:
    return Path(os.environ.get("CHAINMILL_DATADIR", Path.home() / ".chainmill")) / "mes.key"


def _db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help=f"SQLAlchemy URL of the MES database (or {DB_ENV})")
    p.add_argument("--key-file", help="the token key file (default ~/.chainmill/mes.key; "
                                      "CHAINMILL_MES_KEY overrides it)")


def _kafka(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kafka", help=f"Kafka bootstrap HOST:PORT (or {KAFKA_ENV})")
    p.add_argument("--client-id", default="mes-1",
                   help="this MES instance's stable name on the bridge (default mes-1)")
    p.add_argument("--timeout", type=float, default=15.0,
                   help="seconds to wait for the bridge's answer (default 15, then 504)")
    p.add_argument("--fetch-wait-ms", type=int, default=500,
                   help="longest wait of a fetch on BLK_Res (Kafka's default 500; lower it on "
                        "brokers that hold a fetch for its whole wait)")


def _job(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tz", help=f"the plant's time zone, e.g. Europe/Lisbon (or {TZ_ENV})")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `mes` and its subcommands."""
    top = subparsers.add_parser("mes", help="MES side: production units, day reports, endpoints")
    sub = top.add_subparsers(dest="mes_command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("init", help="create the reference MES schema and the token key")
    _db(p)

    p = sub.add_parser("token", help="the token store")
    tsub = p.add_subparsers(dest="token_command", metavar="COMMAND")
    tsub.required = True
    t = tsub.add_parser("master", help=f"store the Master token, read from stdin (or {TOKEN_ENV})")
    _db(t)
    t.add_argument("--public-key", help="the MES agent's public key")
    t.add_argument("--name", help="a label")
    t = tsub.add_parser("list", help="the stored identities, secrets left out")
    _db(t)

    p = sub.add_parser("unit", help="production units")
    usub = p.add_subparsers(dest="unit_command", metavar="COMMAND")
    usub.required = True
    u = usub.add_parser("add", help="add a production unit")
    _db(u)
    u.add_argument("unit_id", type=int)
    u.add_argument("code", help="the unit's code (its record id on the chain), e.g. PT10")
    u = usub.add_parser("set", help="change a unit's status and/or process name (queued for "
                                    "the chain; `mes serve` sends it)")
    _db(u)
    u.add_argument("unit_id", type=int)
    u.add_argument("--status")
    u.add_argument("--process-name")
    u = usub.add_parser("list", help="the units with their values and what was sent")
    _db(u)

    p = sub.add_parser("shift", help="record one shift's inputs of the day report")
    _db(p)
    p.add_argument("unit_id", type=int)
    p.add_argument("day", type=dt.date.fromisoformat, help="production day, YYYY-MM-DD")
    p.add_argument("shift", choices=("A", "B", "C"))
    for name, what in (("length", "shift length"), ("planned-stop", "planned stop time"),
                       ("unplanned-stop", "unplanned stop time"), ("repair", "failure downtime"),
                       ("ideal-time", "sum of ideal cycle time x count")):
        p.add_argument(f"--{name}", default="0", help=f"{what}, minutes")
    for name in ("failures", "total", "good"):
        p.add_argument(f"--{name}", type=int, default=0)

    p = sub.add_parser("serve", help="the MES HTTP endpoints, the unit sender and the 09:30 job")
    _db(p)
    _kafka(p)
    _job(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8490)
    p.add_argument("--no-scheduler", action="store_true", help="no day-report job here")

    p = sub.add_parser("publish", help="run the day-report job once now (needs the lease)")
    _db(p)
    _kafka(p)
    _job(p)

    if bridge_cli is not None:
        bridge_cli.add_parser(sub)


# -- helpers ----------------------------------------------------------------------------------


def _engine(args: argparse.Namespace) -> Engine:
    url = args.db or os.environ.get(DB_ENV)
    if not url:
        raise MesCliError(f"no MES database: give --db URL or set {DB_ENV}")
    try:
        return create_engine(url, pool_pre_ping=True)
    except (SQLAlchemyError, ValueError, ImportError) as exc:
        raise MesCliError(f"cannot use database URL: {exc}") from None


def _tokens(args: argparse.Namespace, engine: Engine):
    from mes.tokens import TokenStore, load_key

    return TokenStore(engine, load_key(args.key_file or _default_key_file()))


def _zone(args: argparse.Namespace) -> ZoneInfo:
    name = args.tz or os.environ.get(TZ_ENV)
    if not name:
        raise MesCliError(f"the day-report job needs the plant's time zone: --tz or {TZ_ENV}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise MesCliError(f"unknown time zone {name!r}") from None


def _kafka_address(args: argparse.Namespace) -> str:
    address = args.kafka or os.environ.get(KAFKA_ENV)
    if not address:
        raise MesCliError(f"no Kafka broker: give --kafka HOST:PORT or set {KAFKA_ENV}")
    return address


def _fetch_wait(args: argparse.Namespace) -> int:
    if not 1 <= args.fetch_wait_ms <= 10_000:
        raise MesCliError("--fetch-wait-ms must be from 1 to 10000")
    return int(args.fetch_wait_ms)


def _print(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


def _minutes(text: str, what: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise MesCliError(f"{what} must be a number of minutes") from None
    if not value.is_finite() or value < 0:
        raise MesCliError(f"{what} must be a non-negative number of minutes")
    return value


# -- commands ---------------------------------------------------------------------------------


def _init(args: argparse.Namespace, engine: Engine) -> int:
    from mes import schema
    from mes.tokens import KEY_ENV, create_key_file

    schema.create_all(engine)
    out: dict[str, Any] = {"tables": [t.name for t in schema.TABLES]}
    if os.environ.get(KEY_ENV):
        out["key"] = KEY_ENV
    else:
        path = Path(args.key_file or _default_key_file())
        out["key_file"] = str(path)
        out["key_created"] = create_key_file(path)
    _print(out)
    return 0


def _token_line(line: str) -> str:
    """The token of a line on stdin: the token itself, or the JSON object that
    `chainmill mes bridge CHAIN --issue-master-token NAME` prints (so the two can be piped)."""
    line = line.strip()
    if line.startswith("{"):
        try:
            issued = json.loads(line)
        except ValueError:
            raise MesCliError("stdin: neither a token nor the bridge's JSON answer") from None
        token = issued.get("token") if isinstance(issued, dict) else None
        if not isinstance(token, str) or not token:
            raise MesCliError('stdin: the JSON object has no "token"')
        return token
    return line


def _token(args: argparse.Namespace, engine: Engine) -> int:
    store = _tokens(args, engine)
    if args.token_command == "master":
        secret = os.environ.get(TOKEN_ENV) or _token_line(sys.stdin.readline())
        if not secret:
            raise MesCliError(f"no token: write it to stdin or set {TOKEN_ENV}")
        store.set_master(secret, public_key=args.public_key, name=args.name)
        _print({"stored": "Master", "public_key": args.public_key})
        return 0
    _print([{"tipoInstancia": t.tipo_instancia, "publicKey": t.public_key, "record_id": t.record_id,
             "name": t.name, "unit_id": t.unit_id, "has_token": bool(t.token)}
            for t in store.list()])
    return 0


def _unit(args: argparse.Namespace, engine: Engine) -> int:
    from mes import schema
    from mes.dayreport.ids import check_unit_code
    from mes.units import UnitUpdater

    u, sent = schema.production_unit, schema.unit_sent
    if args.unit_command == "add":
        check_unit_code(args.code)
        try:
            with engine.begin() as conn:
                conn.execute(u.insert().values(unit_id=args.unit_id, code=args.code, updated_at=0))
        except IntegrityError:
            raise MesCliError(f"unit {args.unit_id} or code {args.code} exists already") from None
        _print({"productionunit_id": args.unit_id, "code": args.code})
        return 0
    if args.unit_command == "set":
        updater = UnitUpdater(engine)
        with engine.begin() as conn:
            row_id = updater.enqueue(conn, args.unit_id, args.status, args.process_name)
            values = {k: v for k, v in (("status", args.status), ("process_name", args.process_name))
                      if v is not None}
            conn.execute(update(u).where(u.c.unit_id == args.unit_id)
                         .values(**values, updated_at=updater.clock()))
        _print({"productionunit_id": args.unit_id, "queued": row_id})
        return 0
    with engine.connect() as conn:
        rows = conn.execute(select(u, sent.c.status.label("sent_status"),
                                   sent.c.process_name.label("sent_process_name"),
                                   sent.c.txid.label("sent_txid"))
                            .outerjoin(sent, sent.c.unit_id == u.c.unit_id)
                            .order_by(u.c.unit_id)).mappings().all()
    _print([dict(r) for r in rows])
    return 0


def _shift(args: argparse.Namespace, engine: Engine) -> int:
    from mes import schema
    from mes.dayreport.indicators import IndicatorError, ShiftData

    values = {"shift_length": _minutes(args.length, "--length"),
              "planned_stop": _minutes(args.planned_stop, "--planned-stop"),
              "unplanned_stop": _minutes(args.unplanned_stop, "--unplanned-stop"),
              "repair_time": _minutes(args.repair, "--repair"),
              "ideal_time": _minutes(args.ideal_time, "--ideal-time"),
              "failures": args.failures, "total_count": args.total, "good_count": args.good}
    try:
        ShiftData(**values)  # the formulas' own checks, before anything is written
    except IndicatorError as exc:
        raise MesCliError(str(exc)) from None
    s, r = schema.shift_record, schema.day_report
    with engine.begin() as conn:
        if conn.execute(select(schema.production_unit.c.unit_id)
                        .where(schema.production_unit.c.unit_id == args.unit_id)).first() is None:
            raise MesCliError(f"no production unit {args.unit_id}")
        key = (s.c.unit_id == args.unit_id) & (s.c.day == args.day) & (s.c.shift == args.shift)
        if conn.execute(select(s.c.id).where(key)).first() is None:
            conn.execute(s.insert().values(unit_id=args.unit_id, day=args.day, shift=args.shift,
                                           **values))
        else:
            conn.execute(update(s).where(key).values(**values))
        shifts = {row.shift for row in conn.execute(
            select(s.c.shift).where(s.c.unit_id == args.unit_id, s.c.day == args.day))}
        finished = shifts == {"A", "B", "C"}
        report = (r.c.unit_id == args.unit_id) & (r.c.day == args.day)
        if conn.execute(select(r.c.id).where(report)).first() is None:
            conn.execute(r.insert().values(unit_id=args.unit_id, day=args.day, finished=finished))
        else:
            conn.execute(update(r).where(report).values(finished=finished))
    _print({"unit_id": args.unit_id, "day": args.day.isoformat(), "shift": args.shift,
            "report_finished": finished})
    return 0


def _scheduler(args: argparse.Namespace, engine: Engine, tokens: Any, bridge: Any):
    from mes.daily import DayReportPublisher, DayReportScheduler, SchedulerLock, default_holder

    publisher = DayReportPublisher(engine, tokens, bridge, _zone(args))
    return DayReportScheduler(publisher, SchedulerLock(engine, default_holder()))


def _check_schema(engine: Engine) -> None:
    from sqlalchemy import inspect

    from mes import schema

    missing = [t.name for t in schema.TABLES if not inspect(engine).has_table(t.name)]
    if missing:
        raise MesCliError(f"the MES database lacks {', '.join(missing)}: run chainmill mes init")


def _serve(args: argparse.Namespace, engine: Engine) -> int:
    from aiohttp import web

    from mes.service import LazyBridge, MesService, build_app

    _check_schema(engine)
    tokens = _tokens(args, engine)
    kafka = _kafka_address(args)
    scheduler_args = None if args.no_scheduler else _zone(args)

    async def main() -> None:
        bridge = LazyBridge(kafka, args.client_id, args.timeout, fetch_wait_ms=_fetch_wait(args))
        scheduler = None if scheduler_args is None else _scheduler(args, engine, tokens, bridge)
        service = MesService(engine, tokens, bridge, scheduler=scheduler)
        runner = web.AppRunner(build_app(service))
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise MesCliError(f"cannot listen on {args.host}:{args.port}: {exc}") from None
        print(f"MES service on http://{args.host}:{args.port}/ (bridge via {kafka})", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
    return 0


def _publish(args: argparse.Namespace, engine: Engine) -> int:
    from mes.service import LazyBridge

    _check_schema(engine)
    tokens = _tokens(args, engine)
    kafka = _kafka_address(args)

    async def main() -> dict[str, Any]:
        bridge = LazyBridge(kafka, args.client_id, args.timeout, fetch_wait_ms=_fetch_wait(args))
        scheduler = _scheduler(args, engine, tokens, bridge)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args.timeout
        try:
            # A scheduled run of `mes serve` may hold the lease for its few seconds: wait.
            while not (ran := await scheduler.tick("manual")) and loop.time() < deadline:
                await asyncio.sleep(0.5)
        finally:
            await bridge.close()
            scheduler.lock.release()
        if not ran:
            raise MesCliError("another process holds the day-report scheduler lease")
        from mes import schema

        with engine.connect() as conn:
            rows = conn.execute(select(schema.publication).order_by(schema.publication.c.flow_id)
                                ).mappings().all()
        return {"reports": [{"flow_id": r["flow_id"], "status": r["status"],
                             "txids": json.loads(r["txids"])} for r in rows]}

    _print(asyncio.run(main()))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run one `mes` subcommand."""
    if args.mes_command == "bridge":
        return bridge_cli.run(args)  # type: ignore[union-attr]
    engine = _engine(args)
    try:
        handler = {"init": _init, "token": _token, "unit": _unit, "shift": _shift,
                   "serve": _serve, "publish": _publish}[args.mes_command]
        try:
            return handler(args, engine)
        except SQLAlchemyError as exc:
            raise MesCliError(f"MES database: {exc.__class__.__name__}: "
                              f"{str(exc).splitlines()[0]}") from None
    finally:
        engine.dispose()
