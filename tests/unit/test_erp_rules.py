"""Every validity rule of spec 2.1-2.3, accepted and refused, as pure functions."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from erp_helpers import ADDRESS_OF, BLOCKTIME, World, act, key

from erp import rules
from erp.errors import ActionRefused

A, B, C = key(1), key(2), key(3)
RID = "9df8888dea6df991f86e0e61b2379e46"
OID = "64f605cc6f131e6c6f19a82a4b148f8a"


@pytest.fixture
def world() -> World:
    w = World()
    for n in (1, 2, 3):
        w.agent(n)
    return w


def refused(world: World, action: dict, match: str, publisher: str | None = None) -> None:
    before = dict(world.state.rows)
    with pytest.raises(ActionRefused, match=match):
        world.run(action, publisher)
    assert world.state.rows == before


# -- decoding ---------------------------------------------------------------------------------


def test_parse_action_accepts_an_envelope() -> None:
    raw = json.dumps(act("CREATE_AGENT", A, name="x")).encode()
    assert rules.parse_action(raw)["signer"] == A


@pytest.mark.parametrize("raw, match", [
    (b"x" * (rules.MAX_ACTION_BYTES + 1), "exceeds"),
    (b"\xff\xfe", "not a JSON"),
    (b"{not json", "not a JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"erp": 1, "action": "CREATE_AGENT", "signer": "02", "timestamp": 1, "x": NaN}', "JSON"),
    (json.dumps({"erp": 2, "action": "CREATE_AGENT"}).encode(), "field erp"),
    (json.dumps({"erp": 1, "action": "STEAL"}).encode(), "unknown action"),
    (json.dumps({"erp": 1, "action": "CREATE_AGENT", "signer": A.upper()}).encode(), "signer"),
    (json.dumps({"erp": 1, "action": "CREATE_AGENT", "signer": A, "timestamp": "1"}).encode(),
     "timestamp"),
    (json.dumps({"erp": 1, "action": "CREATE_AGENT", "signer": A, "timestamp": -1}).encode(),
     "timestamp"),
    (b"[" * 60_000, "JSON"),
    (b'{"erp": 1, "action": "CREATE_AGENT", "signer": "\\ud800"}', "JSON"),  # lone surrogate
])
def test_parse_action_refuses_malformed_items(raw: bytes, match: str) -> None:
    with pytest.raises(ActionRefused, match=match):
        rules.parse_action(raw)


def test_integers_beyond_64_bits_are_not_integers() -> None:
    raw = json.dumps(act("CREATE_AGENT", A, name="x", big=2**70)).encode()
    assert isinstance(rules.parse_action(raw)["big"], float)


# -- common rules -----------------------------------------------------------------------------


def test_future_timestamp_is_refused_within_tolerance_accepted(world: World) -> None:
    world.run(act("CREATE_AGENT", key(9), BLOCKTIME + rules.MAX_FUTURE_SECONDS, name="n"))
    refused(world, act("CREATE_AGENT", key(10), BLOCKTIME + rules.MAX_FUTURE_SECONDS + 1,
                       name="n"), "in the future")


def test_unregistered_signer_is_refused(world: World) -> None:
    refused(world, act("CREATE_RECORD_TYPE", key(7), name="t", properties=[
        {"name": "a", "data_type": "INT", "required": False}]), "not a registered agent")


def test_item_from_another_address_claiming_an_agent_is_refused(world: World) -> None:
    action = act("CREATE_RECORD_TYPE", A, name="t", properties=[
        {"name": "a", "data_type": "INT", "required": False}])
    refused(world, action, "not the address of agent", publisher=ADDRESS_OF(B))


def test_unexpected_fields_are_refused(world: World) -> None:
    refused(world, act("FINALIZE_RECORD", A, record_id="x", owner=B), "unexpected field")


# -- agents -----------------------------------------------------------------------------------


def test_create_agent_registers_the_key_of_the_publishing_address(world: World) -> None:
    k = world.agent(5, "mes")
    assert world.state.get("agents", (k,))["address"] == ADDRESS_OF(k)


def test_create_agent_refused_twice_from_a_foreign_address_or_nameless(world: World) -> None:
    refused(world, act("CREATE_AGENT", A, name="again"), "already exists")
    refused(world, act("CREATE_AGENT", key(8), name="x"), "not the address of public key",
            publisher=ADDRESS_OF(A))
    refused(world, act("CREATE_AGENT", key(8), name=" "), "must not be empty")
    refused(world, act("CREATE_AGENT", key(8), name="a\x00b"), "control characters")


# -- record types -----------------------------------------------------------------------------


def test_create_record_type_accepted(world: World) -> None:
    world.record_type(A)
    assert [p["name"] for p in world.state.get("record_types", ("pallet",))["properties"]] == [
        "weight", "label", "where"]


@pytest.mark.parametrize("properties, match", [
    ([], "at least one property"),
    ("weight", "at least one property"),
    ([{"name": "w", "data_type": "DECIMAL", "required": False}], "data_type must be one of"),
    ([{"name": "w", "data_type": 2, "required": False}], "data_type must be one of"),
    ([{"name": "w", "data_type": "INT", "required": "yes"}], "required must be"),
    ([{"name": "w", "data_type": "INT", "required": False, "x": 1}], "exactly"),
    ([{"name": "w", "data_type": "INT"}, {"name": "w", "data_type": "STRING"}], "twice"),
    ([{"name": "", "data_type": "INT"}], "must not be empty"),
])
def test_create_record_type_refused(world: World, properties: object, match: str) -> None:
    refused(world, act("CREATE_RECORD_TYPE", A, name="t", properties=properties), match)


def test_create_record_type_name_is_unique(world: World) -> None:
    world.record_type(A)
    refused(world, act("CREATE_RECORD_TYPE", B, name="pallet", properties=[
        {"name": "a", "data_type": "INT", "required": False}]), "already exists")


# -- records ----------------------------------------------------------------------------------


def test_create_record_makes_the_creator_owner_custodian_and_reporter(world: World) -> None:
    world.record_type(A)
    world.record(A)
    record = world.state.get("records", ("SN-1",))
    assert record["owners"] == [{"agent_id": A, "timestamp": BLOCKTIME}]
    assert record["custodians"] == record["owners"] and record["final"] is False
    prop = world.state.get("properties", ("SN-1", "weight"))
    assert prop["reporters"] == [{"public_key": A, "authorized": True, "index": 0}]
    assert world.state.get("property_values", ("SN-1", "weight", 0))["value"] == 10
    assert world.state.get("properties", ("SN-1", "label"))["count"] == 0


@pytest.mark.parametrize("body, match", [
    ({"record_id": "", "record_type": "pallet", "properties": []}, "must not be empty"),
    ({"record_id": "X", "record_type": "crate", "properties": []}, "does not exist"),
    ({"record_id": "X", "record_type": "pallet", "properties": []}, "required property weight"),
    ({"record_id": "X", "record_type": "pallet",
      "properties": [{"name": "weight", "data_type": "STRING", "value": "1"}]}, "is INT"),
    ({"record_id": "X", "record_type": "pallet",
      "properties": [{"name": "weight", "data_type": "INT", "value": 1.5}]}, "INT value"),
    ({"record_id": "X", "record_type": "pallet",
      "properties": [{"name": "weight", "data_type": "INT", "value": True}]}, "INT value"),
    ({"record_id": "X", "record_type": "pallet",
      "properties": [{"name": "color", "data_type": "INT", "value": 1}]}, "no property"),
    ({"record_id": "X", "record_type": "pallet", "properties": [
        {"name": "weight", "data_type": "INT", "value": 1},
        {"name": "where", "data_type": "LOCATION",
         "value": {"latitude": 91_000_000, "longitude": 0}}]}, "latitude"),
    ({"record_id": "X", "record_type": "pallet", "properties": [
        {"name": "weight", "data_type": "INT", "value": 1},
        {"name": "weight", "data_type": "INT", "value": 2}]}, "twice"),
])
def test_create_record_refused(world: World, body: dict, match: str) -> None:
    world.record_type(A)
    refused(world, act("CREATE_RECORD", A, **body), match)


def test_create_record_identifier_is_unused(world: World) -> None:
    world.record_type(A)
    world.record(A)
    refused(world, act("CREATE_RECORD", B, record_id="SN-1", record_type="pallet", properties=[
        {"name": "weight", "data_type": "INT", "value": 1}]), "already exists")


@pytest.mark.parametrize("data_type, value, canonical", [
    ("BYTES", "00FF", "00ff"), ("STRING", "a\nb", "a\nb"), ("INT", -5, -5),
    ("FLOAT", 2, 2.0), ("LOCATION", {"latitude": 1, "longitude": -2},
                        {"latitude": 1, "longitude": -2}),
])
def test_check_value_accepts_each_type(data_type: str, value: object, canonical: object) -> None:
    assert rules.check_value(value, data_type) == canonical


@pytest.mark.parametrize("data_type, value", [
    ("BYTES", "0"), ("BYTES", "zz"), ("STRING", 5), ("STRING", "x" * 5000), ("INT", 2**63),
    ("FLOAT", float("inf")), ("FLOAT", "1.0"), ("LOCATION", [1, 2]),
    ("LOCATION", {"latitude": 0, "longitude": 181_000_000}),
])
def test_check_value_refuses_wrong_values(data_type: str, value: object) -> None:
    with pytest.raises(ActionRefused):
        rules.check_value(value, data_type)


def test_update_properties_by_a_reporter_appends_values(world: World) -> None:
    world.record_type(A)
    world.record(A)
    world.run(act("UPDATE_PROPERTIES", A, record_id="SN-1", properties=[
        {"name": "weight", "data_type": "INT", "value": 12},
        {"name": "label", "data_type": "STRING", "value": "blue"}]))
    assert world.state.get("property_values", ("SN-1", "weight", 1))["value"] == 12
    assert world.state.get("properties", ("SN-1", "label"))["count"] == 1


def test_update_properties_refused(world: World) -> None:
    world.record_type(A)
    world.record(A)
    weight = [{"name": "weight", "data_type": "INT", "value": 12}]
    refused(world, act("UPDATE_PROPERTIES", B, record_id="SN-1", properties=weight),
            "not an authorized reporter")
    refused(world, act("UPDATE_PROPERTIES", A, record_id="NOPE", properties=weight),
            "does not exist")
    refused(world, act("UPDATE_PROPERTIES", A, record_id="SN-1", properties=[]),
            "at least one")
    refused(world, act("UPDATE_PROPERTIES", A, record_id="SN-1", properties=[
        {"name": "weight", "data_type": "FLOAT", "value": 1.0}]), "is INT")
    world.run(act("FINALIZE_RECORD", A, record_id="SN-1"))
    refused(world, act("UPDATE_PROPERTIES", A, record_id="SN-1", properties=weight), "is final")


def test_finalize_record_needs_owner_and_custodian(world: World) -> None:
    world.record_type(A)
    world.record(A)
    refused(world, act("FINALIZE_RECORD", B, record_id="SN-1"), "both owner and custodian")
    world.run(act("CREATE_PROPOSAL", A, record_id="SN-1", receiving_agent=B, role="CUSTODIAN"))
    world.run(act("ANSWER_PROPOSAL", B, record_id="SN-1", receiving_agent=B, role="CUSTODIAN",
                  response="ACCEPT"))
    refused(world, act("FINALIZE_RECORD", A, record_id="SN-1"), "both owner and custodian")
    refused(world, act("FINALIZE_RECORD", B, record_id="SN-1"), "both owner and custodian")
    world.run(act("CREATE_PROPOSAL", B, record_id="SN-1", receiving_agent=A, role="CUSTODIAN"))
    world.run(act("ANSWER_PROPOSAL", A, record_id="SN-1", receiving_agent=A, role="CUSTODIAN",
                  response="ACCEPT"))
    world.run(act("FINALIZE_RECORD", A, record_id="SN-1"))
    assert world.state.get("records", ("SN-1",))["final"] is True
    refused(world, act("FINALIZE_RECORD", A, record_id="SN-1"), "is final")


# -- proposals --------------------------------------------------------------------------------


@pytest.fixture
def record_world(world: World) -> World:
    world.record_type(A)
    world.record(A)
    return world


def test_owner_proposal_accepted_transfers_ownership(record_world: World) -> None:
    w = record_world
    w.run(act("CREATE_PROPOSAL", A, record_id="SN-1", receiving_agent=B, role="OWNER",
              terms="net 30"))
    w.run(act("ANSWER_PROPOSAL", B, BLOCKTIME + 1, record_id="SN-1", receiving_agent=B,
              role="OWNER", response="ACCEPT"))
    record = w.state.get("records", ("SN-1",))
    assert [o["agent_id"] for o in record["owners"]] == [A, B]
    assert w.state.get("proposals", ("SN-1", B, "OWNER"))["status"] == "ACCEPTED"


def test_create_proposal_refused(record_world: World) -> None:
    w = record_world
    refused(w, act("CREATE_PROPOSAL", B, record_id="SN-1", receiving_agent=C, role="OWNER"),
            "only the current owner")
    refused(w, act("CREATE_PROPOSAL", A, record_id="SN-1", receiving_agent=key(7),
                   role="OWNER"), "not a registered agent")
    refused(w, act("CREATE_PROPOSAL", A, record_id="SN-1", receiving_agent=B, role="BOSS"),
            "role must be")
    refused(w, act("CREATE_PROPOSAL", A, record_id="SN-1", receiving_agent=A, role="OWNER"),
            "already the owner")
    refused(w, act("CREATE_PROPOSAL", A, record_id="SN-1", receiving_agent=B, role="REPORTER",
                   properties=[]), "property names")
    refused(w, act("CREATE_PROPOSAL", A, record_id="SN-1", receiving_agent=B, role="REPORTER",
                   properties=["color"]), "no property")
    refused(w, act("CREATE_PROPOSAL", A, record_id="SN-1", receiving_agent=B, role="OWNER",
                   properties=["weight"]), "only a reporter proposal")
    w.run(act("CREATE_PROPOSAL", A, record_id="SN-1", receiving_agent=B, role="OWNER"))
    refused(w, act("CREATE_PROPOSAL", A, record_id="SN-1", receiving_agent=B, role="OWNER"),
            "open OWNER proposal")


def test_answer_proposal_rules(record_world: World) -> None:
    w = record_world
    w.run(act("CREATE_PROPOSAL", A, record_id="SN-1", receiving_agent=B, role="OWNER"))
    answer = {"record_id": "SN-1", "receiving_agent": B, "role": "OWNER"}
    refused(w, act("ANSWER_PROPOSAL", C, response="ACCEPT", **answer), "only the receiving")
    refused(w, act("ANSWER_PROPOSAL", B, response="CANCEL", **answer), "only the issuing")
    refused(w, act("ANSWER_PROPOSAL", B, response="MAYBE", **answer), "response must be")
    refused(w, act("ANSWER_PROPOSAL", B, response="ACCEPT", record_id="SN-1",
                   receiving_agent=C, role="OWNER"), "no open OWNER proposal")
    w.run(act("ANSWER_PROPOSAL", B, response="REJECT", **answer))
    assert w.state.get("proposals", ("SN-1", B, "OWNER"))["status"] == "REJECTED"
    refused(w, act("ANSWER_PROPOSAL", B, response="ACCEPT", **answer), "no open")
    w.run(act("CREATE_PROPOSAL", A, record_id="SN-1", receiving_agent=B, role="OWNER"))
    w.run(act("ANSWER_PROPOSAL", A, response="CANCEL", **answer))
    assert w.state.get("proposals", ("SN-1", B, "OWNER"))["status"] == "CANCELED"


def test_accepting_checks_the_issuer_still_holds_the_role(record_world: World) -> None:
    w = record_world
    w.run(act("CREATE_PROPOSAL", A, record_id="SN-1", receiving_agent=B, role="OWNER"))
    w.run(act("CREATE_PROPOSAL", A, record_id="SN-1", receiving_agent=C, role="OWNER"))
    w.run(act("ANSWER_PROPOSAL", C, record_id="SN-1", receiving_agent=C, role="OWNER",
              response="ACCEPT"))
    refused(w, act("ANSWER_PROPOSAL", B, record_id="SN-1", receiving_agent=B, role="OWNER",
                   response="ACCEPT"), "no longer the owner")


def test_reporter_proposal_then_update_then_revoke(record_world: World) -> None:
    w = record_world
    w.run(act("CREATE_PROPOSAL", A, record_id="SN-1", receiving_agent=B, role="REPORTER",
              properties=["weight"]))
    w.run(act("ANSWER_PROPOSAL", B, record_id="SN-1", receiving_agent=B, role="REPORTER",
              response="ACCEPT"))
    weight = [{"name": "weight", "data_type": "INT", "value": 3}]
    w.run(act("UPDATE_PROPERTIES", B, record_id="SN-1", properties=weight))
    assert w.state.get("property_values", ("SN-1", "weight", 1))["reporter_index"] == 1
    refused(w, act("UPDATE_PROPERTIES", B, record_id="SN-1", properties=[
        {"name": "label", "data_type": "STRING", "value": "x"}]), "not an authorized reporter")
    refused(w, act("REVOKE_REPORTER", B, record_id="SN-1", reporter_id=B,
                   properties=["weight"]), "only the owner")
    refused(w, act("REVOKE_REPORTER", A, record_id="SN-1", reporter_id=C,
                   properties=["weight"]), "not an authorized reporter")
    refused(w, act("REVOKE_REPORTER", A, record_id="SN-1", reporter_id="02",
                   properties=["weight"]), "reporter_id")
    w.run(act("REVOKE_REPORTER", A, record_id="SN-1", reporter_id=B, properties=["weight"]))
    refused(w, act("UPDATE_PROPERTIES", B, record_id="SN-1", properties=weight),
            "not an authorized reporter")


# -- partner requests -------------------------------------------------------------------------


def partner(world: World, rid: str = RID, issuer: str = A, to: str = B) -> None:
    world.run(act("CREATE_PARTNER_REQUEST", issuer, partner_request_id=rid, receiving_agent=to))


def test_partner_request_open_then_accepted(world: World) -> None:
    partner(world)
    request = world.state.get("partner_requests", (RID,))
    assert request == {"partner_request_id": RID, "issuing_agent": A, "receiving_agent": B,
                       "status": "OPEN", "timestamp": BLOCKTIME, "answer_timestamp": 0,
                       "transaction_ids": [request["transaction_ids"][0]]}
    world.run(act("ANSWER_PARTNER_REQUEST", B, BLOCKTIME + 5, partner_request_id=RID,
                  response=1))
    request = world.state.get("partner_requests", (RID,))
    assert request["status"] == "ACCEPTED" and request["answer_timestamp"] == BLOCKTIME + 5
    assert len(request["transaction_ids"]) == 2


def test_create_partner_request_refused(world: World) -> None:
    refused(world, act("CREATE_PARTNER_REQUEST", A, partner_request_id=RID, receiving_agent=A),
            "must differ")
    refused(world, act("CREATE_PARTNER_REQUEST", A, partner_request_id=RID,
                       receiving_agent=key(9)), "not a registered agent")
    refused(world, act("CREATE_PARTNER_REQUEST", A, partner_request_id=RID.upper(),
                       receiving_agent=B), "32 lower-case hex")
    partner(world)
    refused(world, act("CREATE_PARTNER_REQUEST", C, partner_request_id=RID, receiving_agent=B),
            "already used")
    refused(world, act("CREATE_PARTNER_REQUEST", B, partner_request_id="1" * 32,
                       receiving_agent=A), "is OPEN")
    world.run(act("ANSWER_PARTNER_REQUEST", B, partner_request_id=RID, response=1))
    refused(world, act("CREATE_PARTNER_REQUEST", A, partner_request_id="1" * 32,
                       receiving_agent=B), "is ACCEPTED")


def test_rejected_partnership_may_be_requested_again(world: World) -> None:
    partner(world)
    world.run(act("ANSWER_PARTNER_REQUEST", B, partner_request_id=RID, response=0))
    assert world.state.get("partner_requests", (RID,))["status"] == "REJECTED"
    partner(world, "2" * 32)


def test_answer_partner_request_refused(world: World) -> None:
    partner(world)
    refused(world, act("ANSWER_PARTNER_REQUEST", C, partner_request_id=RID, response=1),
            "only the receiving agent")
    refused(world, act("ANSWER_PARTNER_REQUEST", A, partner_request_id=RID, response=1),
            "only the receiving agent")
    for bad in (2, -1, True, "1", None):
        refused(world, act("ANSWER_PARTNER_REQUEST", B, partner_request_id=RID, response=bad),
                "response must be")
    refused(world, act("ANSWER_PARTNER_REQUEST", B, partner_request_id="3" * 32, response=1),
            "no request")
    world.run(act("ANSWER_PARTNER_REQUEST", B, partner_request_id=RID, response=0))
    refused(world, act("ANSWER_PARTNER_REQUEST", B, partner_request_id=RID, response=1),
            "already REJECTED")


# -- action requests --------------------------------------------------------------------------


def order(world: World, oid: str = OID, issuer: str = A, to: str = B, **extra: object) -> None:
    body = {"abs_action_id": oid, "receiving_agent": to, "type": "dummy_action",
            "description": "Test dummy action", "metadata": {"Part": "steering wheel"},
            "files": [], **extra}
    world.run(act("CREATE_ACTION", issuer, **body))


def test_order_needs_an_accepted_partnership(world: World) -> None:
    with pytest.raises(ActionRefused, match="no accepted partnership"):
        order(world)
    partner(world)
    with pytest.raises(ActionRefused, match="no accepted partnership"):
        order(world)
    world.run(act("ANSWER_PARTNER_REQUEST", B, partner_request_id=RID, response=1))
    order(world)
    order(world, "5" * 32, issuer=B, to=A)  # a partnership is between the two, either way
    with pytest.raises(ActionRefused, match="no accepted partnership"):
        order(world, "6" * 32, to=C)
    assert world.state.get("action_requests", (OID,))["status"] == "OPEN"


@pytest.fixture
def partners(world: World) -> World:
    partner(world)
    world.run(act("ANSWER_PARTNER_REQUEST", B, partner_request_id=RID, response=1))
    return world


def test_create_action_refused(partners: World) -> None:
    w = partners
    base = {"abs_action_id": OID, "receiving_agent": B, "type": "t", "description": "",
            "metadata": {}, "files": []}
    for change, match in [({"type": ""}, "must not be empty"),
                          ({"metadata": [1]}, "JSON object"),
                          ({"abs_action_id": "x"}, "32 lower-case hex"),
                          ({"files": [{"file_name": "a"}]}, "exactly file_name"),
                          ({"receiving_agent": A}, "must differ")]:
        refused(w, act("CREATE_ACTION", A, **{**base, **change}), match)
    content = b"drawing"
    good = {"file_name": "a.txt", "sha256": hashlib.sha256(content).hexdigest(),
            "size": len(content), "base64": base64.b64encode(content).decode()}
    refused(w, act("CREATE_ACTION", A, **{**base, "files": [{**good, "size": 3}]}),
            "does not match")
    refused(w, act("CREATE_ACTION", A, **{**base, "files": [{**good, "file_name": "../x"}]}),
            "plain file name")
    w.run(act("CREATE_ACTION", A, **{**base, "files": [good]}))
    refused(w, act("CREATE_ACTION", A, **base), "already used")


def test_answer_action_accept_and_reject_once(partners: World) -> None:
    order(partners)
    order(partners, "7" * 32)
    refused(partners, act("ANSWER_ACTION", A, abs_action_id=OID, response=1),
            "only the receiving agent")
    partners.run(act("ANSWER_ACTION", B, abs_action_id=OID, response=0))
    partners.run(act("ANSWER_ACTION", B, abs_action_id="7" * 32, response=1))
    assert partners.state.get("action_requests", (OID,))["status"] == "REJECTED"
    assert partners.state.get("action_requests", ("7" * 32,))["status"] == "ACCEPTED"
    refused(partners, act("ANSWER_ACTION", B, abs_action_id=OID, response=1), "already")
