"""The erp console plug-in without a node: its routes are loaded and documented, the lists
read a real SQLite projection (newest first, paged, received or issued), answers the rules
refuse publish nothing and come back as 400, and hostile parameters are refused.

The RPC client points at a closed port (as in test_console_app): nothing here may reach a
node. The acting agent's key is given to the Erp, as in test_erp_api, so listing needs none.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from erp_helpers import ADDRESS_OF, BLOCKTIME, act, key
from sqlalchemy import create_engine

from erp import console_views, settings
from erp.api import Erp
from erp.projection import Item, Projection
from node.client import RpcClient
from node.console import params
from node.console.app import CONSOLE_KEY, build_app
from node.console.users import add_user, users_path

CHAIN = "unitchain"
A, B, C = key(1), key(2), key(3)
IDS = ["3" * 32, "1" * 32, "2" * 32]


class _Console:
    """The part of the console object the views use without a node."""

    chain = CHAIN
    rpc = None
    json_error = staticmethod(params.json_error)

    def __init__(self, datadir: Path) -> None:
        self.datadir = datadir


def _projection(tmp_path: Path) -> Erp:
    engine = create_engine(f"sqlite:///{tmp_path / 'p.db'}")
    projection = Projection(engine, "supplychain", ADDRESS_OF)
    projection.create()
    actions = [act("CREATE_AGENT", k, name=f"agent {n}") for n, k in enumerate((A, B, C))] + [
        act("CREATE_PARTNER_REQUEST", A, BLOCKTIME - 10, partner_request_id=IDS[0],
            receiving_agent=B),
        act("ANSWER_PARTNER_REQUEST", B, BLOCKTIME - 9, partner_request_id=IDS[0], response=0),
        act("CREATE_PARTNER_REQUEST", A, BLOCKTIME - 5, partner_request_id=IDS[1],
            receiving_agent=B),
        act("CREATE_PARTNER_REQUEST", C, BLOCKTIME - 5, partner_request_id=IDS[2],
            receiving_agent=B)]
    projection.apply([
        Item(position=n, txid=f"{n:064x}", vout=0, height=n, blockindex=0, blocktime=BLOCKTIME,
             publishers=(ADDRESS_OF(a["signer"]),), data=json.dumps(a).encode())
        for n, a in enumerate(actions)])
    return Erp(engine, None, address=ADDRESS_OF(B), public_key=B, address_of=ADDRESS_OF)


def _views(tmp_path: Path) -> console_views._Views:
    views = console_views._Views(_Console(tmp_path))
    views._erp = _projection(tmp_path)
    return views


def test_erp_console_lists_received_requests_newest_first_and_paged(tmp_path):
    views = _views(tmp_path)
    listed = views.listing("partner", 0, 20, False)
    assert listed["agent"] == B and listed["issued"] is False
    assert [r["partner_request_id"] for r in listed["rows"]] == [IDS[1], IDS[2], IDS[0]]
    assert [r["status"] for r in listed["rows"]] == ["OPEN", "OPEN", "REJECTED"]
    assert [r["partner_request_id"] for r in views.listing("partner", 1, 1, False)["rows"]] == [
        IDS[2]]
    assert views.listing("partner", 0, 20, True)["rows"] == []  # B issued none
    assert views.listing("order", 0, 20, False)["rows"] == []


def test_erp_console_answer_refused_by_the_rules_is_a_400_and_publishes_nothing(tmp_path):
    views = _views(tmp_path)  # its client is None: a publish would fail with AttributeError
    with pytest.raises(web.HTTPBadRequest) as refused:
        views.answer("partner", IDS[0], 1)  # already REJECTED
    assert "refused" in json.loads(refused.value.text)["error"]["message"]
    with pytest.raises(web.HTTPBadRequest):
        views.answer("order", "9" * 32, 1)  # no such order


@pytest.mark.parametrize("ident, response", [
    (None, "accept"), ("", "accept"), ("x" * 129, "accept"), ("a\nb", "accept"), (7, "accept"),
    (IDS[1], "1"), (IDS[1], 1), (IDS[1], None), (IDS[1], "ACCEPT")])
def test_erp_console_answer_selection_refuses_hostile_input(ident, response):
    with pytest.raises(web.HTTPBadRequest):
        console_views.answer_selection(_Console, ident, response)


def test_erp_console_answer_selection_accepts_accept_and_reject():
    assert console_views.answer_selection(_Console, IDS[1], "accept") == (IDS[1], 1)
    assert console_views.answer_selection(_Console, IDS[1], "reject") == (IDS[1], 0)


def test_erp_console_openapi_items_reference_only_known_schemas():
    text = json.dumps(console_views.OPENAPI_PATHS)
    refs = {part.split('"')[0] for part in text.split("#/components/schemas/")[1:]}
    assert refs <= set(console_views.OPENAPI_SCHEMAS) | {"Error"}
    assert set(console_views.OPENAPI_PATHS) == {
        "/api/erp/partner-requests", "/api/erp/partner-requests/answer",
        "/api/erp/orders", "/api/erp/orders/answer"}


def _app(tmp_path: Path) -> web.Application:
    (tmp_path / CHAIN).mkdir(exist_ok=True)
    add_user(users_path(tmp_path, CHAIN), "auditor", "correct horse")
    unreachable = RpcClient("127.0.0.1", 1, "nobody", "nothing", chain_name=CHAIN, timeout=1)
    return build_app(unreachable, CHAIN, tmp_path)


def test_erp_console_plugin_loads_and_says_when_no_erp_database_is_recorded(tmp_path):
    app = _app(tmp_path)
    console = app[CONSOLE_KEY]
    assert "erp" in console.plugin_names
    assert {e.path for e in console.nav} >= {"/erp/partner-requests", "/erp/orders"}

    async def scenario(client):
        await client.post("/login", data={"username": "auditor", "password": "correct horse"},
                          allow_redirects=False)
        api = await client.get("/api/erp/partner-requests")
        page = await client.get("/erp/orders")
        bad = await client.get("/api/erp/orders?count=101")
        return api.status, await api.json(), page.status, await page.text(), bad.status
    status, body, page_status, page, bad = asyncio.run(_serve(app, scenario))
    assert status == 404 and "no ERP database" in body["error"]["message"]
    assert page_status == 200 and "No ERP database for this chain" in page
    assert bad == 400


async def _serve(app: web.Application, scenario):
    async with TestClient(TestServer(app)) as client:
        return await scenario(client)


def test_erp_console_unusable_database_url_is_a_reason_not_a_crash(tmp_path):
    settings.write(settings.Settings(CHAIN, "nosuchdialect://x", "supplychain", None, tmp_path))
    views = console_views._Views(_Console(tmp_path))
    assert views.erp() is None and "not usable" in views.reason()


def test_erp_console_unreadable_database_is_a_502(tmp_path):
    views = console_views._Views(_Console(tmp_path))
    views._erp = Erp(create_engine(f"sqlite:///{tmp_path / 'missing' / 'p.db'}"), None,
                     address=ADDRESS_OF(B), public_key=B, address_of=ADDRESS_OF)
    with pytest.raises(web.HTTPBadGateway):
        views.listing("partner", 0, 20, False)
