"""The triggers console plug-in's pure parts: the display tree of a document, retry checks."""

from __future__ import annotations

import pytest
from aiohttp import web

from node.console import params
from triggers import documents
from triggers.console_views import OPENAPI_PATHS, OPENAPI_SCHEMAS, _retry_selection, document_tree


class _ParamsOnly:
    """The part of the console object _retry_selection uses: its checked-parameter helpers."""

    json_error = staticmethod(params.json_error)
    txid_param = staticmethod(params.txid_param)


def test_triggers_console_tree_mirrors_operation_parent_and_child_tables():
    document = documents.Document("insert", documents.Row(
        "request_header", {"request_id": "15", "status": None},
        file_body=documents.FileBody("spec.pdf", b"%PDF"),
        parents=[documents.Row("party", {"party_id": "1"})],
        children=[documents.Row("request_item", {"item_seq": "1"},
                                parents=[documents.Row("product", {"product_id": "230"})])]))
    tree = document_tree(documents.read(documents.render(document)))
    assert (tree.table, tree.relation) == ("request_header", "operation")
    assert tree.columns == (("request_id", "15"), ("status", None))
    assert (tree.file_name, tree.file_size) == ("spec.pdf", 4)
    assert [(p.table, p.relation) for p in tree.parents] == [("party", "parent")]
    (child,) = tree.children
    assert (child.table, child.relation) == ("request_item", "child")
    assert [(p.table, p.columns) for p in child.parents] == [("product", (("product_id", "230"),))]


def test_triggers_console_retry_selection_accepts_only_explicit_targets():
    txid = "ab" * 32
    assert _retry_selection(_ParamsOnly, [3], [{"txid": txid.upper(), "item_index": 0}]) == (
        [3], [(txid, 0)])
    for outbox, inbox in (([], []), ("all", []), ([0], []), ([True], []), ([1.5], []),
                          ([], [{"txid": "zz", "item_index": 0}]),
                          ([], [{"txid": txid, "item_index": -1}]), ([], ["x"]),
                          ([], {"txid": txid}), (list(range(1, 1002)), [])):
        with pytest.raises(web.HTTPBadRequest):
            _retry_selection(_ParamsOnly, outbox, inbox)


def test_triggers_console_openapi_items_reference_only_known_schemas():
    import json
    text = json.dumps(OPENAPI_PATHS)
    refs = {part.split('"')[0] for part in text.split("#/components/schemas/")[1:]}
    assert refs <= set(OPENAPI_SCHEMAS) | {"Error"}
    assert set(OPENAPI_PATHS) == {"config", "outbox", "inbox", "retry"}
