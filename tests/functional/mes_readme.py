"""The README's MES section, run as written (the shell block, line by line, with bash).

How: a real Kafka-protocol broker (Tansu) stands for the README's `KAFKA`; the README's example
values of the `export` line are replaced by the test's (database file, broker address), and
`CHAIN`, `MASTER_TOKEN`, `REQUEST` come from the environment. The service port 8490 is
replaced by a free port. The `chainmill mes bridge` line is not run: until the bridge service
(mes.bridge.service) is merged, the bridge's side is answered on the broker by the
record-command contract fake (tests/mes_contract_fake.py); every other line runs verbatim.
The unit change must reach the bridge, the partner list and answer must come back through
the endpoints, and the day report must end PUBLISHED with its 28 records.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from framework import REPO_ROOT, child_env, scaled, wait_until
from kafka_support import tansu_broker
from mes_contract_fake import MASTER_TOKEN
from mes_support import ContractResponder

from mes.bridge import messages as m
from mes.dayreport.ids import flow_id

pytestmark = pytest.mark.functional

REQ_ID = "9df8888dea6df991f86e0e61b2379e46"
PARTNER_REQUEST = {"partner_request_id": REQ_ID, "issuing_agent": "02" + "aa" * 32,
                   "receiving_agent": "03" + "bb" * 32, "status": "OPEN",
                   "timestamp": 1638789671, "answer_timestamp": 0, "transaction_ids": ["ab" * 64]}


def readme_lines() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## MES: ", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def _command(line: str) -> str:
    return line.split("  # ")[0].rstrip() if "  # " in line else line.rstrip()


def test_mes_readme_commands(tmp_path: Path, free_port_factory) -> None:
    lines = readme_lines()
    export, rest = lines[0], lines[1:]
    assert export.startswith("export CHAINMILL_MES_DB=")
    port = free_port_factory()
    background: list[tuple[subprocess.Popen, Path]] = []
    outputs: list[tuple[str, subprocess.CompletedProcess]] = []
    with tansu_broker(tmp_path / "tansu", free_port_factory()) as kafka, \
            ContractResponder(kafka, lists={
                m.TOPIC_PART_LST: {"data": [PARTNER_REQUEST]},
                m.TOPIC_PART_ANS: lambda r: {"message": f"partner request {r.body['id']} accepted"},
            }) as bridge:
        names = dict(word.split("=", 1) for word in shlex.split(_command(export))[1:])
        assert set(names) == {"CHAINMILL_MES_DB", "KAFKA"}
        env = child_env({"CHAINMILL_MES_DB": f"sqlite:///{tmp_path / 'mes.db'}", "KAFKA": kafka,
                         "CHAIN": "plant", "MASTER_TOKEN": MASTER_TOKEN, "REQUEST": REQ_ID,
                         "CHAINMILL_DATADIR": str(tmp_path / "home")})
        try:
            for line in rest:
                command = _command(line).replace("8490", str(port))
                if command.startswith("chainmill mes bridge"):
                    continue  # answered by the contract fake until the bridge is merged
                if command.endswith("&"):
                    command = command.rstrip("&").replace("chainmill mes serve",
                                                          f"chainmill mes serve --port {port}")
                    out = tmp_path / f"bg-{len(background)}.log"
                    background.append((subprocess.Popen(
                        ["bash", "-c", command], cwd=tmp_path, env=env, stdout=out.open("wb"),
                        stderr=subprocess.STDOUT), out))
                    wait_until(lambda o=out: "MES service on" in o.read_text(), timeout=60,
                               msg="mes serve to listen")
                    continue
                done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env,
                                      capture_output=True, text=True, timeout=scaled(120))
                assert done.returncode == 0, (command, done.stdout, done.stderr)
                outputs.append((command, done))
            by_start = {c.split(" -")[0] if c.startswith("curl") else c: d for c, d in outputs}
            patched = json.loads(next(d.stdout for c, d in outputs if "PATCH" in c))
            assert patched == {"productionunit_id": 10, "code": "PT10", "Status": "RUNNING",
                               "ProcessName": "milling"}
            listed = json.loads(next(d.stdout for c, d in outputs if "LIST" in c))
            assert listed == [PARTNER_REQUEST]
            answered = json.loads(next(d.stdout for c, d in outputs if "ANS" in c))
            assert answered == {"message": f"partner request {REQ_ID} accepted"}
            published = json.loads(next(d.stdout for c, d in outputs if "mes publish" in c))
            assert published["reports"][0]["flow_id"] == flow_id(dt.date(2026, 3, 2), "PT10")
            assert published["reports"][0]["status"] == "PUBLISHED"
            assert len(bridge.contract.creations) == 28
            wait_until(lambda: bridge.contract.history.get("PT10"), timeout=60,
                       msg="the unit change to reach the bridge")
            assert bridge.contract.history["PT10"][0]["values"] == {"Status": "RUNNING",
                                                                    "ProcessName": "milling"}
            assert (tmp_path / "home" / "mes.key").stat().st_mode & 0o777 == 0o600
            assert by_start  # every line ran
        finally:
            for process, _ in background:
                process.terminate()
                try:
                    process.wait(timeout=scaled(20))
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
