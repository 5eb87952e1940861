"""Acknowledged warnings: `# stopline: acknowledge W202 -- reason`.

A policy owner who has considered a warning and accepts it says so in a comment, with the
reason, next to the declaration it is about:

    # stopline: acknowledge W202 -- small refunds are refunded again by hand if disputed
    allow small_refund when `action.amount <= policy.auto_refund_limit`

- Spelling: `#`, optional spaces, `stopline:` (lowercase), the verb `acknowledge`, one or
  more warning codes separated by commas, then ` -- ` and the reason (required).
- Scope: the declaration the directive is attached to (a workflow, an action type, a gate
  rule, a stop trigger or a rollback scenario), whole: a warning of a named code whose
  position falls anywhere inside that declaration's text is acknowledged. The directive
  is attached
  - on a line of its own: to the declaration that begins on the next line holding code;
    other comment lines may sit between the two, a blank line may not;
  - at the end of a line: to the outermost declaration that begins on that line;
  - on a line of its own inside a rule written over several lines: to that rule (where
    `stopline fmt` moves such a comment).
  A directive attached to nothing acknowledges nothing (W215).
- Nested scopes: a warning is acknowledged by the innermost directive naming its code (a
  directive on a rule before one on its action type); an outer directive that so
  acknowledges nothing is stale (W215).
- Problems, each at the directive with a caret: no reason (W214); a code that is no
  warning's (W216; a directive's own codes W214-W216 cannot be acknowledged either); an
  error's code (E139: errors never widen permission); a verb other than `acknowledge`
  (W216). A directive with any of these acknowledges nothing. A directive that acknowledges
  nothing where it stands (the warning no longer fires there) is W215, reported only when
  the policy set has no error (an error can keep a lint from running).

Acknowledged warnings leave the diagnostics (`LoadResult.diagnostics`, and so `check
--strict` and `Engine.diagnostics`) for `LoadResult.acknowledged`, each with its reason
and the directive's place. Comments are no part of the policy hash: acknowledging a
warning never changes a decision or the hash that signs it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..diagnostics import CODES, Acknowledged, Diagnostic, did_you_mean
from ..source import SourceFile, Span

#: what a file must contain for its comments to be read for directives (a cheap first test)
MARKER = "stopline:"
VERB = "acknowledge"
#: the codes about directives themselves: never acknowledged
DIRECTIVE_CODES = frozenset({"W214", "W215", "W216", "E139"})
#: the warnings a directive may name
ACKNOWLEDGEABLE = tuple(sorted(c for c in CODES if c.startswith("W") and c not in DIRECTIVE_CODES))
#: the declarations a directive attaches to: parse-tree rule -> what messages call it
SCOPES = {
    "workflow": "workflow",
    "action_decl": "action type",
    "gate_rule": "rule",
    "stop_decl": "stop trigger",
    "rollback_decl": "rollback scenario",
}
_DESCEND = frozenset({"start", "workflow", "action_decl"})  # where declarations nest
_HEAD = re.compile(r"#[ \t]*stopline:")
_WORD = re.compile(r"[ \t]*(\S*)")
_FORM = "`# stopline: acknowledge W202 -- <why the warning is accepted here>`"


@dataclass(frozen=True)
class Decl:
    """A declaration a directive can attach to: its kind, how messages name it, its text."""

    kind: str
    what: str  # `rule `small_refund``
    start: int
    end: int
    line: int


@dataclass
class Directive:
    """One `# stopline: acknowledge ...` comment."""

    src: SourceFile
    span: Span  # the whole comment
    codes: list[tuple[str, Span]] = field(default_factory=list)
    reason: str | None = None
    target: Decl | None = None
    valid: bool = True  # False: malformed, acknowledges nothing (its problem is reported)
    used: dict[str, Span] = field(default_factory=dict)  # code -> a warning it acknowledged

    def names(self) -> set[str]:
        return {c for c, _ in self.codes}


@dataclass
class Collected:
    directives: list[Directive] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)


def has_directives(src: SourceFile) -> bool:
    return MARKER in src.text


# ---------------------------------------------------------------- declarations
def declarations(tree: Any, src: SourceFile) -> list[Decl]:
    """Every workflow, action type, gate rule, stop trigger and rollback scenario of a
    file's parse tree, with the range of its text."""
    out: list[Decl] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        data = getattr(node, "data", None)
        if data is None:
            continue
        if data in SCOPES:
            meta = node.meta
            if not getattr(meta, "empty", True):
                out.append(Decl(data, _describe(node, data), meta.start_pos, meta.end_pos, meta.line))
        if data in _DESCEND:
            stack.extend(c for c in node.children if c is not None and hasattr(c, "data"))
    out.sort(key=lambda d: (d.start, -d.end))
    return out


def _describe(node: Any, data: str) -> str:
    first = node.children[0] if node.children else None
    if data == "workflow":
        return f"workflow `{str(first).strip(chr(34))}`"
    if data == "gate_rule":
        effect, name = node.children[0], node.children[1]
        if name is not None:
            return f"rule `{name}`"
        return f"the `{effect}` rule on line {node.meta.line}"
    return f"{SCOPES[data]} `{first}`"


# ---------------------------------------------------------------- reading the directives
def collect(src: SourceFile, tree: Any) -> Collected:
    """The directives of one parsed file, attached to their declarations, and the
    problems of their form and place (W214, W215 misplaced, W216, E139)."""
    from .parser import comments_of

    out = Collected()
    decls: list[Decl] | None = None
    for start, end, text in comments_of(src):
        m = _HEAD.match(text)
        if m is None:
            continue
        if decls is None:
            decls = declarations(tree, src)
        d = _read(src, start, end, text, m.end(), out.diagnostics)
        if d is None:
            continue
        d.target = _attach(src, start, decls)
        if d.target is None:
            out.diagnostics.append(Diagnostic(
                "W215", "warning",
                "this acknowledgement is attached to no declaration: it acknowledges nothing",
                d.span,
                label="attached to nothing",
                help="put it on the line directly above the declaration (comment lines may sit between, a "
                     "blank line may not), or at the end of the declaration's first line",
                notes=("an acknowledgement applies to a workflow, an action type, a rule, a stop trigger or a "
                       "rollback scenario: to all of its text",),
            ))
            d.valid = False
        out.directives.append(d)
    return out


def _read(src: SourceFile, start: int, end: int, text: str, head: int,
          diags: list[Diagnostic]) -> Directive | None:
    """Parse one directive comment (`text` from `#`; `head`: just past `stopline:`)."""
    whole = src.span(start, end)
    verb = _WORD.match(text, head)
    assert verb is not None  # `\S*` matches the empty string
    word = verb[1]
    if word != VERB:
        vs, ve = start + verb.start(1), start + verb.end(1)
        shown = f"`{word}`" if word else "nothing"
        diags.append(Diagnostic(
            "W216", "warning",
            f"unknown directive {shown} after `stopline:`: this comment acknowledges nothing",
            src.span(vs, ve) if word else whole,
            label=f"expected `{VERB}`",
            help=f"to acknowledge a warning, write {_FORM}",
            notes=("a comment that starts with `stopline:` is read as a directive",),
        ))
        return None
    d = Directive(src, whole)
    body_at = verb.end(1)
    sep = text.find("--", body_at)
    codes_end = len(text) if sep == -1 else sep
    if sep != -1 and text[sep + 2:].strip():
        d.reason = " ".join(text[sep + 2:].split())
    # the codes: comma-separated items between the verb and `--`
    pos = body_at
    for item in text[body_at:codes_end].split(","):
        s = pos + len(item) - len(item.lstrip())
        e = pos + len(item.rstrip())
        pos += len(item) + 1
        if s >= e:
            continue  # an empty item (`W202,` or `W202,,W203`)
        code = text[s:e]
        at = src.span(start + s, start + e)
        if code in d.names():
            continue
        if not _code_ok(code, at, diags):
            d.valid = False
        d.codes.append((code, at))
    if not d.codes:
        diags.append(Diagnostic(
            "W216", "warning",
            "this acknowledgement names no warning code: it acknowledges nothing",
            src.span(start + verb.start(1), start + verb.end(1)),
            label="which warning?",
            help=f"name the code `stopline check` prints in brackets: {_FORM}",
        ))
        d.valid = False
    if d.reason is None:
        named = ", ".join(c for c, _ in d.codes) or "W202"
        diags.append(Diagnostic(
            "W214", "warning",
            "acknowledgement without a reason: it acknowledges nothing",
            whole,
            label="no ` -- <reason>`" if sep == -1 else "nothing after `--`",
            help=f"say why the warning is accepted here: `# stopline: {VERB} {named} -- <reason>`",
            notes=("whoever reads the policy next sees the reason; `stopline check --show-acknowledged` "
                   "lists each acknowledged warning with it",),
        ))
        d.valid = False
    return d


def _code_ok(code: str, at: Span, diags: list[Diagnostic]) -> bool:
    if code in CODES and code.startswith("E"):
        diags.append(Diagnostic(
            "E139", "error",
            f"an error cannot be acknowledged: `{code}` ({CODES[code]})",
            at,
            label="an error code",
            help="fix the error: only warnings (`W...`) can be acknowledged, an error never is",
            notes=("errors never widen permission: a policy set with an error does not load",),
        ))
        return False
    if code in DIRECTIVE_CODES:
        diags.append(Diagnostic(
            "W216", "warning",
            f"`{code}` is about acknowledgements themselves and cannot be acknowledged",
            at,
            label="cannot be acknowledged",
            help=f"fix the directive that `{code}` points at, or remove it: only the warnings of the policy "
                 "itself can be acknowledged",
        ))
        return False
    if code in ACKNOWLEDGEABLE:
        return True
    words = code.split()
    if len(words) > 1 and all(w in CODES for w in words):
        help_ = f"separate the codes with commas: `{', '.join(words)}`"
    else:
        # a well-formed code no warning has is no typo to guess at (`W299`); a malformed one may be (`w202`, `W2O2`)
        guess = None if re.fullmatch(r"[EWT]\d{3}", code) else _guess(code)
        help_ = guess or ("name the code `stopline check` prints in brackets (`warning[W202]`); every code is "
                          "listed in docs/diagnostics.md")
    diags.append(Diagnostic(
        "W216", "warning",
        f"`{code}` is not a warning code: this acknowledgement acknowledges nothing",
        at,
        label="unknown code",
        help=help_,
    ))
    return False


_LOOKALIKE_DIGITS = str.maketrans("OIL", "011")


def _guess(code: str) -> str | None:
    """`did you mean` for a malformed code: `w202`, `W2O2` (a letter for a digit), else the nearest."""
    fixed = code[:1].upper() + code[1:].upper().translate(_LOOKALIKE_DIGITS)
    if fixed in ACKNOWLEDGEABLE:
        return f"did you mean `{fixed}`?"
    return did_you_mean(code, ACKNOWLEDGEABLE)


def _attach(src: SourceFile, at: int, decls: Sequence[Decl]) -> Decl | None:
    """The declaration a directive comment starting at offset `at` is attached to."""
    text = src.text
    ls = text.rfind("\n", 0, at) + 1
    line, _ = src.line_col(at)
    if text[ls:at].strip():  # after code: the outermost declaration that begins on this line
        return next((d for d in decls if d.line == line and d.start < at), None)
    pos = text.find("\n", at)
    while pos != -1:  # on a line of its own: the next line holding code, past comment lines
        nxt = text.find("\n", pos + 1)
        row = text[pos + 1: len(text) if nxt == -1 else nxt]
        stripped = row.lstrip()
        if not stripped:
            break  # a blank line (or the end of the file): attached to nothing
        if stripped.startswith("#"):
            pos = nxt
            continue
        code_at = pos + 1 + len(row) - len(stripped)
        found = next((d for d in decls if d.start == code_at), None)
        if found is not None:
            return found
        break
    # inside a rule written over several lines: `stopline fmt` puts the comment above it
    inner = [d for d in decls if d.kind == "gate_rule" and d.start < at < d.end]
    return inner[-1] if inner else None


# ---------------------------------------------------------------- applying them
def apply(diags: Sequence[Diagnostic], found: Iterable[Collected]) -> tuple[list[Diagnostic], list[Acknowledged]]:
    """Split `diags` into what is still reported and what the directives acknowledge; add
    the directives' own problems, and W215 for each stale code when no error is reported."""
    directives: list[Directive] = []
    kept: list[Diagnostic] = []
    for c in found:
        directives.extend(c.directives)
        kept.extend(c.diagnostics)
    live = [d for d in directives if d.valid and d.target is not None]
    by_path: dict[str, list[Directive]] = {}
    for d in live:
        by_path.setdefault(d.src.path, []).append(d)
    acknowledged: list[Acknowledged] = []
    for diag in diags:
        own = by_path.get(diag.span.path)
        hit = _innermost(own, diag) if own and diag.severity == "warning" else None
        if hit is None:
            kept.append(diag)
            continue
        hit.used.setdefault(diag.code, diag.span)
        assert hit.reason is not None  # (a directive without one is not live)
        acknowledged.append(Acknowledged(diag, hit.reason, hit.span))
    if not any(x.severity == "error" for x in [*diags, *kept]):
        for d in live:
            kept.extend(_stale(d, directives))
    return kept, acknowledged


def _innermost(directives: list[Directive], diag: Diagnostic) -> Directive | None:
    """The directive on the narrowest declaration holding `diag` that names its code (the
    first written, between two on the same declaration)."""
    best: Directive | None = None
    best_size = 0
    for d in directives:
        t = d.target
        assert t is not None  # (only attached directives are live)
        if not (t.start <= diag.span.start < t.end) or diag.code not in d.names():
            continue
        if best is None or t.end - t.start < best_size:
            best, best_size = d, t.end - t.start
    return best


def _stale(d: Directive, directives: Sequence[Directive]) -> list[Diagnostic]:
    """W215 for the codes of `d` that acknowledged nothing: one for the whole directive when
    none of its codes did, else one on each stale code."""
    t = d.target
    assert t is not None
    out: list[Diagnostic] = []
    unused = [(code, at) for code, at in d.codes if code not in d.used]
    lone: list[tuple[str, Span]] = []
    for code, at in unused:
        other = next((o for o in directives if o is not d and code in o.used
                      and t.start <= o.used[code].start < t.end), None)
        if other is None:
            lone.append((code, at))
            continue
        ot = other.target
        where = "on the same declaration" if ot is t or ot is None else f"on {ot.what}"
        out.append(Diagnostic(
            "W215", "warning",
            f"`{code}` in {t.what} is acknowledged by another directive: this one acknowledges nothing",
            at, label="acknowledges nothing",
            help=f"the directive at {other.span} ({where}) acknowledges it; remove `{code}` here",
        ))
    if len(lone) > 1 and len(lone) == len(d.codes):
        named = " or ".join(", ".join(c for c, _ in lone).rsplit(", ", 1))
        first, last = lone[0][1], lone[-1][1]
        out.append(Diagnostic(
            "W215", "warning",
            f"stale acknowledgement: no {named} is reported in {t.what}",
            d.src.span(first.start, last.end), label="acknowledges nothing",
            help="remove the directive (the warnings no longer fire here)",
        ))
        return out
    for code, at in lone:
        rest = len(d.codes) > 1
        out.append(Diagnostic(
            "W215", "warning",
            f"stale acknowledgement: no {code} is reported in {t.what}",
            at, label="acknowledges nothing",
            help=(f"remove `{code}` from the directive" if rest else "remove the directive")
            + " (the warning no longer fires here)",
        ))
    return out
