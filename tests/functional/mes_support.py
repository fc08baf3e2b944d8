"""Helpers of the MES-side functional tests: a MES database made with the real CLI, the
`chainmill mes serve` process, HTTP calls checked against the service's OpenAPI document, and
the bridge's record-command contract answered on the real broker by a test double where a
test must control the bridge's side (see tests/mes_contract_fake.py).
"""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
from framework import chainmill_command, child_env, scaled, wait_until
from kafka_support import BridgeResponderDouble
from mes_contract_fake import MASTER_TOKEN, RecordContractFake, response_bytes

from mes.bridge import messages as m


@dataclass
class MesDb:
    """A MES database initialised by `chainmill mes init`, with its key file."""

    url: str
    key_file: Path

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return child_env({"CHAINMILL_MES_DB": self.url, **(extra or {})})

    def cli(self, *args: str, input: str | None = None, check: bool = True) -> Any:
        done = subprocess.run([*chainmill_command(), "mes", *args, "--key-file", str(self.key_file)]
                              if args[0] not in ("unit", "token") else
                              [*chainmill_command(), "mes", *args[:2], "--key-file",
                               str(self.key_file), *args[2:]],
                              env=self.env(), input=input, capture_output=True, text=True,
                              timeout=scaled(60))
        if check:
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)
        return done


WORKED = {"A": ("45", 3, "45", 760, 741), "B": ("90", 2, "90", 700, 690),
          "C": ("0", 0, "0", 880, 871)}
"""Shift inputs of spec 3.3.4's worked example: unplanned stop, failures, repair, total, good
(shift length 480, planned stop 30, ideal cycle time 0.5 min)."""


def enter_report(db: MesDb, day: Any) -> None:
    """The worked example's three shifts of unit 10 on ``day``, through `chainmill mes shift`."""
    for shift, (unplanned, failures, repair, total, good) in WORKED.items():
        db.cli("shift", "10", day.isoformat(), shift, "--length", "480", "--planned-stop", "30",
               "--unplanned-stop", unplanned, "--failures", str(failures), "--repair", repair,
               "--total", str(total), "--good", str(good), "--ideal-time", str(total / 2))


def make_db(directory: Path, url: str | None = None, master_token: str = MASTER_TOKEN) -> MesDb:
    """init + Master token + unit 10 (PT10), all through the CLI."""
    directory.mkdir(parents=True, exist_ok=True)
    db = MesDb(url or f"sqlite:///{directory / 'mes.db'}", directory / "mes.key")
    db.cli("init")
    db.cli("token", "master", "--public-key", "02" + "11" * 32, input=master_token + "\n")
    db.cli("unit", "add", "10", "PT10")
    return db


class MesServer:
    """A `chainmill mes serve` process on a free port."""

    def __init__(self, db: MesDb, port: int, kafka: str, *extra: str, log_path: Path) -> None:
        self.port = port
        self.log_path = log_path
        self._out = log_path.open("w")
        self.process = subprocess.Popen(
            [*chainmill_command(), "-v", "mes", "serve", "--key-file", str(db.key_file),
             "--kafka", kafka, "--port", str(port), *extra],
            env=db.env(), stdout=self._out, stderr=subprocess.STDOUT, text=True)
        wait_until(self._up, timeout=30, msg="the MES service to listen")

    def _up(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"mes serve exited: {self.log_path.read_text()[-2000:]}")
        try:
            return self.call("GET", "/api/openapi.json")[0] == 200
        except OSError:
            return False

    def call(self, method: str, path: str, body: Any = None,
             form: dict[str, str] | None = None) -> tuple[int, Any]:
        data, headers = None, {}
        if body is not None:
            data, headers = json.dumps(body).encode(), {"Content-Type": "application/json"}
        elif form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                         method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=scaled(60)) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=scaled(20))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._out.close()


class OpenApiCheck:
    """Validates replies against the document the service serves."""

    def __init__(self, document: dict[str, Any]) -> None:
        assert document["openapi"].startswith("3.")
        self.document = document
        self.components = copy.deepcopy(document["components"])
        self.checked: set[tuple[str, str]] = set()

    def check(self, method: str, template: str, status: int, body: Any) -> Any:
        operation = self.document["paths"][template][method.lower()]
        assert str(status) in operation["responses"], (method, template, status, body)
        schema = operation["responses"][str(status)]["content"]["application/json"]["schema"]
        jsonschema.validate(body, {**schema, "components": self.components},
                            cls=jsonschema.Draft7Validator)
        self.checked.add((method.upper(), template))
        return body


class ContractResponder:
    """The bridge's record commands (contract fake) and list/answer replies chosen by the
    test, answered through the real broker from a thread of their own (test double)."""

    def __init__(self, bootstrap: str, *, lists: dict[str, Any] | None = None,
                 hold: Any = None) -> None:
        self.contract = RecordContractFake()
        self.lists = lists or {}
        self.hold = hold  # request -> bool: execute, but do not answer (yet)
        self.double = BridgeResponderDouble(bootstrap, self._answer)
        self.double.respond = self._respond  # type: ignore[method-assign]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _answer(self, request: m.Request) -> dict[str, Any] | None:
        if request.topic in self.lists:
            answer = self.lists[request.topic]
            return answer(request) if callable(answer) else answer
        result = self.contract.answer(request)
        return None if self.hold is not None and self.hold(request) else result

    async def _respond(self, request: m.Request, **kwargs: Any) -> None:
        producer = self.double._producer
        await producer.send_and_wait(m.TOPIC_RES, response_bytes(request.header, kwargs),
                                     key=m.record_key(request.header),
                                     headers=m.kafka_headers(request.header))

    def __enter__(self) -> ContractResponder:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.double.start(), self._loop).result(scaled(30))
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.double.stop(), self._loop).result(scaled(30))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
