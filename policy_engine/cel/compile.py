"""The reference compiler: a CEL parse tree -> a tree of plain Python closures.

cel-python's Lark parser (``celpy.celparser.CELParser``) is the source of truth for CEL
syntax (see parse.py); ``_Compiler`` walks its parse tree once and builds a tree of closures
``fn(activation, ctx)`` that work directly on plain Python values (see values.py).

Inside the closures a CEL error travels as the private ``_Fail`` exception; ``&&``, ``||``,
``?:`` and the ``all``/``exists`` macros absorb it where CEL says so, and
``CompiledExpr.__call__`` (api.py) turns whatever is left into a ``CelError`` *value*.

Per-call state (comprehension variable slots, the iteration budget) lives in a small list
created per evaluation (``ctx[0]`` counts comprehension iterations, ``ctx[1:]`` holds
comprehension variables), only for expressions that need it; there is no shared mutable
state, so a compiled expression may be evaluated from many threads.

This module is the meaning of a condition. The generated fast path (codegen.py) and the
analyses (analysis.py) are separate passes over the finished tree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .builtins import _builtin_tables
from .errors import CelCompileError, _absorbable, _Fail
from .limits import Limits
from .macros import _Macros
from .nodes import _MACROS, _N, _PASSTHRU, _const, _const_value
from .operators import _Operators
from .optional import list_with_entries, map_with_entries
from .parse import QUOTED_IDENT, _parse_int_lit, _span, _string_literal
from .regex import _found, _matches, _re2_compile_raw, _regex_cost_check
from .values import (
    _TYPE_IDENTS,
    INT64_MAX,
    INT64_MIN,
    UINT64_MAX,
    CelOptional,
    CelUint,
    _check_key,
    _fmt_key,
    _index,
    _make_add,
    _map_lookup,
    _no_overload,
    _opt_index,
    _opt_select,
    _select,
    _size,
    _Sizes,
)

_MEMBER_OPS = frozenset({"member", "member_dot", "member_dot_arg", "member_index", "member_object",
                         "member_dot_opt", "member_index_opt"})


@dataclass(frozen=True)
class Reference:
    """An identifier, or a dotted select chain rooted at one, e.g. ``("action", "amount")``."""

    path: tuple[str, ...]
    offset: int
    end: int



_TABLES: dict[int, tuple] = {}  # max_size -> (sizes, functions, methods, add), read only


class _Compiler(_Operators, _Macros):
    """Walks a CEL parse tree once and builds the closure tree (``c(node) -> _N``).

    The closures are the meaning of the expression (the reference). Each node also records
    in ``op`` what it computes, for passes that run afterwards (see nodes.py); nothing here
    generates code or decides about accelerations. Operators live in operators.py, the
    macros in macros.py (mixins of this class).
    """

    def __init__(self, source: str, limits: Limits, constants: Mapping[str, Any] | None = None) -> None:
        self.source = source
        self.limits = limits
        self.constants = constants
        tables = _TABLES.get(limits.max_size)
        if tables is None:  # the helpers are stateless: built once per size limit, shared
            sizes = _Sizes(limits.max_size)
            tables = _TABLES[limits.max_size] = (sizes, *_builtin_tables(sizes), _make_add(sizes))
        self.sizes, self.glob, self.meth, self.add = tables
        self.refs: list[Reference] = []
        self.has_fields: dict[int, str] = {}  # Reference index -> the field a has() tests
        # spans that only the parse tree with positions gives exactly (see compile_cel)
        self.exact = False
        self.scopes: list[dict[str, int]] = []
        self.nslots = 1  # ctx[0] is the iteration count, ctx[1:] the variable slots
        self.needs_ctx = False
        self.max_depth = max(4 * limits.max_nesting_depth, 64)

    # -- errors ------------------------------------------------------------

    def err(self, node: Any, message: str, hint: str | None = None) -> CelCompileError:
        s, e = _span(node, len(self.source))
        return CelCompileError(message, s, e, hint)

    def mk(self, fn: Callable, *kids: _N, node: Any = None) -> _N:
        depth = 0
        for k in kids:
            if k.depth > depth:
                depth = k.depth
        depth += 1
        if depth > self.max_depth:
            raise self.err(node, "expression is too deeply nested", "split the condition up")
        return _N(fn, False, None, depth)

    def fold(self, n: _N, kids: tuple[_N, ...]) -> _N:
        """Evaluate an operator over constant children at compile time, if it succeeds."""
        if kids and all(k.const for k in kids):
            try:
                v = n.fn(None, None)
            except Exception:
                return n
            if type(v) in (list, dict):
                return n  # mutable results are rebuilt per call
            return _const(v)
        return n

    # -- dispatch ----------------------------------------------------------

    def c(self, node: Any) -> _N:
        while True:
            if isinstance(node, str):  # a lark Token (a str subclass; a Tree is not one)
                raise self.err(node, f"unexpected token {getattr(node, 'value', node)!r}")
            d = node.data
            if d in _PASSTHRU and len(node.children) == 1:
                node = node.children[0]
                continue
            break
        handler = _HANDLERS.get(d)
        if handler is None:
            raise self.err(node, f"unsupported syntax ({d})")
        return handler(self, node)

    # -- ternary / logic ---------------------------------------------------

    def c_expr(self, node: Any) -> _N:
        # flatten `a ? b : c ? d : e` iteratively
        pairs = []
        while node.data == "expr" and len(node.children) == 3:
            cond, then, rest = node.children
            pairs.append((self.c(cond), self.c(then), cond))
            node = rest
            while node.data == "expr" and len(node.children) == 1:
                node = node.children[0]
        other = self.c(node)
        for cn, tn, cnode in reversed(pairs):
            other = self.ternary(cn, tn, other, cnode)
        return other

    def ternary(self, cn: _N, tn: _N, en: _N, node: Any) -> _N:
        if cn.const and (cn.value is True or cn.value is False):
            return tn if cn.value else en
        C, T, E = cn.fn, tn.fn, en.fn

        def fn(a: Any, c: Any) -> Any:
            v = C(a, c)
            if v is True:
                return T(a, c)
            if v is False:
                return E(a, c)
            raise _no_overload("_?_:_", v)

        n = self.mk(fn, cn, tn, en, node=node)
        n.op = ("ternary", cn, tn, en)
        return n

    def _flatten(self, node: Any, name: str) -> list:
        items = []
        while node.data == name and len(node.children) == 2:
            items.append(node.children[1])
            node = node.children[0]
            while node.data == name and len(node.children) == 1 and getattr(
                node.children[0], "data", None
            ) == name:
                node = node.children[0]
        items.append(node)
        items.reverse()
        return items

    def c_conditionalor(self, node: Any) -> _N:
        return self.logic(node, "conditionalor", False)

    def c_conditionaland(self, node: Any) -> _N:
        return self.logic(node, "conditionaland", True)

    def logic(self, node: Any, name: str, is_and: bool) -> _N:
        kids = [self.c(k) for k in self._flatten(node, name)]
        n = self._logic(kids, is_and, node)
        # the same operands as the closures: constant identity elements dropped
        live = [k for k in kids if not (k.const and k.value is is_and)]
        if not n.const and live:
            n.op = ("logic", tuple(live), is_and)
        return n

    def _logic(self, kids: list[_N], is_and: bool, node: Any) -> _N:
        stop = not is_and  # the deciding value: False for &&, True for ||
        op = "_&&_" if is_and else "_||_"
        live: list[_N] = []
        for k in kids:
            if k.const and k.value is stop:
                return _const(stop)
            if k.const and k.value is (not stop):
                continue  # identity element
            live.append(k)
        if not live:
            return _const(not stop)
        fns = tuple(k.fn for k in live)
        if len(fns) == 1:
            (F,) = fns

            def one(a: Any, c: Any) -> Any:
                v = F(a, c)
                if v is True or v is False:
                    return v
                raise _no_overload(op, v)

            return self.mk(one, *live, node=node)
        if 2 < len(fns) <= 8:
            # (a && b) && c has the same commutative error semantics as the n-ary form,
            # and nested binary closures avoid a loop per call
            acc = live[0]
            for k in live[1:]:
                acc = self._logic2(acc, k, stop, op, node)
            return acc
        if len(fns) == 2:
            return self._logic2(live[0], live[1], stop, op, node)

        def many(a: Any, c: Any) -> Any:
            err = None
            for F in fns:
                try:
                    v = F(a, c)
                except Exception as ex:
                    if not _absorbable(ex):
                        raise
                    if err is None:
                        err = ex
                    continue
                if v is stop:
                    return stop
                if v is not (not stop) and err is None:
                    err = _no_overload(op, v)
            if err is not None:
                raise err
            return not stop

        return self.mk(many, *live, node=node)

    def _logic2(self, ln: _N, rn: _N, stop: bool, op: str, node: Any) -> _N:
        L, R = ln.fn, rn.fn

        def two(a: Any, c: Any, L: Callable = L, R: Callable = R, stop: bool = stop, op: str = op) -> Any:
            try:
                lv = L(a, c)
            except Exception as ex:
                if not _absorbable(ex):
                    raise
                r = R(a, c)
                if r is stop:
                    return stop
                raise
            if lv is stop:
                return stop
            if lv is not (not stop):
                r = R(a, c)
                if r is stop:
                    return stop
                raise _no_overload(op, lv)
            r = R(a, c)
            if r is True or r is False:
                return r
            raise _no_overload(op, r)

        return self.mk(two, ln, rn, node=node)

    # -- members -----------------------------------------------------------

    def c_member(self, node: Any) -> _N:
        # collect the postfix operations from the innermost primary outwards
        ops = []
        while node.data in _MEMBER_OPS:
            if node.data == "member":
                if len(node.children) != 1:
                    raise self.err(node, "unsupported member syntax")
                node = node.children[0]
                continue
            ops.append(node)
            node = node.children[0]
        ops.reverse()
        base = node  # a 'primary' (or deeper) node
        while getattr(base, "data", None) == "primary" and len(base.children) == 1:
            base = base.children[0]

        i = 0
        cur: _N | None = None
        bd = getattr(base, "data", None)
        if bd in ("ident", "dot_ident"):
            name = base.children[0].value
            path = [name]
            plain = 0  # the names before the first backquoted one (`a.b.`c-d``: 2)
            j = 0
            while j < len(ops) and ops[j].data == "member_dot":
                tok = ops[j].children[1]
                if not plain and tok.type == QUOTED_IDENT:
                    plain = len(path)
                path.append(tok.value)
                j += 1
            plain = plain or len(path)
            # `math.greatest(...)`, `strings.quote(...)`: a namespaced global function
            if (
                j < len(ops)
                and ops[j].data == "member_dot_arg"
                and plain == len(path)
                and self.lookup_local(name) is None
            ):
                fq = ".".join(path + [ops[j].children[1].value])
                if fq == "cel.bind":
                    cur = self.bind_macro(self.argnodes(ops[j]), ops[j])
                    i = j + 1
                elif fq in self.glob:
                    cur = self.call_global(fq, self.args(ops[j]), ops[j])
                    i = j + 1
            if cur is None:
                end_node = ops[j - 1] if j > 0 else base
                cur = self.ident_chain(tuple(path), base, end_node, plain)
                i = j
        else:
            cur = self.c(base)
        for op in ops[i:]:
            cur = self.postfix(cur, op)
        return cur

    c_member_dot = c_member
    c_member_dot_arg = c_member
    c_member_index = c_member
    c_member_object = c_member
    c_member_dot_opt = c_member
    c_member_index_opt = c_member

    def postfix(self, cur: _N, op: Any) -> _N:
        d = op.data
        if d == "member_dot":
            name = op.children[1].value
            F = cur.fn

            def sel(a: Any, c: Any) -> Any:
                v = F(a, c)
                if type(v) is dict:
                    try:
                        return v[name]
                    except KeyError:
                        raise _Fail(f"no such key: '{name}'") from None
                return _select(v, name)

            n = self.mk(sel, cur, node=op)
            n.op = ("select", cur, name)
            return self.fold(n, (cur,))
        if d == "member_index":
            kn = self.c(op.children[1])
            F, K = cur.fn, kn.fn

            def idx(a: Any, c: Any) -> Any:
                return _index(F(a, c), K(a, c))

            n = self.mk(idx, cur, kn, node=op)
            n.op = ("apply", _index, (cur, kn))
            return self.fold(n, (cur, kn))
        if d == "member_dot_opt" or d == "member_index_opt":  # `x.?f`, `x[?k]` (optional.py)
            kn = _const(op.children[1].value) if d == "member_dot_opt" else self.c(op.children[1])
            F, K, f = cur.fn, kn.fn, _opt_select if d == "member_dot_opt" else _opt_index

            def opt(a: Any, c: Any, F: Callable = F, K: Callable = K, f: Callable = f) -> Any:
                return f(F(a, c), K(a, c))

            return self.fold(self.mk(opt, cur, kn, node=op), (cur, kn))  # (no op: closures only)
        if d == "member_dot_arg":
            name = op.children[1].value
            argnodes = self.argnodes(op)
            if name in _MACROS:
                return self.macro(name, cur, argnodes, op)
            if name == "optMap" or name == "optFlatMap":
                return self.opt_map_macro(name, cur, argnodes, op)
            return self.call_method(name, cur, [self.c(x) for x in argnodes], op)
        if d == "member_object":
            raise self.err(
                op, "message construction is not supported",
                "Stopline conditions work on maps and lists; use a map literal `{...}`",
            )
        raise self.err(op, f"unsupported syntax ({d})")

    def argnodes(self, node: Any) -> list:
        for ch in node.children:
            if getattr(ch, "data", None) == "exprlist":
                return list(ch.children)
        return []

    def args(self, node: Any) -> list[_N]:
        return [self.c(x) for x in self.argnodes(node)]

    def lookup_local(self, name: str) -> int | None:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return None

    def ident_chain(self, path: tuple[str, ...], first: Any, last: Any, plain: int = 0) -> _N:
        """A name and its selects; only the first ``plain`` names (all by default) form
        qualified names (`a.b` may be the activation's key "a.b"; `a.`b`` never is)."""
        plain = plain or len(path)
        root = path[0]
        slot = self.lookup_local(root)
        if slot is not None:
            self.needs_ctx = True

            def local(a: Any, c: Any, slot: int = slot) -> Any:
                return c[slot]

            cur = self.mk(local)
            if len(path) >= 2:
                f1 = path[1]

                def local1(a: Any, c: Any, slot: int = slot, f1: str = f1) -> Any:
                    v = c[slot]
                    if type(v) is dict:
                        try:
                            return v[f1]
                        except KeyError:
                            raise _Fail(f"no such key: '{f1}'") from None
                    return _select(v, f1)

                cur = self.mk(local1)
            for name in path[2:]:
                F = cur.fn

                def sel(a: Any, c: Any, F: Callable = F, name: str = name) -> Any:
                    v = F(a, c)
                    if type(v) is dict:
                        try:
                            return v[name]
                        except KeyError:
                            raise _Fail(f"no such key: '{name}'") from None
                    return _select(v, name)

                cur = self.mk(sel, cur)
            cur.op = ("local", slot, path[1:])
            return cur
        start, _ = _span(first, len(self.source))
        _, end = _span(last, len(self.source))
        full = ".".join(path[:plain])  # (a backquoted name is a field, never part of a type's name)
        if plain == len(path) and (full in _TYPE_IDENTS or root in _TYPE_IDENTS and len(path) == 1):
            t = _TYPE_IDENTS.get(full)
            if t is not None:
                return _const(t)
        if root == "google" and plain >= 3 and ".".join(path[:3]) in _TYPE_IDENTS:
            t = _TYPE_IDENTS[".".join(path[:3])]
            cur = _const(t)
            for name in path[3:]:
                cur = self.postfix_select(cur, name)
            return cur
        self.refs.append(Reference(path, start, end))
        if self.constants is not None and root in self.constants:
            # Compile-time constants (e.g. `policy.refund_limit`): fold the chain into a literal,
            # so `x in policy.blocked` gets the same fast paths as a literal list.
            val = self.constants[root]
            for name in path[1:]:
                if isinstance(val, Mapping) and name in val:
                    val = val[name]
                else:
                    break
            else:
                return _const(_const_value(val))
        # candidates for qualified-name resolution: the longest dotted prefix wins
        cands = tuple((".".join(path[:k]), path[k:]) for k in range(plain, 0, -1))
        if len(path) == 1:

            def ident(a: Any, c: Any, root: str = root) -> Any:
                try:
                    return a[root]
                except KeyError:
                    raise _Fail(f"undeclared reference to '{root}'") from None
                except TypeError:
                    raise _Fail(f"undeclared reference to '{root}'") from None

            n = self.mk(ident)
            n.op = ("ident", path, ())
            n.path = path
            n.refi = len(self.refs) - 1
            return n
        if len(path) == 2 and plain == 2:
            dotted = full
            field = path[1]

            def ident2(a: Any, c: Any, dotted: str = dotted, root: str = root, field: str = field) -> Any:
                if dotted in a:
                    return a[dotted]
                try:
                    v = a[root]
                except KeyError:
                    raise _Fail(f"undeclared reference to '{root}'") from None
                if type(v) is dict:
                    try:
                        return v[field]
                    except KeyError:
                        raise _Fail(f"no such key: '{field}'") from None
                return _select(v, field)

            n = self.mk(ident2)
            n.op = ("ident", path, (dotted,))
            n.path = path
            return n

        def identn(a: Any, c: Any, cands: tuple = cands, root: str = root) -> Any:
            for key, rest in cands:
                if key in a:
                    v = a[key]
                    for name in rest:
                        if type(v) is dict:
                            try:
                                v = v[name]
                            except KeyError:
                                raise _Fail(f"no such key: '{name}'") from None
                        else:
                            v = _select(v, name)
                    return v
            raise _Fail(f"undeclared reference to '{root}'")

        n = self.mk(identn)
        n.op = ("ident", path, tuple(key for key, _ in cands if "." in key))
        if len(path) == 2:  # (`a.`b-c``: a field of a variable, as `a.b` is)
            n.path = path
        return n

    def postfix_select(self, cur: _N, name: str) -> _N:
        F = cur.fn

        def sel(a: Any, c: Any) -> Any:
            return _select(F(a, c), name)

        n = self.mk(sel, cur)
        n.op = ("apply", _select, (cur, _const(name)))
        return n

    # -- calls -------------------------------------------------------------

    def call_global(self, name: str, args: list[_N], node: Any) -> _N:
        f = self.glob.get(name)
        if f is None:
            return self.unbound(name, args, node)
        if name == "matches" and len(args) == 2 and args[1].const:
            return self.matches_const(args[0], args[1], node)
        return self.apply(f, args, node)

    def unbound(self, name: str, args: list[_N], node: Any) -> _N:
        fns = tuple(a.fn for a in args)

        def fn(a: Any, c: Any) -> Any:
            for F in fns:
                F(a, c)
            raise _Fail(f"unbound function: {name}")

        return self.mk(fn, *args, node=node)

    def apply(self, f: Callable, args: list[_N], node: Any) -> _N:
        fns = tuple(a.fn for a in args)
        fn: Callable[..., Any]  # (the functions take what they use as defaults: no cells for the collector)
        if len(fns) == 1:
            (A,) = fns

            def fn1(a: Any, c: Any, f: Callable = f, A: Callable = A) -> Any:
                return f(A(a, c))

            fn = fn1

        elif len(fns) == 2:
            A, B = fns

            def fn2(a: Any, c: Any, f: Callable = f, A: Callable = A, B: Callable = B) -> Any:
                return f(A(a, c), B(a, c))

            fn = fn2

        else:

            def fnn(a: Any, c: Any, f: Callable = f, fns: tuple = fns) -> Any:
                return f(*[F(a, c) for F in fns])

            fn = fnn

        n = self.mk(fn, *args, node=node)
        n.op = ("apply", f, tuple(args))
        return self.fold(n, tuple(args))

    def matches_const(self, sn: _N, pn: _N, node: Any) -> _N:
        pat = pn.value
        if type(pat) is not str:
            return self.apply(_matches, [sn, pn], node)
        try:
            rx = _re2_compile_raw(pat)
        except Exception as ex:
            msg = f"invalid regular expression {pat!r}: {ex}"
            S = sn.fn

            def bad(a: Any, c: Any) -> Any:
                S(a, c)
                raise _Fail(msg)

            return self.mk(bad, sn, node=node)
        found = _found(rx)
        S = sn.fn

        def fn(a: Any, c: Any) -> Any:
            s = S(a, c)
            if type(s) is not str:
                raise _no_overload("matches", s)
            _regex_cost_check(s, rx)
            return found(s)

        n = self.mk(fn, sn, node=node)
        n.op = ("search", sn, rx, found)
        return self.fold(n, (sn,))

    def call_method(self, name: str, recv: _N, args: list[_N], node: Any) -> _N:
        f = self.meth.get(name)
        if f is None:
            return self.unbound(name, [recv] + args, node)
        if name == "matches" and len(args) == 1 and args[0].const:
            return self.matches_const(recv, args[0], node)
        if (name == "or" or name == "orValue") and len(args) == 1:  # the alternative only when none
            R, D, f = recv.fn, args[0].fn, self.meth[name]

            def alt(a: Any, c: Any, R: Callable = R, D: Callable = D, f: Callable = f) -> Any:
                o = R(a, c)
                return f(o, None) if type(o) is CelOptional and o.present else f(o, D(a, c))

            return self.fold(self.mk(alt, recv, args[0], node=node), (recv, args[0]))
        if name == "size" and not args:
            R = recv.fn

            def size(a: Any, c: Any, R: Callable = R) -> Any:
                v = R(a, c)
                t = type(v)
                if t is list or t is str or t is dict or t is bytes:
                    return len(v)
                return _size(v)

            n = self.mk(size, recv, node=node)
            n.op = ("size", recv)
            return self.fold(n, (recv,))
        n = self.apply(f, [recv] + args, node)
        if name in ("contains", "startsWith", "endsWith") and len(args) == 1 and not n.const:
            n.op = ("str_method", name, recv, args[0])
        return n

    def c_ident_arg(self, node: Any) -> _N:
        name = node.children[0].value
        argnodes = self.argnodes(node)
        if name == "has":
            return self.has_macro(argnodes, node)
        args = [self.c(x) for x in argnodes]
        if name == "size" and len(args) == 1:
            return self.call_method("size", args[0], [], node)
        return self.call_global(name, args, node)

    def c_dot_ident_arg(self, node: Any) -> _N:
        self.exact = True  # the span of `.name` starts at a dot the tree does not keep
        return self.c_ident_arg(node)

    # -- primaries ---------------------------------------------------------

    def c_primary(self, node: Any) -> _N:
        return self.c_member(node)

    def c_ident(self, node: Any) -> _N:
        return self.c_member(node)

    def c_dot_ident(self, node: Any) -> _N:
        self.exact = True  # the span of `.name` starts at a dot the tree does not keep
        return self.c_member(node)

    def c_paren_expr(self, node: Any) -> _N:
        return self.c(node.children[0])

    def c_list_lit(self, node: Any) -> _N:
        if any(getattr(x, "data", None) == "opt_entry" for x in self.argnodes(node)):  # `[?o]`
            opts = [getattr(x, "data", None) == "opt_entry" for x in self.argnodes(node)]
            kids = [self.c(x.children[0] if o else x) for x, o in zip(self.argnodes(node), opts)]
            return self.mk(list_with_entries(tuple(zip([k.fn for k in kids], opts))), *kids, node=node)
        kids = self.args(node)
        fns = tuple(k.fn for k in kids)
        if kids and all(k.const for k in kids):
            vals = [k.value for k in kids]

            def const_list(a: Any, c: Any) -> Any:
                return list(vals)  # a fresh list per call: results may be mutated by callers

            n = self.mk(const_list, *kids, node=node)
            n.const, n.value = True, vals
            n.op = ("const",)
            return n

        def lst(a: Any, c: Any) -> Any:
            return [F(a, c) for F in fns]

        n = self.mk(lst, *kids, node=node)
        n.op = ("list", tuple(kids))
        return n

    def c_map_lit(self, node: Any) -> _N:
        inits = node.children[0].children if node.children else []
        opts = [getattr(x, "data", None) == "opt_entry" for x in inits]
        kids = [self.c(x.children[0] if o else x) for x, o in zip(inits, opts)]
        pairs = tuple((kids[i].fn, kids[i + 1].fn) for i in range(0, len(kids), 2))
        if any(opts):  # `{?k: o}`
            items = tuple((K, V, opts[2 * i]) for i, (K, V) in enumerate(pairs))
            return self.mk(map_with_entries(items), *kids, node=node)

        def mp(a: Any, c: Any) -> Any:
            out: dict = {}
            for K, V in pairs:
                k = _check_key(K(a, c))
                if _map_lookup(out, k)[0] or (k in out):
                    raise _Fail(f"Failed with repeated key: {_fmt_key(k)}")
                out[k] = V(a, c)
            return out

        return self.mk(mp, *kids, node=node)

    def c_literal(self, node: Any) -> _N:
        tok = node.children[0]
        t = tok.type
        text = tok.value
        try:
            if t == "INT_LIT":
                v = _parse_int_lit(text)
                if not (INT64_MIN <= v <= INT64_MAX):
                    raise self.err(tok, f"integer literal out of range: {text}", "int is 64-bit signed")
                return _const(v)
            if t == "UINT_LIT":
                v = _parse_int_lit(text[:-1])
                if not (0 <= v <= UINT64_MAX):
                    raise self.err(tok, f"uint literal out of range: {text}")
                return _const(CelUint(v))
            if t == "FLOAT_LIT":
                d = float(text)
                if d in (math.inf, -math.inf):  # (as cel-go: `1e400` is no literal, not infinity)
                    raise self.err(tok, f"double literal out of range: {text}",
                                   "a double is at most about 1.8e308: a larger literal would be infinity, "
                                   "which no value exceeds")
                return _const(d)
            if t in ("STRING_LIT", "MLSTRING_LIT", "BYTES_LIT"):
                return _const(_string_literal(text))
            if t == "BOOL_LIT":
                return _const(text == "true")
            if t == "NULL_LIT":
                return _const(None)
        except ValueError as ex:
            raise self.err(tok, f"invalid literal: {ex}") from None
        raise self.err(tok, f"unsupported literal {text!r}")


# `c`'s dispatch: tree node name -> the `c_<name>` method (what `getattr(self, "c_" + name)`
# finds: no instance attribute starts with `c_`), without a string built and a lookup
# through the mixins per node.
_HANDLERS: dict[str, Callable[[_Compiler, Any], _N]] = {
    name[2:]: getattr(_Compiler, name) for name in dir(_Compiler) if name.startswith("c_")
}
