"""The RFQ -> quotation exchange of spec 2.5 on the triggers layer: tables, triggers, hooks.

A buyer B sends an RFQ (request_header with its items, products and buyer party) privately
to the suppliers listed in request_supplier; each supplier answers with a quotation
(quotation_header with its items) readable by the buyer only (`party in record`: the
header's contact_mech_id_blockchain is the buyer's address, copied from the RFQ). Each
instance configures only what it sends. The supplier's `before_send` on quotation_item
nulls its home-currency amounts and exchange rate (they are its own business); the buyer's
`after_receive` fills the exchange rate from its own currency_rate table and derives its
home-currency amounts.

    md = rfq.create_tables(engine)                       # every instance
    rfq.configure_buyer(engine, chain)                   # B: RFQ trigger on `rfq`
    rfq.configure_supplier(engine, chain)                # S1, S2: quotation trigger
    hooks = rfq.buyer_hooks(engine, home_currency="USD") # B's receiver
    hooks = rfq.supplier_hooks()                         # S1's and S2's relay
"""

from __future__ import annotations

import decimal
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    Column,
    Date,
    ForeignKeyConstraint,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    select,
)
from sqlalchemy.engine import Engine

from triggers import configure
from triggers.catalog import Catalog
from triggers.hooks import HookRegistry
from triggers.keys import GlobalKey

__all__ = ["make_metadata", "create_tables", "configure_buyer", "configure_supplier",
           "buyer_hooks", "supplier_hooks", "RFQ_SENT", "QUOTATION_SENT"]

log = logging.getLogger(__name__)

RFQ_SENT = "Sent to Supplier"
QUOTATION_SENT = "Sent to Buyer"
_CENT = decimal.Decimal("0.01")


def make_metadata() -> MetaData:
    """The tables of one instance (buyer or supplier: both receive what the other sends)."""
    md = MetaData()
    Table("party", md,
          Column("party_id", GlobalKey, primary_key=True),
          Column("party_name", String(100), nullable=False))
    Table("product", md,
          Column("product_id", GlobalKey, primary_key=True),
          Column("product_name", String(100), nullable=False),
          Column("uom_id", String(10), nullable=False))
    Table("request_header", md,
          Column("request_id", GlobalKey, primary_key=True),
          Column("party_id_buyer", GlobalKey, nullable=False),
          Column("contact_mech_id_blockchain", String(64), nullable=True,
                 doc="the buyer's address, where quotations go"),
          Column("request_date", Date, nullable=False),
          Column("currency_code", String(3), nullable=False),
          Column("status", String(30), nullable=False),
          ForeignKeyConstraint(["party_id_buyer"], ["party.party_id"]))
    Table("request_item", md,
          Column("request_id", GlobalKey, primary_key=True),
          Column("item_seq_no", Integer, primary_key=True, autoincrement=False),
          Column("product_id", GlobalKey, nullable=False),
          Column("quantity", Numeric(15, 3), nullable=False),
          ForeignKeyConstraint(["request_id"], ["request_header.request_id"], ondelete="CASCADE"),
          ForeignKeyConstraint(["product_id"], ["product.product_id"]))
    Table("request_supplier", md,
          Column("request_id", GlobalKey, primary_key=True),
          Column("supplier_seq", Integer, primary_key=True, autoincrement=False),
          Column("contact_mech_id_blockchain", String(64), nullable=False),
          ForeignKeyConstraint(["request_id"], ["request_header.request_id"], ondelete="CASCADE"))
    Table("quotation_header", md,
          Column("quotation_id", GlobalKey, primary_key=True),
          Column("request_id", GlobalKey, nullable=False),
          Column("party_id_supplier", GlobalKey, nullable=False),
          Column("contact_mech_id_blockchain", String(64), nullable=False,
                 doc="the buyer's address (party in record)"),
          Column("quotation_date", Date, nullable=False),
          Column("status", String(30), nullable=False))
    Table("quotation_item", md,
          Column("quotation_id", GlobalKey, primary_key=True),
          Column("item_seq_no", Integer, primary_key=True, autoincrement=False),
          Column("product_id", GlobalKey, nullable=False),
          Column("quantity", Numeric(15, 3), nullable=False),
          Column("currency_code", String(3), nullable=False),
          Column("unit_price", Numeric(15, 2), nullable=False),
          Column("amount", Numeric(15, 2), nullable=False),
          Column("exchange_rate", Numeric(15, 6), nullable=True,
                 doc="quotation currency -> this instance's home currency"),
          Column("home_unit_price", Numeric(15, 2), nullable=True),
          Column("home_amount", Numeric(15, 2), nullable=True),
          ForeignKeyConstraint(["quotation_id"], ["quotation_header.quotation_id"],
                               ondelete="CASCADE"))
    Table("currency_rate", md,
          Column("from_currency", String(3), primary_key=True),
          Column("to_currency", String(3), primary_key=True),
          Column("rate", Numeric(15, 6), nullable=False))
    return md


def create_tables(engine: Engine) -> MetaData:
    """Create the example tables (idempotent) and return their metadata."""
    md = make_metadata()
    md.create_all(engine)
    return md


def configure_buyer(engine: Engine, chain: str, stream: str = "rfq") -> int:
    """B's trigger: an RFQ whose status becomes `Sent to Supplier` goes privately to the
    suppliers in request_supplier, with its buyer party, items and their products."""
    catalog = Catalog(engine)
    trigger_id = configure.add_trigger(
        engine, catalog, subsys_dir="proc", table_id="request_header", chain_id=chain,
        stream_id=stream, trigger_column="status", trigger_value=RFQ_SENT,
        distribution_type="database table", distribution_table="request_supplier")
    configure.add_related(engine, catalog, trigger_id, "party", "parent",
                          fk_columns="party_id_buyer")
    item = configure.add_related(engine, catalog, trigger_id, "request_item", "child")
    configure.add_related(engine, catalog, trigger_id, "product", "parent", node_id_snr=item)
    return trigger_id


def configure_supplier(engine: Engine, chain: str, stream: str = "quotation") -> int:
    """A supplier's trigger: a quotation whose status becomes `Sent to Buyer` goes to the
    buyer named in the header (party in record), with its items."""
    catalog = Catalog(engine)
    trigger_id = configure.add_trigger(
        engine, catalog, subsys_dir="sales", table_id="quotation_header", chain_id=chain,
        stream_id=stream, trigger_column="status", trigger_value=QUOTATION_SENT,
        distribution_type="party in record")
    configure.add_related(engine, catalog, trigger_id, "quotation_item", "child")
    return trigger_id


def supplier_hooks(registry: HookRegistry | None = None) -> HookRegistry:
    """before_send on quotation_item: home-currency amounts and the rate stay at home."""
    registry = registry or HookRegistry()

    def before_send(row: dict[str, Any]) -> dict[str, Any]:
        row.update(exchange_rate=None, home_unit_price=None, home_amount=None)
        return row

    registry.register("quotation_item", before_send=before_send)
    return registry


def buyer_hooks(engine: Engine, home_currency: str, registry: HookRegistry | None = None,
                observe: Callable[[dict[str, Any]], None] | None = None) -> HookRegistry:
    """after_receive on quotation_item: the rate from B's currency_rate table (1 for its
    home currency) and the home-currency unit price and amount derived from it. `observe`,
    if given, sees a copy of each item as it arrived (before B's columns are filled)."""
    registry = registry or HookRegistry()
    rates = make_metadata().tables["currency_rate"]

    def after_receive(row: dict[str, Any]) -> dict[str, Any]:
        if observe is not None:
            observe(dict(row))
        currency = row.get("currency_code")
        if currency == home_currency:
            rate = decimal.Decimal(1)
        else:
            with engine.connect() as conn:
                found = conn.execute(select(rates.c.rate).where(
                    rates.c.from_currency == currency,
                    rates.c.to_currency == home_currency)).scalar()
            if found is None:
                log.warning("no %s -> %s rate: quotation item left without home amounts",
                            currency, home_currency)
                return row
            rate = decimal.Decimal(found)
        row["exchange_rate"] = rate
        row["home_unit_price"] = (decimal.Decimal(row["unit_price"]) * rate).quantize(_CENT)
        row["home_amount"] = (decimal.Decimal(row["amount"]) * rate).quantize(_CENT)
        return row

    registry.register("quotation_item", after_receive=after_receive)
    return registry
