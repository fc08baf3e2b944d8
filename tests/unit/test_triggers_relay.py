"""The relay against an in-memory node: rows go out in batches (few transactions, few requests,
one claim commit before publishing), in sequence order, exactly once across crashes, lost
mempools and a node that fails in the middle of a round."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, event, select, text

from triggers import capture, configure, crypto, schema
from triggers.catalog import Catalog
from triggers.relay import Relay
from triggers.tools.fakenode import FakeNode

CHAIN = "c"
ME = "1SenderAddress"


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2025, 1, 1, 12, 0, 0)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class Killed(BaseException):
    """The relay process dies at this point (nothing after it runs)."""


@pytest.fixture(scope="module")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> crypto.KeyPair:
    return crypto.write_keypair(tmp_path_factory.mktemp("keys"), crypto.generate_keypair())


@pytest.fixture
def setup(tmp_path: Path, keypair: crypto.KeyPair):
    engine = create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    event.listen(engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA synchronous=OFF"))
    md = MetaData()
    table = Table("reading", md, Column("reading_id", Integer, primary_key=True, autoincrement=False),
                  Column("value", String(2000)))
    md.create_all(engine)
    configure.init(engine, 4711)
    configure.add_chain(engine, CHAIN, chain_desc="c", rpc_host="127.0.0.1", rpc_port=1,
                        public_key=str(keypair.public_path), private_key=str(keypair.private_path))
    configure.add_stream(engine, CHAIN, "rfq")
    configure.add_node(engine, CHAIN, ME, is_mine=True)
    configure.add_trigger(engine, Catalog(engine), subsys_dir="mes", table_id="reading",
                          chain_id=CHAIN, stream_id="rfq")
    capture.enable(engine)
    yield engine, table
    engine.dispose()


def _commit(engine, table, first: int, count: int, value: str = "x") -> None:
    for i in range(first, first + count):
        with engine.begin() as conn:
            conn.execute(table.insert().values(reading_id=i, value=value))


def _outbox(engine) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(select(schema.outbox).order_by(schema.outbox.c.sequence)).all()


def _events(first: int, last: int) -> list[str]:
    return [f"4711-{i}" for i in range(first, last + 1)]


def test_a_batch_goes_out_in_few_transactions_and_requests(setup) -> None:
    engine, table = setup
    node, clock = FakeNode([ME]), Clock()
    _commit(engine, table, 1, 70)
    commits = []
    event.listen(engine, "commit", lambda conn: commits.append(1))
    relay = Relay(engine, lambda chain: node, clock=clock)
    assert relay.run_once() == 70
    # 32 items per transaction (the chain's max-std-op-returns-count): 32 + 32 + 6.
    assert node.calls.count("publishmultifrom") == 3 and "publishfrom" not in node.calls
    assert node.http_requests == 5  # subscribe, chain parameters and the three publishes
    assert len(commits) == 2  # the claim before publishing, the txids after it
    assert node.keys_on("rfq") == _events(1, 70)
    rows = _outbox(engine)
    assert all(r.attempts == 1 and r.txid and r.sent_at and r.status == "PENDING" for r in rows)
    assert len({r.txid for r in rows}) == 3
    assert [r.message_id for r in rows] == _events(1, 70)

    node.mine()
    clock.advance(1)
    node.calls.clear()
    assert relay.run_once() == 70
    # One batched request, one call per transaction (getstreamitem refuses a transaction
    # with several items in the stream, as MultiChain 2.3 does).
    assert node.calls == ["liststreamtxitems"] * 3
    assert {r.status for r in _outbox(engine)} == {"SENT"}


def test_waiting_rows_do_not_hold_back_new_ones(setup) -> None:
    engine, table = setup
    node, clock = FakeNode([ME]), Clock()
    relay = Relay(engine, lambda chain: node, clock=clock, batch_size=10)
    _commit(engine, table, 1, 10)
    assert relay.run_once() == 10
    _commit(engine, table, 11, 5)  # the first ten wait for their confirmation
    assert relay.run_once() == 5
    assert node.keys_on("rfq") == _events(1, 15)


@pytest.mark.parametrize("after", [False, True], ids=["before-publish", "after-node-accepted"])
def test_a_crash_around_publishing_delivers_each_event_once(setup, after: bool) -> None:
    engine, table = setup
    node, clock = FakeNode([ME]), Clock()
    _commit(engine, table, 1, 40)

    class Killing:
        def call(self, method: str, *params: Any) -> Any:
            if method == "publishmultifrom":
                if after:
                    node.call(method, *params)
                raise Killed(method)
            return node.call(method, *params)

    with pytest.raises(Killed):
        Relay(engine, lambda chain: Killing(), clock=clock).run_once()
    assert [r.attempts for r in _outbox(engine)] == [1] * 40  # claimed before publishing
    assert Relay(engine, lambda chain: node, clock=clock).run_once() == 40
    assert node.keys_on("rfq") == _events(1, 40)
    rows = _outbox(engine)
    assert all(r.txid for r in rows) and [r.attempts for r in rows] == [2] * 40
    if after:  # the first 32 were found by event id; only the other 8 went out again
        assert node.calls.count("publishmultifrom") == 2


def test_a_lost_transaction_goes_out_again_under_the_same_event_id(setup) -> None:
    engine, table = setup
    node, clock = FakeNode([ME]), Clock()
    relay = Relay(engine, lambda chain: node, clock=clock)
    _commit(engine, table, 1, 5)
    relay.run_once()
    first = {r.txid for r in _outbox(engine)}
    node.lose_mempool()
    clock.advance(1)
    assert relay.run_once() == 5
    rows = _outbox(engine)
    assert node.keys_on("rfq") == _events(1, 5)
    assert {r.txid for r in rows} != first and all(r.txid for r in rows)
    node.mine()
    clock.advance(1)
    relay.run_once()
    assert {r.status for r in _outbox(engine)} == {"SENT"}


def test_a_node_failing_mid_round_keeps_the_order(setup) -> None:
    engine, table = setup
    node, clock = FakeNode([ME]), Clock()
    _commit(engine, table, 1, 50)
    publishes = []

    def second_publish_fails(method: str, params: tuple) -> bool:
        if method != "publishmultifrom":
            return False
        publishes.append(1)
        return len(publishes) == 2

    node.fail = second_publish_fails
    relay = Relay(engine, lambda chain: node, clock=clock)
    assert relay.run_once() == 32
    rows = _outbox(engine)
    assert all(r.txid for r in rows[:32])
    assert all(r.txid is None and "RpcConnectionError" in r.last_error for r in rows[32:])
    assert all(r.next_attempt_at == clock.now + dt.timedelta(seconds=1) for r in rows[32:])
    assert relay.run_once() == 0  # backing off
    clock.advance(1)
    assert relay.run_once() == 18
    assert node.keys_on("rfq") == _events(1, 50)


def test_a_node_that_is_down_backs_off_every_due_row(setup) -> None:
    engine, table = setup
    node, clock = FakeNode([ME]), Clock()
    _commit(engine, table, 1, 3)
    node.fail = lambda method, params: True
    relay = Relay(engine, lambda chain: node, clock=clock)
    assert relay.run_once() == 0
    rows = _outbox(engine)
    assert [r.status for r in rows] == ["PENDING"] * 3 and all(r.last_error for r in rows)
    node.fail = None
    clock.advance(1)
    assert relay.run_once() == 3
    assert node.keys_on("rfq") == _events(1, 3)


def test_the_byte_budget_splits_transactions(setup) -> None:
    engine, table = setup
    node, clock = FakeNode([ME]), Clock()
    _commit(engine, table, 1, 6, value="v" * 1500)
    relay = Relay(engine, lambda chain: node, clock=clock, tx_bytes=4000)
    assert relay.run_once() == 6
    assert node.calls.count("publishmultifrom") == 3
    assert node.keys_on("rfq") == _events(1, 6)


def test_a_row_that_cannot_be_built_fails_alone(setup) -> None:
    engine, table = setup
    node, clock = FakeNode([ME]), Clock()
    _commit(engine, table, 1, 3)
    with engine.begin() as conn:  # raw SQL bypasses capture: row 2 vanishes unseen
        conn.execute(text("DELETE FROM reading WHERE reading_id = 2"))
    assert Relay(engine, lambda chain: node, clock=clock).run_once() == 2
    rows = _outbox(engine)
    assert [r.status for r in rows] == ["PENDING", "FAILED", "PENDING"]
    assert "vanished" in rows[1].last_error
    assert node.keys_on("rfq") == ["4711-1", "4711-3"]
    assert json.loads(rows[1].pkey) == {"reading_id": "2"}
