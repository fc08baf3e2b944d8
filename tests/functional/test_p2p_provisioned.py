"""A pre-provisioned joiner, and a mempool that reaches peers met later.

What:
- An admin makes a key pair (`createkeypairs`), grants its address connect,send,receive
  before the new node exists, and the node joins with `-o initprivkey=WIF`: it prints no
  grant command, uses that address, and connects and syncs at once.
- A transaction made on a node while it has no peers (mining paused, links cut) reaches the
  others as soon as they connect again: a new connection is told the mempool's contents.

How: real daemons on loopback; links cut with disconnectnode and addnode remove.
"""

from __future__ import annotations

import logging

import pytest
from framework import wait_until
from network_support import (
    Daemons,  # noqa: F401 - type of the `daemons` fixture
    cut_link,
    daemons_fixture,  # noqa: F401 - the `daemons` fixture
    heal_link,
    start_network,
    wait_confirmed,
)
from test_p2p_join import daemon_handle

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.p2p_provisioned")


def test_joiner_with_a_pregranted_initprivkey_connects_without_asking(harness, daemons):
    seed = harness.start_node(chain="prov", params={"setup-first-blocks": 5})
    pair = seed.createkeypairs()[0]
    seed.grant(pair["address"], "connect,send,receive")
    seed.wait_for_empty_mempool()

    log.info("the new node joins with the pre-granted key")
    datadir = harness.base_dir / "provisioned"
    port, rpcport = harness.port_factory(), harness.port_factory()
    daemons.track(datadir / "prov")
    out = daemons.run("start", f"prov@127.0.0.1:{seed.port}", "--datadir", str(datadir),
                      "--port", str(port), "--rpcport", str(rpcport),
                      "-o", f"initprivkey={pair['privkey']}", "--daemon").stdout
    assert "grant" not in out, out
    joiner = daemon_handle(harness, datadir, "prov", port, rpcport)
    assert joiner.getaddresses() == [pair["address"]]
    wait_until(lambda: joiner.getinfo()["connections"] == 1, msg="joiner connected")
    wait_until(lambda: joiner.getbestblockhash() == seed.getbestblockhash(), msg="synced")
    txid = joiner.publish("root", "hello", {"text": "from the provisioned node"})
    wait_confirmed([seed, joiner], txid)


def test_pooled_transactions_reach_peers_that_connect_later(harness):
    a, b, c = start_network(harness, 3)
    log.info("isolate c, with mining paused so its transaction stays pooled")
    c.pause("mining")
    cut_link(c, a)
    cut_link(c, b)
    wait_until(lambda: c.getinfo()["connections"] == 0, msg="c isolated")
    txid = c.publish("root", "made-alone", {"text": "while apart"})
    assert txid not in a.getrawmempool()
    log.info("reconnect: c's mempool is announced to its new peers, which mine it")
    heal_link(c, a)
    heal_link(c, b)
    wait_confirmed([a, b], txid)
    c.resume("mining")
    wait_confirmed([a, b, c], txid)
