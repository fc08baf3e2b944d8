"""Hostile received documents: each is refused with a clear error and nothing is applied."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from triggers import configure, documents, xmlsafe
from triggers.applier import Applier
from triggers.errors import ApplyFailed, DocumentRejected
from triggers.tools import rfq
from triggers.tools.fixtures import app_db, db_kind  # noqa: F401

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<insert_party><party_id>1</party_id><party_name>&lol9;</party_name></insert_party>"""

EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<insert_party><party_id>1</party_id><party_name>&xxe;</party_name></insert_party>"""

DTD_ONLY = b"""<?xml version="1.0"?><!DOCTYPE insert_party SYSTEM "http://example.invalid/x.dtd">
<insert_party><party_id>1</party_id></insert_party>"""

UNDECLARED_ENTITY = b"<insert_party><party_id>1</party_id><party_name>&xxe;</party_name></insert_party>"


@pytest.mark.parametrize(
    "data, reason",
    [
        (BOMB, "DTD"),
        (EXTERNAL, "DTD"),
        (DTD_ONLY, "DTD"),
        (UNDECLARED_ENTITY, "well-formed"),
        (b"<insert_party><party_id a='1'>1</party_id></insert_party>", "attributes"),
        (b"<insert_party><x.y--drop>1</x.y--drop></insert_party>", "not an allowed identifier"),
        (b"<insert_party><party_id>1</party_id><parent_tables><t-1><a>1</a></t-1></parent_tables>"
         b"</insert_party>", "not an allowed identifier"),
    ],
    ids=["xml-bomb", "external-entity", "external-dtd", "undeclared-entity", "attribute",
         "sql-in-column-name", "sql-in-table-name"],
)
def test_xmlsafe_rejects_hostile_input(data: bytes, reason: str) -> None:
    with pytest.raises(DocumentRejected, match=reason):
        documents.read(data)


def test_xmlsafe_rejects_oversized_and_too_deep() -> None:
    limits = xmlsafe.Limits(max_bytes=1000, max_depth=8)
    big = b"<insert_t><id>" + b"9" * 2000 + b"</id></insert_t>"
    with pytest.raises(DocumentRejected, match="more than the limit"):
        documents.read(big, limits)
    deep = b"<insert_t><id>1</id>" + b"<child_tables><t><id>1</id>" * 5 + b"</t></child_tables>" * 5
    deep += b"</insert_t>"
    with pytest.raises(DocumentRejected, match="deeper"):
        documents.read(deep, limits)
    with pytest.raises(DocumentRejected, match="more than"):
        documents.read(b"<insert_t>" + b"<a/>" * 50 + b"</insert_t>", xmlsafe.Limits(max_elements=20))


@pytest.mark.parametrize("name", ["../etc/passwd", "..", "a/b.pdf", "a\\b", "/abs", ".hidden", "x\x00y", ""])
def test_xmlsafe_rejects_file_names_with_paths(name: str) -> None:
    with pytest.raises(DocumentRejected):
        xmlsafe.check_file_name(name)


def test_xmlsafe_document_with_traversing_file_name_is_rejected() -> None:
    data = (
        b"<insert_t><id>1</id><rdc_file_body><file_name>../../etc/cron.d/x</file_name>"
        b"<base64_encoded>QQ==</base64_encoded></rdc_file_body></insert_t>"
    )
    with pytest.raises(DocumentRejected, match="plain file name"):
        documents.read(data)


def test_xmlsafe_accepts_plain_file_names() -> None:
    assert xmlsafe.check_file_name("spec-rfq-15.pdf") == "spec-rfq-15.pdf"


def _count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


def test_xmlsafe_nothing_applied_from_hostile_or_unknown_names(app_db, tmp_path: Path) -> None:  # noqa: F811
    md = rfq.create(app_db)
    configure.init(app_db, 202020)
    applier = Applier(app_db)
    party = md.tables["party"]
    good = (
        b"<insert_party><party_id>1</party_id><party_name>x</party_name>"
        b"<created_date>2024-01-01 00:00:00</created_date><created_user>A</created_user>"
    )
    unknown_column = good + b"<is_admin>1</is_admin></insert_party>"
    with pytest.raises(ApplyFailed, match="unknown column"):
        applier.apply_document(documents.read(unknown_column), "e-1")
    with pytest.raises(ApplyFailed, match="unknown table"):
        applier.apply_document(documents.read(b"<insert_users><id>1</id></insert_users>"), "e-2")
    with pytest.raises(ApplyFailed, match="refused"):
        applier.apply_document(
            documents.read(b"<insert_blockchain_trigger><trigger_id>1</trigger_id></insert_blockchain_trigger>"),
            "e-3",
        )
    # A failure after a parent row was written rolls the whole document back.
    nested = (
        b"<insert_request_header><request_id>5</request_id><nope>1</nope><parent_tables>"
        + b"<" + good[len(b"<insert_"):] + b"</party></parent_tables></insert_request_header>"
    )
    with pytest.raises(ApplyFailed, match="unknown column"):
        applier.apply_document(documents.read(nested), "e-4")
    assert _count(app_db, party) == 0
    with pytest.raises(DocumentRejected):
        applier.apply_document(documents.read(BOMB), "e-5")
    assert _count(app_db, party) == 0
