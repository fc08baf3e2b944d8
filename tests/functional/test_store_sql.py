"""The chain store on PostgreSQL and MariaDB (`--db-url`), with real database servers.

What: a node whose store is a PostgreSQL or MariaDB database creates its genesis there,
confirms streams, items of every data format and permissions, answers the readers exactly as
expected, keeps everything across a restart and a `--reindex`, and leaves its data readable
with plain SQL (no SQLite file is used).

How: each test creates its own uniquely named database and drops it afterwards (fixtures in
tests/conftest.py). In CI (CI=true) an unreachable server fails the test; elsewhere it is
skipped with the reason.
"""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa
from framework import chain_snapshot

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.store_sql")


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres),
                        pytest.param("mariadb", marks=pytest.mark.mariadb)])
def sql_db(request):
    return request.getfixturevalue(f"{request.param}_db")


def test_node_on_a_sql_server_store(sql_db, harness):
    node = harness.add_node()
    log.info("first start on %s", sql_db.url.split("://")[0])
    node.start(["--db-url", sql_db.url])
    user = node.getnewaddress()
    node.create("stream", "orders", True)
    node.create("stream", "Lab", {"restrict": "write"}, {"site": "Köln"})
    node.grant(user, "send")
    node.grant(user, "lab.write")
    txids = [
        node.publish("orders", "PO-1", "00ff10"),
        node.publish("orders", ["PO-2", "ünïcode-key"], {"text": "grüße 💡"}),
        node.publish("orders", "PO-3", {"json": {"qty": 5, "nested": [1, {"a": None}]}}),
        node.publishfrom(user, "lab", "sample", {"text": "x" * 20_000}),
        node.publishmulti("orders", [{"key": f"m{i}", "data": {"json": i}} for i in range(5)]),
    ]
    node.wait_for_confirmation(*txids)
    items = node.liststreamitems("orders", False, 100)
    assert [i["data"] for i in items[:3]] == [
        "00ff10", {"text": "grüße 💡"}, {"json": {"qty": 5, "nested": [1, {"a": None}]}}]
    assert items[1]["keys"] == ["PO-2", "ünïcode-key"]
    assert len(items) == 8
    large = node.liststreamitems("lab")[0]["data"]  # over maxshowndata: a reference
    assert large == {"txid": txids[3], "vout": 0, "format": "text", "size": 20_000}
    assert node.gettxoutdata(txids[3], 0) == {"text": "x" * 20_000}
    assert node.getstreaminfo("lab")["details"] == {"site": "Köln"}
    before = chain_snapshot(node, ["orders", "lab"])

    log.info("the data is in the SQL database, readable with plain SQL")
    assert not (node.chain_dir / "chain.db").exists()
    engine = sa.create_engine(sql_db.url)
    try:
        with engine.connect() as c:
            stream = node.getstreaminfo("orders")["createtxid"]
            n = c.scalar(sa.text("SELECT COUNT(*) FROM items JOIN names ON names.id = "
                                 "items.stream WHERE names.name = :s"), {"s": stream})
            assert n == 8
            assert c.scalar(sa.text("SELECT MAX(height) FROM blocks")) == node.getblockcount()
    finally:
        engine.dispose()

    log.info("restart, then reindex: the same state from the same database")
    node.restart()
    assert chain_snapshot(node, ["orders", "lab"]) == before
    node.restart(["--db-url", sql_db.url, "--reindex"])
    assert chain_snapshot(node, ["orders", "lab"]) == before

    log.info("and the chain continues")
    nxt = node.publish("orders", "after", {"json": {"ok": True}})
    node.wait_for_confirmation(nxt)
    assert node.getblockcount() == before["height"] + 1
    node.stop()
