"""Stream life cycle over JSON-RPC on a real node.

What: creating open and closed streams; publishing with one key, several keys, and hex, text
and JSON data; publishmulti; items visible unconfirmed and then confirmed; every reader
(liststreamitems with count/start windows, liststreamkeyitems, liststreampublisheritems,
liststreamkeys, liststreampublishers, getstreamitem, liststreamtxitems, liststreamqueryitems,
liststreamblockitems); and -703 for a stream this node is not subscribed to.

How: one node with 0.2 s blocks; mining is paused (`pause mining`) while the unconfirmed
state is checked and resumed to confirm, so no assertion races the miner.
"""

from __future__ import annotations

import logging

import pytest
from framework import assert_raises_rpc_error, ensure_for, wait_until

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.rpc_streams")

RPC_NOT_SUBSCRIBED = -703
RPC_INSUFFICIENT_PERMISSIONS = -704
RPC_TX_NOT_FOUND = -710


def test_streams_created_published_and_read_unconfirmed_then_confirmed(harness):
    node = harness.start_node()
    admin = node.getaddresses()[0]

    log.info("create an open and a closed stream while mining is paused")
    assert node.pause("mining") == "Paused"
    open_txid = node.create("stream", "orders", True, {"plant": "north"})
    closed_txid = node.create("stream", "Audit", {"restrict": "write"})
    by_name = {s["name"]: s for s in node.liststreams()}
    assert by_name["orders"]["createtxid"] == open_txid
    assert by_name["orders"]["streamref"] is None  # not yet in a block
    assert by_name["orders"]["restrict"]["write"] is False
    assert by_name["orders"]["details"] == {"plant": "north"}
    assert by_name["Audit"]["restrict"]["write"] is True
    assert by_name["orders"]["subscribed"] is True  # the creator's node subscribes itself
    assert node.getstreaminfo("AUDIT")["createtxid"] == closed_txid  # names ignore case

    log.info("publish one key, several keys; hex, text and json data")
    t_hex = node.publish("orders", "PO-1", "48656c6c6f")
    t_text = node.publish("orders", ["PO-2", "rush"], {"text": "zwei"})
    t_json = node.publish("orders", "PO-3", {"json": {"qty": 5, "sku": "A-17"}})
    t_closed = node.publish("audit", "PO-1", {"text": "checked"})

    items = node.liststreamitems("orders")
    assert [i["txid"] for i in items] == [t_hex, t_text, t_json]
    assert [i["keys"] for i in items] == [["PO-1"], ["PO-2", "rush"], ["PO-3"]]
    assert [i["data"] for i in items] == [
        "48656c6c6f", {"text": "zwei"}, {"json": {"qty": 5, "sku": "A-17"}}]
    for item in items:
        assert item["publishers"] == [admin]
        assert item["confirmations"] == 0
        assert "blocktime" not in item  # absent, not null, while unconfirmed
        assert item["offchain"] is False and item["available"] is True
    assert node.getstreaminfo("orders")["items"] == 3
    assert node.getstreaminfo("orders")["confirmed"] == 0
    assert node.getmempoolinfo()["size"] == 6

    log.info("resume mining: the items get confirmed")
    node.resume("mining")
    node.wait_for_confirmation(open_txid, closed_txid, t_hex, t_text, t_json, t_closed)
    items = node.liststreamitems("orders", True)
    for item in items:
        assert item["confirmations"] >= 1
        assert isinstance(item["blocktime"], int)
        assert len(item["blockhash"]) == 64
        assert item["valid"] is True and item["vout"] == 0
    info = node.getstreaminfo("orders")
    assert (info["items"], info["confirmed"], info["keys"], info["publishers"]) == (3, 3, 4, 1)
    assert info["streamref"] is not None
    assert node.liststreamitems("audit")[0]["data"] == {"text": "checked"}

    log.info("publishmulti: several items, one transaction")
    multi = node.publishmulti("orders", [
        {"key": "PO-4", "data": {"json": [1, 2]}},
        {"keys": ["PO-5", "rush"], "data": "00ff"},
        {"for": "audit", "key": "PO-4", "data": {"text": "multi"}},
    ])
    node.wait_for_confirmation(multi)

    log.info("pause mining right after a block: nothing is mined until resume")
    node.pause("mining")
    held = node.publish("orders", "PO-6", {"text": "held"})
    ensure_for(lambda: node.getmempoolinfo()["size"] == 1, duration=5 * node.block_time,
               msg="the transaction waiting in the mempool while mining is paused")
    assert node.getstreamitem("orders", held)["confirmations"] == 0
    node.resume("mining")
    node.wait_for_confirmation(held)

    tx_items = node.liststreamtxitems("orders", [multi])
    assert [i["keys"] for i in tx_items] == [["PO-4"], ["PO-5", "rush"]]
    assert all(i["txid"] == multi for i in tx_items)
    assert node.liststreamtxitems("audit", multi)[0]["data"] == {"text": "multi"}


def test_stream_readers_windows_keys_publishers_and_queries(harness):
    node = harness.start_node()
    admin = node.getaddresses()[0]
    node.create("stream", "lots", True)

    log.info("a second publisher, granted send")
    other = node.getnewaddress()
    node.grant(other, "send")

    log.info("publish 12 items: keys cycle over three, every third by the second address")
    txids = []
    for i in range(12):
        key = f"key{i % 3}"
        data = {"json": {"n": i}}
        if i % 3 == 2:
            txids.append(node.publishfrom(other, "lots", [key, "shared"], data))
        else:
            txids.append(node.publish("lots", [key, "shared"], data))
    node.wait_for_confirmation(*txids)
    everything = node.liststreamitems("lots", False, 100)
    assert [i["txid"] for i in everything] == txids

    log.info("count/start windows (spec §1.8)")
    def window(*args):
        return [i["txid"] for i in node.liststreamitems("lots", False, *args)]
    assert window() == txids[-10:]  # default count 10, start -count
    assert window(3, 0) == txids[:3]
    assert window(3, 4) == txids[4:7]
    assert window(3, -2) == txids[-2:]  # window clamped at the end
    assert window(5, -100) == txids[:5]  # negative start clamped at 0
    assert window(5, 20) == []
    assert window(0) == []
    assert_raises_rpc_error(-8, "count", node.liststreamitems, "lots", False, -1)

    log.info("items by key and by publisher")
    key1 = node.liststreamkeyitems("lots", "key1", False, 100)
    assert [i["txid"] for i in key1] == txids[1::3]
    assert [i["txid"] for i in node.liststreamkeyitems("lots", "key1", False, 2, 0)] == \
        txids[1::3][:2]
    by_other = node.liststreampublisheritems("lots", other, False, 100)
    assert [i["txid"] for i in by_other] == txids[2::3]
    assert all(i["publishers"] == [other] for i in by_other)
    assert len(node.liststreampublisheritems("lots", admin, False, 100)) == 8

    log.info("key and publisher summaries")
    keys = {k["key"]: (k["items"], k["confirmed"]) for k in node.liststreamkeys("lots")}
    assert keys == {"key0": (4, 4), "key1": (4, 4), "key2": (4, 4), "shared": (12, 12)}
    pubs = {p["publisher"]: (p["items"], p["confirmed"])
            for p in node.liststreampublishers("lots")}
    assert pubs == {admin: (8, 8), other: (4, 4)}
    verbose = node.liststreamkeys("lots", "key2", True)
    assert len(verbose) == 1
    assert verbose[0]["first"]["txid"] == txids[2]
    assert verbose[0]["last"]["txid"] == txids[11]

    log.info("single items, tx lists, queries and block sets")
    item = node.getstreamitem("lots", txids[5], True)
    assert item["txid"] == txids[5] and item["data"] == {"json": {"n": 5}}
    assert item["keys"] == ["key2", "shared"]
    assert_raises_rpc_error(RPC_TX_NOT_FOUND, None, node.getstreamitem, "lots", "ab" * 32)
    listed = node.liststreamtxitems("lots", [txids[7], txids[0]])
    assert [i["txid"] for i in listed] == [txids[7], txids[0]]
    query = node.liststreamqueryitems("lots", {"keys": ["key2", "shared"], "publisher": other})
    assert [i["txid"] for i in query] == txids[2::3]
    assert node.liststreamqueryitems("lots", {"key": "key0", "publisher": other}) == []
    height = node.getblock(item["blockhash"])["height"]
    in_block = node.liststreamblockitems("lots", height)
    assert txids[5] in [i["txid"] for i in in_block]
    assert all(node.getrawtransaction(i["txid"], 1)["blockhash"] == item["blockhash"]
               for i in in_block)
    assert len(node.liststreamblockitems("lots", f"0-{node.getblockcount()}")) == 12


def test_reading_needs_a_subscription(harness):
    node = harness.start_node()
    second = node.getnewaddress()
    node.grant(second, "send,create")
    wait_until(lambda: node.verifypermission(second, "create"), msg="create granted")

    log.info("a stream created by another wallet address is still subscribed by its node")
    created = node.createfrom(second, "stream", "feed", True)
    txid = node.publish("feed", "k", {"text": "hello"})
    node.wait_for_confirmation(created, txid)
    assert node.getstreaminfo("feed")["subscribed"] is True
    assert node.getstreamitem("feed", txid)["data"] == {"text": "hello"}

    log.info("unsubscribed: every reader answers -703; publishing still works")
    assert node.unsubscribe("feed") is None
    info = node.getstreaminfo("feed")
    assert info["subscribed"] is False and "items" not in info
    for method, args in [
        ("liststreamitems", ()), ("liststreamkeyitems", ("k",)),
        ("liststreampublisheritems", (second,)), ("liststreamkeys", ()),
        ("liststreampublishers", ()), ("getstreamitem", (txid,)),
        ("liststreamtxitems", (txid,)), ("liststreamqueryitems", ({"key": "k"},)),
        ("liststreamblockitems", ("-1",)),
    ]:
        assert_raises_rpc_error(RPC_NOT_SUBSCRIBED, None, node.rpc.call, method, "feed", *args)
    later = node.publish("feed", "k", {"text": "while away"})
    node.wait_for_confirmation(later)

    log.info("subscribing again indexes the items published meanwhile")
    assert node.subscribe("feed") is None
    assert [i["txid"] for i in node.liststreamitems("feed")] == [txid, later]


def test_key_and_publisher_summaries_window_across_confirmed_and_pending(harness):
    """liststreamkeys / liststreampublishers windows and getstreaminfo's counts, with names
    only pending items have after the confirmed ones; each window is checked against the
    names and counts derived from liststreamitems (which lists pending items last)."""
    node = harness.start_node()
    admin = node.getaddresses()[0]
    other = node.getnewaddress()
    node.grant(other, "send")
    node.create("stream", "sums", True)
    confirmed = [node.publish("sums", [f"c{i}", "both"], {"json": i}) for i in range(5)]
    confirmed.append(node.publishfrom(other, "sums", ["c1", "z"], {"json": 5}))
    node.wait_for_confirmation(*confirmed)

    log.info("pause mining: pending items with new names and with confirmed ones")
    node.pause("mining")
    third = node.getnewaddress()
    node.grant(third, "send")
    node.publish("sums", ["p1", "c3"], {"json": 6})
    node.publishfrom(other, "sums", ["both", "p0"], {"json": 7})
    ensure_for(lambda: node.getmempoolinfo()["size"] == 3, duration=3 * node.block_time,
               msg="the pending transactions waiting while mining is paused")
    node.publishmulti("sums", [{"key": "p2", "data": {"json": 8}}])

    items = node.liststreamitems("sums", False, 100)
    assert len(items) == 9 and sum(1 for i in items if "blocktime" in i) == 6

    def expected(field: str) -> list[tuple[str, int, int]]:
        names: dict[str, list[int]] = {}
        first: dict[str, int] = {}
        for index, it in enumerate(items):
            for name in (it["keys"] if field == "key" else it["publishers"]):
                n = names.setdefault(name, [0, 0])
                n[0] += 1
                n[1] += "blocktime" in it
                first.setdefault(name, index)
        # confirmed names by first appearance, names first seen in one item by name
        confirmed_names = sorted((k for k, v in names.items() if v[1]),
                                 key=lambda k: (first[k], k))
        pending_only = [k for k, v in names.items() if not v[1]]
        return [(k, *names[k]) for k in confirmed_names + pending_only]

    def listed(method: str, field: str, *window) -> list[tuple[str, int, int]]:
        return [(e[field], e["items"], e["confirmed"])
                for e in getattr(node, method)("sums", "*", False, *window)]

    info = node.getstreaminfo("sums")
    for method, field, count_field in (("liststreamkeys", "key", "keys"),
                                       ("liststreampublishers", "publisher", "publishers")):
        full = expected(field)
        assert listed(method, field) == full
        assert info[count_field] == len(full)
        for count in (0, 1, 2, 3, 100):
            for start in (0, 1, 2, len(full) - 2, len(full) - 1, -1, -3, len(full) + 1):
                want = full[start:start + count] if start >= 0 else \
                    full[max(0, len(full) + start):][:count]
                assert listed(method, field, count, start) == want, (method, count, start)
    assert listed("liststreamkeys", "key", 3, 0) == [("both", 6, 5), ("c0", 1, 1),
                                                      ("c1", 2, 2)]
    assert listed("liststreamkeys", "key", 2, 5) == [("c4", 1, 1), ("z", 1, 1)]
    assert listed("liststreamkeys", "key")[-3:] == [("p1", 1, 0), ("p0", 1, 0), ("p2", 1, 0)]
    assert listed("liststreamkeys", "key", 1, 4)[0] == ("c3", 2, 1)
    assert dict((p, (n, c)) for p, n, c in listed("liststreampublishers", "publisher")) == \
        {admin: (7, 5), other: (2, 1)}
    node.resume("mining")
