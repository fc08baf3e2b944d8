"""Globally unique 38-digit keys (spec 1.11) on every database."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, String, Table, insert, select, text

from triggers import configure
from triggers.errors import KeyRangeExhausted
from triggers.keys import GlobalKey, KeyIssuer, key_range, make_key, split_key
from triggers.tools.fixtures import app_db, db_kind  # noqa: F401


def test_keys_spec_examples() -> None:
    assert make_key(202020, 2) == 20202000000000000000000000000002
    assert str(make_key(4711, 15)) == "471100000000000000000000000015"
    assert make_key(999999999999, 10**26 - 1) == int("9" * 38)
    assert split_key(471100000000000000000000000015) == (4711, 15)
    assert key_range(1) == (10**26, 2 * 10**26 - 1)
    with pytest.raises(KeyRangeExhausted):
        make_key(1, 10**26)


def test_keys_store_38_digits_exactly_and_issue_own_range(app_db, tmp_path: Path) -> None:  # noqa: F811
    configure.init(app_db, 4711)
    md = MetaData()
    table = Table("thing", md, Column("id", GlobalKey, primary_key=True), Column("v", String(5)))
    md.create_all(app_db)
    big = int("9" * 38)
    issuer = KeyIssuer(4711)
    with app_db.begin() as conn:
        conn.execute(insert(table), [{"id": big, "v": "max"}, {"id": make_key(202020, 7), "v": "b"}])
        first = issuer.next_key(conn, "thing")
        conn.execute(insert(table).values(id=first, v="a"))
        second = issuer.next_key(conn, "thing")
    assert (first, second) == (make_key(4711, 1), make_key(4711, 2))
    with app_db.connect() as conn:
        ids = conn.execute(select(table.c.id).order_by(table.c.id)).scalars().all()
        assert ids == [make_key(4711, 1), make_key(202020, 7), big]
        assert all(type(i) is int for i in ids)
        if app_db.dialect.name == "sqlite":
            stored = conn.execute(text("SELECT id FROM thing ORDER BY id")).scalars().all()
            assert all(len(s) == 38 for s in stored)
