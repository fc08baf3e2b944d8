"""The application database's own metadata: tables, columns, keys and foreign keys.

Every table and column name the trigger subsystem puts into SQL comes from here, i.e. from
the database's catalog via SQLAlchemy reflection; a name from configuration text or from a
received document is only ever used to *look up* a reflected object, never spliced into SQL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import MetaData, Table, inspect, literal_column, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import NoSuchTableError

from triggers import xmlsafe
from triggers.errors import ConfigurationInvalid, DocumentRejected

__all__ = ["Relation", "Catalog"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Relation:
    """One foreign key between a senior and a junior table of a related-table tree.

    `holder` holds the foreign-key columns `fk_columns`, which point at `referred_columns`
    of `referred`. For a *parent* junior the senior is the holder; for a *child* junior the
    junior is.
    """

    holder: str
    fk_columns: tuple[str, ...]
    referred: str
    referred_columns: tuple[str, ...]


class Catalog:
    """Reflected tables of one database (one schema), cached; thread-safe."""

    def __init__(
        self,
        engine: Engine,
        schema: str | None = None,
        check_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.schema = schema
        self.dialect_name = engine.dialect.name
        self.check_interval = check_interval
        self._clock = clock
        self._metadata = MetaData(schema=schema)
        self._lock = threading.Lock()
        self._names: frozenset[str] | None = None
        self._checked: dict[str, float] = {}
        self.reflections = 0
        """How many times the schema was found changed and read again (for tests, logs)."""

    def table_names(self, refresh: bool = False) -> frozenset[str]:
        """Names of the tables that exist in the database."""
        with self._lock:
            if self._names is None or refresh:
                self._names = frozenset(inspect(self.engine).get_table_names(schema=self.schema))
            return self._names

    def has_table(self, name: str) -> bool:
        """True when `name` is a valid identifier naming an existing table."""
        if not xmlsafe.NAME_RE.match(name or ""):
            return False
        return name in self.table_names() or name in self.table_names(refresh=True)

    def table(self, name: str, conn: Connection | None = None) -> Table:
        """The reflected table called `name`; ConfigurationInvalid if there is none."""
        try:
            xmlsafe.check_name(name, "table")
        except DocumentRejected as exc:
            raise ConfigurationInvalid(str(exc)) from None
        key = f"{self.schema}.{name}" if self.schema else name
        with self._lock:
            found = self._metadata.tables.get(key)
            if found is not None:
                return found
            try:
                return Table(name, self._metadata, autoload_with=conn if conn is not None else self.engine)
            except NoSuchTableError:
                raise ConfigurationInvalid(f"table {name!r} does not exist") from None

    def forget(self) -> None:
        """Drop cached reflections (after a schema change)."""
        with self._lock:
            self._metadata = MetaData(schema=self.schema)
            self._names = None
            self._checked = {}

    def current(self, name: str, conn: Connection | None = None) -> Table:
        """The table as the database has it *now*: the cached reflection, checked against the
        live column list at most every `check_interval` seconds and read again when a column
        was added, dropped or renamed. Long-running relays and receivers use this, so a
        schema change is noticed without a restart and no column is left out silently."""
        table = self.table(name, conn)
        now = self._clock()
        key = table.key
        with self._lock:
            last = self._checked.get(key)
            if last is not None and now - last < self.check_interval:
                return table
        live = self._live_columns(table, conn)
        if live == [c.name for c in table.columns]:
            with self._lock:
                self._checked[key] = now
            return table
        log.info("table %s changed (columns now %s); reading its definition again",
                 name, ", ".join(live))
        self.forget()
        self.reflections += 1
        table = self.table(name, conn)
        with self._lock:
            self._checked[table.key] = now
        return table

    def recheck(self) -> None:
        """Have `current` compare every table with the database again on its next use (the
        relay calls this once per round, so each round sees the schema as it is)."""
        with self._lock:
            self._checked = {}

    def refreshed(self, name: str, conn: Connection | None = None) -> Table:
        """The table read again from the database right now (after a miss, e.g. an unknown
        column in a received document)."""
        self.forget()
        self.reflections += 1
        return self.table(name, conn)

    def _live_columns(self, table: Table, conn: Connection | None) -> list[str]:
        # SELECT * over the reflected table object (its name is quoted by the dialect, never
        # spliced from text): the result's keys are the columns the database has now.
        query = select(literal_column("*")).select_from(table).limit(0)
        if conn is not None:
            return list(conn.execute(query).keys())
        with self.engine.connect() as own:
            return list(own.execute(query).keys())

    def column_names(self, name: str) -> list[str]:
        """Column names of a table in column order."""
        return [c.name for c in self.table(name).columns]

    def primary_key(self, name: str) -> list[str]:
        """Primary-key column names of a table; ConfigurationInvalid if it has none."""
        pk = [c.name for c in self.table(name).primary_key.columns]
        if not pk:
            raise ConfigurationInvalid(f"table {name!r} has no primary key")
        return pk

    def _foreign_keys(self, holder: str, referred: str) -> list[Relation]:
        table = self.table(holder)
        found = []
        for constraint in table.foreign_key_constraints:
            if constraint.referred_table.name != referred:
                continue
            found.append(
                Relation(
                    holder=holder,
                    fk_columns=tuple(c.name for c in constraint.columns),
                    referred=referred,
                    referred_columns=tuple(e.column.name for e in constraint.elements),
                )
            )
        return found

    def relation(
        self, senior: str, junior: str, parent_or_child: str, fk_columns: str | None = None
    ) -> Relation:
        """The foreign key linking `junior` to `senior` in the stated direction.

        parent: the senior holds a foreign key to the junior; child: the junior holds a
        foreign key to the senior. When several foreign keys qualify, `fk_columns` (comma
        separated) must name the holder's columns of the one meant.
        """
        if parent_or_child == "parent":
            candidates = self._foreign_keys(senior, junior)
        elif parent_or_child == "child":
            candidates = self._foreign_keys(junior, senior)
        else:
            raise ConfigurationInvalid("parent_or_child must be 'parent' or 'child'")
        if fk_columns:
            wanted = tuple(c.strip() for c in fk_columns.split(",") if c.strip())
            candidates = [r for r in candidates if r.fk_columns == wanted]
            if not candidates:
                raise ConfigurationInvalid(
                    f"no foreign key ({', '.join(wanted)}) links {junior} as {parent_or_child} "
                    f"of {senior}"
                )
        if not candidates:
            raise ConfigurationInvalid(
                f"{junior} is not related to {senior} as {parent_or_child} by any foreign key"
            )
        if len(candidates) > 1:
            options = "; ".join(",".join(r.fk_columns) for r in candidates)
            raise ConfigurationInvalid(
                f"several foreign keys link {junior} and {senior} ({options}): set fk_columns"
            )
        return candidates[0]

    def related_tables(self, table: str) -> list[tuple[str, str, Relation]]:
        """Every (table, 'parent'|'child', relation) related to `table` by a foreign key."""
        found: list[tuple[str, str, Relation]] = []
        referred_names = sorted(
            {c.referred_table.name for c in self.table(table).foreign_key_constraints}
        )
        for referred in referred_names:
            for relation in self._foreign_keys(table, referred):
                found.append((referred, "parent", relation))
        for other in sorted(self.table_names()):
            if other == table:
                continue
            try:
                relations = self._foreign_keys(other, table)
            except ConfigurationInvalid:
                continue
            for relation in relations:
                found.append((other, "child", relation))
        return found
