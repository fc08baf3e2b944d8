"""The MES HTTP service (spec 3.5.5 and 3.2): bridge endpoints, the unit PATCH, OpenAPI.

One process holds one `BridgeClient` (one response listener, spec 3.5.4), started on the first
request that needs it and started again after the broker was lost, so the service comes up
and answers 502 while the broker is down instead of refusing to start. Status codes: a bad
``ID``/``Response``/``start``/``limit`` 400; the bridge's error, or no broker, 502 with the
error text; no answer within the timeout 504. The unit PATCH commits the unit and its outbox
row in one transaction and returns; the sender task publishes it off the request thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from importlib import resources
from typing import Any

from aiohttp import web
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from mes import schema
from mes.bridge import endpoints
from mes.bridge import messages as m
from mes.bridge.client import (
    DEFAULT_TIMEOUT,
    BridgeClient,
    BridgeError,
    BridgeTimeout,
    BridgeUnavailable,
)
from mes.daily import DayReportScheduler
from mes.lease import SchedulerLock, default_holder
from mes.tokens import TokenStore
from mes.units import UnitError, UnitSender, UnitUpdater

__all__ = ["LazyBridge", "MesService", "build_app", "MAX_BODY", "UNIT_PATH"]

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
UNIT_PATH = "/api/productionunit/{unit_id}"


class LazyBridge:
    """A `BridgeClient` started when first needed and dropped when the broker is lost."""

    def __init__(self, bootstrap: str, client_id: str, timeout: float = DEFAULT_TIMEOUT, *,
                 fetch_wait_ms: int = 500) -> None:
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.timeout = timeout
        self.fetch_wait_ms = fetch_wait_ms
        self._client: BridgeClient | None = None
        self._starting = asyncio.Lock()

    async def _started(self) -> BridgeClient:
        async with self._starting:
            if self._client is None:
                client = BridgeClient(self.bootstrap, self.client_id, timeout=self.timeout,
                                      kafka_options={"request_timeout_ms": 10_000},
                                      listener_options={"fetch_max_wait_ms": self.fetch_wait_ms})
                await client.start()  # BridgeUnavailable propagates
                self._client = client
            return self._client

    async def request(self, topic: str, auth: str, body: Mapping[str, Any] | None = None,
                      **kwargs: Any) -> m.Response:
        client = await self._started()
        try:
            return await client.request(topic, auth, body, **kwargs)
        except BridgeUnavailable:
            await self.close()
            raise

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.stop()


def openapi_document() -> dict[str, Any]:
    return json.loads(resources.files("mes").joinpath("openapi.json").read_text(encoding="utf-8"))


def _json(status: int, body: Any) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda v: json.dumps(v, ensure_ascii=False))


def _error(status: int, message: str) -> web.Response:
    return _json(status, {"error": message})


class MesService:
    """The handlers, the bridge, the unit sender and (optionally) the day-report scheduler."""

    def __init__(self, engine: Engine, tokens: TokenStore, bridge: LazyBridge, *,
                 scheduler: DayReportScheduler | None = None) -> None:
        self.engine = engine
        self.tokens = tokens
        self.bridge = bridge
        self.scheduler = scheduler
        self.sender = UnitSender(engine, tokens, bridge,
                                 lock=SchedulerLock(engine, default_holder(), name="units"))
        self.updater = UnitUpdater(engine, notify=self.sender.wake)
        self._tasks: list[asyncio.Task[None]] = []

    # -- bridge endpoints ---------------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict[str, str]:
        params = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                try:
                    body = json.loads(await request.text())
                except (ValueError, UnicodeDecodeError):
                    raise endpoints.EndpointError(400, "body is not JSON") from None
                if not isinstance(body, dict):
                    raise endpoints.EndpointError(400, "body must be a JSON object")
                for key, value in body.items():
                    if isinstance(value, bool) or not isinstance(value, str | int):
                        raise endpoints.EndpointError(400, f"{key} must be a string or an integer")
                    params[key] = str(value)
            else:
                params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        return params

    async def bridge_endpoint(self, request: web.Request) -> web.Response:
        try:
            route = endpoints.route(request.method, request.path)
            params = await self._params(request)
            if route.answers:
                body: dict[str, Any] | None = endpoints.answer_params(params)
                paging: dict[str, int] = {}
            else:
                body, paging = None, endpoints.list_params(params)
        except endpoints.EndpointError as exc:
            return _error(exc.status, str(exc))
        master = await asyncio.to_thread(self.tokens.master)
        if master is None or not master.token:
            return _error(500, "no Master token in the token store (chainmill mes token master)")
        try:
            response = await self.bridge.request(route.topic, master.token, body, **paging)
        except BridgeTimeout as exc:
            return _error(504, str(exc))
        except BridgeError as exc:  # no broker, or the bridge could not be asked
            return _error(502, str(exc))
        status, result = endpoints.http_result(response)
        return _json(status, result)

    # -- production units ---------------------------------------------------------------------

    async def patch_unit(self, request: web.Request) -> web.Response:
        raw_id = request.match_info["unit_id"]
        if not raw_id.isdigit() or len(raw_id) > 9:
            return _error(400, "productionunit_id must be a positive integer")
        unit_id = int(raw_id)
        try:
            body = json.loads(await request.text())
        except (ValueError, UnicodeDecodeError):
            return _error(400, "body is not JSON")
        if not isinstance(body, dict) or not body or set(body) - {"Status", "ProcessName"}:
            return _error(400, "body is a JSON object with Status and/or ProcessName")
        try:
            unit = await asyncio.to_thread(self._save_unit, unit_id, body.get("Status"),
                                           body.get("ProcessName"))
        except UnitError as exc:
            return _error(404 if str(exc).startswith("no production unit") else 400, str(exc))
        if unit is None:
            return _error(404, f"no production unit {unit_id}")
        self.sender.wake()
        return _json(200, unit)

    def _save_unit(self, unit_id: int, status: Any, process_name: Any) -> dict[str, Any] | None:
        u = schema.production_unit
        with self.engine.begin() as conn:
            row = conn.execute(select(u).where(u.c.unit_id == unit_id)).mappings().first()
            if row is None:
                return None
            # The outbox row checks the values and is written in the MES's own transaction.
            self.updater.enqueue(conn, unit_id, status, process_name)
            values = {k: v for k, v in (("status", status), ("process_name", process_name))
                      if v is not None}
            conn.execute(update(u).where(u.c.unit_id == unit_id)
                         .values(**values, updated_at=self.updater.clock()))
            row = conn.execute(select(u).where(u.c.unit_id == unit_id)).mappings().first()
        return {"productionunit_id": row["unit_id"], "code": row["code"], "Status": row["status"],
                "ProcessName": row["process_name"]}

    async def openapi(self, request: web.Request) -> web.Response:
        return _json(200, openapi_document())

    # -- lifecycle ------------------------------------------------------------------------------

    async def on_startup(self, app: web.Application) -> None:
        self._tasks.append(asyncio.create_task(self.sender.run(), name="mes unit sender"))
        if self.scheduler is not None:
            self._tasks.append(asyncio.create_task(self.scheduler.start(), name="mes scheduler"))

    async def on_cleanup(self, app: web.Application) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception) as exc:  # noqa: BLE001 - shutting down
                if not isinstance(exc, asyncio.CancelledError):
                    log.warning("%s ended with %s", task.get_name(), exc)
        if self.scheduler is not None:
            await asyncio.to_thread(self.scheduler.stop)
        await self.bridge.close()


SERVICE_KEY = web.AppKey("mes", MesService)


def build_app(service: MesService) -> web.Application:
    """The aiohttp application of ``service``."""
    app = web.Application(client_max_size=MAX_BODY)
    app[SERVICE_KEY] = service
    for path, rt in endpoints.ROUTES.items():
        for method in (rt.method, *rt.legacy_methods):
            app.router.add_route(method, path, service.bridge_endpoint)
    app.router.add_route("PATCH", UNIT_PATH, service.patch_unit)
    app.router.add_get("/api/openapi.json", service.openapi)
    app.on_startup.append(service.on_startup)
    app.on_cleanup.append(service.on_cleanup)
    return app
