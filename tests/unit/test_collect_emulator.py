"""The emulator's machine model: valid messages, realistic running/idle/error periods."""

from __future__ import annotations

import json
from collections import Counter

from mes.collector.emulator import PERIODS, samples
from mes.collector.message import validate

START = 1_767_254_400


def test_collect_emulator_messages_pass_validation() -> None:
    messages = list(samples(["CNC001", "CNC002"], seed=7, start=START, step=10, count=200))
    assert len(messages) == 200
    for m in messages:
        validate(json.dumps(m).encode(), {"CNC001", "CNC002"}, START + 10_000)


def test_collect_emulator_states_and_values_agree() -> None:
    messages = list(samples(["CNC001"], seed=3, start=START, step=30, count=3000))  # 25 h
    states = Counter(m["payload"]["status"] for m in messages)
    assert set(states) == {"running", "idle", "error"}
    assert states["running"] > states["error"]
    for m in messages:
        p = m["payload"]
        if p["status"] != "running":
            assert p["spin"] == 0 and p["feed"] == 0.0
        assert ("alarm" in p) == (p["status"] == "error")
        assert all(0 <= p[axis] <= 500 for axis in ("X-Axis", "Y-Axis", "Z-Axis"))


def test_collect_emulator_periods_last_realistically() -> None:
    messages = list(samples(["CNC001"], seed=11, start=START, step=10, count=20_000))
    runs, current, length = [], None, 0
    for m in messages:
        status = m["payload"]["status"]
        if status == current:
            length += 10
        else:
            if current is not None:
                runs.append((current, length))
            current, length = status, 10
    for status, seconds in runs[1:]:  # the first period may have started before START
        low, high = PERIODS[status]
        assert low - 10 <= seconds <= high + 10, (status, seconds)


def test_collect_emulator_is_deterministic_per_seed() -> None:
    a = list(samples(["CNC001"], seed=5, start=START, step=10, count=50))
    b = list(samples(["CNC001"], seed=5, start=START, step=10, count=50))
    assert a == b
    assert len({m["payload"]["seq"] for m in a}) == 50
