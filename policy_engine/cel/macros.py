"""The macros of the reference compiler: ``has()``, ``all``/``exists``/``exists_one``,
``map``/``filter``, ``transformList``/``transformMap`` and ``cel.bind``.

A mixin of ``compile._Compiler``. Comprehension variables live in slots of the per-call
``ctx`` list (``ctx[0]`` counts iterations against ``Limits.max_iterations``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import CelCompileError, _absorbable, _BudgetFail
from .limits import Limits
from .nodes import _N, _PASSTHRU
from .values import CelOptional, _has_field, _no_overload


class _Macros:
    if TYPE_CHECKING:  # provided by compile._Compiler
        limits: Limits
        nslots: int
        needs_ctx: bool
        scopes: list[dict[str, int]]
        has_fields: dict[int, str]

        def c(self, node: Any) -> _N: ...
        def mk(self, fn: Callable, *kids: _N, node: Any = None) -> _N: ...
        def fold(self, n: _N, kids: tuple[_N, ...]) -> _N: ...
        def err(self, node: Any, message: str, hint: str | None = None) -> CelCompileError: ...
        def call_method(self, name: str, recv: _N, args: list[_N], node: Any) -> _N: ...

    def has_macro(self, argnodes: list, node: Any) -> _N:
        if len(argnodes) != 1:
            raise self.err(node, "has() takes exactly one argument")
        arg = argnodes[0]
        while getattr(arg, "data", None) in _PASSTHRU and len(arg.children) == 1:
            arg = arg.children[0]
        if getattr(arg, "data", None) != "member_dot":
            raise self.err(
                node, "invalid argument to has() macro", "has() takes a field selection like `has(a.b)`"
            )
        field = arg.children[1].value
        inner = self.c(arg.children[0])
        F = inner.fn
        if inner.refi >= 0:  # `has(x.f)` reads only the field `f` of the variable `x`
            self.has_fields[inner.refi] = field

        def fn(a: Any, c: Any) -> Any:
            v = F(a, c)
            if type(v) is dict:
                return field in v
            return _has_field(v, field)

        n = self.mk(fn, inner, node=node)
        n.op = ("has", inner, field)
        return self.fold(n, (inner,))

    def macro_var(self, argnode: Any, name: str) -> str | None:
        var = argnode
        while getattr(var, "data", None) in _PASSTHRU and len(var.children) == 1:
            var = var.children[0]
        if getattr(var, "data", None) != "ident":
            return None
        return var.children[0].value

    def macro(self, name: str, target: _N, argnodes: list, node: Any) -> _N:
        nargs = len(argnodes)
        two = False
        if name in ("all", "exists", "exists_one", "existsOne"):
            if nargs == 3:
                two = True
            elif nargs != 2:
                return self.call_method(name, target, [self.c(x) for x in argnodes], node)
        elif name in ("map", "filter"):
            if not (nargs == 2 or name == "map" and nargs == 3):
                return self.call_method(name, target, [self.c(x) for x in argnodes], node)
        elif name in ("transformList", "transformMap"):
            if nargs not in (3, 4):
                return self.call_method(name, target, [self.c(x) for x in argnodes], node)
            two = True
        nvars = 2 if two else 1
        vnames = []
        for k in range(nvars):
            vn = self.macro_var(argnodes[k], name)
            if vn is None:
                raise self.err(
                    argnodes[k], f"argument is not an identifier in {name}() macro",
                    f"write `list.{name}(x, ...)` with a simple variable name",
                )
            vnames.append(vn)
        if two and vnames[0] == vnames[1]:
            raise self.err(argnodes[1], f"duplicate variable name `{vnames[0]}` in {name}() macro")
        slots = list(range(self.nslots, self.nslots + nvars))
        self.nslots += nvars
        self.needs_ctx = True
        self.scopes.append(dict(zip(vnames, slots)))
        try:
            body = [self.c(x) for x in argnodes[nvars:]]
        finally:
            self.scopes.pop()
        T = target.fn
        maxit = self.limits.max_iterations
        s0 = slots[0]
        s1 = slots[1] if two else -1

        # the functions below take what they use as default arguments, not closure cells (a
        # cell is one more object each full collection of the host walks: issue 16, goal 5)
        def items2(r: Any, c: Any, two: bool = two, name: str = name, maxit: int = maxit) -> Any:
            t = type(r)
            if t is list or t is tuple:
                seq = list(enumerate(r)) if two else r
            elif t is dict or isinstance(r, Mapping):
                seq = list(r.items()) if two else list(r)
            else:
                raise _no_overload(name, r)
            n = c[0] + len(seq)
            if n > maxit:
                raise _BudgetFail(
                    f"comprehension iterations exceed max_iterations {maxit}", "max_iterations"
                )
            c[0] = n
            return seq

        def items(a: Any, c: Any, T: Any = T, items2: Any = items2) -> Any:
            """The iteration range as a sequence of (first var, second var) or of elements."""
            return items2(T(a, c), c)

        def bind(v: list, e: Any) -> Any:
            if two:
                v[s0], v[s1] = e
                return e[1]
            v[s0] = e
            return e

        P = body[0].fn
        kind = {"existsOne": "exists_one", "transformList": "map", "transformMap": "tmap"}.get(name, name)
        if kind in ("all", "exists"):
            stop = kind == "exists"

            def quant(a: Any, c: Any, items: Any = items, P: Any = P, two: bool = two, s0: int = s0,
                      s1: int = s1, stop: bool = stop, name: str = name) -> Any:
                seq = items(a, c)
                v = c
                err = None
                for e in seq:
                    if two:
                        v[s0], v[s1] = e
                    else:
                        v[s0] = e
                    try:
                        r = P(a, c)
                    except Exception as ex:
                        if not _absorbable(ex):
                            raise
                        if err is None:
                            err = ex
                        continue
                    if r is stop:
                        return stop
                    if r is not (not stop) and err is None:
                        err = _no_overload(name, r)
                if err is not None:
                    raise err
                return not stop

            fn: Callable[..., Any] = quant
        elif kind == "exists_one":

            def one(a: Any, c: Any) -> Any:
                seq = items(a, c)
                v = c
                count = 0
                for e in seq:
                    bind(v, e)
                    r = P(a, c)
                    if r is True:
                        count += 1
                    elif r is not False:
                        raise _no_overload(name, r)
                return count == 1

            fn = one
        elif kind == "filter":

            def filt(a: Any, c: Any, T: Any = T, items2: Any = items2, maxit: int = maxit, s0: int = s0,
                     P: Any = P, name: str = name) -> Any:
                seq = T(a, c)
                if type(seq) is not list:
                    seq = items2(seq, c)
                else:
                    n = c[0] + len(seq)
                    if n > maxit:
                        raise _BudgetFail(
                            f"comprehension iterations exceed max_iterations {maxit}", "max_iterations"
                        )
                    c[0] = n
                v = c
                out = []
                for e in seq:
                    v[s0] = e
                    r = P(a, c)
                    if r is True:
                        out.append(e)
                    elif r is not False:
                        raise _no_overload(name, r)
                return out

            fn = filt
        elif len(body) == 1:
            as_map = kind == "tmap"

            def mapf(a: Any, c: Any) -> Any:
                seq = items(a, c)
                v = c
                out = []
                keys = []
                for e in seq:
                    bind(v, e)
                    out.append(P(a, c))
                    if as_map:
                        keys.append(e[0])
                return dict(zip(keys, out)) if as_map else out

            fn = mapf
        else:
            M = body[1].fn
            as_map = kind == "tmap"

            def mapf3(a: Any, c: Any) -> Any:
                seq = items(a, c)
                v = c
                out = []
                keys = []
                for e in seq:
                    bind(v, e)
                    r = P(a, c)
                    if r is True:
                        out.append(M(a, c))
                        if as_map:
                            keys.append(e[0])
                    elif r is not False:
                        raise _no_overload(name, r)
                return dict(zip(keys, out)) if as_map else out

            fn = mapf3
        n = self.mk(fn, target, *body, node=node)
        if not two and kind in ("all", "exists", "exists_one", "filter", "map"):
            n.op = ("macro", kind, target, body[0], body[1] if len(body) > 1 else None, s0, maxit)
        return n

    def bind_macro(self, argnodes: list, node: Any) -> _N:
        """cel.bind(name, init, body): evaluate init once, bind it to name in body."""
        if len(argnodes) != 3:
            raise self.err(node, "cel.bind() takes three arguments")
        vn = self.macro_var(argnodes[0], "cel.bind")
        if vn is None:
            raise self.err(argnodes[0], "argument is not an identifier in cel.bind() macro")
        init = self.c(argnodes[1])
        slot = self.nslots
        self.nslots += 1
        self.needs_ctx = True
        self.scopes.append({vn: slot})
        try:
            body = self.c(argnodes[2])
        finally:
            self.scopes.pop()
        init_fn, body_fn = init.fn, body.fn

        def fn(a: Any, c: Any) -> Any:
            c[slot] = init_fn(a, c)
            return body_fn(a, c)

        n = self.mk(fn, init, body, node=node)
        n.op = ("bind", slot, init, body)
        return n

    def opt_map_macro(self, name: str, target: _N, argnodes: list, node: Any) -> _N:
        """`o.optMap(x, e)`: optional.of(e) with `x` the value `o` holds, none when it holds
        none; `o.optFlatMap(x, e)`: `e` itself (an optional) then (cel-go's optional macros)."""
        vn = self.macro_var(argnodes[0], name) if len(argnodes) == 2 else None
        if vn is None:
            raise self.err(node, f"{name}() takes an identifier and an expression: `o.{name}(x, x + 1)`")
        slot = self.nslots
        self.nslots += 1
        self.needs_ctx = True
        self.scopes.append({vn: slot})
        try:
            body = self.c(argnodes[1])
        finally:
            self.scopes.pop()
        T, B, flat = target.fn, body.fn, name == "optFlatMap"

        def fn(a: Any, c: Any) -> Any:
            o = T(a, c)
            if type(o) is not CelOptional:
                raise _no_overload(name, o)
            if not o.present:
                return o
            c[slot] = o.value
            r = B(a, c)
            if flat and type(r) is not CelOptional:
                raise _no_overload(name, r)
            return r if flat else CelOptional(True, r)

        return self.mk(fn, target, body, node=node)  # (no op: the closures only)
