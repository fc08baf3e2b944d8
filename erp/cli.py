"""`chainmill erp ...`: the supply-chain ledger and partner/order requests from the shell.

Set-up: `init` (tables, stream, this company's agent; records the database in erp.conf),
`follow` (keep the projection current; `--once` for one pass). Publishing commands check
the action first and publish nothing when the rules refuse it; with `--wait` they follow
until the action is projected and fail if the projection rejected it. Results are JSON on
stdout. Registered through the `chainmill.commands` entry-point group.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine

from erp import rules, settings
from erp.api import Erp
from erp.errors import ActionRefused, ErpError

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def _common(p: argparse.ArgumentParser, *, chain_option: bool = True) -> None:
    if chain_option:
        p.add_argument("--chain", help="chain name (default: the one chain with an erp.conf)")
    p.add_argument("--db", help="SQLAlchemy URL of the projection database")
    p.add_argument("--datadir", help="node data directory (default ~/.chainmill)")
    p.add_argument("--stream", help="the actions stream (default supplychain)")
    p.add_argument("--address", help="act from this wallet address (default: the node's first)")


def _publishing(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--wait", action="store_true",
                   help="follow until the action is projected; fail if it was rejected")
    p.add_argument("--timeout", type=float, default=120, help="seconds --wait may take")


def _response(text: str) -> int:
    if text not in ("0", "1"):
        raise argparse.ArgumentTypeError("response must be 1 (accept) or 0 (reject)")
    return int(text)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `erp` and its subcommands."""
    top = subparsers.add_parser("erp", help="supply-chain records, partner and order requests")
    sub = top.add_subparsers(dest="erp_command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("init", help="create the tables, the stream and this company's agent")
    _common(p)
    p.add_argument("--agent-name", help="register this address as an agent with this name")

    p = sub.add_parser("follow", help="keep the projection current with the chain")
    p.add_argument("chain", nargs="?")
    _common(p, chain_option=False)
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.add_argument("--interval", type=float, default=0.2, help="seconds between polls")
    p.add_argument("--batch", type=int, default=500, help="items per page (one transaction)")

    p = sub.add_parser("digest", help="the projection's state digest")
    _common(p)
    p = sub.add_parser("whoami", help="the acting address and its public key")
    _common(p)

    p = sub.add_parser("agent", help="register the acting address as an agent")
    _publishing(p)
    p.add_argument("name")

    p = sub.add_parser("record-type", help="create a record type")
    _publishing(p)
    p.add_argument("name")
    p.add_argument("--property", action="append", default=[], metavar="NAME:TYPE[:required]",
                   help=f"a property schema; TYPE is one of {', '.join(rules.DATA_TYPES)}")

    p = sub.add_parser("record", help="create a record")
    _publishing(p)
    p.add_argument("record_id")
    p.add_argument("--type", required=True, dest="record_type")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")

    p = sub.add_parser("update", help="report property values of a record")
    _publishing(p)
    p.add_argument("record_id")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", required=True)

    p = sub.add_parser("finalize", help="finalize a record")
    _publishing(p)
    p.add_argument("record_id")

    p = sub.add_parser("propose", help="offer a role on a record to another agent")
    _publishing(p)
    p.add_argument("record_id")
    p.add_argument("--to", required=True, dest="receiving_agent", metavar="PUBLIC_KEY")
    p.add_argument("--role", required=True, choices=rules.ROLES)
    p.add_argument("--property", action="append", default=[], help="for REPORTER")
    p.add_argument("--terms", default="")

    p = sub.add_parser("answer-proposal", help="accept, reject or cancel a proposal")
    _publishing(p)
    p.add_argument("record_id")
    p.add_argument("--to", required=True, dest="receiving_agent", metavar="PUBLIC_KEY")
    p.add_argument("--role", required=True, choices=rules.ROLES)
    p.add_argument("--response", required=True, choices=("ACCEPT", "REJECT", "CANCEL"))

    p = sub.add_parser("revoke", help="revoke a reporter")
    _publishing(p)
    p.add_argument("record_id")
    p.add_argument("--reporter", required=True, metavar="PUBLIC_KEY")
    p.add_argument("--property", action="append", default=[], required=True)

    p = sub.add_parser("partner-request", help="ask another agent for a partnership")
    _publishing(p)
    p.add_argument("receiving_agent", metavar="PUBLIC_KEY")

    p = sub.add_parser("order", help="send an action (order) request to a partner")
    _publishing(p)
    p.add_argument("receiving_agent", metavar="PUBLIC_KEY")
    p.add_argument("--type", required=True, dest="action_type")
    p.add_argument("--description", default="")
    p.add_argument("--metadata", default="{}", help="a JSON object")
    p.add_argument("--file", action="append", default=[], help="attach a file")

    for name, what in (("partner-requests", "partner requests"), ("orders", "action requests")):
        p = sub.add_parser(name, help=f"list {what} received (newest first)")
        _common(p)
        p.add_argument("--start", type=int, default=0)
        p.add_argument("--limit", type=int, default=10)
        p.add_argument("--issued", action="store_true", help="the ones this agent sent")

    for name, what in (("answer-partner", "a partner request"), ("answer-order", "an order")):
        p = sub.add_parser(name, help=f"answer {what}: 1 accepts, 0 rejects")
        _publishing(p)
        p.add_argument("id", help="the request id (answer-partner: or the issuer's public key)")
        p.add_argument("response", type=_response)

    p = sub.add_parser("rfq-demo", help="RFQ -> quotation between three companies on a "
                                        "local cluster (chainmill cluster up 3)")
    p.add_argument("--datadir", help="data directory holding the cluster (default ~/.chainmill)")
    p.add_argument("--cluster", help="cluster directory (default DATADIR/cluster)")
    p.add_argument("--workdir", help="where the three SQLite databases and key pairs go "
                                     "(default: a new directory in the cluster directory)")
    p.add_argument("--timeout", type=float, default=180)

    p = sub.add_parser("show", help="an object with its history and txids")
    _common(p)
    p.add_argument("kind", choices=("agent", "record_type", "record", "partner_request",
                                    "action_request", "order"))
    p.add_argument("id")


# -- running ------------------------------------------------------------------------------


def _open(args: argparse.Namespace, batch: int) -> tuple[Erp, settings.Settings]:
    chain = getattr(args, "chain", None)
    resolved = settings.resolve(chain, args.datadir, args.db, args.stream, args.address)
    from node.client import RpcClient

    client = RpcClient.from_datadir(resolved.chain, resolved.datadir)
    engine = create_engine(resolved.db_url, pool_pre_ping=True)
    if not 1 <= batch <= 10_000:
        raise ErpError("--batch must be between 1 and 10000")
    erp = Erp(engine, client, stream=resolved.stream, address=resolved.address, batch_size=batch)
    return erp, resolved


def _print(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=True, ensure_ascii=False)
    sys.stdout.write("\n")


def _parse_value(text: str, data_type: str) -> Any:
    try:
        if data_type == "INT":
            return int(text)
        if data_type == "FLOAT":
            return float(text)
        if data_type == "LOCATION":
            lat, lon = text.split(",")
            return {"latitude": int(lat), "longitude": int(lon)}
    except ValueError:
        raise ErpError(f"{text!r} is not a {data_type} value") from None
    return text


def _values(erp: Erp, record_type: str, pairs: list[str]) -> dict[str, Any]:
    rtype = erp.current("record_types", (record_type,))
    if rtype is None:
        raise ActionRefused(f"record type {record_type!r} does not exist")
    types = {p["name"]: p["data_type"] for p in rtype["properties"]}
    out = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep:
            raise ErpError(f"--set takes NAME=VALUE, not {pair!r}")
        out[name] = _parse_value(text, types.get(name, "STRING"))
    return out


def _schemas(specs: list[str]) -> list[dict[str, Any]]:
    out = []
    for spec in specs:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "required"):
            raise ErpError(f"--property takes NAME:TYPE[:required], not {spec!r}")
        out.append({"name": parts[0], "data_type": parts[1].upper(), "required": len(parts) == 3})
    return out


def _file(path: str) -> dict[str, Any]:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ErpError(f"cannot read {path}: {exc.strerror}") from None
    return {"file_name": Path(path).name, "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data), "base64": base64.b64encode(data).decode("ascii")}


def _publish(erp: Erp, args: argparse.Namespace) -> dict[str, Any]:
    c = args.erp_command
    if c == "agent":
        return erp.create_agent(args.name)
    if c == "record-type":
        return erp.create_record_type(args.name, _schemas(args.property))
    if c == "record":
        return erp.create_record(args.record_id, args.record_type,
                                 _values(erp, args.record_type, args.set))
    if c == "update":
        record = erp.current("records", (args.record_id,))
        if record is None:
            raise ActionRefused(f"record {args.record_id!r} does not exist")
        return erp.update_properties(args.record_id, _values(erp, record["record_type"], args.set))
    if c == "finalize":
        return erp.finalize_record(args.record_id)
    if c == "propose":
        return erp.create_proposal(args.record_id, args.receiving_agent, args.role,
                                   args.property, args.terms)
    if c == "answer-proposal":
        return erp.answer_proposal(args.record_id, args.receiving_agent, args.role,
                                   args.response)
    if c == "revoke":
        return erp.revoke_reporter(args.record_id, args.reporter, args.property)
    if c == "partner-request":
        return erp.create_partner_request(args.receiving_agent)
    if c == "order":
        try:
            metadata = json.loads(args.metadata)
        except ValueError as exc:
            raise ErpError(f"--metadata is not JSON: {exc}") from None
        return erp.create_action(args.receiving_agent, args.action_type, args.description,
                                 metadata, [_file(f) for f in args.file])
    if c == "answer-partner":
        return erp.answer_partner_request(args.id, args.response)
    if c == "answer-order":
        return erp.answer_action(args.id, args.response)
    raise ErpError(f"unknown erp command {c!r}")  # pragma: no cover


def _rfq_demo(args: argparse.Namespace) -> int:
    """The spec 2.5 story on nodes 1-3 of a local cluster: B on node1, S1, S2 on node2, 3."""
    import time

    from config.paths import resolve_datadir
    from erp import rfq_demo
    from node.client import RpcClient

    cluster = Path(args.cluster) if args.cluster else resolve_datadir(args.datadir) / "cluster"
    try:
        nodes = json.loads((cluster / "cluster.json").read_text(encoding="utf-8"))["nodes"]
    except (OSError, ValueError, KeyError) as exc:
        raise ErpError(f"no cluster in {cluster} (start one: chainmill cluster up 3): {exc}") \
            from None
    if len(nodes) < 3:
        raise ErpError(f"the cluster in {cluster} has {len(nodes)} nodes; the story needs 3")
    work = Path(args.workdir) if args.workdir else cluster / f"rfq-demo-{int(time.time())}"
    work.mkdir(parents=True, exist_ok=False, mode=0o700)
    companies = []
    for (name, pid), node in zip((("B", 4711), ("S1", 5120), ("S2", 6003)), nodes, strict=False):
        client = RpcClient.from_datadir(node["chain"], node["datadir"])
        companies.append(rfq_demo.Company(
            name, pid, create_engine(f"sqlite:///{work / name}.db"), client,
            str(client.call("getaddresses")[0]), work / f"keys-{name}"))
    result = rfq_demo.run(companies, nodes[0]["chain"], timeout=args.timeout)
    own = {c.name: sorted(str(r["quotation_id"]) for r in result[c.name]["quotation_header"])
           for c in companies}
    _print({"workdir": str(work), "buyer_comparison": rfq_demo.comparison(result, "B"),
            "quotations_readable_by": own, "receivers": result["receivers"]})
    return 0


def run(args: argparse.Namespace) -> int:
    """Run one `erp` subcommand."""
    if args.erp_command == "rfq-demo":
        return _rfq_demo(args)
    erp, resolved = _open(args, getattr(args, "batch", 500))
    try:
        return _run(erp, resolved, args)
    finally:
        erp.engine.dispose()


def _run(erp: Erp, resolved: settings.Settings, args: argparse.Namespace) -> int:
    c = args.erp_command
    if c == "init":
        txid = erp.init(args.agent_name)
        settings.write(settings.Settings(resolved.chain, resolved.db_url, resolved.stream,
                                         resolved.address, resolved.datadir))
        _print({"address": erp.address, "public_key": erp.public_key, "stream": erp.stream,
                "agent_txid": txid})
    elif c == "follow":
        if args.once:
            _print({"processed": erp.follow(), **erp.digest()})
        else:
            stop = threading.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
            erp.projection.create()
            log.info("following %s on %s", erp.stream, resolved.chain)
            erp.follow_forever(stop, args.interval)
    elif c == "digest":
        _print(erp.digest())
    elif c == "whoami":
        _print({"address": erp.address, "public_key": erp.public_key})
    elif c in ("partner-requests", "orders"):
        lister = erp.list_partner_requests if c == "partner-requests" else erp.list_actions
        _print(lister(args.start, args.limit, issued=args.issued))
    elif c == "show":
        _print(erp.show(args.kind, args.id))
    else:
        erp.follow()  # check against the newest final state, even without a running follower
        result = _publish(erp, args)
        if args.wait:
            verdict = erp.wait(result["txid"], timeout=args.timeout)
            result.update(status=verdict["status"], reason=verdict["reason"])
            _print(result)
            if verdict["status"] != "applied":
                raise ActionRefused(f"the projection rejected {result['txid']}: "
                                    f"{verdict['reason']}")
        else:
            _print(result)
    return 0
