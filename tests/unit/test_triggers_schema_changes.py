"""Long-running relays and receivers notice schema changes (issue 10, item 3).

The relay compares its reflection of each table with the live column list once per round,
so a column added later goes into every later document, even from the very next round; the
receiver reads a table again when a document names a column it does not know, so the
administrator's ALTER TABLE takes effect on the next retry, without a restart.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, select, text

from triggers import capture, configure, crypto, documents, schema
from triggers.catalog import Catalog
from triggers.documents import Document, Row
from triggers.receiver import Receiver
from triggers.relay import Relay
from triggers.tools.fakenode import FakeNode

CHAIN = "c"
SENDER = "1SenderAddress"
ME = "1ReceiverAddress"


class Seconds:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> crypto.KeyPair:
    return crypto.write_keypair(tmp_path_factory.mktemp("keys"), crypto.generate_keypair())


def _instance(path: Path, keypair: crypto.KeyPair, me: str, pid: int):
    engine = create_engine(f"sqlite:///{path}")
    md = MetaData()
    table = Table("reading", md, Column("reading_id", Integer, primary_key=True,
                                        autoincrement=False), Column("value", String(20)))
    md.create_all(engine)
    configure.init(engine, pid)
    configure.add_chain(engine, CHAIN, chain_desc="c", rpc_host="127.0.0.1", rpc_port=1,
                        public_key=str(keypair.public_path), private_key=str(keypair.private_path))
    configure.add_stream(engine, CHAIN, "rfq")
    configure.add_node(engine, CHAIN, SENDER, is_mine=me == SENDER)
    configure.add_node(engine, CHAIN, ME, is_mine=me == ME)
    return engine, table


def test_schema_change_a_running_relay_sends_a_column_added_later(tmp_path: Path, keypair) -> None:
    engine, table = _instance(tmp_path / "a.db", keypair, SENDER, 4711)
    configure.add_trigger(engine, Catalog(engine), subsys_dir="mes", table_id="reading",
                          chain_id=CHAIN, stream_id="rfq")
    capture.enable(engine)
    node, seconds = FakeNode([SENDER]), Seconds()
    relay = Relay(engine, lambda chain: node, catalog=Catalog(engine, clock=seconds))
    with engine.begin() as conn:
        conn.execute(table.insert().values(reading_id=1, value="a"))
    assert relay.run_once() == 1
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE reading ADD COLUMN unit VARCHAR(8)"))
        conn.execute(text("INSERT INTO reading (reading_id, value, unit) VALUES (2, 'b', 'kg')"))
        conn.execute(schema.outbox.insert().values(
            outbox_id="u2", trigger_id=1, subsys_dir="mes", table_id="reading",
            operation="insert", pkey='{"reading_id": "2"}', status="PENDING", attempts=0,
            created_at=dt.datetime(2025, 1, 1)))
    assert relay.run_once() >= 1  # the next round, however soon, sees the new column
    sent = [documents.read(bytes.fromhex(i["data"])) for i in node._ordered("rfq")]
    assert "unit" not in sent[0].root.values
    assert sent[1].root.values["unit"] == "kg"
    assert relay.catalog.reflections == 1


def _doc(values: dict[str, str]) -> bytes:
    return documents.render(Document("insert", Row("reading", values)))


def test_schema_change_a_running_receiver_applies_after_the_column_is_added(
        tmp_path: Path, keypair) -> None:
    engine, table = _instance(tmp_path / "b.db", keypair, ME, 202020)
    node = FakeNode([ME])
    node.add_tx(SENDER, [("rfq", ["4711-1"], _doc({"reading_id": "1", "value": "a",
                                                   "unit": "kg"}))])
    node.mine()

    class Clock:
        now = dt.datetime(2025, 1, 1, 12, 0, 0)

        def __call__(self) -> dt.datetime:
            return self.now

    clock = Clock()
    receiver = Receiver(engine, node, CHAIN, clock=clock)
    assert receiver.follow_once() == 0
    with engine.connect() as conn:
        error = conn.execute(select(schema.inbox.c.error)).scalar()
    assert "unknown column 'unit'" in error
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE reading ADD COLUMN unit VARCHAR(8)"))
    clock.now += dt.timedelta(seconds=5)
    assert receiver.follow_once() == 1  # the same process: no restart
    with engine.connect() as conn:
        assert conn.execute(text("SELECT reading_id, value, unit FROM reading")).all() == [
            (1, "a", "kg")]
        assert conn.execute(select(schema.inbox.c.status)).scalar() == "APPLIED"
