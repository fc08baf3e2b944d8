"""Key text between capture and relay (issue 10, item 0): a key recorded by capture names the
row the relay reads back, whatever padding the application used; nothing rewrites it.

On SQLite a 38-character text column is a global-key column (spec 1.11), stored left-padded
by `GlobalKey` but free to hold shorter digit strings when the application writes plain
text. Both must replicate: the relay must never report such a row as vanished.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, String, Table, create_engine, select, text, update

from triggers import capture, configure, crypto, documents, schema
from triggers.catalog import Catalog
from triggers.keys import GlobalKey
from triggers.relay import Relay
from triggers.tools.fakenode import FakeNode

CHAIN = "c"
ME = "1SenderAddress"
SHORT_KEY = "20202000000000000000000000000002"  # 32 digits: the spec's own example


@pytest.fixture
def vehicles(tmp_path: Path):
    engine = create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    md = MetaData()
    plain = Table("vehicle", md, Column("vehicle_id", String(38), primary_key=True),
                  Column("plate", String(20)))
    typed = Table("trailer", md, Column("trailer_id", GlobalKey, primary_key=True),
                  Column("plate", String(20)))
    md.create_all(engine)
    pair = crypto.write_keypair(tmp_path / "keys", crypto.generate_keypair())
    configure.init(engine, 4711)
    configure.add_chain(engine, CHAIN, chain_desc="c", rpc_host="127.0.0.1", rpc_port=1,
                        public_key=str(pair.public_path), private_key=str(pair.private_path))
    configure.add_stream(engine, CHAIN, "rfq")
    configure.add_node(engine, CHAIN, ME, is_mine=True)
    for name in ("vehicle", "trailer"):
        configure.add_trigger(engine, Catalog(engine), subsys_dir="mes", table_id=name,
                              chain_id=CHAIN, stream_id="rfq")
    capture.enable(engine)
    yield engine, plain, typed
    engine.dispose()


def _sent_documents(node: FakeNode) -> list[documents.Document]:
    return [documents.read(bytes.fromhex(i["data"])) for i in node._ordered("rfq")]


def test_keytext_short_key_in_a_38_character_column_is_sent_not_vanished(vehicles) -> None:
    engine, plain, _ = vehicles
    with engine.begin() as conn:
        conn.execute(plain.insert().values(vehicle_id=SHORT_KEY, plate="KA-1"))
    with engine.begin() as conn:
        conn.execute(update(plain).where(plain.c.vehicle_id == SHORT_KEY).values(plate="KA-2"))
    with engine.connect() as conn:
        out = conn.execute(select(schema.outbox).order_by(schema.outbox.c.sequence)).all()
        stored = conn.execute(text("SELECT vehicle_id FROM vehicle")).scalars().all()
    assert [json.loads(r.pkey) for r in out] == [{"vehicle_id": SHORT_KEY}] * 2
    assert stored == [SHORT_KEY]  # the application's key is left as it was written
    node = FakeNode([ME])
    assert Relay(engine, lambda chain: node).run_once() == 2
    with engine.connect() as conn:
        rows = conn.execute(select(schema.outbox.c.status, schema.outbox.c.last_error)).all()
    assert [r.status for r in rows] == ["PENDING", "PENDING"]  # published, not FAILED
    assert all(r.last_error is None for r in rows)
    sent = _sent_documents(node)
    assert [d.root.values["vehicle_id"] for d in sent] == [SHORT_KEY, SHORT_KEY]
    assert sent[1].root.values["plate"] == "KA-2"


def test_keytext_padded_global_key_still_found_and_sent_as_plain_digits(vehicles) -> None:
    engine, _, typed = vehicles
    with engine.begin() as conn:
        conn.execute(typed.insert().values(trailer_id=int(SHORT_KEY), plate="T-1"))
    with engine.begin() as conn:
        conn.execute(typed.delete().where(typed.c.trailer_id == int(SHORT_KEY)))
        conn.execute(typed.insert().values(trailer_id=int(SHORT_KEY), plate="T-2"))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT trailer_id FROM trailer")).scalar() == SHORT_KEY.rjust(38, "0")
    node = FakeNode([ME])
    assert Relay(engine, lambda chain: node).run_once() == 2
    sent = _sent_documents(node)
    assert [d.operation for d in sent] == ["insert", "delete"]
    assert [d.root.values["trailer_id"] for d in sent] == [SHORT_KEY, SHORT_KEY]


def test_keytext_outbox_rows_recorded_padded_still_find_their_row(vehicles) -> None:
    """An outbox row whose key text differs from the stored form only by the padding (an
    older capture, or an application writing padded text) names the same row."""
    engine, plain, _ = vehicles
    with engine.begin() as conn:
        conn.execute(plain.insert().values(vehicle_id=SHORT_KEY.rjust(38, "0"), plate="P"))
        conn.execute(schema.outbox.update().values(pkey=json.dumps({"vehicle_id": SHORT_KEY})))
    node = FakeNode([ME])
    assert Relay(engine, lambda chain: node).run_once() == 1
    assert [d.root.values["vehicle_id"] for d in _sent_documents(node)] == [SHORT_KEY]
