"""RFQ -> quotation between a buyer and two suppliers (spec 2.5), three real nodes.

How: buyer B (participant 4711) on node 1, suppliers S1 (5120) on node 2 and S2 (6003) on
node 3, each an application database (SQLite) with the example tables of `erp.rfq`, its
own RSA key pair on `pubkeys`, a relay and a receiver (threads). B sends an RFQ privately to
S1 and S2; each supplier answers with a quotation in EUR readable by B only. S1 cannot
decode S2's quotation, nor S2 S1's; the suppliers' home-currency amounts never leave them
(`before_send`), and B's `after_receive` fills the exchange rate to its home currency, USD,
from its own currency table.
"""

from __future__ import annotations

import datetime as dt
import decimal
import threading
from pathlib import Path

import pytest
from framework import sync_blocks
from network_support import add_joiner, wait_confirmed
from sqlalchemy import create_engine, select
from trigger_support import (
    PARTNER_GRANTS,
    foreign_keys_on,
    log,
    make_instance,
    outbox_statuses,
    pin_ports,
    register_nodes,
    wait_linked,
    wait_until,
)

from erp import rfq
from triggers import capture
from triggers.keys_command import ensure_system_streams
from triggers.receiver import Receiver
from triggers.relay import Relay

pytestmark = pytest.mark.functional

RFQ_ID = 471100000000000000000000000015
QUOTATIONS = {"S1": 512000000000000000000000000003, "S2": 600300000000000000000000000041}
PRICES = {"S1": (decimal.Decimal("4.20"), decimal.Decimal("19.90")),
          "S2": (decimal.Decimal("4.05"), decimal.Decimal("21.50"))}
HOME = {"S1": ("GBP", decimal.Decimal("0.86")), "S2": ("CHF", decimal.Decimal("0.95"))}
EUR_USD = decimal.Decimal("1.080000")


def three_nodes(harness):  # noqa: ANN001, ANN201
    n1 = harness.add_node(chain="chain1", block_time=0.2)
    n1.start()
    pin_ports(n1)
    joiners = [add_joiner(harness, n1) for _ in range(2)]
    for j in joiners:
        j.start()
        pin_ports(j)
    txids = [n1.grant(",".join(j.address for j in joiners), PARTNER_GRANTS)]
    txids += [n1.create("stream", s, True) for s in ("rfq", "quotation")]
    ensure_system_streams(n1.rpc)
    for j in joiners:
        wait_linked(n1, j)
    nodes = [n1, *joiners]
    wait_confirmed(nodes, *txids, timeout=60)
    sync_blocks(nodes)
    for j in joiners:
        j.subscribe(["rfq", "quotation", "pubkeys", "access"])
    return nodes


def rows(engine, md, table: str) -> list:  # noqa: ANN001
    t = md.tables[table]
    with engine.connect() as conn:
        return conn.execute(select(t).order_by(*t.primary_key.columns)).mappings().all()


def test_rfq_to_two_suppliers_and_their_quotations(harness, tmp_path: Path) -> None:
    nodes = three_nodes(harness)
    engines = {}
    for name in ("B", "S1", "S2"):
        engines[name] = create_engine(f"sqlite:///{tmp_path / name}.db")
        foreign_keys_on(engines[name])
    md = {name: rfq.create_tables(e) for name, e in engines.items()}
    inst = {
        name: make_instance(name, engines[name], node, tmp_path / f"keys-{name}", pid,
                            address=node.getaddresses()[0], streams=("rfq", "quotation"))
        for (name, pid), node in zip((("B", 4711), ("S1", 5120), ("S2", 6003)), nodes,
                                     strict=True)
    }
    register_nodes(list(inst.values()))
    rfq.configure_buyer(engines["B"], "chain1")
    for s in ("S1", "S2"):
        rfq.configure_supplier(engines[s], "chain1")
    with engines["B"].begin() as conn:
        conn.execute(md["B"].tables["currency_rate"].insert(),
                     [{"from_currency": "EUR", "to_currency": "USD", "rate": EUR_USD}])
    hooks = {"B": rfq.buyer_hooks(engines["B"], "USD"), "S1": rfq.supplier_hooks(),
             "S2": rfq.supplier_hooks()}
    arrived: list[dict] = []  # quotation items as they reach B, before its own hook
    fill = hooks["B"].for_table("quotation_item").after_receive
    hooks["B"].register("quotation_item",
                        after_receive=lambda row: fill(arrived.append(dict(row)) or row))
    for e in engines.values():
        capture.enable(e)

    stop = threading.Event()
    workers = []
    receivers = {}
    for name, i in inst.items():
        relay = Relay(engines[name], lambda chain, i=i: i.client, hooks=hooks[name])
        receivers[name] = Receiver(engines[name], i.client, "chain1", hooks=hooks[name])
        workers += [threading.Thread(target=relay.run_forever, args=(stop, 0.05), daemon=True),
                    threading.Thread(target=receivers[name].follow_forever, args=(stop, 0.1),
                                     daemon=True)]
    for w in workers:
        w.start()
    try:
        log.info("B writes a pending RFQ with two items and two suppliers: no message")
        b = md["B"].tables
        with engines["B"].begin() as conn:
            conn.execute(b["party"].insert(), [{"party_id": 471100000000000000000000000001,
                                                "party_name": "Buyer B"}])
            conn.execute(b["product"].insert(), [
                {"product_id": 471100000000000000000000000230, "product_name": "bolt M8",
                 "uom_id": "EA"},
                {"product_id": 471100000000000000000000000231, "product_name": "bracket",
                 "uom_id": "EA"}])
            conn.execute(b["request_header"].insert(), [{
                "request_id": RFQ_ID, "party_id_buyer": 471100000000000000000000000001,
                "contact_mech_id_blockchain": inst["B"].address,
                "request_date": dt.date(2024, 3, 4), "currency_code": "EUR",
                "status": "Pending"}])
        with engines["B"].begin() as conn:
            conn.execute(b["request_item"].insert(), [
                {"request_id": RFQ_ID, "item_seq_no": 1,
                 "product_id": 471100000000000000000000000230, "quantity": 500},
                {"request_id": RFQ_ID, "item_seq_no": 2,
                 "product_id": 471100000000000000000000000231, "quantity": 120}])
            conn.execute(b["request_supplier"].insert(), [
                {"request_id": RFQ_ID, "supplier_seq": 1,
                 "contact_mech_id_blockchain": inst["S1"].address},
                {"request_id": RFQ_ID, "supplier_seq": 2,
                 "contact_mech_id_blockchain": inst["S2"].address}])
        assert outbox_statuses(engines["B"]) == []

        log.info("B sends the RFQ; S1 and S2 apply it with its party, items and products")
        with engines["B"].begin() as conn:
            conn.execute(b["request_header"].update().values(status=rfq.RFQ_SENT))
        for s in ("S1", "S2"):
            wait_until(lambda s=s: len(rows(engines[s], md[s], "request_item")) == 2, 60,
                       f"{s} to apply the RFQ")
            [header] = rows(engines[s], md[s], "request_header")
            assert header["status"] == rfq.RFQ_SENT
            assert len(rows(engines[s], md[s], "product")) == 2
            assert outbox_statuses(engines[s]) == []  # blockchain mode: nothing echoed

        for s in ("S1", "S2"):
            log.info("%s quotes in EUR and sends it to the buyer", s)
            t = md[s].tables
            [header] = rows(engines[s], md[s], "request_header")
            home, rate = HOME[s]
            with engines[s].begin() as conn:
                conn.execute(t["quotation_header"].insert(), [{
                    "quotation_id": QUOTATIONS[s], "request_id": RFQ_ID,
                    "party_id_supplier": QUOTATIONS[s] // 10**26 * 10**26 + 1,
                    "contact_mech_id_blockchain": header["contact_mech_id_blockchain"],
                    "quotation_date": dt.date(2024, 3, 6), "status": "Pending"}])
                for (seq, qty), price in zip(((1, 500), (2, 120)), PRICES[s], strict=True):
                    conn.execute(t["quotation_item"].insert(), [{
                        "quotation_id": QUOTATIONS[s], "item_seq_no": seq,
                        "product_id": 471100000000000000000000000229 + seq, "quantity": qty,
                        "currency_code": "EUR", "unit_price": price, "amount": price * qty,
                        "exchange_rate": rate, "home_unit_price": price * rate,
                        "home_amount": price * qty * rate}])
            with engines[s].begin() as conn:
                conn.execute(t["quotation_header"].update().values(status=rfq.QUOTATION_SENT))
            wait_until(lambda s=s: outbox_statuses(engines[s]) == ["SENT"], 60,
                       f"{s}'s quotation to be sent")
            log.info("%s keeps its own %s amounts", s, home)

        log.info("B applies both quotations with its own exchange rate")
        wait_until(lambda: len(rows(engines["B"], md["B"], "quotation_item")) == 4, 60,
                   "B to apply both quotations")
        assert len(arrived) == 4
        assert all(r["exchange_rate"] is None and r["home_unit_price"] is None
                   and r["home_amount"] is None for r in arrived)  # nulled by before_send
        for item in rows(engines["B"], md["B"], "quotation_item"):
            s = "S1" if item["quotation_id"] == QUOTATIONS["S1"] else "S2"
            price = PRICES[s][item["item_seq_no"] - 1]
            assert item["unit_price"] == price and item["currency_code"] == "EUR"
            assert item["exchange_rate"] == EUR_USD
            assert item["home_unit_price"] == (price * EUR_USD).quantize(decimal.Decimal("0.01"))
            assert item["home_amount"] == (price * item["quantity"] * EUR_USD).quantize(
                decimal.Decimal("0.01"))

        log.info("neither supplier can read the other's quotation")
        for s, other in (("S1", "S2"), ("S2", "S1")):
            wait_until(lambda s=s: receivers[s].inbox_counts().get("DEFERRED", 0)
                       + receivers[s].inbox_counts().get("NOT_FOR_ME", 0) >= 1, 60,
                       f"{s} to see the other quotation it cannot decode")
            quoted = {r["quotation_id"] for r in rows(engines[s], md[s], "quotation_header")}
            assert quoted == {QUOTATIONS[s]}, f"{s} holds {other}'s quotation"
            own = rows(engines[s], md[s], "quotation_item")
            assert all(r["home_amount"] is not None for r in own)  # its own, untouched
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=30)
