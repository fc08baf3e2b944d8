"""Hardened XML parsing for anything received: no DTD, no entities, no network, bounded input.

Received documents come from other companies' nodes, so every byte is hostile until proven
otherwise. The checks run in this order, cheapest first: size, a byte scan for DTD syntax, the
parse itself (libxml2 with entity resolution and network access off), then a walk that bounds
depth and element count and validates every element name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from triggers.errors import DocumentRejected

__all__ = ["Limits", "DEFAULT_LIMITS", "parse", "check_name", "check_file_name", "NAME_RE"]

# Element names become table and column names. XML allows far more (dots, hyphens, colons,
# non-ASCII); SQL identifiers of the tables chainmill replicates never need them, and a
# narrow alphabet means a name can never carry SQL syntax even before it is looked up in the
# database's own metadata (which is the real guard: unknown names are refused there).
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_FILE_NAME_RE = re.compile(r"[^/\\\x00-\x1f]{1,255}\Z")
_DTD_MARKERS = (b"<!DOCTYPE", b"<!ENTITY", b"<!ELEMENT", b"<!ATTLIST", b"<!NOTATION")


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on a received document."""

    max_bytes: int = 64 * 1024 * 1024
    """Largest document accepted, in bytes (spec default 64 MiB)."""
    max_depth: int = 64
    """Deepest element nesting accepted; the root element is depth 1."""
    max_elements: int = 1_000_000
    """Most elements accepted in one document."""


DEFAULT_LIMITS = Limits()


def check_name(name: str, what: str = "element") -> str:
    """Return `name` if it is a safe table/column/element name, else raise DocumentRejected."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise DocumentRejected(f"{what} name {name!r} is not an allowed identifier")
    return name


def check_file_name(name: str) -> str:
    """Return `name` if it is a plain file name (no directory part, no `..`), else raise."""
    if (
        not isinstance(name, str)
        or not _FILE_NAME_RE.match(name)
        or ".." in name
        or name.strip() != name
        or name[0] == "."
    ):
        raise DocumentRejected(f"file name {name!r} is not a plain file name")
    return name


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        strip_cdata=True,
        collect_ids=False,
    )


def parse(data: bytes, limits: Limits = DEFAULT_LIMITS) -> etree._Element:
    """Parse received XML bytes into an element tree, refusing anything hostile.

    Raises DocumentRejected with a one-line reason for: oversized input, any DTD or entity
    declaration, entity references, malformed XML, too deep or too many elements, and element
    names outside the allowed identifier alphabet. Attributes are refused too: the document
    grammar has none.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > limits.max_bytes:
        raise DocumentRejected(
            f"document is {len(data)} bytes, more than the limit of {limits.max_bytes}"
        )
    upper = data.upper()
    for marker in _DTD_MARKERS:
        if marker in upper:
            raise DocumentRejected("document contains a DTD or entity declaration")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise DocumentRejected(f"document is not well-formed XML: {exc}") from None
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise DocumentRejected("document contains a DTD")
    _walk(root, limits)
    return root


def _walk(root: etree._Element, limits: Limits) -> None:
    count = 0
    stack: list[tuple[etree._Element, int]] = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        count += 1
        if count > limits.max_elements:
            raise DocumentRejected(f"document has more than {limits.max_elements} elements")
        if depth > limits.max_depth:
            raise DocumentRejected(f"document is nested deeper than {limits.max_depth} levels")
        if not isinstance(element.tag, str):
            # Entity references and other non-element nodes survive only when the input
            # used them; the document grammar has none.
            raise DocumentRejected("document contains an entity reference or foreign node")
        check_name(element.tag)
        if element.attrib:
            raise DocumentRejected(f"element <{element.tag}> has attributes; none are allowed")
        for child in element:
            stack.append((child, depth + 1))
