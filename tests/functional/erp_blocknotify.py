"""The projection kept current by the node's blocknotify hook alone, as the README says.

How: one real node; `chainmill erp init` records the database in the chain's erp.conf; the
node's chainmill.conf gets `blocknotify=chainmill erp follow CHAIN --once --datadir DIR`
and the node restarts. Actions published afterwards through the API (which does not follow
by itself here) reach the projection with no follower running in the test.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest
from erp_support import BLOCK_TIME, log
from framework import chainmill_command, child_env, scaled, wait_until
from sqlalchemy import create_engine, select
from trigger_support import pin_ports

from config.runtime import read_conf_file, write_conf_file
from erp import schema
from erp.api import Erp

pytestmark = pytest.mark.functional


def test_blocknotify_runs_the_follower(harness, tmp_path: Path) -> None:
    node = harness.add_node(chain="erphook", block_time=BLOCK_TIME)
    node.start()
    pin_ports(node)
    url = f"sqlite:///{tmp_path / 'erp.db'}"
    done = subprocess.run(
        [*chainmill_command(), "erp", "init", "--chain", node.chain, "--db", url,
         "--agent-name", "ACME", "--datadir", str(node.datadir)],
        capture_output=True, text=True, env=child_env(), timeout=scaled(60))
    assert done.returncode == 0, done.stderr
    agent_txid = json.loads(done.stdout)["agent_txid"]

    node.stop()
    values = read_conf_file(node.conf_path)
    values["blocknotify"] = [shlex.join([*chainmill_command(), "erp", "follow", node.chain,
                                         "--once", "--datadir", str(node.datadir)])]
    write_conf_file(node.conf_path, values)
    node.start()
    log.info("node restarted with blocknotify running chainmill erp follow --once")

    engine = create_engine(url)

    def status(txid: str) -> str | None:
        with engine.connect() as conn:
            return conn.execute(select(schema.actions.c.status)
                                .where(schema.actions.c.txid == txid)).scalar()

    erp = Erp(engine, node.rpc)
    made = erp.create_record_type("pallet", [{"name": "weight", "data_type": "INT"}])
    wait_until(lambda: status(made["txid"]) == "applied", timeout=60,
               msg="the hook to project the record type")
    assert status(agent_txid) == "applied"
