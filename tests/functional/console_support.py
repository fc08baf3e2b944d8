"""Helpers for the console's functional tests: a real `chainmill console` process, an HTTP
session with a cookie jar, and validation of responses against the console's OpenAPI document.
"""

from __future__ import annotations

import copy
import http.cookiejar
import json
import logging
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import jsonschema
from framework import TestNode, chainmill_command, child_env, scaled, wait_until

log = logging.getLogger("functional.console")


class ConsoleProcess:
    """`chainmill console CHAIN` for one test node, on a port of its own."""

    def __init__(self, node: TestNode, port: int, extra_env: dict[str, str] | None = None) -> None:
        self.node = node
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.output_path = node.datadir / f"console{node.index}.out"
        argv = [*chainmill_command(), "console", node.chain, "--datadir", str(node.datadir),
                "--port", str(port), "--rpcport", str(node.rpcport)]
        log.info("console for node%d: %s", node.index, " ".join(argv[-7:]))
        with self.output_path.open("ab") as out:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT, env=child_env(extra_env))
        wait_until(self._answers, msg=f"console on port {port}")

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the console exited ({self.process.returncode}):\n"
                                 f"{self.output()}")
        try:
            with urllib.request.urlopen(f"{self.url}/login", timeout=5) as reply:
                return reply.status == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=scaled(10))
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Reply:
    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Browser:
    """A plain HTTP client with cookies, that does not follow redirects."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar),
                                                  _NoRedirect())
        self.csrf: str | None = None

    def request(self, method: str, path: str, *, json_body: Any = None,
                form: dict[str, str] | None = None, headers: dict[str, str] | None = None,
                ) -> Reply:
        data, sent = None, dict(headers or {})
        if json_body is not None:
            data = json.dumps(json_body).encode()
            sent.setdefault("Content-Type", "application/json")
        elif form is not None:
            data = urllib.parse.urlencode(form).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=sent)
        try:
            with self.opener.open(request, timeout=scaled(30)) as reply:
                return Reply(reply.status, reply.headers, reply.read())
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, exc.headers, exc.read())

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post_json(self, path: str, body: Any, *, csrf: bool = True) -> Reply:
        headers = {"X-CSRF-Token": self.csrf} if csrf and self.csrf else {}
        return self.request("POST", path, json_body=body, headers=headers)

    def login(self, user: str, password: str) -> Reply:
        reply = self.request("POST", "/login", form={"username": user, "password": password,
                                                     "next": "/"})
        if reply.status == 303:
            page = self.get("/").text
            found = re.search(r'name="csrf_token" value="([^"]+)"', page)
            self.csrf = found.group(1) if found else None
        return reply


# -- OpenAPI ---------------------------------------------------------------------------------


def _to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema: ``nullable: true`` becomes a type that allows null."""
    if isinstance(node, list):
        return [_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_json_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


class OpenApi:
    """The console's served OpenAPI document, used to check every response."""

    def __init__(self, document: dict[str, Any]) -> None:
        assert document["openapi"].startswith("3."), document.get("openapi")
        self.document = document
        self.components = _to_json_schema(copy.deepcopy(document["components"]))
        self._patterns = [(re.compile("^" + re.sub(r"\{[^}]+\}", r"[^/]+", path) + "$"), path)
                          for path in document["paths"]]
        self.checked: set[tuple[str, str]] = set()

    def template(self, path: str) -> str:
        bare = path.split("?", 1)[0]
        exact = [p for rx, p in self._patterns if p == bare]
        if exact:
            return exact[0]
        for rx, p in self._patterns:
            if rx.match(bare):
                return p
        raise AssertionError(f"{bare} is not in the OpenAPI document")

    def check(self, method: str, path: str, reply: Reply) -> Any:
        """Validate ``reply`` against the document's response for (method, path, status)."""
        template = self.template(path)
        operation = self.document["paths"][template].get(method.lower())
        assert operation is not None, f"{method} {template} is not documented"
        responses = operation["responses"]
        assert str(reply.status) in responses, (
            f"{method} {path}: status {reply.status} is not documented: {reply.body[:300]!r}")
        assert reply.headers.get("Content-Type", "").startswith("application/json"), (
            f"{method} {path}: not JSON: {reply.headers.get('Content-Type')}")
        body = reply.json()
        schema = _to_json_schema(responses[str(reply.status)]["content"]["application/json"]
                                 ["schema"])
        wrapped = {**schema, "components": self.components}
        jsonschema.validate(body, wrapped, cls=jsonschema.Draft7Validator)
        self.checked.add((method.upper(), template))
        return body

    def operations(self) -> set[tuple[str, str]]:
        return {(m.upper(), p) for p, item in self.document["paths"].items() for m in item}
