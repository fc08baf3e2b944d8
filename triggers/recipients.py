"""Who may read a message (spec 1.8): contact mechanisms -> node addresses, checked.

`party in record` reads the root row's `contact_mech_id_blockchain`; `database table` reads
that column from every distribution-table row pointing at the root row. A contact mechanism
id becomes an address through the `contact_mech` table when the application has one
(`contact_mech_id` -> `info_string`); otherwise (Decision) the column holds the address
itself. Every address must be an active node of the chain with receive permission.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import MetaData, Table, inspect, select
from sqlalchemy.engine import Connection

from triggers import schema
from triggers.configure import CONTACT_COLUMN
from triggers.errors import RecipientUnavailable
from triggers.rules import TriggerRule, is_active
from triggers.values import to_text

__all__ = ["PUBLIC", "CONTACT_COLUMN", "is_private", "contact_ids", "resolve_addresses", "Resolver"]

PUBLIC = "all nodes"
Resolver = Callable[[Connection, str, str], str | None]


def is_private(rule: TriggerRule) -> bool:
    """Whether the trigger's documents are encrypted for chosen readers."""
    return rule.distribution_type != PUBLIC


def _reflect(conn: Connection, name: str) -> Table:
    return Table(name, MetaData(), autoload_with=conn)


def contact_ids(
    conn: Connection, rule: TriggerRule, root: Table, root_row: Mapping[str, Any]
) -> list[str]:
    """Contact-mechanism ids of the readers of one root row (empty for public triggers)."""
    if rule.distribution_type == "party in record":
        value = root_row.get(CONTACT_COLUMN)
        return [] if value is None else [to_text(value)]  # type: ignore[list-item]
    if rule.distribution_type != "database table" or not rule.distribution_table:
        return []
    dist = _reflect(conn, rule.distribution_table)
    clauses = []
    for constraint in dist.foreign_key_constraints:
        if constraint.referred_table.name != root.name:
            continue
        for fk_col, element in zip(constraint.columns, constraint.elements, strict=True):
            clauses.append(fk_col == root_row[element.column.name])
        break
    if not clauses:
        raise RecipientUnavailable(f"{dist.name} has no foreign key to {root.name}")
    order = list(dist.primary_key.columns)
    values = conn.execute(select(dist.c[CONTACT_COLUMN]).where(*clauses).order_by(*order)).scalars()
    return [str(to_text(v)) for v in values if v is not None]


def default_resolver(conn: Connection, chain_id: str, contact_id: str) -> str | None:
    """`contact_mech.info_string` when the application has that table, else the id itself."""
    if inspect(conn).has_table("contact_mech"):
        table = _reflect(conn, "contact_mech")
        if "info_string" in table.c and "contact_mech_id" in table.c:
            return conn.execute(
                select(table.c.info_string).where(table.c.contact_mech_id == contact_id)
            ).scalar()
    return contact_id


def resolve_addresses(
    conn: Connection,
    chain_id: str,
    contacts: list[str],
    resolver: Resolver = default_resolver,
    today: dt.date | None = None,
) -> list[str]:
    """Addresses of the readers, deduplicated in order; RecipientUnavailable if any fails."""
    today = today or dt.date.today()
    nodes = {
        r.node_address: r
        for r in conn.execute(select(schema.node).where(schema.node.c.chain_id == chain_id))
    }
    addresses: list[str] = []
    for contact in contacts:
        address = resolver(conn, chain_id, contact)
        if not address:
            raise RecipientUnavailable(f"contact mechanism {contact} has no blockchain address")
        node = nodes.get(address)
        if node is None or not is_active(node.start_date, node.end_date, today):
            raise RecipientUnavailable(f"{address} is not an active node of chain {chain_id}")
        if not node.perm_receive:
            raise RecipientUnavailable(f"{address} lacks receive permission on {chain_id}")
        if address not in addresses:
            addresses.append(address)
    return addresses
