"""The README's triggers walkthrough, run as written, on two real nodes (issue 10).

How: the command blocks of the README's triggers section are read from README.md itself, so
the document and this test cannot drift. The first `sh` block runs verbatim in bash with
HOME set to the test's directory (two nodes of chain `trade` from `cluster up 2`, the example
tables, keys, trigger configuration, and relay and follow started in the background); the
`python` block runs with `engine` bound to company A's database, as the application would;
then A inserts a request (which must not fire: the trigger fires on the UPDATE to "Sent to
Supplier") and updates it, and the row must arrive in B's database. The last `sh` block
(status, inbox, retry, cluster down) runs verbatim too. SQLite databases are the README's
defaults; the PostgreSQL run passes DB_A and DB_B in the environment, as the README allows.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from framework import REPO_ROOT, child_env, scaled
from network_support import daemons_fixture  # noqa: F401
from sqlalchemy import create_engine, select, update
from trigger_support import log, wait_until

from triggers import schema
from triggers.tools import rfq
from triggers.tools.fixtures import open_database

pytestmark = pytest.mark.functional

SECTION = "## Replicating database changes between companies (triggers)"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)


def readme_blocks() -> list[tuple[str, str]]:
    """(language, text) of every fenced block of the README's triggers section, in order."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return FENCE.findall(text[start:end if end != -1 else None])


def run_block(script: str, env: dict[str, str], out: Path, what: str,
              groups: list[int]) -> str:
    """Run a README block in bash (errors stop it), in its own process group: processes it
    leaves in the background stay in that group, whose id goes to `groups` for the test to
    end them by it."""
    log.info("README %s:\n%s", what, script)
    with out.open("ab") as sink:
        proc = subprocess.Popen(["bash", "-e", "-c", script], env=env, cwd=env["HOME"],
                                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        groups.append(proc.pid)
        try:
            code = proc.wait(timeout=scaled(400))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    text = out.read_text(errors="replace")
    assert code == 0, f"README {what} failed ({code}):\n{text[-4000:]}"
    return text


@pytest.fixture(params=["sqlite", "postgres"])
def db_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_readme_triggers_walkthrough(db_kind, harness, daemons, tmp_path: Path) -> None:  # noqa: F811
    blocks = readme_blocks()
    shell = [text for lang, text in blocks if lang == "sh"]
    python = [text for lang, text in blocks if lang == "python"]
    assert len(shell) == 2 and len(python) == 1, blocks
    home = harness.base_dir / "home"
    home.mkdir()
    for node in ("node1", "node2"):
        daemons.track(home / "trade" / node / "trade")
    env = child_env({"HOME": str(home)})
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    for name in ("CHAINMILL_TRIGGERS_DB", "CHAINMILL_TRIGGERS_HOOKS", "DB_A", "DB_B"):
        env.pop(name, None)
    if db_kind == "sqlite":
        url_a, url_b = f"sqlite:///{home}/buyer.db", f"sqlite:///{home}/supplier.db"
        dbs = []
    else:
        dbs = [open_database("postgres", tmp_path), open_database("postgres", tmp_path)]
        engines = [d.__enter__() for d in dbs]
        url_a, url_b = (e.url.render_as_string(hide_password=False) for e in engines)
        env.update({"DB_A": url_a, "DB_B": url_b})
    first = harness.base_dir / "walkthrough.log"
    groups: list[int] = []
    try:
        log.info("the walkthrough's first block: two nodes, both companies configured")
        proc_log = run_block(shell[0], env, first, "walkthrough", groups)
        assert "trigger 1 added: erp.request_header -> trade/rfq" in proc_log, proc_log
        assert "stream rfq created on chain trade" in proc_log
        assert "stream rfq imported" in proc_log
        assert "related table 2 added" in proc_log

        log.info("the application: the README's Python block on A's engine, then an RFQ")
        engine_a, engine_b = create_engine(url_a), create_engine(url_b)
        exec(compile(python[0], "README.md", "exec"), {"engine": engine_a})  # noqa: S102
        md_a, md_b = rfq.make_metadata(), rfq.make_metadata()
        rows = rfq.sample_rows()
        header = md_a.tables["request_header"]
        with engine_a.begin() as conn:
            for table in ("party", "product", "request_header", "request_item"):
                conn.execute(md_a.tables[table].insert(), rows[table])
        with engine_a.connect() as conn:
            assert conn.execute(select(schema.outbox)).all() == []  # an INSERT does not fire
        request = rows["request_header"][0]["request_id"]
        with engine_a.begin() as conn:
            conn.execute(update(header).where(header.c.request_id == request)
                         .values(status="Sent to Supplier"))
        arrived = md_b.tables["request_header"]

        def on_b() -> list:
            with engine_b.connect() as conn:
                return conn.execute(select(arrived.c.request_id, arrived.c.status)).all()

        wait_until(lambda: on_b() == [(request, "Sent to Supplier")], 90,
                   "the committed request to arrive in B's database")
        with engine_b.connect() as conn:
            items = conn.execute(select(md_b.tables["request_item"])).all()
        assert len(items) == len(rows["request_item"])
        engine_a.dispose()
        engine_b.dispose()

        services = first.read_text(errors="replace")
        assert "relay started: database" in services and "chains trade" in services
        assert "follow started: chain trade" in services and "streams rfq" in services
        assert "chain trade stream rfq: 1 document(s) applied" in services

        log.info("the walkthrough's last block: status, inbox, retry, cluster down")
        # The same terminal as the first block: its variable assignments (A, B, DB_A, DB_B)
        # still hold.
        assignments = "\n".join(line for line in shell[0].splitlines()
                                 if re.match(r"[A-Z_]+=", line))
        text = run_block(assignments + "\n" + shell[1], env, harness.base_dir / "checks.log",
                         "checks", groups)
        assert "trigger 1 request_header -> trade/rfq: outbox" in text, text
        assert re.search(r"4711-1 APPLIED trade/rfq update_request_header block \d+", text), text
        assert "node1 stopped" in text and "node2 stopped" in text
    finally:
        for group in groups:  # relay and follow, left running by the README's block
            try:
                os.killpg(group, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for d in dbs:
            d.__exit__(None, None, None)

