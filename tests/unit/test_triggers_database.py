"""Opening the application database (issue 10, item 5): a missing driver is one line naming
the extra to install; a refused connection is one line, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from triggers.database import open_database
from triggers.errors import ConfigurationInvalid


def _chainmill(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "node.cli.main", *argv], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_database_refused_connection_is_one_line_from_the_real_cli() -> None:
    # Port 1 on loopback: nothing listens there, the real driver gets a real refusal.
    done = _chainmill("triggers", "status", "--db",
                      "postgresql+psycopg://erp:secret@127.0.0.1:1/erp")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: cannot connect to the database postgresql+psycopg://erp:***@")
    assert "secret" not in done.stderr and "Traceback" not in done.stderr


def test_database_missing_driver_names_the_extra(monkeypatch) -> None:
    # Stand-in for an installation without the extra (the test environment has the drivers):
    # a None entry in sys.modules makes `import psycopg` / `import pymysql` fail as if absent.
    for module, url, extra in (("psycopg", "postgresql+psycopg://erp@127.0.0.1/erp", "postgres"),
                               ("pymysql", "mysql+pymysql://erp@127.0.0.1/erp", "mariadb")):
        monkeypatch.setitem(sys.modules, module, None)
        with pytest.raises(ConfigurationInvalid) as raised:
            open_database(url)
        message = str(raised.value)
        assert f"pip install -e '.[{extra}]'" in message and module in message
        assert "\n" not in message


def test_database_sqlite_opens_and_connects(tmp_path) -> None:
    engine = open_database(f"sqlite:///{tmp_path / 'x.db'}")
    assert engine.dialect.name == "sqlite"
    engine.dispose()
