"""The receiver against an in-memory node: a page of items is applied in one transaction; when
that fails, one document at a time, so a bad document ends FAILED in the inbox and the rest
apply; the cursor moves with the page; a busy database is not a bad document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, event, select
from sqlalchemy.exc import OperationalError

from triggers import configure, crypto, documents, schema
from triggers.documents import Document, Row
from triggers.hooks import HookRegistry
from triggers.receiver import Receiver
from triggers.tools.fakenode import FakeNode

CHAIN = "c"
SENDER = "1SenderAddress"
ME = "1ReceiverAddress"


@pytest.fixture(scope="module")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> crypto.KeyPair:
    return crypto.write_keypair(tmp_path_factory.mktemp("keys"), crypto.generate_keypair())


@pytest.fixture
def setup(tmp_path: Path, keypair: crypto.KeyPair):
    engine = create_engine(f"sqlite:///{tmp_path / 'b.db'}")
    event.listen(engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA synchronous=OFF"))
    md = MetaData()
    table = Table("reading", md, Column("reading_id", Integer, primary_key=True, autoincrement=False),
                  Column("value", String(20)), Column("n", Integer, nullable=False))
    md.create_all(engine)
    configure.init(engine, 202020)
    configure.add_chain(engine, CHAIN, chain_desc="c", rpc_host="127.0.0.1", rpc_port=1,
                        public_key=str(keypair.public_path), private_key=str(keypair.private_path))
    configure.add_stream(engine, CHAIN, "rfq")
    configure.add_node(engine, CHAIN, SENDER)
    configure.add_node(engine, CHAIN, ME, is_mine=True)
    yield engine, table
    engine.dispose()


def _doc(reading_id: int, value: str = "ok", n: str | None = "1", **extra: str) -> bytes:
    values: dict[str, str | None] = {"reading_id": str(reading_id), "value": value, "n": n,
                                     **extra}
    return documents.render(Document("insert", Row("reading", values)))


def _publish(node: FakeNode, docs: list[tuple[str, bytes]], per_tx: int = 32) -> None:
    for first in range(0, len(docs), per_tx):
        node.add_tx(SENDER, [("rfq", [key], data) for key, data in docs[first:first + per_tx]])


def _readings(engine, table) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        query = select(table.c.reading_id, table.c.value).order_by(table.c.reading_id)
        return [tuple(r) for r in conn.execute(query)]


def _cursor(engine) -> int | None:
    with engine.connect() as conn:
        return conn.execute(select(schema.receiver_cursor.c.position)
                            .where(schema.receiver_cursor.c.stream_id == "rfq")).scalar()


def _inbox(engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(select(schema.inbox.c.message_id, schema.inbox.c.status)).all()
    return dict(rows)


def test_a_page_applies_in_one_transaction(setup) -> None:
    engine, table = setup
    node = FakeNode([ME])
    _publish(node, [(f"4711-{i}", _doc(i)) for i in range(1, 121)])
    node.mine()
    commits = []
    event.listen(engine, "commit", lambda conn: commits.append(1))
    receiver = Receiver(engine, node, CHAIN)
    assert receiver.follow_once() == 120
    assert (receiver.batches, receiver.fallbacks) == (1, 0)
    assert len(commits) == 1
    assert _readings(engine, table) == [(i, "ok") for i in range(1, 121)]
    assert set(_inbox(engine).values()) == {"APPLIED"} and _cursor(engine) == 120
    assert receiver.follow_once() == 0


def test_pages_follow_the_batch_size(setup) -> None:
    engine, table = setup
    node = FakeNode([ME])
    _publish(node, [(f"4711-{i}", _doc(i)) for i in range(1, 51)])
    node.mine()
    receiver = Receiver(engine, node, CHAIN, batch_size=20)
    assert receiver.follow_once() == 50
    assert receiver.batches == 3 and _cursor(engine) == 50
    assert node.calls.count("liststreamitems") == 3 + 1  # rfq pages, then access


def test_a_bad_document_fails_alone_and_the_rest_apply(setup) -> None:
    engine, table = setup
    node = FakeNode([ME])
    docs = [(f"4711-{i}", _doc(i)) for i in range(1, 11)]
    docs[3] = ("4711-4", _doc(4, colour="red"))  # unknown column
    docs[6] = ("4711-7", _doc(7, n=None))  # NOT NULL refuses it
    docs[8] = ("4711-9", b"<not xml")  # cannot even be read: FAILED before applying
    _publish(node, docs)
    node.mine()
    receiver = Receiver(engine, node, CHAIN)
    assert receiver.follow_once() == 7
    assert receiver.fallbacks == 1
    assert [r[0] for r in _readings(engine, table)] == [1, 2, 3, 5, 6, 8, 10]
    inbox = _inbox(engine)
    assert [k for k, v in inbox.items() if v == "FAILED"] == ["4711-4", "4711-7"]
    assert inbox["4711-9"] == "REJECTED"  # not a document: kept once, never retried (issue 10)
    with engine.connect() as conn:
        errors = dict(conn.execute(select(schema.inbox.c.message_id, schema.inbox.c.error)).all())
    assert "colour" in errors["4711-4"] and "refused" in errors["4711-7"]
    assert _cursor(engine) == 10


def test_the_same_event_twice_in_a_page_applies_once(setup) -> None:
    engine, table = setup
    node = FakeNode([ME])
    _publish(node, [("4711-1", _doc(1)), ("4711-1", _doc(1, "again")), ("4711-2", _doc(2))])
    node.mine()
    receiver = Receiver(engine, node, CHAIN)
    assert receiver.follow_once() == 2
    assert _readings(engine, table) == [(1, "ok"), (2, "ok")]
    with engine.connect() as conn:
        assert conn.execute(select(schema.inbox.c.status)).scalars().all() == ["APPLIED"] * 3


def test_items_wait_until_final(setup) -> None:
    engine, table = setup
    node = FakeNode([ME], finaldepth=2)
    _publish(node, [("4711-1", _doc(1))])
    receiver = Receiver(engine, node, CHAIN)
    assert receiver.follow_once() == 0  # in the mempool
    node.mine()
    assert receiver.follow_once() == 0  # one confirmation of two
    _publish(node, [("4711-2", _doc(2))])
    node.mine()
    assert receiver.follow_once() == 1 and _cursor(engine) == 1
    node.mine()
    assert receiver.follow_once() == 1 and _cursor(engine) == 2


def test_own_items_are_skipped(setup) -> None:
    engine, table = setup
    node = FakeNode([ME])
    node.add_tx(ME, [("rfq", ["202020-1"], _doc(1))])
    node.mine()
    receiver = Receiver(engine, node, CHAIN)
    assert receiver.follow_once() == 0
    assert _readings(engine, table) == [] and _cursor(engine) == 1 and _inbox(engine) == {}


def test_a_busy_database_stops_the_pass_without_moving_the_cursor(setup, monkeypatch) -> None:
    engine, table = setup
    node = FakeNode([ME])
    _publish(node, [(f"4711-{i}", _doc(i)) for i in range(1, 6)])
    node.mine()
    receiver = Receiver(engine, node, CHAIN)
    real_apply = receiver.applier.apply
    calls = []

    def busy_once(conn: Any, document: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        real_apply(conn, document)

    monkeypatch.setattr(receiver.applier, "apply", busy_once)
    with pytest.raises(OperationalError):
        receiver.follow_once()
    assert _cursor(engine) is None and _inbox(engine) == {} and receiver.fallbacks == 0
    assert receiver.follow_once() == 5
    assert _cursor(engine) == 5


def test_a_failed_item_of_a_multi_item_transaction_is_retried_by_its_index(setup) -> None:
    engine, table = setup
    node = FakeNode([ME])
    docs = [(f"4711-{i}", _doc(i)) for i in range(1, 4)]
    docs[2] = ("4711-3", documents.render(Document("insert", Row("late", {"late_id": "1"}))))
    _publish(node, docs)
    node.mine()
    clock = _Clock()
    receiver = Receiver(engine, node, CHAIN, clock=clock)
    assert receiver.follow_once() == 2
    assert _inbox(engine)["4711-3"] == "FAILED"
    late = Table("late", MetaData(), Column("late_id", Integer, primary_key=True,
                                            autoincrement=False))
    late.create(engine)
    clock.advance(5)
    assert receiver.follow_once() == 1
    assert _inbox(engine)["4711-3"] == "APPLIED"
    with engine.connect() as conn:
        assert conn.execute(select(late.c.late_id)).scalars().all() == [1]


class _Clock:
    def __init__(self) -> None:
        import datetime as dt

        self._dt = dt
        self.now = dt.datetime(2025, 1, 1, 12, 0, 0)

    def __call__(self):
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += self._dt.timedelta(seconds=seconds)


def _update(reading_id: int, value: str) -> bytes:
    values = {"reading_id": str(reading_id), "value": value, "n": "1"}
    return documents.render(Document("update", Row("reading", values)))


def test_an_older_item_retried_late_never_overwrites_a_newer_one(setup) -> None:
    """The race behind "an update committed on A is not applied on B": the insert of a row
    fails once (here a receive hook that is briefly unavailable), the update of the same row
    in a later block applies, and the insert's retry then wrote its older state over the
    update. Chain order must win: the late insert ends SUPERSEDED, the update stays."""
    engine, table = setup
    node = FakeNode([ME])
    hooks = HookRegistry()
    service = {"up": False}

    def flaky(row: dict[str, Any]) -> dict[str, Any]:
        if not service["up"]:
            raise RuntimeError("exchange-rate service unavailable")
        return row

    hooks.register("reading", after_receive=flaky)
    clock = _Clock()
    receiver = Receiver(engine, node, CHAIN, hooks=hooks, clock=clock)
    _publish(node, [("4711-1", _doc(1, "old"))])
    node.mine()
    assert receiver.follow_once() == 0
    assert _inbox(engine) == {"4711-1": "FAILED"}
    service["up"] = True
    _publish(node, [("4711-2", _update(1, "new"))])
    node.mine()
    assert receiver.follow_once() == 1
    assert _readings(engine, table) == [(1, "new")]
    clock.advance(5)  # the insert's back-off has passed: it is retried
    receiver.follow_once()
    assert _readings(engine, table) == [(1, "new")]
    assert _inbox(engine) == {"4711-1": "SUPERSEDED", "4711-2": "APPLIED"}
    with engine.connect() as conn:
        row = conn.execute(select(schema.inbox).where(schema.inbox.c.message_id == "4711-1")).one()
        assert "4711-2" in row.error
        heights = dict(conn.execute(select(schema.inbox.c.message_id,
                                           schema.inbox.c.block_height)).all())
    assert heights == {"4711-1": 1, "4711-2": 2}
    receiver.follow_once()
    assert _inbox(engine)["4711-1"] == "SUPERSEDED"  # terminal: not retried again


def test_the_inbox_records_block_height_and_position(setup) -> None:
    engine, table = setup
    node = FakeNode([ME])
    node.mine()
    _publish(node, [("4711-1", _doc(1)), ("4711-2", _doc(2))], per_tx=1)
    node.mine()
    receiver = Receiver(engine, node, CHAIN)
    assert receiver.follow_once() == 2
    with engine.connect() as conn:
        rows = conn.execute(select(schema.inbox.c.message_id, schema.inbox.c.block_height,
                                   schema.inbox.c.block_index, schema.inbox.c.item_index)
                            .order_by(schema.inbox.c.message_id)).all()
    assert [tuple(r) for r in rows] == [("4711-1", 2, 0, 0), ("4711-2", 2, 1, 0)]


def test_plain_items_are_not_documents_and_are_never_retried(setup) -> None:
    """Issue 10, item 4: `root` (imported with the other streams) is not read as documents
    unless a trigger publishes there; a plain item on another stream is kept once as
    REJECTED, never FAILED and retried."""
    engine, table = setup
    configure.add_stream(engine, CHAIN, "root")
    configure.add_stream(engine, CHAIN, "notes")
    node = FakeNode([ME], streams=("rfq", "root", "notes"))
    node.add_tx(SENDER, [("root", [], b"hello"), ("notes", ["n1"], b'{"json": 1}')])
    _publish(node, [("4711-1", _doc(1))])
    node.mine()
    clock = _Clock()
    receiver = Receiver(engine, node, CHAIN, clock=clock)
    assert receiver.follow_once() == 1
    with engine.connect() as conn:
        rows = conn.execute(select(schema.inbox.c.stream_id, schema.inbox.c.status,
                                   schema.inbox.c.error)).all()
    # root was not read at all: no inbox row for its plain item
    assert sorted((r.stream_id, r.status) for r in rows) == [("notes", "REJECTED"),
                                                             ("rfq", "APPLIED")]
    assert "not well-formed" in next(r.error for r in rows if r.stream_id == "notes")
    calls_before = list(node.calls)
    for _ in range(3):
        clock.advance(3600)
        assert receiver.follow_once() == 0
    assert "liststreamtxitems" not in node.calls[len(calls_before):]  # nothing re-run
    with engine.connect() as conn:
        assert conn.execute(select(schema.inbox.c.attempts)
                            .where(schema.inbox.c.stream_id == "notes")).scalar() == 0
