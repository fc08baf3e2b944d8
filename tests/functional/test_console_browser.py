"""The console in a real headless Chromium (Debian's chromium driven by Playwright).

What: with JavaScript switched off (reading must not need it), an operator logs in on the
recipient's node, opens a block, searches a trigger document's stream key, opens the
replicated private document and unfolds its XML tree (operation table, parent table and the
buyer's name), retries the document that failed in the inbox and sees it APPLIED; on the third
node, which holds no key, the same item reads "private — not for this node". Screenshots are
saved under the test's tmp directory; with CHAINMILL_DOCS_SCREENSHOT=1 the item page is also
saved to docs/console.png for the README. On two companies' nodes, B's operator accepts A's
partner request with its Accept button and, once B's projection follows, sees it ACCEPTED.

How: console_story_support's three-node private RFQ story, one `chainmill console` process
per node, `chromium.launch(executable_path=shutil.which("chromium"), ...)` as the README says
(Playwright's own browser download is never used).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
from console_story_support import create_supplier_tables, private_rfq_story
from console_support import ConsoleProcess
from erp_console_support import partner_request_story, status_at
from framework import REPO_ROOT, scaled, wait_until

pytestmark = pytest.mark.functional
log = logging.getLogger("functional.console_browser")

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PRIVATE = "private \u2014 not for this node"


@pytest.fixture
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api")
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium package is needed (apt-get install -y chromium)"
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def _login(browser, console: ConsoleProcess):
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1280,
                                                                       "height": 860})
    context.set_default_timeout(scaled(30) * 1000)
    page = context.new_page()
    page.goto(console.url + "/")
    assert page.url.startswith(console.url + "/login")
    page.fill("input[name=username]", console.node.rpcuser)
    page.fill("input[name=password]", console.node.rpcpassword)
    page.click("form.login button")
    page.wait_for_url(console.url + "/")
    return page


def test_console_browser_block_search_document_tree_retry_and_private_item(
        harness, consoles, browser, tmp_path, free_port_factory):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with private_rfq_story(harness, tmp_path) as story:
        c2, c3 = ConsoleProcess(story.n2, free_port_factory()), ConsoleProcess(
            story.n3, free_port_factory())
        consoles.extend([c2, c3])

        log.info("log in on the recipient's node; the overview shows the chain")
        page = _login(browser, c2)
        assert page.locator("h1").inner_text() == f"Chain {story.n2.chain}"
        tx_height = story.n2.getblock(story.n2.getrawtransaction(story.txid, 1)["blockhash"])
        assert tx_height["height"] <= int(page.locator("#height").inner_text()) \
            <= story.n2.getblockcount()
        page.screenshot(path=str(shots / "overview.png"), full_page=True)

        log.info("open a block from the block list")
        page.click("header nav >> text=Blocks")
        first = page.locator("table.blocks tbody tr td a").first
        height = first.inner_text()
        first.click()
        assert page.locator("h1").inner_text() == f"Block {height}"
        page.screenshot(path=str(shots / "block.png"), full_page=True)

        log.info("search the document's stream key and open the item")
        (item,) = story.n2.liststreamtxitems("rfq", story.txid)
        key = item["keys"][0]
        page.fill("form.search input[name=q]", key)
        page.click("form.search button")
        hit = page.locator("ul.hits a")
        assert hit.count() == 1 and "rfq" in hit.inner_text()
        hit.click()
        assert page.url.endswith(f"/item/rfq/{story.txid}")

        log.info("the XML tree: operation table open, parent table folded until clicked")
        root = page.locator("details.xml-operation")
        assert root.get_attribute("open") is not None
        assert "request_header" in root.locator("> summary").inner_text()
        parent = page.locator("details.xml-parent").first
        assert "party" in parent.locator("> summary").inner_text()
        assert not parent.locator("td", has_text="Example Buyer GmbH").is_visible()
        parent.locator("> summary").click()
        assert parent.locator("td", has_text="Example Buyer GmbH").is_visible()
        assert page.get_by_text(PRIVATE).count() == 0
        page.screenshot(path=str(shots / "document.png"), full_page=True)
        if os.environ.get("CHAINMILL_DOCS_SCREENSHOT") == "1":
            docs = Path(REPO_ROOT) / "docs"
            docs.mkdir(exist_ok=True)
            page.keyboard.press("Home")
            page.screenshot(path=str(docs / "console.png"))
            log.info("README screenshot written to docs/console.png")

        log.info("the inbox shows the failure; after the fix, Retry applies the document")
        page.click("header nav >> text=Inbox")
        failed = page.locator("table.inbox tbody tr", has_text="FAILED")
        assert failed.count() == 1 and "unknown table" in failed.inner_text()
        create_supplier_tables(story)
        failed.locator("button", has_text="Retry").click()
        assert page.locator("h1").inner_text() == "Done"
        page.click("text=Back")
        assert page.locator("table.inbox tbody tr", has_text="APPLIED").count() == 1
        page.screenshot(path=str(shots / "inbox.png"), full_page=True)

        log.info("the third node sees the same item as private")
        other = _login(browser, c3)
        other.goto(f"{c3.url}/item/rfq/{story.txid}")
        assert other.get_by_text(PRIVATE).is_visible()
        assert other.locator("details.xml-operation").count() == 0
        assert "Example Buyer GmbH" not in other.content()
        other.screenshot(path=str(shots / "private.png"), full_page=True)
    assert {p.name for p in shots.iterdir()} == {"overview.png", "block.png", "document.png",
                                                 "inbox.png", "private.png"}


def test_console_browser_accepts_a_partner_request_and_sees_its_status_change(
        harness, consoles, browser, tmp_path, free_port_factory):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    story = partner_request_story(harness, tmp_path, "erpbrowser")
    console = ConsoleProcess(story.n2, free_port_factory())
    consoles.append(console)

    log.info("B's operator opens the partner requests: A's request is OPEN")
    page = _login(browser, console)
    page.click("header nav >> text=Partners")
    assert page.locator("h1").inner_text() == "Partner requests"
    row = page.locator(f"tr.erp-request[data-id='{story.request_id}']")
    assert row.locator("td.status").inner_text() == "OPEN"
    page.screenshot(path=str(shots / "partner-open.png"), full_page=True)

    log.info("Accept: the console publishes the answer from B's agent address")
    row.locator("button", has_text="Accept").click()
    assert page.locator("h1").inner_text() == "Done"
    assert story.request_id in page.locator("main").inner_text()

    log.info("once B's projection follows, the page shows ACCEPTED and no more buttons")
    wait_until(lambda: status_at(story.n2, story.db_b, story.request_id) == "ACCEPTED",
               timeout=60, msg="the accepted request in B's projection")
    page.click("text=Back")
    row = page.locator(f"tr.erp-request[data-id='{story.request_id}']")
    assert row.locator("td.status").inner_text() == "ACCEPTED"
    assert row.locator("button").count() == 0
    page.screenshot(path=str(shots / "partner-accepted.png"), full_page=True)
    assert {p.name for p in shots.iterdir()} == {"partner-open.png", "partner-accepted.png"}
