"""Configuration commands (spec 1.2): chains, streams, nodes, triggers and related-table trees.

Each function validates as the spec says and writes in one transaction. Table and column
names are checked against the database's own metadata (`Catalog`), never trusted as text.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from triggers import crypto, schema
from triggers.catalog import Catalog
from triggers.documents import RESERVED
from triggers.errors import ConfigurationInvalid
from triggers.keys import check_participant_id
from triggers.rules import TriggerRule, is_active
from triggers.xmlsafe import NAME_RE

__all__ = [
    "CONTACT_COLUMN",
    "RelatedEntry",
    "init",
    "instance_origin",
    "add_chain",
    "get_chain",
    "add_stream",
    "add_node",
    "add_trigger",
    "update_trigger",
    "end_trigger",
    "list_triggers",
    "get_trigger",
    "add_related",
    "add_relations",
    "related_entries",
    "format_tree",
    "has_stream",
    "import_streams",
    "import_nodes",
]

log = logging.getLogger(__name__)

CONTACT_COLUMN = "contact_mech_id_blockchain"
_AUDIT_RE = re.compile(r"(^|_)(audit|log|logs)($|_)|^(user|users|role|roles|security)_|^sec_")
_TRIGGER_FIELDS = (
    "subsys_dir",
    "table_id",
    "table_id_alias",
    "chain_id",
    "stream_id",
    "start_date",
    "end_date",
    "trigger_column",
    "trigger_value",
    "distribution_type",
    "distribution_table",
)


def _today() -> dt.date:
    return dt.date.today()


def _check_dates(start: dt.date | None, end: dt.date | None) -> None:
    if start is not None and end is not None and end < start:
        raise ConfigurationInvalid(f"end_date {end} is before start_date {start}")


def _check_identifier(value: str, what: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ConfigurationInvalid(f"{what} {value!r} is not a valid XML element / SQL identifier")
    return value


def refused_table(name: str) -> bool:
    """This subsystem's tables and audit/log/security tables are never replicated."""
    return name in schema.OWN_TABLES or bool(_AUDIT_RE.search(name.lower()))


# -- instance ---------------------------------------------------------------------------------


def init(engine: Engine, participant_id: int | None = None) -> str:
    """Create the subsystem's tables and this instance's identity row; return the origin.

    The origin is the first part of every event id: the participant id when one is given
    (it is unique on every chain, spec 1.11), else a random identifier.
    """
    if participant_id is not None:
        check_participant_id(participant_id)  # before anything is created
    schema.create_all(engine)
    with engine.begin() as conn:
        row = conn.execute(select(schema.instance)).mappings().first()
        if row is not None:
            if participant_id is not None and row["participant_id"] not in (None, participant_id):
                raise ConfigurationInvalid(
                    f"this database already has participant id {row['participant_id']}; "
                    "a participant id never changes"
                )
            return str(row["origin"])
        origin = str(participant_id) if participant_id is not None else uuid.uuid4().hex[:16]
        conn.execute(
            insert(schema.instance).values(
                instance_key=1,
                origin=origin,
                participant_id=participant_id,
                created_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
            )
        )
    log.info("trigger tables ready, origin %s", origin)
    return origin


def instance_origin(conn: Connection) -> str:
    """The origin recorded by `init`; ConfigurationInvalid before init."""
    origin = conn.execute(select(schema.instance.c.origin)).scalar()
    if origin is None:
        raise ConfigurationInvalid("trigger tables are not initialised: run chainmill triggers init")
    return str(origin)


# -- chains, streams, nodes -------------------------------------------------------------------


def add_chain(
    engine: Engine,
    chain_id: str,
    *,
    chain_desc: str,
    rpc_host: str,
    rpc_port: int,
    public_key: str,
    private_key: str,
    cipher_method: str = crypto.CIPHER,
    parent_node: str | None = None,
    start_date: dt.date | None = None,
    end_date: dt.date | None = None,
) -> None:
    """Add a chain this instance takes part in (validation of spec 1.2.1)."""
    start_date = start_date or _today()
    if not chain_id:
        raise ConfigurationInvalid("chain_id is required")
    if not 1 <= int(rpc_port) <= 65535:
        raise ConfigurationInvalid(f"rpc_port {rpc_port} is not in 1..65535")
    if cipher_method != crypto.CIPHER:
        raise ConfigurationInvalid(f"cipher_method must be {crypto.CIPHER!r}")
    crypto.check_keypair(Path(private_key), Path(public_key))
    _check_dates(start_date, end_date)
    with engine.begin() as conn:
        if conn.execute(select(schema.chain.c.chain_id).where(schema.chain.c.chain_id == chain_id)).first():
            raise ConfigurationInvalid(f"chain {chain_id!r} already exists")
        if parent_node and not conn.execute(
            select(schema.node.c.node_address).where(
                schema.node.c.chain_id == chain_id, schema.node.c.node_address == parent_node
            )
        ).first():
            raise ConfigurationInvalid(f"parent_node {parent_node} is not a node of {chain_id}")
        conn.execute(
            insert(schema.chain).values(
                chain_id=chain_id,
                chain_desc=chain_desc,
                rpc_host=rpc_host,
                rpc_port=int(rpc_port),
                cipher_method=cipher_method,
                public_key=str(public_key),
                private_key=str(private_key),
                parent_node=parent_node,
                start_date=start_date,
                end_date=end_date,
            )
        )


def get_chain(conn: Connection, chain_id: str) -> dict[str, Any]:
    """The chain's row; ConfigurationInvalid when unknown."""
    row = conn.execute(select(schema.chain).where(schema.chain.c.chain_id == chain_id)).mappings().first()
    if row is None:
        raise ConfigurationInvalid(f"unknown chain {chain_id!r}")
    return dict(row)


def add_stream(
    engine: Engine,
    chain_id: str,
    stream_id: str,
    *,
    stream_desc: str = "",
    is_open: bool = True,
    stream_ref: str | None = None,
    create_txid: str | None = None,
    start_date: dt.date | None = None,
    end_date: dt.date | None = None,
    conn: Connection | None = None,
) -> None:
    """Add a stream row; names are unique per chain, compared case-insensitively."""
    _check_dates(start_date, end_date)
    if not stream_id:
        raise ConfigurationInvalid("stream_id is required")

    def run(c: Connection) -> None:
        get_chain(c, chain_id)
        clash = c.execute(
            select(schema.stream.c.stream_id).where(
                schema.stream.c.chain_id == chain_id,
                func.lower(schema.stream.c.stream_id) == stream_id.lower(),
            )
        ).first()
        if clash:
            raise ConfigurationInvalid(f"stream {stream_id!r} already exists on {chain_id}")
        c.execute(
            insert(schema.stream).values(
                chain_id=chain_id,
                stream_id=stream_id,
                stream_ref=stream_ref,
                stream_desc=stream_desc,
                create_txid=create_txid,
                is_open=is_open,
                start_date=start_date or _today(),
                end_date=end_date,
            )
        )

    if conn is not None:
        run(conn)
    else:
        with engine.begin() as c:
            run(c)


_PERMS = ("connect", "send", "receive", "create", "issue", "mine", "activate", "admin")


def add_node(
    engine: Engine,
    chain_id: str,
    node_address: str,
    *,
    ip_address: str = "",
    is_mine: bool = False,
    node_label: str | None = None,
    party_id: str | None = None,
    permissions: Iterable[str] = ("connect", "send", "receive"),
    start_date: dt.date | None = None,
    end_date: dt.date | None = None,
) -> None:
    """Add a member node; exactly one `is_mine` row per chain (Decision)."""
    _check_dates(start_date, end_date)
    perms = set(permissions)
    unknown = perms - set(_PERMS)
    if unknown:
        raise ConfigurationInvalid(f"unknown permissions: {', '.join(sorted(unknown))}")
    with engine.begin() as conn:
        get_chain(conn, chain_id)
        if is_mine and conn.execute(
            select(schema.node.c.node_address).where(
                schema.node.c.chain_id == chain_id, schema.node.c.is_mine.is_(True)
            )
        ).first():
            raise ConfigurationInvalid(f"chain {chain_id} already has this instance's own node")
        conn.execute(
            insert(schema.node).values(
                chain_id=chain_id,
                node_address=node_address,
                ip_address=ip_address or ("::1" if is_mine else ""),
                is_mine=is_mine,
                node_label=node_label,
                party_id=party_id,
                start_date=start_date or _today(),
                end_date=end_date,
                **{f"perm_{p}": p in perms for p in _PERMS},
            )
        )


# -- triggers ---------------------------------------------------------------------------------


def _validate_trigger(conn: Connection, catalog: Catalog, values: dict[str, Any]) -> None:
    table = _check_identifier(values.get("table_id") or "", "table_id")
    if not values.get("subsys_dir"):
        raise ConfigurationInvalid("subsys_dir is required")
    if refused_table(table):
        raise ConfigurationInvalid(f"{table} is a configuration, audit or log table: never a root table")
    if not catalog.has_table(table):
        raise ConfigurationInvalid(f"table {table!r} does not exist in the database")
    columns = catalog.column_names(table)
    catalog.primary_key(table)
    for column in columns:
        _check_identifier(column, f"column of {table}")
        if column in RESERVED:
            raise ConfigurationInvalid(f"{table}.{column} is a name reserved by the document format")
    alias = values.get("table_id_alias")
    if alias:
        _check_identifier(alias, "table_id_alias")
        if alias == table:
            raise ConfigurationInvalid("table_id_alias must differ from table_id")
    chain_id, stream_id = values.get("chain_id"), values.get("stream_id")
    if not chain_id or not stream_id:
        raise ConfigurationInvalid("chain_id and stream_id are required")
    if stream_id.lower() in schema.SYSTEM_STREAMS:
        raise ConfigurationInvalid(f"{stream_id} is a system stream and cannot be a trigger target")
    stream_row = conn.execute(
        select(schema.stream).where(
            schema.stream.c.chain_id == chain_id, schema.stream.c.stream_id == stream_id
        )
    ).mappings().first()
    if stream_row is None:
        raise ConfigurationInvalid(f"stream {stream_id!r} of chain {chain_id!r} is not configured")
    if not is_active(stream_row["start_date"], stream_row["end_date"], _today()):
        raise ConfigurationInvalid(f"stream {stream_id!r} is not active")
    column, value = values.get("trigger_column"), values.get("trigger_value")
    if bool(column) != (value is not None and value != ""):
        raise ConfigurationInvalid("trigger_column and trigger_value must be both empty or both filled")
    if column and column not in columns:
        raise ConfigurationInvalid(f"trigger_column {column!r} is not a column of {table}")
    dist_type = values.get("distribution_type") or "all nodes"
    dist_table = values.get("distribution_table")
    if dist_type not in schema.DISTRIBUTION_TYPES:
        raise ConfigurationInvalid(
            f"distribution_type must be one of: {', '.join(schema.DISTRIBUTION_TYPES)}"
        )
    if dist_type != "database table" and dist_table:
        raise ConfigurationInvalid("distribution_table is only allowed for type 'database table'")
    if dist_type == "database table":
        _validate_distribution_table(catalog, table, dist_table)
    if dist_type == "party in record" and CONTACT_COLUMN not in columns:
        raise ConfigurationInvalid(f"'party in record' needs a {CONTACT_COLUMN} column on {table}")
    _check_dates(values.get("start_date"), values.get("end_date"))


def _validate_distribution_table(catalog: Catalog, table: str, dist_table: str | None) -> None:
    if not dist_table:
        raise ConfigurationInvalid("distribution_table is required for type 'database table'")
    _check_identifier(dist_table, "distribution_table")
    if dist_table == table:
        raise ConfigurationInvalid("distribution_table cannot be the root table itself")
    if not catalog.has_table(dist_table):
        raise ConfigurationInvalid(f"distribution_table {dist_table!r} does not exist")
    if CONTACT_COLUMN not in catalog.column_names(dist_table):
        raise ConfigurationInvalid(f"distribution_table {dist_table} has no {CONTACT_COLUMN} column")
    pk = tuple(catalog.primary_key(table))
    relations = [
        r for r in catalog._foreign_keys(dist_table, table) if tuple(r.referred_columns) == pk
    ]
    if not relations:
        raise ConfigurationInvalid(
            f"distribution_table {dist_table} has no foreign key to the primary key of {table}"
        )


def add_trigger(engine: Engine, catalog: Catalog, **fields: Any) -> int:
    """Validate and add a trigger; returns its trigger_id."""
    unknown = set(fields) - set(_TRIGGER_FIELDS)
    if unknown:
        raise ConfigurationInvalid(f"unknown trigger fields: {', '.join(sorted(unknown))}")
    values = {name: fields.get(name) for name in _TRIGGER_FIELDS}
    values["distribution_type"] = values["distribution_type"] or "all nodes"
    values["start_date"] = values["start_date"] or _today()
    for name in ("table_id_alias", "trigger_column", "trigger_value", "distribution_table", "end_date"):
        if values[name] == "":
            values[name] = None
    with engine.begin() as conn:
        _validate_trigger(conn, catalog, values)
        result = conn.execute(insert(schema.trigger).values(**values))
        trigger_id = int(result.inserted_primary_key[0])
    log.info("trigger %s added on %s", trigger_id, values["table_id"])
    return trigger_id


def get_trigger(conn: Connection, trigger_id: int) -> TriggerRule:
    """The trigger's row as a TriggerRule; ConfigurationInvalid when unknown."""
    row = conn.execute(
        select(schema.trigger).where(schema.trigger.c.trigger_id == trigger_id)
    ).mappings().first()
    if row is None:
        raise ConfigurationInvalid(f"unknown trigger {trigger_id}")
    return TriggerRule.from_row(row)


def update_trigger(engine: Engine, catalog: Catalog, trigger_id: int, **changes: Any) -> None:
    """Change fields of a trigger; the result is validated as a whole."""
    unknown = set(changes) - set(_TRIGGER_FIELDS)
    if unknown:
        raise ConfigurationInvalid(f"unknown trigger fields: {', '.join(sorted(unknown))}")
    changes = {k: (None if v == "" else v) for k, v in changes.items()}
    with engine.begin() as conn:
        current = get_trigger(conn, trigger_id)
        values = {name: getattr(current, name) for name in _TRIGGER_FIELDS}
        values.update(changes)
        _validate_trigger(conn, catalog, values)
        conn.execute(
            update(schema.trigger).where(schema.trigger.c.trigger_id == trigger_id).values(**changes)
        )


def end_trigger(engine: Engine, trigger_id: int, end_date: dt.date | None = None) -> None:
    """Close a trigger's activity window (the row stays, for the record)."""
    end_date = end_date or _today()
    with engine.begin() as conn:
        current = get_trigger(conn, trigger_id)
        _check_dates(current.start_date, end_date)
        conn.execute(
            update(schema.trigger)
            .where(schema.trigger.c.trigger_id == trigger_id)
            .values(end_date=end_date)
        )


def list_triggers(engine: Engine, active_on: dt.date | None = None) -> list[TriggerRule]:
    """All triggers by trigger_id, or only those active on `active_on`."""
    with engine.connect() as conn:
        rows = conn.execute(select(schema.trigger).order_by(schema.trigger.c.trigger_id)).mappings()
        rules = [TriggerRule.from_row(r) for r in rows]
    if active_on is not None:
        rules = [r for r in rules if r.active(active_on)]
    return rules


# -- related tables ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RelatedEntry:
    """One `related_table` row."""

    node_id: int
    trigger_id: int
    subsys_dir: str
    table_id: str
    table_id_alias: str | None
    node_id_snr: int | None
    parent_or_child: str
    fk_columns: str | None


def related_entries(conn: Connection, trigger_id: int) -> list[RelatedEntry]:
    """The trigger's related-table entries, by node_id."""
    rows = conn.execute(
        select(schema.related_table)
        .where(schema.related_table.c.trigger_id == trigger_id)
        .order_by(schema.related_table.c.node_id)
    ).mappings()
    return [RelatedEntry(**dict(r)) for r in rows]


def add_related(
    engine: Engine,
    catalog: Catalog,
    trigger_id: int,
    table_id: str,
    parent_or_child: str,
    *,
    node_id_snr: int | None = None,
    fk_columns: str | None = None,
    subsys_dir: str | None = None,
    table_id_alias: str | None = None,
) -> int:
    """Add one entry below the root (node_id_snr None) or below entry `node_id_snr`."""
    _check_identifier(table_id, "table_id")
    if refused_table(table_id):
        raise ConfigurationInvalid(f"{table_id} is a configuration, audit or log table")
    if table_id_alias:
        _check_identifier(table_id_alias, "table_id_alias")
    with engine.begin() as conn:
        trigger_row = get_trigger(conn, trigger_id)
        if node_id_snr is None:
            senior = trigger_row.table_id
        else:
            senior_entry = next(
                (e for e in related_entries(conn, trigger_id) if e.node_id == node_id_snr), None
            )
            if senior_entry is None:
                raise ConfigurationInvalid(
                    f"senior entry {node_id_snr} does not exist for trigger {trigger_id}"
                )
            senior = senior_entry.table_id
        if not catalog.has_table(table_id):
            raise ConfigurationInvalid(f"table {table_id!r} does not exist in the database")
        catalog.primary_key(table_id)
        for column in catalog.column_names(table_id):
            _check_identifier(column, f"column of {table_id}")
        catalog.relation(senior, table_id, parent_or_child, fk_columns)
        result = conn.execute(
            insert(schema.related_table).values(
                trigger_id=trigger_id,
                subsys_dir=subsys_dir or trigger_row.subsys_dir,
                table_id=table_id,
                table_id_alias=table_id_alias or None,
                node_id_snr=node_id_snr,
                parent_or_child=parent_or_child,
                fk_columns=fk_columns or None,
            )
        )
        return int(result.inserted_primary_key[0])


def add_relations(
    engine: Engine, catalog: Catalog, trigger_id: int, node_id_snr: int | None = None
) -> list[int]:
    """Add one entry for every table related to the root (or to entry `node_id_snr`)."""
    with engine.connect() as conn:
        trigger_row = get_trigger(conn, trigger_id)
        entries = related_entries(conn, trigger_id)
    if node_id_snr is None:
        senior = trigger_row.table_id
    else:
        match = [e for e in entries if e.node_id == node_id_snr]
        if not match:
            raise ConfigurationInvalid(f"senior entry {node_id_snr} does not exist")
        senior = match[0].table_id
    added = []
    for table, direction, relation in catalog.related_tables(senior):
        if refused_table(table):
            continue
        if trigger_row.distribution_table and table == trigger_row.distribution_table:
            continue  # recipients must not see each other (spec 1.7.2 notes)
        added.append(
            add_related(
                engine,
                catalog,
                trigger_id,
                table,
                direction,
                node_id_snr=node_id_snr,
                fk_columns=",".join(relation.fk_columns),
            )
        )
    return added


def format_tree(root_subsys: str, root_table: str, entries: list[RelatedEntry]) -> str:
    """The tree display: `<subsys_dir>.<table_id> (<alias>) [Parent|Child]`, indented by level."""
    lines = [f"{root_subsys}.{root_table}"]

    def walk(senior: int | None, depth: int) -> None:
        for entry in entries:
            if entry.node_id_snr == senior:
                alias = f" ({entry.table_id_alias})" if entry.table_id_alias else ""
                kind = "Parent" if entry.parent_or_child == "parent" else "Child"
                lines.append(f"{'  ' * depth}{entry.subsys_dir}.{entry.table_id}{alias} [{kind}]")
                walk(entry.node_id, depth + 1)

    walk(None, 1)
    return "\n".join(lines)


# -- imports from the node --------------------------------------------------------------------


def has_stream(engine: Engine, chain_id: str, stream_id: str) -> bool:
    """Whether the stream is configured for the chain (names compare case-insensitively)."""
    with engine.connect() as conn:
        names = conn.execute(
            select(schema.stream.c.stream_id).where(schema.stream.c.chain_id == chain_id)
        ).scalars()
        return any(n.lower() == stream_id.lower() for n in names)


def import_streams(engine: Engine, client: Any, chain_id: str) -> list[str]:
    """Insert the chain's streams the node knows and this database does not; return their names."""
    streams = client.call("liststreams", "*", True)
    added = []
    with engine.begin() as conn:
        get_chain(conn, chain_id)
        known = {
            r.lower()
            for r in conn.execute(
                select(schema.stream.c.stream_id).where(schema.stream.c.chain_id == chain_id)
            ).scalars()
        }
        for item in streams:
            name = item.get("name")
            if not name or name.lower() in known:
                continue
            restrict = item.get("restrict") or {}
            is_open = not restrict.get("write", False) if "restrict" in item else bool(item.get("open", True))
            add_stream(
                engine,
                chain_id,
                name,
                stream_desc=str((item.get("details") or {}).get("description", "")),
                is_open=is_open,
                stream_ref=item.get("streamref"),
                create_txid=item.get("createtxid"),
                conn=conn,
            )
            known.add(name.lower())
            added.append(name)
    return added


def import_nodes(engine: Engine, client: Any, chain_id: str) -> list[str]:
    """Insert or refresh the chain's nodes and their permissions from `listpermissions`."""
    own = set(client.call("getaddresses"))
    perms: dict[str, set[str]] = {}
    for entry in client.call("listpermissions", "*", "*"):
        if entry.get("for") is None:
            perms.setdefault(entry["address"], set()).add(entry["type"])
    for address in own:
        perms.setdefault(address, set())
    changed = []
    with engine.begin() as conn:
        get_chain(conn, chain_id)
        existing = {
            r.node_address: r
            for r in conn.execute(select(schema.node).where(schema.node.c.chain_id == chain_id))
        }
        has_mine = any(r.is_mine for r in existing.values())
        # The node's first wallet address with `connect` is the one it proves in handshakes.
        mine = sorted(a for a in own if "connect" in perms.get(a, set())) or sorted(own)
        my_address = mine[0] if mine else None
        for address, granted in sorted(perms.items()):
            flags = {f"perm_{p}": p in granted for p in _PERMS}
            if address in existing:
                conn.execute(
                    update(schema.node)
                    .where(schema.node.c.chain_id == chain_id, schema.node.c.node_address == address)
                    .values(**flags)
                )
            else:
                if address in own and address != my_address:
                    continue  # one address per node (Decision): extra wallet addresses are not offered
                is_mine = address == my_address and not has_mine
                conn.execute(
                    insert(schema.node).values(
                        chain_id=chain_id,
                        node_address=address,
                        ip_address="::1" if is_mine else "",
                        is_mine=is_mine,
                        start_date=_today(),
                        **flags,
                    )
                )
                has_mine = has_mine or is_mine
            changed.append(address)
    return changed
