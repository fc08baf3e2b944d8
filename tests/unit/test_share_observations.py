"""Observations from cnc_data rows (SensorThings shape), readers of each, downsampling."""

from __future__ import annotations

import json

import pytest

from mes.sharing.filters import parse_filter
from mes.sharing.observations import (
    Downsampler,
    Share,
    SharingError,
    check_system_name,
    observations_of,
    readers_of,
)

SYSTEM = "acme.plant1.cnc"
OWNER, B, C = "1OwnerAddressxxxxxxxxxx", "1PartnerBxxxxxxxxxxxxx", "1PartnerCxxxxxxxxxxxxx"


def row(ts: int = 1747379028, **payload) -> dict:
    payload = payload or {"status": "running", "spin": 1200, "X-Axis": 30.5, "seq": 7,
                          "flag": True, "nested": {"a": 1}}
    return {"cnc_id": "CNC001", "part_program": "program_01", "timestamp": ts,
            "json_data": json.dumps(payload), "payload_hash": "ab" * 32}


def by_variable(obs: list[dict]) -> dict[str, dict]:
    return {o["variable"]: o for o in obs}


def test_share_observation_shape() -> None:
    obs = by_variable(observations_of(SYSTEM, row(), 1747379030))
    assert set(obs) == {"status", "spin", "X-Axis"}, "seq, booleans and objects are skipped"
    spin = obs["spin"]
    assert spin["phenomenonTime"] == "2025-05-16T07:03:48Z"
    assert spin["resultTime"] == "2025-05-16T07:03:50Z"
    assert spin["result"] == 1200
    assert spin["Datastream"] == {"@iot.id": "acme.plant1.cnc/CNC001/spin"}
    assert spin["cnc_id"] == "CNC001" and spin["system"] == SYSTEM
    assert len(spin["@iot.id"]) == 64


def test_share_observation_id_is_stable_and_distinct() -> None:
    a = observations_of(SYSTEM, row(), 1)
    b = observations_of(SYSTEM, row(), 2)
    assert [o["@iot.id"] for o in a] == [o["@iot.id"] for o in b]
    assert len({o["@iot.id"] for o in a}) == len(a)
    assert observations_of("other.plant.cnc", row(), 1)[0]["@iot.id"] != a[0]["@iot.id"]


def test_share_readers_follow_filters() -> None:
    shares = [Share(1, SYSTEM, B, parse_filter("variable = spin AND result > 1000"))]
    obs = by_variable(observations_of(SYSTEM, row(), 1))
    sampler = Downsampler()
    assert readers_of(obs["spin"], shares, sampler, [OWNER]) == [OWNER, B]
    assert readers_of(obs["X-Axis"], shares, sampler, [OWNER]) == [OWNER]
    low = by_variable(observations_of(SYSTEM, row(spin=900), 1))["spin"]
    assert readers_of(low, shares, sampler, [OWNER]) == [OWNER]


def test_share_readers_ignore_other_systems() -> None:
    shares = [Share(1, "other.plant.cnc", C, parse_filter(""))]
    obs = observations_of(SYSTEM, row(), 1)[0]
    assert readers_of(obs, shares, Downsampler(), [OWNER]) == [OWNER]


def test_share_downsampling_one_per_interval() -> None:
    share = Share(1, SYSTEM, B, parse_filter("variable = spin"), every=60)
    sampler = Downsampler()
    passed = [t for t in range(0, 300, 10)
              if readers_of(by_variable(observations_of(SYSTEM, row(1_700_000_000 + t, spin=1), 1))
                            ["spin"], [share], sampler, [OWNER]) == [OWNER, B]]
    assert passed == [0, 60, 120, 180, 240]
    restarted = Downsampler(sampler.state)
    again = by_variable(observations_of(SYSTEM, row(1_700_000_250, spin=1), 1))["spin"]
    assert readers_of(again, [share], restarted, [OWNER]) == [OWNER]


@pytest.mark.parametrize("name", ["acme", "Acme.plant", "acme..cnc", "a" * 30 + ".cnc",
                                  "acme.plant/cnc", ".acme.cnc"])
def test_share_system_name_refused(name: str) -> None:
    with pytest.raises(SharingError):
        check_system_name(name)


def test_share_system_name_accepted() -> None:
    assert check_system_name("acme.plant1.cnc") == "acme.plant1.cnc"
