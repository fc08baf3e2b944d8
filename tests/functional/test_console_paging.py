"""The console's item paging: every item once, newest first, to the oldest and no further.

What: a stream of 25 items (two keys, two publishers, and one item still in the mempool) read
page by page through the API (`start` counts from the newest) and through the explorer's
"Older" links, for the whole stream, one key and one publisher: each walk shows every item
exactly once in newest-first order, the last page holds only what is left (not the oldest
page again), it has no "Older" link (the API's `older` is false there and only there), and a `start` past
the end gives an empty page.

How: one real node (0.2 s blocks) and one real `chainmill console` process; pages are read
with plain HTTP and every API reply is checked against the OpenAPI document.
"""

from __future__ import annotations

import logging
import re

import pytest
from console_support import Browser, ConsoleProcess, OpenApi

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.console_paging")

ITEMS = 25


def test_console_pages_walk_every_item_once_newest_first(harness, consoles, free_port_factory):
    node = harness.start_node()
    admin = node.getaddresses()[0]
    other = node.getnewaddress()
    node.grant(other, "send")
    node.create("stream", "lots", True)
    node.wait_for_empty_mempool()
    txids = []
    for i in range(ITEMS):
        who = other if i % 3 == 0 else admin
        txids.append(node.publishfrom(who, "lots", f"K{i % 2}", {"json": {"n": i}}))
    node.wait_for_confirmation(*txids)
    node.pause("mining")
    pending = node.publish("lots", "K1", {"json": {"n": ITEMS}})
    txids.append(pending)
    newest_first = txids[::-1]

    console = ConsoleProcess(node, free_port_factory())
    consoles.append(console)
    web = Browser(console.url)
    assert web.login(node.rpcuser, node.rpcpassword).status == 303
    api = OpenApi(web.get("/api/openapi.json").json())

    selections = {
        "": newest_first,
        "&key=K1": [t for i, t in enumerate(txids) if i % 2 == 1 or t == pending][::-1],
        f"&publisher={other}": [t for i, t in enumerate(txids[:ITEMS]) if i % 3 == 0][::-1],
    }
    for query, want in selections.items():
        log.info("API pages of 7%s", query or " (whole stream)")
        seen, start = [], 0
        while True:
            page = api.check("GET", "/api/streams/x/items",
                             web.get(f"/api/streams/lots/items?count=7&start={start}{query}"))
            seen += [i["txid"] for i in page["items"]]
            assert page["older"] == (len(seen) < len(want)), (start, query)
            if not page["older"]:
                break
            start += 7
        assert seen == want
        assert start == 7 * (-(-len(want) // 7) - 1)  # the last page is the one said last

        log.info("explorer pages%s by their Older links", query or "")
        seen, path = [], "/stream/lots?start=0" + query
        for _ in range(10):
            reply = web.get(path)
            assert reply.status == 200
            seen += re.findall(r'href="/item/lots/([0-9a-f]{64})"', reply.text)
            older = re.search(r'<a href="\?start=(\d+)([^"]*)">Older</a>', reply.text)
            if older is None:
                break
            path = f"/stream/lots?start={older.group(1)}{older.group(2).replace('&amp;', '&')}"
        assert seen == want

    log.info("a start past the end: an empty page, not the oldest one again")
    far = api.check("GET", "/api/streams/x/items",
                    web.get(f"/api/streams/lots/items?count=5&start={len(txids) + 3}"))
    assert far["items"] == [] and far["older"] is False
    last = api.check("GET", "/api/streams/x/items",
                     web.get(f"/api/streams/lots/items?count=5&start={len(txids) - 2}"))
    assert [i["txid"] for i in last["items"]] == txids[1::-1] and last["older"] is False
    full = api.check("GET", "/api/streams/x/items",
                     web.get(f"/api/streams/lots/items?count=5&start={len(txids) - 6}"))
    assert [i["txid"] for i in full["items"]] == txids[5:0:-1] and full["older"] is True
    exact = api.check("GET", "/api/streams/x/items",
                      web.get(f"/api/streams/lots/items?count=5&start={len(txids) - 5}"))
    assert [i["txid"] for i in exact["items"]] == txids[4::-1] and exact["older"] is False
    log.info("a page longer than the stream: all of it, or what is older than start")
    whole = api.check("GET", "/api/streams/x/items",
                      web.get("/api/streams/lots/items?count=50"))
    assert [i["txid"] for i in whole["items"]] == newest_first and whole["older"] is False
    rest = api.check("GET", "/api/streams/x/items",
                     web.get("/api/streams/lots/items?count=50&start=20"))
    assert [i["txid"] for i in rest["items"]] == newest_first[20:] and rest["older"] is False
    node.resume("mining")
