"""Lark LALR parser with positions. Syntax errors become Diagnostics.

Only the language modules (this one and lower.py) and cel/parse.py import lark.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from ..diagnostics import Diagnostic, did_you_mean
from ..limits import MAX_NESTING, MAX_SYNTAX_ERRORS
from ..source import SourceFile

if TYPE_CHECKING:
    from lark import Tree

_lock = threading.Lock()
_parser = None

# Terminal names as a policy author would say them.
_TERMINAL_WORDS = {
    "NAME": "a name",
    "STRING": "a quoted string",
    "CEL": "a condition in backticks",
    "INT": "a whole number",
    "DURATION": "a duration such as `60s`, `15m`, `24h` or `30d`",
    "SIGNED_NUMBER": "a number",
    "IRREVERSIBLE": "`irreversible`",
    "$END": "the end of the file",
}

KEYWORDS_AT_TOP = ("workflow", "roles", "const")


def grammar_text() -> str:
    """The grammar: from the checkout's grammar/ or the wheel's package data."""
    package = Path(__file__).resolve().parent.parent  # policy_engine/
    for candidate in (package.parent / "grammar" / "stopline.lark", package / "grammar" / "stopline.lark"):
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    return resources.files("policy_engine").joinpath("grammar/stopline.lark").read_text(encoding="utf-8")


def get_parser():
    global _parser
    if _parser is None:
        with _lock:
            if _parser is None:
                from lark import Lark

                from ..lark_cache import lark_cache

                _parser = Lark(
                    grammar_text(),
                    parser="lalr",
                    lexer="contextual",
                    propagate_positions=True,
                    maybe_placeholders=True,
                    cache=lark_cache("stopline-grammar"),  # the analysed tables, kept between processes
                )
    return _parser


@dataclass
class ParseResult:
    tree: Tree | None
    comments: list  # lark Tokens of COMMENT, in order
    diagnostics: list[Diagnostic]


def _term_word(parser, name: str) -> str:
    if name in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[name]
    try:
        term = parser.get_terminal(name)
        pat = term.pattern
        if pat.type == "str":
            return f"`{pat.value}`"
    except Exception:  # pragma: no cover - defensive
        pass
    return name.lower()


def _expected_words(parser, expected) -> list[str]:
    words = sorted({_term_word(parser, e) for e in expected})
    # keywords first (backticked), then descriptions
    return sorted(words, key=lambda w: (not w.startswith("`"), w))


def join_words(words: list[str]) -> str:
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _token_text(tok) -> str:
    v = str(tok)
    return v if len(v) <= 40 else v[:37] + "..."


def _scan(text: str):
    """Yield (start, end, kind) for every comment (kind `#`) and bracket (`{[]}`) outside
    strings and conditions, with the lexer's rules for both. Iterative, linear."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "#":
            j = text.find("\n", i)
            j = n if j == -1 else j
            yield i, j, "#"
            i = j
            continue
        if ch == "`":
            j = text.find("`", i + 1)
            i = n if j == -1 else j + 1
            continue
        if ch == '"':
            j = i + 1
            while j < n and text[j] != '"' and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            continue
        if ch in "{[]}":
            yield i, i + 1, ch
        i += 1


def check_nesting(src: SourceFile) -> Diagnostic | None:
    """Bracket depth outside strings, conditions and comments, without recursion."""
    depth = 0
    for i, _, ch in _scan(src.text):
        if ch in "{[":
            depth += 1
            if depth > MAX_NESTING:
                return Diagnostic(
                    "E005",
                    "error",
                    f"nesting deeper than {MAX_NESTING} levels",
                    src.span(i, i + 1),
                    label="too deep",
                    help="flatten the value; policy files allow at most "
                    f"{MAX_NESTING} nested `{{`/`[` levels",
                )
        elif ch != "#":
            depth -= 1
    return None


def parse(src: SourceFile) -> ParseResult:
    """Parse one file. On a syntax error, keep looking for more: blank out the offending
    line (keeping every offset) and parse again, while that is safe (the line opens or
    closes nothing), so an author sees every independent syntax error at once."""
    diags: list[Diagnostic] = []
    comments: list = []
    deep = check_nesting(src)
    if deep is not None:
        return ParseResult(None, comments, [deep])
    parser = get_parser()
    text = src.text
    budget = max(200_000, 3 * len(text))  # characters re-parsed for recovery, at most
    for attempt in range(MAX_SYNTAX_ERRORS):
        cur = src if attempt == 0 else SourceFile(src.path, text)
        tree, d = _parse_once(parser, cur)
        if d is None:
            if attempt == 0:
                return ParseResult(tree, comments, diags)
            break
        if diags and (d.span.start <= diags[-1].span.start or d.message == "unexpected `}`"):
            break  # no progress, or a block left dangling by the blanked line: noise
        diags.append(d)
        budget -= d.span.start
        if budget < 0:
            break  # a huge file with many errors: these are enough to start fixing
        if d.code != "E001" or d.span.line != d.span.end_line:
            break  # an unclosed block, string or condition: later errors would be cascades
        start = src.offset(d.span.line, 1)
        end = text.find("\n", start)
        end = len(text) if end == -1 else end
        seg = text[start:end]
        if any(seg.count(o) != seg.count(c) for o, c in ("{}", "[]")) or seg.count("`") % 2 or seg.count('"') % 2:
            break
        text = text[:start] + " " * len(seg) + text[end:]
    return ParseResult(None, comments, diags)


def _parse_once(parser, src: SourceFile):
    """(tree, None) or (None, the syntax error as a Diagnostic)."""
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

    try:
        return parser.parse(src.text), None
    except UnexpectedCharacters as e:
        return None, _unexpected_char(parser, src, e)
    except UnexpectedToken as e:
        return None, _unexpected_token(parser, src, e)
    except UnexpectedEOF as e:
        return None, _unexpected_eof(parser, src, e)
    except UnexpectedInput as e:  # pragma: no cover - other lark input errors
        off = getattr(e, "pos_in_stream", 0) or 0
        return None, Diagnostic("E001", "error", "syntax error", src.span(off, off + 1))
    except RecursionError:
        return None, Diagnostic("E005", "error", "policy file nests too deeply to parse", src.span(0, 0))


def comments_of(src: SourceFile) -> list[tuple[int, int, str]]:
    """(start offset, end offset, text) of every comment, in order.

    Comments are ignored by the grammar; this scans the text with the same rules the
    lexer uses (strings and conditions may contain `#`).
    """
    text = src.text
    return [(i, j, text[i:j]) for i, j, kind in _scan(text) if kind == "#"]


def _unexpected_char(parser, src: SourceFile, e) -> Diagnostic:
    off = e.pos_in_stream
    ch = src.text[off] if off < len(src.text) else ""
    allowed = _expected_words(parser, e.allowed or ())
    help_ = None
    if ch == "`":
        return Diagnostic(
            "E002",
            "error",
            "condition is not closed",
            src.span(off, off + 1),
            label="this backtick opens a condition that never ends",
            help="close the condition with a second backtick: `action.amount > 100.0`",
        )
    if ch == '"':
        return Diagnostic(
            "E002",
            "error",
            "string is not closed",
            src.span(off, off + 1),
            label="this quote opens a string that never ends on this line",
            help='close the string with a second `"` on the same line',
        )
    if ch == "'":
        help_ = 'strings use double quotes: "like this"'
    elif ch.isdigit():
        help_ = "durations need a unit: `s`, `m`, `h` or `d` (e.g. `60s`)"
    shown = repr(ch)[1:-1] if ch else "end of file"
    exp = f"; expected {join_words(allowed)}" if allowed and len(allowed) <= 8 else ""
    return Diagnostic(
        "E002",
        "error",
        f"unexpected character `{shown}`{exp}",
        src.span(off, off + 1),
        label="not valid here",
        help=help_,
    )


def _keywords(parser) -> list[str]:
    words = []
    for term in parser.terminals:
        pat = term.pattern
        if pat.type == "str" and pat.value.isidentifier():
            words.append(pat.value)
    return words


def _unexpected_token(parser, src: SourceFile, e) -> Diagnostic:
    tok = e.token
    # `accepts` (terminals the parser really accepts here) is exact; `expected` can
    # miss terminals of states reached through default reductions.
    terms = set(getattr(e, "accepts", None) or e.expected)
    if tok.type == "$END":
        return _eof_diag(parser, src, terms)
    start = tok.start_pos if tok.start_pos is not None else 0
    end = tok.end_pos if tok.end_pos is not None else start + 1
    history = list(getattr(e, "token_history", None) or ())
    prev = history[-1] if history else None
    if (prev is not None and prev.type == "NAME" and tok.type != "CEL" and "WHEN" in terms
            and prev.start_pos is not None):
        # a misspelled statement keyword inside an action reads as a rule's effect
        dym = did_you_mean(str(prev), [k for k in _keywords(parser) if k not in ("true", "false", "null")])
        if dym:
            return Diagnostic(
                "E001",
                "error",
                f"unknown statement `{_token_text(prev)}`",
                src.span(prev.start_pos, prev.end_pos),
                label="not a statement of this block",
                help=dym,
            )
    expected = _expected_words(parser, terms)
    text = _token_text(tok)
    help_ = _hint_for(tok, terms, expected)
    exp = join_words(expected) if len(expected) <= 10 else "a statement"
    return Diagnostic(
        "E001",
        "error",
        f"unexpected condition {text}" if tok.type == "CEL" else f"unexpected `{text}`",
        src.span(start, end),
        label=f"expected {exp}",
        help=help_,
    )


def _hint_for(tok, expected_terms, expected_words) -> str | None:
    value = str(tok)
    keywords = [w.strip("`") for w in expected_words if w.startswith("`")]
    if tok.type == "NAME" and keywords:
        dym = did_you_mean(value, keywords)
        if dym:
            return dym
    if "WORKFLOW" in expected_terms and value in ("action", "stop", "rollback", "version", "owners", "default"):
        return f'`{value}` is declared inside a workflow: `workflow "name" {{ {value} ... }}`'
    if "WHEN" in expected_terms and tok.type in ("CEL",):
        return "a rule reads `<effect> [name] [by N role] when `condition``"
    if "CEL" in expected_terms and tok.type == "STRING":
        return "conditions are written in backticks, not quotes: `action.amount > 100.0`"
    if "DURATION" in expected_terms:
        return "write the window as a number with a unit: `60s`, `15m`, `24h` or `30d`"
    if "RBRACE" in expected_terms and tok.type == "NAME":
        return f"`{value}` does not start a statement here; check the spelling or close the block with `}}`"
    return None


def _unclosed_brace(src: SourceFile) -> int | None:
    """Offset of the innermost `{` never closed (outside strings, conditions, comments)."""
    stack: list[int] = []
    for i, _, ch in _scan(src.text):
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            stack.pop()
    return stack[-1] if stack else None


def _eof_diag(parser, src: SourceFile, expected) -> Diagnostic:
    end = len(src.text)
    expected_w = _expected_words(parser, expected)
    help_ = None
    if "RBRACE" in expected:
        help_ = "a block is not closed: add the missing `}`"
        brace = _unclosed_brace(src)
        if brace is not None:
            line, _ = src.line_col(brace)
            opener = " ".join(src.line_text(line).split())
            if len(opener) > 60:
                opener = opener[:57] + "..."
            help_ = f"the block opened on line {line} (`{opener}`) is not closed: add the missing `}}`"
    return Diagnostic(
        "E003",
        "error",
        "unexpected end of file",
        src.span(max(0, end - 1) if end else 0, end),
        label=f"expected {join_words(expected_w)}" if expected_w and len(expected_w) <= 10 else None,
        help=help_,
    )


def _unexpected_eof(parser, src: SourceFile, e) -> Diagnostic:
    return _eof_diag(parser, src, set(e.expected))
