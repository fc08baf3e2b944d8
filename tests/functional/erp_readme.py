"""The README's ERP section runs as written: its five commands, at two companies.

How: two real nodes of a chain named `trade` as in the README; company A (ERP) uses node 1's
data directory, company B (MES) node 2's (CHAINMILL_DATADIR). The commands are read from the
README's `erp` code block; `$ERP`, `$MES` and `$ORDER` become the values the earlier
commands printed, and `sqlite:///erp.db` a database file of each company.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from erp_support import log, two_nodes
from framework import REPO_ROOT, chainmill_command, child_env, scaled, sync_blocks

pytestmark = pytest.mark.functional


def readme_commands() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Partner and order requests for ERP integrators (erp)", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line.split("   #")[0].strip() for line in block.splitlines()
            if line.startswith("chainmill erp ")]


def run(line: str, datadir: Path, values: dict[str, str]) -> dict:
    words = shlex.split(line)
    words = [values.get(w, w) for w in words]
    argv = [*chainmill_command(), *words[1:]]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=scaled(120),
                          env=child_env({"CHAINMILL_DATADIR": str(datadir)}))
    assert done.returncode == 0, f"{line}: {done.stderr}"
    log.info("%s -> %s", line, done.stdout.strip().replace("\n", " "))
    return json.loads(done.stdout)


def test_readme_partner_to_order_flow(harness, tmp_path: Path) -> None:
    commands = readme_commands()
    assert len(commands) == 5 and all("$" not in c.split()[0] for c in commands)
    init, partner, answer_partner, order, answer_order = commands
    n1, n2 = two_nodes(harness, "trade")
    a = {"sqlite:///erp.db": f"sqlite:///{tmp_path / 'erp-a.db'}"}
    b = {"sqlite:///erp.db": f"sqlite:///{tmp_path / 'mes-b.db'}"}
    erp_key = run(init, n1.datadir, a)["public_key"]
    sync_blocks([n1, n2])
    mes_key = run(init, n2.datadir, b)["public_key"]
    for values in (a, b):
        values.update({"$ERP": erp_key, "$MES": mes_key})

    sync_blocks([n1, n2])
    made = run(partner, n1.datadir, a)
    assert made["status"] == "applied"
    sync_blocks([n1, n2])
    assert run(answer_partner, n2.datadir, b)["status"] == "applied"
    sync_blocks([n1, n2])
    ordered = run(order, n1.datadir, a)
    assert ordered["status"] == "applied"
    a["$ORDER"] = b["$ORDER"] = ordered["abs_action_id"]
    sync_blocks([n1, n2])
    assert run(answer_order, n2.datadir, b)["status"] == "applied"
    sync_blocks([n1, n2])

    run("chainmill erp follow --once", n1.datadir, a)
    shown = run("chainmill erp show order $ORDER", n1.datadir, a)
    assert shown["order"]["status"] == "ACCEPTED"
    assert shown["order"]["metadata"] == {"Part": "steering wheel"}
    assert len(shown["order"]["transaction_ids"]) == 2
    request = run("chainmill erp show partner_request " + made["partner_request_id"],
                  n2.datadir, b)
    assert request["partner_request"]["status"] == "ACCEPTED"


def rfq_commands() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### RFQ → quotation between three companies", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines()
            if line.startswith("chainmill ")]


def test_readme_rfq_demo_on_a_local_cluster(tmp_path: Path) -> None:
    up, demo = rfq_commands()
    assert up == "chainmill cluster up 3" and demo == "chainmill erp rfq-demo"
    env = child_env({"CHAINMILL_DATADIR": str(tmp_path)})

    def chainmill(words: list[str]) -> str:
        done = subprocess.run([*chainmill_command(), *words], capture_output=True, text=True,
                              timeout=scaled(300), env=env)
        assert done.returncode == 0, f"{words}: {done.stderr}"
        return done.stdout

    # 0.5 s blocks instead of the default 15 s, so that the story takes seconds, not minutes
    chainmill([*shlex.split(up)[1:], "--param", "target-block-time=0.5"])
    try:
        result = json.loads(chainmill(shlex.split(demo)[1:]))
    finally:
        chainmill(["cluster", "down"])
    assert result["quotations_readable_by"] == {
        "B": ["512000000000000000000000000003", "600300000000000000000000000041"],
        "S1": ["512000000000000000000000000003"], "S2": ["600300000000000000000000000041"]}
    assert [line["exchange_rate"] for line in result["buyer_comparison"]] == ["1.080000"] * 2
