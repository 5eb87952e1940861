"""A type check of a CEL condition against declared field types (`fields { ... }`).

Walks the parse tree (the grammar of parse.py) once and infers a type for every
sub-expression, as far as the declarations say: anything not declared is `any` and
checked no further (without declarations, only what literals and functions tell: a
condition known not to be a bool, a `1 + "a"`). Findings, each with
offsets into the condition's source:

- ``unknown_field``: a selected field that no candidate type declares (with the names it
  could have meant);
- ``mismatch``: operands whose known types cannot go together (located at the operand);
- ``unguarded``: the `action` of a condition that several action types reach (a stop
  trigger) read a field that some of them lack, or declare optional, without a
  `has(...)` or `action.type == ...` guard before it (the read errors on those types);
- ``optional``: an optional field read without a `has(...)` guard;
- (a ``mismatch`` too) a network function's literal that is no address
  (`cidr("10.0.0.0/33")`: an error whatever the input), located at the literal;
- a condition that is not a bool (a `mismatch` spanning it all), reported with or (by
  ``not_a_bool``, for language/lints.py) without declarations when its type is known.

`action.type == "t"` (or `in [...]`, or an `||` of those) on the left of `&&`, or as a
ternary's condition, narrows the candidate types for what follows; `has(x.f)` there
guards later reads of `x.f`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..fieldtypes import ANY, FField, FType
from .conversions import parse_cidr, parse_ip
from .errors import _Fail
from .parse import _parse, _span

_PASS = frozenset({"expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication",
                   "unary", "member", "primary", "paren_expr"})
_NUM = frozenset({"int", "double", "uint"})
_ORDERED = frozenset({"int", "double", "uint", "string", "timestamp", "duration", "bool", "bytes"})
_CONV = {"int": "int", "double": "double", "string": "string", "bool": "bool", "timestamp": "timestamp",
         "duration": "duration", "uint": "uint", "bytes": "bytes"}
_BOOL_METHODS = frozenset({"startsWith", "endsWith", "contains", "matches"})
_INT_METHODS = frozenset({"size", "getFullYear", "getMonth", "getDate", "getDayOfMonth", "getDayOfWeek",
                          "getDayOfYear", "getHours", "getMinutes", "getSeconds", "getMilliseconds", "indexOf",
                          "lastIndexOf"})
_STRING_METHODS = frozenset({"lowerAscii", "upperAscii", "trim", "replace", "substring", "charAt", "format"})
_MACROS = frozenset({"all", "exists", "exists_one", "existsOne", "map", "filter"})
_QUANTS = frozenset({"all", "exists", "exists_one", "existsOne"})
_TRANSFORMS = frozenset({"transformList", "transformMap"})
_OPT_FUNCS = frozenset({"of", "ofNonZeroValue", "none"})  # optional.of(...) (optional.py)
_OPT_METHODS = frozenset({"hasValue", "value", "orValue", "or"})
# the network extension (conversions.py): global functions (result kind) and
# methods (receiver kind, result kind)
_NET_FUNCS = {"ip": "net.IP", "cidr": "net.CIDR", "isIP": "bool"}
_NET_METHODS = {
    "family": ("net.IP", "int"), "isUnspecified": ("net.IP", "bool"), "isLoopback": ("net.IP", "bool"),
    "isGlobalUnicast": ("net.IP", "bool"), "isLinkLocalMulticast": ("net.IP", "bool"),
    "isLinkLocalUnicast": ("net.IP", "bool"), "containsIP": ("net.CIDR", "bool"),
    "containsCIDR": ("net.CIDR", "bool"), "masked": ("net.CIDR", "net.CIDR"), "prefixLength": ("net.CIDR", "int"),
    "ip": ("net.CIDR", "net.IP"),
}
IMPLICIT = (FField("type", FType("string")), FField("workflow", FType("string")), FField("id", FType("string"), True))

BOOL = FType("bool")


@dataclass(frozen=True)
class ActionVar:
    """The `action` of a condition: the action types it may be (name -> declared type, or
    None for a type without declarations)."""

    types: Mapping[str, FType | None]

    def narrowed(self, names: frozenset[str]) -> ActionVar:
        return ActionVar({k: v for k, v in self.types.items() if k in names})


@dataclass
class Finding:
    kind: str
    start: int
    end: int
    message: str
    label: str | None = None
    help: str | None = None
    data: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Ctx:
    vars: Mapping[str, Any]
    guards: frozenset = frozenset()
    in_has: bool = False


def _kids(n: Any) -> list:
    return [c for c in getattr(n, "children", ()) if c is not None]


def _unwrap(n: Any) -> Any:
    while getattr(n, "data", None) in _PASS:
        k = _kids(n)
        if len(k) != 1 or not hasattr(k[0], "data"):
            break
        n = k[0]
    return n


def _with_object(t: FType) -> FType:
    return t


def _obj(t: FType | None) -> FType | None:
    """An action type's declared object type with the implicit fields added."""
    if t is None:
        return None
    extra = tuple(f for f in IMPLICIT if t.field(f.name) is None)
    return FType("object", fields=tuple(t.fields or ()) + extra)


def _compatible(a: FType, b: FType) -> bool:
    if a.kind in ("any", "null") or b.kind in ("any", "null"):
        return True
    if a.kind in _NUM and b.kind in _NUM:
        return True
    if a.kind in ("map", "object") and b.kind in ("map", "object"):
        return True
    if a.kind == "list" and b.kind == "list":
        return a.item is None or b.item is None or _compatible(a.item, b.item)
    return a.kind == b.kind


def _desc(t: FType) -> str:
    if t.kind == "optional":  # (`x.?f`, `optional.of(x)`: its `item` the type it holds)
        return f"optional<{_desc(t.item) if isinstance(t.item, FType) else 'any'}>"
    return "an object" if t.kind == "object" else t.describe()


def _optional(t: Any) -> FType:
    return FType("optional", t)  # (`t` may be an ActionVar too: read back by `_held` only)


def _held(t: Any) -> Any:
    """What an optional type holds (`any` when not known); another type as it is."""
    return (t.item or ANY) if isinstance(t, FType) and t.kind == "optional" else t


class _Checker:
    def __init__(self, source: str) -> None:
        self.src = source
        self.n = len(source)
        self.out: list[Finding] = []

    def span(self, node: Any) -> tuple[int, int]:
        return _span(node, self.n)

    def add(self, kind: str, node: Any, message: str, label: str | None = None, help: str | None = None,
            **data: Any) -> None:
        s, e = self.span(node)
        self.out.append(Finding(kind, s, e, message, label, help, data))

    def text(self, node: Any) -> str:
        s, e = self.span(node)
        return " ".join(self.src[s:e].split())

    # ---------------------------------------------------------------- guards
    def path(self, n: Any) -> tuple[str, ...] | None:
        n = _unwrap(n)
        d = getattr(n, "data", None)
        if d == "ident":
            return (str(n.children[0]),)
        if d == "member_dot":
            k = _kids(n)
            base = self.path(k[0])
            return None if base is None else base + (str(k[1]),)
        return None

    def shown(self, n: Any) -> tuple[str, ...] | None:
        """``path`` through `.?` selections too (`a.?b.c`: a, b, c), for messages only."""
        n = _unwrap(n)
        if getattr(n, "data", None) in ("member_dot", "member_dot_opt"):
            base = self.shown(_kids(n)[0])
            return None if base is None else base + (str(_kids(n)[1]),)
        return self.path(n)

    def type_guard(self, n: Any) -> frozenset[str] | None:
        n = _unwrap(n)
        d = getattr(n, "data", None)
        if d == "relation":
            k = _kids(n)
            if len(k) == 2 and getattr(k[0], "data", None) in ("relation_eq", "relation_in"):
                left, right = k[0].children[0], k[1]
                if k[0].data == "relation_eq":
                    for x, c in ((left, right), (right, left)):
                        v = self.str_lit(c)
                        if self.path(x) == ("action", "type") and v is not None:
                            return frozenset((v,))
                elif self.path(left) == ("action", "type"):
                    r = _unwrap(right)
                    if getattr(r, "data", None) == "list_lit":
                        vals = [self.str_lit(x) for x in _kids(_kids(r)[0])] if _kids(r) else []
                        strs = [v for v in vals if v is not None]
                        if len(strs) == len(vals):
                            return frozenset(strs)
        if d == "conditionalor":
            ops = self.flatten(n, "conditionalor")
            gs = [self.type_guard(x) for x in ops]
            known = [g for g in gs if g is not None]
            if len(known) == len(gs):
                return frozenset[str]().union(*known)
        if d == "conditionaland":
            for x in self.flatten(n, "conditionaland"):
                g = self.type_guard(x)
                if g is not None:
                    return g
        return None

    def has_paths(self, n: Any) -> set:
        n = _unwrap(n)
        d = getattr(n, "data", None)
        out: set = set()
        if d == "ident_arg" and str(n.children[0]) == "has":
            args = _kids(n)[1:]
            if args:
                es = _kids(args[0])
                if len(es) == 1:
                    p = self.path(es[0])
                    if p is not None:
                        out.add(p)
        elif d == "conditionaland":
            for x in self.flatten(n, "conditionaland"):
                out |= self.has_paths(x)
        return out

    def not_has_paths(self, n: Any) -> set:
        n = _unwrap(n)
        k = _kids(n)
        if getattr(n, "data", None) == "unary" and len(k) == 2 and getattr(k[0], "data", None) == "unary_not":
            return self.has_paths(k[1])
        return set()

    def str_lit(self, n: Any) -> str | None:
        n = _unwrap(n)
        if getattr(n, "data", None) == "literal":
            tok = n.children[0]
            if tok.type == "STRING_LIT":
                from .parse import _string_literal

                try:
                    v = _string_literal(str(tok))
                except (ValueError, IndexError):
                    return None
                return v if isinstance(v, str) else None
        return None

    def narrow(self, ctx: _Ctx, cond: Any) -> _Ctx:
        vars_ = ctx.vars
        g = self.type_guard(cond)
        act = vars_.get("action")
        if g is not None and isinstance(act, ActionVar):
            vars_ = {**vars_, "action": act.narrowed(g)}
        hp = self.has_paths(cond)
        return _Ctx(vars_, ctx.guards | frozenset(hp), ctx.in_has)

    @staticmethod
    def flatten(n: Any, name: str) -> list:
        out: list = []
        stack = [n]
        while stack:
            x = stack.pop()
            k = _kids(x)
            if getattr(x, "data", None) == name and len(k) == 2:
                stack.append(k[1])
                stack.append(k[0])
            elif getattr(x, "data", None) == name and len(k) == 1:
                stack.append(k[0])
            else:
                out.append(x)
        return out

    # ---------------------------------------------------------------- walk
    def want_bool(self, t: Any, node: Any, what: str) -> None:
        if isinstance(t, FType) and t.kind not in ("any", "bool"):
            self.add("mismatch", node, f"{what} needs a bool, not {_desc(t)}", label=f"this is {_desc(t)}")

    def t(self, node: Any, ctx: _Ctx) -> Any:  # noqa: C901 - one case per node kind
        d = getattr(node, "data", None)
        k = _kids(node)
        if d is None:
            return ANY
        if d in ("expr",):
            if len(k) == 3:
                ct = self.t(k[0], ctx)
                self.want_bool(ct, k[0], "a conditional")
                a = self.t(k[1], self.narrow(ctx, k[0]))
                b = self.t(k[2], ctx)
                if isinstance(a, FType) and isinstance(b, FType) and a == b:
                    return a
                return ANY
            return self.t(k[0], ctx)
        if d == "conditionalor":
            ops = self.flatten(node, "conditionalor")
            if len(ops) == 1:
                return self.t(ops[0], ctx)
            c = ctx
            for x in ops:  # `!has(x.f) || x.f ...`: the right side runs only when the field is there
                self.want_bool(self.t(x, c), x, "`||`")
                c = _Ctx(c.vars, c.guards | frozenset(self.not_has_paths(x)), c.in_has)
            return BOOL
        if d == "conditionaland":
            ops = self.flatten(node, "conditionaland")
            if len(ops) == 1:
                return self.t(ops[0], ctx)
            c = ctx
            for x in ops:
                self.want_bool(self.t(x, c), x, "`&&`")
                c = self.narrow(c, x)
            return BOOL
        if d == "relation":
            if len(k) == 1:
                return self.t(k[0], ctx)
            opn, right = k
            left = opn.children[0]
            lt, rt = self.t(left, ctx), self.t(right, ctx)
            self.relation(opn.data, left, right, lt, rt)
            return BOOL
        if d in ("addition", "multiplication"):
            if len(k) == 1:
                return self.t(k[0], ctx)
            opn, right = k
            left = opn.children[0]
            return self.arith(opn.data, left, right, self.t(left, ctx), self.t(right, ctx))
        if d == "unary":
            if len(k) == 1:
                return self.t(k[0], ctx)
            op, x = k
            xt = self.t(x, ctx)
            if op.data == "unary_not":
                self.want_bool(xt, x, "`!`")
                return BOOL
            if isinstance(xt, FType) and xt.kind not in ("any", "duration") and xt.kind not in _NUM:
                self.add("mismatch", x, f"cannot negate {_desc(xt)}", label=f"this is {_desc(xt)}")
                return ANY
            return xt
        if d in ("member", "primary", "paren_expr"):
            return self.t(k[0], ctx) if k else ANY
        if d == "member_dot":
            base = self.t(k[0], _Ctx(ctx.vars, ctx.guards))
            if base is not _held(base):  # `o.f` of an optional `o` is `o.?f`
                return _optional(self.select(_held(base), self.shown(k[0]), k[1], _Ctx(ctx.vars, ctx.guards, True)))
            return self.select(base, self.path(k[0]), k[1], ctx)
        if d in ("member_dot_opt", "member_index_opt"):  # `x.?f`, `x[?k]`: no guard needed
            base = _held(self.t(k[0], _Ctx(ctx.vars, ctx.guards)))
            if d == "member_index_opt":
                self.t(k[1], ctx)
                return _optional(base.item or ANY if isinstance(base, FType) and base.kind in ("list", "map") else ANY)
            return _optional(self.select(base, self.shown(k[0]), k[1], _Ctx(ctx.vars, ctx.guards, True)))
        if d == "member_dot_arg":
            return self.method(k, ctx)
        if d == "member_index":
            bt = self.t(k[0], ctx)
            it = self.t(k[1], ctx)
            if isinstance(bt, FType) and bt.kind == "optional":
                return _optional(ANY)
            if isinstance(bt, FType):
                if bt.kind == "list":
                    if isinstance(it, FType) and it.kind not in ("any", "int", "uint"):
                        self.add("mismatch", k[1], f"a list index must be an int, not {_desc(it)}",
                                 label=f"this is {_desc(it)}")
                    return bt.item or ANY
                if bt.kind == "map":
                    return bt.item or ANY
                if bt.kind == "object":
                    return ANY
            return ANY
        if d == "literal":
            tt = k[0].type
            return FType({"INT_LIT": "int", "UINT_LIT": "uint", "FLOAT_LIT": "double", "STRING_LIT": "string",
                          "MLSTRING_LIT": "string", "BYTES_LIT": "bytes", "BOOL_LIT": "bool",
                          "NULL_LIT": "null"}.get(tt, "any"))
        if d == "ident":
            return ctx.vars.get(str(k[0]), ANY)
        if d == "ident_arg":
            return self.call(k, ctx)
        if d == "list_lit":
            items = [self.t(x, ctx) for x in (_kids(k[0]) if k else [])]
            kinds = {x for x in items if isinstance(x, FType)}
            all_typed = len(items) == len([i for i in items if isinstance(i, FType)])
            return FType("list", kinds.pop() if len(kinds) == 1 and all_typed else ANY)
        if d == "opt_entry":  # `[?o]`, `{?k: o}`: an entry there only when `o` holds a value
            et = self.t(k[0], ctx)
            if isinstance(et, FType) and et.kind not in ("any", "optional"):
                self.add("mismatch", k[0], f"an optional entry takes an optional value; this is {_desc(et)}",
                         label=f"this is {_desc(et)}", help="drop the `?`, or give an optional: `?m.?k`")
            return _held(et)
        for x in k:  # map literals, objects, dotted idents: walk, type unknown
            if hasattr(x, "data"):
                self.t(x, ctx)
        return ANY

    def select(self, base: Any, base_path: tuple | None, ident: Any, ctx: _Ctx) -> Any:
        name = str(ident)
        path = None if base_path is None else base_path + (name,)
        guarded = ctx.in_has or (path is not None and path in ctx.guards)
        shown = ".".join(path) if path else name
        if isinstance(base, ActionVar):
            if any(t is None for t in base.types.values()) or not base.types:
                return ANY
            objs = {n: o for n, t in base.types.items() if (o := _obj(t)) is not None}  # every t is set (above)
            have = {n: f for n, o in objs.items() if (f := o.field(name)) is not None}
            if not have:
                known = sorted({f for o in objs.values() for f in o.names()})
                self.add(
                    "unknown_field",
                    ident,
                    f"no field `{name}` is declared for "
                    + (
                        f"action type `{next(iter(objs))}`"
                        if len(objs) == 1
                        else "any of the action types " + ", ".join(f"`{n}`" for n in sorted(objs))
                    ),
                    label="not declared",
                    field=name,
                    candidates=known,
                    types=sorted(objs),
                    path=shown,
                )
                return ANY
            lacking = sorted(n for n in objs if n not in have)
            optional = sorted(n for n, f in have.items() if f.optional)
            if (lacking or optional) and not guarded:
                kind = "unguarded" if len(objs) > 1 else "optional"
                self.add(kind, ident, f"`{shown}`", field=name, lacking=lacking, optional=optional, path=shown)
            types = {f.type for f in have.values()}
            if len(types) == 1:
                return types.pop()
            if all(t.kind == "object" for t in types):
                return ActionVar({n: f.type for n, f in have.items()})
            return ANY
        if not isinstance(base, FType):
            return ANY
        if base.kind == "object":
            f = base.field(name)
            if f is None:
                self.add(
                    "unknown_field",
                    ident,
                    f"no field `{name}` is declared for `{'.'.join(base_path or ('?',))}`",
                    label="not declared",
                    field=name,
                    candidates=sorted(base.names()),
                    types=[],
                    path=shown,
                )
                return ANY
            if f.optional and not guarded:
                self.add("optional", ident, f"`{shown}`", field=name, lacking=[], optional=["*"], path=shown)
            return f.type
        if base.kind == "map":
            return base.item or ANY
        if base.kind in ("any", "null"):
            return ANY
        self.add(
            "mismatch",
            ident,
            f"`{'.'.join(base_path or ('?',))}` is {_desc(base)}: it has no field `{name}`",
            label="no such field",
        )
        return ANY

    def call(self, k: list, ctx: _Ctx) -> Any:
        name = str(k[0])
        args = _kids(k[1]) if len(k) > 1 else []
        if name == "has" and len(args) == 1:
            self.t(args[0], _Ctx(ctx.vars, ctx.guards, True))
            return BOOL
        ts = [self.t(a, ctx) for a in args]
        if name == "size":
            if (
                ts
                and isinstance(ts[0], FType)
                and ts[0].kind not in ("any", "string", "bytes", "list", "map", "object")
            ):
                self.add(
                    "mismatch",
                    args[0],
                    f"`size` takes a string, list or map, not {_desc(ts[0])}",
                    label=f"this is {_desc(ts[0])}",
                )
            return FType("int")
        if name in _CONV:
            return FType(_CONV[name])
        if name == "matches":
            return BOOL
        if name in _NET_FUNCS and len(args) == 1:
            self.net_arg(name, args[0], ts[0], None if name == "isIP" else name)
            return FType(_NET_FUNCS[name])
        return ANY

    def net_arg(self, fn: str, arg: Any, at: Any, parse: str | None) -> None:
        """The string argument of a network function: of another known type, or a literal
        that is no address (`cidr("10.0.0.0/33")`: an error whatever the input), is a mismatch.
        `parse`: "ip" or "cidr" (how the literal must read), None for `isIP` (any string)."""
        value = {"containsIP": "net.IP", "containsCIDR": "net.CIDR"}.get(fn)  # (or its text)
        if isinstance(at, FType) and at.kind not in ("any", "string", value):
            takes = f"a {value} or a string" if value else "a string"
            self.add("mismatch", arg, f"`{fn}` takes {takes}, not {_desc(at)}", label=f"this is {_desc(at)}")
            return
        lit = self.str_lit(arg) if parse is not None else None
        if lit is None:
            return
        try:
            (parse_cidr if parse == "cidr" else parse_ip)(lit)
        except _Fail as ex:
            what, example = ("a CIDR", "an address and a prefix length, e.g. `10.0.0.0/8`") if parse == "cidr" else (
                "an IP address", "an IPv4 or IPv6 address, e.g. `192.168.0.1`")
            self.add("mismatch", arg, f"`{self.text(arg)}` is not {what}: {ex.err.message}", label="always an error",
                     help=f"write {example}")

    def method(self, k: list, ctx: _Ctx) -> Any:
        recv, ident = k[0], k[1]
        name = str(ident)
        args = _kids(k[2]) if len(k) > 2 else []
        rt = self.t(recv, ctx)
        two = (name in _QUANTS and len(args) == 3) or (name in _TRANSFORMS and len(args) in (3, 4))
        if (name in _MACROS or two) and args:
            # the variables: one (the element, or a map's key), or two (a list's index and
            # element, a map's key and value: `list.all(i, v, p)`, `transformList(i, v, e)`)
            first: Any = ANY
            second: Any = ANY
            if isinstance(rt, FType):
                if rt.kind == "list":
                    first = FType("int") if two else (rt.item or ANY)
                    second = rt.item or ANY
                elif rt.kind in ("map", "object"):
                    first = FType("string")
                    second = (rt.item or ANY) if rt.kind == "map" else ANY
                elif rt.kind != "any":
                    self.add(
                        "mismatch",
                        recv,
                        f"`{name}` ranges over a list or map, not {_desc(rt)}",
                        label=f"this is {_desc(rt)}",
                    )
            nvars = 2 if two else 1
            inner = ctx
            for a, vt in zip(args[:nvars], (first, second)):
                var = self.path(a)
                if var is not None and len(var) == 1:
                    inner = _Ctx({**inner.vars, var[0]: vt}, frozenset(g for g in inner.guards if g[0] != var[0]))
            bodies = [self.t(a, inner) for a in args[nvars:]]
            last = bodies[-1] if bodies and isinstance(bodies[-1], FType) else ANY
            if name in _QUANTS:
                if bodies:
                    self.want_bool(bodies[-1], args[-1], f"`{name}`")
                return BOOL
            if name == "filter":
                return rt if isinstance(rt, FType) and rt.kind == "list" else FType("list", ANY)
            if name == "transformMap":  # keyed as the map it ranges over (a list's: ints)
                return FType("map", last) if isinstance(rt, FType) and rt.kind == "map" else ANY
            return FType("list", last)
        ats = [self.t(a, ctx) for a in args]
        if self.path(recv) == ("optional",) and "optional" not in ctx.vars and name in _OPT_FUNCS:
            return _optional(ats[0] if ats and isinstance(ats[0], FType) else ANY)
        if name in _OPT_METHODS:
            if isinstance(rt, FType) and rt.kind not in ("any", "optional"):
                self.add("mismatch", recv, f"`{name}` is a method of optional values; this is {_desc(rt)}",
                         label=f"this is {_desc(rt)}", help="select an optional field with `.?`: `x.?f.orValue(d)`")
            if name == "hasValue":
                return BOOL
            return rt if name == "or" else _held(rt) if isinstance(rt, FType) and rt.kind == "optional" else ANY
        if name in _BOOL_METHODS or name in _STRING_METHODS:
            if (
                isinstance(rt, FType)
                and rt.kind not in ("any", "string")
                and not (name == "contains" and rt.kind == "list")
            ):
                self.add(
                    "mismatch", recv, f"`{name}` is a string method; this is {_desc(rt)}", label=f"this is {_desc(rt)}"
                )
            return BOOL if name in _BOOL_METHODS else FType("string")
        if name in _INT_METHODS:
            return FType("int")
        if name == "isCanonical" and self.path(recv) == ("ip",) and "ip" not in ctx.vars and len(args) == 1:
            self.net_arg("ip.isCanonical", args[0], ats[0], "ip")
            return BOOL
        if name in _NET_METHODS:
            want, res = _NET_METHODS[name]
            if isinstance(rt, FType) and rt.kind not in ("any", want):
                self.add("mismatch", recv, f"`{name}` is a {want} method; this is {_desc(rt)}",
                         label=f"this is {_desc(rt)}")
            if name in ("containsIP", "containsCIDR") and len(args) == 1:
                self.net_arg(name, args[0], ats[0], "ip" if name == "containsIP" else "cidr")
            return FType(res)
        return ANY

    def locate(self, left: Any, right: Any, lt: FType, rt: FType) -> tuple[Any, FType, Any, FType]:
        """(the operand to point at, its type, the other, its type): the one that is not a
        declared field's read, else the right one."""
        if self.path(right) is not None and self.path(left) is None:
            return left, lt, right, rt
        return right, rt, left, lt

    def relation(self, op: str, left: Any, right: Any, lt: Any, rt: Any) -> None:
        if not (isinstance(lt, FType) and isinstance(rt, FType)):
            return
        sym = {
            "relation_lt": "<",
            "relation_le": "<=",
            "relation_gt": ">",
            "relation_ge": ">=",
            "relation_eq": "==",
            "relation_ne": "!=",
            "relation_in": "in",
        }[op]
        if op == "relation_in":
            if rt.kind == "list" and rt.item is not None and not _compatible(lt, rt.item):
                self.add(
                    "mismatch",
                    left,
                    f"`{self.text(left)}` is {_desc(lt)}; `in` looks for it in a list of {_desc(rt.item)}",
                    label=f"this is {_desc(lt)}",
                    other=self.text(right),
                )
            elif rt.kind == "map" and lt.kind not in ("any", "string"):
                self.add(
                    "mismatch",
                    left,
                    f"map keys are strings; `{self.text(left)}` is {_desc(lt)}",
                    label=f"this is {_desc(lt)}",
                )
            elif rt.kind not in ("any", "list", "map", "object", "null"):
                self.add(
                    "mismatch",
                    right,
                    f"`in` needs a list or map on its right, not {_desc(rt)}",
                    label=f"this is {_desc(rt)}",
                )
            return
        bad = not _compatible(lt, rt)
        if not bad and op not in ("relation_eq", "relation_ne"):
            bad = any(x.kind not in _ORDERED and x.kind != "any" for x in (lt, rt))
        if bad:
            at, att, other, ot = self.locate(left, right, lt, rt)
            if att.kind != "optional" and ot.kind == "optional":
                at, att, other, ot = other, ot, at, att
            self.add(
                "mismatch",
                at,
                f"cannot compare {_desc(lt)} with {_desc(rt)} (`{sym}`)",
                label=f"this is {_desc(att)}",
                help=f"`{self.text(other)}` is {_desc(ot)}" + (
                    "; an optional is never equal to a plain value: take what it holds with `.orValue(default)`"
                    if att.kind == "optional" else ""),
                other=self.text(other),
            )

    def arith(self, op: str, left: Any, right: Any, lt: Any, rt: Any) -> Any:
        if not (isinstance(lt, FType) and isinstance(rt, FType)):
            return ANY
        a, b = lt.kind, rt.kind
        if a == "any" or b == "any":
            return ANY
        sym = {
            "addition_add": "+",
            "addition_sub": "-",
            "multiplication_mul": "*",
            "multiplication_div": "/",
            "multiplication_mod": "%",
        }[op]
        res: FType | None = None
        if a in _NUM and b in _NUM:
            res = FType(a) if a == b else FType("double")
        elif sym == "+" and a == b and a in ("string", "bytes", "list"):
            res = lt
        elif sym in "+-" and a == "timestamp" and b == "duration":
            res = lt
        elif sym == "+" and a == "duration" and b == "timestamp":
            res = rt
        elif sym in "+-" and a == b == "duration":
            res = lt
        elif sym == "-" and a == b == "timestamp":
            res = FType("duration")
        if res is None:
            at, att, other, ot = self.locate(left, right, lt, rt)
            self.add(
                "mismatch",
                at,
                f"cannot apply `{sym}` to {_desc(lt)} and {_desc(rt)}",
                label=f"this is {_desc(att)}",
                help=f"`{self.text(other)}` is {_desc(ot)}",
            )
            return ANY
        return res


def typecheck(source: str, env: Mapping[str, Any]) -> list[Finding]:
    """Findings for `source` with the variables' types in `env` (an `FType`, or an
    `ActionVar` for `action`); a variable not in `env` is `any`. The source must compile
    (compile_cel) first; a parse failure here yields no findings."""
    try:
        tree = _parse(source)
    except Exception:  # noqa: BLE001 - compile_cel reported it already
        return []
    c = _Checker(source)
    try:
        root = c.t(tree, _Ctx(dict(env)))
    except RecursionError:
        return []
    if not c.out:
        not_bool = _not_bool(source, root)
        if not_bool is not None:
            c.out.append(not_bool)
    return c.out


def _not_bool(source: str, root: Any) -> Finding | None:
    """A condition is a bool: one that is a string, a number or a list is an error whatever
    the input (`deny when `action.amount``, a `? "a" : "b"`); the finding spans it all."""
    if not (isinstance(root, FType) and root.kind not in ("bool", "any")):
        return None
    start, end = len(source) - len(source.lstrip()), len(source.rstrip())
    return Finding("mismatch", start, end, f"the condition is {_desc(root)}, not a bool", f"this is {_desc(root)}",
                   "compare it: `action.amount > 100.0`, `action.note != \"\"`, `size(action.items) > 0`")


def not_a_bool(source: str) -> Finding | None:
    """The finding for a condition whose type is known without any declaration (from its
    literals, operators and functions: `"yes"`, `1 + 2`, `size(x)`, `x.lowerAscii()`) and
    is not a bool; None for a bool, a `dyn(...)` or anything whose type is unknown (a
    field's read), and when the condition does not parse or has another finding (what
    ``typecheck(source, {})`` says, without walking a condition whose outermost operation
    gives a bool: most are a comparison, an `&&` or an `||`)."""
    if _bool_at_top(source):
        return None
    try:
        tree = _parse(source)
    except Exception:  # noqa: BLE001 - compile_cel reported it already
        return None
    if _bool_shaped(tree):
        return None
    c = _Checker(source)
    try:
        root = c.t(tree, _Ctx({}))
    except RecursionError:
        return None
    return None if c.out else _not_bool(source, root)


_STRINGS = re.compile(r""""(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'""")
_GROUP = re.compile(r"\([^()\[\]{}]*\)|\[[^()\[\]{}]*\]|\{[^()\[\]{}]*\}")
_TOP_BOOL = re.compile(r"==|!=|<|>|&&|\|\||\bin\b")
_UNUSUAL = re.compile(r"""//|(?<![\w.])(?:[bB]?[rR]|[rR][bB])["']|'''|\"\"\"""")
_NAME = re.compile(r"\s*!?\s*[A-Za-z_]\w*(?:\s*\.\s*[A-Za-z_]\w*)*\s*")  # `a.b.c`, `!a.b`


def _bool_at_top(source: str) -> bool:
    """Whether the text shows a comparison, `&&` or `||` outside brackets and strings, and
    no `?` (the outermost operation gives a bool), or is a name (`evidence.done`, its type
    unknown without declarations): a cheap look before parsing, False when unsure
    (comments, raw or triple-quoted strings)."""
    if _NAME.fullmatch(source) and source.strip() != "null":
        return True  # (a name's type is unknown: not a bool only by its declaration)
    if _UNUSUAL.search(source):
        return False
    t = _STRINGS.sub(" ", source)
    while True:
        u = _GROUP.sub(" ", t)
        if u == t:
            break
        t = u
    return "?" not in t and _TOP_BOOL.search(t) is not None


_BOOL_CALLS = frozenset({"has", "matches", "bool", "exists", "exists_one", "existsOne", "all"})


def _bool_shaped(n: Any) -> bool:
    """Whether the outermost operation of a tree gives a bool whatever its operands."""
    n = _unwrap(n)
    d = getattr(n, "data", None)
    k = _kids(n)
    if d in ("conditionalor", "conditionaland", "relation"):
        return len(k) == 2
    if d == "unary":
        return len(k) == 2 and getattr(k[0], "data", None) == "unary_not"
    if d == "ident_arg":
        return str(k[0]) in _BOOL_CALLS
    if d == "member_dot_arg":
        return str(k[1]) in _BOOL_CALLS or str(k[1]) in _BOOL_METHODS
    return d == "literal" and k[0].type == "BOOL_LIT"
