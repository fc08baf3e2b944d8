"""Three companies on three real nodes: A shares spindle observations above a threshold with
B only.

How: node 0 is company A (it made the chain), nodes 1 and 2 are B and C. Each company makes
an RSA key pair and publishes it on `pubkeys`. A collects CNC data into its MES database,
declares the system `acme.plant1.cnc` (a closed stream) and a share
`variable = spin AND result > 1000` for B's address, and runs the forwarder; a crash between
publishing an item and recording its txid is reproduced, and a fresh forwarder must find the
item instead of publishing it again. Then B reads exactly the matching observations, C reads
none although its node holds every item, and an observation forged by C on A's system
stream is refused by C's node (and would be by every node: write permission is a consensus
rule).
"""

from __future__ import annotations

import json

import pytest
from framework import assert_raises_rpc_error, sync_blocks, wait_until
from network_support import log, start_network, wait_confirmed
from sqlalchemy import create_engine, func, select, update

from mes.collector.message import CncMessage
from mes.collector.store import CncStore
from mes.sharing.client import ObservationClient
from mes.sharing.forwarder import Forwarder
from mes.sharing.schema import PREPARED, PUBLISHED, create_tables, outbox
from mes.sharing.systems import add_share, declare_system
from triggers import crypto

pytestmark = pytest.mark.functional

SYSTEM = "acme.plant1.cnc"
SPINS = [600, 1100, 950, 1500, 1001, 1000, 2200, 300, 1250, 0]
RPC_INSUFFICIENT_PERMISSIONS = -704


def company(harness, node, name: str) -> tuple[ObservationClient, str]:
    pair = crypto.write_keypair(harness.base_dir / f"keys-{name}", crypto.generate_keypair())
    client = ObservationClient(node.client(), [pair.private_path])
    address = node.getaddresses()[0]
    txid = client.register(pair.public_pem, address)
    return client, address, txid


def test_share_spindle_observations_with_one_partner(harness) -> None:
    a, b, c = start_network(harness, 3, chain="share")
    log.info("each company publishes its RSA public key")
    client_a, addr_a, tx_a = company(harness, a, "a")
    wait_confirmed([a, b, c], tx_a)
    client_b, addr_b, tx_b = company(harness, b, "b")
    client_c, addr_c, tx_c = company(harness, c, "c")
    wait_confirmed([a, b, c], tx_b, tx_c)

    log.info("A collects CNC data and declares its system and a share for B")
    engine = create_engine(f"sqlite:///{harness.base_dir / 'mes-a.db'}")
    create_tables(engine)
    store = CncStore(engine)
    for n, spin in enumerate(SPINS):
        store.store(CncMessage("CNC001", "program_01", 1_767_254_400 + 10 * n,
                               {"status": "running", "spin": spin, "feed": 250.0 + n, "seq": n}))
    created = declare_system(engine, a.client(), SYSTEM, addr_a)
    wait_confirmed([a, b, c], created)
    add_share(engine, SYSTEM, addr_b, "variable = spin AND result > 1000")

    forwarder = Forwarder(engine, a.client())
    expected_spins = sorted(s for s in SPINS if s > 1000)
    assert forwarder.capture() == len(expected_spins)
    assert forwarder.capture() == 0, "captured once"
    assert forwarder.publish(limit=2) == 2

    log.info("a crash after publishing the third item, before its txid was recorded")
    with engine.begin() as conn:
        third = conn.execute(select(outbox).order_by(outbox.c.id).offset(2).limit(1)).one()
    Forwarder(engine, a.client()).publish(limit=1)
    with engine.begin() as conn:
        conn.execute(update(outbox).where(outbox.c.id == third.id)
                     .values(status=PREPARED, txid=None))
    restarted = Forwarder(engine, a.client())
    assert restarted.publish() == len(expected_spins) - 2
    with engine.connect() as conn:
        rows = conn.execute(select(outbox)).all()
    assert {r.status for r in rows} == {PUBLISHED}
    txids = [r.txid for r in rows]
    assert len(set(txids)) == len(expected_spins)
    wait_confirmed([a, b, c], *txids)
    sync_blocks([a, b, c])
    items = a.liststreamitems(SYSTEM, False, 1000)
    assert len(items) == len(expected_spins), "every observation published once"
    access_keys = {k["key"] for k in a.liststreamkeys("access", "*", False, 1000)}
    assert set(txids) <= access_keys

    log.info("B reads exactly the spindle observations above 1000")
    client_b.subscribe(SYSTEM)
    seen_b: list[dict] = []
    wait_until(lambda: seen_b.extend(client_b.consume(SYSTEM)) or
               len(seen_b) >= len(expected_spins), msg="B consumed the shared observations")
    assert sorted(o["result"] for o in seen_b) == expected_spins
    assert {o["variable"] for o in seen_b} == {"spin"}
    assert {o["Datastream"]["@iot.id"] for o in seen_b} == {f"{SYSTEM}/CNC001/spin"}
    assert client_b.consume(SYSTEM) == []

    log.info("C holds every item but reads none")
    client_c.subscribe(SYSTEM)
    wait_until(lambda: c.getstreaminfo(SYSTEM).get("items") == len(expected_spins),
               msg="C's node has every item")
    assert client_c.consume(SYSTEM) == []
    assert client_c.positions[SYSTEM] == len(expected_spins), "C looked at every item"

    log.info("C forges an observation on A's system stream: refused")
    forged = json.dumps({"system": SYSTEM, "variable": "spin", "result": 9999}).encode().hex()
    assert_raises_rpc_error(RPC_INSUFFICIENT_PERMISSIONS, None, c.publishfrom, addr_c, SYSTEM,
                            "forged", forged)
    assert_raises_rpc_error(RPC_INSUFFICIENT_PERMISSIONS, None, c.publish, SYSTEM, "forged",
                            forged)
    assert_raises_rpc_error(RPC_INSUFFICIENT_PERMISSIONS, None, b.publish, SYSTEM, "forged",
                            forged)
    assert a.getstreaminfo(SYSTEM)["items"] == len(expected_spins)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(outbox)).scalar() == len(
            expected_spins)
