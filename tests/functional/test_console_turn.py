"""Whose turn it is to sign the next block, as the console and getmininginfo show it.

What: on a chain of three miners at mining diversity 0.75 (spacing 3: a miner signs at most
one block in any three), the console's chain summary (/api/summary, checked against the
OpenAPI document) names the miner whose turn it is for the next block; for every sampled tip,
the block at `next_block` turns out to be signed by exactly that miner, the two others are
shown waiting, and they are the signers of the two blocks before it. The overview page shows
the same turn. With mining paused, all three nodes report the same order, and a node's
`nextminers` holds exactly the miners the diversity rule allows.

How: three real nodes (0.3 s blocks, empty blocks mined without end) and one real
`chainmill console` process; the summary is sampled as the chain grows, then the blocks are
read with listblocks.
"""

from __future__ import annotations

import logging

import pytest
from console_support import Browser, ConsoleProcess, OpenApi
from framework import sync_blocks, wait_until
from network_support import start_network

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.console_turn")

SAMPLES = 8


def test_console_shows_the_miner_who_signs_the_next_block(harness, consoles, free_port_factory):
    nodes = start_network(harness, 3, block_time=0.3, params={
        "mining-diversity": 0.75, "mine-empty-rounds": -1})
    seed = nodes[0]
    miners = sorted(n.getaddresses()[0] for n in nodes)
    console = ConsoleProcess(seed, free_port_factory())
    consoles.append(console)
    web = Browser(console.url)
    assert web.login(seed.rpcuser, seed.rpcpassword).status == 303
    api = OpenApi(web.get("/api/openapi.json").json())

    log.info("wait until each of the three miners has signed a block since the grant")
    grant_height = seed.getblock(seed.getrawtransaction(seed.grant_txid, 1)["blockhash"])[
        "height"]

    def signers_since_grant() -> set[str]:
        top = seed.getblockcount()
        return {b["miner"] for b in seed.listblocks(f"{grant_height + 1}-{top}")}
    wait_until(lambda: signers_since_grant() == set(miners), timeout=60,
               msg="all three miners signed a block")

    log.info("sample the summary %d times as the chain grows", SAMPLES)
    samples = []
    for _ in range(SAMPLES):
        summary = api.check("GET", "/api/summary", web.get("/api/summary"))
        assert summary["miners"] == miners
        assert summary["final_depth"] == 3 and summary["mining_diversity"] == 0.75
        samples.append(summary)
        wait_until(lambda s=summary: seed.getblockcount() >= s["next_block"], timeout=30,
                   msg=f"block {summary['next_block']}")

    log.info("each sampled turn is the signer of the block it was for")
    top = max(s["next_block"] for s in samples)
    signer = {b["height"]: b["miner"] for b in seed.listblocks(f"0-{top}")}
    for s in samples:
        h = s["next_block"]
        assert s["next_miner"] == signer[h], (h, s["next_miner"], signer[h])
        assert s["next_miners"] == [signer[h]]
        assert sorted(s["waiting_miners"]) == sorted({signer[h - 1], signer[h - 2]})
        assert s["mining_turnover"] == 0.5
    assert len({s["next_block"] for s in samples}) > 1

    log.info("paused: every node reports the same turn, and the overview page shows it")
    for n in nodes:
        n.pause("mining")
    tip = sync_blocks(nodes, timeout=30)
    height = seed.getblock(tip)["height"]
    infos = [n.getmininginfo() for n in nodes]
    assert all(i["nextblock"] == height + 1 for i in infos)
    assert infos[0]["nextminers"] == infos[1]["nextminers"] == infos[2]["nextminers"]
    recent = {b["miner"] for b in seed.listblocks(f"{height - 1}-{height}")}
    assert infos[0]["nextminers"] == [m for m in miners if m not in recent]
    summary = api.check("GET", "/api/summary", web.get("/api/summary"))
    page = web.get("/")
    assert page.status == 200
    assert f'<dd id="next-block">{height + 1}</dd>' in page.text
    assert f'<span id="next-miner" class="addr">{summary["next_miner"]}</span>' in page.text
    assert summary["next_miner"] == infos[0]["nextminers"][0]
    for m in recent:
        assert m in page.text.split('id="waiting-miners"', 1)[1].split("</dd>", 1)[0]


def test_console_lists_every_eligible_miner_in_turn_order(harness, consoles, free_port_factory):
    """At diversity 0.3 with three miners (spacing 1) every miner may sign: the summary lists
    all three once, the first is the turn, and the next block is signed by one of them."""
    nodes = start_network(harness, 3, block_time=0.3, params={
        "mining-diversity": 0.3, "mine-empty-rounds": -1})
    seed = nodes[0]
    miners = sorted(n.getaddresses()[0] for n in nodes)
    console = ConsoleProcess(seed, free_port_factory())
    consoles.append(console)
    web = Browser(console.url)
    assert web.login(seed.rpcuser, seed.rpcpassword).status == 303
    api = OpenApi(web.get("/api/openapi.json").json())
    summary = api.check("GET", "/api/summary", web.get("/api/summary"))
    assert sorted(summary["next_miners"]) == miners
    assert summary["next_miner"] == summary["next_miners"][0]
    assert summary["waiting_miners"] == []
    wait_until(lambda: seed.getblockcount() >= summary["next_block"], timeout=30,
               msg="the next block")
    assert seed.listblocks(str(summary["next_block"]))[0]["miner"] in miners
