"""Console views of the triggers layer (registered through the ``chainmill.console`` entry point).

What an operator of the triggers sees in `chainmill console CHAIN`: the configuration as a
tree (chains, streams, nodes, triggers with their related tables), the outbox and the inbox
with their errors, a retry of failed documents, and a trigger document on a stream shown as a
collapsible XML tree of its operation table with its parent and child tables, decrypted when
this node holds an access entry for it and marked private otherwise.

The views reach the node only through the console's RPC client and read the triggers database
recorded for the chain in triggers.conf (see triggers/settings.py); node/ never imports this
module. Nothing here writes to the chain.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine

from triggers import configure, crypto, documents, schema
from triggers.catalog import Catalog
from triggers.errors import DecryptionFailed, TriggerError
from triggers.nodes import ACCESS, item_bytes

__all__ = ["register", "document_tree", "TreeNode"]

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
PAGE = 50
OUTBOX_STATUSES = ("PENDING", "SENT", "FAILED")
INBOX_STATUSES = ("APPLIED", "FAILED", "DEFERRED", "NOT_FOR_ME", "IGNORED")
_PRIVATE = "private \u2014 not for this node"


# -- the document tree (pure) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TreeNode:
    """One table row of a document for display: its columns, file, parents and children."""

    table: str
    relation: str  # "operation", "parent" or "child"
    columns: tuple[tuple[str, str | None], ...]
    file_name: str | None
    file_size: int | None
    parents: tuple[TreeNode, ...]
    children: tuple[TreeNode, ...]


def _node(row: documents.Row, relation: str) -> TreeNode:
    return TreeNode(
        table=row.table, relation=relation, columns=tuple(row.values.items()),
        file_name=row.file_body.file_name if row.file_body else None,
        file_size=len(row.file_body.content) if row.file_body else None,
        parents=tuple(_node(r, "parent") for r in row.parents),
        children=tuple(_node(r, "child") for r in row.children))


def document_tree(document: documents.Document) -> TreeNode:
    """The display tree of a parsed document, rooted at its operation table."""
    return _node(document.root, "operation")


# -- the plug-in ------------------------------------------------------------------------------


class _Views:
    def __init__(self, console: Any) -> None:
        self.console = console
        self._engine: Engine | None = None
        self._engine_error: str | None = None

    # -- the database

    def engine(self) -> Engine | None:
        """The chain's triggers database, or None (with the reason kept) if none is recorded."""
        if self._engine is None and self._engine_error is None:
            from triggers.cli import open_engine
            args = argparse.Namespace(datadir=str(self.console.datadir), db=None, hooks=None)
            try:
                self._engine, _ = open_engine(args, self.console.chain)
            except TriggerError as exc:
                self._engine_error = str(exc)
        return self._engine

    def _require_engine(self) -> Engine:
        engine = self.engine()
        if engine is None:
            raise self.console.json_error(404, 0, f"no triggers database: {self._engine_error}")
        return engine

    # -- reading

    def configuration(self) -> dict[str, Any]:
        engine = self.engine()
        if engine is None:
            return {"configured": False, "reason": self._engine_error, "chains": [],
                    "streams": [], "nodes": [], "triggers": []}
        with engine.connect() as conn:
            chains = [_jsonable(r) for r in conn.execute(select(
                schema.chain.c.chain_id, schema.chain.c.chain_desc, schema.chain.c.rpc_host,
                schema.chain.c.rpc_port, schema.chain.c.cipher_method,
                schema.chain.c.parent_node, schema.chain.c.start_date,
                schema.chain.c.end_date)).mappings()]
            streams = [_jsonable(r) for r in conn.execute(select(schema.stream)).mappings()]
            nodes = [_jsonable(r) for r in conn.execute(select(schema.node)).mappings()]
            rules = configure.list_triggers(engine)
            triggers = []
            for rule in rules:
                entries = configure.related_entries(conn, rule.trigger_id)
                triggers.append({
                    **_jsonable({name: getattr(rule, name) for name in rule.__slots__}),
                    "tree": _related_tree(rule.subsys_dir, rule.table_id, rule.table_id_alias,
                                          entries),
                })
        return {"configured": True, "reason": None, "chains": chains, "streams": streams,
                "nodes": nodes, "triggers": triggers}

    def outbox(self, status: str | None, start: int, count: int) -> dict[str, Any]:
        engine = self._require_engine()
        table = schema.outbox
        query = select(table.c.sequence, table.c.message_id, table.c.trigger_id,
                       table.c.subsys_dir, table.c.table_id, table.c.operation, table.c.pkey,
                       table.c.status, table.c.attempts, table.c.last_error, table.c.txid,
                       table.c.created_at, table.c.sent_at, table.c.next_attempt_at)
        if status:
            query = query.where(table.c.status == status)
        with engine.connect() as conn:
            rows = conn.execute(query.order_by(table.c.sequence.desc()).offset(start)
                                .limit(count)).mappings().all()
            counts = dict(conn.execute(select(table.c.status, func.count())
                                       .group_by(table.c.status)).all())
        return {"status": status, "start": start, "count": count,
                "counts": {k: int(v) for k, v in counts.items()},
                "rows": [_jsonable(r) for r in rows]}

    def inbox(self, status: str | None, start: int, count: int) -> dict[str, Any]:
        engine = self._require_engine()
        table = schema.inbox
        query = select(table).where(table.c.chain_id == self.console.chain)
        if status:
            query = query.where(table.c.status == status)
        with engine.connect() as conn:
            rows = conn.execute(query.order_by(table.c.received_at.desc(), table.c.txid)
                                .offset(start).limit(count)).mappings().all()
            counts = dict(conn.execute(
                select(table.c.status, func.count()).where(table.c.chain_id == self.console.chain)
                .group_by(table.c.status)).all())
        return {"status": status, "start": start, "count": count,
                "counts": {k: int(v) for k, v in counts.items()},
                "rows": [_jsonable(r) for r in rows]}

    # -- retry

    def retry(self, outbox: list[int], inbox: list[tuple[str, int]]) -> dict[str, int]:
        """FAILED outbox rows back to PENDING (the relay sends them again); FAILED inbox rows
        made due and re-run now by one receiver pass under the chain's walk lock."""
        from triggers.relay import retry_failed
        engine = self._require_engine()
        sent_again = retry_failed(engine, outbox) if outbox else 0
        rerun = 0
        if inbox:
            rerun = self._retry_inbox(engine, inbox)
        return {"outbox": sent_again, "inbox": rerun}

    def _retry_inbox(self, engine: Engine, wanted: list[tuple[str, int]]) -> int:
        from config.paths import chain_dir
        from triggers.cli import load_hooks
        from triggers.locks import walk_lock
        from triggers.receiver import Receiver
        from triggers.settings import resolve
        table = schema.inbox
        made_due = 0
        with engine.begin() as conn:
            for txid, index in wanted:
                result = conn.execute(update(table).where(
                    table.c.chain_id == self.console.chain, table.c.txid == txid,
                    table.c.item_index == index, table.c.status == "FAILED",
                ).values(next_attempt_at=None))
                made_due += int(result.rowcount or 0)
        if made_due:
            resolved = resolve(self.console.chain, str(self.console.datadir), None, None)
            with walk_lock(chain_dir(resolved.datadir, self.console.chain)):
                receiver = Receiver(engine, self.console.rpc, self.console.chain,
                                    hooks=load_hooks(resolved), catalog=Catalog(engine))
                receiver.retry_due()
        return made_due

    # -- a document on a stream

    def decode(self, stream: str, item: dict[str, Any]) -> dict[str, Any] | None:
        """The trigger-document view of ``item``, or None if it is not a trigger document."""
        if stream == ACCESS:
            return None
        try:
            data = item_bytes(self.console.rpc, item)
        except (TriggerError, ValueError):
            return None
        encrypted = crypto.is_envelope(data)
        if encrypted:
            try:
                data = self._decrypt(item["txid"], list(item.get("publishers") or []), data)
            except DecryptionFailed as exc:
                return {"template": "triggers_document.html", "private": True,
                        "reason": f"{_PRIVATE} ({exc})", "tree": None, "encrypted": True}
            if data is None:
                return {"template": "triggers_document.html", "private": True,
                        "reason": _PRIVATE, "tree": None, "encrypted": True}
        elif not data.lstrip()[:1] == b"<":
            return None
        try:
            document = documents.read(data)
        except (TriggerError, ValueError):
            return None
        return {"template": "triggers_document.html", "private": False, "reason": None,
                "encrypted": encrypted, "operation": document.operation,
                "root_element": document.root_element, "tree": document_tree(document)}

    def _decrypt(self, txid: str, publishers: list[str], envelope: bytes) -> bytes | None:
        """The plaintext if an access entry from the publisher opens it with a key of this
        node; None when none is for this node. DecryptionFailed when one fails its check."""
        keys = self._private_keys()
        if not keys:
            return None
        mine = set(self._own_addresses())
        entries = self.console.rpc.call("liststreamkeyitems", ACCESS, txid, False, 1000) or []
        for entry_item in entries:
            if not set(entry_item.get("publishers") or []) & set(publishers):
                continue  # only the data item's publisher may grant access to it
            try:
                entry = crypto.parse_access_entry(item_bytes(self.console.rpc, entry_item))
            except (DecryptionFailed, ValueError):
                continue
            key = keys.get(entry["key_fingerprint"])
            if entry["txid"] != txid or entry["address"] not in mine or key is None:
                continue
            wrapped = base64.b64decode(entry["wrapped_key"], validate=True)
            return crypto.open_envelope(envelope, crypto.unwrap_password(key, wrapped))
        return None

    def _own_addresses(self) -> list[str]:
        engine = self.engine()
        if engine is not None:
            with engine.connect() as conn:
                mine = conn.execute(select(schema.node.c.node_address).where(
                    schema.node.c.chain_id == self.console.chain,
                    schema.node.c.is_mine.is_(True))).scalars().all()
            if mine:
                return list(mine)
        return list(self.console.rpc.call("getaddresses"))

    def _private_keys(self) -> dict[str, Any]:
        paths: list[Path] = []
        engine = self.engine()
        if engine is not None:
            with engine.connect() as conn:
                try:
                    configured = Path(configure.get_chain(conn, self.console.chain)["private_key"])
                    paths.append(configured)
                    paths += sorted(configured.parent.glob("private_key*.pem"))
                except TriggerError:
                    pass
        default_dir = self.console.datadir / self.console.chain / "triggers-keys"
        paths += sorted(default_dir.glob("private_key*.pem"))
        keys: dict[str, Any] = {}
        for path in dict.fromkeys(paths):
            try:
                key = crypto.load_private_key(path)
            except TriggerError:
                continue
            keys[crypto.fingerprint(key.public_key())] = key
        return keys


def _related_tree(subsys: str, table: str, alias: str | None,
                  entries: list[configure.RelatedEntry]) -> dict[str, Any]:
    def walk(senior: int | None) -> list[dict[str, Any]]:
        return [{"table": f"{e.subsys_dir}.{e.table_id}", "alias": e.table_id_alias,
                 "relation": e.parent_or_child, "fk_columns": e.fk_columns,
                 "related": walk(e.node_id)}
                for e in entries if e.node_id_snr == senior]
    return {"table": f"{subsys}.{table}", "alias": alias, "relation": "trigger",
            "fk_columns": None, "related": walk(None)}


def _jsonable(row: Any) -> dict[str, Any]:
    out = {}
    for key, value in dict(row).items():
        if isinstance(value, dt.date | dt.datetime):
            value = value.isoformat()
        out[key] = value
    return out


# -- registration ---------------------------------------------------------------------------


def register(console: Any) -> None:
    """Add the triggers pages, API routes, schemas and the document decoder to the console."""
    views = _Views(console)
    console.add_templates(HERE / "console_templates")

    def status_param(request: web.Request, allowed: tuple[str, ...]) -> str | None:
        status = request.query.get("status") or None
        if status is not None and status not in allowed:
            raise console.json_error(400, -8, f"status is one of {', '.join(allowed)}")
        return status

    def paging(request: web.Request) -> tuple[int, int]:
        return (console.int_param(request, "start", 0, 0, 2**31),
                console.int_param(request, "count", PAGE, 1, 1000))

    async def config_api(request: web.Request) -> web.Response:
        return web.json_response(await asyncio.to_thread(views.configuration))

    async def outbox_api(request: web.Request) -> web.Response:
        status = status_param(request, OUTBOX_STATUSES)
        return web.json_response(await asyncio.to_thread(views.outbox, status, *paging(request)))

    async def inbox_api(request: web.Request) -> web.Response:
        status = status_param(request, INBOX_STATUSES)
        return web.json_response(await asyncio.to_thread(views.inbox, status, *paging(request)))

    async def retry_api(request: web.Request) -> web.Response:
        body = await console.json_body(request)
        outbox, inbox = _retry_selection(console, body.get("outbox", []), body.get("inbox", []))
        return web.json_response(await asyncio.to_thread(views.retry, outbox, inbox))

    async def config_page(request: web.Request) -> web.Response:
        config = await asyncio.to_thread(views.configuration)
        return console.render(request, "triggers_config.html", config=config)

    async def listing_page(request: web.Request, statuses: Any, lister: Any,
                           template: str) -> web.Response:
        """The outbox or inbox page: one status filter, paged; a reason when no database."""
        status = status_param(request, statuses)
        engine = await asyncio.to_thread(views.engine)
        result = (await asyncio.to_thread(lister, status, *paging(request))
                  if engine is not None else None)
        return console.render(request, template, result=result, statuses=statuses,
                              reason=views._engine_error)

    async def outbox_page(request: web.Request) -> web.Response:
        return await listing_page(request, OUTBOX_STATUSES, views.outbox, "triggers_outbox.html")

    async def inbox_page(request: web.Request) -> web.Response:
        return await listing_page(request, INBOX_STATUSES, views.inbox, "triggers_inbox.html")

    async def retry_page(request: web.Request) -> web.Response:
        form = await request.post()
        outbox = [form["sequence"]] if "sequence" in form else []
        inbox = ([{"txid": form.get("txid"), "item_index": form.get("item_index")}]
                 if "txid" in form else [])
        try:
            outbox_ids, inbox_ids = _retry_selection(
                console, [_as_int(v) for v in outbox],
                [{"txid": i["txid"], "item_index": _as_int(i["item_index"])} for i in inbox])
        except web.HTTPException:
            return console.render(request, "error.html", status=400, code=-8,
                                  message="nothing to retry")
        done = await asyncio.to_thread(views.retry, outbox_ids, inbox_ids)
        return console.render(request, "done.html", txid=None,
                              message=f"retry of {done['outbox']} outbox and "
                                      f"{done['inbox']} inbox document(s)",
                              back="/triggers/inbox" if inbox_ids else "/triggers/outbox")

    async def decode_item(console_: Any, stream: str, item: dict[str, Any]) -> dict | None:
        return await asyncio.to_thread(views.decode, stream, item)

    console.add_page("GET", "/triggers", config_page, nav="Triggers")
    console.add_page("GET", "/triggers/outbox", outbox_page, nav="Outbox")
    console.add_page("GET", "/triggers/inbox", inbox_page, nav="Inbox")
    console.add_page("POST", "/triggers/retry", retry_page)
    console.add_api("GET", "/api/triggers/config", config_api, OPENAPI_PATHS["config"])
    console.add_api("GET", "/api/triggers/outbox", outbox_api, OPENAPI_PATHS["outbox"])
    console.add_api("GET", "/api/triggers/inbox", inbox_api, OPENAPI_PATHS["inbox"])
    console.add_api("POST", "/api/triggers/retry", retry_api, OPENAPI_PATHS["retry"])
    console.add_schemas(OPENAPI_SCHEMAS)
    console.add_item_decoder(decode_item)


def _as_int(value: Any) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def _retry_selection(console: Any, outbox: Any, inbox: Any) -> tuple[list[int], list[tuple[str, int]]]:
    """Checked retry targets; 400 for anything else, or for an empty selection."""
    if not isinstance(outbox, list) or not all(isinstance(s, int) and not isinstance(s, bool)
                                               and s > 0 for s in outbox):
        raise console.json_error(400, -8, "outbox is a list of outbox sequence numbers")
    if not isinstance(inbox, list) or len(outbox) + len(inbox) > 1000:
        raise console.json_error(400, -8, "inbox is a list of {txid, item_index}")
    pairs = []
    for entry in inbox:
        if not isinstance(entry, dict):
            raise console.json_error(400, -8, "inbox is a list of {txid, item_index}")
        index = entry.get("item_index")
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise console.json_error(400, -8, "item_index is a non-negative integer")
        pairs.append((console.txid_param(str(entry.get("txid", ""))), index))
    if not outbox and not pairs:
        raise console.json_error(400, -8, "nothing to retry: give outbox and/or inbox entries")
    return list(outbox), pairs


def _load_openapi() -> tuple[dict[str, Any], dict[str, Any]]:
    document = json.loads((HERE / "console_openapi.json").read_text(encoding="utf-8"))
    paths = {name: {path: item} for name, (path, item) in zip(
        ("config", "outbox", "inbox", "retry"), document["paths"].items(), strict=True)}
    return paths, document["schemas"]


OPENAPI_PATHS, OPENAPI_SCHEMAS = _load_openapi()
