"""The MES side of the bridge: send a request on a BLK_* topic, get its answer (spec 3.5.4).

One `BridgeClient` per MES process. Its single response listener reads ``BLK_Res`` by
manual assignment of every partition (no consumer group, no offset commits), positioned at
the end before the first request goes out. A request draws an ``interaction_id``, is
registered in the pending table, and only then produced (``acks=all``, flushed), so an
answer cannot arrive before anyone waits for it. Anything on ``BLK_Res`` that is not an open
request of this client (another client's answer, an answer that came after its timeout,
garbage) is ignored, never taken as an answer or a stop signal.

    async with BridgeClient("127.0.0.1:9092", client_id="mes-1") as bridge:
        requests = await bridge.request(TOPIC_PART_LST, auth=master_token, start=0, limit=10)
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from config.errors import ChainmillError
from mes.bridge import messages as m

__all__ = ["BridgeError", "BridgeTimeout", "BridgeUnavailable", "PendingTable", "BridgeClient",
           "PRODUCER_OPTIONS", "LISTENER_OPTIONS", "DEFAULT_TIMEOUT", "listen", "new_interaction_id",
           "KafkaEndpoint"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 15.0
"""Seconds a caller waits for an answer (then HTTP 504)."""
PRODUCER_OPTIONS: dict[str, Any] = {"acks": "all"}
"""Every in-sync replica has the request before it counts as sent (the reference neither
waited nor flushed). No idempotent producer: not every Kafka-protocol broker grants producer
ids, and a retried duplicate is answered from the bridge's response store instead."""
LISTENER_OPTIONS: dict[str, Any] = {"group_id": None, "enable_auto_commit": False,
                                    "auto_offset_reset": "latest"}
_RECENT_EXPIRED = 1024


class BridgeError(ChainmillError):
    """The bridge could not be asked or did not answer."""


class BridgeTimeout(BridgeError):
    """No answer within the timeout; the request may still be executed by the bridge."""


class BridgeUnavailable(BridgeError):
    """The broker or the response topic cannot be reached."""


def new_interaction_id() -> int:
    """An interaction id to keep with a request that may have to be resent."""
    return secrets.randbelow(m.MAX_INTERACTION_ID) + 1


class PendingTable:
    """Open requests of one client, keyed by interaction id, with the futures that wait."""

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self._open: dict[int, asyncio.Future[m.Response]] = {}
        self._expired: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def register(self, future: asyncio.Future[m.Response], iid: int | None = None) -> int:
        """A fresh interaction id (random, so a restarted process does not reuse its ids)
        registered with ``future``; or ``iid``, a resend of a request that timed out (the
        bridge answers a resend from its duplicate store instead of executing it again)."""
        if iid is not None:
            if iid in self._open:
                raise BridgeError(f"interaction {iid} is already waiting for its answer")
            self._expired.pop(iid, None)
            self._open[iid] = future
            return iid
        while True:
            iid = secrets.randbelow(m.MAX_INTERACTION_ID) + 1
            if iid not in self._open and iid not in self._expired:
                self._open[iid] = future
                return iid

    def discard(self, iid: int) -> None:
        """Close ``iid`` (answered or timed out); a later answer to it is logged and dropped."""
        if self._open.pop(iid, None) is not None:
            self._expired[iid] = None
            while len(self._expired) > _RECENT_EXPIRED:
                self._expired.popitem(last=False)

    def resolve(self, response: m.Response) -> bool:
        """Complete the request ``response`` answers, if it is open here."""
        header = response.header
        if header.client_id != self.client_id or header.interaction_id is None:
            return False
        future = self._open.get(header.interaction_id)
        if future is None:
            if header.interaction_id in self._expired:
                log.info("late answer to interaction %d dropped", header.interaction_id)
            return False
        if not future.done():
            future.set_result(response)
        return True


async def listen(consumer: AIOKafkaConsumer, what: str,
                 handle: Callable[[ConsumerRecord], object], *, timeout_ms: int) -> None:
    """Hand every record the consumer reads to `handle`, until cancelled; a broker error is
    logged and retried, never the end of the listener (it is the outermost loop)."""
    while True:
        try:
            batches = await consumer.getmany(timeout_ms=timeout_ms)
        except KafkaError as exc:
            log.warning("reading %s: %s; retrying", what, exc)
            await asyncio.sleep(0.5)
            continue
        for records in batches.values():
            for record in records:
                handle(record)


class KafkaEndpoint(ABC):
    """What a Kafka client of this package shares: a producer, a consumer read by one
    listener task, `async with` support, and start/stop that leave nothing half open."""

    bootstrap_servers: str
    _producer: AIOKafkaProducer | None
    _consumer: AIOKafkaConsumer | None
    _listener: asyncio.Task[None] | None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @abstractmethod
    async def start(self) -> None:
        """Make the consumer and producer and hand them to `_open`."""

    @abstractmethod
    async def _listen(self) -> None:
        """The listener task: read the consumer until cancelled."""

    async def _open(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer,
                    position: Callable[[AIOKafkaConsumer], Awaitable[None]],
                    listener_name: str) -> None:
        """Start the consumer, `position` it (assign and seek), start the producer, then the
        listener; on any failure stop what was started (BridgeUnavailable for Kafka's)."""
        try:
            await consumer.start()
            self._consumer = consumer
            await position(consumer)
            await producer.start()
            self._producer = producer
        except KafkaError as exc:
            await self.stop()
            raise BridgeUnavailable(f"Kafka at {self.bootstrap_servers}: {exc}") from None
        except BaseException:
            await self.stop()
            raise
        self._listener = asyncio.create_task(self._listen(), name=listener_name)

    def _tasks(self) -> list[asyncio.Task[None]]:
        """The tasks `stop` cancels: the listener (and an endpoint's own)."""
        return [self._listener] if self._listener is not None else []

    async def stop(self) -> None:
        """Cancel the listener (and the endpoint's tasks), stop the producer and consumer."""
        tasks = self._tasks()
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._listener = None
        for client in (self._producer, self._consumer):
            if client is not None:
                await client.stop()
        self._producer = self._consumer = None


class BridgeClient(KafkaEndpoint):
    """Requests to the bridge over Kafka, each correlated with its answer."""

    def __init__(self, bootstrap_servers: str, client_id: str, *, timeout: float = DEFAULT_TIMEOUT,
                 kafka_options: Mapping[str, Any] | None = None,
                 listener_options: Mapping[str, Any] | None = None) -> None:
        if not m.is_client_id(client_id):
            raise BridgeError("client_id must be 1-64 letters, digits, '.', '_' or '-'")
        self.bootstrap_servers = bootstrap_servers
        self.client_id = client_id
        self.timeout = timeout
        self._kafka_options = dict(kafka_options or {})
        self._listener_options = dict(listener_options or {})
        """Consumer-only settings of the listener, e.g. fetch_max_wait_ms."""
        self.pending = PendingTable(client_id)
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the listener at the end of BLK_Res, then the producer."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap_servers,
                                    client_id=f"{self.client_id}-responses",
                                    **LISTENER_OPTIONS, **self._kafka_options,
                                    **self._listener_options)
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap_servers,
                                    client_id=f"{self.client_id}-requests",
                                    **PRODUCER_OPTIONS, **self._kafka_options)

        async def at_the_end(consumer: AIOKafkaConsumer) -> None:
            partitions = await self._response_partitions(consumer)
            consumer.assign(partitions)
            await consumer.seek_to_end(*partitions)
            # position() resolves the lazy seek now, before any request can be answered.
            for tp in partitions:
                await consumer.position(tp)

        await self._open(consumer, producer, at_the_end, f"{self.client_id} BLK_Res listener")

    async def _response_partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        partitions = consumer.partitions_for_topic(m.TOPIC_RES)
        if not partitions:
            await consumer._client.force_metadata_update()  # topics() would list all topics
            partitions = consumer.partitions_for_topic(m.TOPIC_RES)
        if not partitions:
            raise BridgeUnavailable(f"topic {m.TOPIC_RES} does not exist on {self.bootstrap_servers}")
        return [TopicPartition(m.TOPIC_RES, p) for p in sorted(partitions)]

    async def _listen(self) -> None:
        if self._consumer is None:
            raise BridgeUnavailable("bridge client is not started")
        await listen(self._consumer, m.TOPIC_RES, lambda record: self.on_record(record.value),
                     timeout_ms=500)

    def on_record(self, value: bytes | None) -> bool:
        """Handle one BLK_Res value: True when it answered an open request of this client."""
        try:
            response = m.parse_response(value)
        except m.MessageError as exc:
            log.debug("unreadable message on %s ignored: %s", m.TOPIC_RES, exc)
            return False
        return self.pending.resolve(response)

    async def request(self, topic: str, auth: str, body: Mapping[str, Any] | None = None, *,
                      start: int | None = None, limit: int | None = None,
                      timeout: float | None = None,
                      interaction_id: int | None = None) -> m.Response:
        """Send one request and return its answer (an ``error`` answer included).

        BridgeTimeout after ``timeout`` seconds (default: the client's); the interaction is
        closed then, so a late answer is dropped and never taken for another request's.
        ``interaction_id``: resend a request under the id it was first sent with (see
        `new_interaction_id`), so that the bridge executes it at most once.
        """
        if self._producer is None:
            raise BridgeUnavailable("bridge client is not started")
        future: asyncio.Future[m.Response] = asyncio.get_running_loop().create_future()
        iid = self.pending.register(future, interaction_id)
        try:
            header = m.Header(auth, iid, self.client_id, start, limit)
            raw = m.build_request(topic, header, body)
            try:
                await self._producer.send_and_wait(m.canonical_topic(topic), raw,
                                                   key=m.record_key(header),
                                                   headers=m.kafka_headers(header))
                await self._producer.flush()
            except KafkaError as exc:
                raise BridgeUnavailable(f"sending to {topic}: {exc}") from None
            try:
                return await asyncio.wait_for(future, self.timeout if timeout is None else timeout)
            except TimeoutError:
                raise BridgeTimeout(f"no answer on {m.TOPIC_RES} to {topic} request "
                                    f"{iid} within the timeout") from None
        finally:
            self.pending.discard(iid)
