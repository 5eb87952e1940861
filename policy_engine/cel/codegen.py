"""The fast path: Python source generated from the compiled tree for a common subset.

A pass over the tree the reference compiler (compile.py) built: ``generator(node)`` reads
each node's ``op`` and returns a generator of the source of one plain Python function
``fast(a)`` (a = the activation), or None outside the subset. Nothing here decides what a
condition means; ``compile_cel(src, accelerate=False)`` builds none of it.

Every node of the subset has a generator ``g(em) -> (expression, kind)`` (built by the
``_g_*`` functions below) that may also emit statements (loops of the macros) into ``em``
(an ``emit._Gen``); ``kind`` is "bool", "int", "float", "str" or "list" when the
generated expression can only produce that Python type, else None.

The contract: whenever ``fast(a)`` returns, its value is exactly the closures' value.
The generated code guards every type it relies on and raises (``_fb()``, or any Python
exception such as KeyError) on anything unusual: a wrong type, a missing key, a
non-bool operand of ``&&``, a comprehension range that is not a list or is longer than
``_FAST_MAX_LIST``, the iteration budget, any error at all. ``CompiledExpr.__call__``
then evaluates the closures, which are exact and turn errors into ``CelError`` values.
So the fast path never has to get error semantics (absorption by ``&&``/``||``/``exists``,
error messages, budgets) right: it only ever produces the values of the error-free path.

Operations whose semantics live in a helper (``_eq``, ``_lt``, ``_contains_in``,
``_index``, arithmetic, conversions, string and timestamp functions) call the very helper
the closure calls, so they are exact by construction; the generated code inlines only
the common, fully guarded cases. Safety: the source contains only generated names
(``a``, ``_tN``, ``_sN``, ``_kN`` and the helpers of ``_FAST_GLOBALS``), numbers,
``repr()`` of strings and bytes, and fixed operators; every other value (floats that are
not finite, uints, timestamps, lists, maps, functions) is bound by name, never pasted.
The function runs with empty ``__builtins__``.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable
from typing import Any

from .emit import _FAST_CMP, _FAST_GLOBALS, _FAST_MAX_LIST, _Gen
from .limits import Limits
from .nodes import _N
from .optional import optional_tables
from .regex import REGEX_MAX_COST, _regex_cost_check
from .values import CelOptional, CelUint, _exact_num_const

_FAST_MAX_DEPTH = 48  # closure trees deeper than this get no fast path
# Python's compile() costs ~0.1 ms per condition (a third of parsing CEL), so the fast path
# is built on the second evaluation, not at load time: loading/checking policies pays nothing.
_FAST_WARMUP = 2

Gen = Callable[[_Gen], tuple[str, "str | None"]]  # a node's generator: (expression, kind)


def _g_const(value: Any) -> Callable:
    t = type(value)
    if value is None or t is bool or t is str or t is bytes or t is int or (
        t is float and math.isfinite(value)
    ):
        text = repr(value)
        if text.startswith("-"):
            text = f"({text})"
        kind = {bool: "bool", int: "int", float: "float", str: "str"}.get(t)

        def g(em: _Gen) -> tuple[str, str | None]:
            return em.lit(text), kind

    elif t is list:

        def g(em: _Gen) -> tuple[str, str | None]:
            return f"list({em.bind(value)})", "list"  # a fresh list, like the closures

    else:

        def g(em: _Gen) -> tuple[str, str | None]:
            return em.bind(value), None

    return g


def _g_sel(em: _Gen, e: str, name: str, kind: str | None = None) -> str:
    """Field selection on a dict (anything else: fall back)."""
    if kind == "dict":
        return f"{e}[{name!r}]"
    if em.is_literal(e):  # never a dict (and `1['a']` would be a SyntaxWarning)
        return "_fb()"
    return em.guard(e, lambda f, x: f"type({f}) is dict", lambda x: f"{x}[{name!r}]")


def _g_call(em: _Gen, f: Callable, args: list[str]) -> str:
    """Call the very helper the closure calls (exact by construction)."""
    return f"{em.bind(f)}({', '.join(args)})"


def _g_ternary(C: Callable, T: Callable, E: Callable) -> Callable:
    def g(em: _Gen) -> tuple[str, str | None]:
        ce, ck = C(em)
        (te, tk), tl = em.sub(T)
        (ee, ek), el = em.sub(E)
        kind = tk if tk == ek else None
        cb = em.as_bool(ce, ck)
        if not tl and not el:
            return f"({te} if {cb} else {ee})", kind
        c = em.value(cb)
        r = em.tmp()
        em.emit(f"if {c}:")
        em.ind += 1
        em.splice(tl)
        em.emit(f"{r} = {te}")
        em.ind -= 1
        em.emit("else:")
        em.ind += 1
        em.splice(el)
        em.emit(f"{r} = {ee}")
        em.ind -= 1
        return r, kind

    return g


def _g_logic(gs: list[Callable], stop: bool) -> Callable:
    """``&&`` (stop=False) / ``||`` (stop=True): left to right, every operand a bool."""
    pyop = " or " if stop else " and "

    neutral = "False" if stop else "True"  # `true && x` is x, `false || x` is x

    def g(em: _Gen) -> tuple[str, str | None]:
        parts = [p for p in (em.sub(x) for x in gs) if p[1] or p[0][0] != neutral]
        if not parts:
            return em.lit(neutral), "bool"
        if not any(lines for _, lines in parts):
            return "(" + pyop.join(em.as_bool(e, k) for (e, k), _ in parts) + ")", "bool"
        r = em.tmp()
        opened = 0
        i = 0
        while i < len(parts):
            (e, k), lines = parts[i]
            em.splice(lines)
            group = [em.as_bool(e, k)]
            i += 1
            while i < len(parts) and not parts[i][1]:
                (e, k), _ = parts[i]
                group.append(em.as_bool(e, k))
                i += 1
            em.emit(f"{r} = {pyop.join(group)}")
            if i < len(parts):
                em.emit(f"if {'not ' if stop else ''}{r}:")
                em.ind += 1
                opened += 1
        em.ind -= opened
        return r, "bool"

    return g


def _g_pair(em: _Gen, le: str, re_: str) -> tuple[str, str, str, str]:
    """(first x, x, first y, y): two operands evaluated once each, x before y."""
    if le in em.atoms:
        fx = x = le
    else:
        x = em.tmp()
        fx = f"({x} := {le})"
    if re_ in em.atoms:
        fy = y = re_
    else:
        y = em.tmp()
        fy = f"({y} := {re_})"
    return fx, x, fy, y


def _literal(text: str) -> Any:
    import ast

    return ast.literal_eval(text)


def _g_eq(ln: _N, rn: _N, L: Gen | None, R: Gen | None, neg: bool) -> Gen | None:
    """Mirrors ``operators._eq_fn`` (called with the operands already swapped)."""
    if L is None or R is None:
        return None
    op = "!=" if neg else "=="
    if rn.const and type(rn.value) in (str, bytes):

        def g(em: _Gen) -> tuple[str, str | None]:
            e, ek = L(em)
            k, _ = R(em)
            if ek == "str":
                if em.is_literal(e) and e[:1] in "'\"":  # a str every caller guarantees: decided here
                    return em.lit(repr((_literal(e) == rn.value) != neg)), "bool"
                return f"({e} {op} {k})", "bool"
            return em.guard(e, lambda f, x: f"type({f}) in _PLAIN", lambda x: f"({x} {op} {k})"), "bool"

        return g
    if rn.const and type(rn.value) in (int, float, CelUint) and _exact_num_const(rn.value):
        other = "True" if neg else "False"  # _eq of a number and a non-number

        def g(em: _Gen) -> tuple[str, str | None]:
            e, ek = L(em)
            k, _ = R(em)
            if ek == "int" or ek == "float":
                return f"({e} {op} {k})", "bool"
            return em.guard(
                e, lambda f, x: f"type({f}) in _NUM", lambda x: f"({x} {op} {k})",
                lambda x: f"({other} if type({x}) in _PLAIN else _fb())",
            ), "bool"

        return g
    if rn.const and (rn.value is None or type(rn.value) is bool):
        isop = "is not" if neg else "is"

        def g(em: _Gen) -> tuple[str, str | None]:
            e, _ = L(em)
            k, _ = R(em)
            return f"({e} {isop} {k})", "bool"

        return g
    call = "(not _eq({x}, {y}))" if neg else "_eq({x}, {y})"

    def g_any(em: _Gen) -> tuple[str, str | None]:
        le, lk = L(em)
        re_, rk = R(em)
        if lk == rk and lk in ("str", "int", "float", "bool") and le in em.atoms and re_ in em.atoms:
            return f"({le} {op} {re_})", "bool"  # one scalar type: Python's == is _eq
        fx, x, fy, y = _g_pair(em, le, re_)
        return (
            f"(({x} {op} {y}) if type({fx}) is type({fy}) and type({x}) in _SCALARS "
            f"else {call.format(x=x, y=y)})"
        ), "bool"

    return g_any


def _g_cmp(op: str, ln: _N, rn: _N, L: Gen | None, R: Gen | None) -> Gen | None:
    """Mirrors ``operators.relop`` for ``< <= > >=``."""
    if L is None or R is None:
        return None
    sym, helper = _FAST_CMP[op]
    if rn.const and type(rn.value) in (int, float) and not ln.const:
        kf = type(rn.value) is float  # the closure (_cmp_num_const) compares float(int) then

        def g(em: _Gen) -> tuple[str, str | None]:
            e, ek = L(em)
            k, _ = R(em)
            if ek == "float" or ek == "int" and not kf:
                return f"({e} {sym} {k})", "bool"
            if ek == "int":
                return f"(float({e}) {sym} {k})", "bool"
            if kf:
                return em.guard(
                    e, lambda f, x: f"type({f}) is float", lambda x: f"({x} {sym} {k})",
                    lambda x: f"((float({x}) {sym} {k}) if type({x}) is int else _fb())",
                ), "bool"
            return em.guard(e, lambda f, x: f"type({f}) in _NUM", lambda x: f"({x} {sym} {k})"), "bool"

        return g

    def g_any(em: _Gen) -> tuple[str, str | None]:
        le, _ = L(em)
        re_, _ = R(em)
        fx, x, fy, y = _g_pair(em, le, re_)
        return (
            f"(({x} {sym} {y}) if type({fx}) is type({fy}) and type({x}) in _ORD "
            f"else {helper}({x}, {y}))"
        ), "bool"

    return g_any


def _g_str_method(name: str, S: Gen | None, P: Gen | None) -> Gen | None:
    """contains / startsWith / endsWith on two strings (else fall back)."""
    if S is None or P is None:
        return None
    use = {"contains": "({y} in {x})", "startsWith": "{x}.startswith({y})",
           "endsWith": "{x}.endswith({y})"}[name]

    def g(em: _Gen) -> tuple[str, str | None]:
        se, sk = S(em)
        pe, pk = P(em)
        fx, x, fy, y = _g_pair(em, se, pe)
        tests = []
        if not (sk == "str" and fx == x):  # a str atom needs no check
            tests.append(f"type({fx}) is str")
        if not (pk == "str" and fy == y):
            tests.append(f"type({fy}) is str")
        if not tests:
            return use.format(x=x, y=y), "bool"
        return f"({use.format(x=x, y=y)} if {' and '.join(tests)} else _fb())", "bool"

    return g


_FRESH_CONST = re.compile(r"list\((_k\d+)\)")  # a constant list's fresh copy (see `generator`)
_ITEM_KINDS = {str: "str", int: "int", float: "float", bool: "bool"}


def _items_kind(value: Any) -> str | None:
    """The kind every item of a constant list has (one exact type; a float finite), or None."""
    if type(value) is not list or not value:
        return None
    t = type(value[0])
    kind = _ITEM_KINDS.get(t)
    if kind is None or any(type(x) is not t for x in value):
        return None
    if t is float and not all(math.isfinite(x) for x in value):
        return None
    return kind


def _g_macro(kind: str, T: Callable, P: Callable, M: Callable | None, slot: int, maxit: int) -> Callable:
    """One-variable all / exists / exists_one / filter / map over a list."""
    var = f"_s{slot}"

    def g(em: _Gen) -> tuple[str, str | None]:
        te, tk = T(em)
        const = _FRESH_CONST.match(te) if tk == "list" else None
        if const is not None:  # a constant list (a policy constant): the loop reads it, no fresh copy
            seq = const.group(1)
            items = _items_kind(em.ns.get(seq))
        else:
            seq = em.value(te)
            items = em.items.get(seq) if tk == "list" else None
        em.loops = True
        if tk == "list":
            em.emit(f"if len({seq}) > {_FAST_MAX_LIST}: _fb()")
        else:
            em.emit(f"if type({seq}) is not list or len({seq}) > {_FAST_MAX_LIST}: _fb()")
        em.emit(f"_it += len({seq})")
        em.emit(f"if _it > {maxit}: _fb()")
        em.lit(var)
        r = em.tmp()
        em.emit(f"{r} = " + {"all": "True", "exists": "False", "exists_one": "0"}.get(kind, "[]"))
        em.emit(f"for {var} in {seq}:")
        em.ind += 1
        # over a list the prologue proved holds strings alone (or a constant of one kind), the
        # variable is of that kind
        saved = em.local_kinds.get(var)
        em.local_kinds[var] = items
        pe, pk = P(em)
        if kind == "map" and M is None:
            em.emit(f"{r}.append({pe})")
        else:
            pb = em.as_bool(pe, pk)
            if kind == "exists":
                em.emit(f"if {pb}:")
                em.emit(f"    {r} = True")
                em.emit("    break")
            elif kind == "all":
                em.emit(f"if not {pb}:")
                em.emit(f"    {r} = False")
                em.emit("    break")
            elif kind == "exists_one":
                em.emit(f"if {pb}:")
                em.emit(f"    {r} += 1")
            elif kind == "filter":
                em.emit(f"if {pb}:")
                em.emit(f"    {r}.append({var})")
            else:  # map with a filter
                assert M is not None
                em.emit(f"if {pb}:")
                em.ind += 1
                me, _ = M(em)
                em.emit(f"{r}.append({me})")
                em.ind -= 1
        em.local_kinds[var] = saved
        em.ind -= 1
        if kind == "exists_one":
            return f"({r} == 1)", "bool"
        return r, ("bool" if kind in ("all", "exists") else "list")

    return g


def _is_str_literal(e: str) -> bool:
    """Whether the generated expression `e` is a Python string literal (a `repr`)."""
    if not e or e[0] not in "'\"":
        return False
    try:
        return type(ast.literal_eval(e)) is str
    except (ValueError, SyntaxError):
        return False


def _g_in_strs(L: Gen | None, fs: frozenset) -> Gen | None:
    """``x in [constant strings]``: the closure's own frozenset test."""
    if L is None:
        return None

    def g(em: _Gen) -> tuple[str, str | None]:
        e, ek = L(em)
        if ek == "str" and _is_str_literal(e):  # a field the caller matched (the action's type): known now
            return ("True" if ast.literal_eval(e) in fs else "False"), "bool"
        k = em.bind(fs)
        if ek == "str":
            return f"({e} in {k})", "bool"
        # another plain type is in no list of strings; a subclass or a non-CEL value: the closure
        return em.guard(e, lambda f, x: f"type({f}) is str", lambda x: f"({x} in {k})",
                        lambda x: f"(False if type({x}) in _PLAIN else _fb())"), "bool"

    return g


def _g_in(rn: _N, L: Gen | None, R: Gen | None) -> Gen | None:
    if L is None or R is None:
        return None

    def g(em: _Gen) -> tuple[str, str | None]:
        e, _ = L(em)
        r = em.bind(rn.value) if rn.const else R(em)[0]  # a constant list is never mutated
        return f"_contains_in({e}, {r})", "bool"

    return g


_FAST_FLOAT_OPS = {"addition_add": "+", "addition_sub": "-", "multiplication_mul": "*"}


def _g_binop(opname: str, f: Callable, L: Callable | None, R: Callable | None) -> Callable | None:
    """Arithmetic: float op float inline (what the helpers do), anything else the helper."""
    if L is None or R is None:
        return None
    sym = _FAST_FLOAT_OPS.get(opname)

    def g(em: _Gen) -> tuple[str, str | None]:
        le, _ = L(em)
        re_, _ = R(em)
        fn = em.bind(f)
        if sym is None:
            return f"{fn}({le}, {re_})", None
        fx, x, fy, y = _g_pair(em, le, re_)
        return f"(({x} {sym} {y}) if type({fx}) is float and type({fy}) is float else {fn}({x}, {y}))", None

    return g


def _g_chain(first: Callable | None, rest: list[tuple[Callable, Callable | None]]) -> Callable | None:
    if first is None or any(R is None for _, R in rest):
        return None

    def g(em: _Gen) -> tuple[str, str | None]:
        e, _ = first(em)
        for f, R in rest:
            assert R is not None
            e = f"{em.bind(f)}({e}, {R(em)[0]})"
        return e, None

    return g


def _g_not(F: Callable | None, count: int) -> Callable | None:
    if F is None:
        return None

    def g(em: _Gen) -> tuple[str, str | None]:
        e, k = F(em)
        if count % 2 == 0:
            return em.as_bool(e, k), "bool"
        if k == "bool":
            return f"(not {e})", "bool"
        return em.guard(e, lambda f, x: f"type({f}) is bool", lambda x: f"(not {x})"), "bool"

    return g


def _g_neg(F: Callable | None, count: int) -> Callable | None:
    if F is None:
        return None

    def g(em: _Gen) -> tuple[str, str | None]:
        e, _ = F(em)
        for _ in range(count):
            e = f"_neg({e})"
        return e, None

    return g


def _g_select(F: Callable | None, name: str) -> Callable | None:
    if F is None:
        return None

    def g(em: _Gen) -> tuple[str, str | None]:
        e, _ = F(em)
        return _g_sel(em, e, name), None

    return g


def _g_apply(f: Callable, gs: list[Callable | None]) -> Callable | None:
    """Any function or method: call the closure's own helper."""
    if any(x is None for x in gs):
        return None

    def g(em: _Gen) -> tuple[str, str | None]:
        args = [x(em)[0] for x in gs]  # type: ignore[misc]
        return _g_call(em, f, args), None

    return g


def _g_ident(path: tuple[str, ...], dotted: list[str]) -> Callable:
    """A free variable and its field chain; any dotted activation key that could resolve
    the chain (qualified names) makes it fall back."""
    root = path[0]

    def g(em: _Gen) -> tuple[str, str | None]:
        e, kind = em.root(root, len(path) > 1)
        for k in dotted:
            em.dotted[k] = None
        for i, name in enumerate(path[1:]):
            if i <= 1 and kind == "dict":
                # fields the fused function's prologue has read (see ``fuse``)
                lit = em.known.get((root, name)) if i == 0 else None
                if lit is not None:
                    e, kind = em.lit(lit), "str"
                    continue
                f = em.fields.get((root, name) if i == 0 else (root, path[1], name))
                if f is not None:
                    var, fkind, missing = f[0], f[1], f[2]  # (a 4th item: the kind of a list's items)
                    if missing:  # it may be absent: reading it falls back (a missing key)
                        e, kind = f"({var} if {var} is not _MISS else _fb())", None
                    else:
                        e, kind = em.lit(var), fkind
                    continue
            e = _g_sel(em, e, name, kind)
            kind = None
        return e, kind

    return g


def _g_local(slot: int, fields: tuple[str, ...]) -> Callable:
    var = f"_s{slot}"

    def g(em: _Gen) -> tuple[str, str | None]:
        e = em.lit(var)
        if not fields:  # a macro's variable over a list of items of a known kind (see _g_macro)
            return e, em.local_kinds.get(var)
        for name in fields:
            e = _g_sel(em, e, name)
        return e, None

    return g


def _g_size(R: Callable | None) -> Callable | None:
    if R is None:
        return None

    def g(em: _Gen) -> tuple[str, str | None]:
        e, k = R(em)
        if k == "list" or k == "str" or k == "dict":
            return f"len({e})", "int"
        return em.guard(e, lambda f, x: f"type({f}) in _SIZED", lambda x: f"len({x})"), "int"

    return g


def _g_has(F: Callable | None, field: str) -> Callable | None:
    if F is None:
        return None

    def g(em: _Gen) -> tuple[str, str | None]:
        e, k = F(em)
        if em.is_literal(e):
            return "_fb()", "bool"
        if k == "dict":
            return f"({field!r} in {e})", "bool"
        return em.guard(e, lambda f, x: f"type({f}) is dict", lambda x: f"({field!r} in {x})"), "bool"

    return g


def _g_search(S: Callable | None, rx: Any, found: Callable) -> Callable | None:
    """A constant regex: the closure's cost check (raises a budget error; inlined as the
    length it allows), then the search."""
    if S is None:
        return None

    def g(em: _Gen) -> tuple[str, str | None]:
        e, ek = S(em)
        k = em.bind(rx)
        search = em.bind(found)
        cost = em.bind(_regex_cost_check)
        limit = REGEX_MAX_COST // max(1, rx.programsize)  # len(s) * size > MAX <=> len(s) > MAX // size

        def use(x: str) -> str:
            return f"((len({x}) > {limit} and {cost}({x}, {k})) or {search}({x}))"

        if ek == "str" and e in em.atoms:
            return use(e), "bool"
        return em.guard(e, lambda f, x: f"type({f}) is str", use), "bool"

    return g


def _g_list(gs: list[Callable | None]) -> Callable | None:
    if any(x is None for x in gs):
        return None

    def g(em: _Gen) -> tuple[str, str | None]:
        return "[" + ", ".join(x(em)[0] for x in gs) + "]", "list"  # type: ignore[misc]

    return g


def _g_bind(slot: int, init: Callable | None, body: Callable | None) -> Callable | None:
    if init is None or body is None:
        return None

    def g(em: _Gen) -> tuple[str, str | None]:
        ie, _ = init(em)
        em.emit(f"_s{slot} = {ie}")
        em.lit(f"_s{slot}")
        return body(em)

    return g




# ---------------------------------------------------------------------------
# The pass: a compiled tree (nodes.py) -> the generator of its fast path
# ---------------------------------------------------------------------------


_OPTIONAL_FNS = frozenset(f for table in optional_tables() for f in table.values())


def generator(n: _N) -> Gen | None:
    """The fast-path generator of a compiled node (from its ``op``), or None when the node
    is outside the fast-path subset. Reads the tree the reference compiler built; never
    changes it."""
    op = n.op
    if op is None:
        return None
    k = op[0]
    if k == "const":  # (an optional is for the closures: optional.py)
        return None if type(n.value) is CelOptional else _g_const(n.value)
    if k == "ident":
        return _g_ident(op[1], list(op[2]))
    if k == "local":
        return _g_local(op[1], op[2])
    if k == "ternary":
        gs = [generator(x) for x in op[1:]]
        return _g_ternary(*gs) if all(gs) else None  # type: ignore[arg-type]
    if k == "logic":
        gs = [generator(x) for x in op[1]]
        return _g_logic(gs, not op[2]) if all(gs) else None  # type: ignore[arg-type]
    if k == "eq":
        _, ln, rn, neg = op
        if ln.const and not rn.const:  # operators._eq_fn swaps the same way
            ln, rn = rn, ln
        return _g_eq(ln, rn, generator(ln), generator(rn), neg)
    if k == "cmp":
        _, name, ln, rn = op
        return _g_cmp(name, ln, rn, generator(ln), generator(rn))
    if k == "in_strs":
        return _g_in_strs(generator(op[1]), op[2])
    if k == "in":
        return _g_in(op[2], generator(op[1]), generator(op[2]))
    if k == "chain":
        return _g_chain(generator(op[1]), [(f, generator(x)) for f, x in op[2]])
    if k == "binop":
        _, name, f, ln, rn = op
        return _g_binop(name, f, generator(ln), generator(rn))
    if k == "not":
        return _g_not(generator(op[1]), op[2])
    if k == "neg":
        return _g_neg(generator(op[1]), op[2])
    if k == "select":
        return _g_select(generator(op[1]), op[2])
    if k == "apply":
        return None if op[1] in _OPTIONAL_FNS else _g_apply(op[1], [generator(x) for x in op[2]])
    if k == "search":
        return _g_search(generator(op[1]), op[2], op[3])
    if k == "size":
        return _g_size(generator(op[1]))
    if k == "str_method":
        return _g_str_method(op[1], generator(op[2]), generator(op[3]))
    if k == "has":
        return _g_has(generator(op[1]), op[2])
    if k == "macro":
        _, kind, target, body, m, slot, maxit = op
        T, P = generator(target), generator(body)
        M = generator(m) if m is not None else None
        if T is None or P is None or (m is not None and M is None):
            return None
        return _g_macro(kind, T, P, M, slot, maxit)
    if k == "bind":
        return _g_bind(op[1], generator(op[2]), generator(op[3]))
    if k == "list":
        return _g_list([generator(x) for x in op[1]])
    raise AssertionError(f"unknown node op {k!r}")  # a new op needs a case here (or None)


def plan(root: _N) -> _N | None:
    """What ``CompiledExpr`` keeps for its fast path: the tree, unless it is too deep."""
    return root if root.depth <= _FAST_MAX_DEPTH and root.op is not None else None


def generator_of(expr: Any) -> Gen | None:
    """The generator of a ``CompiledExpr``'s fast path, or None: outside the subset, or
    compiled with ``accelerate=False``. The generator carries the condition's field guard as
    its ``field_guard`` attribute (see ``field_guard``). Made anew from the kept tree at each
    call (once per fast path or fused gate built): a kept generator is about three times the
    tree's objects (its closures' cells), which every full collection of the host walks
    (issue 16, goal 5). A released expression compiles its tree again first (``_tree``)."""
    p = expr._tree()
    if p is None:
        return None
    g = generator(p)
    if g is not None:
        g.field_guard = field_guard(p)  # type: ignore[attr-defined]
    return g


def field_guard(n: _N) -> tuple[str, frozenset[str]] | None:
    """(field, values) when the node is ``false`` whenever the top-level action field
    ``field`` holds a str outside ``values``, with no error and nothing else evaluated
    (what the fused gates index conditions by; see ``fuse``); None when not known.

    ``action.f == "v"`` -> (f, {v}); ``action.f in ["v", ...]`` -> those; ``a && b`` -> a's
    (``&&`` stops at its first ``false`` operand, before anything later could raise);
    ``a || b || ...`` -> the union, when every operand has one on the same field. The
    same reasoning as ``analysis.type_guard``, for any field: a str compared with a str
    constant is never an error."""
    op = n.op
    if op is None or n.const:
        return None
    k = op[0]
    if k == "eq":
        _, ln, rn, neg = op
        if not neg:
            for x, c in ((ln, rn), (rn, ln)):
                p = x.path
                if p is not None and len(p) == 2 and p[0] == "action" and c.const and type(c.value) is str:
                    return p[1], frozenset((c.value,))
        return None
    if k == "in_strs":
        p = op[1].path
        if p is not None and len(p) == 2 and p[0] == "action":
            return p[1], frozenset(op[2])
        return None
    if k == "logic":
        live, is_and = op[1], op[2]
        if is_and:
            return field_guard(live[0])
        guards = [field_guard(x) for x in live]
        if guards and all(g is not None and g[0] == guards[0][0] for g in guards):  # type: ignore[index]
            return guards[0][0], frozenset().union(*(g[1] for g in guards))  # type: ignore[index]
    return None


def _build_fast(gen: Gen, limits: Limits) -> tuple[Callable | None, str | None]:
    """Generate and compile ``fast(a)`` from a node's generator; (None, None) if that fails."""
    try:
        em = _Gen(limits.max_iterations)
        e, _ = gen(em)
        src = em.source(e)
        ns: dict[str, Any] = {"__builtins__": {}}
        ns.update(_FAST_GLOBALS)
        ns.update(em.ns)
        exec(compile(src, "<cel-fast>", "exec"), ns)  # noqa: S102 - generated, see above
        return ns["fast"], src
    except Exception:  # too deep for Python's compiler, etc.: no fast path
        return None, None

