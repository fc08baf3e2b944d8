"""Reading committed rows into a Document (spec 1.5 steps 2-5): root row, hooks, related tree.

Runs after the commit, so the document shows the committed state. Row selection follows
spec 1.2.5: a parent entry contributes the one row its senior's foreign key points to
(nothing when the key is NULL); a child entry every row pointing at the senior, ordered by
primary key so documents are deterministic.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.engine import Connection

from triggers.catalog import Catalog
from triggers.configure import RelatedEntry
from triggers.documents import Document, FileBody, Row
from triggers.errors import ApplyFailed, DocumentInvalid, RowVanished
from triggers.hooks import HookRegistry
from triggers.values import key_lookup_forms, to_text

__all__ = ["Snapshot"]

RowDict = dict[str, Any]


class Snapshot:
    """Builds documents from the database of one instance."""

    def __init__(self, catalog: Catalog, hooks: HookRegistry | None = None) -> None:
        self.catalog = catalog
        self.hooks = hooks or HookRegistry()
        self.dialect = catalog.dialect_name

    def key_values(self, table: Table, pkey: dict[str, str | None]) -> dict[str, Any]:
        """Convert stored key text (outbox `pkey`) to values of the table's key columns."""
        return {name: forms[0] for name, forms in self.key_forms(table, pkey).items()}

    def key_forms(self, table: Table, pkey: dict[str, str | None]) -> dict[str, list[Any]]:
        """Per key column, the stored values the recorded key text may name, most exact first."""
        pk = [c.name for c in table.primary_key.columns]
        if sorted(pk) != sorted(pkey):
            raise DocumentInvalid(f"key {sorted(pkey)} does not match {table.name}'s {pk}")
        return {name: key_lookup_forms(pkey[name], table.c[name], self.dialect) for name in pk}

    def find_root(self, conn: Connection, table: Table, pkey: dict[str, str | None]) -> RowDict | None:
        """The committed row a recorded key names: the text as recorded first, then (SQLite
        38-character key columns) its padded storage form; None when neither exists."""
        forms = self.key_forms(table, pkey)
        exact = [table.c[k] == v[0] for k, v in forms.items()]
        row = conn.execute(select(table).where(*exact)).mappings().first()
        if row is None and any(len(v) > 1 for v in forms.values()):
            loose = [table.c[k].in_(v) for k, v in forms.items()]
            row = conn.execute(select(table).where(*loose).limit(1)).mappings().first()
        return dict(row) if row is not None else None

    def build(
        self,
        conn: Connection,
        table_name: str,
        operation: str,
        pkey: dict[str, str | None],
        entries: list[RelatedEntry],
    ) -> tuple[Document, RowDict | None]:
        """The document for one captured operation, and the root row as read (None for delete)."""
        table = self.catalog.current(table_name, conn)
        if operation == "delete":
            pk = [c.name for c in table.primary_key.columns]
            values = {
                name: to_text(pkey.get(name), table.c[name], self.dialect) if name in table.c
                else pkey.get(name)
                for name in pk
            }
            return Document("delete", Row(table.name, values)), None
        root_row = self.find_root(conn, table, pkey)
        if root_row is None:
            raise RowVanished(f"row vanished: {table.name} {pkey}")
        return Document(operation, self._row(conn, table, root_row, entries, None)), root_row

    def _row(
        self,
        conn: Connection,
        table: Table,
        row: RowDict,
        entries: list[RelatedEntry],
        node_id: int | None,
    ) -> Row:
        outgoing = self.hooks.before_send(table.name, dict(row))
        values = {
            column.name: to_text(outgoing.get(column.name), column, self.dialect)
            for column in table.columns
        }
        document_row = Row(table.name, values)
        body = self.hooks.get_file_body(table.name, dict(row))
        if body is not None:
            document_row.file_body = FileBody(body[0], body[1])
        for entry in entries:
            if entry.node_id_snr != node_id:
                continue
            junior = self.catalog.current(entry.table_id, conn)
            for related in self._related_rows(conn, table, row, junior, entry):
                target = document_row.parents if entry.parent_or_child == "parent" else document_row.children
                target.append(self._row(conn, junior, related, entries, entry.node_id))
        return document_row

    def _related_rows(
        self, conn: Connection, senior: Table, row: RowDict, junior: Table, entry: RelatedEntry
    ) -> list[RowDict]:
        relation = self.catalog.relation(
            senior.name, junior.name, entry.parent_or_child, entry.fk_columns
        )
        if entry.parent_or_child == "parent":
            wanted = [row.get(c) for c in relation.fk_columns]
            if any(v is None for v in wanted):
                return []
            clauses = [junior.c[c] == v for c, v in zip(relation.referred_columns, wanted, strict=True)]
            order: list[Any] = []
        else:
            wanted = [row.get(c) for c in relation.referred_columns]
            if any(v is None for v in wanted):
                return []
            clauses = [junior.c[c] == v for c, v in zip(relation.fk_columns, wanted, strict=True)]
            order = list(junior.primary_key.columns)
        if not clauses:
            raise ApplyFailed(f"no key columns relate {junior.name} to {senior.name}")
        rows = conn.execute(select(junior).where(*clauses).order_by(*order)).mappings().all()
        return [dict(r) for r in rows]
