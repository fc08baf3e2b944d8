"""A reorganisation below finality leaves the ERP projections untouched.

How: four real nodes, all miners, mining diversity 0.75, so an item is final at 3
confirmations and a half of two miners stalls after at most two blocks. Each node has its
company and projection (SQLite). The network is split 2 + 2; on each half one company sends
a partner request, which its half may confirm (one or two confirmations) but never make
final. The followers run during the split and must not apply either request; after the heal
one half's blocks lose, their items are mined again, and every projection applies each
request exactly once and all four end with the same digest.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from erp_support import company, log, projected, wait_same_state
from framework import wait_until
from network_support import (
    confirmations,
    log_lines,
    partition,
    start_network,
    wait_for_mesh,
)
from sqlalchemy import create_engine, func, select
from test_p2p_partition import grow, heal, side_done

from erp import schema

pytestmark = pytest.mark.functional


def times_logged(erp, txid: str) -> int:  # noqa: ANN001
    with erp.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(schema.actions)
                                .where(schema.actions.c.txid == txid)).scalar())


def reorgs(nodes) -> int:  # noqa: ANN001
    return sum(len(log_lines(n, "reorganisation: replacing")) for n in nodes)


def test_reorganisation_below_finality_leaves_the_projection_untouched(harness,
                                                                        tmp_path: Path) -> None:
    nodes = start_network(harness, 4)
    assert nodes[0].getinfo()["finaldepth"] == 3
    erps = []
    for n in nodes:
        erp, txid = company(n, create_engine(f"sqlite:///{tmp_path / f'c{n.index}.db'}"),
                            f"company {n.index}")
        erps.append((erp, txid))
    nodes[0].create("stream", "parts", True)
    grow(nodes, 12, "warm-up")  # every miner takes turns; the agents become final
    for erp, _ in erps:
        for _, agent_txid in erps:
            assert projected(erp, agent_txid)["status"] == "applied"
    companies = [erp for erp, _ in erps]

    def stream_items() -> int:
        return nodes[0].rpc.call("getstreaminfo", "supplychain")["items"]
    before = wait_same_state(companies, stream_items)

    log.info("split 2 + 2; a partner request on each half")
    left, right = nodes[:2], nodes[2:]
    partition(left, right)
    split_height = nodes[0].getblockcount()
    reorgs_before = reorgs(nodes)
    on_left = companies[0].create_partner_request(companies[1].public_key)["txid"]
    on_right = companies[2].create_partner_request(companies[3].public_key)["txid"]
    for side, txid in ((left, on_left), (right, on_right)):
        wait_until(lambda side=side, txid=txid: side_done(side, {txid}), timeout=30,
                   msg=f"side {[n.index for n in side]} to confirm its request or stall")
    confirmed = [confirmations(n, t) for n, t in ((left[0], on_left), (right[0], on_right))]
    log.info("halves at heights %s (split at %d); confirmations %s",
             [left[0].getblockcount(), right[0].getblockcount()], split_height, confirmed)
    assert 1 <= max(confirmed) < 3  # confirmed on a half, never final there
    for erp in companies:
        erp.follow()
        assert erp.digest()["digest"] == before
        assert times_logged(erp, on_left) == times_logged(erp, on_right) == 0

    log.info("heal: one half's blocks lose; the requests are mined again and become final")
    heal(left, right)
    wait_for_mesh(nodes)
    grow(nodes, 4, "after")  # blocks are mined only for transactions: bury the requests
    for erp in companies:
        assert projected(erp, on_left)["status"] == "applied"
        assert projected(erp, on_right)["status"] == "applied"
    after = wait_same_state(companies, stream_items)
    if min(confirmed) >= 1:
        assert reorgs(nodes) > reorgs_before, "both halves confirmed; one must reorganise"
    for erp in companies:
        assert times_logged(erp, on_left) == times_logged(erp, on_right) == 1
    assert after != before
    assert {r["status"] for r in companies[1].list_partner_requests()} == {"OPEN"}
