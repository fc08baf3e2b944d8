"""The README's MES section, run as written (the shell block, line by line, with bash).

How: two real nodes (node 1 the MES's, where the README's commands run; node 2 an ERP with
`erp.api.Erp`) and a real Kafka-protocol broker (Tansu) for `KAFKA`. The example values of the
`export` line are replaced by the test's (database file, broker address); `CHAIN` and
`CHAINMILL_DATADIR` name node 1; `MASTER_TOKEN` is what the README's issue line printed and
`REQUEST` the ERP's partner request. The broker is the README's own line (Tansu on a free port),
the bridge creates its topics; the service port 8490 is replaced by a free port. Checks:
the partner request is listed and accepted through the endpoints, the unit change reaches the
chain, the day report ends PUBLISHED with its 28 records final on the chain.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
from pathlib import Path

import pytest
from framework import REPO_ROOT, child_env, scaled, wait_until
from mes_bridge_support import erp_and_mes, log, wait_projected

from mes.dayreport.ids import parse_flow_id

pytestmark = pytest.mark.functional


def readme_lines() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## MES: ", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def _command(line: str) -> str:
    return line.split("  # ")[0].rstrip() if "  # " in line else line.rstrip()


def _accepts(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


def _values(erp, record_id: str, name: str) -> list:  # noqa: ANN001
    erp.follow()
    prop = erp.row("properties", (record_id, name))
    return [] if prop is None else [erp.row("property_values", (record_id, name, i))["value"]
                                    for i in range(prop["count"])]


def test_mes_readme_commands(harness, tmp_path: Path, free_port_factory) -> None:
    lines = readme_lines()
    export, rest = lines[0], lines[1:]
    names = dict(word.split("=", 1) for word in shlex.split(_command(export))[1:])
    assert set(names) == {"CHAIN", "CHAINMILL_DATADIR", "CHAINMILL_MES_DB", "KAFKA"}
    n1, _n2, erp, engine = erp_and_mes(harness, "readme", tmp_path)
    engine.dispose()
    mes_key = n1.rpc.call("validateaddress", n1.rpc.call("getaddresses")[0])["pubkey"]
    port = free_port_factory()
    background: list[subprocess.Popen] = []
    outputs: dict[str, str] = {}
    work = tmp_path / "mes"
    work.mkdir()
    kafka = f"127.0.0.1:{free_port_factory()}"
    env = child_env({"CHAINMILL_MES_DB": f"sqlite:///{work / 'mes.db'}", "KAFKA": kafka,
                     "CHAIN": n1.chain, "CHAINMILL_DATADIR": str(n1.datadir)})
    try:
        for line in rest:
            command = _command(line).replace("8490", str(port))
            if command.endswith("&"):
                command = command.rstrip("& ").replace("chainmill mes serve",
                                                       f"chainmill mes serve --port {port}")
                out = work / f"bg-{len(background)}.log"
                background.append(subprocess.Popen(
                    ["bash", "-c", f"exec {command}"], cwd=work, env=env,
                    stdout=out.open("wb"), stderr=subprocess.STDOUT))
                log.info("started in the background: %s", command)
                if "mes serve" in command:
                    wait_until(lambda o=out: "MES service on" in o.read_text(), timeout=60,
                               msg="mes serve to listen")
                elif "broker --listener-url" in command:
                    wait_until(lambda: _accepts(kafka), timeout=60, msg="the broker to listen")
                elif "mes bridge" in command:
                    wait_until(lambda o=out: "serving" in o.read_text(), timeout=60,
                               msg="the bridge to serve (its topics created)")
                continue
            if "KafkaPartner/LIST" in command:
                # The ERP asks now (the MES agent is on the chain once the bridge runs);
                # the README's line then finds the request once the bridge projected it.
                wait_until(lambda: erp.follow() is not None and erp.row("agents", (mes_key,)),
                           timeout=120, msg="the ERP to see the MES agent")
                env["REQUEST"] = erp.create_partner_request(mes_key)["partner_request_id"]
                wait_until(lambda c=command: env["REQUEST"] in subprocess.run(
                    ["bash", "-c", c], env=env, capture_output=True, text=True).stdout,
                    timeout=120, msg="the partner request listed")
            log.info("running: %s", command)
            done = subprocess.run(["bash", "-c", command], cwd=work, env=env,
                                  capture_output=True, text=True, timeout=scaled(120))
            assert done.returncode == 0, (command, done.stdout, done.stderr)
            outputs[command] = done.stdout

        def output(fragment: str):
            return json.loads(next(o for c, o in outputs.items() if fragment in c))

        assert output("PATCH") == {"productionunit_id": 10, "code": "PT10",
                                   "Status": "RUNNING", "ProcessName": "milling"}
        assert [r["partner_request_id"] for r in output("KafkaPartner/LIST")] == [
            env["REQUEST"]]
        accepted = output("KafkaPartner/ANS")["message"]
        assert "ACCEPTED" in accepted
        wait_projected(erp, accepted.rsplit(" ", 1)[1].rstrip(")"))
        [report] = output("mes publish")["reports"]
        assert report["status"] == "PUBLISHED" and parse_flow_id(report["flow_id"]).unit == "PT10"
        wait_projected(erp, report["txids"][-1])
        assert _values(erp, f"{report['flow_id']}_404", "value") == [85.26]
        assert erp.row("records", (f"{report['flow_id']}_101",))["final"]
        wait_until(lambda: _values(erp, "PT10", "Status") == ["RUNNING"], timeout=120,
                   msg="the unit change on the chain")
        assert (n1.datadir / "mes.key").stat().st_mode & 0o777 == 0o600
    finally:
        for process in background:
            process.terminate()
            try:
                process.wait(timeout=scaled(30))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
