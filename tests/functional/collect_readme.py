"""The README's plant-IT section, run as written (the shell blocks, line by line).

How: two real nodes of one chain (the plant and its partner), a private mosquitto, and the
README's variables given by the environment (BROKER, DB, CHAIN, PARTNER, and
CHAINMILL_DATADIR naming each company's node). Lines ending in `&` and `--follow` are
long-running and are started in the background. The partner must end up reading exactly the spindle readings above
1000 that the collector stored.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from collect_support import Broker
from framework import REPO_ROOT, chainmill_command, child_env, scaled, wait_until
from network_support import log, start_network
from sqlalchemy import create_engine, select

from mes.collector.store import cnc_data
from node.client import RpcError
from triggers.keys_command import ensure_system_streams

pytestmark = pytest.mark.functional


def readme_blocks() -> list[list[str]]:
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Plant data", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [[line for line in b.splitlines() if line.strip() and not line.startswith("#")]
            for b in blocks]


class Shell:
    """Runs README lines with bash in `cwd`, background ones kept for the end."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd, self.env = cwd, env
        self.background: list[tuple[subprocess.Popen, Path]] = []
        self.outputs: dict[str, str] = {}

    def run(self, line: str) -> None:
        if re.fullmatch(r"(\w+=\S*;?\s*)+(#.*)?", line):
            return  # the README's example values; the test's come from the environment
        command = line.split(" # ")[0].rstrip() if " # " in line else line
        if command.endswith("&") or "--follow" in command:  # long-running
            out = self.cwd / f"bg-{len(self.background)}.log"
            proc = subprocess.Popen(["bash", "-c", command.rstrip("&")], cwd=self.cwd, env=self.env,
                                    stdout=out.open("wb"), stderr=subprocess.STDOUT)
            self.background.append((proc, out))
            log.info("started in the background: %s", command)
            return
        log.info("running: %s", command)
        done = subprocess.run(["bash", "-c", command], cwd=self.cwd, env=self.env,
                              capture_output=True, text=True, timeout=scaled(120))
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        self.outputs[command] = done.stdout

    def stop(self) -> None:
        for proc, _ in self.background:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=scaled(30))


def test_collect_readme_plant_section(harness) -> None:
    plant, partner = start_network(harness, 2, chain="plant")
    owner_block, partner_block = readme_blocks()
    broker = Broker(harness.base_dir / "broker", harness.port_factory())
    broker.start()
    bindir = str(Path(chainmill_command()[0]).parent)
    base = child_env({"PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
                      "BROKER": broker.address, "DB": "sqlite:///mes.db", "CHAIN": "plant",
                      "PARTNER": partner.getaddresses()[0]})
    work_plant = harness.base_dir / "plant-work"
    work_partner = harness.base_dir / "partner-work"
    work_plant.mkdir()
    work_partner.mkdir()
    owner = Shell(work_plant, {**base, "CHAINMILL_DATADIR": str(plant.datadir)})
    other = Shell(work_partner, {**base, "CHAINMILL_DATADIR": str(partner.datadir)})
    try:
        for line in owner_block:
            owner.run(line)
            if line.startswith("chainmill collect --broker"):
                broker.wait_subscribed()  # before the emulator publishes
            if line.startswith("chainmill collect emulate"):
                wait_until(lambda: len(stored(work_plant)) == 120, msg="120 rows collected")
        shift = json.loads(next(v for k, v in owner.outputs.items() if "collect shift" in k))
        assert shift["shift_length_min"] == 60.0
        assert shift["run_time_min"] > 0

        ensure_system_streams(plant.client())  # done by the plant's `keys generate`

        def streams_on_partner() -> bool:
            try:
                return bool(partner.liststreams("access"))
            except RpcError:
                return False
        wait_until(streams_on_partner, msg="pubkeys and access reached the partner")
        for line in partner_block:
            other.run(line)
        expected = sorted(json.loads(r.json_data)["spin"] for r in stored(work_plant)
                          if json.loads(r.json_data)["spin"] > 1000)
        assert expected, "the emulator produced spindle speeds above 1000"
        consumed = other.background[0][1]

        def lines() -> list[dict]:
            return [json.loads(x) for x in consumed.read_text().splitlines() if x.strip()]
        wait_until(lambda: len(lines()) >= len(expected), timeout=120,
                   msg=f"the partner read {len(expected)} observations")
        assert sorted(o["result"] for o in lines()) == expected
        assert {o["variable"] for o in lines()} == {"spin"}
    finally:
        other.stop()
        owner.stop()
        broker.stop()


def stored(work: Path) -> list:
    engine = create_engine(f"sqlite:///{work / 'mes.db'}")
    try:
        with engine.connect() as conn:
            return conn.execute(select(cnc_data)).all()
    except Exception:  # the collector has not created the table yet
        return []
    finally:
        engine.dispose()
