"""The MES-side bridge client against a real Kafka-protocol broker (Tansu), spec 3.5.4.

A responder double stands in for the bridge (not built yet) on the real broker. Phases:
1. a list request is answered, an empty list counting as an answer;
2. two MES clients send concurrent requests, answered in shuffled order between garbage and
   foreign messages on BLK_Res: each request gets exactly its own answer;
3. a request times out; its late answer arrives before the next request's answer and is
   dropped, the next request gets its own answer.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from framework import scaled
from kafka_support import BridgeResponderDouble, tansu_broker, wait_for

from mes.bridge import messages as m
from mes.bridge.client import BridgeClient, BridgeTimeout

pytestmark = pytest.mark.functional

REQ_ID = "5f2b1c0e9a8d4e6fb3c2a1d0e9f8a7b6"


@pytest.fixture
def broker(tmp_path: Path, free_port_factory) -> str:
    with tansu_broker(tmp_path / "tansu", free_port_factory()) as bootstrap:
        yield bootstrap


def test_bridge_client_empty_list_is_an_answer(broker: str) -> None:
    async def scenario() -> m.Response:
        responder = BridgeResponderDouble(broker, lambda request: {"data": []})
        await responder.start()
        try:
            async with BridgeClient(broker, "mes-1", timeout=scaled(15)) as client:
                return await client.request(m.TOPIC_PART_LST, "tok-master", start=0, limit=10)
        finally:
            await responder.stop()

    response = asyncio.run(scenario())
    assert response.kind == "data" and response.data == []
    assert response.header.client_id == "mes-1" and response.header.auth is None


def test_bridge_client_concurrent_clients_never_receive_each_others_answers(broker: str) -> None:
    rng = random.Random(8)

    async def scenario() -> list[tuple[str, int, m.Response]]:
        batch: list[m.Request] = []
        responder = BridgeResponderDouble(broker, lambda request: batch.append(request))
        await responder.start()
        clients = [BridgeClient(broker, name, timeout=scaled(20)) for name in ("mes-1", "mes-2")]
        try:
            for client in clients:
                await client.start()
            sends = [(c, n) for c in clients for n in range(10)]
            tasks = [asyncio.create_task(c.request(m.TOPIC_PART_ANS, f"tok-{c.client_id}",
                                                   {"id": REQ_ID, "response": n % 2}))
                     for c, n in sends]
            await wait_for(lambda: len(batch) == len(sends), "the responder to receive every request")
            rng.shuffle(batch)
            for request in batch:
                await responder.send_raw(b"\x00garbage", key=request.header.client_id.encode())
                await responder.send_raw(m.build_response(
                    m.Header(interaction_id=request.header.interaction_id, client_id="mes-9"),
                    message="foreign"))
                await responder.respond(request, message=f"{request.header.auth}:"
                                        f"{request.header.interaction_id}:{request.body['response']}")
            results = await asyncio.gather(*tasks)
            return [(c.client_id, n, r) for (c, n), r in zip(sends, results, strict=True)]
        finally:
            for client in clients:
                await client.stop()
            await responder.stop()

    for client_id, n, response in asyncio.run(scenario()):
        assert response.kind == "message"
        auth, iid, answer = response.message.split(":")
        assert auth == f"tok-{client_id}" and int(answer) == n % 2
        assert response.header.client_id == client_id and int(iid) == response.header.interaction_id


def test_bridge_client_late_answer_is_not_taken_for_the_next_request(broker: str) -> None:
    async def scenario() -> tuple[m.Response, int]:
        first = True

        def answer(request: m.Request) -> dict | None:
            nonlocal first
            if first:
                first = False
                return None  # held: answered only after the client gave up
            return {"message": "second"}

        responder = BridgeResponderDouble(broker, answer)
        await responder.start()
        try:
            async with BridgeClient(broker, "mes-1") as client:
                with pytest.raises(BridgeTimeout):
                    await client.request(m.TOPIC_ACT_LST, "tok-master", timeout=scaled(1))
                await wait_for(lambda: bool(responder.held), "the held request")
                # The late answer goes first on the same key, so the listener reads it first.
                await responder.respond(responder.held[0], message="late")
                response = await client.request(m.TOPIC_ACT_LST, "tok-master", timeout=scaled(15))
                return response, len(client.pending)
        finally:
            await responder.stop()

    response, still_open = asyncio.run(scenario())
    assert response.message == "second" and still_open == 0
