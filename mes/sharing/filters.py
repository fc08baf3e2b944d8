"""Share filters such as `variable = spin AND result > 1000`: parsed into a tree, never eval'd.

Grammar (keywords case-insensitive):

    expr       := term ("OR" term)*
    term       := factor ("AND" factor)*
    factor     := "NOT" factor | "(" expr ")" | comparison
    comparison := FIELD OP value
    FIELD      := variable | result | cnc_id | part_program | datastream
    OP         := = | != | < | <= | > | >=
    value      := number | 'quoted' | "quoted" | bare-word

A comparison between a number and a string is false (not an error), so `result > 1000`
simply does not match a `status` observation. Length and nesting are bounded.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from config.errors import ChainmillError

__all__ = ["FilterError", "Filter", "parse_filter", "FIELDS", "MATCH_ALL"]

FIELDS = frozenset({"variable", "result", "cnc_id", "part_program", "datastream"})
MAX_FILTER_CHARS = 1000
MAX_DEPTH = 20
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge,
}
_TOKEN = re.compile(r"""
    \s*(?:
      (?P<op><=|>=|!=|=|<|>)
    | (?P<paren>[()])
    | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)(?![\w.-])
    | '(?P<sq>[^']*)'
    | "(?P<dq>[^"]*)"
    | (?P<word>[A-Za-z_][\w.\-/]*)
    )""", re.VERBOSE)


class FilterError(ChainmillError):
    """A filter that does not parse."""


@dataclass(frozen=True)
class Filter:
    """A parsed filter: `matches(observation_fields)`; `text` is the source."""

    text: str
    tree: tuple

    def matches(self, fields: Mapping[str, Any]) -> bool:
        """True when the observation (variable, result, cnc_id, ...) satisfies the filter."""
        return _eval(self.tree, fields)


MATCH_ALL = Filter("", ("true",))


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise FilterError(f"unexpected character at position {pos}: {text[pos:pos + 10]!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind == "number":
            value = float(m.group("number"))
            if not math.isfinite(value):
                raise FilterError("numbers must be finite")
            out.append(("value", value))
        elif kind in ("sq", "dq"):
            out.append(("value", m.group(kind)))
        elif kind == "word":
            word = m.group("word")
            upper = word.upper()
            if upper in ("AND", "OR", "NOT"):
                out.append((upper, upper))
            else:
                out.append(("word", word))
        else:
            out.append((kind, m.group(kind)))
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, Any]]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> tuple[str, Any] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, kind: str | None = None) -> tuple[str, Any]:
        token = self.peek()
        if token is None:
            raise FilterError("the filter ends too early")
        if kind is not None and token[0] != kind:
            raise FilterError(f"expected {kind}, found {token[1]!r}")
        self.pos += 1
        return token

    def expr(self, depth: int) -> tuple:
        if depth > MAX_DEPTH:
            raise FilterError(f"the filter nests deeper than {MAX_DEPTH} levels")
        node = self.term(depth)
        while (t := self.peek()) is not None and t[0] == "OR":
            self.take()
            node = ("or", node, self.term(depth))
        return node

    def term(self, depth: int) -> tuple:
        node = self.factor(depth)
        while (t := self.peek()) is not None and t[0] == "AND":
            self.take()
            node = ("and", node, self.factor(depth))
        return node

    def factor(self, depth: int) -> tuple:
        token = self.peek()
        if token is None:
            raise FilterError("the filter ends too early")
        if token[0] == "NOT":
            self.take()
            if depth + 1 > MAX_DEPTH:
                raise FilterError(f"the filter nests deeper than {MAX_DEPTH} levels")
            return ("not", self.factor(depth + 1))
        if token == ("paren", "("):
            self.take()
            node = self.expr(depth + 1)
            if self.take("paren")[1] != ")":
                raise FilterError("expected ')'")
            return node
        field = self.take("word")[1]
        if field not in FIELDS:
            raise FilterError(f"unknown field {field!r} (one of {', '.join(sorted(FIELDS))})")
        op = self.take("op")[1]
        kind, value = self.take()
        if kind not in ("value", "word"):
            raise FilterError(f"expected a value after {field} {op}, found {value!r}")
        return ("cmp", field, op, value)


def parse_filter(text: str) -> Filter:
    """Parse a share filter; an empty filter matches every observation."""
    if not isinstance(text, str):
        raise FilterError("a filter is text")
    if len(text) > MAX_FILTER_CHARS:
        raise FilterError(f"a filter has at most {MAX_FILTER_CHARS} characters")
    tokens = _tokens(text)
    if not tokens:
        return MATCH_ALL
    parser = _Parser(tokens)
    tree = parser.expr(0)
    if parser.peek() is not None:
        raise FilterError(f"unexpected {parser.peek()[1]!r} after a complete filter")
    return Filter(text, tree)


def _compare(op: str, actual: Any, wanted: Any) -> bool:
    numeric = (isinstance(actual, int | float) and not isinstance(actual, bool))
    if isinstance(wanted, float) != numeric:
        return False
    if numeric:
        return _OPS[op](float(actual), wanted)
    if not isinstance(actual, str):
        return False
    return _OPS[op](actual, wanted)


def _eval(node: tuple, fields: Mapping[str, Any]) -> bool:
    kind = node[0]
    if kind == "true":
        return True
    if kind == "and":
        return _eval(node[1], fields) and _eval(node[2], fields)
    if kind == "or":
        return _eval(node[1], fields) or _eval(node[2], fields)
    if kind == "not":
        return not _eval(node[1], fields)
    _, field, op, value = node
    return _compare(op, fields.get(field), value)
