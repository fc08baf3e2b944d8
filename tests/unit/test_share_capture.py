"""Shares and the forwarder's capture step on a real SQLite database (no node needed)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine

from mes.collector.message import CncMessage
from mes.collector.store import CncStore
from mes.sharing.filters import FilterError
from mes.sharing.forwarder import Forwarder
from mes.sharing.observations import SharingError
from mes.sharing.schema import PENDING, create_tables, cursors, outbox, systems
from mes.sharing.systems import add_share, end_share

SYSTEM = "acme.plant1.cnc"
OWNER = "1OwnerAddressxxxxxxxxxxxxxxxx"
B = "1PartnerBxxxxxxxxxxxxxxxxxxxx"
C = "1PartnerCxxxxxxxxxxxxxxxxxxxx"
T0 = 1_767_254_400


class NoNode:
    """Capture never talks to the node; any call is a test failure."""

    def call(self, method: str, *params):
        raise AssertionError(f"capture called {method}")


@pytest.fixture
def engine(tmp_path) -> Engine:
    engine = create_engine(f"sqlite:///{tmp_path / 'mes.db'}")
    create_tables(engine)
    with engine.begin() as conn:
        conn.execute(systems.insert().values(name=SYSTEM, owner_address=OWNER, description=""))
    return engine


def collect(engine: Engine, spins: list[int], start: int = T0) -> None:
    store = CncStore(engine)
    for n, spin in enumerate(spins):
        store.store(CncMessage("CNC001", "p1", start + 10 * n, {"spin": spin, "feed": 1.5}))


def captured(engine: Engine) -> list[tuple[float, list[str]]]:
    with engine.connect() as conn:
        rows = conn.execute(select(outbox).order_by(outbox.c.id)).all()
    assert {r.status for r in rows} <= {PENDING}
    return [(json.loads(r.observation)["result"], json.loads(r.readers)) for r in rows]


def test_share_capture_only_what_a_partner_may_read(engine) -> None:
    add_share(engine, SYSTEM, B, "variable = spin AND result > 1000")
    collect(engine, [900, 1100, 1500, 1000])
    forwarder = Forwarder(engine, NoNode())
    assert forwarder.capture() == 2
    assert captured(engine) == [(1100, [OWNER, B]), (1500, [OWNER, B])]
    assert forwarder.capture() == 0, "the cursor moved"
    with engine.connect() as conn:
        assert conn.execute(select(cursors.c.last_cnc_data_id)).scalar() == 4


def test_share_capture_two_partners_one_item(engine) -> None:
    add_share(engine, SYSTEM, B, "variable = spin AND result > 1000")
    add_share(engine, SYSTEM, C, "variable = feed")
    collect(engine, [1200])
    Forwarder(engine, NoNode()).capture()
    assert sorted(captured(engine), key=str) == sorted([(1200, [OWNER, B]), (1.5, [OWNER, C])],
                                                       key=str)


def test_share_capture_downsampling_survives_restart(engine) -> None:
    add_share(engine, SYSTEM, B, "variable = spin", every=60)
    collect(engine, [1, 2, 3, 4, 5, 6, 7])  # every 10 s
    Forwarder(engine, NoNode()).capture()
    collect(engine, [8, 9], start=T0 + 70)  # 70 s, 80 s: 70 is within 60 s of 60
    Forwarder(engine, NoNode()).capture()
    assert [r for r, _ in captured(engine)] == [1, 7]
    collect(engine, [10], start=T0 + 120)
    Forwarder(engine, NoNode()).capture()
    assert [r for r, _ in captured(engine)] == [1, 7, 10]


def test_share_ended_share_captures_nothing_more(engine) -> None:
    share_id = add_share(engine, SYSTEM, B, "variable = spin")
    collect(engine, [1])
    Forwarder(engine, NoNode()).capture()
    end_share(engine, share_id)
    collect(engine, [2], start=T0 + 100)
    Forwarder(engine, NoNode()).capture()
    assert [r for r, _ in captured(engine)] == [1]


@pytest.mark.parametrize("kwargs, error", [
    ({"partner": "not an address!"}, SharingError), ({"filter_text": "result >"}, FilterError),
    ({"every": -5}, SharingError), ({"system": "other.plant.cnc"}, SharingError),
])
def test_share_add_refuses_bad_input(engine, kwargs, error) -> None:
    args = {"system": SYSTEM, "partner": B, "filter_text": "", "every": 0, **kwargs}
    with pytest.raises(error):
        add_share(engine, args["system"], args["partner"], args["filter_text"], args["every"])


def test_share_end_unknown(engine) -> None:
    with pytest.raises(SharingError):
        end_share(engine, 999)
