"""The story of the erp console tests: two companies on two real nodes, one partner request.

Company A (node 1) and company B (node 2) each run `chainmill erp init` with a SQLite
projection of their own, which records the database in the chain's erp.conf where B's console
finds it; A asks B for a partnership with `chainmill erp partner-request --wait`, and B's
projection follows (`chainmill erp follow --once`) until the request is listed there OPEN.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from erp_support import log, two_nodes
from framework import (
    Harness,
    TestNode,
    chainmill_command,
    child_env,
    scaled,
    sync_blocks,
    wait_until,
)
from sqlalchemy import create_engine

from erp.api import Erp


@dataclass
class PartnerStory:
    n1: TestNode
    n2: TestNode
    erp_key: str
    mes_key: str
    request_id: str
    db_b: str


def erp_command(node: TestNode, *words: str) -> dict:
    """`chainmill erp WORDS` on `node`'s data directory; its JSON output."""
    argv = [*chainmill_command(), "erp", *words, "--datadir", str(node.datadir)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=scaled(120),
                          env=child_env())
    assert done.returncode == 0, f"erp {' '.join(words)}: {done.stderr}"
    log.info("erp %s -> %s", " ".join(words), done.stdout.strip().replace("\n", " ")[:300])
    return json.loads(done.stdout) if done.stdout.strip() else {}


def status_at(node: TestNode, db: str, request_id: str) -> str | None:
    """The partner request's status in a projection, after one `erp follow --once`."""
    erp_command(node, "follow", node.chain, "--once")
    engine = create_engine(db)
    try:
        row = Erp(engine, node.rpc).row("partner_requests", (request_id,))
    finally:
        engine.dispose()
    return row["status"] if row else None


def partner_request_story(harness: Harness, tmp_path: Path, chain: str) -> PartnerStory:
    n1, n2 = two_nodes(harness, chain)
    db_a, db_b = f"sqlite:///{tmp_path / 'erp-a.db'}", f"sqlite:///{tmp_path / 'mes-b.db'}"
    erp_key = erp_command(n1, "init", "--chain", chain, "--db", db_a,
                          "--agent-name", "ACME ERP")["public_key"]
    sync_blocks([n1, n2])
    mes_key = erp_command(n2, "init", "--chain", chain, "--db", db_b,
                          "--agent-name", "ACME MES")["public_key"]
    sync_blocks([n1, n2])
    made = erp_command(n1, "partner-request", mes_key, "--wait")
    assert made["status"] == "applied", made
    sync_blocks([n1, n2])
    rid = made["partner_request_id"]
    wait_until(lambda: status_at(n2, db_b, rid) == "OPEN", timeout=60,
               msg="the partner request at B")
    return PartnerStory(n1, n2, erp_key, mes_key, rid, db_b)
