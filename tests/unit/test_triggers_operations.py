"""Operators see and fix what the triggers did (issue 10, items 8 and 9): `triggers status`,
`outbox`, `inbox`, `retry`; a private trigger without readers fails clearly and can be
retried once the recipient is set; commands print labelled output and accept -v."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, select, update

from triggers import capture, cli, configure, crypto, schema
from triggers.catalog import Catalog
from triggers.receiver import Receiver
from triggers.relay import Relay
from triggers.tools.fakenode import FakeNode

CHAIN = "c"
ME = "1SenderAddress"
PARTNER = "1PartnerAddress"


@pytest.fixture
def sender(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    engine = create_engine(url)
    md = MetaData()
    table = Table("quote", md, Column("quote_id", Integer, primary_key=True, autoincrement=False),
                  Column("contact_mech_id_blockchain", String(64)), Column("price", String(20)))
    md.create_all(engine)
    pair = crypto.write_keypair(tmp_path / "keys", crypto.generate_keypair())
    configure.init(engine, 4711)
    configure.add_chain(engine, CHAIN, chain_desc="c", rpc_host="127.0.0.1", rpc_port=1,
                        public_key=str(pair.public_path), private_key=str(pair.private_path))
    configure.add_stream(engine, CHAIN, "rfq")
    configure.add_node(engine, CHAIN, ME, is_mine=True)
    configure.add_node(engine, CHAIN, PARTNER)
    configure.add_trigger(engine, Catalog(engine), subsys_dir="erp", table_id="quote",
                          chain_id=CHAIN, stream_id="rfq", distribution_type="party in record")
    capture.enable(engine)
    yield engine, table, url
    engine.dispose()


def test_operations_private_trigger_without_reader_fails_clearly_and_retries(
        sender, capsys, tmp_path: Path) -> None:
    engine, table, url = sender
    with engine.begin() as conn:
        conn.execute(table.insert().values(quote_id=1, price="9.50"))
    node = FakeNode([ME])
    partner = crypto.write_keypair(tmp_path / "partner", crypto.generate_keypair())
    node.add_tx(PARTNER, [("pubkeys", [PARTNER], partner.public_pem.encode())])
    relay = Relay(engine, lambda chain: node)
    assert relay.run_once() == 0
    with engine.connect() as conn:
        row = conn.execute(select(schema.outbox)).one()
    assert row.status == "FAILED"
    assert "contact_mech_id_blockchain" in row.last_error and "is empty" in row.last_error
    assert f"triggers retry {row.sequence}" in row.last_error

    assert cli.main(["triggers", "status", "--db", url]) == 0
    out = capsys.readouterr().out
    assert "trigger 1 quote -> c/rfq: outbox pending 0, sent 0, failed 1" in out
    assert "contact_mech_id_blockchain" in out
    assert cli.main(["triggers", "outbox", "--db", url, "--status", "failed", "-v"]) == 0
    assert f"{row.sequence} FAILED trigger 1 insert quote" in capsys.readouterr().out

    with engine.begin() as conn:  # the operator fixes the row (raw: no new capture) ...
        conn.execute(update(table).values(contact_mech_id_blockchain=PARTNER)
                     .execution_options(**{capture.BLOCKCHAIN_MODE: True}))
    assert cli.main(["triggers", "retry", "--db", url, str(row.sequence)]) == 0  # ... retries
    assert "1 outbox row(s) and 0 inbox row(s) due again" in capsys.readouterr().out
    assert relay.run_once() == 1
    assert node.keys_on("rfq") == ["4711-1"]
    assert cli.main(["triggers", "retry", "--db", url, "--all-failed"]) == 0
    assert "0 outbox row(s) and 0 inbox row(s) due again" in capsys.readouterr().out
    assert cli.main(["triggers", "retry", "--db", url, "999"]) == 1  # no such row
    capsys.readouterr()
    assert cli.main(["triggers", "status", "--db", url, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["triggers"][0]["outbox"] == {"PENDING": 1}  # published, not confirmed yet
    assert status["triggers"][0]["last_error"] is None


def test_operations_inbox_listing_and_retry_by_event_id(tmp_path: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    engine = create_engine(url)
    pair = crypto.write_keypair(tmp_path / "keys", crypto.generate_keypair())
    configure.init(engine, 202020)
    configure.add_chain(engine, CHAIN, chain_desc="c", rpc_host="127.0.0.1", rpc_port=1,
                        public_key=str(pair.public_path), private_key=str(pair.private_path))
    configure.add_stream(engine, CHAIN, "rfq")
    configure.add_node(engine, CHAIN, ME)
    configure.add_node(engine, CHAIN, PARTNER, is_mine=True)
    node = FakeNode([PARTNER])
    node.add_tx(ME, [("rfq", ["4711-1"], b"<insert_late><late_id>1</late_id></insert_late>")])
    node.mine()
    receiver = Receiver(engine, node, CHAIN)
    assert receiver.follow_once() == 0
    assert cli.main(["triggers", "inbox", "--db", url]) == 0
    out = capsys.readouterr().out
    assert "4711-1 FAILED c/rfq insert_late block 1 tx 0" in out
    assert "unknown table 'late'" in out
    assert cli.main(["triggers", "status", "--db", url]) == 0
    assert "chain c: inbox applied 0, failed 1, waiting 0; cursor rfq 1" in capsys.readouterr().out
    Table("late", MetaData(), Column("late_id", Integer, primary_key=True,
                                     autoincrement=False)).create(engine)
    assert cli.main(["triggers", "retry", "--db", url, "4711-1"]) == 0
    assert "0 outbox row(s) and 1 inbox row(s) due again" in capsys.readouterr().out
    assert receiver.follow_once() == 1  # due now, without waiting for the back-off
    engine.dispose()


def test_operations_commands_print_labelled_output(tmp_path: Path, capsys) -> None:
    from triggers.tools import rfq

    url = f"sqlite:///{tmp_path / 'c.db'}"
    engine = create_engine(url)
    rfq.create(engine)
    pair = crypto.write_keypair(tmp_path / "keys", crypto.generate_keypair())
    configure.init(engine, 4711)
    configure.add_chain(engine, CHAIN, chain_desc="c", rpc_host="127.0.0.1", rpc_port=1,
                        public_key=str(pair.public_path), private_key=str(pair.private_path))
    configure.add_stream(engine, CHAIN, "rfq")
    engine.dispose()
    assert cli.main(["triggers", "add", "--db", url, "--subsys", "proc", "--table",
                     "request_header", "--chain", CHAIN, "--stream", "rfq", "-v"]) == 0
    assert "trigger 1 added: proc.request_header -> c/rfq" in capsys.readouterr().out
    assert cli.main(["triggers", "relate", "--db", url, "1", "request_item", "--child"]) == 0
    assert "related table 1 added: request_item (child)" in capsys.readouterr().out
    assert cli.main(["triggers", "relate", "--db", url, "1", "--all"]) == 0
    assert "related table 2 added" in capsys.readouterr().out
    assert cli.main(["triggers", "end", "--db", url, "1", "--date", "2030-01-01"]) == 0
    assert "trigger 1 ends 2030-01-01" in capsys.readouterr().out


def test_operations_relay_logs_batches_and_recovery(sender, caplog) -> None:
    engine, table, _ = sender
    configure.update_trigger(engine, Catalog(engine), 1, distribution_type="all nodes")
    with engine.begin() as conn:
        conn.execute(table.insert().values(quote_id=1, price="1"))
    node = FakeNode([ME])
    node.fail = lambda method, params: True
    relay = Relay(engine, lambda chain: node)
    caplog.set_level("INFO", logger="triggers")
    assert relay.run_once() == 0
    assert "chain c: node unavailable" in caplog.text
    caplog.clear()
    node.fail = None
    with engine.begin() as conn:
        conn.execute(schema.outbox.update().values(next_attempt_at=None))
    assert relay.run_once() == 1
    assert "chain c: node reachable again; delivery resumed" in caplog.text
    assert "chain c: 1 outbox row(s) published" in caplog.text


def test_operations_init_before_keys_generate_says_what_to_run_and_changes_nothing(
        tmp_path: Path, capsys) -> None:
    from sqlalchemy import inspect

    url = f"sqlite:///{tmp_path / 'erp.db'}"
    datadir = tmp_path / "data"
    argv = ["triggers", "init", "--db", url, "--datadir", str(datadir), "--chain", "trade",
            "--participant-id", "4711"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "run `chainmill keys generate trade` first" in err and "nothing was changed" in err
    engine = create_engine(url)
    assert inspect(engine).get_table_names() == []
    assert not (datadir / "trade" / "triggers.conf").exists()
    assert cli.main(["triggers", "init", "--db", url, "--participant-id", "0"]) == 1
    assert "participant id" in capsys.readouterr().err
    assert inspect(engine).get_table_names() == []
    engine.dispose()
