"""`cnc_data` on SQLite, PostgreSQL and MariaDB: a redelivered message is stored once."""

from __future__ import annotations

import json

import pytest

from mes.collector.message import CncMessage
from mes.collector.store import open_store


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mes.db'}"
    fixture = "postgres_db" if request.param == "postgres" else "mariadb_db"
    return request.getfixturevalue(fixture).url


def test_collect_store_once_per_message(db_url: str) -> None:
    store = open_store(db_url)
    first = CncMessage("CNC001", "program_01", 1747379028, {"status": "running", "spin": 200})
    same_reordered = CncMessage("CNC001", "program_01", 1747379028,
                                {"spin": 200, "status": "running"})
    other_payload = CncMessage("CNC001", "program_01", 1747379028, {"status": "idle"})
    assert store.store(first) is True
    assert store.store(same_reordered) is False
    assert store.store(other_payload) is True
    rows = store.rows("CNC001")
    assert len(rows) == 2
    assert {json.loads(r["json_data"])["status"] for r in rows} == {"running", "idle"}
    assert rows[0]["timestamp"] == 1747379028


def test_collect_store_keeps_unicode_payload(db_url: str) -> None:
    store = open_store(db_url)
    store.store(CncMessage("CNC001", "programa_ç", 1747379028, {"operador": "João", "t": 1.5}))
    row = store.rows()[0]
    assert row["part_program"] == "programa_ç"
    assert json.loads(row["json_data"]) == {"operador": "João", "t": 1.5}


def test_collect_store_deferred_batch_counts_duplicates(db_url: str) -> None:
    store = open_store(db_url)
    first = CncMessage("CNC001", "p1", 1747379028, {"spin": 1})
    store.store(first)
    with store.deferred():
        for n in range(5):
            store.store(CncMessage("CNC001", "p1", 1747379029 + n, {"spin": n}))
        store.store(first)  # stored before
        store.store(CncMessage("CNC001", "p1", 1747379029, {"spin": 0}))  # twice in the batch
        assert len(store.rows()) == 1, "nothing written before flush"
        assert store.flush() == (5, 2)
        assert store.flush() == (0, 0)
    assert len(store.rows()) == 6
