"""Parsing CEL: cel-python's grammar (celpy/cel.lark) through Lark, the checks made before
parsing (length, bracket depth), syntax errors in words a policy author reads (with offsets
into the source), spans of parse-tree nodes, and literals.

celpy and lark are imported lazily (importing policy_engine.cel loads neither).
"""

from __future__ import annotations

import re
import threading
from typing import Any

from .errors import CelCompileError
from .optional import MAYBE, blank_markers, mark_optional, optional_markers, skip_literal

# ---------------------------------------------------------------------------
# Literals
# ---------------------------------------------------------------------------

_SIMPLE_ESCAPES = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
    "\\": "\\", "'": "'", '"': '"', "`": "`", "?": "?",
}


def _unescape(body: str, is_bytes: bool) -> Any:
    """Decode a CEL (non-raw) string or bytes literal body. Raises ValueError."""
    if not is_bytes and "\\" not in body:
        return body  # nothing to decode (what the loop below gives, char by char)
    out: list = []  # str pieces, or ints (bytes) for byte literals
    i = 0
    n = len(body)

    def emit_char(c: str) -> None:
        if is_bytes:
            out.extend(c.encode("utf-8"))
        else:
            out.append(c)

    while i < n:
        c = body[i]
        if c != "\\":
            emit_char(c)
            i += 1
            continue
        i += 1
        if i >= n:
            raise ValueError("trailing backslash")
        e = body[i]
        if e in _SIMPLE_ESCAPES:
            emit_char(_SIMPLE_ESCAPES[e])
            i += 1
        elif e in "xX":
            h = body[i + 1 : i + 3]
            if len(h) != 2:
                raise ValueError("bad \\x escape")
            v = int(h, 16)
            if is_bytes:
                out.append(v)
            else:
                out.append(chr(v))
            i += 3
        elif e in "uU":
            if is_bytes:
                raise ValueError("\\u escape in bytes literal")
            width = 4 if e == "u" else 8
            h = body[i + 1 : i + 1 + width]
            if len(h) != width:
                raise ValueError("bad unicode escape")
            v = int(h, 16)
            if 0xD800 <= v <= 0xDFFF or v > 0x10FFFF:
                raise ValueError("invalid unicode code point")
            out.append(chr(v))
            i += 1 + width
        elif e in "0123":
            o = body[i : i + 3]
            if len(o) != 3 or any(ch not in "01234567" for ch in o):
                raise ValueError("bad octal escape")
            v = int(o, 8)
            if is_bytes:
                out.append(v)
            else:
                out.append(chr(v))
            i += 3
        else:
            raise ValueError(f"invalid escape \\{e}")
    if is_bytes:
        return bytes(out)
    return "".join(out)


def _string_literal(text: str) -> Any:
    is_bytes = False
    raw = False
    i = 0
    while text[i] in "bBrR":
        if text[i] in "bB":
            is_bytes = True
        else:
            raw = True
        i += 1
    q = text[i : i + 3]
    if q in ('"""', "'''"):
        body = text[i + 3 : -3]
    else:
        body = text[i + 1 : -1]
    if raw:
        return body.encode("utf-8") if is_bytes else body
    return _unescape(body, is_bytes)


def _parse_int_lit(text: str) -> int:
    neg = text.startswith("-")
    body = text[1:] if neg else text
    v = int(body[2:], 16) if body[:2].lower() == "0x" else int(body, 10)
    return -v if neg else v


def _span(node: Any, n: int) -> tuple[int, int]:
    """(start, end) offsets of a token or subtree in the source (``n`` its length): a
    tree's from its meta where it has one (a tree parsed with positions; a bracketed node
    of the fast parsers, see ``_place_brackets``), else from its first and last token or
    bracketed node, as Lark's propagation would; (0, n) when nothing in it has a position."""
    s = getattr(node, "start_pos", None)
    e = getattr(node, "end_pos", None)
    if s is None:
        # (`_meta`, not the `meta` property, which makes and keeps an empty Meta when there
        # is none: a tree parsed without positions has none)
        meta = getattr(node, "_meta", None)
        if meta is not None and not getattr(meta, "empty", True):
            s, e = meta.start_pos, meta.end_pos
        elif getattr(node, "children", None):  # parsed without positions: its edges have them
            s = _edge(node, 0)
            e = _edge(node, -1)
    if s is None:
        return 0, n
    return s, e if e is not None else s + 1


def _edge(node: Any, i: int) -> int | None:
    """The start (i=0) or end (i=-1) offset of a subtree: of its first (last) token, or
    of its first (last) node with a position (a bracketed node's meta, which covers its
    brackets: they are not in the tree). Depth-first, iterative."""
    x = node  # the common case: down the first (last) children to a token or a meta
    while True:
        meta = getattr(x, "_meta", None)
        if meta is not None and not getattr(meta, "empty", True) and x is not node:
            return meta.start_pos if i == 0 else meta.end_pos
        kids = getattr(x, "children", None)
        if not kids:
            break
        x = kids[i]
    if kids is None and getattr(x, "start_pos", None) is not None:
        return x.start_pos if i == 0 else x.end_pos
    stack = [node]
    while stack:
        x = stack.pop()
        meta = getattr(x, "_meta", None)
        if meta is not None and not getattr(meta, "empty", True) and x is not node:
            return meta.start_pos if i == 0 else meta.end_pos
        kids = getattr(x, "children", None)
        if kids is None:
            if getattr(x, "start_pos", None) is not None:
                return x.start_pos if i == 0 else x.end_pos
            continue
        stack.extend(reversed(kids) if i == 0 else kids)
    return None


# The nodes whose brackets the tree leaves out: before their children (`[..]`, `f(..)`), or
# after their first child (`x[..]`, `x.f(..)`, `a.B{..}`). Their spans are kept as metas.
_PREFIX_BRACKETED = frozenset({"list_lit", "map_lit", "paren_expr", "ident_arg", "dot_ident_arg"})
_POSTFIX_BRACKETED = frozenset({"member_index", "member_dot_arg", "member_object"})
_BRACKET_TERMINALS = ("LPAR", "RPAR", "LSQB", "RSQB", "LBRACE", "RBRACE")
_BRACKETS: list = []  # the bracket tokens the fast parser's lexer passed (under _PARSER_LOCK)


def _bracket_seen(tok: Any) -> Any:
    _BRACKETS.append(tok.start_pos)
    return tok


def _place_brackets(tree: Any, brackets: list[int], source: str) -> None:
    """Give each bracketed node of a tree parsed without positions a meta spanning its
    brackets, from the brackets' offsets in source order (each such node has exactly one
    pair: visited in the order of their opening brackets, they take them in turn)."""
    opens: list[int] = []
    close: dict[int, int] = {}
    pending: list[int] = []
    for b in brackets:
        if source[b] in "([{":
            opens.append(b)
            pending.append(b)
        elif pending:
            close[pending.pop()] = b + 1
    from .rdparse import _meta

    k = 0
    stack: list = [tree]
    while stack:
        x = stack.pop()
        if type(x) is tuple:  # (a postfix node whose first child is placed: its turn)
            node = x[0]
            start = _edge(node.children[0], 0) if hasattr(node.children[0], "data") else None
            o = opens[k]
            k += 1
            if start is not None:
                node._meta = _meta(start, close[o])
            continue
        d = getattr(x, "data", None)
        if d is None:
            continue
        kids = x.children
        if d in _POSTFIX_BRACKETED:
            stack.extend(reversed(kids[1:]))
            stack.append((x,))
            stack.append(kids[0])
            continue
        if d in _PREFIX_BRACKETED:
            o = opens[k]
            k += 1
            start = kids[0].start_pos if d in ("ident_arg", "dot_ident_arg") else o  # (the name's)
            if start is not None:
                x._meta = _meta(start, close[o])
        stack.extend(reversed(kids))


# The nodes of an operator, whose token the tree leaves out: after their only child (the
# left operand: `relation_lt : relation "<"`, ...), or alone (`unary_not : "!"`). With
# positions, Lark spans `a <` and `!`; the fast parsers give them the same spans as metas.
_INFIX_OPERATORS = frozenset({"relation_lt", "relation_le", "relation_gt", "relation_ge", "relation_eq",
                              "relation_ne", "relation_in", "addition_add", "addition_sub",
                              "multiplication_mul", "multiplication_div", "multiplication_mod"})
_PREFIX_OPERATORS = frozenset({"unary_not", "unary_neg"})
_OPERATOR_TEXTS = frozenset({"<", "<=", ">", ">=", "==", "!=", "in", "+", "-", "*", "/", "%", "!"})
_OPERATORS: list = []  # the operator tokens the fast parser's lexer passed (under _PARSER_LOCK)


class _OperatorsSeen:
    """A Lark post-lexer keeping the operator tokens in ``_OPERATORS`` (`in` too: it is lexed
    as a name and retyped, which a lexer callback does not see)."""

    always_accept = ()

    def process(self, stream: Any) -> Any:
        seen = _OPERATORS.append
        texts = _OPERATOR_TEXTS
        for tok in stream:
            if tok.value in texts:  # (a literal's text has its quotes, a number no sign alone)
                seen(tok)
            yield tok


def _place_operators(tree: Any, ops: list) -> None:
    """Give each operator node of a tree parsed without positions a meta spanning what
    Lark's positions would (the left operand and the operator; a prefix operator alone),
    from the operator tokens in source order: in the tree's order, a node of an infix
    operator comes after its operand's subtree."""
    if not ops:
        return
    from .rdparse import _meta

    k = 0
    stack: list = [tree]
    while stack:
        x = stack.pop()
        if type(x) is tuple:  # (an infix operator node whose operand is placed: its turn)
            node = x[0]
            tok = ops[k]
            k += 1
            left = node.children[0]
            start = _edge(left, 0) if hasattr(left, "data") else getattr(left, "start_pos", None)
            node._meta = _meta(start, tok.end_pos)
            continue
        d = getattr(x, "data", None)
        if d is None:
            continue
        if d in _INFIX_OPERATORS:
            stack.append((x,))
        elif d in _PREFIX_OPERATORS:
            tok = ops[k]
            k += 1
            x._meta = _meta(tok.start_pos, tok.end_pos)
        stack.extend(reversed(x.children))


# ---------------------------------------------------------------------------
# Characters a slip puts in (shared with the policy-file parser, language/parser.py)
# ---------------------------------------------------------------------------

# Letters of other scripts that look like Latin ones (the Cyrillic, Greek and Armenian rows of
# Unicode's confusables for ASCII letters); fullwidth and mathematical forms are found by NFKC.
_LOOKALIKES = dict(zip(
    "\u0430\u0435\u043e\u0440\u0441\u0443\u0445\u0456\u0458\u0455\u0501\u051b\u051d\u04bb\u04cf\u0261"
    "\u0410\u0412\u0415\u041a\u041c\u041d\u041e\u0420\u0421\u0422\u0425\u0423\u0406\u0408\u0405"
    "\u03bf\u03b1\u03bd\u03c1\u03b9\u03ba\u03c5"
    "\u0391\u0392\u0395\u0396\u0397\u0399\u039a\u039c\u039d\u039f\u03a1\u03a4\u03a5\u03a7"
    "\u0585\u0570\u0578\u057d",
    "aeopcyxijsdqwhlg"
    "ABEKMHOPCTXYIJS"
    "oavpiku"
    "ABEZHIKMNOPTYX"
    "ohns",
    strict=True,
))
# Typographic quotes, and the straight quote each stands for.
TYPOGRAPHIC_QUOTES = {
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u00ab": '"', "\u00bb": '"', "\u2033": '"',
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2039": "'", "\u203a": "'", "\u2032": "'",
}
# Other characters that word processors and chat tools put in for ASCII ones.
ASCII_FOR = {
    "\u00a0": " ", "\u2007": " ", "\u202f": " ", "\u2009": " ", "\u200b": "", "\ufeff": "",
    "\u2212": "-", "\u2010": "-", "\u2011": "-", "\u2013": "-", "\u2014": "-",
    "\u2264": "<=", "\u2265": ">=", "\u2260": "!=", "\u00d7": "*", "\u00f7": "/", "\u2026": "...",
}


def char_name(ch: str) -> str:
    """`U+0430 CYRILLIC SMALL LETTER A`: a character as a policy author can look it up."""
    import unicodedata

    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X}" + (f" {name}" if name else "")


def lookalike(ch: str) -> str | None:
    """The ASCII letter or digit a non-ASCII character looks like, or None."""
    if ch.isascii():
        return None
    if ch in _LOOKALIKES:
        return _LOOKALIKES[ch]
    import unicodedata

    norm = unicodedata.normalize("NFKC", ch)
    return norm if len(norm) == 1 and norm.isascii() and norm.isalnum() else None


def ascii_word(word: str) -> str:
    """`word` with every look-alike letter replaced by the ASCII letter it looks like."""
    return "".join(lookalike(c) or c for c in word)


def word_around(text: str, off: int) -> tuple[int, int]:
    """(start, end) of the name around `text[off]`: letters, digits and `_` of any script."""
    start = off
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
        start -= 1
    end = off + 1
    while end < len(text) and (text[end].isalnum() or text[end] == "_"):
        end += 1
    return start, end


def foreign_char(ch: str, text: str, off: int) -> tuple[str, str, str] | None:
    """(message, label, help) for a non-ASCII character where the language wants ASCII:
    a look-alike letter, a typographic quote, a non-breaking space, a `≥`. None for ASCII."""
    if not ch or ch.isascii():
        return None
    named = char_name(ch)
    if ch in TYPOGRAPHIC_QUOTES:
        straight = TYPOGRAPHIC_QUOTES[ch]
        return (f"typographic quote `{ch}` ({named})", "typographic quote",
                f"use the straight quote `{straight}`; word processors and chat tools put in curly ones")
    latin = lookalike(ch)
    if latin is not None:
        start, end = word_around(text, off)
        word = text[start:end]
        fixed = ascii_word(word)
        first = fixed[:1]
        if first.isascii() and first.isdigit():  # a number (`１`, `6０s`, `３.5`), not a name
            if start > 1 and text[start - 1] == "." and text[start - 2].isdigit():
                start = word_around(text, start - 2)[0]  # its integer part
            elif end + 1 < len(text) and text[end] == "." and text[end + 1].isdigit():
                end = word_around(text, end + 1)[1]  # its fraction
            fixed = ascii_word(text[start:end])
            fix = f"retype the number as `{fixed}`" if fixed.isascii() else f"retype it as `{latin}`"
            return (f"`{ch}` is {named}, not the ASCII `{latin}`", "look-alike character",
                    f"{fix}: numbers are written with the ASCII digits `0`-`9`")
        fix = f"retype the name as `{fixed}`" if fixed.isascii() else f"retype it as `{latin}`"
        return (f"`{ch}` is {named}, not the ASCII `{latin}`", "look-alike character",
                f"{fix}: names are ASCII letters, digits and `_`")
    if ch in ASCII_FOR:
        plain = ASCII_FOR[ch]
        fix = f"write `{plain}`" if plain.strip() else ("use a plain space" if plain else "delete it")
        return f"unexpected character {named}", "not ASCII", f"{fix}; it often comes with text pasted from a document"
    if ch.isalpha():
        return (f"`{ch}` ({named}) is not allowed in a name", "not ASCII",
                "names are ASCII letters, digits and `_`")
    return None


# ---------------------------------------------------------------------------
# Pre-parse checks and parse errors
# ---------------------------------------------------------------------------


def _bracket_depth(src: str, limit: int) -> tuple[int, int] | None:
    """Return (offset, depth) of the first bracket beyond ``limit``, skipping strings."""
    if src.count("(") + src.count("[") + src.count("{") <= limit:
        return None  # the depth never exceeds the number of opening brackets
    depth = 0
    i = 0
    n = len(src)
    while i < n:
        ch = src[i]
        if ch in "([{":
            depth += 1
            if depth > limit:
                return i, depth
        elif ch in ")]}":
            depth -= 1
        elif ch == "/" and src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
            continue
        elif ch in "\"'":
            raw = i > 0 and src[i - 1] in "rR"
            q = src[i : i + 3] if src[i : i + 3] in ('"""', "'''") else ch
            j = i + len(q)
            while j < n:
                if not raw and src[j] == "\\":
                    j += 2
                    continue
                if src.startswith(q, j):
                    break
                if len(q) == 1 and src[j] == "\n":
                    break
                j += 1
            i = j + len(q)
            continue
        i += 1
    return None


_PARSER_LOCK = threading.Lock()
_PARSER: list = []
_FAST_PARSER: list = []


def _fast_parser() -> Any:
    """cel-python's grammar (``celpy/cel.lark``) with cel-python's own Lark options, minus
    position propagation, which is half of the parse time. Tokens keep their positions;
    ``_span`` finds a subtree's from its first and last token, as propagation would."""
    if not _FAST_PARSER:
        import re
        from pathlib import Path

        import celpy.celparser
        from lark import Lark

        from ..lark_cache import lark_cache

        grammar = (Path(celpy.celparser.__file__).parent / "cel.lark").read_text()
        _FAST_PARSER.append(Lark(
            grammar, parser="lalr", start="expr", debug=True, g_regex_flags=re.M,
            # (IDENT last: lark 1.3's lexer chains a callback to its own keyword check with a
            # closure over its loop variable, which holds the last name when it runs)
            lexer_callbacks={**dict.fromkeys(_BRACKET_TERMINALS, _bracket_seen),
                             "IDENT": celpy.celparser.CELParser.ambiguous_literals},
            postlex=_OperatorsSeen(), propagate_positions=False, maybe_placeholders=False, priority="invert",
            cache=lark_cache("cel-grammar")))  # the analysed tables, kept between processes
    return _FAST_PARSER[0]


def _fast_parse(source: str) -> Any:
    """``_fast_parser``'s tree of ``source``, its bracketed and operator nodes given their
    spans (the caller holds ``_PARSER_LOCK``)."""
    del _BRACKETS[:]
    del _OPERATORS[:]
    tree = _fast_parser().parse(source)
    _place_brackets(tree, _BRACKETS, source)
    _place_operators(tree, _OPERATORS)
    del _BRACKETS[:]
    del _OPERATORS[:]
    return tree


def _parse(source: str, exact: bool = False) -> Any:
    """The parse tree of ``source``, without positions unless ``exact``. A syntax error is
    reported by cel-python's own parser (``CELParser``, built only then), so its messages
    and positions are the reference's. ``not(x)``, ``and(..)``, ``or(..)`` parse as calls
    of functions that do not exist: refused here, as the slips they are. A backquoted
    field name (``m.`content-type```) is parsed as a name of the same length (cel-python's
    grammar predates them), then put back (``_quoted_fields``)."""
    opt = optional_markers(source) if "?" in source and MAYBE.search(source) else None
    opt = opt if opt and (opt[0] or opt[1] or opt[2]) else None  # (`x.?f`, `m[?k]`, `[?o]`: optional.py)
    parsed = blank_markers(source, *opt) if opt else source
    quoted = _quoted_fields(source) if "`" in source else None
    if quoted:
        text = parsed
        for start, end in quoted:
            text = text[:start] + "_" * (end - start) + text[end:]
        try:
            tree = _parse_tree(text, exact)
        except CelCompileError as ex:
            at = dict(quoted)
            if ex.offset in at:  # (the stand-in is what was unexpected: name the backquoted name)
                ex = CelCompileError(f"unexpected `` {source[ex.offset : at[ex.offset]]} ``", ex.offset,
                                     at[ex.offset], ex.hint)
            raise ex from None
        _put_back_quoted(source, tree, quoted)
    else:
        tree = _parse_tree(parsed, exact)
    if opt:
        mark_optional(source, tree, *opt, _span)
    if _WORD_CALL.search(source):
        _refuse_word_calls(source, tree)
    return tree


# ---------------------------------------------------------------------------
# Backquoted field names (CEL 2024): `m.`content-type``, `has(m.`a/b`)`
# ---------------------------------------------------------------------------

_QUOTED_NAME = re.compile(r"`([_a-zA-Z0-9./ -]+)`")
QUOTED_IDENT = "QUOTED_IDENT"  # the token type of a backquoted field name in the trees


def _quoted_fields(source: str) -> list[tuple[int, int]]:
    """(start, end) of each backquoted field name in ``source``, backquotes included: a
    backquote after a `.` (spaces between allowed) outside strings and comments, closed on
    the same line, the name made of letters, digits and `_ . - /` and spaces, no name
    glued after it. Any other backquote is left to the parser (which reports it)."""
    out: list[tuple[int, int]] = []
    i = 0
    n = len(source)
    while i < n:
        ch = source[i]
        end = skip_literal(source, i)
        if end is not None:
            i = end
            continue
        if ch == "`":
            m = _QUOTED_NAME.match(source, i)
            after = source[m.end() : m.end() + 1] if m is not None else ""
            before = source[:i].rstrip(" \t\r\n")  # (`m.?`a-b``: an optional select, optional.py)
            before = before[:-1].rstrip(" \t\r\n") if before.endswith("?") else before
            if m is not None and not (after.isalnum() or after == "_") and before.endswith("."):
                out.append((i, m.end()))
                i = m.end()
                continue
        i += 1
    return out


def _put_back_quoted(source: str, tree: Any, quoted: list[tuple[int, int]]) -> None:
    """Give back their names to the stand-ins of backquoted fields in a tree parsed from the
    text with stand-ins (a ``QUOTED_IDENT`` token, with the backquotes' span): a field's
    select only (`m.`a-b``, also in `has(...)`); a stand-in anywhere else (a method's name,
    `.`a`` at the start) is refused, as in CEL."""
    from lark import Token

    at = {s: e for s, e in quoted}
    for node in tree.iter_subtrees():
        for i, tok in enumerate(node.children):
            start = getattr(tok, "start_pos", None)
            if start not in at or getattr(tok, "type", None) != "IDENT" or tok.end_pos != at[start]:
                continue
            end = at.pop(start)
            if node.data != "member_dot" or i != 1:
                raise CelCompileError("a backquoted name can only select a field", start, end,
                                      "call a function or method by its plain name: `m.`a-b`.size()`")
            node.children[i] = Token.new_borrow_pos(QUOTED_IDENT, source[start + 1 : end - 1], tok)


def _parse_tree(source: str, exact: bool) -> Any:
    if not exact:  # the common subset by hand, Lark's tree exactly (rdparse.py); else Lark
        from .rdparse import Unsupported, parse_subset

        try:
            return parse_subset(source)
        except Unsupported:
            pass
    from celpy.celparser import CELParseError, CELParser  # (not imported when the subset is all)

    with _PARSER_LOCK:
        if not exact:
            try:
                return _fast_parse(source)
            except Exception:  # noqa: BLE001 - the reference parser decides and reports
                pass
        if not _PARSER:
            _PARSER.append(CELParser())
        parser = _PARSER[0]  # (it keeps the text on the instance: hence the lock)
        try:
            return parser.parse(source)
        except CELParseError as ex:
            raise _convert_parse_error(source, ex) from None


# ---------------------------------------------------------------------------
# Slips: `=` for `==`, `and`/`or`/`not` for `&&`/`||`/`!`, typographic quotes, look-alikes
# ---------------------------------------------------------------------------

_WORD_OPS = {"and": "&&", "or": "||", "not": "!"}
_WORD_OPS_NOTE = "CEL writes and, or, not as `&&`, `||`, `!`"
_WORD_CALL = re.compile(r"(?<![\w.])(?:not|and|or)\s*\(", re.I)
_NOT_BEFORE = re.compile(r"(?<![\w.])(not)\s*$", re.I)


def _refuse_word_calls(source: str, tree: Any) -> None:
    for node in tree.iter_subtrees():
        if node.data != "ident_arg":
            continue
        tok = node.children[0]
        op = _WORD_OPS.get(str(tok).lower())
        if op is None:
            continue
        start = getattr(tok, "start_pos", None)
        if start is None:  # a tree without positions: the first such call in the text
            m = _WORD_CALL.search(source)
            start = m.start() if m is not None else 0
        raise CelCompileError(f"`{tok}` is not a CEL function", start, start + len(str(tok)),
                              f"use `{op}`: {_WORD_OPS_NOTE}")


def _token_slip(source: str, tok: Any) -> tuple[str, int, int, str] | None:
    """(message, start, end, hint) for a slip the unexpected token shows, or None."""
    start = tok.start_pos
    if start is None:
        return None
    value = str(tok.value)
    op = _WORD_OPS.get(value.lower()) if tok.type == "IDENT" else None
    if op == "!":
        return (f"`{value}` is not a CEL operator", start, tok.end_pos,
                "use `!`: `x not in list` is written `!(x in list)`")
    if op is not None:
        return f"`{value}` is not a CEL operator", start, tok.end_pos, f"use `{op}`: {_WORD_OPS_NOTE}"
    m = _NOT_BEFORE.search(source, 0, start)
    if m is not None:  # `not action.flag`: `not` read as a name, then another name
        return f"`{m[1]}` is not a CEL operator", m.start(1), m.end(1), f"use `!`: {_WORD_OPS_NOTE}"
    before = source[:start].rstrip()
    if value == ">" and before.endswith("<"):
        return "`<>` is not a CEL operator", len(before) - 1, tok.end_pos, "use `!=` to compare"
    return None


def _char_slip(source: str, off: int) -> tuple[str, int, int, str] | None:
    """(message, start, end, hint) for a slip the unexpected character shows, or None."""
    ch = source[off : off + 1]
    nxt = source[off + 1 : off + 2]
    if ch == "=":
        if source[max(0, off - 2) : off] in ("==", "!="):
            op = source[off - 2 : off + 1]
            return f"`{op}` is not a CEL operator", off - 2, off + 1, f"use `{op[:2]}` to compare"
        if nxt in "<>" and nxt:
            return f"`={nxt}` is not a CEL operator", off, off + 2, f"use `{nxt}=` to compare"
        return "`=` is not a CEL operator", off, off + 1, "use `==` to compare"
    if ch in "\"'":  # a string that never closes: is its closing quote a curly one?
        rest = source[off + 1 :].split("\n", 1)[0]
        curly = next((c for c in rest if c in TYPOGRAPHIC_QUOTES), None)
        if curly is not None:
            return ("string is not closed", off, off + 1,
                    f"it ends with a typographic quote `{curly}` ({char_name(curly)}): use the straight `{ch}`")
        return None
    if ch in "&|" and nxt != ch:
        return f"`{ch}` is not a CEL operator", off, off + 1, f"use `{ch * 2}`: {_WORD_OPS_NOTE}"
    found = foreign_char(ch, source, off)
    if found is None:
        return None
    message, _label, hint = found
    if ch in TYPOGRAPHIC_QUOTES:
        hint = "use straight quotes: strings in a condition are written \"EUR\" or 'EUR'"
    return message, off, off + 1, hint


def _convert_parse_error(source: str, ex: Exception) -> CelCompileError:
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedToken

    cause = ex.__context__
    line = getattr(ex, "line", None)
    col = getattr(ex, "column", None)
    offset = _line_col_to_offset(source, line, col) if line and col and line > 0 else len(source)
    end = offset + 1
    hint = None
    if isinstance(cause, UnexpectedToken):
        tok = cause.token
        if tok.type == "$END":
            msg = "unexpected end of expression"
            offset = len(source)
            end = offset
        else:
            if tok.start_pos is not None:
                offset = tok.start_pos
                end = tok.end_pos if tok.end_pos is not None else offset + len(tok.value)
            msg = f"unexpected `{tok.value}`"
            if tok.type == "RESERVED":
                msg = f"`{tok.value}` is a reserved word"
        expected = set(getattr(cause, "expected", ()) or ())
        if expected:
            hint = _expected_hint(expected)
        slip = _token_slip(source, tok) if tok.type != "$END" else None
        if slip is not None:
            msg, offset, end, hint = slip
    elif isinstance(cause, UnexpectedCharacters):
        ch = source[offset : offset + 1]
        msg = f"unexpected character `{ch}`"
        if ch == "`":
            hint = ("a backquoted name selects a field: `m.`content-type``, or `m['content-type']`; "
                    "it is made of letters, digits, `_`, `.`, `-`, `/` and spaces")
        slip = _char_slip(source, offset)
        if slip is not None:
            msg, offset, end, hint = slip
    elif isinstance(cause, UnexpectedEOF):
        msg = "unexpected end of expression"
        offset = end = len(source)
    else:
        msg = "syntax error: " + str(ex).splitlines()[0]
    offset = max(0, min(offset, len(source)))
    end = max(offset, min(end, len(source)))
    return CelCompileError(msg, offset, end, hint)


_TERMINAL_NAMES = {
    "RPAR": "`)`", "LPAR": "`(`", "RSQB": "`]`", "LSQB": "`[`", "RBRACE": "`}`", "LBRACE": "`{`",
    "COMMA": "`,`", "COLON": "`:`", "DOT": "`.`", "IDENT": "a name", "INT_LIT": "a number",
    "UINT_LIT": "a number", "FLOAT_LIT": "a number", "STRING_LIT": "a string", "MLSTRING_LIT": "a string",
    "BYTES_LIT": "a bytes literal", "BOOL_LIT": "`true` or `false`", "NULL_LIT": "`null`",
    "BANG": "`!`", "MINUS": "`-`", "QUESTION": "`?`", "$END": "the end of the condition",
    "EQ": "`==`", "NE": "`!=`", "LT": "`<`", "LE": "`<=`", "GT": "`>`", "GE": "`>=`",
    "PLUS": "`+`", "STAR": "`*`", "SLASH": "`/`", "PERCENT": "`%`", "IN": "`in`",
    "COND_AND": "`&&`", "COND_OR": "`||`",
}
_OPERAND_STARTS = {"IDENT", "INT_LIT", "UINT_LIT", "FLOAT_LIT", "STRING_LIT", "MLSTRING_LIT", "BYTES_LIT",
                   "BOOL_LIT", "NULL_LIT", "LPAR", "LSQB", "LBRACE", "BANG", "MINUS", "DOT"}


def _expected_hint(expected: set) -> str:
    """What the CEL parser wanted next, in words a policy author reads."""
    words: list[str] = []
    rest = set(expected)
    if len(rest & _OPERAND_STARTS) >= 4:
        words.append("a value (a name, a number, a string, `true`, `null`, a list `[..]`, `(`, `!` or `-`)")
        rest -= _OPERAND_STARTS
    for e in sorted(rest):
        w = _TERMINAL_NAMES.get(e)
        if w is None:
            continue  # internal terminal names help nobody
        if w not in words:
            words.append(w)
    if not words:
        return "check the condition's syntax (CEL)"
    if len(words) > 10:
        words = words[:10] + ["..."]
    return "expected " + (words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1])


def _line_col_to_offset(src: str, line: int, col: int) -> int:
    off = 0
    for _ in range(line - 1):
        j = src.find("\n", off)
        if j < 0:
            return len(src)
        off = j + 1
    return off + col - 1

