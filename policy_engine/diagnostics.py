"""Diagnostics: stable codes, located messages, rendering. Depends only on source.py."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from .source import SourceFile, Span

Severity = Literal["error", "warning"]

# Codes never change meaning once released. Keep this table in sync with
# docs/diagnostics.md, section "Every code".
CODES: dict[str, str] = {
    # input and syntax
    "E001": "syntax error: unexpected token",
    "E002": "syntax error: unexpected character",
    "E003": "syntax error: unexpected end of file",
    "E004": "unreadable policy file (not a file, not UTF-8, or contains NUL bytes)",
    "E005": "limit exceeded (file size, nesting depth, expression length, number of rules)",
    "E006": "no policy files found",
    # CEL
    "E101": "CEL syntax error in a condition",
    # unknown names and values
    "E102": "unknown effect",
    "E103": "unknown reversibility class",
    "E104": "unknown severity",
    "E105": "unknown owner kind",
    "E106": "unknown default effect",
    "E107": "default effect `allow` is refused",
    "E108": "invalid number, duration or count",
    "E109": "unknown function or literal in a condition",
    "E110": "unknown role",
    "E111": "unknown action type",
    "E112": "invalid `distinct from` reference",
    "E113": "variable not in scope",
    "E114": "unknown constant",
    "E115": "unknown field (not declared in `fields` or `evidence`)",
    "E116": "type mismatch with a declared field",
    "E117": "unknown or malformed field type",
    "E118": "unknown cost unit",
    "E119": "field declarations cannot be imported from a JSON Schema file",
    # duplicates and structure
    "E120": "duplicate name",
    "E121": "statement given twice",
    "E130": "stop trigger without owner",
    "E131": "stop trigger without re-enable criteria",
    "E132": "stop trigger without condition",
    "E133": "reversal window on an irreversible action",
    "E134": "workflow without required declaration",
    "E135": "rollback scenario without authorization",
    "E136": "reversible action without reversal method",
    "E137": "`require_approval` rule without approvers",
    "E138": "approvers on a rule that is not `require_approval`",
    "E139": "an error cannot be acknowledged",
    # warnings
    "W201": "cycle in the side-effect graph",
    "W202": "irreversible action allowed without approval",
    "W203": "duplicate identical rule",
    "W204": "action type without system",
    "W205": "workflow without a standard rollback scenario",
    "W206": "policy set without a workflow",
    "W207": "stop trigger reads a field some action types lack, unguarded",
    "W208": "`allow` rule reads an optional field without `has(...)`",
    "W209": "rule or stop trigger that can never match",
    "W210": "rule shadowed by a rule of higher precedence",
    "W211": "authorization no declared role can fill",
    "W212": "condition whose value is always an error",
    "W213": "re-enable criteria read undeclared evidence",
    # acknowledgements (`# stopline: acknowledge W202 -- reason`, language/acknowledge.py)
    "W214": "acknowledgement without a reason",
    "W215": "acknowledgement that acknowledges nothing",
    "W216": "malformed acknowledgement: unknown code or directive",
    # strings (language/lints.py)
    "W217": "invisible or control character in a string",
}


@dataclass(frozen=True)
class Diagnostic:
    code: str
    severity: Severity
    message: str
    span: Span
    label: str | None = None  # text printed after the caret
    help: str | None = None
    notes: tuple[str, ...] = ()

    def sort_key(self) -> tuple:
        return (self.span.path, self.span.start, self.span.end, self.code, self.message)

    def to_json(self) -> dict:
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            **self.span.to_json(),
            "label": self.label,
            "help": self.help,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Acknowledged:
    """A warning that a `# stopline: acknowledge CODE -- reason` directive accepts: left out
    of the diagnostics (so `check --strict` passes), kept here with the reason."""

    diagnostic: Diagnostic
    reason: str
    directive: Span  # where the directive is written

    def sort_key(self) -> tuple:
        return self.diagnostic.sort_key()

    def to_json(self) -> dict:
        return {**self.diagnostic.to_json(), "acknowledged": {"reason": self.reason, **self.directive.to_json()}}


class PolicyError(Exception):
    """Raised by `policy_engine.load` with every diagnostic of the policy set."""

    def __init__(self, diagnostics: Sequence[Diagnostic], sources: dict[str, SourceFile] | None = None):
        self.diagnostics = tuple(sort_diagnostics(diagnostics))
        self.sources = dict(sources or {})
        errors = [d for d in self.diagnostics if d.severity == "error"]
        first = errors[0] if errors else (self.diagnostics[0] if self.diagnostics else None)
        summary = _summary(first) if first else "policy error"
        more = len(errors) - 1
        super().__init__(summary + (f" (and {more} more)" if more > 0 else ""))

    def render(self, color: bool = False) -> str:
        return render_all(self.diagnostics, self.sources, color=color)


def _summary(d: Diagnostic) -> str:
    """`file:line:col: message`; with no position, `file: message`, or the message alone
    when it names the path already (`no such file or directory: policies/`)."""
    if not d.span.located and d.span.path in d.message:
        return d.message
    return f"{d.span}: {d.message}"


def sort_diagnostics(diags: Iterable[Diagnostic]) -> list[Diagnostic]:
    seen: set = set()
    out = []
    for d in sorted(diags, key=Diagnostic.sort_key):
        key = (d.code, d.span.path, d.span.start, d.span.end, d.message)
        if key in seen:
            continue
        seen.add(key)
        out.append(d)
    return out


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """A 'did you mean' help line from a fuzzy match, or None."""
    cands = sorted(set(candidates))
    if not cands:
        return None
    match = difflib.get_close_matches(word, cands, n=1, cutoff=0.6)
    if not match:
        lowered = {c.lower(): c for c in cands}
        if word.lower() in lowered:
            match = [lowered[word.lower()]]
    return f"did you mean `{match[0]}`?" if match else None


def one_of(names: Sequence[str]) -> str:
    quoted = [f"`{n}`" for n in names]
    if len(quoted) == 1:
        return quoted[0]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _printable(line: str) -> str:
    """The source line as it is safe to print: control and format characters (terminal
    escapes, bidi overrides) and line and paragraph separators (U+2028, U+2029: a terminal
    may break the line there) become U+FFFD, one for one, so the caret still lines up."""
    if line.isprintable():
        return line
    import unicodedata

    return "".join("\ufffd" if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in line)


def _width(text: str) -> int:
    """Terminal columns `text` takes: a wide or full-width character (CJK, most emoji) two,
    a non-spacing or enclosing mark none, any other one; so the caret sits under the
    offending text. A mark is told by its category (Mn, Me), not by its combining class:
    many marks have class 0 (Thai and Devanagari vowel signs, the variation selectors) and
    still take no column. The emoji variation selector U+FE0F widens a narrow symbol it
    follows (`❤️`, as terminals draw it) to two columns."""
    if text.isascii():
        return len(text)
    import unicodedata

    total = 0
    last, prev = 0, ""  # the last spacing character, and the columns it took
    for ch in text:
        if ch == "\ufe0f":
            if last == 1 and ord(prev) >= 0x2000:  # a symbol (`❤`, `☎`), not a letter or digit
                total += 1
                last = 2
            continue
        if unicodedata.category(ch) in ("Mn", "Me"):
            continue
        last = 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
        prev = ch
        total += last
    return total


_SEVERITY_COLOR = {"error": "1;31", "warning": "1;33", "acknowledged": "1;32"}


def render(d: Diagnostic, source: SourceFile | None, color: bool = False, *, kind: str | None = None) -> str:
    """Render one diagnostic in the house style (see STYLE.md). `kind` replaces the
    severity in the header (`acknowledged[W202]`)."""

    def c(code: str, s: str) -> str:
        return f"\x1b[{code}m{s}\x1b[0m" if color else s

    kind = kind or d.severity
    tint = _SEVERITY_COLOR.get(kind, "1;33")
    sev = c(tint, f"{kind}[{d.code}]")
    # what the policy's text or a file's name puts in a message (a workflow named
    # "\u001b[2J", a file named with a newline) is printed as the source line is: never a
    # terminal escape or a line break of its own
    lines = [f"{sev}{c('1', ': ' + _printable(d.message))}"]
    sp = d.span
    lineno = str(sp.line) if sp.located else " "
    pad = " " * len(lineno)
    # a span with no position (a missing path): the path alone, no line to show, no caret
    lines.append(f"{pad}{c('1;34', '-->')} {_printable(sp.path)}" + (f":{sp.line}:{sp.col}" if sp.located else ""))
    text = source.line_text(sp.line) if source is not None else ""
    if source is not None and sp.located:
        shown = _printable(text.replace("\t", " "))
        if len(shown) > 200:  # keep huge single-line files readable
            lo = max(0, sp.col - 80)
            shown = shown[lo : lo + 160]
            caret_col = sp.col - lo
        else:
            caret_col = sp.col
        width = 1
        if sp.end_line == sp.line and sp.end_col > sp.col:
            width = sp.end_col - sp.col
        elif sp.end_line > sp.line:
            width = max(1, len(text) - sp.col + 1)
        width = max(1, min(width, max(1, len(shown) - caret_col + 1)))
        bar = c("1;34", "|")
        lines.append(f"{pad} {bar}")
        lines.append(f"{c('1;34', lineno)} {bar} {shown}")
        lead = shown[: caret_col - 1]
        marker = " " * _width(lead) + "^" * max(1, _width(shown[caret_col - 1 : caret_col - 1 + width]))
        if d.label:
            marker += " " + _printable(d.label)
        lines.append(f"{pad} {bar} {c(tint, marker)}")
        lines.append(f"{pad} {bar}")
    if d.label and not sp.located:  # no caret to print it after: said as a note, not lost
        lines.append(f"{pad} = note: {_printable(d.label)}")
    for note in d.notes:
        lines.append(f"{pad} = note: {_printable(note)}")
    if d.help:
        lines.append(f"{pad} = help: {_printable(d.help)}")
    return "\n".join(lines)


def render_acknowledged(a: Acknowledged, source: SourceFile | None, color: bool = False) -> str:
    """An acknowledged warning: `acknowledged[W202]`, the diagnostic as it would have been
    reported, and a note with the directive's place and reason."""
    note = f"acknowledged at {a.directive}: {a.reason}"
    d = a.diagnostic
    return render(Diagnostic(d.code, d.severity, d.message, d.span, d.label, d.help, (*d.notes, note)), source,
                  color=color, kind="acknowledged")


def render_all(diags: Sequence[Diagnostic], sources: dict[str, SourceFile], color: bool = False,
               acknowledged: Sequence[Acknowledged] = (), show_acknowledged: bool = False) -> str:
    """Every diagnostic, then the count line (`2 errors, 1 warning found`). With
    `acknowledged`, the count line ends `, N acknowledged`; with `show_acknowledged` they
    are rendered too, in their place among the others."""
    items: list[tuple[tuple, str]] = [(d.sort_key(), render(d, sources.get(d.span.path), color=color)) for d in diags]
    if show_acknowledged:
        items += [(a.sort_key(), render_acknowledged(a, sources.get(a.diagnostic.span.path), color=color))
                  for a in acknowledged]
        items.sort(key=lambda it: it[0])
    parts = [text for _, text in items]
    errors = sum(1 for d in diags if d.severity == "error")
    warnings = len(diags) - errors
    tail = []
    if errors:
        tail.append(f"{errors} error{'s' if errors != 1 else ''}")
    if warnings:
        tail.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
    if tail:
        parts.append(", ".join(tail) + " found" + (f", {len(acknowledged)} acknowledged" if acknowledged else ""))
    return "\n\n".join(parts)
