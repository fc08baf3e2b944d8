"""The reference MES schema, token store and scheduler lease on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, inspect, select
from sqlalchemy.exc import IntegrityError

from mes import schema
from mes.daily import SchedulerLock
from mes.tokens import TokenStore
from node.cli.main import main

T0 = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mes.db'}"
    return request.getfixturevalue(f"{request.param}_db").url


@pytest.fixture
def engine(db_url):
    eng = create_engine(db_url)
    schema.create_all(eng)
    yield eng
    eng.dispose()


def test_mes_schema_creates_idempotently_and_keeps_exact_minutes(engine) -> None:
    schema.create_all(engine)  # a second init changes nothing
    with engine.begin() as conn:
        conn.execute(schema.production_unit.insert().values(unit_id=10, code="PT10", updated_at=0))
        conn.execute(schema.production_unit.insert().values(unit_id=11, code="pt10", updated_at=0))
        conn.execute(schema.shift_record.insert().values(
            unit_id=10, day=dt.date(2021, 1, 11), shift="A", shift_length=Decimal("480"),
            planned_stop=Decimal("30.125"), unplanned_stop=Decimal("45"), failures=3,
            repair_time=Decimal("45"), total_count=760, good_count=741, ideal_time=Decimal("380")))
    with engine.connect() as conn:
        row = conn.execute(select(schema.shift_record)).mappings().one()
        codes = sorted(r.code for r in conn.execute(select(schema.production_unit.c.code)))
    assert Decimal(row["planned_stop"]) == Decimal("30.125")
    assert codes == ["PT10", "pt10"]  # codes compare byte-wise on every backend
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(schema.shift_record.insert().values(
            unit_id=10, day=dt.date(2021, 1, 11), shift="A", shift_length=480))


def test_mes_schema_token_store_encrypts_at_rest(engine) -> None:
    store = TokenStore(engine, Fernet.generate_key())
    store.set_master("master-secret-token", public_key="02" + "ab" * 32)
    store.add_reporter(10, "reporter-secret", "03" + "cd" * 32, "PT10")
    with engine.connect() as conn:
        raw = [dict(r) for r in conn.execute(select(schema.token)).mappings()]
    assert all("secret" not in (r["token"] or "") for r in raw)
    assert store.master().token == "master-secret-token"
    assert store.reporter(10).token == "reporter-secret"
    assert store.reporter(10).record_id == "PT10"


def test_mes_schema_lock_lease_has_one_holder(engine) -> None:
    a = SchedulerLock(engine, "host-a:1", lease_ms=60_000)
    b = SchedulerLock(engine, "host-b:2", lease_ms=60_000)
    assert a.acquire(T0)
    assert not b.acquire(T0 + dt.timedelta(seconds=30))
    assert a.acquire(T0 + dt.timedelta(seconds=50))  # renewal moves the lease on
    assert not b.acquire(T0 + dt.timedelta(seconds=100))
    assert b.acquire(T0 + dt.timedelta(seconds=111))  # expired: taken over
    assert not a.acquire(T0 + dt.timedelta(seconds=112))
    b.release()
    assert a.acquire(T0 + dt.timedelta(seconds=113))
    a.set_last_run(T0)
    assert b.last_run() == T0


def test_mes_schema_init_command_creates_tables_and_key(db_url, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("CHAINMILL_MES_KEY", raising=False)
    key_file = tmp_path / "k" / "mes.key"
    assert main(["mes", "init", "--db", db_url, "--key-file", str(key_file)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["key_created"] and oct(key_file.stat().st_mode & 0o777) == "0o600"
    eng = create_engine(db_url)
    try:
        assert {t.name for t in schema.TABLES} <= set(inspect(eng).get_table_names())
    finally:
        eng.dispose()
    assert main(["mes", "init", "--db", db_url, "--key-file", str(key_file)]) == 0
    assert json.loads(capsys.readouterr().out)["key_created"] is False
    assert main(["mes", "init", "--db", "nosuchdialect://x", "--key-file", str(key_file)]) == 1
