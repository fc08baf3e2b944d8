"""Helpers for the trigger functional tests: two real nodes of one chain, application databases
bound to them, the walletnotify hook, waits.

Nodes are framework.py's `TestNode`s (child processes of the test, stopped by the harness,
their directory kept on failure): node 1 creates the chain and mines; node 2 joins through it
(``chainmill start CHAIN@127.0.0.1:PORT``) and is granted connect, send and receive only, so
node 1 keeps mining while node 2 is down. Each application database (an `Instance`) is bound
to one node: its relay publishes there, its receiver reads there, its address is one of that
node's. The triggers reach a node only through its JSON-RPC client, like in production.
"""

from __future__ import annotations

import datetime as dt
import logging
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framework import (
    DEFAULT_TIMEOUT,
    Harness,
    TestNode,
    chainmill_command,
    child_env,
    scaled,
    sync_blocks,
)
from framework import wait_until as _wait_until
from network_support import add_joiner, peer_addresses, wait_confirmed
from sqlalchemy import MetaData, event, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from config.runtime import read_conf_file, write_conf_file
from triggers import configure, crypto, schema
from triggers.catalog import Catalog
from triggers.keys_command import ensure_system_streams, publish_public_key
from triggers.tools import rfq

log = logging.getLogger("trigger_functional")

TRIGGER_BLOCK_TIME = 0.2
PARTNER_GRANTS = "connect,send,receive"


def wait_until(predicate: Any, timeout: float = DEFAULT_TIMEOUT, what: str = "condition",
               interval: float = 0.05) -> Any:
    """framework.wait_until with the trigger tests' positional (timeout, what)."""
    return _wait_until(predicate, timeout=timeout, msg=what, interval=interval)


class LiveClient:
    """The RPC client of a node as it is *now*: a node restarted by the test gets a new client
    (and maybe new ports), and relays and receivers running in threads follow it."""

    def __init__(self, node: TestNode) -> None:
        self.node = node

    def call(self, method: str, *params: Any) -> Any:
        return self.node.rpc.call(method, *params)

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        return self.node.rpc.batch(calls)

    @property
    def port(self) -> int:
        return self.node.rpcport


def two_nodes(harness: Harness, chain: str, streams: Sequence[str] = ("rfq",),
              block_time: float = TRIGGER_BLOCK_TIME) -> tuple[TestNode, TestNode]:
    """Node 1 creates `chain` and `streams` (and pubkeys, access); node 2 joins, is granted
    connect,send,receive, connects, and follows the streams. Returns once both agree."""
    n1 = harness.add_node(chain=chain, block_time=block_time)
    n1.start()
    n2 = add_joiner(harness, n1)
    n2.start()
    pin_ports(n2)
    txids = [n1.grant(n2.address, PARTNER_GRANTS)]
    txids += [n1.create("stream", s, True) for s in streams]
    ensure_system_streams(n1.rpc)
    wait_linked(n1, n2)
    wait_confirmed([n1, n2], *txids, timeout=60)
    sync_blocks([n1, n2])
    n2.subscribe([*streams, "pubkeys", "access"])
    log.info("two nodes of %s: node1 %s (mines), node2 %s", chain, n1.getaddresses()[0],
             n2.address)
    return n1, n2


def wait_linked(a: TestNode, b: TestNode, timeout: float = 60) -> None:
    """Wait until a and b have a handshaken connection (either side may have dialled)."""
    addr_a, addr_b = a.getaddresses()[0], b.getaddresses()[0]
    wait_until(lambda: addr_b in peer_addresses(a) and addr_a in peer_addresses(b), timeout,
               f"node{a.index} and node{b.index} to connect")


def restart(node: TestNode, peer: TestNode) -> None:
    """Start a stopped node again and wait until it is connected to `peer` and synced."""
    node.start()
    pin_ports(node)
    wait_linked(node, peer)
    sync_blocks([node, peer], timeout=60)


def pin_ports(node: TestNode) -> None:
    """Make the node's chainmill.conf name the ports it runs on, so that programs finding the
    node through its data directory (`chainmill receive` as a hook) reach it."""
    values = read_conf_file(node.conf_path)
    wanted = {"port": [str(node.port)], "rpcport": [str(node.rpcport)]}
    if any(values.get(k) != v for k, v in wanted.items()):
        values.update(wanted)
        write_conf_file(node.conf_path, values)


def set_walletnotify(node: TestNode, line: str) -> None:
    """Put `walletnotify=line` into the (stopped) node's chainmill.conf."""
    values = read_conf_file(node.conf_path)
    values["walletnotify"] = [line]
    write_conf_file(node.conf_path, values)


def receive_hook(node: TestNode) -> str:
    """The walletnotify line running `chainmill receive` for the node's chain, finding the
    application database through the node's data directory (its triggers.conf)."""
    return shlex.join([*chainmill_command(), "receive", node.chain]) + " %s %n " + shlex.join(
        ["--datadir", str(node.datadir)])


def chainmill_cli(*argv: str) -> str:
    """Run a chainmill command of this source tree; its stdout (fails on a non-zero exit)."""
    import subprocess

    done = subprocess.run([*chainmill_command(), *argv], capture_output=True, text=True,
                          env=child_env(), stdin=subprocess.DEVNULL, timeout=scaled(120))
    if done.returncode != 0:
        raise AssertionError(f"chainmill {' '.join(argv[:2])} failed ({done.returncode}):\n"
                             f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


def db_url(engine: Engine) -> str:
    """The engine's URL with its password, for a command that opens the database itself."""
    return engine.url.render_as_string(hide_password=False)


@dataclass
class Instance:
    """One application database bound to a node, with its own address and key pair."""

    name: str
    engine: Engine
    node: TestNode
    address: str
    keys: crypto.KeyPair

    @property
    def client(self) -> LiveClient:
        return LiveClient(self.node)


def make_instance(
    name: str,
    engine: Engine,
    node: TestNode,
    keydir: Path,
    participant_id: int,
    address: str | None = None,
    streams: tuple[str, ...] = ("rfq",),
) -> Instance:
    """Trigger tables, a key pair published on pubkeys from the instance's address, the chain
    and its streams. `address`: one of the node's (default: a new one, granted
    connect,send,receive)."""
    if address is None:
        address = node.getnewaddress()
        txid = node.grant(address, PARTNER_GRANTS)
        node.wait_for_confirmation(txid)
    pair = crypto.write_keypair(keydir, crypto.generate_keypair())
    txid = publish_public_key(node.rpc, address, pair.public_pem)
    node.wait_for_confirmation(txid)
    configure.init(engine, participant_id)
    with engine.connect() as conn:
        try:
            configure.get_chain(conn, node.chain)
            known = True
        except configure.ConfigurationInvalid:
            known = False
    if not known:
        configure.add_chain(
            engine, node.chain, chain_desc=name, rpc_host="127.0.0.1", rpc_port=node.rpcport,
            public_key=str(pair.public_path), private_key=str(pair.private_path),
        )
    for stream in streams:
        configure.add_stream(engine, node.chain, stream)
    return Instance(name, engine, node, address, pair)


def register_nodes(instances: list[Instance]) -> None:
    """Each instance knows every instance's address; its own one is `is_mine`."""
    for inst in instances:
        for other in instances:
            configure.add_node(
                inst.engine, inst.node.chain, other.address, is_mine=other is inst,
                ip_address="::1" if other is inst else "127.0.0.1",
            )


def wait_seen(nodes: Sequence[TestNode], *txids: str) -> None:
    """Every txid confirmed on every node."""
    wait_confirmed(list(nodes), *txids, timeout=60)


# -- the RFQ example (buyer -> supplier) ------------------------------------------------------

RFQ_TABLES = ("party", "product", "request_header", "request_item")


def foreign_keys_on(engine: Engine) -> None:
    """SQLite enforces foreign keys (and cascades) only when asked, per connection."""
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA foreign_keys=ON"))


def rfq_rows(engine: Engine, md: MetaData) -> dict[str, list]:
    """Every row of the RFQ tables, by primary key."""
    with engine.connect() as conn:
        return {
            t: conn.execute(select(md.tables[t]).order_by(*md.tables[t].primary_key.columns)).all()
            for t in RFQ_TABLES
        }


def rfq_trigger(engine: Engine, chain: str, with_tree: bool = True) -> int:
    """The buyer's trigger on request_header with party (parent) and request_item (child,
    with product as its parent) in the related-table tree."""
    catalog = Catalog(engine)
    trigger_id = configure.add_trigger(
        engine, catalog, subsys_dir="proc", table_id="request_header", chain_id=chain,
        stream_id="rfq",
    )
    if with_tree:
        configure.add_related(engine, catalog, trigger_id, "party", "parent",
                              fk_columns="party_id_buyer")
        item = configure.add_related(engine, catalog, trigger_id, "request_item", "child")
        configure.add_related(engine, catalog, trigger_id, "product", "parent", node_id_snr=item)
    return trigger_id


def outbox_statuses(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(schema.outbox.c.status)
                                 .order_by(schema.outbox.c.sequence)).scalars())


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)


class RfqStory:
    """The buyer's changes, phase by phase, each ending when the supplier's rows equal the
    buyer's: insert a header with two items and its party and products; update its status
    and attach the specification file; delete it (the partner's foreign keys cascade)."""

    REQUEST = 471100000000000000000000000015

    def __init__(self, buyer: Engine, md_buyer: MetaData, supplier: Engine,
                 md_supplier: MetaData, timeout: float = 60) -> None:
        self.a, self.md_a, self.b, self.md_b = buyer, md_buyer, supplier, md_supplier
        self.timeout = timeout

    def replicated(self, what: str) -> None:
        wait_until(lambda: rfq_rows(self.b, self.md_b) == rfq_rows(self.a, self.md_a),
                   self.timeout, f"{what} replicated", interval=0.1)

    def insert(self) -> None:
        log.info("insert a header with two items (ORM session, one transaction)")
        rows = rfq.sample_rows(self.REQUEST)
        with self.a.begin() as conn:
            conn.execute(self.md_a.tables["party"].insert(), rows["party"])
            conn.execute(self.md_a.tables["product"].insert(), rows["product"])
        with Session(self.a) as session, session.begin():
            session.execute(self.md_a.tables["request_header"].insert(), rows["request_header"])
            session.execute(self.md_a.tables["request_item"].insert(), rows["request_item"])

    def update(self) -> None:
        log.info("update status and attach the specification file")
        header = self.md_a.tables["request_header"]
        with self.a.begin() as conn:
            conn.execute(
                header.update()
                .where(header.c.request_id == self.REQUEST)
                .values(status="Sent to Supplier", spec_file_body=rfq.SPEC_PDF,
                        revised_date=dt.datetime(2024, 3, 5, 8, 0, 0))
            )

    def file_arrived(self) -> None:
        with self.b.connect() as conn:
            body = conn.execute(select(self.md_b.tables["request_header"].c.spec_file_body)).scalar()
        assert body == rfq.SPEC_PDF

    def delete(self, request: int | None = None) -> None:
        log.info("delete a header; the partner's foreign keys cascade to its items")
        header = self.md_a.tables["request_header"]
        with self.a.begin() as conn:
            conn.execute(header.delete().where(header.c.request_id == (request or self.REQUEST)))

    def more(self, first: int, n: int) -> list[int]:
        """n more headers with their items, one transaction each; their request ids."""
        ids = []
        for number in range(first, first + n):
            rows = rfq.sample_rows(471100000000000000000000000100 + number)
            with self.a.begin() as conn:
                conn.execute(self.md_a.tables["request_header"].insert(), rows["request_header"])
                conn.execute(self.md_a.tables["request_item"].insert(), rows["request_item"])
            ids.append(rows["request_header"][0]["request_id"])
        return ids

    def set_status(self, request: int, status: str) -> None:
        header = self.md_a.tables["request_header"]
        with self.a.begin() as conn:
            conn.execute(header.update().where(header.c.request_id == request)
                         .values(status=status))
