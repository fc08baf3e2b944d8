"""Partner request -> accept -> orders rejected and accepted, between two companies on two
real nodes, with forged, malformed and oversized items on the stream.

How: company A (the ERP) is bound to node 1, company B (the MES) to node 2, each with its
own projection database (SQLite, PostgreSQL, MariaDB). A asks B for a partnership, B accepts,
A sends two orders, B rejects one and accepts the other. The pre-publish checks refuse what
the rules forbid and publish nothing. Then raw items are published straight through RPC: an
answer published from node 2's address claiming to be A, a text item, and an item larger
than the projection's limit; both projections reject them with their reasons and keep
following; at the end both hold the same digest.
"""

from __future__ import annotations

import json

import pytest
from erp_support import company, log, projected, two_nodes, wait_same_state

from erp import rules
from erp.errors import ActionRefused
from triggers.tools.fixtures import app_db, db_kind, second_db  # noqa: F401

pytestmark = pytest.mark.functional


def stream_size(erp) -> int:  # noqa: ANN001
    return erp.client.call("getstreaminfo", "supplychain")["items"]


def test_partner_then_orders_with_forged_and_malformed_items(harness, app_db,  # noqa: F811
                                                             second_db) -> None:  # noqa: F811
    n1, n2 = two_nodes(harness, "erpflow")
    a, a_agent = company(n1, app_db, "ACME ERP")
    b, b_agent = company(n2, second_db, "ACME MES")
    assert projected(a, b_agent)["status"] == "applied"
    assert projected(b, a_agent)["status"] == "applied"

    log.info("an order before any partnership is refused and nothing is published")
    before = stream_size(a)
    with pytest.raises(ActionRefused, match="no accepted partnership"):
        a.create_action(b.public_key, "dummy_action")
    assert stream_size(a) == before

    log.info("A asks B for a partnership; B sees it OPEN")
    made = a.create_partner_request(b.public_key)
    rid = made["partner_request_id"]
    assert projected(b, made["txid"])["status"] == "applied"
    [request] = b.list_partner_requests()
    assert request == {"partner_request_id": rid, "issuing_agent": a.public_key,
                       "receiving_agent": b.public_key, "status": "OPEN",
                       "timestamp": request["timestamp"], "answer_timestamp": 0,
                       "transaction_ids": [made["txid"]]}
    assert a.list_partner_requests() == []
    with pytest.raises(ActionRefused, match="only the receiving agent"):
        a.answer_partner_request(rid, 1)
    with pytest.raises(ActionRefused, match="is OPEN"):
        a.create_partner_request(b.public_key)  # one is still open

    log.info("B accepts (by the issuer's key); a second answer is refused before it is final")
    answer = b.answer_partner_request(a.public_key, 1)
    with pytest.raises(ActionRefused, match="already ACCEPTED"):
        b.answer_partner_request(rid, 0)
    assert projected(a, answer["txid"])["status"] == "applied"
    accepted = a.show("partner_request", rid)
    assert accepted["partner_request"]["status"] == "ACCEPTED"
    assert accepted["partner_request"]["transaction_ids"] == [made["txid"], answer["txid"]]
    assert [h["txid"] for h in accepted["history"]] == [answer["txid"], made["txid"]]

    log.info("A sends two orders; B rejects the first and accepts the second")
    first = a.create_action(b.public_key, "dummy_action", "Test dummy action",
                            {"Part": "steering wheel", "Size": 3})
    second = a.create_action(b.public_key, "dummy_action", "second", {"Size": 4})
    projected(b, second["txid"])
    received = b.list_actions()
    assert {o["abs_action_id"] for o in received} == {first["abs_action_id"],
                                                      second["abs_action_id"]}
    assert all(set(o) == {"abs_action_id", "issuing_agent", "receiving_agent", "type",
                          "description", "metadata", "files", "status", "timestamp",
                          "answer_timestamp", "transaction_ids"} for o in received)
    rejected = b.answer_action(first["abs_action_id"], 0)
    accepted_order = b.answer_action(second["abs_action_id"], 1)
    projected(a, rejected["txid"])
    projected(a, accepted_order["txid"])
    statuses = {o["abs_action_id"]: o["status"] for o in a.list_actions(issued=True)}
    assert statuses == {first["abs_action_id"]: "REJECTED",
                        second["abs_action_id"]: "ACCEPTED"}

    log.info("hostile items: forged signer, text, oversized; the followers keep going")
    forged = {"erp": 1, "action": "ANSWER_ACTION", "signer": a.public_key,
              "timestamp": 1, "abs_action_id": "f" * 32, "response": 1}
    forged_txid = n2.rpc.call("publishfrom", b.address, "supplychain", "f" * 32,
                              {"json": forged})
    text_txid = n1.rpc.call("publish", "supplychain", "junk", {"text": "not an action"})
    big = json.dumps({"erp": 1, "pad": "x" * rules.MAX_ACTION_BYTES}).encode().hex()
    big_txid = n1.rpc.call("publish", "supplychain", "big", big)
    after = a.create_action(b.public_key, "dummy_action", "after the junk")
    for erp in (a, b):
        assert "not the address of agent" in projected(erp, forged_txid)["reason"]
        assert "not a JSON" in projected(erp, text_txid)["reason"]
        assert "exceeds" in projected(erp, big_txid)["reason"]
        assert projected(erp, after["txid"])["status"] == "applied"
    digest = wait_same_state([a, b], lambda: stream_size(a))
    log.info("both projections agree: %s", digest)
