"""The spec 2.5 story end to end: buyer B asks suppliers S1 and S2, both quote, B compares.

`run(companies)` takes three companies (B first), each an application database bound to its
own node through JSON-RPC, sets up their trigger configuration (key pairs on `pubkeys`,
streams `rfq` and `quotation`, the three member addresses), runs a relay and a receiver per
company in threads, and plays the sequence of spec 2.5: B's RFQ (pending, then sent) reaches
S1 and S2 privately; each supplier's quotation in EUR reaches B only; B's after_receive
fills its exchange rate. It returns what each company holds, for printing or checking.
`chainmill erp rfq-demo` runs it on the first three nodes of `chainmill cluster up 3`.
"""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, event, select
from sqlalchemy.engine import Engine

from erp import rfq
from erp.errors import ErpError
from triggers import capture, configure, crypto, schema
from triggers.hooks import HookRegistry
from triggers.keys_command import ensure_system_streams, publish_public_key
from triggers.receiver import Receiver
from triggers.relay import Relay

__all__ = ["Company", "run", "RFQ_ID", "QUOTATION_IDS"]

log = logging.getLogger(__name__)

RFQ_ID = 471100000000000000000000000015
QUOTATION_IDS = (512000000000000000000000000003, 600300000000000000000000000041)
PRODUCTS = (471100000000000000000000000230, 471100000000000000000000000231)
QUANTITIES = (500, 120)
PRICES = ((decimal.Decimal("4.20"), decimal.Decimal("19.90")),
          (decimal.Decimal("4.05"), decimal.Decimal("21.50")))
SUPPLIER_HOME = (("GBP", decimal.Decimal("0.86")), ("CHF", decimal.Decimal("0.95")))
BUYER_HOME = "USD"
EUR_TO_BUYER_HOME = decimal.Decimal("1.080000")


@dataclass
class Company:
    """One instance: its database, its node's RPC client, the address it acts from."""

    name: str
    participant_id: int
    engine: Engine
    client: Any
    """A node.client.RpcClient (anything with call/batch)."""
    address: str
    keydir: Path
    md: MetaData = field(default_factory=MetaData)
    hooks: HookRegistry = field(default_factory=HookRegistry)


def _sqlite_foreign_keys(engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect",
                     lambda dbapi, _record: dbapi.execute("PRAGMA foreign_keys=ON"))


def _wait(condition: Callable[[], Any], what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    stop = threading.Event()
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ErpError(f"timed out after {timeout:g} s waiting for {what}")
        stop.wait(0.1)


def _rows(c: Company, table: str) -> list[dict[str, Any]]:
    t = c.md.tables[table]
    with c.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns))
                .mappings()]


def _outbox(c: Company) -> list[str]:
    with c.engine.connect() as conn:
        return list(conn.execute(select(schema.outbox.c.status)
                                 .order_by(schema.outbox.c.sequence)).scalars())


def setup(companies: list[Company], chain: str,
          observe: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Tables, key pairs, trigger configuration and hooks of the three companies."""
    buyer, *suppliers = companies
    ensure_system_streams(buyer.client)
    names = {s.get("name") for s in buyer.client.call("liststreams")}
    for stream in ("rfq", "quotation"):
        if stream not in names:
            buyer.client.call("create", "stream", stream, True)
    for c in companies:
        _sqlite_foreign_keys(c.engine)
        c.md = rfq.create_tables(c.engine)
        c.client.call("subscribe", ["rfq", "quotation", "pubkeys", "access"])
        pair = crypto.write_keypair(c.keydir, crypto.generate_keypair())
        publish_public_key(c.client, c.address, pair.public_pem)
        configure.init(c.engine, c.participant_id)
        configure.add_chain(c.engine, chain, chain_desc=c.name, rpc_host="127.0.0.1",
                            rpc_port=int(getattr(c.client, "port", 0) or 1),
                            public_key=str(pair.public_path),
                            private_key=str(pair.private_path))
        for stream in ("rfq", "quotation"):
            configure.add_stream(c.engine, chain, stream)
        for other in companies:
            configure.add_node(c.engine, chain, other.address, is_mine=other is c,
                               ip_address="::1" if other is c else "127.0.0.1")
    rfq.configure_buyer(buyer.engine, chain)
    with buyer.engine.begin() as conn:
        conn.execute(buyer.md.tables["currency_rate"].insert(), [
            {"from_currency": "EUR", "to_currency": BUYER_HOME, "rate": EUR_TO_BUYER_HOME}])
    buyer.hooks = rfq.buyer_hooks(buyer.engine, BUYER_HOME, buyer.hooks, observe)
    for s in suppliers:
        rfq.configure_supplier(s.engine, chain)
        s.hooks = rfq.supplier_hooks(s.hooks)
    for c in companies:
        capture.enable(c.engine)


def _send_rfq(buyer: Company, suppliers: list[Company]) -> None:
    t = buyer.md.tables
    with buyer.engine.begin() as conn:
        conn.execute(t["party"].insert(), [{"party_id": 471100000000000000000000000001,
                                            "party_name": "Buyer B"}])
        conn.execute(t["product"].insert(), [
            {"product_id": PRODUCTS[0], "product_name": "bolt M8", "uom_id": "EA"},
            {"product_id": PRODUCTS[1], "product_name": "bracket", "uom_id": "EA"}])
        conn.execute(t["request_header"].insert(), [{
            "request_id": RFQ_ID, "party_id_buyer": 471100000000000000000000000001,
            "contact_mech_id_blockchain": buyer.address, "request_date": dt.date(2024, 3, 4),
            "currency_code": "EUR", "status": "Pending"}])
    with buyer.engine.begin() as conn:
        conn.execute(t["request_item"].insert(), [
            {"request_id": RFQ_ID, "item_seq_no": n + 1, "product_id": PRODUCTS[n],
             "quantity": QUANTITIES[n]} for n in range(2)])
        conn.execute(t["request_supplier"].insert(), [
            {"request_id": RFQ_ID, "supplier_seq": n + 1,
             "contact_mech_id_blockchain": s.address} for n, s in enumerate(suppliers)])
    if _outbox(buyer):
        raise ErpError("a pending RFQ must not be sent")
    with buyer.engine.begin() as conn:
        conn.execute(t["request_header"].update().values(status=rfq.RFQ_SENT))


def _quote(s: Company, n: int) -> None:
    t = s.md.tables
    [header] = _rows(s, "request_header")
    home, rate = SUPPLIER_HOME[n]
    with s.engine.begin() as conn:
        conn.execute(t["quotation_header"].insert(), [{
            "quotation_id": QUOTATION_IDS[n], "request_id": RFQ_ID,
            "party_id_supplier": s.participant_id * 10**26 + 1,
            "contact_mech_id_blockchain": header["contact_mech_id_blockchain"],
            "quotation_date": dt.date(2024, 3, 6), "status": "Pending"}])
        for k in range(2):
            price, qty = PRICES[n][k], QUANTITIES[k]
            conn.execute(t["quotation_item"].insert(), [{
                "quotation_id": QUOTATION_IDS[n], "item_seq_no": k + 1,
                "product_id": PRODUCTS[k], "quantity": qty, "currency_code": "EUR",
                "unit_price": price, "amount": price * qty, "exchange_rate": rate,
                "home_unit_price": (price * rate).quantize(decimal.Decimal("0.01")),
                "home_amount": (price * qty * rate).quantize(decimal.Decimal("0.01"))}])
    with s.engine.begin() as conn:
        conn.execute(t["quotation_header"].update().values(status=rfq.QUOTATION_SENT))
    log.info("%s quoted in EUR (keeps its %s amounts)", s.name, home)


def run(companies: list[Company], chain: str, timeout: float = 120,
        observe: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Set up, play spec 2.5, and return {company: {table: rows}, "receivers": inbox counts}.
    `observe` sees each quotation item as it reaches the buyer (see rfq.buyer_hooks)."""
    if len(companies) != 3:
        raise ErpError("the RFQ story needs three companies: buyer, supplier 1, supplier 2")
    buyer, *suppliers = companies
    setup(companies, chain, observe)
    stop = threading.Event()
    receivers = {c.name: Receiver(c.engine, c.client, chain, hooks=c.hooks) for c in companies}
    workers = []
    for c in companies:
        relay = Relay(c.engine, lambda _chain, c=c: c.client, hooks=c.hooks)
        workers += [threading.Thread(target=relay.run_forever, args=(stop, 0.05), daemon=True),
                    threading.Thread(target=receivers[c.name].follow_forever, args=(stop, 0.1),
                                     daemon=True)]
    for w in workers:
        w.start()
    try:
        _send_rfq(buyer, suppliers)
        for s in suppliers:
            _wait(lambda s=s: len(_rows(s, "request_item")) == 2, f"{s.name} to get the RFQ",
                  timeout)
        for n, s in enumerate(suppliers):
            _quote(s, n)
            _wait(lambda s=s: _outbox(s) == ["SENT"], f"{s.name}'s quotation to be sent",
                  timeout)
        _wait(lambda: len(_rows(buyer, "quotation_item")) == 4, "B to get both quotations",
              timeout)
        for s in suppliers:
            _wait(lambda s=s: sum(receivers[s.name].inbox_counts().get(k, 0)
                                  for k in ("DEFERRED", "NOT_FOR_ME")) >= 1,
                  f"{s.name} to meet the quotation it cannot read", timeout)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=30)
    out: dict[str, Any] = {c.name: {t: _rows(c, t) for t in (
        "request_header", "request_item", "quotation_header", "quotation_item")}
        for c in companies}
    out["receivers"] = {name: r.inbox_counts() for name, r in receivers.items()}
    return out


def comparison(result: dict[str, Any], buyer: str) -> list[dict[str, Any]]:
    """B's view of the quotations: one line per supplier with its total in EUR and USD."""
    lines = []
    for qid in QUOTATION_IDS:
        items = [i for i in result[buyer]["quotation_item"] if i["quotation_id"] == qid]
        lines.append({
            "quotation_id": str(qid),
            "total_eur": str(sum((decimal.Decimal(i["amount"]) for i in items),
                                 decimal.Decimal(0))),
            f"total_{BUYER_HOME.lower()}": str(sum((decimal.Decimal(i["home_amount"] or 0)
                                                    for i in items), decimal.Decimal(0))),
            "exchange_rate": str(items[0]["exchange_rate"]) if items else None,
        })
    return lines
