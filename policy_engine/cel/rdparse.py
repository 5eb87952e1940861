"""A hand-written parser for the common subset of CEL, giving exactly the tree Lark builds
from cel-python's grammar (``celpy/cel.lark``) with the options of ``parse._fast_parser``
(no positions on tree nodes; tokens with their positions), in a fraction of the time:
Lark's LALR loop was most of the cost of loading a policy set.

It is an accelerator in front of Lark, not a second meaning: ``parse_subset(source)``
returns the tree, or raises ``Unsupported`` for anything outside its subset or anything
malformed, and Lark then parses (and reports) as before. The subset: identifiers, calls,
field selection, indexing, list and map literals, decimal int and float literals (a
leading ``-`` in operand position is part of the literal, as Lark's lexer takes it),
single-line quoted strings without a prefix, ``true``/``false``/``null``, and every
operator. Outside it: bytes, raw and triple-quoted strings, hex and unsigned literals,
exponents, comments, leading-dot names, message construction (``a.b{...}``), reserved
words. ``tests/test_cel_rdparse.py`` compares trees, token types, texts and positions with
Lark's over the CEL conformance corpus, the shipped policies and random expressions.
"""

from __future__ import annotations

import re
from typing import Any

from lark import Token, Tree

__all__ = ["Unsupported", "parse_subset"]


class Unsupported(Exception):
    """Outside the subset, or not valid CEL: Lark decides."""


_RESERVED = frozenset({"as", "break", "const", "continue", "else", "for", "function", "if", "import", "let",
                       "loop", "package", "namespace", "return", "var", "void", "while", "in"})
# cel.lark's STRING_LIT (without the raw prefix), with the grammar's flags (re.M)
_STRING = re.compile(r'''"(?:\\[abfnrtv"'\\]|\\\d{3}|\\x[0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4-8}|.)*?"|'''
                     r"""'(?:\\[abfnrtv"'\\]|\\\d{3}|\\x[0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4}|\\U[0-9a-fA-F]{8}|.)*?'""",
                     re.M)
# one token at a position: spaces, a decimal number, a word, an operator or punctuation
_TOKEN = re.compile(r"(?P<sp>[\t\n\f\r ]+)|(?P<num>[0-9]+(?:\.[0-9]+)?)|(?P<word>[_a-zA-Z][_a-zA-Z0-9]*)"
                    r"|(?P<op>&&|\|\||==|!=|<=|>=|[()\[\]{},.:?+\-*/%!<>])")
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_DIGITS = frozenset("0123456789")
_NUM_END = frozenset("0123456789._abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_REL = {"<": "relation_lt", "<=": "relation_le", ">": "relation_gt", ">=": "relation_ge", "==": "relation_eq",
        "!=": "relation_ne", "in": "relation_in"}
_ADD = {"+": "addition_add", "-": "addition_sub"}
_MUL = {"*": "multiplication_mul", "/": "multiplication_div", "%": "multiplication_mod"}
_MAX_TOKENS = 2000
_MAX_DEPTH = 40  # nested operands before the parser gives up (Lark has no such limit)


def _tokens(src: str) -> list:
    """(kind, text, start, end): kind is a token type (IDENT, INT_LIT, ...) or, for an
    operator or punctuation, its text. Operand position decides a leading `-` of a
    number (it is the literal's, as in Lark's contextual lexer)."""
    out: list = []
    add = out.append
    i, n = 0, len(src)
    operand = True  # what the previous token leaves expected: an operand (vs an operator)
    match = _TOKEN.match
    while i < n:
        c = src[i]
        if c == '"' or c == "'":
            if src.startswith(c * 3, i):
                raise Unsupported
            m = _STRING.match(src, i)
            if m is None:
                raise Unsupported
            add(("STRING_LIT", m.group(), i, m.end()))
            i, operand = m.end(), False
            continue
        m = match(src, i)
        if m is None:
            raise Unsupported
        g = m.lastgroup
        j = m.end()
        if g == "sp":
            i = j
            continue
        t = m.group()
        if g == "word":
            if j < n and src[j] in "\"'":
                raise Unsupported  # a prefixed string (raw, bytes)
            if t == "true" or t == "false":
                add(("BOOL_LIT", t, i, j))
            elif t == "null":
                add(("NULL_LIT", t, i, j))
            elif t == "in" and not operand:
                add(("in", t, i, j))
                i, operand = j, True
                continue
            elif t in _RESERVED:
                raise Unsupported
            else:
                add(("IDENT", t, i, j))
            i, operand = j, False
            continue
        if g == "op" and t == "-" and operand and j < n and src[j] in _DIGITS:
            m = _NUMBER.match(src, j)  # a negative literal
            assert m is not None
            g, j, t = "num", m.end(), "-" + m.group()
        if g == "num":
            if j < n and src[j] in _NUM_END:
                raise Unsupported  # hex, unsigned, exponent, `1.`, `1.e3`...
            add(("FLOAT_LIT" if "." in t else "INT_LIT", t, i, j))
            i, operand = j, False
            continue
        if t == "/" and j < n and src[j] == "/":
            raise Unsupported  # a comment
        if t == "." and operand:
            raise Unsupported  # `.name`, `.5`
        add((t, t, i, j))
        i = j
        operand = t not in ")]}"
    if len(out) > _MAX_TOKENS:
        raise Unsupported
    return out


class _P:
    __slots__ = ("toks", "kinds", "i", "src", "depth", "nl")

    def __init__(self, src: str) -> None:
        self.src = src
        self.toks = _tokens(src)
        self.kinds = [t[0] for t in self.toks] + [None]  # (a sentinel: no bounds checks)
        self.i = 0
        self.depth = 0
        self.nl = [m.end() for m in re.finditer("\n", src)] if "\n" in src else None

    def take(self, kind: str) -> tuple:
        if self.kinds[self.i] != kind:
            raise Unsupported
        t = self.toks[self.i]
        self.i += 1
        return t

    def token(self, t: tuple) -> Token:
        kind, text, s, e = t
        if kind == "BOOL_LIT":  # cel-python's lexer callback makes a new token: no position
            return Token("BOOL_LIT", text)
        (line, col), (eline, ecol) = self.where(s), self.where(e)
        return Token(kind, text, s, line, col, eline, ecol, e)

    def where(self, pos: int) -> tuple[int, int]:
        if self.nl is None:
            return 1, pos + 1
        line = 1
        start = 0
        for p in self.nl:
            if p > pos:
                break
            line += 1
            start = p
        return line, pos - start + 1

    # expr : conditionalor ["?" conditionalor ":" expr]
    def expr(self) -> Tree:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise Unsupported
        c = self.binary("conditionalor", "||", self.conditionaland)
        if self.kinds[self.i] == "?":
            self.i += 1
            t = self.binary("conditionalor", "||", self.conditionaland)
            self.take(":")
            e = self.expr()
            self.depth -= 1
            return Tree("expr", [c, t, e])
        self.depth -= 1
        return Tree("expr", [c])

    def binary(self, name: str, op: str, operand: Any) -> Tree:
        """`name : [name op] operand`, left-associative, the operator filtered out."""
        node = Tree(name, [operand()])
        while self.kinds[self.i] == op:
            self.i += 1
            node = Tree(name, [node, operand()])
        return node

    def conditionaland(self) -> Tree:
        return self.binary("conditionaland", "&&", self.relation)

    def relation(self) -> Tree:
        node = Tree("relation", [self.addition()])
        while True:
            k = self.kinds[self.i]
            name = _REL.get(k) if k is not None else None
            if name is None:
                return node
            self.i += 1
            node = Tree("relation", [Tree(name, [node]), self.addition()])

    def addition(self) -> Tree:
        node = Tree("addition", [self.multiplication()])
        while True:
            k = self.kinds[self.i]
            name = _ADD.get(k) if k is not None else None
            if name is None:
                return node
            self.i += 1
            node = Tree("addition", [Tree(name, [node]), self.multiplication()])

    def multiplication(self) -> Tree:
        node = Tree("multiplication", [self.unary()])
        while True:
            k = self.kinds[self.i]
            name = _MUL.get(k) if k is not None else None
            if name is None:
                return node
            self.i += 1
            node = Tree("multiplication", [Tree(name, [node]), self.unary()])

    def unary(self) -> Tree:
        k = self.kinds[self.i]
        if k == "!" or k == "-":
            self.i += 1
            self.depth += 1
            if self.depth > _MAX_DEPTH:
                raise Unsupported
            inner = self.unary()
            self.depth -= 1
            return Tree("unary", [Tree("unary_not" if k == "!" else "unary_neg", []), inner])
        return Tree("unary", [self.member()])

    def member(self) -> Tree:
        node = Tree("member", [self.primary()])
        while True:
            k = self.kinds[self.i]
            if k == ".":
                self.i += 1
                name = self.token(self.take("IDENT"))
                if self.kinds[self.i] == "(":
                    self.i += 1
                    args = self.exprlist(")")
                    node = Tree("member", [Tree("member_dot_arg", [node, name] + args)])
                else:
                    node = Tree("member", [Tree("member_dot", [node, name])])
            elif k == "[":
                self.i += 1
                e = self.expr()
                self.take("]")
                node = Tree("member", [Tree("member_index", [node, e])])
            elif k == "{":
                raise Unsupported  # message construction
            else:
                return node

    def exprlist(self, close: str) -> list:
        """`[exprlist] close`: [] when empty (no placeholder), else [Tree("exprlist", ...)]."""
        if self.kinds[self.i] == close:
            self.i += 1
            return []
        items = [self.expr()]
        while self.kinds[self.i] == ",":
            self.i += 1
            items.append(self.expr())
        self.take(close)
        return [Tree("exprlist", items)]

    def primary(self) -> Tree:
        if self.i >= len(self.toks):
            raise Unsupported
        t = self.toks[self.i]
        k = t[0]
        self.i += 1
        if k == "IDENT":
            if self.kinds[self.i] == "(":
                self.i += 1
                return Tree("primary", [Tree("ident_arg", [self.token(t)] + self.exprlist(")"))])
            return Tree("primary", [Tree("ident", [self.token(t)])])
        if k in ("INT_LIT", "FLOAT_LIT", "STRING_LIT", "BOOL_LIT", "NULL_LIT"):
            return Tree("primary", [Tree("literal", [self.token(t)])])
        if k == "(":
            e = self.expr()
            self.take(")")
            return Tree("primary", [Tree("paren_expr", [e])])
        if k == "[":
            return Tree("primary", [Tree("list_lit", self.exprlist("]"))])
        if k == "{":
            if self.kinds[self.i] == "}":
                self.i += 1
                return Tree("primary", [Tree("map_lit", [])])
            items = [self.expr()]
            self.take(":")
            items.append(self.expr())
            while self.kinds[self.i] == ",":
                self.i += 1
                items.append(self.expr())
                self.take(":")
                items.append(self.expr())
            self.take("}")
            return Tree("primary", [Tree("map_lit", [Tree("mapinits", items)])])
        raise Unsupported


def parse_subset(src: str) -> Tree:
    """The tree Lark's parser (``parse._fast_parser``) gives for ``src``; raises
    ``Unsupported`` outside the subset or on anything malformed."""
    try:
        p = _P(src)
        tree = p.expr()
    except Unsupported:
        raise
    except Exception:  # noqa: BLE001 - anything unforeseen (deep recursion, a bug): Lark decides
        raise Unsupported from None
    if p.i != len(p.toks):
        raise Unsupported
    return tree
