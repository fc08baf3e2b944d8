"""The explorer's server-rendered pages on a live node, read with plain HTTP (no JavaScript).

What: overview, blocks, block, transaction, streams, a stream by key and by publisher, item
pages for JSON, text and binary data (pretty JSON, text, hex dump), permissions with a grant
through the page's form (CSRF field included), peers, and search by txid, block hash, address
and key; hostile text in keys and data comes back escaped; bad parameters give an error page,
not a traceback.

How: one node with 0.2 s blocks and one `chainmill console` process.
"""

from __future__ import annotations

import html
import logging
import re

import pytest
from console_support import Browser, ConsoleProcess

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.console_pages")

HOSTILE = "<script>alert(1)</script>"


def _main(reply) -> str:
    assert reply.status == 200, (reply.status, reply.text[:500])
    return reply.text.split("<main>", 1)[1]


def test_console_pages_show_the_chain_decoded_and_escaped(harness, consoles, free_port_factory):
    node = harness.start_node()
    admin = node.getaddresses()[0]
    console = ConsoleProcess(node, free_port_factory())
    consoles.append(console)
    web = Browser(console.url)
    assert web.login(node.rpcuser, node.rpcpassword).status == 303

    log.info("a stream with JSON, text, binary and hostile items")
    node.create("stream", "parts", True)
    node.wait_for_empty_mempool()
    t_json = node.publish("parts", "P-1", {"json": {"sku": "A-17", "qty": 5}})
    t_text = node.publish("parts", "P-2", {"text": "bolt M8\nzinc"})
    t_hex = node.publish("parts", "P-3", "00ff10fe")
    t_bad = node.publish("parts", HOSTILE, {"text": HOSTILE})
    node.wait_for_confirmation(t_json, t_text, t_hex, t_bad)
    block = node.getblock(node.getrawtransaction(t_json, 1)["blockhash"])

    log.info("overview, blocks, block and transaction")
    overview = _main(web.get("/"))
    assert f'<dd id="height">{node.getblockcount()}</dd>' in overview and admin in overview
    assert f"/block/{block['height']}" in _main(web.get("/blocks"))
    shown = _main(web.get(f"/block/{block['height']}"))
    assert f"Block {block['height']}" in shown and t_json in shown
    assert f"Block {block['height']}" in _main(web.get(f"/block/{block['hash']}"))
    tx = _main(web.get(f"/tx/{t_json}"))
    assert admin in tx and "/item/parts/" + t_json in tx

    log.info("streams, a stream, by key and by publisher")
    assert "/stream/parts" in _main(web.get("/streams"))
    listing = _main(web.get("/stream/parts"))
    assert all(t[:16] in listing for t in (t_json, t_text, t_hex, t_bad))
    by_key = _main(web.get("/stream/parts?key=P-2"))
    assert t_text[:16] in by_key and t_json[:16] not in by_key
    assert t_hex[:16] in _main(web.get(f"/stream/parts?publisher={admin}"))

    log.info("items decoded: pretty JSON, text, hex dump")
    pretty = html.unescape(_main(web.get(f"/item/parts/{t_json}")))
    assert '{\n  "sku": "A-17",\n  "qty": 5\n}' in pretty
    assert "Data (text)" in (page := _main(web.get(f"/item/parts/{t_text}")))
    assert "bolt M8\nzinc" in page
    assert "00000000  00 ff 10 fe" in _main(web.get(f"/item/parts/{t_hex}"))

    log.info("hostile text is escaped everywhere it is shown")
    for path in ("/stream/parts", f"/item/parts/{t_bad}", "/search?q=" + HOSTILE):
        text = web.get(path).text
        assert HOSTILE not in text and "&lt;script&gt;" in text, path

    log.info("search: txid, block hash, address, key")
    reply = web.get(f"/search?q={t_text}")
    assert reply.status == 303 and reply.headers["Location"] == f"/tx/{t_text}"
    reply = web.get(f"/search?q={block['hash']}")
    assert reply.status == 303 and reply.headers["Location"] == f"/block/{block['hash']}"
    found = _main(web.get(f"/search?q={admin}"))
    assert "Address" in found and "admin" in found and f"publisher={admin}" in found
    found = _main(web.get("/search?q=P-3"))
    assert f"/item/parts/{t_hex}" in found

    log.info("permissions: the table, and a grant through the form")
    assert "admin" in _main(web.get("/permissions"))
    other = node.getnewaddress()
    form = {"address": other, "permissions": "send", "action": "grant", "csrf_token": web.csrf}
    done = _main(web.request("POST", "/permissions/change", form=form))
    txid = re.search(r'/tx/([0-9a-f]{64})', done).group(1)
    node.wait_for_confirmation(txid)
    assert [p["type"] for p in node.listpermissions("send", other)] == ["send"]
    assert "Peers (0)" in _main(web.get("/peers"))

    log.info("bad parameters: an error page, never a traceback")
    for path in ("/block/nope", "/block/99999999", "/tx/zz", "/tx/" + "a" * 64,
                 "/stream/nosuch", "/stream/parts?start=-1", "/stream/parts?key=" + "k" * 300,
                 "/item/parts/zz", "/blocks?from=abc"):
        reply = web.get(path)
        assert reply.status in (400, 404), (path, reply.status)
        assert "Cannot show this" in reply.text and "Traceback" not in reply.text, path
    form["permissions"] = "fly"
    reply = web.request("POST", "/permissions/change", form=form)
    assert reply.status == 400 and "unknown permission" in reply.text
