"""/health's report (node/health.py) and who may read the probes without credentials
(node/rpc/probes.py)."""

from __future__ import annotations

import asyncio
import ipaddress
from types import SimpleNamespace

from ledger.errors import StoreError
from node.health import (
    MINING,
    NOT_A_MINER,
    PAUSED,
    WAITING_FOR_PEERS,
    HealthFacts,
    health_facts,
    health_report,
    miner_state,
)
from node.rpc.probes import open_access


def facts(**changes) -> HealthFacts:
    base = dict(chain="c", height=10, store_error=None, peers=2, best_peer_height=10,
                miner=MINING)
    return HealthFacts(**{**base, **changes})


def test_node_health_ready_when_store_open_and_synced():
    status, body = health_report(facts())
    assert status == 200
    assert body["live"] is True and body["ready"] is True and body["reasons"] == []
    assert body["synced"] is True and body["store"] == "open" and body["miner"] == MINING


def test_node_health_one_block_behind_is_still_synced():
    status, body = health_report(facts(best_peer_height=11))
    assert status == 200 and body["synced"] is True


def test_node_health_behind_peers_is_not_ready_with_the_reason():
    status, body = health_report(facts(best_peer_height=14))
    assert status == 503
    assert body["live"] is True and body["ready"] is False and body["synced"] is False
    assert body["reasons"] == ["behind peers by 4 blocks (height 10, best peer height 14)"]


def test_node_health_store_error_warmup_and_no_chain_are_reasons():
    status, body = health_report(facts(store_error="disk I/O error", warmup="Loading",
                                       height=-1, best_peer_height=-1, peers=0))
    assert status == 503 and body["store"] == "error"
    assert body["reasons"] == ["chain store not usable: disk I/O error", "starting: Loading",
                               "no block yet (waiting for the chain from a peer)"]


def test_node_health_miner_state_is_reported_not_a_readiness_reason():
    for state in (PAUSED, NOT_A_MINER, WAITING_FOR_PEERS):
        status, body = health_report(facts(miner=state))
        assert status == 200 and body["miner"] == state


def _ctx(*, miner, holders, keys, peers=0, permitted=1):
    chain = SimpleNamespace(height=4, state=SimpleNamespace(holders=lambda perm, h: holders),
                            permitted_miners=lambda: permitted)
    wallet = SimpleNamespace(keys=lambda: [SimpleNamespace(pubkey_hash=k) for k in keys])
    if miner is not None:
        miner.peer_count = lambda: peers
    return SimpleNamespace(miner=miner, chain=chain, wallet=wallet)


def test_node_health_miner_state():
    def miner(paused=False, requires_peers=False):
        return SimpleNamespace(paused=paused, requires_peers=requires_peers)

    assert miner_state(_ctx(miner=None, holders=[b"a"], keys=[b"a"])) == NOT_A_MINER
    assert miner_state(_ctx(miner=miner(), holders=[b"b"], keys=[b"a"])) == NOT_A_MINER
    assert miner_state(_ctx(miner=miner(), holders=[b"a"], keys=[b"a"])) == MINING
    assert miner_state(_ctx(miner=miner(paused=True), holders=[b"a"], keys=[b"a"])) == PAUSED
    waiting = _ctx(miner=miner(requires_peers=True), holders=[b"a", b"b"], keys=[b"a"],
                   permitted=2)
    assert miner_state(waiting) == WAITING_FOR_PEERS
    alone = _ctx(miner=miner(requires_peers=True), holders=[b"a"], keys=[b"a"], permitted=1)
    assert miner_state(alone) == MINING  # the only miner does not wait for anyone


def test_node_health_store_that_does_not_answer_is_not_ready():
    def broken_tip():
        raise StoreError("database is locked")

    ctx = _ctx(miner=None, holders=[], keys=[])
    ctx.store = SimpleNamespace(tip=broken_tip)
    ctx.network = None
    ctx.chain_name = "c"
    status, body = health_report(asyncio.run(health_facts(ctx)))
    assert status == 503 and body["reasons"] == ["chain store not usable: database is locked"]


def test_node_probes_open_only_on_loopback_by_default():
    is_open = open_access(())
    for host in ("127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"):
        assert is_open(host), host
    for host in ("192.0.2.7", "10.0.0.1", "::ffff:10.0.0.1", "2001:db8::1", None, "", "x",
                 "127.0.0.1.evil"):
        assert not is_open(host), host


def test_node_probes_metricsallowip_opens_its_networks_only():
    is_open = open_access((ipaddress.ip_network("10.1.0.0/16"),
                           ipaddress.ip_network("2001:db8::/32")))
    assert is_open("10.1.2.3") and is_open("::ffff:10.1.2.3") and is_open("2001:db8::5")
    assert not is_open("10.2.0.1") and not is_open("192.0.2.7")
    assert is_open("127.0.0.1")  # loopback stays open
