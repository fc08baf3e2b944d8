"""200 malformed Kafka records on the request topics: each is answered with an error (when
its element 0 names the requester) or logged and skipped; the bridge keeps running and then
serves a good request (spec 3.5.2; every received byte is hostile).

How: one bridge in a thread on a single node; a raw producer writes 200 records built from a
seeded random mix of shapes (random bytes, broken UTF-8 and JSON, wrong structure, bad
fields per topic, key/header mismatches, an oversized value, unknown tokens) to random
request topics. Each record whose element 0 carried a client_id and interaction_id must get
exactly one error answer with that id; all 200 must be accounted for as answered or skipped.
Then the node is stopped: a request is answered with a node error and the bridge keeps
running; with the node back it serves again.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from framework import scaled, wait_until
from kafka_support import TOPIC_PARTITIONS, tansu_broker
from mes_bridge_support import BridgeThread, log, request

from mes.bridge import messages as m
from mes.bridge.store import open_engine

pytestmark = pytest.mark.functional

COUNT = 200
REQ_ID = "5f2b1c0e9a8d4e6fb3c2a1d0e9f8a7b6"


@pytest.fixture
def broker(tmp_path: Path, free_port_factory) -> str:
    with tansu_broker(tmp_path / "tansu", free_port_factory()) as bootstrap:
        yield bootstrap


def hostile(rng: random.Random, n: int) -> tuple[str, bytes, bytes | None, list, int | None]:
    """(topic, value, key, headers, interaction id the answer must carry or None)."""
    topic = rng.choice(m.LISTEN_TOPICS)
    iid = 1000 + n
    head = {"auth": "tok", "interaction_id": iid, "client_id": "fuzz"}
    kind = n % 12
    if kind == 0:
        return topic, rng.randbytes(rng.randint(0, 64)), None, [], None
    if kind == 1:
        return topic, b'[{"auth": "t"' + rng.randbytes(8), None, [], None
    if kind == 2:
        return topic, b"\xff\xfe" + json.dumps([head]).encode(), None, [], None
    if kind == 3:
        return topic, json.dumps(rng.choice([{}, [], 7, "x", [1, 2], [{}, {}, {}]])).encode(), \
            None, [], None
    if kind == 4:  # readable header, body of the wrong shape for the topic
        body = rng.choice([{"id": "nope", "response": 1}, {"action": "explode"},
                           {"id": REQ_ID, "response": 7}, {"action": "update_properties"}])
        value = [head, body] if topic not in (m.TOPIC_PART_LST, m.TOPIC_ACT_LST,
                                              m.TOPIC_ACT_LST_OLD) else [{**head, "limit": 0}]
        return topic, json.dumps(value).encode(), b"fuzz", [], iid
    if kind == 5:  # the record key names another client
        return topic, json.dumps([head, {"id": REQ_ID, "response": 1}]).encode(), b"other", [], iid
    if kind == 6:  # the interaction_id header disagrees
        return topic, json.dumps([head, {"id": REQ_ID, "response": 1}]).encode(), b"fuzz", \
            [("interaction_id", b"1")], iid
    if kind == 7:  # duplicate keys, NaN
        raw = rng.choice([b'[{"auth":"a","auth":"b","interaction_id":%d,"client_id":"fuzz"}]',
                          b'[{"auth":NaN,"interaction_id":%d,"client_id":"fuzz"}]'])
        return topic, raw % iid, None, [], None
    if kind == 8:  # header without auth
        return topic, json.dumps([{"interaction_id": iid, "client_id": "fuzz"}]).encode(), None, \
            [], iid
    if kind == 9:  # unknown token on a well-formed request
        return m.TOPIC_PART_LST, json.dumps([head]).encode(), b"fuzz", [], iid
    if kind == 10:  # oversized
        return topic, json.dumps([head, {"pad": "x" * (m.MAX_MESSAGE_BYTES + 10)}]).encode(), \
            None, [], None
    # deep nesting
    return topic, b"[" * 5000 + b"]" * 5000, None, [], None


def test_bridge_answers_or_skips_200_malformed_records(harness, broker: str,
                                                       tmp_path: Path) -> None:
    node = harness.start_node(chain="mesfuzz")
    bridge = BridgeThread(node, open_engine(f"sqlite:///{tmp_path / 'bridge.db'}"),
                          broker).start()
    rng = random.Random(harness.seed)
    records = [hostile(rng, n) for n in range(COUNT)]
    expected = {iid for *_, iid in records if iid is not None}
    try:
        async def flood() -> dict[int, list[m.Response]]:
            consumer = AIOKafkaConsumer(bootstrap_servers=broker, group_id=None,
                                        enable_auto_commit=False)
            producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all",
                                        max_request_size=2 * m.MAX_MESSAGE_BYTES)
            await consumer.start()
            await producer.start()
            try:
                tps = [TopicPartition(m.TOPIC_RES, p) for p in range(TOPIC_PARTITIONS)]
                consumer.assign(tps)
                await consumer.seek_to_end(*tps)
                for tp in tps:
                    await consumer.position(tp)
                for topic, value, key, headers, _ in records:
                    await producer.send(topic, value, key=key, headers=headers)
                await producer.flush()
                got: dict[int, list[m.Response]] = {}
                loop = asyncio.get_running_loop()
                deadline = loop.time() + scaled(60)
                while (bridge.service.answered + bridge.service.skipped < COUNT
                       or set(got) < expected) and loop.time() < deadline:
                    for batch in (await consumer.getmany(timeout_ms=200)).values():
                        for r in batch:
                            response = m.parse_response(r.value)
                            if response.header.client_id == "fuzz":
                                got.setdefault(response.header.interaction_id, []).append(
                                    response)
                return got
            finally:
                await producer.stop()
                await consumer.stop()

        got = asyncio.run(flood())
        log.info("answered %d, skipped %d", bridge.service.answered, bridge.service.skipped)
        assert set(got) == expected
        assert all(len(v) == 1 and v[0].kind == "error" and v[0].error_code is not None
                   for v in got.values())
        assert bridge.service.answered + bridge.service.skipped == COUNT
        assert bridge.service.skipped >= COUNT // 3  # the unreadable kinds

        log.info("the bridge still serves a good request")
        master = bridge.store.issue_master("fuzz MES")
        wait_until(lambda: bridge._thread.is_alive(), msg="bridge thread alive")
        answer = request(broker, m.TOPIC_PART_LST, master)
        assert answer.kind == "data" and answer.data == []

        log.info("the node stops: answered with a node error; back: served again")
        node.stop()
        down = request(broker, m.TOPIC_PART_LST, master)
        assert down.kind == "error" and "node error" in down.error, down
        node.start()
        answer = request(broker, m.TOPIC_ACT_LST, master)
        assert answer.kind == "data" and answer.data == []
        assert bridge.error is None
    finally:
        bridge.stop()
