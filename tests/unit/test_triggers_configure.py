"""Configuration validation (spec 1.2): triggers, related-table trees, streams, the CLI."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from triggers import cli, configure, crypto
from triggers.catalog import Catalog
from triggers.errors import ConfigurationInvalid
from triggers.tools import rfq


@pytest.fixture
def db(tmp_path: Path):
    engine = create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    rfq.create(engine)
    configure.init(engine, 4711)
    pair = crypto.write_keypair(tmp_path / "k", crypto.generate_keypair())
    configure.add_chain(engine, "chain1", chain_desc="c", rpc_host="127.0.0.1", rpc_port=8000,
                        public_key=str(pair.public_path), private_key=str(pair.private_path))
    configure.add_stream(engine, "chain1", "rfq")
    configure.add_stream(engine, "chain1", "pubkeys")
    return engine


def _add(engine, **kw):
    fields = dict(subsys_dir="proc", table_id="request_header", chain_id="chain1", stream_id="rfq")
    fields.update(kw)
    return configure.add_trigger(engine, Catalog(engine), **fields)


@pytest.mark.parametrize("kw, message", [
    ({"trigger_column": "status"}, "both empty or both filled"),
    ({"trigger_value": "x"}, "both empty or both filled"),
    ({"trigger_column": "nope", "trigger_value": "x"}, "not a column"),
    ({"table_id": "missing"}, "does not exist"),
    ({"table_id": "blockchain_outbox"}, "never a root table"),
    ({"table_id": "audit_log"}, "never a root table"),
    ({"stream_id": "pubkeys"}, "system stream"),
    ({"stream_id": "other"}, "not configured"),
    ({"distribution_type": "database table"}, "required"),
    ({"distribution_type": "database table", "distribution_table": "request_item"}, "contact_mech"),
    ({"distribution_type": "database table", "distribution_table": "request_header"}, "root table"),
    ({"distribution_table": "request_supplier"}, "only allowed"),
    ({"distribution_type": "everyone"}, "must be one of"),
    ({"start_date": dt.date(2024, 5, 1), "end_date": dt.date(2024, 4, 1)}, "before start_date"),
    ({"table_id_alias": "bad alias"}, "not a valid"),
])
def test_configure_trigger_validation(db, kw, message: str) -> None:
    with pytest.raises(ConfigurationInvalid, match=message):
        _add(db, **kw)


def test_configure_valid_triggers_update_and_end(db) -> None:
    first = _add(db, trigger_column="status", trigger_value="Sent to Supplier",
                 distribution_type="database table", distribution_table="request_supplier")
    second = _add(db, distribution_type="party in record")
    configure.update_trigger(db, Catalog(db), second, trigger_column="status", trigger_value="X")
    with pytest.raises(ConfigurationInvalid):
        configure.update_trigger(db, Catalog(db), second, trigger_value="")
    configure.end_trigger(db, first, dt.date.today())
    assert [r.trigger_id for r in configure.list_triggers(db, dt.date.today() + dt.timedelta(1))] == [second]


def test_configure_related_tree_checks_foreign_keys_and_direction(db) -> None:
    trigger_id = _add(db)
    catalog = Catalog(db)
    with pytest.raises(ConfigurationInvalid, match="not related"):
        configure.add_related(db, catalog, trigger_id, "party", "child")
    with pytest.raises(ConfigurationInvalid, match="not related"):
        configure.add_related(db, catalog, trigger_id, "product", "parent")
    with pytest.raises(ConfigurationInvalid, match="does not exist"):
        configure.add_related(db, catalog, trigger_id, "party", "parent", node_id_snr=99)
    party = configure.add_related(db, catalog, trigger_id, "party", "parent", fk_columns="party_id_buyer")
    item = configure.add_related(db, catalog, trigger_id, "request_item", "child")
    configure.add_related(db, catalog, trigger_id, "product", "parent", node_id_snr=item)
    with db.connect() as conn:
        tree = configure.format_tree("proc", "request_header", configure.related_entries(conn, trigger_id))
    assert tree.splitlines() == [
        "proc.request_header", "  proc.party [Parent]", "  proc.request_item [Child]",
        "    proc.product [Parent]",
    ]
    assert party < item


def test_configure_add_relations_skips_distribution_table(db) -> None:
    trigger_id = _add(db, distribution_type="database table", distribution_table="request_supplier")
    configure.add_relations(db, Catalog(db), trigger_id)
    with db.connect() as conn:
        tables = {(e.table_id, e.parent_or_child) for e in configure.related_entries(conn, trigger_id)}
    assert tables == {("party", "parent"), ("request_item", "child")}


def test_configure_streams_are_unique_case_insensitively(db) -> None:
    with pytest.raises(ConfigurationInvalid, match="already exists"):
        configure.add_stream(db, "chain1", "RFQ")


def test_configure_cli_add_and_list(db, capsys) -> None:
    url = str(db.url)
    assert cli.main(["triggers", "add", "--db", url, "--subsys", "proc", "--table", "request_header",
                     "--chain", "chain1", "--stream", "rfq", "--column", "status",
                     "--value", "Sent to Supplier"]) == 0
    assert cli.main(["triggers", "relate", "--db", url, "1", "request_item", "--child"]) == 0
    assert cli.main(["triggers", "list", "--db", url]) == 0
    out = capsys.readouterr().out
    assert "proc.request_header when status = 'Sent to Supplier' -> chain1/rfq" in out
    assert "proc.request_item [Child]" in out
    assert cli.main(["triggers", "add", "--db", url, "--subsys", "proc", "--table", "request_header",
                     "--chain", "chain1", "--stream", "rfq", "--column", "status"]) == 1
