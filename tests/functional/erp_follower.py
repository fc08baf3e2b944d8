"""`chainmill erp init` and `chainmill erp follow` as real processes: a follower killed
in the middle of its catch-up and restarted applies every item exactly once, and two
followers running at the same time on one database do too.

How: one company on node 1 runs `chainmill erp init` (tables, stream, agent), then
publishes a record and 120 property updates straight through RPC. A follower
process with small pages starts catching up and is killed with SIGKILL as soon as it has
committed its first page; a second run finishes the job. Every item must be in the action
log once, and the digest must equal that of a projection replayed independently in
another database. Then two followers run side by side over new items on the same
database (PostgreSQL and MariaDB too, where two writers really race).
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
from erp_support import BLOCK_TIME, PARAMS, log
from framework import chainmill_command, child_env, scaled, wait_until
from sqlalchemy import func, select
from trigger_support import pin_ports

from erp import schema
from erp.api import Erp
from triggers.tools.fixtures import app_db, db_kind, second_db  # noqa: F401

pytestmark = pytest.mark.functional

UPDATES = 120


def erp_command(node, *args: str) -> list[str]:  # noqa: ANN001
    return [*chainmill_command(), "erp", *args, "--datadir", str(node.datadir)]


def run_erp(node, *args: str) -> dict:  # noqa: ANN001
    done = subprocess.run(erp_command(node, *args), capture_output=True, text=True,
                          env=child_env(), timeout=scaled(120))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def log_counts(engine) -> tuple[int, int]:  # noqa: ANN001
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(schema.actions)).scalar()
        distinct = conn.execute(select(func.count()).select_from(
            select(schema.actions.c.txid, schema.actions.c.vout).distinct().subquery())).scalar()
    return int(total), int(distinct)


def cursor_position(engine) -> int:  # noqa: ANN001
    with engine.connect() as conn:  # `erp init` created the tables
        return int(conn.execute(select(schema.cursor.c.position)).scalar() or 0)


def publish_updates(node, public_key: str, address: str, count: int, first: int) -> None:  # noqa: ANN001
    calls = [("publishfrom", [address, "supplychain", "SN-1", {"json": {
        "erp": 1, "action": "UPDATE_PROPERTIES", "signer": public_key,
        "timestamp": 1_700_000_000 + n, "record_id": "SN-1",
        "properties": [{"name": "weight", "data_type": "INT", "value": n}]}}])
        for n in range(first, first + count)]
    for start in range(0, count, 40):  # JSON-RPC batches: one HTTP request per 40 items
        results = node.rpc.batch(calls[start:start + 40])
        assert all(isinstance(r, str) for r in results), results


def all_final(node, count: int) -> bool:  # noqa: ANN001
    items = node.rpc.call("liststreamitems", "supplychain", False, 1, count - 1)
    return node.rpc.call("getstreaminfo", "supplychain")["items"] == count and bool(
        items) and items[-1]["final"]


def test_killed_follower_and_two_followers_apply_each_item_once(harness, app_db,  # noqa: F811
                                                                 second_db,  # noqa: F811
                                                                 tmp_path: Path) -> None:
    node = harness.add_node(chain="erpfollow", block_time=BLOCK_TIME, params=PARAMS)
    node.start()
    pin_ports(node)
    url = app_db.url.render_as_string(hide_password=False)
    info = run_erp(node, "init", "--chain", node.chain, "--db", url, "--agent-name", "ACME")
    erp = Erp(app_db, node.rpc)
    assert erp.wait(info["agent_txid"])["status"] == "applied"
    erp.create_record_type("pallet", [{"name": "weight", "data_type": "INT", "required": True}])
    made = erp.create_record("SN-1", "pallet", {"weight": 1})
    assert erp.wait(made["txid"])["status"] == "applied"
    before = cursor_position(app_db)

    log.info("publishing %d updates, then a follower catches up and is killed", UPDATES)
    publish_updates(node, erp.public_key, erp.address, UPDATES, 0)
    total = before + UPDATES
    wait_until(lambda: all_final(node, total), timeout=120, msg="all updates final")
    follower = subprocess.Popen(erp_command(node, "follow", node.chain, "--batch", "3"),
                                env=child_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: cursor_position(app_db) > before, interval=0.005,
                   msg="the follower's first page")
        follower.send_signal(signal.SIGKILL)
    finally:
        follower.wait(timeout=scaled(30))
    stopped_at = cursor_position(app_db)
    log.info("follower killed at position %d of %d", stopped_at, total)
    assert stopped_at < total, "the follower finished before it was killed"
    assert log_counts(app_db) == (stopped_at, stopped_at)

    result = run_erp(node, "follow", node.chain, "--once", "--batch", "3")
    assert result["items"] == total
    assert log_counts(app_db) == (total, total)
    reference = Erp(second_db, node.rpc)
    reference.projection.create()
    reference.follow()
    assert run_erp(node, "digest", "--chain", node.chain)["digest"] == reference.digest()["digest"]
    record = erp.show("record", "SN-1")
    assert record["properties"][0]["values"][0]["value"] == UPDATES - 1

    log.info("two followers side by side over %d new items", UPDATES)
    logs = [tmp_path / f"twin{n}.log" for n in range(2)]
    verbose = [*chainmill_command(), "-v", *erp_command(node, "follow", node.chain, "--batch",
                                                        "20", "--interval", "0.05")[
        len(chainmill_command()):]]
    twins = [subprocess.Popen(verbose,
                              env=child_env(), stdout=subprocess.DEVNULL,
                              stderr=path.open("wb")) for path in logs]
    try:
        # both must be in their loop (signal handlers set) before the race starts
        wait_until(lambda: all("following supplychain" in p.read_text(errors="replace")
                               for p in logs), timeout=60, msg="both followers to start")
        publish_updates(node, erp.public_key, erp.address, UPDATES, UPDATES)
        wait_until(lambda: cursor_position(app_db) == total + UPDATES, timeout=120,
                   msg="the twins to catch up")
    finally:
        for twin in twins:
            twin.send_signal(signal.SIGTERM)
        codes = [twin.wait(timeout=scaled(30)) for twin in twins]
    assert codes == [0, 0], [p.read_text(errors="replace")[-2000:] for p in logs]
    assert log_counts(app_db) == (total + UPDATES, total + UPDATES)
    reference.follow()
    assert erp.digest()["digest"] == reference.digest()["digest"]
    history = erp.show("record", "SN-1")["history"]
    assert len(history) == 1 + 2 * UPDATES
    assert all(h["status"] == "applied" for h in history)
