"""Relations (``== != < <= > >= in``), arithmetic and unary operators of the reference compiler.

A mixin of ``compile._Compiler``: the closures only; each node's ``op`` says what it computes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .nodes import _N
from .values import (
    CelUint,
    _contains_in,
    _div,
    _eq,
    _exact_num_const,
    _ge,
    _gt,
    _le,
    _lt,
    _mod,
    _mul,
    _neg,
    _no_overload,
    _sub,
)


class _Operators:
    if TYPE_CHECKING:  # provided by compile._Compiler
        add: Callable[[Any, Any], Any]

        def c(self, node: Any) -> _N: ...
        def mk(self, fn: Callable, *kids: _N, node: Any = None) -> _N: ...
        def fold(self, n: _N, kids: tuple[_N, ...]) -> _N: ...

    def c_relation(self, node: Any) -> _N:
        ops = []
        while node.data == "relation" and len(node.children) == 2:
            opnode, right = node.children
            ops.append((opnode.data, right, opnode))
            node = opnode.children[0]
        left = self.c(node)
        for opname, right, opnode in reversed(ops):
            left = self.relop(opname, left, self.c(right), opnode)
        return left

    def relop(self, op: str, ln: _N, rn: _N, node: Any) -> _N:
        L, R = ln.fn, rn.fn
        if op == "relation_in":
            return self.c_in(ln, rn, node)
        if op in ("relation_eq", "relation_ne"):
            neg = op == "relation_ne"
            fn = self._eq_fn(ln, rn, neg)
            what: tuple = ("eq", ln, rn, neg)
        else:
            what = ("cmp", op, ln, rn)
            cmp = {"relation_lt": _lt, "relation_le": _le, "relation_gt": _gt, "relation_ge": _ge}[op]
            fn = None
            if rn.const and type(rn.value) in (int, float) and not ln.const:
                fn = self._cmp_num_const(op, L, rn.value)
            if fn is None:

                def cmp2(a: Any, c: Any) -> Any:
                    return cmp(L(a, c), R(a, c))

                fn = cmp2
        assert fn is not None
        n = self.mk(fn, ln, rn, node=node)
        n.op = what
        return self.fold(n, (ln, rn))

    def _cmp_num_const(self, op: str, L: Callable, k: Any) -> Callable | None:
        sym = {"relation_lt": "<", "relation_le": "<=", "relation_gt": ">", "relation_ge": ">="}[op]
        cmp = {"relation_lt": _lt, "relation_le": _le, "relation_gt": _gt, "relation_ge": _ge}[op]
        kf = type(k) is float
        # specialised closure per operator (avoids a dispatch per call)
        if sym == "<":

            def fn(a: Any, c: Any, L: Callable = L, k: Any = k, kf: bool = kf, cmp: Callable = cmp) -> Any:
                v = L(a, c)
                t = type(v)
                if t is float:
                    return v < k
                if t is int or t is CelUint:
                    return (float(v) if kf else v) < k
                return cmp(v, k)

        elif sym == "<=":

            def fn(a: Any, c: Any, L: Callable = L, k: Any = k, kf: bool = kf, cmp: Callable = cmp) -> Any:
                v = L(a, c)
                t = type(v)
                if t is float:
                    return v <= k
                if t is int or t is CelUint:
                    return (float(v) if kf else v) <= k
                return cmp(v, k)

        elif sym == ">":

            def fn(a: Any, c: Any, L: Callable = L, k: Any = k, kf: bool = kf, cmp: Callable = cmp) -> Any:
                v = L(a, c)
                t = type(v)
                if t is float:
                    return v > k
                if t is int or t is CelUint:
                    return (float(v) if kf else v) > k
                return cmp(v, k)

        else:

            def fn(a: Any, c: Any, L: Callable = L, k: Any = k, kf: bool = kf, cmp: Callable = cmp) -> Any:
                v = L(a, c)
                t = type(v)
                if t is float:
                    return v >= k
                if t is int or t is CelUint:
                    return (float(v) if kf else v) >= k
                return cmp(v, k)

        return fn

    def _eq_fn(self, ln: _N, rn: _N, neg: bool) -> Callable:
        L, R = ln.fn, rn.fn
        if ln.const and not rn.const:
            ln, rn, L, R = rn, ln, R, L
        if rn.const and type(rn.value) in (str, bytes):
            k = rn.value
            tk = type(k)

            def eqs(a: Any, c: Any, L: Callable = L, k: Any = k, tk: type = tk, neg: bool = neg) -> Any:
                # Python's == for the same type alone, else _eq
                v = L(a, c)
                if type(v) is tk:
                    return (v != k) if neg else (v == k)
                return (not _eq(v, k)) if neg else _eq(v, k)

            return eqs
        if rn.const and type(rn.value) in (int, float, CelUint) and _exact_num_const(rn.value):
            k = rn.value

            def eqn(a: Any, c: Any, L: Callable = L, k: Any = k, neg: bool = neg) -> Any:
                v = L(a, c)
                t = type(v)
                if t is int or t is float or t is CelUint:
                    return (v != k) if neg else (v == k)
                return (not _eq(v, k)) if neg else _eq(v, k)

            return eqn
        if rn.const and (rn.value is None or type(rn.value) is bool):
            k = rn.value
            if neg:
                return lambda a, c, L=L, k=k: L(a, c) is not k
            return lambda a, c, L=L, k=k: L(a, c) is k
        if neg:
            return lambda a, c, L=L, R=R: not _eq(L(a, c), R(a, c))
        return lambda a, c, L=L, R=R: _eq(L(a, c), R(a, c))

    def c_in(self, ln: _N, rn: _N, node: Any) -> _N:
        L, R = ln.fn, rn.fn
        if rn.const and type(rn.value) is list and rn.value and all(
            type(e) is str for e in rn.value
        ):
            fs = frozenset(rn.value)
            strs = rn.value

            def fn_strs(a: Any, c: Any, L: Callable = L, fs: frozenset = fs, strs: list = strs) -> Any:
                v = L(a, c)
                if type(v) is str:
                    return v in fs
                return _contains_in(v, strs)  # element by element, as `==` compares

            fn: Callable[..., Any] = fn_strs

            what: tuple = ("in_strs", ln, fs)
        else:

            def fn_any(a: Any, c: Any, L: Callable = L, R: Callable = R) -> Any:
                return _contains_in(L(a, c), R(a, c))

            fn = fn_any
            what = ("in", ln, rn)
        n = self.mk(fn, ln, rn, node=node)
        n.op = what
        return self.fold(n, (ln, rn))

    def c_addition(self, node: Any) -> _N:
        return self.arith(node, "addition")

    def c_multiplication(self, node: Any) -> _N:
        return self.arith(node, "multiplication")

    def arith(self, node: Any, name: str) -> _N:
        ops = []
        while node.data == name and len(node.children) == 2:
            opnode, right = node.children
            ops.append((opnode.data, right, opnode))
            node = opnode.children[0]
        left = self.c(node)
        ops.reverse()
        if len(ops) > 8:
            # long chains: one loop closure keeps the closure tree shallow
            kids = [left] + [self.c(r) for _, r, _ in ops]
            fns = [self.binfn(o) for o, _, _ in ops]
            first = kids[0].fn
            rest = tuple(zip(fns, (k.fn for k in kids[1:])))

            def chain(a: Any, c: Any) -> Any:
                v = first(a, c)
                for f, R in rest:
                    v = f(v, R(a, c))
                return v

            n = self.mk(chain, *kids, node=node)
            n.op = ("chain", kids[0], tuple(zip(fns, kids[1:])))
            return self.fold(n, tuple(kids))
        for opname, right, opnode in ops:
            rn = self.c(right)
            f = self.binfn(opname)
            L, R = left.fn, rn.fn

            def fn(a: Any, c: Any, f: Callable = f, L: Callable = L, R: Callable = R) -> Any:
                return f(L(a, c), R(a, c))

            n = self.mk(fn, left, rn, node=opnode)
            n.op = ("binop", opname, f, left, rn)
            left = self.fold(n, (left, rn))
        return left

    def binfn(self, opname: str) -> Callable:
        return {
            "addition_add": self.add,
            "addition_sub": _sub,
            "multiplication_mul": _mul,
            "multiplication_div": _div,
            "multiplication_mod": _mod,
        }[opname]

    def c_unary(self, node: Any) -> _N:
        ops = []
        while node.data == "unary" and len(node.children) == 2:
            ops.append(node.children[0].data)
            node = node.children[1]
        inner = self.c(node)
        nots = sum(1 for o in ops if o == "unary_not")
        if nots and nots != len(ops):
            # mixed: apply one by one (rare)
            for o in reversed(ops):
                inner = self._unary1(o, inner, node)
            return inner
        F = inner.fn
        count = len(ops)
        if nots:

            def fn(a: Any, c: Any, F: Callable = F, count: int = count) -> Any:
                v = F(a, c)
                if v is True or v is False:
                    return v if count % 2 == 0 else not v
                raise _no_overload("!_", v)

        else:

            def fn(a: Any, c: Any, F: Callable = F, count: int = count) -> Any:
                v = F(a, c)
                for _ in range(count):
                    v = _neg(v)
                return v

        n = self.mk(fn, inner, node=node)
        n.op = ("not" if nots else "neg", inner, count)
        return self.fold(n, (inner,))

    def _unary1(self, op: str, inner: _N, node: Any) -> _N:
        F = inner.fn
        if op == "unary_not":

            def fn(a: Any, c: Any) -> Any:
                v = F(a, c)
                if v is True or v is False:
                    return not v
                raise _no_overload("!_", v)

        else:

            def fn(a: Any, c: Any) -> Any:
                return _neg(F(a, c))

        n = self.mk(fn, inner, node=node)
        n.op = ("not" if op == "unary_not" else "neg", inner, 1)
        return self.fold(n, (inner,))
