"""The SQL projection: rules applied in chain order, rejected items kept with their reason,
a digest equal across databases and page splits, replays that change nothing."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import pytest
from erp_helpers import ADDRESS_OF, BLOCKTIME, act, key
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, select
from sqlalchemy.pool import StaticPool

from erp import schema
from erp.errors import ErpError
from erp.projection import Item, Projection

AGENTS = [key(n) for n in range(1, 5)]
RECORDS = ["R1", "R2"]
REQUESTS = ["a" * 32, "b" * 32, "c" * 32]


def items_of(actions: list[tuple[dict | bytes, str]]) -> list[Item]:
    """Items in chain order: three per block, each published by the given address."""
    out = []
    for n, (action, publisher) in enumerate(actions):
        data = action if isinstance(action, bytes) else json.dumps(action).encode()
        out.append(Item(position=n, txid=f"{n:064x}", vout=0, height=10 + n // 3,
                        blockindex=n % 3, blocktime=BLOCKTIME, publishers=(publisher,),
                        data=data))
    return out


def projection(url: str) -> Projection:
    p = Projection(create_engine(url), "supplychain", ADDRESS_OF)
    p.create()
    return p


def sqlite_projection(directory: Path, name: str) -> Projection:
    return projection(f"sqlite:///{directory / name}.db")


def memory_projection() -> Projection:
    """A projection in its own in-memory SQLite database (one connection, kept open)."""
    p = Projection(create_engine("sqlite://", poolclass=StaticPool), "supplychain", ADDRESS_OF)
    p.create()
    return p


def apply_in_pages(p: Projection, items: list[Item], size: int) -> None:
    for start in range(0, len(items), size):
        p.apply(items[start:start + size])


# -- strategies -------------------------------------------------------------------------------

agent = st.sampled_from(AGENTS)
record = st.sampled_from(RECORDS)
request = st.sampled_from(REQUESTS)


def _action(kind: str, **fields: st.SearchStrategy) -> st.SearchStrategy:
    return st.fixed_dictionaries({"signer": agent, **fields}).map(
        lambda d: act(kind, d.pop("signer"), **d))


ACTION = st.one_of(
    _action("CREATE_AGENT", name=st.sampled_from(["erp", "mes", ""])),
    _action("CREATE_RECORD_TYPE", name=st.just("pallet"), properties=st.sampled_from([
        [{"name": "weight", "data_type": "INT", "required": True}], []])),
    _action("CREATE_RECORD", record_id=record, record_type=st.just("pallet"),
            properties=st.sampled_from([[{"name": "weight", "data_type": "INT", "value": 1}],
                                        [{"name": "weight", "data_type": "STRING",
                                          "value": "1"}]])),
    _action("UPDATE_PROPERTIES", record_id=record, properties=st.just(
        [{"name": "weight", "data_type": "INT", "value": 2}])),
    _action("FINALIZE_RECORD", record_id=record),
    _action("CREATE_PROPOSAL", record_id=record, receiving_agent=agent,
            role=st.sampled_from(["OWNER", "CUSTODIAN"])),
    _action("ANSWER_PROPOSAL", record_id=record, receiving_agent=agent,
            role=st.sampled_from(["OWNER", "CUSTODIAN"]),
            response=st.sampled_from(["ACCEPT", "REJECT", "CANCEL"])),
    _action("CREATE_PARTNER_REQUEST", partner_request_id=request, receiving_agent=agent),
    _action("ANSWER_PARTNER_REQUEST", partner_request_id=request,
            response=st.sampled_from([0, 1, 2])),
    _action("CREATE_ACTION", abs_action_id=request, receiving_agent=agent, type=st.just("t"),
            description=st.just(""), metadata=st.just({}), files=st.just([])),
    _action("ANSWER_ACTION", abs_action_id=request, response=st.sampled_from([0, 1])),
)
MALFORMED = st.sampled_from([b"", b"{", b"[]", b'{"erp": 1}', b"\xff" * 10])


@st.composite
def published(draw: st.DrawFn) -> tuple[dict | bytes, str]:
    """An action published from its signer's address, or forged from another, or garbage."""
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(MALFORMED), ADDRESS_OF(draw(agent))
    action = draw(ACTION)
    if choice == 1:  # forged: another agent's address claims to act for the signer
        return action, ADDRESS_OF(draw(agent.filter(lambda a: a != action["signer"])))
    return action, ADDRESS_OF(action["signer"])


def bootstrap() -> list[tuple[dict, str]]:
    """Agents and a record type first, so random sequences reach the deeper rules."""
    out = [(act("CREATE_AGENT", a, name=f"agent {n}"), ADDRESS_OF(a))
           for n, a in enumerate(AGENTS)]
    out.append((act("CREATE_RECORD_TYPE", AGENTS[0], name="pallet", properties=[
        {"name": "weight", "data_type": "INT", "required": True}]), ADDRESS_OF(AGENTS[0])))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(published(), max_size=40), st.integers(1, 7))
def test_random_sequences_give_identical_digests_and_replays_change_nothing(
        sequence: list, page: int) -> None:
    items = items_of(bootstrap() + sequence)
    # two separate in-memory databases: no file system work per example
    one, two = memory_projection(), memory_projection()
    apply_in_pages(one, items, len(items))
    apply_in_pages(two, items, page)
    digest = one.digest()
    assert two.digest() == digest
    assert sum(one.counts().values()) == len(items)
    apply_in_pages(one, items, page)  # the same items again
    assert one.digest() == digest
    assert sum(one.counts().values()) == len(items)
    one.engine.dispose()
    two.engine.dispose()


# -- fixed scenarios --------------------------------------------------------------------------

A, B = AGENTS[0], AGENTS[1]
RID = "9df8888dea6df991f86e0e61b2379e46"


def scenario() -> list[Item]:
    return items_of(bootstrap() + [
        (act("CREATE_PARTNER_REQUEST", A, partner_request_id=RID, receiving_agent=B),
         ADDRESS_OF(A)),
        (act("ANSWER_PARTNER_REQUEST", B, partner_request_id=RID, response=1), ADDRESS_OF(A)),
        (b"x" * 70_000, ADDRESS_OF(A)),
        (act("ANSWER_PARTNER_REQUEST", B, partner_request_id=RID, response=1), ADDRESS_OF(B)),
        (act("CREATE_RECORD", A, record_id="SN-1", record_type="pallet", properties=[
            {"name": "weight", "data_type": "INT", "value": 7}]), ADDRESS_OF(A)),
        (act("CREATE_RECORD", A, record_id="sn-1", record_type="pallet", properties=[
            {"name": "weight", "data_type": "INT", "value": 8}]), ADDRESS_OF(A)),
        ({**act("FINALIZE_RECORD", A, record_id="SN-\x00"), "x\x00": 1}, ADDRESS_OF(A)),
        (act("CREATE_ACTION", A, abs_action_id="d" * 32, receiving_agent=B, type="t",
             description="", metadata={"n\x00": "\x00"}, files=[]), ADDRESS_OF(A)),
    ])


def log_rows(p: Projection) -> list[tuple]:
    with p.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(schema.actions.c.seq, schema.actions.c.status, schema.actions.c.reason)
            .order_by(schema.actions.c.seq))]


def test_rejected_items_are_kept_with_their_reason(tmp_path: Path) -> None:
    p = sqlite_projection(tmp_path, "p")
    p.apply(scenario())
    rows = log_rows(p)[5:]
    assert rows[0][1] == "applied"
    assert rows[1][1] == "rejected" and "not the address of agent" in rows[1][2]
    assert rows[2][1] == "rejected" and "exceeds" in rows[2][2]
    assert rows[3][1] == "applied"
    assert [r[1] for r in rows[4:6]] == ["applied", "applied"]  # keys are case-sensitive
    assert rows[6][1] == "rejected" and "x\\x00" in rows[6][2]  # NUL quoted, escaped
    assert rows[7][1] == "applied"  # NUL inside free-form metadata is stored escaped


def test_gap_after_the_cursor_is_refused(tmp_path: Path) -> None:
    p = sqlite_projection(tmp_path, "p")
    items = scenario()
    with pytest.raises(ErpError, match="left out"):
        p.apply(items[2:])
    assert p.cursor()[0] == 0


def test_items_out_of_chain_order_are_refused(tmp_path: Path) -> None:
    p = sqlite_projection(tmp_path, "p")
    items = scenario()
    swapped = [items[0], dataclasses.replace(items[1], height=0)]
    with pytest.raises(ErpError, match="out of chain order"):
        p.apply(swapped)
    assert log_rows(p) == []


def same_state_on(url: str, tmp_path: Path) -> None:
    reference = sqlite_projection(tmp_path, "reference")
    reference.apply(scenario())
    other = projection(url)
    apply_in_pages(other, scenario(), 2)
    assert other.digest() == reference.digest()
    other.engine.dispose()


@pytest.mark.postgres
def test_postgresql_projection_has_the_sqlite_digest(postgres_db, tmp_path: Path) -> None:
    same_state_on(postgres_db.url, tmp_path)


@pytest.mark.mariadb
def test_mariadb_projection_has_the_sqlite_digest(mariadb_db, tmp_path: Path) -> None:
    same_state_on(mariadb_db.url, tmp_path)


@pytest.mark.postgres
@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(published(), max_size=30), st.integers(1, 7))
def test_random_sequences_give_the_same_digest_on_sqlite_and_postgresql(
        postgres_db, sequence: list, page: int) -> None:
    items = items_of(bootstrap() + sequence)
    pg = create_engine(postgres_db.url)
    schema.metadata.drop_all(pg)  # a fresh projection for every example
    other = projection(postgres_db.url)
    with tempfile.TemporaryDirectory() as directory:
        reference = sqlite_projection(Path(directory), "reference")
        apply_in_pages(reference, items, len(items))
        apply_in_pages(other, items, page)
        assert other.digest() == reference.digest()
        reference.engine.dispose()
    other.engine.dispose()
    pg.dispose()
