"""The MES client's pending table and Kafka options (spec 3.5.4), without a broker."""

from __future__ import annotations

import asyncio

import pytest

from mes.bridge import messages as m
from mes.bridge.client import (
    LISTENER_OPTIONS,
    PRODUCER_OPTIONS,
    BridgeClient,
    BridgeError,
    PendingTable,
)


def test_defect_requests_are_produced_with_acks_all() -> None:
    # The reference producer neither waited for acknowledgement nor flushed; the client
    # awaits send_and_wait and flush with these options (live test: mes_bridge_client.py).
    assert PRODUCER_OPTIONS["acks"] == "all"


def test_pending_listener_has_no_group_and_commits_nothing() -> None:
    assert LISTENER_OPTIONS == {"group_id": None, "enable_auto_commit": False,
                                "auto_offset_reset": "latest"}


def _answer(client_id: str | None, iid: int | None, text: str = "ok") -> m.Response:
    return m.parse_response(m.build_response(m.Header(interaction_id=iid, client_id=client_id)
                                             if iid else m.Header(auth="t"), message=text))


def test_pending_resolves_only_its_own_open_requests() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        table = PendingTable("mes-1")
        first, second = loop.create_future(), loop.create_future()
        a, b = table.register(first), table.register(second)
        assert a != b and 0 < a <= m.MAX_INTERACTION_ID and len(table) == 2
        assert not table.resolve(_answer("mes-2", a))      # another client's answer
        assert not table.resolve(_answer(None, None))      # an old client's answer (no ids)
        assert not table.resolve(_answer("mes-1", a + 1 if a + 1 != b else a + 2))
        assert not first.done()
        assert table.resolve(_answer("mes-1", b, "for b"))
        assert second.result().message == "for b" and not first.done()
        table.discard(a)
        assert not table.resolve(_answer("mes-1", a, "late"))  # late: dropped
        assert not first.done() and len(table) == 1

    asyncio.run(scenario())


def test_pending_client_refuses_a_bad_client_id() -> None:
    for bad in ("", "a b", "-x", "x" * 65):
        with pytest.raises(BridgeError):
            BridgeClient("127.0.0.1:1", bad)


def test_pending_client_ignores_garbage_on_the_response_topic() -> None:
    client = BridgeClient("127.0.0.1:1", "mes-1")
    for value in (None, b"", b"\xff", b"[{'auth': 'x'}]", b'[{"interaction_id":1,"client_id":"mes-1"},{}]'):
        assert client.on_record(value) is False
