"""`chainmill collect` command line: user errors exit 1 with one line; `collect shift` prints inputs."""

from __future__ import annotations

import json
from pathlib import Path

from mes.collector.message import CncMessage
from mes.collector.store import open_store
from node.cli.main import main


def test_collect_cli_requires_broker(capsys) -> None:
    assert main(["collect", "--db", "sqlite://", "--map", "m.json"]) == 1
    assert "--broker" in capsys.readouterr().err


def test_collect_cli_refuses_bad_map(tmp_path: Path, capsys) -> None:
    (tmp_path / "m.json").write_text('{"not": "a list"}')
    assert main(["collect", "--broker", "127.0.0.1:1", "--db", "sqlite://",
                 "--map", str(tmp_path / "m.json")]) == 1
    assert "JSON list" in capsys.readouterr().err


def test_collect_cli_refuses_bad_broker(capsys) -> None:
    assert main(["collect", "--broker", "host:99999", "--db", "sqlite://", "--map", "x"]) == 1
    assert "port" in capsys.readouterr().err


def test_collect_cli_shift_prints_inputs(tmp_path: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'mes.db'}"
    store = open_store(url)
    start = 1_767_254_400
    for t in range(0, 3600, 60):
        status = "error" if 1200 <= t < 1800 else "running"
        store.store(CncMessage("CNC001", "p1", start + t, {"status": status}))
    store.engine.dispose()
    assert main(["collect", "shift", "--db", url, "--cnc", "CNC001", "--start", str(start),
                 "--end", str(start + 3600)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["failures"] == 1 and out["repair_time_min"] == 10.0
    assert out["run_time_min"] == 50.0
