"""Applying a received Document to the local database (spec 1.10 steps 5-8).

One transaction per document, in blockchain mode (local triggers never fire, so nothing is
echoed back): parent rows first, then the row itself, then child rows, recursively; inserts
and updates both as upserts, deletes by primary key. The event id goes into
`blockchain_applied_event` in the same transaction, so a document applied twice changes
nothing the second time. Every name is looked up in the reflected catalog first.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from triggers import schema
from triggers.capture import blockchain_mode
from triggers.catalog import Catalog
from triggers.configure import refused_table
from triggers.documents import Document, Row
from triggers.errors import ApplyFailed, ConfigurationInvalid
from triggers.hooks import HookRegistry
from triggers.values import from_text

__all__ = ["Applier", "UPSERT", "INSERT_IF_MISSING"]

log = logging.getLogger(__name__)

UPSERT = "upsert"
INSERT_IF_MISSING = "insert"


class Applier:
    """Writes received documents into one database.

    `parent_upsert` names tables whose rows met under `parent_tables` are upserted rather
    than only inserted when missing (spec default: never overwrite local master data).
    `allowed_tables`, when given, is an allow-list: anything else is refused.
    """

    def __init__(
        self,
        engine: Engine,
        catalog: Catalog | None = None,
        hooks: HookRegistry | None = None,
        parent_upsert: Iterable[str] = (),
        allowed_tables: Iterable[str] | None = None,
    ) -> None:
        self.engine = engine
        self.catalog = catalog or Catalog(engine)
        self.hooks = hooks or HookRegistry()
        self.parent_upsert = frozenset(parent_upsert)
        self.allowed = frozenset(allowed_tables) if allowed_tables is not None else None
        self.dialect = engine.dialect.name

    # -- whole documents ------------------------------------------------------------------

    def is_applied(self, conn: Connection, message_id: str) -> bool:
        """Whether an event id is already recorded as applied."""
        return (
            conn.execute(
                select(schema.applied_event.c.message_id).where(
                    schema.applied_event.c.message_id == message_id
                )
            ).first()
            is not None
        )

    def apply_document(
        self, document: Document, message_id: str, chain_id: str = "", txid: str = ""
    ) -> bool:
        """Apply in its own transaction; False when the event was already applied."""
        try:
            with self.engine.begin() as conn, blockchain_mode(conn):
                if self.is_applied(conn, message_id):
                    return False
                self.apply(conn, document)
                self.record(conn, message_id, chain_id, txid)
        except IntegrityError as exc:
            with self.engine.connect() as conn:
                if self.is_applied(conn, message_id):
                    return False  # a concurrent receiver applied it first
            raise ApplyFailed(f"database refused the change: {exc.orig}") from None
        return True

    def record(self, conn: Connection, message_id: str, chain_id: str, txid: str) -> None:
        """Insert the applied-event row (caller's transaction)."""
        conn.execute(
            insert(schema.applied_event).values(
                message_id=message_id,
                chain_id=chain_id,
                txid=txid,
                applied_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
            )
        )

    def apply(self, conn: Connection, document: Document) -> None:
        """Apply the document on `conn` (the caller owns the transaction and blockchain mode)."""
        if document.operation == "delete":
            table = self._table(conn, document.root.table)
            key = self._key(table, self._values(table, document.root, conn))
            conn.execute(delete(table).where(*[table.c[k] == v for k, v in key.items()]))
            return
        self._apply_row(conn, document.root, UPSERT)

    def row_identity(self, conn: Connection, document: Document) -> tuple[str, str]:
        """(table, digest of the root row's key text): which local row a document changes."""
        table = self._table(conn, document.root.table)
        key = {c.name: document.root.values.get(c.name) for c in table.primary_key.columns}
        text = json.dumps(key, sort_keys=True, separators=(",", ":"))
        return table.name, hashlib.sha256(text.encode("utf-8")).hexdigest()

    # -- rows -----------------------------------------------------------------------------

    def _table(self, conn: Connection, name: str) -> Table:
        if refused_table(name):
            raise ApplyFailed(f"table {name} is refused: configuration, audit or security table")
        if self.allowed is not None and name not in self.allowed:
            raise ApplyFailed(f"table {name} is not on this receiver's allow-list")
        try:
            return self.catalog.table(name, conn)
        except ConfigurationInvalid:
            raise ApplyFailed(f"unknown table {name!r}") from None

    def _values(self, table: Table, row: Row, conn: Connection | None = None) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if any(name not in table.c for name in row.values):
            # A column this database may have gained since the table was read: read it again
            # (a long-running receiver notices the administrator's ALTER TABLE).
            table = self.catalog.refreshed(table.name, conn)
        for name, text in row.values.items():
            if name not in table.c:
                raise ApplyFailed(f"unknown column {name!r} in table {table.name}")
            values[table.c[name].name] = from_text(text, table.c[name], self.dialect)
        return values

    def _key(self, table: Table, values: Mapping[str, Any]) -> dict[str, Any]:
        key = {}
        for column in table.primary_key.columns:
            if values.get(column.name) is None:
                raise ApplyFailed(f"row of {table.name} lacks primary-key column {column.name}")
            key[column.name] = values[column.name]
        if not key:
            raise ApplyFailed(f"table {table.name} has no primary key")
        return key

    def _apply_row(self, conn: Connection, row: Row, policy: str) -> None:
        table = self._table(conn, row.table)
        for parent in row.parents:
            policy_for_parent = UPSERT if parent.table in self.parent_upsert else INSERT_IF_MISSING
            self._apply_row(conn, parent, policy_for_parent)
        values = self._values(table, row, conn)
        if any(name not in table.c for name in values):
            table = self._table(conn, row.table)  # read again by _values
        values = self.hooks.after_receive(table.name, values)
        values = {k: v for k, v in values.items() if k in table.c}
        self._key(table, values)
        self._write(conn, table, values, policy)
        if row.file_body is not None:
            self.hooks.put_file_body(
                table.name, values, row.file_body.file_name, row.file_body.content, conn
            )
        for child in row.children:
            self._apply_row(conn, child, UPSERT)

    def _write(self, conn: Connection, table: Table, values: dict[str, Any], policy: str) -> None:
        pk = [c.name for c in table.primary_key.columns]
        others = [name for name in values if name not in pk]
        if self.dialect in ("sqlite", "postgresql"):
            dialect_insert = sqlite.insert if self.dialect == "sqlite" else postgresql.insert
            stmt = dialect_insert(table).values(values)
            if policy == UPSERT and others:
                stmt = stmt.on_conflict_do_update(
                    index_elements=pk, set_={name: stmt.excluded[name] for name in others}
                )
            else:
                stmt = stmt.on_conflict_do_nothing(index_elements=pk)
            conn.execute(stmt)
        elif self.dialect in ("mysql", "mariadb"):
            stmt = mysql.insert(table).values(values)
            if policy == UPSERT and others:
                stmt = stmt.on_duplicate_key_update({name: stmt.inserted[name] for name in others})
            else:
                stmt = stmt.on_duplicate_key_update({pk[0]: table.c[pk[0]]})
            conn.execute(stmt)
        else:  # portable fallback: look, then insert or update
            key = {name: values[name] for name in pk}
            where = [table.c[k] == v for k, v in key.items()]
            exists = conn.execute(select(*[table.c[k] for k in pk]).where(*where)).first()
            if exists is None:
                conn.execute(insert(table).values(values))
            elif policy == UPSERT and others:
                conn.execute(update(table).where(*where).values({n: values[n] for n in others}))
