"""The XML document (spec 1.7): a small value model, rendering with lxml, and strict reading.

No I/O here: `render` turns a `Document` into bytes, `read` turns received bytes (through the
hardened parser) back into a `Document`, refusing anything outside the grammar.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from lxml import etree

from triggers import xmlsafe
from triggers.errors import DocumentInvalid

__all__ = [
    "OPERATIONS",
    "FILE_BODY",
    "PARENT_TABLES",
    "CHILD_TABLES",
    "RESERVED",
    "FileBody",
    "Row",
    "Document",
    "render",
    "read",
    "split_root",
]

OPERATIONS = ("insert", "update", "delete")
FILE_BODY = "rdc_file_body"
PARENT_TABLES = "parent_tables"
CHILD_TABLES = "child_tables"
RESERVED = frozenset((FILE_BODY, PARENT_TABLES, CHILD_TABLES))
_BASE64_LINE = 76
_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'


@dataclass(slots=True)
class FileBody:
    """One attached file: its plain name and its bytes."""

    file_name: str
    content: bytes


@dataclass(slots=True)
class Row:
    """One row of a table in a document, with its related rows.

    `values` maps column name to the text of its element (None for NULL), in column order.
    """

    table: str
    values: dict[str, str | None]
    file_body: FileBody | None = None
    parents: list[Row] = field(default_factory=list)
    children: list[Row] = field(default_factory=list)


@dataclass(slots=True)
class Document:
    """A whole message: the operation and the root row (key columns only for a delete)."""

    operation: str
    root: Row

    @property
    def root_element(self) -> str:
        """The root element's name, `<operation>_<table>`."""
        return f"{self.operation}_{self.root.table}"


def split_root(name: str) -> tuple[str, str]:
    """Split a root element name at the first underscore into (operation, table)."""
    operation, sep, table = name.partition("_")
    if not sep or operation not in OPERATIONS or not table:
        raise DocumentInvalid(f"root element <{name}> is not <insert|update|delete>_<table>")
    return operation, table


# -- rendering ------------------------------------------------------------------------------


def _put_columns(element: etree._Element, row: Row) -> None:
    for name, text in row.values.items():
        if name in RESERVED:
            raise DocumentInvalid(f"column name {name!r} is reserved by the document format")
        child = etree.SubElement(element, xmlsafe.check_name(name, "column"))
        if text is not None and text != "":
            child.text = text


def _put_row_body(element: etree._Element, row: Row) -> None:
    _put_columns(element, row)
    if row.file_body is not None:
        body = etree.SubElement(element, FILE_BODY)
        etree.SubElement(body, "file_name").text = xmlsafe.check_file_name(
            row.file_body.file_name
        )
        encoded = base64.b64encode(row.file_body.content).decode("ascii")
        lines = [encoded[i : i + _BASE64_LINE] for i in range(0, len(encoded), _BASE64_LINE)]
        etree.SubElement(body, "base64_encoded").text = "\n".join(lines)
    for group, rows in ((PARENT_TABLES, row.parents), (CHILD_TABLES, row.children)):
        if rows:
            holder = etree.SubElement(element, group)
            for related in rows:
                sub = etree.SubElement(holder, xmlsafe.check_name(related.table, "table"))
                _put_row_body(sub, related)


def render(document: Document) -> bytes:
    """The document as UTF-8 XML bytes with a declaration, indented by two spaces."""
    if document.operation not in OPERATIONS:
        raise DocumentInvalid(f"unknown operation {document.operation!r}")
    xmlsafe.check_name(document.root.table, "table")
    root = etree.Element(document.root_element)
    if document.operation == "delete":
        if document.root.file_body or document.root.parents or document.root.children:
            raise DocumentInvalid("a delete document carries primary-key columns only")
        _put_columns(root, document.root)
    else:
        _put_row_body(root, document.root)
    etree.indent(root, space="  ")
    return _DECLARATION + etree.tostring(root, encoding="UTF-8") + b"\n"


# -- reading --------------------------------------------------------------------------------


def _leaf_text(element: etree._Element) -> str | None:
    if len(element):
        raise DocumentInvalid(f"<{element.tag}> must hold text only")
    return element.text


def _read_file_body(element: etree._Element) -> FileBody:
    parts = {child.tag: child for child in element}
    if set(parts) != {"file_name", "base64_encoded"} or len(element) != 2:
        raise DocumentInvalid(f"<{FILE_BODY}> must hold <file_name> and <base64_encoded>")
    name = _leaf_text(parts["file_name"]) or ""
    xmlsafe.check_file_name(name)
    encoded = "".join((_leaf_text(parts["base64_encoded"]) or "").split())
    try:
        content = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise DocumentInvalid(f"<{FILE_BODY}> of {name!r} is not valid base64") from None
    return FileBody(name, content)


def _read_row(element: etree._Element, table: str, allow_related: bool) -> Row:
    row = Row(table=table, values={})
    seen_structure = False
    for child in element:
        tag = child.tag
        if tag in RESERVED:
            if not allow_related:
                raise DocumentInvalid(f"<{tag}> is not allowed in a delete document")
            seen_structure = True
            if tag == FILE_BODY:
                if row.file_body is not None:
                    raise DocumentInvalid(f"more than one <{FILE_BODY}> in <{element.tag}>")
                row.file_body = _read_file_body(child)
            else:
                target = row.parents if tag == PARENT_TABLES else row.children
                if len(child) == 0:
                    raise DocumentInvalid(f"<{tag}> must not be empty")
                for related in child:
                    target.append(_read_row(related, related.tag, True))
            continue
        if seen_structure:
            raise DocumentInvalid(f"column <{tag}> after file body or related tables")
        if tag in row.values:
            raise DocumentInvalid(f"column <{tag}> appears twice in <{element.tag}>")
        row.values[tag] = _leaf_text(child)
    if not row.values:
        raise DocumentInvalid(f"<{element.tag}> has no columns")
    return row


def read(data: bytes, limits: xmlsafe.Limits = xmlsafe.DEFAULT_LIMITS) -> Document:
    """Parse received bytes with the hardened parser and check them against the grammar."""
    root = xmlsafe.parse(data, limits)
    operation, table = split_root(root.tag)
    xmlsafe.check_name(table, "table")
    row = _read_row(root, table, allow_related=operation != "delete")
    return Document(operation, row)
