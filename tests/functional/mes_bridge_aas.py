"""The AAS Manager/Core exchange over a real Kafka-protocol broker (Tansu), spec 3.5.4.

How: one topic for the AAS with two partitions. The Core starts first and publishes its
status; the Manager starts later and still sees it (reads from the earliest offset), then
publishes its own. The Manager sends five concurrent service requests and one the Core
answers with an error; garbage and a foreign answer on the Core's partition are ignored.
At the end the raw partitions show each side wrote only its own, with `<entity>-<kind>` keys.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from framework import scaled
from kafka_support import tansu_broker

from mes.bridge import messages as m
from mes.bridge.aas import CORE, MANAGER, AasEndpoint, AasError

pytestmark = pytest.mark.functional

AAS = "aas-press-07"


@pytest.fixture
def broker(tmp_path: Path, free_port_factory) -> str:
    with tansu_broker(tmp_path / "tansu", free_port_factory()) as bootstrap:
        yield bootstrap


async def core_service(service: str, params: dict[str, Any]) -> dict[str, Any]:
    if service != "getAssetData":
        raise AasError(f"no service {service}")
    await asyncio.sleep(0.01 * (5 - params.get("n", 0)))  # later requests answered first
    return {"temperature": 21.5, "n": params.get("n")}


def test_aas_manager_and_core_exchange_status_and_services(broker: str) -> None:
    async def scenario() -> dict[int, list[bytes]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(AAS, 2, 1)])
        finally:
            await admin.close()

        async with AasEndpoint(broker, AAS, CORE, on_service=core_service,
                               timeout=scaled(20)) as core:
            await core.publish_status({"state": "idle"})
            async with AasEndpoint(broker, AAS, MANAGER, timeout=scaled(20)) as manager:
                assert await manager.wait_status() == {"state": "idle"}  # the late starter
                await manager.publish_status({"state": "running"})
                assert await core.wait_status() == {"state": "running"}

                results = await asyncio.gather(*(manager.request("getAssetData", {"n": n})
                                                 for n in range(5)))
                assert [r["n"] for r in results] == list(range(5))
                with pytest.raises(AasError, match="no service reboot"):
                    await manager.request("reboot")

                producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
                await producer.start()
                try:
                    for key, value in ((b"core-service-response", b"\x00garbage"),
                                       (b"core-service-response",
                                        m.encode({"interaction_id": 99, "result": {"x": 1}})),
                                       (b"someone-else", m.encode({"status": {}}))):
                        await producer.send_and_wait(AAS, value, key=key, partition=1)
                finally:
                    await producer.stop()
                again = await manager.request("getAssetData", {"n": 4})
                assert again == {"temperature": 21.5, "n": 4}
                assert manager.statuses == [{"state": "idle"}]
                assert core.statuses == [{"state": "running"}]

        consumer = AIOKafkaConsumer(bootstrap_servers=broker, group_id=None,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(AAS, 0), TopicPartition(AAS, 1)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            keys: dict[int, list[bytes]] = {0: [], 1: []}
            while sum(len(v) for v in keys.values()) < sum(ends.values()):
                for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                    keys[tp.partition] += [r.key for r in records]
            return keys
        finally:
            await consumer.stop()

    keys = asyncio.run(scenario())
    assert set(keys[0]) == {b"manager-status", b"manager-service-request"}
    assert keys[0].count(b"manager-service-request") == 7
    theirs = [k for k in keys[1] if k != b"someone-else"]
    assert set(theirs) == {b"core-status", b"core-service-response"}
    assert theirs.count(b"core-service-response") == 7 + 2  # 7 answers + the 2 injected
