"""Lark LALR parser with positions. Syntax errors become Diagnostics.

A valid file is parsed by hand first (`rdparse.parse_file`: the identical tree, proven by
`tests/test_policy_rdparse.py`); anything it is unsure of, and every syntax error, goes
through Lark, so every diagnostic is Lark's.

Only the language modules (this one and lower.py) and cel/parse.py import lark.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from ..cel.parse import TYPOGRAPHIC_QUOTES, char_name, foreign_char
from ..diagnostics import Diagnostic, did_you_mean, one_of
from ..limits import MAX_NESTING, MAX_SYNTAX_ERRORS
from ..source import SourceFile
from .rdparse import KEYWORDS, Unsupported, parse_file

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
_KEYWORD_LIST = sorted(KEYWORDS)  # the grammar's keywords, without building Lark's parser


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
    """Yield (start, end, kind) for every comment (kind `#`), condition (kind `` ` ``) and
    bracket (`{[]}`, and `<>` of a field type) outside strings and conditions, with the lexer's
    rules for both.
    Iterative, linear."""
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
            if j != -1:
                yield i, j + 1, "`"
            i = n if j == -1 else j + 1
            continue
        if ch == '"':
            j = i + 1
            while j < n and text[j] != '"' and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            continue
        if ch in "{[]}<>":  # (`<`/`>` outside strings and conditions: a field type's arguments, `list<T>`)
            yield i, i + 1, ch
        i += 1


def check_nesting(src: SourceFile) -> Diagnostic | None:
    """Bracket depth outside strings, conditions and comments, without recursion."""
    depth = 0
    for i, _, ch in _scan(src.text):
        if ch in "{[<":  # (a field type `list<list<...>>` nests as a block does: 300 deep was an internal error)
            depth += 1
            if depth > MAX_NESTING:
                return Diagnostic(
                    "E005",
                    "error",
                    f"nesting deeper than {MAX_NESTING} levels",
                    src.span(i, i + 1),
                    label="too deep",
                    help="flatten the value; policy files allow at most "
                    f"{MAX_NESTING} nested `{{`/`[` levels",  # (and `<` of a field type: the caret shows it)
                )
        elif ch in "]}>":
            depth = max(0, depth - 1)  # (a stray closer, a syntax error of its own, lends no level to what follows)
    return None


def parse(src: SourceFile) -> ParseResult:
    """Parse one file. On a syntax error, keep looking for more: blank out the offending
    line (keeping every offset) and parse again, while that is safe (the line opens or
    closes nothing), so an author sees every independent syntax error at once."""
    diags: list[Diagnostic] = []
    comments: list = []
    try:  # the common case, without Lark's LALR loop: the identical tree, or Lark decides
        tree, depth = parse_file(src.text)
    except Unsupported:
        pass
    else:
        if depth <= MAX_NESTING:  # (else check_nesting reports it, below)
            reserved = reserved_names(tree, src, _KEYWORD_LIST)
            return ParseResult(None if reserved else tree, comments, reserved)
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
                reserved = reserved_names(tree, src, _keywords(parser))
                return ParseResult(None if reserved else tree, comments, reserved)
            break
        if diags and (d.span.start <= diags[-1].span.start or d.message == "unexpected `}`"):
            break  # no progress, or a block left dangling by the blanked line: noise
        diags.append(d)
        budget -= d.span.start
        if budget < 0:
            break  # a huge file with many errors: these are enough to start fixing
        one_line = d.code in ("E001", "E102", "E106", "E108") or d.label in _SLIP_LABELS
        if not one_line or d.span.line != d.span.end_line:
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
        help_ = 'close the string with a second `"` on the same line'
        rest = src.text[off + 1 : src.text.find("\n", off) if "\n" in src.text[off:] else len(src.text)]
        curly = next((c for c in rest if c in TYPOGRAPHIC_QUOTES), None)
        if curly is not None:
            help_ = f'the string ends with a typographic quote `{curly}` ({char_name(curly)}): use the straight `"`'
        return Diagnostic(
            "E002",
            "error",
            "string is not closed",
            src.span(off, off + 1),
            label="this quote opens a string that never ends on this line",
            help=help_,
        )
    runaway = _runaway_condition(src, off)
    if runaway is not None:
        return runaway
    slip = _char_slip(src, off, ch, set(e.allowed or ()))
    if slip is not None:
        return slip
    if ch.isdigit() and "DURATION" in set(e.allowed or ()):
        dur = _duration_slip(src, off)
        if dur is not None:
            return dur
    if ch == "'" and "CEL" in set(e.allowed or ()):
        help_ = "conditions are written in backticks: `action.amount > 100.0`"
    elif ch == "'":
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


def _runaway_condition(src: SourceFile, off: int) -> Diagnostic | None:
    """A condition whose closing backtick is missing runs on to the next condition's opening
    one: a condition spanning lines, at most one word before the syntax error at `off`, that
    ends where a condition would start (after `when` or a criterion's `:`), was not closed on
    its first line."""
    last = None
    for i, j, kind in _scan(src.text):
        if i >= off:
            break
        if kind == "`":
            last = (i, j)
    if last is None:
        return None
    i, j = last
    cond, between = src.text[i:j], src.text[j:off]
    if "\n" not in cond or len(between.split()) > 1:
        return None
    body = cond[1:-1].rstrip()
    if not (re.search(r"(?<![\w.])when$", body) or body.endswith(":")):
        return None
    return Diagnostic(
        "E002",
        "error",
        "condition is not closed",
        src.span(i, i + 1),
        label="this backtick opens a condition that never ends on its line",
        help=f"close it with a second backtick on line {src.span(i).line}: as written, it runs on "
        f"to the backtick on line {src.span(j - 1).line} that opens the next condition",
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
    runaway = _runaway_condition(src, start)
    if runaway is not None:
        return runaway
    if (prev is not None and prev.type == "NAME" and "WHEN" in terms
            and prev.start_pos is not None):
        # a misspelled statement keyword inside an action reads as a rule's effect, and the
        # word after it as the rule's name (`reversable full via "m"`: the effect is the slip)
        words = [k for k in _keywords(parser) if k not in ("true", "false", "null")]
        # (before a condition the name is a rule's, `deny big `cond``: only the word before it may be the slip)
        slips = [] if tok.type == "CEL" else [(str(prev), prev.start_pos, prev.end_pos)]
        # (the parser keeps one token of history: the word before the name is read from the
        # text, when it starts its line)
        line_start = src.text.rfind("\n", 0, prev.start_pos) + 1
        first = re.fullmatch(r"([ \t]*)([A-Za-z_][A-Za-z0-9_]*)[ \t]+", src.text[line_start:prev.start_pos])
        if first is not None:
            at = line_start + first.end(1)
            slips.append((first.group(2), at, at + len(first.group(2))))
        for word, s_at, e_at in slips:
            if word in ("allow", "deny", "require_approval"):
                continue
            dym = did_you_mean(word, words)
            if dym and word not in _keywords(parser):  # (an exact keyword is no misspelling)
                return Diagnostic(
                    "E001",
                    "error",
                    f"unknown statement `{_token_text(word)}`",
                    src.span(s_at, e_at),
                    label="not a statement of this block",
                    help=dym,
                )
    if "DURATION" in terms and tok.type in ("INT", "SIGNED_NUMBER"):
        dur = _duration_slip(src, start)
        if dur is not None:
            return dur
    expected = _expected_words(parser, terms)
    text = _token_text(tok)
    help_ = _hint_for(tok, terms, expected)
    if help_ is None and terms == {"STRING"} and tok.type != "STRING":
        # `version 1.0.0`: the bare word or number, whole (the lexer took `1.0`), quoted
        bare = re.match(r'[^\n{}#"`]*', src.text[start:start + 81])
        word = bare.group(0).rstrip() if bare is not None else ""
        if word and len(word) <= 80:
            end = start + len(word)
            text = _token_text(word)
            help_ = f'write "{word}"'
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
        # just past the last line's text, whether or not the file ends with a newline (the
        # caret after `}` either way, never under the file's last character)
        src.span(end - 1 if src.text.endswith("\n") else end, end),
        label=f"expected {join_words(expected_w)}" if expected_w and len(expected_w) <= 10 else None,
        help=help_,
    )


def _unexpected_eof(parser, src: SourceFile, e) -> Diagnostic:
    return _eof_diag(parser, src, set(e.expected))


# ---------------------------------------------------------------- common slips
EFFECT_WORDS = ("allow", "require_approval", "deny")
# single-line slips after which parsing may go on (the line is blanked and parsed again)
_SLIP_LABELS = ("look-alike character", "typographic quote", "not ASCII", "names cannot contain `-`")
_WORD_BEFORE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)[ \t]*$")
_WORD_AT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _char_slip(src: SourceFile, off: int, ch: str, allowed: set) -> Diagnostic | None:
    """A typographic quote, a look-alike letter from another script, or a hyphen in a name
    (`require-approval`): say so, with the fix."""
    text = src.text
    if ch == "-":
        return _hyphen_slip(src, off)
    found = foreign_char(ch, text, off)
    if found is None:
        return None
    message, label, help_ = found
    if ch in TYPOGRAPHIC_QUOTES:
        if "CEL" in allowed and "STRING" not in allowed:
            help_ = "conditions are written in backticks: `action.amount > 100.0`"
        else:
            help_ = 'use the straight double quote `"`: strings are written "like this"'
    return Diagnostic("E002", "error", message, src.span(off, off + 1), label=label, help=help_)


def _hyphen_slip(src: SourceFile, off: int) -> Diagnostic | None:
    text = src.text
    before = _WORD_BEFORE.search(text, max(0, off - 80), off)
    after = _WORD_AT.match(text, off + 1)
    if before is None or after is None or before.end() != off:
        return None
    start, end = before.start(), after.end()
    while True:  # `runs-while-stopped`: every part
        more = _WORD_AT.match(text, end + 1) if text[end : end + 1] == "-" else None
        if more is None:
            break
        end = more.end()
    word = text[start:end]
    fixed = word.replace("-", "_")
    prev = _WORD_BEFORE.search(text, max(0, start - 80), start)
    if fixed.lower() in EFFECT_WORDS:
        default = prev is not None and prev.group(1) == "default"
        effects = ("require_approval", "deny") if default else EFFECT_WORDS
        return Diagnostic(
            "E106" if default else "E102",
            "error",
            f"unknown {'default ' if default else ''}effect `{word}`",
            src.span(start, end),
            label=f"expected {one_of(effects)}",
            help=f"did you mean `{fixed.lower()}`? names are written with `_`, not `-`",
        )
    label, hint = "names cannot contain `-`", f"names are written with `_`: `{fixed}`"
    if start >= 2 and text[start - 2 : start] == ".`":  # `action.`x-request-id``: CEL's backquoted field name
        obj = re.search(r"[\w.]*$", text[: start - 2])
        head = obj.group(0) if obj is not None and obj.group(0) else "action"
        label = "a backquote ends the condition"
        hint = f'a condition is written between backquotes, so a field name cannot be: write `{head}["{word}"]`'
    return Diagnostic("E002", "error", f"unexpected `-` in `{word}`", src.span(off, off + 1), label=label, help=hint)


# A duration is a whole number and one of these units, without a space (grammar: DURATION).
_UNIT_WORDS = {
    "s": ("s", 1), "sec": ("s", 1), "secs": ("s", 1), "second": ("s", 1), "seconds": ("s", 1),
    "m": ("m", 1), "min": ("m", 1), "mins": ("m", 1), "minute": ("m", 1), "minutes": ("m", 1),
    "h": ("h", 1), "hr": ("h", 1), "hrs": ("h", 1), "hour": ("h", 1), "hours": ("h", 1),
    "d": ("d", 1), "day": ("d", 1), "days": ("d", 1),
    "w": ("d", 7), "wk": ("d", 7), "wks": ("d", 7), "week": ("d", 7), "weeks": ("d", 7),
    "mo": ("d", 30), "mon": ("d", 30), "month": ("d", 30), "months": ("d", 30),
    "y": ("d", 365), "yr": ("d", 365), "yrs": ("d", 365), "year": ("d", 365), "years": ("d", 365),
}
_SMALLER = {"d": ("h", 24), "h": ("m", 60), "m": ("s", 60)}
_DURATION_AT = re.compile(r"([0-9]+(?:\.[0-9]*)?)([ \t]*)([A-Za-z_][A-Za-z0-9_]*)?")
DURATION_FORM = "the units are `s`, `m`, `h` and `d` (seconds, minutes, hours, days), right after a whole number"


def _duration_slip(src: SourceFile, off: int) -> Diagnostic | None:
    """`30 days`, `4w`, `2 weeks`, `1 month`, `1.5h`, `30`: where a duration is expected."""
    m = _DURATION_AT.match(src.text, off)
    if m is None:
        return None
    number, space, unit = m.group(1), m.group(2), m.group(3) or ""
    shown = _token_text(m.group(0) if unit else number)
    if not unit:
        n = number if number.isdigit() and len(number) <= 12 else "30"
        return Diagnostic(
            "E108",
            "error",
            f"duration `{shown}` has no unit",
            src.span(m.start(1), m.end(1)),
            label="no unit",
            help=f"add a unit: `{n}s`, `{n}m`, `{n}h` or `{n}d` (seconds, minutes, hours, days)"
            + ("" if n == number else "; a duration is a whole number"),
        )
    known = _UNIT_WORDS.get(unit.lower())
    fix, factor = None, 1
    if known is not None and len(number) <= 30:  # exact (a Fraction): `1.5h` is `90m`
        letter, factor = known
        value = Fraction(number) * factor
        while value.denominator != 1 and letter in _SMALLER:
            letter, more = _SMALLER[letter]
            value *= more
        if value.denominator == 1:
            fix = f"{value.numerator}{letter}"
    if fix is not None and factor in (30, 365):
        why = f"write `{fix}` (a {'month' if factor == 30 else 'year'} has no fixed length: count the days)"
    elif fix is not None:
        why = f"write `{fix}`"
    elif known is not None and "." in number:
        why = "write it in whole seconds at the finest"
    else:
        why = "write it as, e.g., `30d`"
    at = (m.start(3), m.end(3))
    if known is not None and "." in number:
        label, at = "not a whole number", (m.start(1), m.end(1))
    elif known is not None and unit.lower() == known[0] and space:
        label = "no space before the unit"
    elif known is not None and unit.lower() == known[0]:
        label = "units are lower case"
    elif known is not None and known[1] == 1:
        label = f"write `{known[0]}`" + (", right after the number" if space else "")
    else:
        label = "not a unit"
    return Diagnostic(
        "E108",
        "error",
        f"invalid duration `{shown}`",
        src.span(*at),
        label=label,
        help=f"{why}; {DURATION_FORM}",
    )


_NAMED = {  # kind -> (what it is called, the position of its name, a suffix for the help's example)
    "gate_rule": ("rule", 1, "rule"),
    "action_decl": ("action type", 0, "action"),
    "stop_decl": ("stop trigger", 0, "trigger"),
    "rollback_decl": ("rollback scenario", 0, "scenario"),
    "const_decl": ("constant", 0, "value"),
    "prerequisite_decl": ("prerequisite", 0, "check"),
    "criterion": ("re-enable criterion", 0, "met"),
    "roles_decl": ("role", -1, "role"),
}


_BLOCKS = {"start", "workflow", "action_decl", "stop_decl", "resume_decl"}


def reserved_names(tree, src: SourceFile, keywords: list[str]) -> list[Diagnostic]:
    """A keyword used as the name of a rule, an action type, a trigger, a scenario, a
    constant, a prerequisite, a criterion or a role is refused: keywords are reserved
    (docs/language.md), even where the parser could tell them apart."""
    reserved = set(keywords)
    out: list[Diagnostic] = []
    stack = [tree]
    while stack:  # only the blocks that hold declarations: a few nodes per rule
        node = stack.pop()
        if node.data in _BLOCKS:
            stack.extend(c for c in node.children if getattr(c, "data", None) in _BLOCKS or
                         getattr(c, "data", None) in _NAMED)
        if node.data not in _NAMED:
            continue
        kind, at, suffix = _NAMED[node.data]
        toks = node.children[0].children if at < 0 else node.children[at : at + 1]
        for tok in toks:
            if tok is None or getattr(tok, "type", None) != "NAME" or str(tok) not in reserved:
                continue
            word = str(tok)
            out.append(
                Diagnostic(
                    "E001",
                    "error",
                    f"`{word}` is a reserved word and cannot name {'an' if kind[0] in 'aeiou' else 'a'} {kind}",
                    src.span(tok.start_pos, tok.end_pos),
                    label="reserved word",
                    help=f"rename the {kind}, e.g. `{word}_{suffix}`: keywords of the language cannot be names",
                )
            )
    return sorted(out, key=Diagnostic.sort_key)
