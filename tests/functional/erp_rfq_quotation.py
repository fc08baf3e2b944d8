"""RFQ -> quotation between a buyer and two suppliers (spec 2.5), three real nodes.

How: buyer B (participant 4711) on node 1, suppliers S1 (5120) on node 2 and S2 (6003) on
node 3, each an application database (SQLite) bound to its own node, set up and played by
`erp.rfq_demo.run` (the code behind `chainmill erp rfq-demo`): B sends an RFQ privately to S1
and S2; each supplier answers with a quotation in EUR readable by B only. Checked: the
suppliers hold the RFQ with its items and products and never echo it; S1 cannot decode S2's
quotation nor S2 S1's; the items reach B with the home-currency amounts nulled
(`before_send`), and B's `after_receive` fills the exchange rate to USD from its own table.
"""

from __future__ import annotations

import decimal
from pathlib import Path

import pytest
from framework import sync_blocks
from network_support import add_joiner, wait_confirmed
from sqlalchemy import create_engine
from trigger_support import PARTNER_GRANTS, log, pin_ports, wait_linked

from erp import rfq_demo
from erp.rfq_demo import EUR_TO_BUYER_HOME, PRICES, QUOTATION_IDS, Company

pytestmark = pytest.mark.functional
CENT = decimal.Decimal("0.01")


def three_nodes(harness):  # noqa: ANN001, ANN201
    n1 = harness.add_node(chain="chain1", block_time=0.2)
    n1.start()
    pin_ports(n1)
    joiners = [add_joiner(harness, n1) for _ in range(2)]
    for j in joiners:
        j.start()
        pin_ports(j)
    txid = n1.grant(",".join(j.address for j in joiners), PARTNER_GRANTS)
    for j in joiners:
        wait_linked(n1, j)
    nodes = [n1, *joiners]
    wait_confirmed(nodes, txid, timeout=60)
    sync_blocks(nodes)
    return nodes


def test_rfq_to_two_suppliers_and_their_quotations(harness, tmp_path: Path) -> None:
    nodes = three_nodes(harness)
    companies = [
        Company(name, pid, create_engine(f"sqlite:///{tmp_path / name}.db"), node.rpc,
                node.getaddresses()[0], tmp_path / f"keys-{name}")
        for (name, pid), node in zip((("B", 4711), ("S1", 5120), ("S2", 6003)), nodes,
                                     strict=True)
    ]
    arrived: list[dict] = []
    result = rfq_demo.run(companies, "chain1", timeout=120, observe=arrived.append)
    log.info("B's comparison: %s", rfq_demo.comparison(result, "B"))

    for s in ("S1", "S2"):
        assert [r["status"] for r in result[s]["request_header"]] == ["Sent to Supplier"]
        assert len(result[s]["request_item"]) == 2
    own = {"S1": QUOTATION_IDS[0], "S2": QUOTATION_IDS[1]}
    for s in ("S1", "S2"):
        assert {r["quotation_id"] for r in result[s]["quotation_header"]} == {own[s]}
        assert all(r["home_amount"] is not None for r in result[s]["quotation_item"])
        assert result["receivers"][s].get("DEFERRED", 0) + result["receivers"][s].get(
            "NOT_FOR_ME", 0) >= 1

    assert len(arrived) == 4
    assert all(r["exchange_rate"] is None and r["home_unit_price"] is None
               and r["home_amount"] is None for r in arrived)  # nulled by before_send
    assert {r["quotation_id"] for r in result["B"]["quotation_header"]} == set(QUOTATION_IDS)
    for item in result["B"]["quotation_item"]:
        price = PRICES[QUOTATION_IDS.index(item["quotation_id"])][item["item_seq_no"] - 1]
        assert item["unit_price"] == price and item["currency_code"] == "EUR"
        assert item["exchange_rate"] == EUR_TO_BUYER_HOME
        assert item["home_unit_price"] == (price * EUR_TO_BUYER_HOME).quantize(CENT)
        assert item["home_amount"] == (price * item["quantity"] * EUR_TO_BUYER_HOME).quantize(
            CENT)
