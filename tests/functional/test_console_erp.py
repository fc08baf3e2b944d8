"""The erp views of the console on two real nodes: a partner request listed and accepted.

What: company A asks company B for a partnership; B's console (a real `chainmill console`
process) loads the erp plug-in through its entry point, lists the request OPEN in the JSON
API and on the page with Accept / Reject forms, refuses an answer without the CSRF token
(nothing is published) and hostile parameters, accepts it through erp.api (published from
B's agent address), refuses a second answer, and after `chainmill erp follow --once` the
request is ACCEPTED in B's projection and in the console. Then A sends an order, B's console
lists it and rejects it with the page's form, and B's projection shows it REJECTED. Every API reply is validated
against the served OpenAPI document.

How: erp_console_support's two-company story; B's projection is the SQLite database that
`chainmill erp init` recorded in the chain's erp.conf.
"""

from __future__ import annotations

import logging

import pytest
from console_support import Browser, ConsoleProcess, OpenApi
from erp_console_support import erp_command, partner_request_story, status_at
from framework import sync_blocks, wait_until

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.console_erp")


def test_console_erp_lists_and_accepts_a_partner_request(harness, consoles, tmp_path,
                                                         free_port_factory):
    story = partner_request_story(harness, tmp_path, "erpconsole")
    console = ConsoleProcess(story.n2, free_port_factory())
    consoles.append(console)
    web = Browser(console.url)
    assert web.get("/api/erp/partner-requests").status == 401
    assert web.login(story.n2.rpcuser, story.n2.rpcpassword).status == 303
    api = OpenApi(web.get("/api/openapi.json").json())
    assert "/api/erp/partner-requests/answer" in api.document["paths"]

    log.info("B's console lists A's request OPEN, with Accept and Reject on the page")
    listed = api.check("GET", "/api/erp/partner-requests", web.get("/api/erp/partner-requests"))
    assert listed["agent"] == story.mes_key
    [request] = listed["rows"]
    assert (request["partner_request_id"], request["issuing_agent"], request["status"]) == (
        story.request_id, story.erp_key, "OPEN")
    page = web.get("/erp/partner-requests").text
    assert story.request_id in page and ">Accept</button>" in page and ">Reject</button>" in page
    issued = api.check("GET", "/api/erp/partner-requests?issued=true",
                       web.get("/api/erp/partner-requests?issued=true"))
    assert issued["rows"] == []
    orders = api.check("GET", "/api/erp/orders", web.get("/api/erp/orders"))
    assert orders["rows"] == []

    log.info("hostile parameters and a missing CSRF token are refused; nothing is published")
    items_before = story.n2.rpc.call("getstreaminfo", "supplychain")["items"]
    for path in ("/api/erp/partner-requests?count=0", "/api/erp/partner-requests?start=-1",
                 "/api/erp/orders?issued=maybe", "/api/erp/orders?count=abc"):
        reply = web.get(path)
        assert reply.status == 400, path
        api.check("GET", path, reply)
    answer = {"id": story.request_id, "response": "accept"}
    no_csrf = web.post_json("/api/erp/partner-requests/answer", answer, csrf=False)
    assert no_csrf.status == 403
    api.check("POST", "/api/erp/partner-requests/answer", no_csrf)
    form_no_csrf = web.request("POST", "/erp/partner-requests/answer",
                               form={"id": story.request_id, "response": "accept"})
    assert form_no_csrf.status == 403
    for body in ({"id": story.request_id, "response": "1"}, {"id": "", "response": "accept"},
                 {"id": ["x"], "response": "reject"}, {"response": "accept"}):
        reply = web.post_json("/api/erp/partner-requests/answer", body)
        assert reply.status == 400, body
        api.check("POST", "/api/erp/partner-requests/answer", reply)
    refused = web.post_json("/api/erp/orders/answer", {"id": "9" * 32, "response": "accept"})
    assert api.check("POST", "/api/erp/orders/answer", refused)["error"]["code"] == -8
    assert story.n2.rpc.call("getstreaminfo", "supplychain")["items"] == items_before

    log.info("B accepts through the console: published from B's agent address")
    done = web.post_json("/api/erp/partner-requests/answer", answer)
    assert done.status == 200, done.body
    made = api.check("POST", "/api/erp/partner-requests/answer", done)
    assert (made["kind"], made["id"], made["response"]) == ("partner", story.request_id, 1)
    b_address = story.n2.rpc.call("getaddresses")[0]
    (item,) = story.n2.rpc.call("liststreamtxitems", "supplychain", made["txid"])
    assert item["publishers"] == [b_address]
    again = web.post_json("/api/erp/partner-requests/answer", answer)
    assert again.status == 400 and "refused" in again.json()["error"]["message"]

    log.info("after erp follow --once the request is ACCEPTED, in the projection and the console")
    wait_until(lambda: status_at(story.n2, story.db_b, story.request_id) == "ACCEPTED",
               timeout=60, msg="the accepted request in B's projection")
    after = api.check("GET", "/api/erp/partner-requests", web.get("/api/erp/partner-requests"))
    assert [r["status"] for r in after["rows"]] == ["ACCEPTED"]
    assert ">Accept</button>" not in web.get("/erp/partner-requests").text

    log.info("A sends an order; B's console lists it and rejects it with the page's form")
    sync_blocks([story.n1, story.n2])
    ordered = erp_command(story.n1, "order", story.mes_key, "--type", "dummy_action",
                          "--metadata", '{"Part": "steering wheel"}', "--wait")
    assert ordered["status"] == "applied", ordered
    order_id = ordered["abs_action_id"]
    sync_blocks([story.n1, story.n2])
    wait_until(lambda: erp_command(story.n2, "follow", story.n2.chain, "--once") and [
        r["status"] for r in web.get("/api/erp/orders").json()["rows"]] == ["OPEN"],
        timeout=60, msg="the order at B")
    [order] = api.check("GET", "/api/erp/orders", web.get("/api/erp/orders"))["rows"]
    assert (order["abs_action_id"], order["type"], order["metadata"]) == (
        order_id, "dummy_action", {"Part": "steering wheel"})
    page = web.request("POST", "/erp/orders/answer", form={
        "csrf_token": web.csrf, "id": order_id, "response": "reject"})
    assert page.status == 200 and "rejected" in page.text, page.text[:500]
    wait_until(lambda: erp_command(story.n2, "follow", story.n2.chain, "--once") and [
        r["status"] for r in web.get("/api/erp/orders").json()["rows"]] == ["REJECTED"],
        timeout=60, msg="the rejected order at B")

    erp_operations = {op for op in api.operations() if op[1].startswith("/api/erp/")}
    assert len(erp_operations) == 4 and erp_operations <= api.checked
