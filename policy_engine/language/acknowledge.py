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
  - at the end of a line: to the outermost declaration that begins on that line, else
    to the rule written over several lines whose text that line holds (where `stopline
    fmt`, joining the rule onto one line, leaves it trailing the rule), else to the block
    whose header (written over several lines) it is inside (fmt moves it above the block),
    else to the block whose `{` is on that line, right before it or before the `}` that
    closes the block on that line, or to the empty block whose `}` is right before it
    (fmt keeps it on the block's header line);
  - on a line of its own inside a rule written over several lines, or inside the header
    of a block written over several lines (between `action send_reply` and its `{`): to
    that rule or block (where `stopline fmt` moves such a comment).
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

The cost is linear in the file's length and the number of warnings: each directive is
attached with an index of the file's lines and declarations built once, each warning is
matched through the few declarations enclosing it, and a directive reports at most
:data:`MAX_CODE_PROBLEMS` problems with its codes (a 1 MB file of directives is checked
in about a second, not minutes).

Text of a comment shown in a message or as a reason (a code, a verb, the reason itself)
is printable: control and format characters (terminal escapes) become U+FFFD, as the
source lines of every diagnostic do.

Acknowledged warnings leave the diagnostics (`LoadResult.diagnostics`, and so `check
--strict` and `Engine.diagnostics`) for `LoadResult.acknowledged`, each with its reason
and the directive's place. Comments are no part of the policy hash: acknowledging a
warning never changes a decision or the hash that signs it.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..diagnostics import CODES, Acknowledged, Diagnostic, _printable, did_you_mean
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
#: problems with the codes of one directive reported at most (it acknowledges nothing after the first anyway)
MAX_CODE_PROBLEMS = 5
_SHOWN = 60  # characters of a comment's word shown in a message at most


@dataclass(frozen=True)
class Decl:
    """A declaration a directive can attach to: its kind, how messages name it, its text."""

    kind: str
    what: str  # `rule `small_refund``
    start: int
    end: int
    line: int
    #: where its header ends: the offset of its `{` (a block), its start (a gate rule, whose
    #: whole text is its header: see `_Places._rule_around`)
    head_end: int = -1


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
    decls: list[Decl] = field(default_factory=list)  #: the file's declarations (in `declarations` order)


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
                head = meta.start_pos
                if data != "gate_rule" and node.children and hasattr(node.children[0], "end_pos"):
                    head = _brace(src.text, node.children[0].end_pos, meta.end_pos)
                out.append(Decl(data, _describe(node, data), meta.start_pos, meta.end_pos, meta.line, head))
        if data in _DESCEND:
            stack.extend(c for c in node.children if c is not None and hasattr(c, "data"))
    out.sort(key=lambda d: (d.start, -d.end))
    return out


def _brace(text: str, pos: int, end: int) -> int:
    """The offset of the `{` that opens a block whose name ends at `pos`: only blanks and
    comments stand between the two."""
    while pos < end:
        c = text[pos]
        if c == "{":
            return pos
        if c == "#":
            j = text.find("\n", pos)
            pos = end if j == -1 else j
        else:
            pos += 1
    return end


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
    places: _Places | None = None
    for start, end, text in comments_of(src):
        m = _HEAD.match(text)
        if m is None:
            continue
        if places is None:  # (built once, for the file's first directive)
            out.decls = declarations(tree, src)
            places = _Places(src, out.decls)
        d = _read(src, start, end, text, m.end(), out.diagnostics)
        if d is None:
            continue
        d.target = places.attach(start)
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


def _shown(word: str) -> str:
    """A word of a comment as a message may show it: printable, and not a whole line."""
    word = _printable(word)
    return word if len(word) <= _SHOWN else word[: _SHOWN - 3] + "..."


def _read(src: SourceFile, start: int, end: int, text: str, head: int,
          diags: list[Diagnostic]) -> Directive | None:
    """Parse one directive comment (`text` from `#`; `head`: just past `stopline:`)."""
    whole = src.span(start, end)
    verb = _WORD.match(text, head)
    assert verb is not None  # `\S*` matches the empty string
    word = verb[1]
    if word != VERB:
        vs, ve = start + verb.start(1), start + verb.end(1)
        shown = f"`{_shown(word)}`" if word else "nothing"
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
        # (printable: a reason is printed by `check --show-acknowledged`; a terminal escape in it is not obeyed)
        d.reason = _printable(" ".join(text[sep + 2:].split()))
    # the codes: comma-separated items between the verb and `--`
    pos = body_at
    seen: set[str] = set()
    problems = 0
    for item in text[body_at:codes_end].split(","):
        s = pos + len(item) - len(item.lstrip())
        e = pos + len(item.rstrip())
        pos += len(item) + 1
        if s >= e:
            continue  # an empty item (`W202,` or `W202,,W203`)
        code = text[s:e]
        if code in seen:
            continue
        seen.add(code)
        at = src.span(start + s, start + e)
        if problems >= MAX_CODE_PROBLEMS:  # (already acknowledges nothing: the rest are not reported one by one)
            d.codes.append((code, at))
            continue
        if not _code_ok(code, at, diags):
            d.valid = False
            problems += 1
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
        named = ", ".join(_shown(c) for c, _ in d.codes[:MAX_CODE_PROBLEMS]) or "W202"
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
        help_ = f"separate the codes with commas: `{', '.join(words[:MAX_CODE_PROBLEMS])}`"
    else:
        # a well-formed code no warning has is no typo to guess at (`W299`); a malformed one may be (`w202`, `W2O2`)
        guess = None if re.fullmatch(r"[EWT]\d{3}", code) else _guess(code)
        help_ = guess or ("name the code `stopline check` prints in brackets (`warning[W202]`); every code is "
                          "listed in docs/diagnostics.md")
    diags.append(Diagnostic(
        "W216", "warning",
        f"`{_shown(code)}` is not a warning code: this acknowledgement acknowledges nothing",
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


class _Places:
    """Where the directives of one file attach: an index of its lines and declarations,
    built once (linear in the file), so attaching each directive costs O(log n)."""

    def __init__(self, src: SourceFile, decls: Sequence[Decl]) -> None:
        text = src.text
        self.text = text
        self.line_starts: list[int] = [0]
        i = text.find("\n")
        while i != -1:
            self.line_starts.append(i + 1)
            i = text.find("\n", i + 1)
        self.by_start: dict[int, Decl] = {}  # offset -> the outermost declaration that begins there
        self.by_line: dict[int, list[Decl]] = {}  # line -> the declarations beginning on it, outermost first
        for d in decls:
            self.by_start.setdefault(d.start, d)
            self.by_line.setdefault(d.line, []).append(d)
        self.rules = sorted((d for d in decls if d.kind == "gate_rule"), key=lambda d: d.start)
        self.rule_starts = [d.start for d in self.rules]
        self.blocks = sorted((d for d in decls if d.kind != "gate_rule"), key=lambda d: d.start)
        self.block_starts = [d.start for d in self.blocks]
        self.block_braces = [d.head_end for d in self.blocks]  # (in the same order: a block's `{` precedes its own)
        self.by_end = {d.end: d for d in self.blocks}
        self._ahead: list[int | None] | None = None

    def _code_ahead(self) -> list[int | None]:
        """Per line index: the offset of the code on the first line from there on that holds
        code, when only comment lines come before it; None when a blank line (or the end
        of the file) comes first. One pass from the end of the file."""
        if self._ahead is None:
            text, starts = self.text, self.line_starts
            n = len(starts)
            ahead: list[int | None] = [None] * (n + 1)
            for k in range(n - 1, -1, -1):
                ls = starts[k]
                le = starts[k + 1] - 1 if k + 1 < n else len(text)
                row = text[ls:le]
                stripped = row.lstrip()
                if not stripped:
                    ahead[k] = None
                elif stripped.startswith("#"):
                    ahead[k] = ahead[k + 1]
                else:
                    ahead[k] = ls + len(row) - len(stripped)
            self._ahead = ahead
        return self._ahead

    def _rule_around(self, at: int) -> Decl | None:
        """The gate rule whose text holds offset `at` (rules do not nest)."""
        i = bisect.bisect_left(self.rule_starts, at) - 1
        if i >= 0 and self.rules[i].start < at < self.rules[i].end:
            return self.rules[i]
        return None

    def _header_around(self, at: int) -> Decl | None:
        """The block declaration whose header (`action send_reply`, up to its `{`) holds offset
        `at`. Headers do not overlap: the one that began last before `at` is the only candidate."""
        i = bisect.bisect_left(self.block_starts, at) - 1
        if i >= 0 and self.blocks[i].start < at < self.blocks[i].head_end:
            return self.blocks[i]
        return None

    def _brace_line(self, ls: int, at: int) -> Decl | None:
        """The block whose `{` stands on the line starting at `ls`, when the comment at `at`
        follows that `{` directly, or follows the `}` that closes the block on the same line
        (a block written on one line): where `stopline fmt` keeps such a comment, on the
        block's header line."""
        i = bisect.bisect_left(self.block_braces, at) - 1
        text = self.text
        while i >= 0 and self.block_braces[i] >= ls:
            b = self.blocks[i]
            brace = self.block_braces[i]
            if not text[brace + 1 : at].strip():
                return b
            if b.end <= at and not text[b.end : at].strip() and "\n" not in text[brace : b.end]:
                return b
            i -= 1
        # an empty block closed on this line (`action b {` and `}` below it): fmt prints it
        # `action b {}`, and the comment after it on that line
        close = len(text[:at].rstrip()) - 1
        empty = self.by_end.get(close + 1)
        if empty is not None and close >= ls and text[close] == "}" and not text[empty.head_end + 1 : close].strip():
            return empty
        return None

    def attach(self, at: int) -> Decl | None:
        """The declaration a directive comment starting at offset `at` is attached to."""
        k = bisect.bisect_right(self.line_starts, at) - 1  # the comment's line (0-based)
        ls = self.line_starts[k]
        if self.text[ls:at].strip():
            # after code: the outermost declaration that begins on this line
            found = next((d for d in self.by_line.get(k + 1, ()) if d.start < at), None)
            if found is not None:
                return found
            # else a line of a rule written over several lines (`stopline fmt`, joining it onto
            # one line, leaves the comment trailing the rule)
            rule = self._rule_around(ls)
            if rule is not None and rule.start < ls:
                return rule
            # else a line of the header of a block written over several lines (`stopline fmt`
            # puts the comment above the block), or the line of a block's `{` (`action a` and
            # `{` below it: fmt puts the `{`, and the comment after it, on the header line)
            return self._header_around(at) or self._brace_line(ls, at)
        # on a line of its own: the next line holding code, past comment lines
        code_at = self._code_ahead()[k + 1] if k + 1 < len(self.line_starts) else None
        if code_at is not None:
            found = self.by_start.get(code_at)
            if found is not None:
                return found
        # inside a rule written over several lines, or inside the header of a block written
        # over several lines (`action send_reply` and its `{` on different lines): `stopline
        # fmt` puts the comment above it, where it is attached to it
        return self._rule_around(at) or self._header_around(at)


# ---------------------------------------------------------------- applying them
class _Enclosing:
    """The declarations of one file with each one's parent, and the directive that
    acknowledges each (declaration, code): a warning's directive is found by walking from
    the innermost declaration holding it outwards (a few steps: declarations nest a few
    deep), not by trying every directive."""

    def __init__(self, decls: Sequence[Decl]) -> None:
        self.decls = list(decls)  # sorted by (start, -end): an enclosing declaration first
        self.starts = [d.start for d in self.decls]
        self.index = {id(d): i for i, d in enumerate(self.decls)}
        self.parent: list[int] = []
        stack: list[int] = []
        for i, d in enumerate(self.decls):
            while stack and self.decls[stack[-1]].end <= d.start:
                stack.pop()
            self.parent.append(stack[-1] if stack else -1)
            stack.append(i)
        self.first: dict[tuple[int, str], Directive] = {}  # (declaration, code) -> the first directive naming it

    def add(self, d: Directive) -> None:
        assert d.target is not None
        i = self.index.get(id(d.target))
        if i is None:  # (a declaration of another file: not reachable from this file's warnings)
            return
        for code in d.names():
            self.first.setdefault((i, code), d)

    def innermost(self, diag: Diagnostic) -> tuple[Directive, int] | None:
        """The directive on the narrowest declaration holding `diag` that names its code
        (the first written, between two on the same declaration), with that declaration's size."""
        p = diag.span.start
        i = bisect.bisect_right(self.starts, p) - 1
        while i >= 0:
            t = self.decls[i]
            if t.start <= p < t.end:
                hit = self.first.get((i, diag.code))
                if hit is not None:
                    return hit, t.end - t.start
            i = self.parent[i]
        return None


def apply(diags: Sequence[Diagnostic], found: Iterable[Collected]) -> tuple[list[Diagnostic], list[Acknowledged]]:
    """Split `diags` into what is still reported and what the directives acknowledge; add
    the directives' own problems, and W215 for each stale code when no error is reported."""
    directives: list[Directive] = []
    kept: list[Diagnostic] = []
    by_path: dict[str, list[_Enclosing]] = {}
    live: list[Directive] = []
    for c in found:
        directives.extend(c.directives)
        kept.extend(c.diagnostics)
        mine = [d for d in c.directives if d.valid and d.target is not None]
        if not mine:
            continue
        live.extend(mine)
        index = _Enclosing(c.decls)
        for d in mine:
            index.add(d)
        by_path.setdefault(mine[0].src.path, []).append(index)
    acknowledged: list[Acknowledged] = []
    for diag in diags:
        hit = _innermost(by_path.get(diag.span.path), diag) if diag.severity == "warning" else None
        if hit is None:
            kept.append(diag)
            continue
        hit.used.setdefault(diag.code, diag.span)
        assert hit.reason is not None  # (a directive without one is not live)
        acknowledged.append(Acknowledged(diag, hit.reason, hit.span))
    if not any(x.severity == "error" for x in [*diags, *kept]):
        used = _Used(live)
        for d in live:
            kept.extend(_stale(d, used))
    return kept, acknowledged


def _innermost(indexes: list[_Enclosing] | None, diag: Diagnostic) -> Directive | None:
    best: tuple[Directive, int] | None = None
    for index in indexes or ():
        hit = index.innermost(diag)
        if hit is not None and (best is None or hit[1] < best[1]):
            best = hit
    return None if best is None else best[0]


class _Used:
    """Where each code was acknowledged, per file, in offset order: which directive
    acknowledged a code inside a declaration is a binary search."""

    def __init__(self, directives: Iterable[Directive]) -> None:
        at: dict[tuple[str, str], list[tuple[int, int, Directive]]] = {}
        for n, d in enumerate(directives):
            for code, span in d.used.items():
                at.setdefault((span.path, code), []).append((span.start, n, d))
        for v in at.values():
            v.sort(key=lambda x: (x[0], x[1]))
        self._at = {k: ([s for s, _, _ in v], [d for _, _, d in v]) for k, v in at.items()}

    def within(self, path: str, code: str, start: int, end: int, not_: Directive) -> Directive | None:
        """A directive other than `not_` that acknowledged `code` at an offset in [start, end) of `path`."""
        found = self._at.get((path, code))
        if found is None:
            return None
        starts, ds = found
        i = bisect.bisect_left(starts, start)
        while i < len(starts) and starts[i] < end:
            if ds[i] is not not_:
                return ds[i]
            i += 1
        return None


def _stale(d: Directive, used: _Used) -> list[Diagnostic]:
    """W215 for the codes of `d` that acknowledged nothing: one for the whole directive when
    none of its codes did, else one on each stale code."""
    t = d.target
    assert t is not None
    out: list[Diagnostic] = []
    unused = [(code, at) for code, at in d.codes if code not in d.used]
    lone: list[tuple[str, Span]] = []
    for code, at in unused:
        other = used.within(d.src.path, code, t.start, t.end, d)
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
