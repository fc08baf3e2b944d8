"""The triggers views of the console, on three real nodes with real trigger databases.

What: the triggers plug-in is loaded through its entry point; its API routes answer what the
OpenAPI document says (configuration with the related-table tree, outbox, inbox with the
error of a failed document, hostile parameters refused); a private trigger document is shown
as an XML tree of its operation table with its parent table on the nodes that hold an access
entry for it (the buyer's and the recipient's), and as "private — not for this node" on the
third node, with none of its values in the page; retrying the failed document through the
console (CSRF-protected) applies it once the recipient's tables exist.

How: console_story_support's private RFQ story; one `chainmill console` process per node.
"""

from __future__ import annotations

import logging

import pytest
from console_story_support import create_supplier_tables, private_rfq_story, supplier_headers
from console_support import Browser, ConsoleProcess, OpenApi
from markupsafe import escape

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.console_triggers")

PRIVATE = "private \u2014 not for this node"


def _logged_in(console: ConsoleProcess) -> Browser:
    web = Browser(console.url)
    assert web.login(console.node.rpcuser, console.node.rpcpassword).status == 303
    return web


def test_console_triggers_views_tree_private_item_and_retry(harness, consoles, tmp_path,
                                                            free_port_factory):
    with private_rfq_story(harness, tmp_path) as story:
        c1, c2, c3 = (ConsoleProcess(n, free_port_factory()) for n in (story.n1, story.n2,
                                                                       story.n3))
        consoles.extend([c1, c2, c3])
        w1, w2, w3 = (_logged_in(c) for c in (c1, c2, c3))
        api = OpenApi(w2.get("/api/openapi.json").json())
        assert "/api/triggers/inbox" in api.document["paths"]

        log.info("the buyer's configuration: a trigger on request_header with party as parent")
        config = api.check("GET", "/api/triggers/config", w1.get("/api/triggers/config"))
        assert config["configured"] is True
        (trigger,) = config["triggers"]
        assert trigger["tree"]["table"] == "proc.request_header"
        assert [(r["table"], r["relation"]) for r in trigger["tree"]["related"]] == [
            ("proc.party", "parent")]
        assert "private_key" not in config["chains"][0]
        page = w1.get("/triggers").text
        assert "proc.request_header" in page and "proc.party" in page and "<details" in page
        outbox = api.check("GET", "/api/triggers/outbox", w1.get("/api/triggers/outbox"))
        assert [(r["status"], r["txid"]) for r in outbox["rows"]] == [("SENT", story.txid)]
        assert outbox["counts"] == {"SENT": 1}
        assert "SENT" in w1.get("/triggers/outbox").text

        log.info("B's inbox shows the failed document with its error")
        inbox = api.check("GET", "/api/triggers/inbox", w2.get("/api/triggers/inbox?status=FAILED"))
        (row,) = inbox["rows"]
        assert row["txid"] == story.txid and row["error"]
        assert str(escape(row["error"])) in w2.get("/triggers/inbox").text

        log.info("the third node has no triggers database and no key")
        config3 = api.check("GET", "/api/triggers/config", w3.get("/api/triggers/config"))
        assert config3["configured"] is False and config3["reason"]
        api.check("GET", "/api/triggers/inbox", reply := w3.get("/api/triggers/inbox"))
        assert reply.status == 404

        log.info("the document as a tree on B's and the buyer's nodes, private on node 3")
        for web in (w1, w2):
            html = web.get(f"/item/rfq/{story.txid}").text
            assert "Trigger document (encrypted)" in html and "decrypted" in html
            assert "request_header" in html and "parent_tables" in html
            assert "Example Buyer GmbH" in html and PRIVATE not in html
        html = w3.get(f"/item/rfq/{story.txid}").text
        assert PRIVATE in html
        assert "Example Buyer GmbH" not in html and "request_header" not in html

        log.info("hostile parameters of the triggers API")
        for path in ("/api/triggers/inbox?status=DROP%20TABLE", "/api/triggers/outbox?count=0",
                     "/api/triggers/outbox?start=-1", "/api/triggers/inbox?count=x"):
            body = api.check("GET", path, reply := w2.get(path))
            assert reply.status == 400 and set(body) == {"error"}, path
        for body in ({}, {"outbox": "all"}, {"outbox": [0]}, {"outbox": [True]},
                     {"inbox": [{"txid": "zz", "item_index": 0}]},
                     {"inbox": [{"txid": story.txid, "item_index": -1}]}, {"inbox": ["x"]}):
            reply = w2.post_json("/api/triggers/retry", body)
            assert reply.status == 400, body
            api.check("POST", "/api/triggers/retry", reply)

        log.info("retry without the CSRF token is refused and changes nothing")
        target = {"inbox": [{"txid": story.txid, "item_index": row["item_index"]}]}
        reply = w2.post_json("/api/triggers/retry", target, csrf=False)
        assert reply.status == 403
        api.check("POST", "/api/triggers/retry", reply)
        assert story.supplier_receiver.inbox_counts() == {"FAILED": 1}

        log.info("B creates its tables; a retry through the console applies the document")
        create_supplier_tables(story)
        done = api.check("POST", "/api/triggers/retry", w2.post_json("/api/triggers/retry",
                                                                      target))
        assert done == {"outbox": 0, "inbox": 1}
        assert story.supplier_receiver.inbox_counts() == {"APPLIED": 1}
        assert [h.status for h in supplier_headers(story)] == ["Sent to Supplier"]
        assert "APPLIED" in w2.get("/triggers/inbox").text
        again = w2.post_json("/api/triggers/retry", target)
        assert api.check("POST", "/api/triggers/retry", again) == {"outbox": 0, "inbox": 0}
        outbox_retry = w1.post_json("/api/triggers/retry", {"outbox": [outbox["rows"][0]
                                                                        ["sequence"]]})
        assert api.check("POST", "/api/triggers/retry", outbox_retry) == {"outbox": 0,
                                                                           "inbox": 0}
        untested = {op for op in api.operations() if op[1].startswith("/api/triggers/")}
        assert untested <= api.checked
