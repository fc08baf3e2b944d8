"""The supply-chain record model between two companies on two real nodes: record types,
records, custodian and reporter proposals, property updates, revocation and finalization.

How: company A (the owner) on node 1 and company B (a carrier) on node 2, SQLite
projections. A creates a record type and a record; proposes B as custodian and as reporter
of `where`; B accepts both and reports a location; A revokes B's reporting, B's next report
is refused before publishing; custody goes back to A, who finalizes. Each step waits until
both projections agree, and `show` returns the record with its history and txids.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from erp_support import company, log, projected, two_nodes, wait_same_state
from sqlalchemy import create_engine

from erp.api import Erp
from erp.errors import ActionRefused, ErpError

pytestmark = pytest.mark.functional


def test_record_custody_reporting_and_finalization(harness, tmp_path: Path) -> None:
    n1, n2 = two_nodes(harness, "erprecords")
    a, a_agent = company(n1, create_engine(f"sqlite:///{tmp_path / 'a.db'}"), "owner")
    b, b_agent = company(n2, create_engine(f"sqlite:///{tmp_path / 'b.db'}"), "carrier")
    projected(a, b_agent)
    projected(b, a_agent)
    with pytest.raises(ErpError, match="cannot create it"):  # node 2 lacks create permission
        Erp(b.engine, n2.rpc, stream="carriers").init()

    def both(txid: str) -> None:
        for erp in (a, b):
            assert projected(erp, txid)["status"] == "applied", txid

    log.info("record type and record")
    with pytest.raises(ActionRefused, match="at least one property"):
        a.create_record_type("empty", [])
    a.create_record_type("pallet", [
        {"name": "weight", "data_type": "INT", "required": True},
        {"name": "where", "data_type": "LOCATION", "required": False}])
    with pytest.raises(ActionRefused, match="property weight: an INT value"):
        a.create_record("SN-1", "pallet", {"weight": "heavy"})
    made = a.create_record("SN-1", "pallet", {"weight": 120})
    both(made["txid"])

    log.info("B becomes custodian and reporter of `where`")
    with pytest.raises(ActionRefused, match="only the current custodian"):
        b.create_proposal("SN-1", a.public_key, "CUSTODIAN")
    both(a.create_proposal("SN-1", b.public_key, "CUSTODIAN", terms="door to door")["txid"])
    both(a.create_proposal("SN-1", b.public_key, "REPORTER", ["where"])["txid"])
    both(b.answer_proposal("SN-1", b.public_key, "CUSTODIAN", "ACCEPT")["txid"])
    both(b.answer_proposal("SN-1", b.public_key, "REPORTER", "ACCEPT")["txid"])
    report = b.update_properties("SN-1", {"where": {"latitude": 48_137_154,
                                                    "longitude": 11_576_124}})
    both(report["txid"])
    with pytest.raises(ActionRefused, match="not an authorized reporter of weight"):
        b.update_properties("SN-1", {"weight": 1})

    log.info("A revokes B's reporting; custody returns to A; A finalizes")
    both(a.revoke_reporter("SN-1", b.public_key, ["where"])["txid"])
    with pytest.raises(ActionRefused, match="not an authorized reporter of where"):
        b.update_properties("SN-1", {"where": {"latitude": 0, "longitude": 0}})
    with pytest.raises(ActionRefused, match="both owner and custodian"):
        a.finalize_record("SN-1")
    both(b.create_proposal("SN-1", a.public_key, "CUSTODIAN")["txid"])
    both(a.answer_proposal("SN-1", a.public_key, "CUSTODIAN", "ACCEPT")["txid"])
    final = a.finalize_record("SN-1")
    both(final["txid"])
    with pytest.raises(ActionRefused, match="is final"):
        a.update_properties("SN-1", {"weight": 1})

    shown = b.show("record", "SN-1")
    assert shown["record"]["final"] is True
    assert [c["agent_id"] for c in shown["record"]["custodians"]] == [
        a.public_key, b.public_key, a.public_key]
    where = next(p for p in shown["properties"] if p["name"] == "where")
    assert where["values"] == [{"reporter_index": 1, "timestamp": where["values"][0]["timestamp"],
                                "value": {"latitude": 48_137_154, "longitude": 11_576_124}}]
    assert where["reporters"][1] == {"public_key": b.public_key, "authorized": False,
                                     "index": 1}
    assert shown["history"][0]["txid"] == final["txid"]
    assert shown["history"][-1]["txid"] == made["txid"]
    assert {p["role"]: p["status"] for p in shown["proposals"]} == {
        "CUSTODIAN": "ACCEPTED", "REPORTER": "ACCEPTED"}
    wait_same_state([a, b], lambda: a.client.call("getstreaminfo", "supplychain")["items"])
