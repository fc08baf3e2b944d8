"""The bridge service: BLK_* requests from Kafka -> the node and erp/ -> BLK_Res (spec 3.5).

One consumer in a consumer group reads every request topic (REQUEST_TOPICS and the old
spelling BLK_ACT_Lst). For each record, in order:

1. parse it (`messages.parse_request`); a malformed one is answered with an error when its
   element 0 could be read, otherwise logged and skipped;
2. a request older than the dedup window is answered with an error and not executed (a
   duplicate of it could no longer be recognised);
3. claim (client_id, interaction_id) in the response store: answered already -> the stored
   response goes out again and nothing is executed (lists change nothing and skip this);
4. execute it (`Executor`, in the bridge's one worker thread), store the response, produce it
   on BLK_Res (``acks=all``, keyed by client_id, interaction_id as a header).

Offsets are committed by hand after a batch's responses are stored and acknowledged by
the broker. A bridge
killed anywhere re-reads from the last commit: what was answered is answered again from the
store, what was half executed is executed again in retry mode (see executor), so no request
is lost and none is executed twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata
from sqlalchemy import exc as sa_exc

from config.errors import ChainmillError
from erp.errors import ErpError
from mes.bridge import messages as m
from mes.bridge.executor import EXPIRED, UNAVAILABLE, Executor
from mes.bridge.store import BridgeStore
from triggers.nodes import rpc_errors

__all__ = ["BridgeService", "DEFAULT_GROUP", "BridgeServiceError"]

log = logging.getLogger(__name__)

DEFAULT_GROUP = "chainmill-mes-bridge"
_PURGE_EVERY = 60.0
_RETRY_PAUSE = 1.0
TOPIC_PARTITIONS = 3
"""Partitions of a topic the bridge creates (requests of one client stay ordered by key)."""
_MAX_ATTEMPTS = 3
_READ_ONLY = (m.TOPIC_PART_LST, m.TOPIC_ACT_LST)
_OUTAGES = (sa_exc.OperationalError, sa_exc.InterfaceError)
"""Database errors of the connection, not of the request: retried until the database is back."""
T = TypeVar("T")


class BridgeServiceError(ChainmillError):
    """The bridge cannot start (broker unreachable, bad settings)."""


class BridgeService:
    """Consumes BLK_* requests, executes them, answers on BLK_Res."""

    def __init__(self, executor: Executor, store: BridgeStore, bootstrap_servers: str, *,
                 group_id: str = DEFAULT_GROUP, topics: tuple[str, ...] = m.LISTEN_TOPICS,
                 kafka_options: Mapping[str, Any] | None = None,
                 consumer_options: Mapping[str, Any] | None = None,
                 clock: Callable[[], float] = time.time, idle_ms: int = 200) -> None:
        self.executor = executor
        self.store = store
        self.bootstrap_servers = bootstrap_servers
        self.group_id = group_id
        self.topics = topics
        self.clock = clock
        self.idle_ms = idle_ms
        self._kafka_options = dict(kafka_options or {})
        self._consumer_options = dict(consumer_options or {})
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mes-bridge")
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._stopping = asyncio.Event()
        self._purged = 0.0
        self._failures: dict[tuple[str, int, int], int] = {}
        self._in_flight: list[asyncio.Future[Any]] = []
        self.answered = 0
        """Responses produced (including re-sent stored ones and errors)."""
        self.skipped = 0
        """Records that could not be answered (no readable element 0)."""

    async def _in_worker(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, lambda: fn(*args, **kwargs))

    async def start(self) -> None:
        """Connect the producer and join the consumer group."""
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap_servers,
                                    client_id="chainmill-mes-bridge", acks="all",
                                    **self._kafka_options)
        consumer = AIOKafkaConsumer(*self.topics, bootstrap_servers=self.bootstrap_servers,
                                    client_id="chainmill-mes-bridge", group_id=self.group_id,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    **self._kafka_options, **self._consumer_options)
        try:
            await self._ensure_topics()
            await producer.start()
            self._producer = producer
            await consumer.start()
            self._consumer = consumer
        except KafkaError as exc:
            await self.close()
            raise BridgeServiceError(f"Kafka at {self.bootstrap_servers}: {exc}") from None
        log.info("bridge consuming %s as group %s", ", ".join(self.topics), self.group_id)

    async def _ensure_topics(self) -> None:
        """Create the request topics and BLK_Res where the broker has none yet, so a fresh
        broker needs no set-up; topics that exist are left as they are."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers,
                                    client_id="chainmill-mes-bridge", **self._kafka_options)
        await admin.start()
        try:
            have = set(await admin.list_topics())
            missing = [t for t in dict.fromkeys((*self.topics, m.TOPIC_RES)) if t not in have]
            if missing:
                try:
                    await admin.create_topics([NewTopic(t, TOPIC_PARTITIONS, 1)
                                               for t in missing])
                except TopicAlreadyExistsError:  # another bridge was quicker
                    pass
                log.info("created Kafka topics %s (%d partitions)", ", ".join(missing),
                         TOPIC_PARTITIONS)
        finally:
            await admin.close()

    def stop(self) -> None:
        """Ask `run` to return after the record in hand (callable from a signal handler
        through loop.call_soon_threadsafe)."""
        self._stopping.set()

    async def close(self) -> None:
        for client in (self._consumer, self._producer):
            if client is not None:
                try:
                    await client.stop()
                except KafkaError as exc:  # leaving anyway
                    log.warning("closing a Kafka client: %s", exc)
        self._consumer = self._producer = None
        self._worker.shutdown(wait=True)

    async def run(self) -> None:
        """Serve until `stop` is called."""
        consumer = self._consumer
        if consumer is None:
            raise BridgeServiceError("the bridge is not started")
        while not self._stopping.is_set():
            try:
                batches = await consumer.getmany(timeout_ms=self.idle_ms, max_records=200)
            except KafkaError as exc:  # the outermost loop: keep serving
                log.warning("reading the request topics: %s; retrying", exc)
                await asyncio.sleep(_RETRY_PAUSE)
                continue
            if not batches:
                await self._idle()
                continue
            for tp, records in batches.items():
                await self._serve_partition(consumer, tp, records)

    async def _serve_partition(self, consumer: AIOKafkaConsumer, tp: TopicPartition,
                               records: list[ConsumerRecord]) -> None:
        done = None
        for record in records:
            where = (tp.topic, tp.partition, record.offset)
            try:
                await self.handle(record)
            except _OUTAGES as exc:  # the bridge's database is down: not the request's fault
                log.warning("request at %s[%d] offset %d waits for the bridge's database: %s",
                            *where, exc)
                consumer.seek(tp, record.offset)
                await asyncio.sleep(_RETRY_PAUSE)
                break
            except Exception:  # the outermost loop: keep serving, retry this record
                failures = self._failures.get(where, 0) + 1
                log.exception("request at %s[%d] offset %d failed (attempt %d)", *where, failures)
                if failures < _MAX_ATTEMPTS:
                    self._failures[where] = failures
                    consumer.seek(tp, record.offset)
                    await asyncio.sleep(_RETRY_PAUSE)
                    break
                # A record that fails every time must not stall the topic behind it.
                try:
                    await self._give_up(record)
                except Exception:  # not even the error answer: keep the record for later
                    log.exception("answering the failed request at %s[%d] offset %d; "
                                  "retrying it", *where)
                    consumer.seek(tp, record.offset)
                    await asyncio.sleep(_RETRY_PAUSE)
                    break
                self._failures.pop(where, None)
            else:
                self._failures.pop(where, None)
            done = record.offset
        if not await self._acknowledged():
            consumer.seek(tp, records[0].offset)  # answered again, from the store
            await asyncio.sleep(_RETRY_PAUSE)
            return
        if done is not None:
            try:
                await consumer.commit({tp: OffsetAndMetadata(done + 1, "")})
            except KafkaError as exc:
                # Not fatal: the records are answered and stored, a re-delivery is
                # answered from the store.
                log.warning("committing %s[%d] offset %d: %s", tp.topic, tp.partition, done + 1,
                            exc)

    async def _give_up(self, record: ConsumerRecord) -> None:
        try:
            header = m.parse_request(record.topic, record.value, key=record.key,
                                     headers=record.headers or ()).header
        except m.MessageError:  # pragma: no cover - handle() answers those itself
            return
        raw = m.build_response(header, error="internal error executing the request; see the "
                                             "bridge's log", error_code=UNAVAILABLE)
        if header.client_id is not None and header.interaction_id is not None:
            await self._in_worker(self.store.finish, header.client_id, header.interaction_id, raw)
        await self._produce(header, raw)

    async def _idle(self) -> None:
        try:
            await self._in_worker(self.executor.follow)
        except (*rpc_errors(), ErpError) as exc:  # the node may be restarting: keep serving
            log.warning("following the chain: %s", exc)
            await asyncio.sleep(_RETRY_PAUSE)
        await self._purge_now_and_then()

    async def _purge_now_and_then(self) -> None:
        """Drop stored responses past the dedup window, once per _PURGE_EVERY (also under
        steady load, when the bridge is never idle)."""
        now = self.clock()
        if now - self._purged > _PURGE_EVERY:
            self._purged = now
            dropped = await self._in_worker(self.store.purge)
            if dropped:
                log.debug("dropped %d stored responses past the dedup window", dropped)

    async def handle(self, record: ConsumerRecord) -> None:
        """Answer one Kafka record of a request topic."""
        await self._purge_now_and_then()
        try:
            request = m.parse_request(record.topic, record.value, key=record.key,
                                      headers=record.headers or ())
        except m.MessageError as exc:
            if exc.header is None:
                self.skipped += 1
                log.warning("unreadable record at %s[%d] offset %d skipped: %s", record.topic,
                            record.partition, record.offset, exc)
                return
            log.info("refused record at %s[%d] offset %d: %s", record.topic, record.partition,
                     record.offset, exc)
            await self._produce(exc.header, m.build_response(exc.header, error=str(exc),
                                                             error_code=exc.code))
            return
        header = request.header
        age = self.clock() - record.timestamp / 1000 if record.timestamp else 0.0
        if age > self.store.window:
            await self._produce(header, m.build_response(
                header, error=f"request is {age:.0f} s old, beyond the {self.store.window:.0f} s "
                              "dedup window; not executed", error_code=EXPIRED))
            return
        if header.client_id is None or header.interaction_id is None or (
                request.topic in _READ_ONLY) or (
                await self._in_worker(self.store.lookup, header.auth)) is None:
            # An old client: nothing to deduplicate by. A list changes nothing, so a
            # duplicate is simply executed again (two commits less per list request). An
            # unknown token is refused by the executor and claims no row of the store.
            outcome = await self._in_worker(self.executor.execute, request)
            await self._produce(header, m.build_response(header, **outcome))
            return
        state, stored = await self._in_worker(self.store.begin, header.client_id,
                                              header.interaction_id, _request_hash(request))
        if state == "reused":
            log.warning("%s reused interaction %d for another request; not executed",
                        header.client_id, header.interaction_id)
            await self._produce(header, m.build_response(
                header, error=f"interaction_id {header.interaction_id} was used for another "
                              "request within the dedup window; not executed",
                error_code=m.INVALID_PARAMETER))
            return
        if state == "done" and stored is not None:
            log.info("duplicate of %s interaction %d answered from the store", header.client_id,
                     header.interaction_id)
            await self._produce(header, stored)
            return
        outcome = await self._in_worker(self.executor.execute, request,
                                        retry=state == "started")
        raw = m.build_response(header, **outcome)
        await self._in_worker(self.store.finish, header.client_id, header.interaction_id, raw)
        await self._produce(header, raw)

    async def _produce(self, header: m.Header, raw: bytes) -> None:
        """Queue a response; `_acknowledged` waits for the broker before offsets are
        committed (one round trip per batch, not per request; order is kept per key)."""
        if self._producer is None:
            raise BridgeServiceError("the bridge is not started")
        self._in_flight.append(await self._producer.send(
            m.TOPIC_RES, raw, key=m.record_key(header), headers=m.kafka_headers(header)))
        self.answered += 1

    async def _acknowledged(self) -> bool:
        """Whether every queued response reached the broker (acks=all)."""
        pending, self._in_flight = self._in_flight, []
        try:
            await asyncio.gather(*pending)
        except KafkaError as exc:
            log.warning("responses not acknowledged by the broker: %s; answering again", exc)
            return False
        return True


def _request_hash(request: m.Request) -> str:
    """What a duplicate must share with the request it repeats: topic, token and body."""
    what = [request.topic, request.header.auth, request.body]
    return hashlib.sha256(json.dumps(what, sort_keys=True, ensure_ascii=False,
                                     separators=(",", ":")).encode()).hexdigest()


async def serve(service: BridgeService, ready: Callable[[], None] | None = None) -> None:
    """Start, run until stopped, close."""
    await service.start()
    try:
        if ready is not None:
            ready()
        await service.run()
    finally:
        await service.close()
