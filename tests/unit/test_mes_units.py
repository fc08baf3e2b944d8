"""Production-unit changes (spec 3.2): outbox, change detection, record type and reporter once."""

from __future__ import annotations

import asyncio

import pytest
from mes_contract_fake import mes_world
from sqlalchemy import select

from mes import schema
from mes.bridge import messages as m
from mes.bridge.client import BridgeError, BridgeTimeout
from mes.units import UnitError, UnitSender, UnitUpdater, changed_properties


@pytest.fixture
def world(tmp_path):
    yield from mes_world(tmp_path)


def test_mes_units_changed_properties_sends_only_differences() -> None:
    assert changed_properties(None, "RUNNING", None) == [
        {"name": "Status", "data_type": "STRING", "value": "RUNNING"}]
    sent = {"status": "RUNNING", "process_name": "milling"}
    assert changed_properties(sent, "RUNNING", "milling") == []
    assert changed_properties(sent, "STOPPED", "milling") == [
        {"name": "Status", "data_type": "STRING", "value": "STOPPED"}]
    assert [p["name"] for p in changed_properties(sent, None, "drilling")] == ["ProcessName"]


def test_mes_units_updater_refuses_bad_changes_and_writes_nothing(world) -> None:
    engine, _, _ = world
    updater = UnitUpdater(engine)
    for args, message in ((("X", None, 99), "no production unit"),
                          ((None, None, 10), "status or a process name"),
                          (("x" * 201, None, 10), "at most 200"),
                          (("a\nb", None, 10), "control"),
                          (("X", None, "10"), "integer")):
        with pytest.raises(UnitError, match=message):
            updater.update_production_unit(*args)
    with engine.connect() as conn:
        assert conn.execute(select(schema.unit_outbox)).all() == []


def test_mes_units_three_updates_send_changed_values_once_each(world) -> None:
    engine, tokens, bridge = world
    woken = []
    updater = UnitUpdater(engine, notify=lambda: woken.append(1))
    sender = UnitSender(engine, tokens, bridge)
    updater.update_production_unit("RUNNING", "milling", 10)
    updater.update_production_unit("RUNNING", "milling", 10)  # unchanged: nothing sent
    updater.update_production_unit("STOPPED", None, 10)        # partial: only Status
    assert len(woken) == 3
    assert asyncio.run(sender.send_pending()) == 3
    contract = bridge.contract
    assert [h["values"] for h in contract.history["PT10"]] == [
        {"Status": "RUNNING", "ProcessName": "milling"}, {"Status": "STOPPED"}]
    actions = [r.action for r in contract.requests]
    assert actions == ["ensure_record_type", "ensure_reporter", "update_properties",
                       "update_properties"]
    assert tokens.reporter(10).record_id == "PT10"
    with engine.connect() as conn:
        assert all(r.sent_at for r in conn.execute(select(schema.unit_outbox)))
        sent = conn.execute(select(schema.unit_sent)).mappings().one()
    assert (sent["status"], sent["process_name"]) == ("STOPPED", "milling")
    # A new process: the record type is ensured again ("already exists" is success), the
    # stored reporter is reused.
    updater.update_production_unit("RUNNING", None, 10)
    asyncio.run(UnitSender(engine, tokens, bridge).send_pending())
    assert [r.action for r in contract.requests[4:]] == ["ensure_record_type", "update_properties"]
    assert contract.history["PT10"][-1]["values"] == {"Status": "RUNNING"}


def test_mes_units_bridge_away_keeps_the_change_queued(world) -> None:
    engine, tokens, bridge = world

    class AwayBridge:
        async def request(self, *args, **kwargs):
            raise BridgeError("broker away")

    UnitUpdater(engine).update_production_unit("RUNNING", None, 10)
    with pytest.raises(BridgeError):
        asyncio.run(UnitSender(engine, tokens, AwayBridge()).send_pending())
    assert asyncio.run(UnitSender(engine, tokens, bridge).send_pending()) == 1
    assert bridge.contract.history["PT10"][0]["values"] == {"Status": "RUNNING"}


def test_mes_units_resend_after_a_timeout_keeps_the_interaction_id(world) -> None:
    """The bridge deduplicates by (client_id, interaction_id): a resend of a change whose
    answer timed out must carry the id of the first send, or the unit is updated twice."""
    engine, tokens, bridge = world
    seen: list[int | None] = []

    class SlowBridge:  # the first update's answer never arrives in time
        async def request(self, topic, auth, body=None, **kwargs):
            if body and body.get("action") == "update_properties":
                seen.append(kwargs.get("interaction_id"))
                if len(seen) == 1:
                    raise BridgeTimeout("no answer in time")
            return await bridge.request(topic, auth, body, **kwargs)

    UnitUpdater(engine).update_production_unit("RUNNING", None, 10)
    sender = UnitSender(engine, tokens, SlowBridge())
    with pytest.raises(BridgeTimeout):
        asyncio.run(sender.send_one())
    assert asyncio.run(sender.send_one())
    assert len(seen) == 2 and seen[0] is not None and seen[0] == seen[1]
    UnitUpdater(engine).update_production_unit("STOPPED", None, 10)
    assert asyncio.run(sender.send_one())
    assert seen[2] is not None and seen[2] != seen[0]  # the next change: a new id


def test_mes_units_refused_update_is_set_aside_after_retries(world) -> None:
    engine, tokens, bridge = world
    tokens.add_reporter(10, "not-a-reporter-token", "03" + "00" * 32, "PT10")
    UnitUpdater(engine).update_production_unit("RUNNING", None, 10)
    sender = UnitSender(engine, tokens, bridge)
    for _ in range(5):
        asyncio.run(sender.send_one())
    assert not asyncio.run(sender.send_one())  # given up: the outbox is empty now
    with engine.connect() as conn:
        row = conn.execute(select(schema.unit_outbox)).mappings().one()
    assert row["attempts"] == 5 and row["sent_at"] < 0 and "reporter" in row["error"]
    updates = [r for r in bridge.contract.requests if r.action == "update_properties"]
    assert len(updates) == 5 and all(r.topic == m.TOPIC_REC for r in updates)
    assert "PT10" not in bridge.contract.history


def test_mes_units_reference_call_through_a_sender_thread(world) -> None:
    """A non-asyncio MES process: mes.update_production_unit queues, the sender thread sends."""
    import threading

    import mes
    from mes import units

    engine, tokens, bridge = world
    sent = threading.Event()

    class Context:
        async def __aexit__(self, *exc):
            return None

    async def make():
        return UnitSender(engine, tokens, bridge), Context()

    thread = units.SenderThread(make)
    thread.start()
    try:
        units.install(UnitUpdater(engine, notify=thread.wake))
        bridge.after = lambda request, response: (request.action == "update_properties"
                                                  and sent.set())
        assert mes.update_production_unit("RUNNING", "milling", 10) == 1
        assert sent.wait(30)
    finally:
        thread.stop()
        units._installed.clear()
    assert bridge.contract.history["PT10"][0]["values"] == {"Status": "RUNNING",
                                                           "ProcessName": "milling"}
    with pytest.raises(UnitError, match="no unit updater"):
        mes.update_production_unit("RUNNING", None, 10)


def test_mes_units_two_processes_never_send_the_same_change(world) -> None:
    import datetime as dt

    from mes.lease import SchedulerLock

    engine, tokens, bridge = world
    UnitUpdater(engine).update_production_unit("RUNNING", None, 10)
    other = SchedulerLock(engine, "other-host:7", name="units")
    assert other.acquire(dt.datetime.now(dt.UTC))  # the other process is sending
    mine = UnitSender(engine, tokens, bridge, lock=SchedulerLock(engine, "this-host:1", name="units"))
    assert asyncio.run(mine.send_pending()) == 0 and bridge.contract.requests == []
    other.release()
    assert asyncio.run(mine.send_pending()) == 1
    assert other.acquire(dt.datetime.now(dt.UTC))  # released again after sending
