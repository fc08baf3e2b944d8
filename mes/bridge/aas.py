"""The AAS Manager/Core exchange over Kafka (spec 3.5.4), with the bridge client's correlation.

One topic per Asset Administration Shell, named by its id, with two partitions: partition 0
is written by the Manager, partition 1 by the Core; each side reads only the other side's
partition (manual assignment, no consumer group), from the earliest offset, so a side that
starts late still sees the other's initial status. Record keys are ``<entity>-<kind>``
(entity ``manager`` or ``core``; kind ``status``, ``service-request`` or
``service-response``), values UTF-8 JSON objects:

    manager-status            {"status": {...}}
    manager-service-request   {"interaction_id": 17, "service": "getAssetData", "params": {...}}
    core-service-response     {"interaction_id": 17, "result": {...}}   or  {"error": "..."}

A service request draws an ``interaction_id`` in the same `PendingTable` the MES bridge
client uses, is registered, then produced (``acks=all``); the answer with that id completes
it; anything else (a late answer, garbage, an id never asked for) is ignored.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from mes.bridge import messages as m
from mes.bridge.client import (
    DEFAULT_TIMEOUT,
    BridgeError,
    BridgeTimeout,
    BridgeUnavailable,
    KafkaEndpoint,
    PendingTable,
    listen,
)

__all__ = ["MANAGER", "CORE", "PARTITIONS", "KINDS", "AasError", "AasEndpoint", "record_key",
           "parse_key"]

log = logging.getLogger(__name__)

MANAGER = "manager"
CORE = "core"
PARTITIONS = {MANAGER: 0, CORE: 1}
"""The partition each side writes."""
KINDS = ("status", "service-request", "service-response")
MAX_VALUE_BYTES = 256 * 1024

ServiceHandler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class AasError(BridgeError):
    """A service request answered with an error by the other side."""


def record_key(entity: str, kind: str) -> bytes:
    """``<entity>-<kind>`` as the record key."""
    if entity not in PARTITIONS or kind not in KINDS:
        raise ValueError(f"no record key for {entity!r}/{kind!r}")
    return f"{entity}-{kind}".encode()


def parse_key(key: bytes | None) -> tuple[str, str] | None:
    """(entity, kind) of a record key, or None for anything else."""
    if key is None:
        return None
    try:
        text = key.decode("ascii")
    except UnicodeDecodeError:
        return None
    entity, _, kind = text.partition("-")
    return (entity, kind) if entity in PARTITIONS and kind in KINDS else None


def _value(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None or len(raw) > MAX_VALUE_BYTES:
        return None
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _interaction_id(value: dict[str, Any]) -> int | None:
    iid = value.get("interaction_id")
    if isinstance(iid, int) and not isinstance(iid, bool) and 0 < iid <= m.MAX_INTERACTION_ID:
        return iid
    return None


class AasEndpoint(KafkaEndpoint):
    """One side (Manager or Core) of one AAS's topic."""

    def __init__(self, bootstrap_servers: str, aas_id: str, entity: str, *,
                 on_service: ServiceHandler | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        if entity not in PARTITIONS:
            raise ValueError(f"entity must be {MANAGER} or {CORE}")
        self.bootstrap_servers = bootstrap_servers
        self.aas_id = aas_id
        self.entity = entity
        self.peer = CORE if entity == MANAGER else MANAGER
        self.on_service = on_service
        self.timeout = timeout
        self.pending = PendingTable(entity)
        self.statuses: list[dict[str, Any]] = []
        """Statuses the other side published, oldest first."""
        self._status_seen = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._listener: asyncio.Task[None] | None = None
        self._served: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Read the other side's partition from the beginning; be ready to write ours."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap_servers, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    client_id=f"aas-{self.entity}")
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap_servers, acks="all",
                                    client_id=f"aas-{self.entity}")

        async def from_the_beginning(consumer: AIOKafkaConsumer) -> None:
            tp = TopicPartition(self.aas_id, PARTITIONS[self.peer])
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)

        await self._open(consumer, producer, from_the_beginning, f"aas {self.entity} listener")

    def _tasks(self) -> list[asyncio.Task[None]]:
        return [*super()._tasks(), *self._served]  # service requests still being answered

    async def _send(self, kind: str, value: dict[str, Any]) -> None:
        if self._producer is None:
            raise BridgeUnavailable("the AAS endpoint is not started")
        try:
            await self._producer.send_and_wait(self.aas_id, m.encode(value),
                                               key=record_key(self.entity, kind),
                                               partition=PARTITIONS[self.entity])
        except KafkaError as exc:
            raise BridgeUnavailable(f"sending to {self.aas_id}: {exc}") from None

    async def publish_status(self, status: dict[str, Any]) -> None:
        """Publish this side's status."""
        await self._send("status", {"status": status})

    async def wait_status(self, timeout: float | None = None) -> dict[str, Any]:
        """The other side's latest status, waiting for a first one if none came yet."""
        await asyncio.wait_for(self._status_seen.wait(),
                               self.timeout if timeout is None else timeout)
        return self.statuses[-1]

    async def request(self, service: str, params: dict[str, Any] | None = None, *,
                      timeout: float | None = None) -> dict[str, Any]:
        """Ask the other side for ``service``; its result, AasError for an error answer."""
        future: asyncio.Future[m.Response] = asyncio.get_running_loop().create_future()
        iid = self.pending.register(future)
        try:
            await self._send("service-request", {"interaction_id": iid, "service": service,
                                                 "params": params or {}})
            try:
                response = await asyncio.wait_for(future, self.timeout if timeout is None
                                                  else timeout)
            except TimeoutError:
                raise BridgeTimeout(f"no answer from the {self.peer} to {service} "
                                    f"(interaction {iid})") from None
        finally:
            self.pending.discard(iid)
        if response.kind == "error":
            raise AasError(str(response.error))
        return response.data if isinstance(response.data, dict) else {}

    async def _listen(self) -> None:
        if self._consumer is None:
            raise BridgeUnavailable("the AAS endpoint is not started")
        await listen(self._consumer, self.aas_id,
                     lambda record: self.on_record(record.key, record.value), timeout_ms=200)

    def on_record(self, key: bytes | None, raw: bytes | None) -> bool:
        """Handle one record of the other side; True when it was used."""
        parsed = parse_key(key)
        value = _value(raw)
        if parsed is None or value is None or parsed[0] != self.peer:
            log.debug("record on %s ignored (key %r)", self.aas_id, key)
            return False
        kind = parsed[1]
        if kind == "status" and isinstance(value.get("status"), dict):
            self.statuses.append(value["status"])
            self._status_seen.set()
            return True
        iid = _interaction_id(value)
        if iid is None:
            return False
        if kind == "service-response":
            header = m.Header(interaction_id=iid, client_id=self.entity)
            if isinstance(value.get("error"), str):
                return self.pending.resolve(m.Response(header, "error", error=value["error"]))
            if isinstance(value.get("result"), dict):
                return self.pending.resolve(m.Response(header, "data", data=value["result"]))
            return False
        if kind == "service-request" and self.on_service is not None and isinstance(
                value.get("service"), str) and isinstance(value.get("params", {}), dict):
            task = asyncio.create_task(self._serve(iid, value["service"], value.get("params", {})))
            self._served.add(task)
            task.add_done_callback(self._served.discard)
            return True
        return False

    async def _serve(self, iid: int, service: str, params: dict[str, Any]) -> None:
        if self.on_service is None:  # pragma: no cover - on_record checks it first
            return
        try:
            result = await self.on_service(service, params)
            answer: dict[str, Any] = {"interaction_id": iid, "result": result}
        except AasError as exc:
            answer = {"interaction_id": iid, "error": str(exc)}
        await self._send("service-response", answer)
