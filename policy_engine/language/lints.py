"""Lints of `check --strict` that read a whole workflow, decidable cases only:

- W209: a gate rule or stop trigger that can never match: its condition is `false`
  whatever the action once the constants are folded, two of its `&&` operands bound the
  same field to an empty range (`action.amount > 500 && action.amount < 100`) or to two
  different values, or it asks for another action type (`action.type == "a"` in a rule
  of action type `b`, which only ever sees `b`). An `||` never matches when none of its
  alternatives can.
- W210: a gate rule shadowed by a rule of higher precedence of the same action type: both
  have the same condition (after normalising whitespace outside strings), or the other
  one is unconditional (its condition is `true` once the constants are folded). The
  shadowed rule can never decide.
- W211: an authorization (a rollback scenario's `authorize`, or a `require_approval`
  rule's `by`) that no declared role can fill: a slot `N of []` that names no role, or
  more approvals in all than the engine reads (`limits.MAX_APPROVALS`).
- W212: a condition whose value is an error whatever the input: it reads only constants
  and literals, and evaluating it fails (`policy.big + 1 > 0` with `big` the largest
  int, `1 / 0 == 1`, `timestamp('10000-01-01T00:00:00Z') < now` is not one: it reads
  `now`). Such a `deny`/`require_approval` rule matches every action, a stop trigger
  fires on every action, an `allow` rule never matches, a prerequisite or re-enable
  criterion is never met, and a duty's `when` always applies. The diagnostic names the
  error and points at the smallest part of the condition that fails.
- E116 (an error, not a lint): a condition whose type is known without declarations and
  is not a bool (`allow when `"yes"``, `1 + 2`, `size(x)`); check.py's type check
  reports it where the workflow declares its fields.
- W213: a stop trigger whose re-enable criteria read `evidence` without an `evidence { ... }`
  block: only a declared block checks the evidence's shape, so undeclared evidence is
  taken as given (`size(evidence.blocked_promises) > 0` holds for the string `"x"`, a map
  passes `k in evidence.kinds`). Reported once per trigger, at its first read of the
  evidence, naming every field read.

(W217, an invisible character typed into a string: invisible.py.)

Principals are not declared in a policy (they come from the caller's credential), so
whether enough people hold a role is not decidable here; a role no `roles [...]`
declares is already an error (E110).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..cel import parse as cel_parse  # (its `_parse` looked up at each call, as an import there did)
from ..limits import MAX_APPROVALS
from . import ir

if TYPE_CHECKING:
    from .check import Checker

PRECEDENCE = {"deny": 1, "require_approval": 2, "allow": 3}
_TOKENS = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|\s+|[A-Za-z0-9_]+|.', re.S)
_GAPS = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|\s+', re.S)  # `_TOKENS`' strings and spaces
_FREE_ROOTS = frozenset({"action", "workflow", "now", "original", "request", "evidence", "stop"})
_BOUNDS = {"relation_lt": "<", "relation_le": "<=", "relation_gt": ">", "relation_ge": ">="}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "=="}  # `5 < x` is `x > 5`; `5 == x` is `x == 5`


def normalise(source: str) -> str:
    """A condition's text with whitespace outside string literals reduced to what separates
    two words: `a>5` and `a  >  5` are the same condition.

    Read as tokens (`_TOKENS`: a string literal, a run of whitespace, a run of word
    characters, any other single character), it is the tokens without the whitespace, one
    space kept where whitespace separated two words (tokens starting with a letter, digit or
    `_`). Only strings and whitespace runs need finding (`_GAPS`): no other token holds a
    quote or whitespace, so each match starts where a token does; the tokens around a run
    are the characters on either side of it."""
    out: list[str] = []
    last = 0
    n = len(source)
    for m in _GAPS.finditer(source):
        s, e = m.span()
        if source[s] in "\"'":
            continue  # a string literal: kept as written
        out.append(source[last:s])
        if s > 0 and e < n:
            before, after = source[s - 1], source[e]
            if (before.isalnum() or before == "_") and (after.isalnum() or after == "_"):
                out.append(" ")
        last = e
    if not out:
        return source
    out.append(source[last:])
    return "".join(out)


@dataclass
class Never:
    """Why a condition can never hold: the node to point at, the message, label and help."""

    node: Any
    why: str
    label: str
    help: str
    at: tuple[int, int] | None = None  # where, when the node has no position (a keyword literal)


class _Analysis:
    """Never-match analysis of one condition's parse tree."""

    def __init__(self, source: str, consts: dict, own_type: str | None) -> None:
        from ..cel.typecheck import _Checker

        self.src = source
        self.tc = _Checker(source)  # its `path`, `str_lit` and `flatten` helpers
        self.consts = consts
        self.own_type = own_type

    def text(self, node: Any) -> str:
        if getattr(node, "data", None) == "literal":
            return str(node.children[0])
        return self.tc.text(node)

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def unwrap(n: Any) -> Any:
        from ..cel.typecheck import _kids, _unwrap

        while True:
            n = _unwrap(n)
            if getattr(n, "data", None) == "paren_expr" or (
                getattr(n, "data", None) == "expr" and len(_kids(n)) == 1
            ):
                n = _kids(n)[0]
                continue
            return n

    def free(self, n: Any) -> bool:
        """Whether the subtree names anything but `policy` (conservatively: any identifier)."""
        stack = [n]
        while stack:
            x = stack.pop()
            d = getattr(x, "data", None)
            if d is None:
                continue
            if d == "ident" and str(x.children[0]) != "policy":
                return True
            if d in ("member_dot_arg", "dot_ident", "dot_ident_arg"):
                return True  # method calls and macros (bound variables): not folded here
            stack.extend(c for c in x.children if c is not None)
        return False

    def constant(self, n: Any) -> Any:
        """The value of a subtree that reads only constants, or `...` when not known."""
        if self.free(n):
            return ...
        from ..cel import compile_cel

        if getattr(n, "data", None) == "literal":
            text = str(n.children[0])  # (a keyword literal's token may carry no position)
        else:
            s, e = self.tc.span(n)
            text = self.src[s:e]
        try:
            v = compile_cel(text, constants=self.consts, accelerate=False)(self.consts)
        except Exception:  # noqa: BLE001 - not a constant we can fold: say nothing
            return ...
        return v if type(v) in (bool, int, float, str) else ...

    def number(self, n: Any) -> Any:
        """An int/double literal or numeric constant (`policy.NAME`), else None."""
        n = self.unwrap(n)
        d = getattr(n, "data", None)
        if d == "literal":
            tok = n.children[0]
            try:
                if tok.type == "INT_LIT":
                    from ..cel.parse import _parse_int_lit

                    return _parse_int_lit(str(tok))
                if tok.type == "UINT_LIT":
                    return int(str(tok)[:-1], 0)
                if tok.type == "FLOAT_LIT":
                    return float(str(tok))
            except ValueError:
                return None
            return None
        p = self.tc.path(n)
        if p is not None and len(p) >= 2 and p[0] == "policy":
            v: Any = self.consts.get("policy", {})
            for k in p[1:]:
                if not isinstance(v, dict) or k not in v:
                    return None
                v = v[k]
            return v if type(v) in (int, float) else None
        return None

    def fact(self, n: Any) -> tuple[tuple[str, ...], str, Any] | None:
        """(field path, operator, value) of `path OP literal` (either way round)."""
        n = self.unwrap(n)
        if getattr(n, "data", None) != "relation" or len(n.children) != 2:
            return None
        opn, right = n.children
        op = getattr(opn, "data", None)
        if op not in _BOUNDS and op != "relation_eq":
            return None
        left = opn.children[0]
        for x, c, flip in ((left, right, False), (right, left, True)):
            p = self.tc.path(x)
            if p is None or p[0] not in _FREE_ROOTS or len(p) < 2:
                continue
            v = self.number(c)
            if v is None and op == "relation_eq":
                v = self.tc.str_lit(c)
            if v is None:
                continue
            sym = "==" if op == "relation_eq" else _BOUNDS[op]
            return p, (_FLIP[sym] if flip else sym), v
        return None

    # ---------------------------------------------------------------- the analysis
    def never(self, n: Any) -> Never | None:
        n = self.unwrap(n)
        d = getattr(n, "data", None)
        if d == "conditionalor" and len(n.children) == 2:
            alts = self.tc.flatten(n, "conditionalor")
            found = [self.never(a) for a in alts]
            if all(f is not None for f in found):
                first = found[0]
                assert first is not None
                return Never(None, "none of the alternatives of `||` can hold", "never true", first.help)
            return None
        if d == "conditionaland" and len(n.children) == 2:
            ops = self.tc.flatten(n, "conditionaland")
            prev_end = 0
            for x in ops:
                f = self.never(x)
                u = self.unwrap(x)
                tok = u.children[0] if getattr(u, "data", None) == "literal" else None
                if tok is not None and getattr(tok, "start_pos", None) is None:
                    at = self.src.find(str(tok), prev_end)  # `false` has no position: after the last operand
                    if f is not None and at >= 0:
                        f.at = (at, at + len(str(tok)))
                    prev_end = max(prev_end, at + len(str(tok)))
                else:
                    prev_end = max(prev_end, self.tc.span(x)[1])
                if f is not None:
                    return f
            return self.contradiction(ops)
        v = self.constant(n)
        if v is False:
            shown = self.text(n)
            folded = " once the constants are folded" if "policy" in shown else ""
            return Never(n, f"`{shown}` is always false{folded}", "always false",
                         "fix the condition, or remove what can never match")
        return self.other_type(n)

    def other_type(self, n: Any) -> Never | None:
        """`action.type == "a"` (or `!= own`, or `in [...]` without it) in a rule of another type."""
        own = self.own_type
        if own is None or getattr(n, "data", None) != "relation" or len(n.children) != 2:
            return None
        opn, right = n.children
        op, left = getattr(opn, "data", None), opn.children[0]
        tc = self.tc
        asked: list[str] | None = None
        if op in ("relation_eq", "relation_ne"):
            for x, c in ((left, right), (right, left)):
                v = tc.str_lit(c)
                if tc.path(x) == ("action", "type") and v is not None:
                    if op == "relation_eq" and v != own:
                        asked = [v]
                    elif op == "relation_ne" and v == own:
                        return Never(n, f"`{self.text(n)}` is false for every action of type `{own}`",
                                     f"always false in a rule of `{own}`",
                                     f"a rule of `{own}` only ever sees `action.type == \"{own}\"`: remove the "
                                     "rule or its condition on the type")
        elif op == "relation_in" and tc.path(left) == ("action", "type"):
            r = self.unwrap(right)
            if getattr(r, "data", None) == "list_lit":
                from ..cel.typecheck import _kids

                vals = [tc.str_lit(x) for x in _kids(_kids(r)[0])] if _kids(r) else []
                if all(x is not None for x in vals) and own not in vals:
                    asked = [x for x in vals if x is not None]
        if asked is None:
            return None
        names = ", ".join(f"`{a}`" for a in asked) or "no type"
        where = f"declare the rule in the action block of `{asked[0]}`" if len(asked) == 1 else "move the rule"
        return Never(n, f"the condition asks for action type {names}, but the rule belongs to `{own}`",
                     f"a rule of `{own}` only ever sees `action.type == \"{own}\"`",
                     f"{where}, or remove this test")

    def contradiction(self, ops: list) -> Never | None:
        """Two `&&` operands that bound the same field to nothing."""
        lo: dict[tuple, tuple[Any, bool, Any]] = {}
        hi: dict[tuple, tuple[Any, bool, Any]] = {}
        eq: dict[tuple, tuple[Any, Any]] = {}
        for x in ops:
            f = self.fact(x)
            if f is None:
                continue
            path, sym, v = f
            shown = ".".join(path)
            numeric = type(v) in (int, float)
            clash = None
            if sym == "==":
                if path in eq and eq[path][0] != v and (numeric == (type(eq[path][0]) in (int, float))):
                    clash = eq[path][1]
                elif numeric:
                    if path in lo and (v < lo[path][0] or (v == lo[path][0] and lo[path][1])):
                        clash = lo[path][2]
                    elif path in hi and (v > hi[path][0] or (v == hi[path][0] and hi[path][1])):
                        clash = hi[path][2]
                if clash is None:
                    eq.setdefault(path, (v, x))
            elif numeric:
                strict = sym in ("<", ">")
                if sym in (">", ">="):
                    if path not in lo or v > lo[path][0] or (v == lo[path][0] and strict):
                        lo[path] = (v, strict, x)
                else:
                    if path not in hi or v < hi[path][0] or (v == hi[path][0] and strict):
                        hi[path] = (v, strict, x)
                if path in lo and path in hi:
                    (a, sa, xa), (b, sb, xb) = lo[path], hi[path]
                    if a > b or (a == b and (sa or sb)):
                        clash = xa if xb is x else xb
                if clash is None and path in eq and type(eq[path][0]) in (int, float):
                    e = eq[path][0]
                    if (path in lo and (e < lo[path][0] or (e == lo[path][0] and lo[path][1]))) or (
                        path in hi and (e > hi[path][0] or (e == hi[path][0] and hi[path][1]))
                    ):
                        clash = eq[path][1]
            if clash is not None:
                return Never(x, f"`{self.text(x)}` contradicts `{self.text(clash)}`",
                             f"contradicts `{self.text(clash)}`",
                             f"no value of `{shown}` satisfies both: fix the bounds, or remove what can never match")
        return None


_SPLIT = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|&&|\|\||[()\[\]{}]|[^"\'&|()\[\]{}]+|.')
_FALSE = re.compile(r"\bfalse\b")


def _worth_parsing(source: str, refs: Any, own_type: str | None) -> bool:
    """Whether the parse-tree analysis could find anything (parsing costs about as much as
    compiling): an `action.type` test in a rule, a field read twice, a `false`, or a
    top-level `&&`/`||` operand that reads only constants."""
    if own_type is not None and "action.type" in source:
        return True
    if _FALSE.search(source):
        return True
    seen: set = set()
    free_at: list[int] = []
    const_at: list[int] = []
    for r in refs:
        if r.path[0] == "policy":
            const_at.append(r.offset)
            continue
        if r.path in seen:
            return True
        seen.add(r.path)
        free_at.append(r.offset)
    if not const_at:
        return False
    depth, start = 0, 0
    pieces = []
    for m in _SPLIT.finditer(source):
        tok = m.group()
        if tok in "([{" and len(tok) == 1:
            depth += 1
        elif tok in ")]}" and len(tok) == 1:
            depth -= 1
        elif depth == 0 and tok in ("&&", "||"):
            pieces.append((start, m.start()))
            start = m.end()
    pieces.append((start, len(source)))
    return any(
        any(s <= o < e for o in const_at) and not any(s <= o < e for o in free_at) for s, e in pieces
    ) and len(pieces) > 1


def never_matches(source: str, consts: dict, own_type: str | None, refs: Any = None) -> Never | None:
    """Why the condition can never hold, when that is decidable (see the module doc).
    `refs`: the compiled expression's references (a cheap filter before parsing)."""
    if refs is not None and not _worth_parsing(source, refs, own_type):
        return None
    try:
        tree = cel_parse._parse(source)
    except Exception:  # noqa: BLE001 - the checker reported the syntax error already
        return None
    return _Analysis(source, consts, own_type).never(tree)


def always_true(checker: Checker, cond: ir.Condition) -> bool:
    """The condition is `true` whatever the input (it reads only constants)."""
    c = checker.compiled.get(_key(cond))
    if c is None or any(r.path[0] != "policy" for r in getattr(c, "references", ())):
        return False
    try:
        return c(checker.const_env) is True  # type: ignore[operator]
    except Exception:  # noqa: BLE001
        return False


# ---------------------------------------------------------------- entry
def _key(cond: ir.Condition) -> tuple[str, int]:
    """`check.cond_key`: where the checker keeps a condition's compiled expression."""
    sp = cond.loc.span
    return (sp.path, sp.start) if sp else ("", id(cond))


def workflow(checker: Checker, w: ir.Workflow) -> None:
    """Every lint of this module over one checked workflow."""
    cond_key = _key

    for a in w.actions:
        dead: set[int] = set()
        for r in a.rules:
            if r.effect not in PRECEDENCE or cond_key(r.condition) not in checker.compiled:
                continue
            f = _never(checker, r.condition, a.name)
            if f is not None:
                dead.add(id(r))
                _report_never(checker, r.condition, f, f"rule `{r.name}`", r.effect)
        shadowing(checker, a, dead)
        for r in a.rules:
            if r.approvers is not None and r.effect == "require_approval":
                authorization(checker, [Slot(r.approvers.count, r.approvers.roles, r.approvers.any_of,
                                             r.approvers.loc)], f"rule `{r.name}`")
    for s in w.stops:
        if s.condition is not None and cond_key(s.condition) in checker.compiled:
            f = _never(checker, s.condition, None)
            if f is not None:
                _report_never(checker, s.condition, f, f"stop trigger `{s.name}`", "stop")
    not_a_bool(checker, w)
    constant_errors(checker, w)
    undeclared_evidence(checker, w)
    for sc in w.scenarios:
        slots = [Slot(x.count, x.roles, x.any_of, x.loc) for x in (sc.authorization.slots if sc.authorization else ())]
        authorization(checker, slots, f"rollback scenario `{sc.name}`")
        if sc.escalation is not None and sc.escalation.authorization is not None:
            esc = [Slot(x.count, x.roles, x.any_of, x.loc) for x in sc.escalation.authorization.slots]
            authorization(checker, slots + esc, f"rollback scenario `{sc.name}` after its window", only=esc)


def _never(checker: Checker, cond: ir.Condition, own_type: str | None) -> Never | None:
    c = checker.compiled[_key(cond)]
    refs = getattr(c, "references", ())
    if all(r.path[0] == "policy" for r in refs):  # reads only constants: its value says
        try:
            v = c(checker.const_env)  # type: ignore[operator]
        except Exception:  # noqa: BLE001
            return None
        if v is not False:
            return None
        folded = " once the constants are folded" if refs else ""
        return Never(None, f"the condition is always false{folded}", "always false",
                     "fix the condition, or remove what can never match")
    return never_matches(cond.source, checker.const_env, own_type, refs)


def _report_never(checker: Checker, cond: ir.Condition, f: Never, what: str, effect: str) -> None:
    from ..cel.parse import _span

    if f.at is not None:
        s, e = f.at
    else:
        s, e = _span(f.node, len(cond.source)) if f.node is not None else (0, len(cond.source))
    notes: tuple[str, ...] = ()
    if effect in ("deny", "require_approval", "stop"):
        notes = ("only an error could make it " + ("fire" if effect == "stop" else "match")
                 + f" (an erroring condition counts as matched for `{effect}`)",)
    checker.add("W209", f"{what} can never match: {f.why}", checker.cel_span(cond.loc.span, s, e),
                severity="warning", label=f.label, help=f.help, notes=notes)


def _first_above(rules: list) -> dict[int, Any]:
    """For each precedence `p`: the first of `rules` (in order) whose effect outranks `p`
    (`PRECEDENCE[effect] < p`), where there is one."""
    out: dict[int, Any] = {}
    for p in sorted(set(PRECEDENCE.values())):
        out_p = next((s for s in rules if PRECEDENCE[s.effect] < p), None)  # (stops at the first: one pass)
        if out_p is not None:
            out[p] = out_p
    return out


def shadowing(checker: Checker, a: ir.ActionType, dead: set[int]) -> None:
    rules = [r for r in a.rules if r.effect in PRECEDENCE and id(r) not in dead]
    # Two conditions normalise alike only if they are alike without any whitespace (what
    # `normalise` changes is whitespace): a condition alone in that coarser sense needs no
    # normalising to be alone in the finer one (its key is then the coarse one alone).
    coarse = {id(r): "".join(r.condition.source.split()) for r in rules}
    counts: dict[str, int] = {}
    for k in coarse.values():
        counts[k] = counts.get(k, 0) + 1
    norm = {id(r): (k, normalise(r.condition.source) if counts[k] > 1 else "") for r in rules
            for k in (coarse[id(r)],)}
    unconditional = [r for r in rules if r.effect != "allow" and always_true(checker, r.condition)]
    same: dict[tuple[str, str], list] = {}  # normalised condition -> its rules, in order (linear, not n^2)
    for r in rules:
        same.setdefault(norm[id(r)], []).append(r)
    # the first rule (in order) of each group that outranks each precedence: looked up, not
    # searched for each rule (thousands of rules with one condition took minutes)
    first_above = {k: _first_above(group) for k, group in same.items()}
    first_unconditional = _first_above(unconditional)
    for r in rules:
        p = PRECEDENCE[r.effect]
        by = first_above[norm[id(r)]].get(p)
        why = "the same condition"
        if by is None:
            by = first_unconditional.get(p)
            why = "an unconditional condition"
        if by is None:
            continue
        checker.add(
            "W210",
            f"rule `{r.name}` is shadowed by {by.effect} rule `{by.name}` ({why}): it can never decide",
            r.effect_loc,
            severity="warning",
            label=f"`{by.effect}` outranks `{r.effect}`",
            help=f"`{by.name}` is at {by.loc} and matches whenever this rule does; change one of the conditions, "
            "or remove this rule",
        )


@dataclass
class Slot:
    count: int
    roles: tuple[ir.Name, ...]
    any_of: bool
    loc: ir.Loc


def authorization(checker: Checker, slots: list[Slot], what: str, only: list[Slot] | None = None) -> None:
    for s in only if only is not None else slots:
        if s.any_of and not s.roles:
            checker.add(
                "W211",
                f"{what} asks for {s.count} approver{'s' if s.count > 1 else ''} of no role",
                s.loc,
                severity="warning",
                label="no role can fill this",
                help="name the roles that may approve: `1 of [legal, executive]`",
                notes=("an approval counts only for a role its slot names: this one stays open forever",),
            )
    total = sum(s.count for s in slots)
    before = total - sum(s.count for s in only) if only is not None else 0
    if total > MAX_APPROVALS and before <= MAX_APPROVALS and slots:
        at = (only or slots)[-1]
        checker.add(
            "W211",
            f"{what} needs {total} approvals in all; at most {MAX_APPROVALS} are read",
            at.loc,
            severity="warning",
            label="can never be filled",
            help=f"ask for at most {MAX_APPROVALS} approvals",
        )


# ---------------------------------------------------------------- W212: constant errors
_CONSEQUENCE = {
    "deny": "it matches every action of its type (an erroring condition counts as matched for `deny`)",
    "require_approval": "it matches every action of its type (an erroring condition counts as matched for "
                        "`require_approval`)",
    "allow": "it never matches (an erroring condition counts as not matched for `allow`)",
    "stop": "it fires on every action (an erroring condition counts as matched for a stop trigger)",
    "prerequisite": "it is never met: every rollback of this action type is blocked",
    "criterion": "it is never met: the workflow can never resume from this trigger",
    "duty": "the duty always applies (an erroring condition applies it, fail closed)",
}


class _ErrorStarts:
    """Where the errors reported so far start, per file, sorted: whether one starts inside a
    span is a binary search (not a scan of every error for every condition: quadratic, and
    minutes on a file of thousands of rules that each have an error)."""

    def __init__(self, checker: Checker) -> None:
        by_path: dict[str, list[int]] = {}
        for d in checker.diags:
            if d.severity == "error" and d.span is not None:
                by_path.setdefault(d.span.path, []).append(d.span.start)
        self.starts = {k: sorted(v) for k, v in by_path.items()}

    def within(self, path: str, start: int, end: int) -> bool:
        starts = self.starts.get(path)
        if not starts:
            return False
        i = bisect.bisect_left(starts, start)
        return i < len(starts) and starts[i] < end


def _conditions(w: ir.Workflow) -> list[tuple[ir.Condition, str, str]]:
    """Every condition of the workflow: (it, what it is, its kind: a key of `_CONSEQUENCE`)."""
    conds: list[tuple[ir.Condition, str, str]] = []
    for a in w.actions:
        conds += [(r.condition, f"rule `{r.name}`", r.effect) for r in a.rules]
        conds += [(p.condition, f"prerequisite `{p.name}` of `{a.name}`", "prerequisite") for p in a.prerequisites]
    for st in w.stops:
        if st.condition is not None:
            conds.append((st.condition, f"stop trigger `{st.name}`", "stop"))
        conds += [(c.condition, f"re-enable criterion `{c.name}` of `{st.name}`", "criterion") for c in st.criteria]
    for sc in w.scenarios:
        levels: list[Any] = [sc] + ([sc.escalation] if sc.escalation is not None else [])
        for lv in levels:
            for d in (*lv.notify, *lv.compensate):
                if d.when is not None:
                    conds.append((d.when, f"duty `{d.name}` of rollback scenario `{sc.name}`",
                                  "duty"))
    return conds


def not_a_bool(checker: Checker, w: ir.Workflow) -> None:
    """E116 for a condition whose type is known without declarations and is not a bool
    (`"yes"`, `1 + 2`, `size(x)`): an error whatever the input. With declarations the
    type check (check.py) reports it already, like any other error in the condition."""
    from ..cel.typecheck import not_a_bool as find

    errors = _ErrorStarts(checker)
    seen: set = set()
    for cond, _what, kind in _conditions(w):
        sp = cond.loc.span
        if _key(cond) not in checker.compiled or _key(cond) in seen or (
            sp is not None and errors.within(sp.path, sp.start, sp.end)
        ):
            continue
        seen.add(_key(cond))
        f = find(cond.source)
        if f is not None:
            checker.add("E116", f.message, checker.cel_span(sp, f.start, f.end), label=f.label, help=f.help,
                        notes=(_CONSEQUENCE[kind],))


def constant_errors(checker: Checker, w: ir.Workflow) -> None:
    """W212 over every condition of the workflow that reads only constants."""
    errors = _ErrorStarts(checker)
    for cond, what, kind in _conditions(w):
        c = checker.compiled.get(_key(cond))
        if c is None or kind not in _CONSEQUENCE:
            continue
        sp = cond.loc.span
        if sp is not None and errors.within(sp.path, sp.start, sp.end):
            continue  # an error in it is already reported (an unknown name, E109): that is why it errors
        if any(r.path[0] != "policy" for r in getattr(c, "references", ())):
            continue
        try:
            v = c(checker.const_env)  # type: ignore[operator]
        except Exception:  # noqa: BLE001 - evaluation never raises; a bug here must not fail `check`
            continue
        if type(v).__name__ != "CelError":
            continue
        s, e = _failing_part(cond.source, checker.const_env, v)
        shown = " ".join(cond.source[s:e].split())
        whole = (s, e) == (0, len(cond.source))
        checker.add(
            "W212",
            f"the condition of {what} is always an error: {v.message}",
            checker.cel_span(cond.loc.span, s, e),
            severity="warning",
            label=v.message if whole else f"`{shown}` is always an error: {v.message}",
            help="fix the condition (or the constant it reads) so that it can evaluate",
            notes=(_CONSEQUENCE[kind],),
        )


# ---------------------------------------------------------------- W213: undeclared evidence
def undeclared_evidence(checker: Checker, w: ir.Workflow) -> None:
    """W213 for every stop trigger of the workflow whose re-enable criteria read `evidence`
    and that declares no `evidence { ... }` block."""
    for st in w.stops:
        if st.evidence is not None:
            continue  # declared: the criteria are type-checked (E115, E116) and the evidence checked at run time
        first: tuple[ir.Condition, int, int] | None = None
        read: dict[str, None] = {}  # the fields read, in the order of the criteria
        for crit in st.criteria:
            c = checker.compiled.get(_key(crit.condition))
            for r in getattr(c, "references", ()) if c is not None else ():
                if r.path[0] != "evidence":
                    continue
                read.setdefault(".".join(r.path[1:]) if len(r.path) > 1 else "", None)
                if first is None:
                    first = (crit.condition, r.offset, r.end)
        if first is None:
            continue
        cond, s, e = first
        fields = [f for f in read if f]
        shown = ", ".join(f"`evidence.{f}`" for f in fields[:10]) + (f" and {len(fields) - 10} more"
                                                                     if len(fields) > 10 else "")
        what = f": {shown}" if fields else ""
        checker.add(
            "W213",
            f"the re-enable criteria of stop trigger `{st.name}` read evidence that no `evidence` block "
            f"declares{what}",
            checker.cel_span(cond.loc.span, s, e),
            severity="warning",
            label="not declared: any value is taken as given",
            help=f"declare its shape on the stop trigger, `evidence {{ {_skeleton(fields)} }}` with each field's "
                 "type: evidence of another shape is then refused, and the workflow stays stopped",
            notes=("without a declaration the criteria see whatever the caller sends: `size(evidence.items) > 0` "
                   "holds for the string \"x\", and a map passes `k in evidence.items`",),
        )


def _skeleton(fields: list[str]) -> str:
    """The top of an `evidence` block for the dotted fields read: `a: {...} b: <type>`."""
    top: dict[str, bool] = {}  # name -> read inside (an object)
    for f in fields:
        head, _, rest = f.partition(".")
        top[head] = top.get(head, False) or bool(rest)
    if not top:
        return "name: <type>"
    return " ".join(f"{n}: {'{...}' if nested else '<type>'}" for n, nested in top.items())


def _failing_part(source: str, consts: dict, error: Any) -> tuple[int, int]:
    """(start, end) of the smallest part of `source` that evaluates to `error` on its own
    (the whole condition when no smaller part does)."""
    from ..cel import compile_cel
    from ..cel.parse import _span

    best = (0, len(source))
    try:
        tree = cel_parse._parse(source)
    except Exception:  # noqa: BLE001 - compiled already, so it parses; say it of the whole
        return best
    seen: set[tuple[int, int]] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        kids = getattr(node, "children", None)
        if kids is None:
            continue
        stack.extend(k for k in kids if k is not None)
        try:
            s, e = _span(node, len(source))
        except Exception:  # noqa: BLE001 - a node without a position
            continue
        if not (0 <= s < e <= len(source)):
            continue
        ends = [e]  # a node's end may leave out its closing brackets: `int(1e19` for `int(1e19)`
        j = e
        while j < len(source) and source[j] in " \t\r\n)]}":
            j += 1
            if source[j - 1] in ")]}":
                ends.append(j)
        for end in ends:
            if (s, end) in seen or end - s >= best[1] - best[0]:
                continue
            seen.add((s, end))
            try:
                v = compile_cel(source[s:end], constants=consts, accelerate=False)(consts)
            except Exception:  # noqa: BLE001 - not an expression on its own
                continue
            if v == error:
                best = (s, end)
                break
    return best

