"""The API's list operation (spec 2.4: newest first, ties by id, start/limit <= 100) over a
real SQLite projection, and where the erp commands find their settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from erp_helpers import ADDRESS_OF, BLOCKTIME, act, key
from sqlalchemy import create_engine

from erp import settings
from erp.api import Erp
from erp.errors import ErpError
from erp.projection import Item, Projection

A, B, C = key(1), key(2), key(3)


def projected(tmp_path: Path, actions: list[dict]) -> Erp:
    engine = create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    projection = Projection(engine, "supplychain", ADDRESS_OF)
    projection.create()
    projection.apply([
        Item(position=n, txid=f"{n:064x}", vout=0, height=n, blockindex=0, blocktime=BLOCKTIME,
             publishers=(ADDRESS_OF(a["signer"]),), data=json.dumps(a).encode())
        for n, a in enumerate(actions)])
    # No node is needed to list: the acting agent's key and the address rule are given.
    return Erp(engine, None, address=ADDRESS_OF(B), public_key=B, address_of=ADDRESS_OF)


def requests(tmp_path: Path) -> Erp:
    setup = [act("CREATE_AGENT", k, name=f"agent {n}") for n, k in enumerate((A, B, C))]
    ids = ["3" * 32, "1" * 32, "2" * 32]
    made = [act("CREATE_PARTNER_REQUEST", A, BLOCKTIME - 10, partner_request_id=ids[0],
                receiving_agent=B),
            act("ANSWER_PARTNER_REQUEST", B, BLOCKTIME - 9, partner_request_id=ids[0],
                response=0),
            act("CREATE_PARTNER_REQUEST", A, BLOCKTIME - 5, partner_request_id=ids[1],
                receiving_agent=B),
            act("CREATE_PARTNER_REQUEST", C, BLOCKTIME - 5, partner_request_id=ids[2],
                receiving_agent=B)]
    return projected(tmp_path, setup + made)


def test_list_is_newest_first_with_ties_by_id(tmp_path: Path) -> None:
    erp = requests(tmp_path)
    listed = erp.list_partner_requests()
    assert [r["partner_request_id"] for r in listed] == ["1" * 32, "2" * 32, "3" * 32]
    assert [r["status"] for r in listed] == ["OPEN", "OPEN", "REJECTED"]
    assert set(listed[0]) == {"partner_request_id", "issuing_agent", "receiving_agent",
                              "status", "timestamp", "answer_timestamp", "transaction_ids"}
    assert [r["partner_request_id"] for r in erp.list_partner_requests(1, 1)] == ["2" * 32]
    assert erp.list_partner_requests(3, 10) == []
    assert erp.list_partner_requests(issued=True) == []  # B issued none


@pytest.mark.parametrize("start, limit", [(-1, 10), (0, 0), (0, 101), (True, 10), (0, "5")])
def test_list_paging_is_bounded(tmp_path: Path, start: object, limit: object) -> None:
    erp = requests(tmp_path)
    with pytest.raises(ErpError, match="start|limit"):
        erp.list_partner_requests(start, limit)  # type: ignore[arg-type]


def test_show_gives_the_object_with_its_history(tmp_path: Path) -> None:
    erp = requests(tmp_path)
    shown = erp.show("partner_request", "3" * 32)
    assert shown["partner_request"]["status"] == "REJECTED"
    assert [h["action"] for h in shown["history"]] == ["ANSWER_PARTNER_REQUEST",
                                                        "CREATE_PARTNER_REQUEST"]
    assert shown["partner_request"]["transaction_ids"] == [h["txid"] for h in
                                                           reversed(shown["history"])]
    with pytest.raises(ErpError, match="no partner_request"):
        erp.show("partner_request", "9" * 32)
    with pytest.raises(ErpError, match="unknown kind"):
        erp.show("invoice", "x")


def test_settings_come_from_option_environment_then_erp_conf(tmp_path: Path) -> None:
    with pytest.raises(ErpError, match="none has an erp.conf"):
        settings.resolve(None, str(tmp_path), None, None, None, environ={})
    stored = settings.Settings("trade", "sqlite:///a.db", "orders", "1Addr", tmp_path)
    settings.write(stored)
    assert (tmp_path / "trade" / "erp.conf").stat().st_mode & 0o777 == 0o600
    assert settings.resolve(None, str(tmp_path), None, None, None, environ={}) == stored
    env = {"CHAINMILL_ERP_DB": "sqlite:///env.db"}
    assert settings.resolve("trade", str(tmp_path), None, None, None, environ=env).db_url == \
        "sqlite:///env.db"
    assert settings.resolve("trade", str(tmp_path), "sqlite:///opt.db", "s", None,
                            environ=env).db_url == "sqlite:///opt.db"
    with pytest.raises(ErpError, match="no ERP database"):
        settings.resolve("other", str(tmp_path), None, None, None, environ={})


def test_pending_actions_of_one_second_apply_in_dependency_order(tmp_path: Path) -> None:
    """Own actions published within one second sort by txid in erp_pending; the overlay
    still sees a proposal to an agent whose creation sorts after it, and batch rows."""
    from sqlalchemy import insert

    from erp import schema

    setup = [act("CREATE_AGENT", A, name="owner"),
             act("CREATE_RECORD_TYPE", A, name="pallet",
                 properties=[{"name": "label", "data_type": "STRING", "required": False}]),
             act("CREATE_RECORD", A, record_id="SN-1", record_type="pallet", properties=[])]
    erp = projected(tmp_path, setup)
    erp.clock = lambda: BLOCKTIME
    proposal = act("CREATE_PROPOSAL", A, record_id="SN-1", receiving_agent=C, role="REPORTER",
                   properties=["label"], terms="")
    batch = [act("CREATE_RECORD", A, record_id=f"SN-{n}", record_type="pallet", properties=[])
             for n in (2, 3)] + [act("FINALIZE_RECORD", A, record_id="SN-2")]
    with erp.engine.begin() as conn:
        for txid, publisher, body in (("a" * 64, ADDRESS_OF(A), json.dumps(proposal)),
                                      ("e" * 64, ADDRESS_OF(C),
                                       json.dumps(act("CREATE_AGENT", C, name="reporter"))),
                                      ("b" * 64, ADDRESS_OF(A), json.dumps(batch))):
            conn.execute(insert(schema.pending).values(txid=txid, created=BLOCKTIME,
                                                       publisher=publisher, body=body))
    assert erp.current("proposals", ("SN-1", C, "REPORTER"))["status"] == "OPEN"
    assert erp.current("records", ("SN-2",))["final"] is True
    with erp.view() as state:
        assert state.get("records", ("SN-3",))["final"] is False
        assert state.get("agents", (C,))["name"] == "reporter"
