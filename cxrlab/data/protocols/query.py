"""A small, safe row filter for a protocol's ``query`` (replaces ``pandas.DataFrame.eval``).

``DataFrame.eval`` runs Python-like code: its ``@name`` syntax reaches any global, so a protocol
file could run shell commands. This grammar can only compare manifest columns with literals:

    expr       := or
    or         := and (("or" | "|") and)*
    and        := not (("and" | "&") not)*
    not        := ("not" | "~") not | atom
    atom       := "(" expr ")" | operand [compare operand] | operand ["not"] "in" list
    compare    := "==" | "!=" | "<" | "<=" | ">" | ">="
    operand    := COLUMN | literal
    list       := ("[" | "(") literal ("," literal)* [","] ("]" | ")")
    literal    := NUMBER | 'string' | "string" | True | False | None

There is no attribute access, no call, no indexing and no ``@``: anything else is a
:class:`QueryError` naming the position. Examples: ``age >= 60 and sex == 'F'``,
``view in ['PA', 'AP'] and not (domain == 'site_b')``. A missing value compares false.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cxrlab.errors import CxrlabError

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,|&|\||~)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
""", re.VERBOSE)

_KEYWORDS = {"and", "or", "not", "in"}
_LITERAL_NAMES = {"True": True, "False": False, "None": None, "true": True, "false": False}
_COMPARE = ("==", "!=", "<", "<=", ">", ">=")


class QueryError(CxrlabError, ValueError):
    """A protocol ``query`` is not in the filter grammar or names an unknown column."""


@dataclass(frozen=True)
class _Tok:
    kind: str  # num, str, op, name, end
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    out, i = [], 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if m is None:
            ch = text[i]
            hint = (" ('@' references Python variables and is not allowed)" if ch == "@" else
                    " (attribute access is not allowed)" if ch == "." else "")
            raise QueryError(f"query {text!r}: unexpected character {ch!r} at position {i}{hint}; "
                             "a query compares columns with literals using ==, !=, <, <=, >, >=, "
                             "in, and, or, not and parentheses")
        kind = m.lastgroup
        if kind != "ws":
            out.append(_Tok(kind, m.group(), i))
        i = m.end()
    out.append(_Tok("end", "", len(text)))
    return out


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def fail(self, tok: _Tok, want: str):
        got = "the end" if tok.kind == "end" else repr(tok.text)
        raise QueryError(f"query {self.text!r}: expected {want} at position {tok.pos}, got {got}")

    def is_word(self, word: str) -> bool:
        t = self.peek()
        return t.kind == "name" and t.text == word

    def parse(self):
        node = self.or_()
        if self.peek().kind != "end":
            t = self.peek()
            if t.kind == "op" and t.text == "(":
                raise QueryError(f"query {self.text!r}: calls are not allowed (position {t.pos})")
            self.fail(t, "and / or or the end")
        return node

    def or_(self):
        node = self.and_()
        while self.is_word("or") or (self.peek().kind == "op" and self.peek().text == "|"):
            self.take()
            node = ("or", node, self.and_())
        return node

    def and_(self):
        node = self.not_()
        while self.is_word("and") or (self.peek().kind == "op" and self.peek().text == "&"):
            self.take()
            node = ("and", node, self.not_())
        return node

    def not_(self):
        if self.is_word("not") or (self.peek().kind == "op" and self.peek().text == "~"):
            self.take()
            return ("not", self.not_())
        return self.atom()

    def atom(self):
        t = self.peek()
        if t.kind == "op" and t.text == "(":
            self.take()
            node = self.or_()
            if not (self.peek().kind == "op" and self.peek().text == ")"):
                self.fail(self.peek(), "')'")
            self.take()
            return node
        left = self.operand()
        t = self.peek()
        if t.kind == "op" and t.text in _COMPARE:
            self.take()
            return ("cmp", t.text, left, self.operand())
        negate = False
        if self.is_word("not") and self.toks[self.i + 1].kind == "name" \
                and self.toks[self.i + 1].text == "in":
            self.take()
            negate = True
        if self.is_word("in"):
            self.take()
            node = ("in", left, self.literal_list())
            return ("not", node) if negate else node
        if left[0] == "col" or (left[0] == "lit" and isinstance(left[1], bool)):
            return ("truth", left)
        self.fail(t, "a comparison (==, !=, <, <=, >, >=) or 'in'")

    def operand(self):
        t = self.take()
        if t.kind == "num":
            return ("lit", float(t.text) if any(c in t.text for c in ".eE") else int(t.text))
        if t.kind == "str":
            return ("lit", bytes(t.text[1:-1], "utf-8").decode("unicode_escape"))
        if t.kind == "name":
            if t.text in _LITERAL_NAMES:
                return ("lit", _LITERAL_NAMES[t.text])
            if t.text in _KEYWORDS:
                self.fail(t, "a column name or a literal")
            nxt = self.peek()
            if nxt.kind == "op" and nxt.text in ("(", "["):
                raise QueryError(f"query {self.text!r}: calls and indexing are not allowed "
                                 f"({t.text}{nxt.text} at position {t.pos})")
            return ("col", t.text)
        self.i -= 1
        self.fail(t, "a column name or a literal")

    def literal_list(self) -> tuple:
        t = self.take()
        if not (t.kind == "op" and t.text in "(["):
            self.i -= 1
            self.fail(t, "a list such as ['PA', 'AP']")
        close = "]" if t.text == "[" else ")"
        items = []
        while True:
            if self.peek().kind == "op" and self.peek().text == close:
                self.take()
                break
            node = self.operand()
            if node[0] != "lit":
                self.fail(self.toks[self.i - 1], "a literal inside the list")
            items.append(node[1])
            if self.peek().kind == "op" and self.peek().text == ",":
                self.take()
            elif not (self.peek().kind == "op" and self.peek().text == close):
                self.fail(self.peek(), f"',' or '{close}'")
        return tuple(items)


def parse_query(text: str):
    """The syntax tree of ``text``; raises :class:`QueryError` when it is not in the grammar."""
    if not isinstance(text, str) or not text.strip():
        raise QueryError(f"query must be a non-empty string, got {text!r}")
    return _Parser(text).parse()


def query_columns(tree) -> set[str]:
    """Columns a parsed query reads."""
    if tree[0] == "col":
        return {tree[1]}
    if tree[0] == "lit":
        return set()
    out: set[str] = set()
    for part in tree[1:]:
        if isinstance(part, tuple):
            out |= query_columns(part)
    return out


def _value(node, df: pd.DataFrame) -> Any:
    return df[node[1]] if node[0] == "col" else node[1]


def _as_bool(x, n: int) -> np.ndarray:
    if isinstance(x, pd.Series):
        return x.where(x.notna(), False).astype(bool).to_numpy()
    return np.full(n, bool(x))


def _eval(tree, df: pd.DataFrame, text: str) -> np.ndarray:
    n = len(df)
    op = tree[0]
    if op == "or":
        return _eval(tree[1], df, text) | _eval(tree[2], df, text)
    if op == "and":
        return _eval(tree[1], df, text) & _eval(tree[2], df, text)
    if op == "not":
        return ~_eval(tree[1], df, text)
    if op == "truth":
        return _as_bool(_value(tree[1], df), n)
    if op == "in":
        left = _value(tree[1], df)
        if isinstance(left, pd.Series):
            return left.isin(list(tree[2])).to_numpy(dtype=bool)
        return np.full(n, left in tree[2])
    if op == "cmp":
        sym, a, b = tree[1], _value(tree[2], df), _value(tree[3], df)
        try:
            if sym == "==":
                r = a == b
            elif sym == "!=":
                r = a != b
            elif sym == "<":
                r = a < b
            elif sym == "<=":
                r = a <= b
            elif sym == ">":
                r = a > b
            else:
                r = a >= b
        except TypeError as e:
            raise QueryError(f"query {text!r}: cannot compare with {sym} ({e}); compare a text "
                             "column with 'quoted' text and a number column with a number") from None
        if isinstance(r, pd.Series):
            isna = (a.isna() if isinstance(a, pd.Series) else False) | \
                   (b.isna() if isinstance(b, pd.Series) else False)
            out = np.array(r.to_numpy(dtype=bool, na_value=False), dtype=bool)
            if sym != "!=" and isinstance(isna, pd.Series):
                out &= ~isna.to_numpy(dtype=bool)
            return out
        return np.full(n, bool(r))
    raise QueryError(f"query {text!r}: cannot evaluate node {op!r}")  # unreachable for parsed trees


def evaluate_query(text: str, df: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the rows of ``df`` that satisfy ``text`` (see the module docstring)."""
    tree = parse_query(text)
    unknown = sorted(query_columns(tree) - set(map(str, df.columns)))
    if unknown:
        raise QueryError(f"query {text!r}: unknown column(s) {unknown}; columns are "
                         f"{list(map(str, df.columns))[:24]}")
    return _eval(tree, df, text)


__all__ = ["QueryError", "evaluate_query", "parse_query", "query_columns"]
