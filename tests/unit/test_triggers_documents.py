"""XML documents (spec 1.7): golden files per operation, byte-exact building from a database."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine

from triggers import configure, documents
from triggers.catalog import Catalog
from triggers.documents import Document, FileBody, Row
from triggers.errors import DocumentInvalid, DocumentRejected
from triggers.hooks import HookRegistry
from triggers.snapshot import Snapshot
from triggers.tools import rfq

GOLDEN = Path(__file__).parent / "golden"


def _golden(operation: str) -> list[Path]:
    return sorted(GOLDEN.glob(f"{operation}_*.xml"))


def test_documents_every_operation_has_a_golden_file() -> None:
    for operation in documents.OPERATIONS:
        assert _golden(operation), f"no golden document for {operation}"


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.xml")), ids=lambda p: p.name)
def test_documents_golden_round_trip_is_byte_exact(path: Path) -> None:
    data = path.read_bytes()
    document = documents.read(data)
    assert document.root_element == path.stem
    assert documents.render(document) == data


def test_documents_worked_example_built_from_database_equals_spec(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    md = rfq.create(engine, with_blob=False)
    rows = rfq.sample_rows()
    rows["request_header"][0]["status"] = "Sent to Supplier"
    with engine.begin() as conn:
        for name in ("party", "product", "request_header", "request_item"):
            conn.execute(md.tables[name].insert(), rows[name])
    configure.init(engine, 4711)
    catalog = Catalog(engine)
    entries = [
        configure.RelatedEntry(11, 7, "proc", "party", None, None, "parent", "party_id_buyer"),
        configure.RelatedEntry(12, 7, "proc", "request_item", None, None, "child", None),
        configure.RelatedEntry(13, 7, "proc", "product", None, 12, "parent", None),
    ]
    hooks = HookRegistry()
    hooks.register("request_header", get_file_body=lambda row: (row["spec_file_name"], rfq.SPEC_PDF))
    with engine.connect() as conn:
        document, _ = Snapshot(catalog, hooks).build(
            conn, "request_header", "update", {"request_id": "471100000000000000000000000015"}, entries
        )
    assert documents.render(document) == (GOLDEN / "update_request_header.xml").read_bytes()


def test_documents_delete_carries_key_columns_only() -> None:
    document = Document("delete", Row("request_item", {"request_id": "1", "item_seq_no": "2"}))
    assert documents.render(document) == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<delete_request_item>\n'
        b"  <request_id>1</request_id>\n  <item_seq_no>2</item_seq_no>\n</delete_request_item>\n"
    )
    with pytest.raises(DocumentInvalid):
        documents.render(Document("delete", Row("t", {"id": "1"}, file_body=FileBody("a", b""))))
    with pytest.raises(DocumentInvalid):
        documents.read(b"<delete_t><id>1</id><child_tables><u><id>2</id></u></child_tables></delete_t>")


def test_documents_root_splits_at_first_underscore() -> None:
    assert documents.split_root("update_request_header") == ("update", "request_header")
    for bad in ("upsert_t", "update", "update_", "_t"):
        with pytest.raises(DocumentInvalid):
            documents.split_root(bad)


def test_documents_values_survive_whitespace_nulls_and_escaping() -> None:
    values = {"id": "1", "a": " spaced ", "b": None, "c": "<&>\"'", "d": "línea\nzwei"}
    data = documents.render(Document("insert", Row("t", values)))
    assert documents.read(data).root.values == values


def test_documents_file_body_base64_lines_and_whitespace() -> None:
    content = bytes(range(256)) * 3
    data = documents.render(Document("insert", Row("t", {"id": "1"}, file_body=FileBody("x.bin", content))))
    lines = data.split(b"<base64_encoded>")[1].split(b"</base64_encoded>")[0].split(b"\n")
    assert all(len(line) <= 76 for line in lines) and len(lines) > 1
    assert documents.read(data).root.file_body == FileBody("x.bin", content)


def test_documents_reject_grammar_errors() -> None:
    cases = [
        b"<insert_t><id>1</id><id>2</id></insert_t>",  # duplicate column
        b"<insert_t><id><x/></id></insert_t>",  # column with children
        b"<insert_t></insert_t>",  # no columns
        b"<insert_t><rdc_file_body><file_name>a</file_name></rdc_file_body><id>1</id></insert_t>",
        b"<insert_t><id>1</id><rdc_file_body><file_name>a</file_name>"
        b"<base64_encoded>!!</base64_encoded></rdc_file_body></insert_t>",
    ]
    for data in cases:
        with pytest.raises((DocumentInvalid, DocumentRejected)):
            documents.read(data)

