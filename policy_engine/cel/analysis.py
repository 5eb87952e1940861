"""Analyses of a compiled expression, read from the tree the reference compiler built:

- ``type_guard``: the action types for which a condition can be anything but ``false``,
  when the condition says so itself (the engine skips a stop trigger guarded by another
  type; see ``CompiledExpr.type_guard``);
- ``read_set``: what the expression reads of its free variables (the engine checks and
  speculates on exactly those fields; see ``CompiledExpr.reads``);
- ``unknown_names``: the calls of functions and methods the engine does not have, and
  Python-style literals (``True``, ``None``), read from the parse tree (the checker's E109).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from .compile import Reference
from .nodes import _ACTION_TYPE, _N, _PASSTHRU


def type_guard(n: _N) -> frozenset[str] | None:
    """The action types for which the node may be anything but ``false``; None when not known.

    ``action.type == "t"`` -> {"t"}; ``action.type in ["t", ...]`` -> those; ``a && b`` -> a's
    (``&&`` evaluates left to right and stops at the first ``false``, before any later
    operand could raise a non-absorbable budget error: only the first operand's guard
    carries over); ``a || b || ...`` -> the union when every operand has one."""
    op = n.op
    if op is None or n.const:
        return None
    k = op[0]
    if k == "eq":
        _, ln, rn, neg = op
        if not neg:
            for x, c in ((ln, rn), (rn, ln)):
                if x.path == _ACTION_TYPE and c.const and type(c.value) is str:
                    return frozenset((c.value,))
        return None
    if k == "in_strs":
        return op[2] if op[1].path == _ACTION_TYPE else None
    if k == "logic":
        live, is_and = op[1], op[2]
        if is_and:
            return type_guard(live[0])
        guards = [type_guard(x) for x in live]
        if all(g is not None for g in guards):
            return frozenset().union(*guards)  # type: ignore[arg-type]
    return None


def read_set(refs: Sequence[Reference], has_fields: dict[int, str]) -> tuple[tuple[str, str | None], ...]:
    """(variable, top-level field) pairs the expression reads, sorted; the field is None when
    it may use the variable as a whole. ``has(x.f)`` reads only ``f`` of ``x``."""
    return tuple(sorted({
        (r.path[0], has_fields.get(i, r.path[1] if len(r.path) > 1 else None)) for i, r in enumerate(refs)
    }, key=lambda x: (x[0], x[1] or "")))


# ------------------------------------------------------------------ names the engine cannot call
#
# ``unknown_names(source)``: every call of a function or method that the compiler would bind to
# nothing (compile.py ``_Compiler.unbound``: evaluating it is always the error "unbound function"),
# and every Python-style literal (``True``, ``None``) read as a variable. The walk mirrors the
# compiler's name resolution (``c_member``, ``c_ident_arg``, ``macro``, ``bind_macro``), scopes of
# comprehension and ``cel.bind`` variables included; tests/test_unknown_functions.py checks it
# against the compiler itself over the conformance corpus. compile_cel is not changed: an
# unknown function stays a run-time error there, as in the spec's unchecked mode; the policy
# checker (language/check.py) refuses it (E109) so that no policy ships one.

_CHAIN = frozenset({"member", "member_dot", "member_dot_arg", "member_index", "member_object", "primary", "ident",
                    "dot_ident"})
_CALL_RE = re.compile(r"\b([A-Za-z_]\w*)\s*\(")
_GLUED = re.compile(r"\d[A-Za-z_]\w*\s*\(")  # `2.0int(1)` lexes as `2.0` `in` `t(1)`: parsed
LITERAL_SLIPS = {"True": "true", "TRUE": "true", "False": "false", "FALSE": "false", "None": "null",
                 "none": "null", "NULL": "null", "Null": "null", "nil": "null", "undefined": "null"}
_SLIP_RE = re.compile(r"\b(?:" + "|".join(LITERAL_SLIPS) + r")\b")
# the variables of conditions (language/check.py's scopes): called as functions by mistake
_ROOTS = frozenset({"action", "workflow", "now", "policy", "original", "request", "evidence", "stop"})
# what a newcomer from Python, JavaScript or SQL writes, and what CEL writes instead
_GLOBAL_HINTS = {
    "len": "CEL writes `size(x)` (or `x.size()`)",
    "length": "CEL writes `size(x)` (or `x.size()`)",
    "count": "CEL writes `size(x)`, or `size(list.filter(x, p))` to count matches",
    "str": "did you mean `string`?",
    "float": "did you mean `double`?",
    "any": "CEL writes `list.exists(x, p)`",
    "abs": "did you mean `math.abs`?",
    "max": "did you mean `math.greatest`?",
    "min": "did you mean `math.least`?",
    "round": "did you mean `math.round`?",
    "lower": "CEL writes `s.lowerAscii()`",
    "upper": "CEL writes `s.upperAscii()`",
    "re": "CEL writes `s.matches('regex')` (or `matches(s, 'regex')`)",
    "regex": "CEL writes `s.matches('regex')` (or `matches(s, 'regex')`)",
    "match": "CEL writes `s.matches('regex')` (or `matches(s, 'regex')`)",
    "isinstance": "CEL writes `type(x) == int`",
    "typeof": "CEL writes `type(x) == string`",
}
_METHOD_HINTS = {
    "len": "CEL writes `x.size()` (or `size(x)`)",
    "length": "CEL writes `x.size()` (or `size(x)`)",
    "lower": "did you mean `lowerAscii`?",
    "toLowerCase": "did you mean `lowerAscii`?",
    "upper": "did you mean `upperAscii`?",
    "toUpperCase": "did you mean `upperAscii`?",
    "strip": "did you mean `trim`?",
    "find": "did you mean `indexOf`?",
    "any": "did you mean `exists`?",
    "some": "did you mean `exists`?",
    "every": "did you mean `all`?",
    "includes": "did you mean `contains`? (for a list, `x in list` also works)",
    "count": "CEL writes `size(list.filter(x, p))` to count matches",
    "keys": "a map ranges over its keys: `m.exists(k, ...)`, `'k' in m`",
    "get": "CEL writes `m['key']`, guarded with `'key' in m` or `has(m.key)`",
}
_SEE_DOCS = "CEL has no `{}`: the functions it has are listed in docs/cel.md, under What is supported"
_MACRO_USAGE = {
    "all": "`list.all(x, p)` (or `all(k, v, p)` over a map's keys and values)",
    "exists": "`list.exists(x, p)` (or `exists(k, v, p)` over a map's keys and values)",
    "exists_one": "`list.exists_one(x, p)` (or `exists_one(i, v, p)`)",
    "existsOne": "`list.existsOne(x, p)` (or `existsOne(i, v, p)`)",
    "map": "`list.map(x, expr)` or `list.map(x, p, expr)`",
    "filter": "`list.filter(x, p)`",
    "transformList": "`list.transformList(i, v, expr)` or `list.transformList(i, v, p, expr)`",
    "transformMap": "`map.transformMap(k, v, expr)` or `map.transformMap(k, v, p, expr)`",
    "optMap": "`optional.optMap(x, expr)` (an optional of expr, `x` the value held)",
    "optFlatMap": "`optional.optFlatMap(x, expr)` (expr an optional, `x` the value held)",
}


@dataclass(frozen=True)
class UnknownName:
    """A name a condition uses that the engine cannot evaluate; offsets into the source."""

    kind: str  # "function", "method", "macro" (a macro with the wrong arguments), "literal"
    name: str
    start: int
    end: int
    message: str
    label: str
    help: str | None

    def notes(self, effect: str | None) -> tuple[str, ...]:
        """What the slip would do at run time, for a condition of the given effect."""
        what = (f"`{self.name}` reads as a variable that does not exist" if self.kind == "literal"
                else "the call is an error at run time")
        if effect == "allow":
            return (f"{what}, and an `allow` rule whose condition errors never matches",)
        if effect == "stop":
            return (f"{what}, and a stop trigger whose condition errors stops the whole workflow",)
        if effect in ("deny", "require_approval"):
            return (f"{what}, and a `{effect}` rule whose condition errors counts as matched",)
        return (f"{what}",)


@cache
def _names() -> tuple[frozenset[str], frozenset[str]]:
    """(global function names, method names) of the function tables (builtins.py)."""
    from .builtins import _builtin_tables
    from .limits import DEFAULT_LIMITS
    from .values import _Sizes

    glob, meth = _builtin_tables(_Sizes(DEFAULT_LIMITS.max_size))
    return frozenset(glob), frozenset(meth)


def _maybe_unknown(source: str) -> bool:
    """False when no call in the text can be unknown and no Python literal appears (then the
    source need not be parsed): every `name(` is a global function, `has`, or (after a dot)
    a method, or a macro with a form it has (its arguments counted by ``_macro_ok``)."""
    if _SLIP_RE.search(source) or _GLUED.search(source):
        return True
    glob, meth = _names()
    for m in _CALL_RE.finditer(source):
        name = m[1]
        k = m.start() - 1
        while k >= 0 and source[k] in " \t\r\n":
            k -= 1
        prev = source[k] if k >= 0 else ""
        if prev == "." and k and source[k - 1].isdigit():
            return True  # `42.indexOf(` lexes as `42.` `in` `dexOf(`
        if name.startswith("in") and prev and prev not in "([{,!-+*/%<>=&|?:.":
            return True  # after an operand, `int(1)` lexes as `in` `t(1)`
        if prev == ".":  # a method, unless the dot starts a name (`.f(x)`: a global function)
            k -= 1
            while k >= 0 and source[k] in " \t\r\n":
                k -= 1
            if k < 0 or not (source[k].isalnum() or source[k] in "_)]}'\"."):  # `2..f(`: a method on `2.`
                prev = ""
        if prev != ".":
            if name not in glob and name != "has":
                return True
        elif name not in meth and not (name in _MACRO_USAGE and _macro_ok(name, source, m.end())):
            return True
    return False


_NVARS = {"all": (0, 0, 1, 2), "exists": (0, 0, 1, 2), "exists_one": (0, 0, 1, 2), "existsOne": (0, 0, 1, 2),
          "map": (0, 0, 1, 1), "filter": (0, 0, 1), "transformList": (0, 0, 0, 2, 2),
          "transformMap": (0, 0, 0, 2, 2),
          "optMap": (0, 0, 1), "optFlatMap": (0, 0, 1)}  # macro -> variables by number of arguments (0: no such form)
_BARE = re.compile(r"\s*[A-Za-z_]\w*\s*$")


_SCAN = re.compile(r"""[()\[\]{},'"]""")


def _macro_ok(name: str, src: str, i: int) -> bool:
    """True when the call whose `(` ends at ``i`` surely has a form of the macro: the number of
    arguments is one it takes and its variables are bare names. Any doubt (a raw, bytes or
    triple-quoted string, a bracket that does not close): False, and the source is parsed."""
    depth, start, args = 1, i, []
    n = len(src)
    while True:
        m = _SCAN.search(src, i)
        if m is None:
            return False
        i = m.start()
        ch = src[i]
        if ch in "'\"":  # a plain string: skipped; a raw, bytes or triple-quoted one: doubt
            if src.startswith(ch * 3, i) or (i and src[i - 1] in "rRbB"):
                return False
            i += 1
            while i < n and src[i] != ch:
                i += 2 if src[i] == "\\" else 1
            if i >= n:
                return False
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                args.append(src[start:i])
                break
        elif depth == 1:  # a comma between the macro's arguments
            args.append(src[start:i])
            start = i + 1
        i += 1
    forms = _NVARS[name]
    nvars = forms[len(args)] if len(args) < len(forms) else 0
    return nvars > 0 and all(_BARE.match(a) for a in args[:nvars])


def _dym(word: str, candidates: Any) -> str | None:
    """A 'did you mean' line (diagnostics.did_you_mean's rule; cel/ imports only leaves)."""
    import difflib

    cands = sorted(set(candidates))
    match = difflib.get_close_matches(word, cands, n=1, cutoff=0.6)
    if not match:
        match = [c for c in cands if c.lower() == word.lower()][:1]
    return f"did you mean `{match[0]}`?" if match else None


def _hint(word: str, hints: dict[str, str]) -> str | None:
    """The hint for the near miss of a hinted word (`lenght` -> `length`'s)."""
    import difflib

    m = difflib.get_close_matches(word, list(hints), n=1, cutoff=0.7)
    return hints[m[0]] if m else None


def unknown_names(source: str) -> list[UnknownName]:
    """The unknown function and method calls and the Python literals of ``source`` (which
    must compile: a parse failure yields nothing), in source order."""
    if not _maybe_unknown(source):
        return []
    from .parse import _parse

    try:
        tree = _parse(source)
    except Exception:  # noqa: BLE001 - compile_cel reported it already
        return []
    return sorted(_Walk().run(tree), key=lambda u: (u.start, u.end))


def _args(node: Any) -> list:
    for ch in node.children:
        if getattr(ch, "data", None) == "exprlist":
            return list(ch.children)
    return []


def _var(node: Any) -> str | None:
    while getattr(node, "data", None) in _PASSTHRU and len(node.children) == 1:
        node = node.children[0]
    return str(node.children[0]) if getattr(node, "data", None) == "ident" else None


def _pos(tok: Any) -> tuple[int, int]:
    s = getattr(tok, "start_pos", None) or 0
    e = getattr(tok, "end_pos", None)
    return s, e if e is not None else s + len(str(tok))


class _Walk:
    def __init__(self) -> None:
        self.glob, self.meth = _names()
        self.out: list[UnknownName] = []
        self.stack: list[tuple[Any, frozenset[str]]] = []

    def run(self, tree: Any) -> list[UnknownName]:
        self.stack.append((tree, frozenset()))
        while self.stack:
            node, scope = self.stack.pop()
            d = getattr(node, "data", None)
            if d is None:
                continue
            if d in _CHAIN:
                self.chain(node, scope)
            elif d in ("ident_arg", "dot_ident_arg"):
                self.call(node, scope)
            else:
                self.push(node.children, scope)
        return self.out

    def push(self, nodes: Any, scope: frozenset[str]) -> None:
        self.stack.extend((n, scope) for n in nodes if hasattr(n, "data"))

    def report(self, kind: str, name: str, span: tuple[int, int], message: str, label: str,
               help_: str | None) -> None:
        self.out.append(UnknownName(kind, name, span[0], span[1], message, label, help_))

    def call(self, node: Any, scope: frozenset[str]) -> None:  # `name(...)`: c_ident_arg
        tok = node.children[0]
        name = str(tok)
        args = _args(node)
        self.push(args, scope)
        if name == "has" or name in self.glob:
            return
        if name in _MACRO_USAGE:
            help_ = f"`{name}` is a macro called on a list or map: {_MACRO_USAGE[name]}"
        elif name in self.meth:
            help_ = f"`{name}` is a method: write `x.{name}(...)`"
        elif name in _ROOTS:
            help_ = f"`{name}` is a variable, not a function: write `{name}` without `(...)`"
        else:
            help_ = (_GLOBAL_HINTS.get(name) or _dym(name, [g for g in self.glob if "." not in g] + ["has"])
                     or _hint(name, _GLOBAL_HINTS) or _dym(name, self.glob | self.meth) or _SEE_DOCS.format(name))
        self.report("function", name, _pos(tok), f"unknown function `{name}`", "no such function", help_)

    def chain(self, node: Any, scope: frozenset[str]) -> None:  # c_member
        ops = []
        n = node
        while n.data in ("member", "member_dot", "member_dot_arg", "member_index", "member_object"):
            if n.data == "member":
                if len(n.children) != 1:
                    self.push(n.children, scope)
                    return
                n = n.children[0]
                continue
            ops.append(n)
            n = n.children[0]
        ops.reverse()
        base = n
        while getattr(base, "data", None) == "primary" and len(base.children) == 1:
            base = base.children[0]
        i = 0
        if getattr(base, "data", None) in ("ident", "dot_ident"):
            tok = base.children[0]
            name = str(tok)
            path = [name]
            quoted = False  # (`a.`b-c`.f()`: a method, never a namespaced function)
            j = 0
            while j < len(ops) and ops[j].data == "member_dot":
                path.append(str(ops[j].children[1]))
                quoted = quoted or ops[j].children[1].type == "QUOTED_IDENT"
                j += 1
            i = j
            if j < len(ops) and ops[j].data == "member_dot_arg" and name not in scope and not quoted:
                mtok = ops[j].children[1]
                fq = ".".join(path + [str(mtok)])
                args = _args(ops[j])
                if fq == "cel.bind":
                    var = _var(args[0]) if len(args) == 3 else None
                    if var is None:
                        self.push(args, scope)
                    else:
                        self.push([args[1]], scope)
                        self.push([args[2]], scope | {var})
                    i = j + 1
                elif fq in self.glob:
                    self.push(args, scope)
                    i = j + 1
                else:
                    ns = ".".join(path)
                    in_ns = sorted(g for g in self.glob | {"cel.bind"} if g.startswith(ns + "."))
                    if in_ns and str(mtok) not in self.meth and str(mtok) not in _MACRO_USAGE:
                        # `math.greatst(...)`: a namespaced function that does not exist (`math.size(x)`
                        # is a method on a variable `math`: E113 says it is not in scope)
                        self.push(args, scope)
                        self.report(
                            "function", fq, (_pos(tok)[0], _pos(mtok)[1]), f"unknown function `{fq}`",
                            "no such function",
                            _dym(fq, in_ns) or f"the `{ns}` functions are " + ", ".join(f"`{g}`" for g in in_ns),
                        )
                        i = j + 1
            if i == j and name in LITERAL_SLIPS and name not in scope:
                lit = LITERAL_SLIPS[name]
                self.report(
                    "literal", name, _pos(tok), f"`{name}` is not a CEL literal", "not a CEL literal",
                    f"write `{lit}`: CEL's literals are `true`, `false` and `null`",
                )
        else:
            self.push([base], scope)
        for op in ops[i:]:
            d = op.data
            if d == "member_index":
                self.push(op.children[1:], scope)
            elif d == "member_dot_arg":
                self.method(op, scope)
            elif d == "member_object":
                self.push(op.children[1:], scope)

    def method(self, op: Any, scope: frozenset[str]) -> None:  # postfix member_dot_arg, macro
        tok = op.children[1]
        name = str(tok)
        args = _args(op)
        if name in _MACRO_USAGE:
            n = len(args)
            if name in ("all", "exists", "exists_one", "existsOne"):
                nvars = 2 if n == 3 else 1 if n == 2 else 0
            elif name in ("map", "filter", "optMap", "optFlatMap"):
                nvars = 1 if n == 2 or (name == "map" and n == 3) else 0
            else:
                nvars = 2 if n in (3, 4) else 0
            if nvars:
                names = [_var(a) for a in args[:nvars]]
                inner = scope | {v for v in names if v is not None}
                self.push(args[nvars:], inner)
                return
            self.push(args, scope)
            self.report(
                "macro", name, _pos(tok), f"`{name}` is given {n} argument{'' if n == 1 else 's'}",
                "not a form of this macro", f"write {_MACRO_USAGE[name]}",
            )
            return
        self.push(args, scope)
        if name in self.meth:
            return
        if name in self.glob:
            help_: str | None = f"`{name}` is a function, not a method: write `{name}(x)`"
        else:
            help_ = (_METHOD_HINTS.get(name) or _dym(name, self.meth | set(_MACRO_USAGE))
                     or _hint(name, _METHOD_HINTS) or _SEE_DOCS.format(name))
        self.report("method", name, _pos(tok), f"unknown method `{name}`", "no such method", help_)
