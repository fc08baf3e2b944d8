"""The bridge's token store and response store (spec 3.2, 3.5.4) on SQLite, and the whole
cycle on PostgreSQL and MariaDB too."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from mes.bridge.store import DEDUP_WINDOW, MASTER, REPORTER, BridgeStore, Reporter, hash_token
from triggers.tools.fixtures import app_db, db_kind  # noqa: F401


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> tuple[BridgeStore, Clock]:
    clock = Clock()
    s = BridgeStore(create_engine(f"sqlite:///{tmp_path / 'bridge.db'}"), clock)
    s.create()
    return s, clock


def test_store_tokens_are_kept_hashed_never_in_clear(store) -> None:
    s, _ = store
    token = s.issue_master("Plant 1 MES")
    assert len(token) >= 40
    with s.engine.connect() as conn:
        dump = "\n".join(str(tuple(r)) for r in conn.execute(text("SELECT * FROM mesbridge_tokens")))
    assert token not in dump and hash_token(token) in dump
    found = s.lookup(token)
    assert found is not None and found.kind == MASTER and found.name == "Plant 1 MES"
    assert s.lookup(token + "x") is None and s.lookup("") is None


def test_store_new_reporter_token_revokes_the_old_one(store) -> None:
    s, _ = store
    s.save_reporter(Reporter("PT10", "1Addr", "02" + "ab" * 32, ("Status",)))
    old = s.issue_reporter("PT10")
    new = s.issue_reporter("PT10")
    assert s.lookup(old) is None
    found = s.lookup(new)
    assert found is not None and found.kind == REPORTER and found.record_id == "PT10"
    s.save_reporter(Reporter("PT10", "1Addr", "02" + "ab" * 32, ("ProcessName", "Status")))
    assert s.reporter("PT10").properties == ("ProcessName", "Status")
    assert s.reporter("PT11") is None


def test_store_response_is_claimed_once_and_replayed_within_the_window(store) -> None:
    s, clock = store
    assert s.begin("mes-1", 7) == ("new", None)
    assert s.begin("mes-1", 7) == ("started", None)  # killed before finishing: retry mode
    assert s.begin("mes-2", 7) == ("new", None)      # another client's id 7 is another request
    s.finish("mes-1", 7, b'[{"interaction_id":7},{"message":"ok"}]')
    assert s.begin("mes-1", 7) == ("done", b'[{"interaction_id":7},{"message":"ok"}]')
    clock.now += DEDUP_WINDOW + 1
    assert s.begin("mes-1", 7) == ("new", None)  # past the window: a new request
    assert s.purge() == 1  # mes-2's row; mes-1's was claimed again just now
    assert s.begin("mes-1", 2**63 - 1) == ("new", None)


def test_store_refuses_an_interaction_id_reused_for_another_request(store) -> None:
    s, _clock = store
    assert s.begin("mes-1", 9, "hash-of-A") == ("new", None)
    s.finish("mes-1", 9, b"answer to A")
    assert s.begin("mes-1", 9, "hash-of-A") == ("done", b"answer to A")
    assert s.begin("mes-1", 9, "hash-of-B") == ("reused", None)  # never A's answer for B
    assert s.begin("mes-1", 10, "hash-of-C") == ("new", None)
    assert s.begin("mes-1", 10, "hash-of-D") == ("reused", None)  # nor B run in retry mode


def test_store_works_on_every_database(app_db) -> None:  # noqa: F811
    clock = Clock()
    s = BridgeStore(app_db, clock)
    s.create()
    s.create()  # idempotent
    token = s.issue_master("MES")
    assert s.lookup(token).kind == MASTER
    s.save_reporter(Reporter("PT10", "1Addr", "02" + "cd" * 32, ("Status",)))
    assert s.lookup(s.issue_reporter("PT10")).record_id == "PT10"
    big = 2**63 - 1
    assert s.begin("mes-1", big) == ("new", None)
    response = bytes(range(256)) * 300  # binary-safe and larger than 64 KiB
    s.finish("mes-1", big, response)
    assert s.begin("mes-1", big) == ("done", response)
    clock.now += DEDUP_WINDOW + 1
    assert s.purge() == 1
