"""The apply step (spec 1.10 steps 5-8) without a node: a document built on one database,
applied to another, leaves equal rows; applying it again changes nothing."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path

from sqlalchemy import event, func, select

from triggers import configure, documents, schema
from triggers.applier import Applier
from triggers.catalog import Catalog
from triggers.documents import Document, Row
from triggers.hooks import HookRegistry
from triggers.snapshot import Snapshot
from triggers.tools import rfq
from triggers.tools.fixtures import app_db, db_kind, second_db  # noqa: F401

TABLES = ("party", "product", "request_header", "request_item")
TREE = [
    configure.RelatedEntry(1, 1, "proc", "party", None, None, "parent", "party_id_buyer"),
    configure.RelatedEntry(2, 1, "proc", "request_item", None, None, "child", None),
    configure.RelatedEntry(3, 1, "proc", "product", None, 2, "parent", None),
]
KEY = {"request_id": "471100000000000000000000000015"}


def _rows(engine, md):
    with engine.connect() as conn:
        return {t: conn.execute(select(md.tables[t]).order_by(*md.tables[t].primary_key.columns)).all()
                for t in TABLES}


def _sender(engine):
    md = rfq.create(engine)
    rows = rfq.sample_rows()
    rows["request_header"][0]["spec_file_body"] = rfq.SPEC_PDF
    with engine.begin() as conn:
        for name in TABLES:
            conn.execute(md.tables[name].insert(), rows[name])
    return md


def _document(engine, operation="update") -> bytes:
    with engine.connect() as conn:
        document, _ = Snapshot(Catalog(engine), rfq.file_hooks()).build(
            conn, "request_header", operation, KEY, TREE)
    return documents.render(document)


def _receiver(engine):
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA foreign_keys=ON"))
    md = rfq.create(engine)
    configure.init(engine, 202020)
    return md, Applier(engine, hooks=rfq.file_hooks())


def test_apply_gives_equal_rows_and_twice_changes_nothing(app_db, second_db, tmp_path: Path) -> None:  # noqa: F811
    md_a = _sender(app_db)
    md_b, applier = _receiver(second_db)
    data = _document(app_db)
    assert applier.apply_document(documents.read(data), "4711-1", "c", "t1") is True
    assert _rows(second_db, md_b) == _rows(app_db, md_a)
    with second_db.connect() as conn:
        assert conn.execute(select(md_b.tables["request_header"].c.spec_file_body)).scalar() == rfq.SPEC_PDF
    before = _rows(second_db, md_b)
    assert applier.apply_document(documents.read(data), "4711-1", "c", "t1") is False
    assert _rows(second_db, md_b) == before
    with second_db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.applied_event)).scalar() == 1

    # An update of the root and of a child row arrives as a new event.
    header, item = md_a.tables["request_header"], md_a.tables["request_item"]
    with app_db.begin() as conn:
        conn.execute(header.update().values(status="Sent to Supplier", revised_date=dt.datetime(2024, 3, 5)))
        conn.execute(item.update().where(item.c.item_seq_no == 2).values(quantity=decimal.Decimal("7.5")))
    applier.apply_document(documents.read(_document(app_db)), "4711-2")
    assert _rows(second_db, md_b) == _rows(app_db, md_a)

    # Delete: key columns only; the receiver's foreign keys cascade to the items.
    delete_doc = Document("delete", Row("request_header", dict(KEY)))
    with app_db.begin() as conn:
        conn.execute(header.delete())
    assert applier.apply_document(documents.read(documents.render(delete_doc)), "4711-3")
    assert _rows(second_db, md_b)["request_header"] == []
    assert _rows(second_db, md_b)["request_item"] == []
    assert applier.apply_document(documents.read(documents.render(delete_doc)), "4711-4")


def test_apply_parents_are_inserted_if_missing_never_overwritten(app_db, second_db) -> None:  # noqa: F811
    _sender(app_db)
    md_b, applier = _receiver(second_db)
    party = md_b.tables["party"]
    with second_db.begin() as conn:
        conn.execute(party.insert().values(party_id=471100000000000000000000000001, party_name="Local name",
                                           created_date=dt.datetime(2020, 1, 1), created_user="ME"))
    applier.apply_document(documents.read(_document(app_db)), "4711-1")
    with second_db.connect() as conn:
        assert conn.execute(select(party.c.party_name)).scalar() == "Local name"
    upserting = Applier(second_db, hooks=rfq.file_hooks(), parent_upsert=["party"])
    upserting.apply_document(documents.read(_document(app_db)), "4711-2")
    with second_db.connect() as conn:
        assert conn.execute(select(party.c.party_name)).scalar() == "Example Buyer GmbH"


def test_apply_after_receive_hook_adjusts_rows(app_db, second_db) -> None:  # noqa: F811
    _sender(app_db)
    md_b, _ = _receiver(second_db)
    hooks = rfq.file_hooks(HookRegistry())
    hooks.register("request_item", after_receive=lambda row: {**row, "uom_id": "PCE"})
    Applier(second_db, hooks=hooks).apply_document(documents.read(_document(app_db)), "4711-1")
    with second_db.connect() as conn:
        assert set(conn.execute(select(md_b.tables["request_item"].c.uom_id)).scalars()) == {"PCE"}
