"""The spec's RFQ example schema (party, product, request_header, request_item, request_supplier).

Used by tests and the benchmark as a realistic application: a root table with a parent, a
child with its own parent, a distribution table and a file body.
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

from sqlalchemy import (
    Column,
    Date,
    DateTime,
    ForeignKeyConstraint,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    column,
    table,
    update,
)
from sqlalchemy import Table as SaTable
from sqlalchemy.engine import Engine

from triggers.hooks import HookRegistry
from triggers.keys import GlobalKey, to_storage_text

__all__ = ["make_metadata", "create", "sample_rows", "file_hooks", "SPEC_PDF"]

SPEC_PDF = (
    b"%PDF-1.4\n% chainmill example attachment\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"
)


def _audit() -> list[Column]:
    return [
        Column("created_date", DateTime, nullable=False),
        Column("created_user", String(20), nullable=False),
        Column("revised_date", DateTime, nullable=True),
        Column("revised_user", String(20), nullable=True),
    ]


def make_metadata(with_blob: bool = True) -> MetaData:
    """A fresh MetaData with the example tables."""
    md = MetaData()
    SaTable(
        "party",
        md,
        Column("party_id", GlobalKey, primary_key=True),
        Column("party_name", String(100), nullable=False),
        *_audit(),
    )
    SaTable(
        "product",
        md,
        Column("product_id", GlobalKey, primary_key=True),
        Column("product_name", String(100), nullable=False),
        Column("uom_id", String(10), nullable=False),
        *_audit(),
    )
    extra = [Column("spec_file_body", LargeBinary, nullable=True)] if with_blob else []
    SaTable(
        "request_header",
        md,
        Column("request_id", GlobalKey, primary_key=True),
        Column("party_id_buyer", GlobalKey, nullable=False),
        Column("contact_mech_id_blockchain", String(64), nullable=True),
        Column("request_date", Date, nullable=False),
        Column("reply_by_date", Date, nullable=True),
        Column("currency_code", String(3), nullable=False),
        Column("status", String(30), nullable=False),
        Column("spec_file_name", String(100), nullable=True),
        *extra,
        *_audit(),
        ForeignKeyConstraint(["party_id_buyer"], ["party.party_id"]),
    )
    SaTable(
        "request_item",
        md,
        Column("request_id", GlobalKey, primary_key=True),
        Column("item_seq_no", Integer, primary_key=True, autoincrement=False),
        Column("product_id", GlobalKey, nullable=False),
        Column("quantity", Numeric(15, 3), nullable=False),
        Column("uom_id", String(10), nullable=False),
        *_audit(),
        ForeignKeyConstraint(["request_id"], ["request_header.request_id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["product_id"], ["product.product_id"]),
    )
    SaTable(
        "request_supplier",
        md,
        Column("request_id", GlobalKey, primary_key=True),
        Column("supplier_seq", Integer, primary_key=True, autoincrement=False),
        Column("contact_mech_id_blockchain", String(64), nullable=False),
        ForeignKeyConstraint(["request_id"], ["request_header.request_id"], ondelete="CASCADE"),
    )
    return md


def create(engine: Engine, with_blob: bool = True) -> MetaData:
    """Create the example tables in `engine`'s database and return their metadata."""
    md = make_metadata(with_blob)
    md.create_all(engine)
    return md


def sample_rows(request_id: int = 471100000000000000000000000015) -> dict[str, list[dict[str, Any]]]:
    """Rows of the spec's worked example (spec 1.7.2)."""
    ts = dt.datetime
    return {
        "party": [
            {
                "party_id": 471100000000000000000000000001,
                "party_name": "Example Buyer GmbH",
                "created_date": ts(2023, 11, 2, 8, 0, 0),
                "created_user": "ADMIN",
                "revised_date": None,
                "revised_user": None,
            }
        ],
        "product": [
            {
                "product_id": 471100000000000000000000000230,
                "product_name": "Steering wheel, 380 mm",
                "uom_id": "EA",
                "created_date": ts(2023, 12, 1, 14, 30, 0),
                "created_user": "ADMIN",
                "revised_date": None,
                "revised_user": None,
            },
            {
                "product_id": 471100000000000000000000000231,
                "product_name": "Hub adapter",
                "uom_id": "EA",
                "created_date": ts(2023, 12, 1, 14, 31, 12),
                "created_user": "ADMIN",
                "revised_date": None,
                "revised_user": None,
            },
        ],
        "request_header": [
            {
                "request_id": request_id,
                "party_id_buyer": 471100000000000000000000000001,
                "contact_mech_id_blockchain": "471100000000000000000000000002",
                "request_date": dt.date(2024, 3, 4),
                "reply_by_date": dt.date(2024, 3, 15),
                "currency_code": "EUR",
                "status": "Pending",
                "spec_file_name": "spec-rfq-15.pdf",
                "created_date": ts(2024, 3, 4, 9, 12, 55),
                "created_user": "BUYER01",
                "revised_date": ts(2024, 3, 4, 10, 2, 13),
                "revised_user": "BUYER01",
            }
        ],
        "request_item": [
            {
                "request_id": request_id,
                "item_seq_no": 1,
                "product_id": 471100000000000000000000000230,
                "quantity": decimal.Decimal("500.000"),
                "uom_id": "EA",
                "created_date": ts(2024, 3, 4, 9, 14, 2),
                "created_user": "BUYER01",
                "revised_date": None,
                "revised_user": None,
            },
            {
                "request_id": request_id,
                "item_seq_no": 2,
                "product_id": 471100000000000000000000000231,
                "quantity": decimal.Decimal("120.000"),
                "uom_id": "EA",
                "created_date": ts(2024, 3, 4, 9, 15, 40),
                "created_user": "BUYER01",
                "revised_date": None,
                "revised_user": None,
            },
        ],
    }


def file_hooks(registry: HookRegistry | None = None) -> HookRegistry:
    """Hooks moving `request_header.spec_file_body` through `rdc_file_body` (spec 1.12)."""
    registry = registry or HookRegistry()

    def get_file_body(row: dict[str, Any]) -> tuple[str, bytes] | None:
        if row.get("spec_file_body") is None or not row.get("spec_file_name"):
            return None
        return row["spec_file_name"], bytes(row["spec_file_body"])

    def before_send(row: dict[str, Any]) -> dict[str, Any]:
        row["spec_file_body"] = None  # travels as rdc_file_body, not as a column
        return row

    def after_receive(row: dict[str, Any]) -> dict[str, Any]:
        row.pop("spec_file_body", None)  # keep what put_file_body stores
        return row

    def put_file_body(row: dict[str, Any], file_name: str, content: bytes, conn: Any) -> None:
        header = table("request_header", column("request_id"), column("spec_file_body"))
        key = row["request_id"]
        if conn.dialect.name == "sqlite":
            key = to_storage_text(int(key))
        conn.execute(
            update(header).where(header.c.request_id == key).values(spec_file_body=content)
        )

    registry.register(
        "request_header",
        get_file_body=get_file_body,
        before_send=before_send,
        put_file_body=put_file_body,
        after_receive=after_receive,
    )
    return registry


def main(argv: list[str] | None = None) -> int:
    """`python3 -m triggers.tools.rfq URL...`: create the example tables in each database."""
    import sys

    from sqlalchemy import create_engine

    urls = sys.argv[1:] if argv is None else argv
    if not urls:
        print("usage: python3 -m triggers.tools.rfq DATABASE_URL...", file=sys.stderr)
        return 2
    for url in urls:
        engine = create_engine(url)
        try:
            create(engine)
        finally:
            engine.dispose()
        print(f"example tables {', '.join(make_metadata().tables)} ready in "
              f"{engine.url.render_as_string()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
