"""A hand-written parser for the common subset of CEL, giving exactly the tree Lark builds
from cel-python's grammar (``celpy/cel.lark``) with the options of ``parse._fast_parser``
(no positions on tree nodes but the bracketed ones, whose metas span their brackets, and
the operator ones, whose metas span the left operand and the operator (a prefix operator
alone), as ``parse._fast_parse`` gives them; tokens with their positions), in a fraction
of the time: Lark's LALR loop was most of the cost of loading a policy set.

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

from lark import Token, Tree
from lark.tree import Meta

__all__ = ["Unsupported", "parse_subset"]


class Unsupported(Exception):
    """Outside the subset, or not valid CEL: Lark decides."""


_RESERVED = frozenset({"as", "break", "const", "continue", "else", "for", "function", "if", "import", "let",
                       "loop", "package", "namespace", "return", "var", "void", "while", "in"})
# One token after optional spaces: a quoted string (cel.lark's STRING_LIT without the raw
# prefix), a decimal number, a word, an operator or punctuation; with the grammar's flags (re.M).
_TOKEN = re.compile(r"[\t\n\f\r ]*(?:"
                    r"""(?P<str>"(?:\\[abfnrtv"'\\]|\\\d{3}|\\x[0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4-8}|.)*?"|"""
                    r"""'(?:\\[abfnrtv"'\\]|\\\d{3}|\\x[0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4}|\\U[0-9a-fA-F]{8}|.)*?')"""
                    r"|(?P<num>[0-9]+(?:\.[0-9]+)?)|(?P<word>[_a-zA-Z][_a-zA-Z0-9]*)"
                    r"|(?P<op>&&|\|\||==|!=|<=|>=|[()\[\]{},.:?+\-*/%!<>]))", re.M)
_SPACES = "\t\n\f\r "
_DIGITS = frozenset("0123456789")
_NUM_END = frozenset("0123456789._abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_CLOSERS = frozenset(")]}")
_REL = {"<": "relation_lt", "<=": "relation_le", ">": "relation_gt", ">=": "relation_ge", "==": "relation_eq",
        "!=": "relation_ne", "in": "relation_in"}
_ADD = {"+": "addition_add", "-": "addition_sub"}
_MUL = {"*": "multiplication_mul", "/": "multiplication_div", "%": "multiplication_mod"}
_LITERALS = frozenset({"INT_LIT", "FLOAT_LIT", "STRING_LIT", "BOOL_LIT", "NULL_LIT"})
_MAX_TOKENS = 2000
_MAX_DEPTH = 40  # nested operands before the parser gives up (Lark has no such limit)

# A token made as ``Token(type, value, start_pos, line, column, end_line, end_column,
# end_pos)`` makes it (lark's ``Token._future_new``), without its two Python-level calls:
# about a third of the time per token. Only while Token keeps exactly those slots.
_new_str = str.__new__
_TOKEN_SLOTS = ("type", "start_pos", "value", "line", "column", "end_line", "end_column", "end_pos")
_DIRECT_TOKENS = tuple(getattr(Token, "__slots__", ())) == _TOKEN_SLOTS


def _token(kind: str, text: str, s: int, line: int, col: int, eline: int, ecol: int, e: int) -> Token:
    if not _DIRECT_TOKENS:  # pragma: no cover - another lark: its own constructor
        return Token(kind, text, s, line, col, eline, ecol, e)
    t = _new_str(Token, text)
    t.type = kind
    t.start_pos = s
    t.value = text
    t.line = line
    t.column = col
    t.end_line = eline
    t.end_column = ecol
    t.end_pos = e
    return t


def _meta(start: int | None, end: int) -> Meta:
    """A node's position: only ``start_pos`` and ``end_pos`` (all ``parse._span`` reads);
    ``start`` None when the node starts with `true` or `false` (their tokens have none)."""
    m = Meta()
    m.empty = False
    m.start_pos = start  # type: ignore[assignment]  # (None: as in Lark's own trees)
    m.end_pos = end
    return m


def _where(nl: list[int], pos: int) -> tuple[int, int]:
    """(line, column) of ``pos``; ``nl``: the offsets just after each newline."""
    line = 1
    start = 0
    for p in nl:
        if p > pos:
            break
        line += 1
        start = p
    return line, pos - start + 1


def _tokens(src: str, at: dict | None = None) -> tuple[list, list]:
    """(kinds, tokens): each token's kind (a token type: IDENT, INT_LIT, ...; or, for an
    operator or punctuation, its text) and, for a name or a literal, its lark ``Token``
    (None for the others; an operator's offset goes in ``at``, by its index, when given:
    a bracket's gives its node's span). Operand position decides a leading `-` of a number
    (it is the literal's, as in Lark's contextual lexer)."""
    kinds: list = []
    toks: list = []
    kadd = kinds.append
    tadd = toks.append
    nl = [m.end() for m in re.finditer("\n", src)] if "\n" in src else None
    i = 0
    operand = True  # what the previous token leaves expected: an operand (vs an operator)
    neg = -1  # the offset of a `-` that starts a negative literal (the next token is its number)
    for m in _TOKEN.finditer(src):
        if m.start() != i:
            raise Unsupported  # a character no token starts with
        g: str = m.lastgroup  # type: ignore[assignment]  # (every alternative is a named group)
        s, j = m.span(g)
        t = src[s:j]
        i = j
        if g == "word":
            if src[j : j + 1] in ("'", '"'):  # ("" is in neither: the end of the source)
                raise Unsupported  # a prefixed string (raw, bytes)
            if t == "true" or t == "false":
                kadd("BOOL_LIT")  # cel-python's lexer callback makes a new token: no position
                tadd(Token("BOOL_LIT", t))
                operand = False
                continue
            if t == "null":
                kind = "NULL_LIT"
            elif t == "in" and not operand:
                if at is not None:
                    at[len(kinds)] = s
                kadd("in")
                tadd(None)
                operand = True
                continue
            elif t in _RESERVED:
                raise Unsupported
            else:
                kind = "IDENT"
        elif g == "op":
            if t == "-" and operand and src[j : j + 1] in _DIGITS:
                neg = s  # a negative literal: its number follows at once
                continue
            if t == "/" and src[j : j + 1] == "/":
                raise Unsupported  # a comment
            if t == "." and operand:
                raise Unsupported  # `.name`, `.5`
            if at is not None:
                at[len(kinds)] = s
            kadd(t)
            tadd(None)
            operand = t not in _CLOSERS
            continue
        elif g == "num":
            if src[j : j + 1] in _NUM_END:
                raise Unsupported  # hex, unsigned, exponent, `1.`, `1.e3`...
            if neg >= 0:
                t = "-" + t
                s = neg
                neg = -1
            kind = "FLOAT_LIT" if "." in t else "INT_LIT"
        else:  # "str"
            if (t == '""' or t == "''") and src[j : j + 1] == t[0]:
                raise Unsupported  # a triple-quoted string
            kind = "STRING_LIT"
        kadd(kind)
        if nl is None:
            tadd(_token(kind, t, s, 1, s + 1, 1, j + 1, j))
        else:
            (line, col), (eline, ecol) = _where(nl, s), _where(nl, j)
            tadd(_token(kind, t, s, line, col, eline, ecol, j))
        operand = False
    if i != len(src) and src[i:].strip(_SPACES):
        raise Unsupported  # a character no token starts with
    if len(kinds) > _MAX_TOKENS:
        raise Unsupported
    return kinds, toks


class _P:
    """The recursive descent: one method per level of cel.lark's precedence chain
    (``expr``, ``conditionalor``, ``conditionaland``, ``relation``, ``addition``,
    ``multiplication``, ``unary``; ``unary`` parses ``member`` and ``primary`` too)."""

    __slots__ = ("toks", "kinds", "at", "i", "depth")  # (`at`: the offsets of operators and brackets)

    def __init__(self, src: str) -> None:
        self.at: dict[int, int] = {}
        self.kinds, self.toks = _tokens(src, self.at)
        self.kinds.append(None)  # (a sentinel: no bounds checks)
        self.i = 0
        self.depth = 0

    def take(self, kind: str) -> None:
        if self.kinds[self.i] != kind:
            raise Unsupported
        self.i += 1

    # expr : conditionalor ["?" conditionalor ":" expr]
    def expr(self) -> Tree:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise Unsupported
        c = self.conditionalor()
        if self.kinds[self.i] == "?":
            self.i += 1
            t = self.conditionalor()
            self.take(":")
            e = self.expr()
            self.depth -= 1
            return Tree("expr", [c, t, e])
        self.depth -= 1
        return Tree("expr", [c])

    # `name : [name op] operand`, left-associative, the operator filtered out
    def conditionalor(self) -> Tree:
        node = Tree("conditionalor", [self.conditionaland()])
        kinds = self.kinds
        while kinds[self.i] == "||":
            self.i += 1
            node = Tree("conditionalor", [node, self.conditionaland()])
        return node

    def conditionaland(self) -> Tree:
        node = Tree("conditionaland", [self.relation()])
        kinds = self.kinds
        while kinds[self.i] == "&&":
            self.i += 1
            node = Tree("conditionaland", [node, self.relation()])
        return node

    # `name : [name_op] operand`, `name_op : name OP`, left-associative: the node of an
    # operator (`relation_lt`, ...) spans its left operand and the operator (the operator
    # token is filtered out of the tree, its offset is in `at`), as Lark's positions give it
    def start(self, i: int) -> int | None:
        """The offset of token ``i`` (None for `true`, `false`: no position, as in Lark)."""
        tok = self.toks[i]
        return self.at[i] if tok is None else tok.start_pos

    def relation(self) -> Tree:
        i0 = self.i
        node = Tree("relation", [self.addition()])
        kinds = self.kinds
        while True:
            k = kinds[self.i]
            name = _REL.get(k)
            if name is None:
                return node
            pos = _meta(self.start(i0), self.at[self.i] + len(k))
            self.i += 1
            node = Tree("relation", [Tree(name, [node], pos), self.addition()])

    def addition(self) -> Tree:
        i0 = self.i
        node = Tree("addition", [self.multiplication()])
        kinds = self.kinds
        while True:
            k = kinds[self.i]
            name = _ADD.get(k)
            if name is None:
                return node
            pos = _meta(self.start(i0), self.at[self.i] + 1)
            self.i += 1
            node = Tree("addition", [Tree(name, [node], pos), self.multiplication()])

    def multiplication(self) -> Tree:
        i0 = self.i
        node = Tree("multiplication", [self.unary()])
        kinds = self.kinds
        while True:
            k = kinds[self.i]
            name = _MUL.get(k)
            if name is None:
                return node
            pos = _meta(self.start(i0), self.at[self.i] + 1)
            self.i += 1
            node = Tree("multiplication", [Tree(name, [node], pos), self.unary()])

    def unary(self) -> Tree:
        kinds = self.kinds
        i = self.i
        k = kinds[i]
        if k == "!" or k == "-":
            self.i = i + 1
            self.depth += 1
            if self.depth > _MAX_DEPTH:
                raise Unsupported
            op: Tree = Tree("unary_not" if k == "!" else "unary_neg", [], _meta(self.at[i], self.at[i] + 1))
            inner = self.unary()
            self.depth -= 1
            return Tree("unary", [op, inner])
        # primary (`start`: its offset, for the span of a postfix operation on it)
        toks = self.toks
        at = self.at
        i += 1
        self.i = i
        if k == "IDENT":
            start = toks[i - 1].start_pos
            if kinds[i] == "(":
                self.i = i + 1
                args = self.exprlist(")")
                node = Tree("primary", [Tree("ident_arg", [toks[i - 1]] + args, _meta(start, at[self.i - 1] + 1))])
            else:
                node = Tree("primary", [Tree("ident", [toks[i - 1]])])
        elif k in _LITERALS:
            start = toks[i - 1].start_pos  # (None for `true`, `false`: their tokens have no position)
            node = Tree("primary", [Tree("literal", [toks[i - 1]])])
        elif k == "(":
            start = at[i - 1]
            e = self.expr()
            self.take(")")
            node = Tree("primary", [Tree("paren_expr", [e], _meta(start, at[self.i - 1] + 1))])
        elif k == "[":
            start = at[i - 1]
            args = self.exprlist("]")
            node = Tree("primary", [Tree("list_lit", args, _meta(start, at[self.i - 1] + 1))])
        elif k == "{":
            start = at[i - 1]
            if kinds[i] == "}":
                self.i = i + 1
                node = Tree("primary", [Tree("map_lit", [], _meta(start, at[i] + 1))])
            else:
                items = [self.expr()]
                self.take(":")
                items.append(self.expr())
                while kinds[self.i] == ",":
                    self.i += 1
                    items.append(self.expr())
                    self.take(":")
                    items.append(self.expr())
                self.take("}")
                node = Tree("primary", [Tree("map_lit", [Tree("mapinits", items)], _meta(start, at[self.i - 1] + 1))])
        else:
            raise Unsupported  # (the end of the tokens, too)
        # member : the postfix operations
        node = Tree("member", [node])
        while True:
            k = kinds[self.i]
            if k == ".":
                i = self.i + 1
                if kinds[i] != "IDENT":
                    raise Unsupported
                name = self.toks[i]
                if kinds[i + 1] == "(":
                    self.i = i + 2
                    args = self.exprlist(")")
                    pos = None if start is None else _meta(start, at[self.i - 1] + 1)
                    node = Tree("member", [Tree("member_dot_arg", [node, name] + args, pos)])
                else:
                    self.i = i + 1
                    node = Tree("member", [Tree("member_dot", [node, name])])
            elif k == "[":
                self.i += 1
                e = self.expr()
                self.take("]")
                pos = None if start is None else _meta(start, at[self.i - 1] + 1)
                node = Tree("member", [Tree("member_index", [node, e], pos)])
            elif k == "{":
                raise Unsupported  # message construction
            else:
                return Tree("unary", [node])

    def exprlist(self, close: str) -> list:
        """`[exprlist] close`: [] when empty (no placeholder), else [Tree("exprlist", ...)]."""
        kinds = self.kinds
        if kinds[self.i] == close:
            self.i += 1
            return []
        items = [self.expr()]
        while kinds[self.i] == ",":
            self.i += 1
            items.append(self.expr())
        self.take(close)
        return [Tree("exprlist", items)]


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
