"""The input checks, before any conversion or evaluation: JSON-like values only, within
the limits (`check_size`, `check_fields`). Never raises; the problem as text, or None.
And a model's input checked in one walk (`model_walker`): the proof, for the inputs it can
give it for, that `check_size` and pydantic's validation both accept the value (Unproven
otherwise: the reference decides)."""

from __future__ import annotations

from collections.abc import Mapping as _Mapping
from datetime import datetime, timedelta
from math import isfinite
from typing import Any

from pydantic import BaseModel

from ..fieldtypes import value_problem
from ..limits import MAX_INPUT_CHARS, MAX_INPUT_DEPTH, MAX_INPUT_ITEMS
from .util import SURROGATE_RE as _SURROGATE_RE

__all__ = ["MAX_INPUT_ITEMS", "MAX_INPUT_DEPTH", "MAX_INPUT_CHARS", "check_size", "check_fields", "plain_flat",
           "declared_problem", "quick_walk", "Unproven", "ModelSpec", "model_spec", "model_walker", "spec_depth",
           "KIND_STR", "KIND_INT", "KIND_BOOL", "KIND_FLOAT", "KIND_LIT", "KIND_MODEL", "KIND_TSTR", "KIND_TMODEL"]


# NaN compares false with everything, so `deny when `action.amount > 1000.0`` would not match it.
_NONFINITE = "input holds a non-finite number (NaN or Infinity); numbers must be finite"
# A JSON `"\ud800"` escape decodes to a lone surrogate: no decision holding it can be encoded.
_SURROGATE = "input holds an unpaired surrogate (`\\ud800`-`\\udfff`): text must be valid Unicode"

# Values are JSON-like: exactly dict (or a Mapping), list, tuple, str, int, float, bool,
# None, plus the CEL kinds datetime, timedelta and bytes. Anything else is an input error,
# never evaluated: an arbitrary object brings its own `__eq__`/`__hash__` (an object equal
# to everything would match `action.tier == "gold"`), and a subclass of str, int or float
# (a StrEnum, an IntEnum) can override what `==`, `in` and the input check itself call, so
# membership and equality could disagree about it. Subclasses are refused, not converted:
# the caller passes the plain value (`member.value`). See docs/values.md.
_LEAVES = frozenset({int, bool, type(None), datetime, timedelta, bytes})
_KEYS = frozenset({str, int, bool})  # map keys: JSON's strings, and CEL's int and bool keys


# The plain values a map key cannot be (what each is, in the message), and why.
_KEY_KINDS = {float: "a float", bytes: "bytes", tuple: "a tuple", datetime: "a datetime",
              timedelta: "a timedelta", type(None): "None"}
_KEYS_ARE = ("map keys must be strings, ints or bools (JSON's object keys are strings, and a CEL map "
             "has keys of no other kind)")


def _not_json(v: Any, key: bool = False) -> str:
    t = type(v)
    what = "a map key" if key else "a value"
    if key and t in _KEY_KINDS:  # a plain value of a kind no map key may be: not a subclass
        return f"input holds {_KEY_KINDS[t]} as a map key (type `{t.__name__}`): {_KEYS_ARE}"
    for base in (str, bool, int, float, bytes, list, tuple, datetime, timedelta):
        if isinstance(v, base):
            if key and base not in _KEYS:  # refused as a key even as the plain value
                return (f"input holds a map key of type `{t.__name__}`, a subclass of {base.__name__}: "
                        f"{_KEYS_ARE}")
            return (f"input holds {what} of type `{t.__name__}`, a subclass of {base.__name__}: subclasses are "
                    f"not accepted (pass the plain {base.__name__}, e.g. an enum member's `.value`)")
    return (f"input holds {what} of type `{t.__name__}`: values must be JSON-like (object, list, string, "
            f"number, bool, null)" + ("; map keys strings, ints or bools" if key else ""))


def check_size(root: Any) -> str | None:
    """Why `root` exceeds the input limits, or None.

    A quick pass (`_quick_walk`) first: for the usual input (a dict of plain JSON values,
    not deeply nested) it proves, more cheaply, that there is no problem. When it cannot
    (anything unusual, or a limit it cannot rule out), the exact walk below decides, so
    the answer and the message are always the exact walk's.
    """
    if type(root) is dict:
        try:
            items, chars = _quick_walk(root, 1)
            if items <= MAX_INPUT_ITEMS and chars <= MAX_INPUT_CHARS:
                return None
        except (_NotPlain, TypeError):
            pass
    return _check_size(root)


class _NotPlain(Exception):
    pass


_QUICK_DEPTH = 32  # deeper than this: the exact walk decides (the limit is MAX_INPUT_DEPTH)
_join = "".join
_surrogate = _SURROGATE_RE.search


def _quick_walk(v: Any, d: int, _type=type, _str=str, _int=int, _bool=bool, _float=float, _dict=dict,
                _list=list, _len=len, _join=_join, _surrogate=_surrogate) -> tuple[int, int]:
    """(values, characters) in `v` (a dict or list at depth `d`), counting what the exact
    walk counts; raises _NotPlain (or TypeError) on anything the exact walk might refuse
    or count differently: a key that is not exactly a str, a value of a type other than
    dict, list, str, int, bool, None and float (subclasses included), a non-finite float, an
    unpaired surrogate, nesting deeper than _QUICK_DEPTH. Builtins are bound as defaults
    (local lookups: this runs for every value of every input)."""
    n = _len(v)
    if n > MAX_INPUT_ITEMS:  # over the limit alone: the exact walk stops early and says so
        raise _NotPlain
    if _type(v) is _dict:
        for k in v:  # a key of another type, a str subclass among them: the exact walk decides
            if _type(k) is not _str:
                raise _NotPlain
        keys = _join(v)
        c = _len(keys)
        if not keys.isascii() and _surrogate(keys):  # (str.isascii is O(1))
            raise _NotPlain
        v = v.values()
    else:
        c = 0
    for x in v:
        t = _type(x)
        if t is _str:
            c += _len(x)
            if not x.isascii() and _surrogate(x):
                raise _NotPlain
        elif t is _int or t is _bool or x is None:
            pass
        elif t is _float:
            if x - x != 0.0:  # NaN or +-Infinity (a finite float minus itself is 0.0)
                raise _NotPlain
        elif t is _dict or t is _list:
            if d >= _QUICK_DEPTH:
                raise _NotPlain
            n2, c2 = _quick_walk(x, d + 1)
            n += n2
            c += c2
        else:
            raise _NotPlain
    return n, c


_MISSING: Any = object()  # (plain_flat: a field absent)


def plain_flat(d: dict, keys: tuple | None = None, _type: Any = type, _str: type = str, _len: Any = len,
               _miss: Any = _MISSING) -> bool:
    """True when `check_fields(d, keys)` (`check_size(d)` for `keys` None) is surely None:
    the fields looked at are exact `str` keys holding scalars (exact str, int, bool, None,
    a finite float), no lone surrogate, within the limits. False says nothing: the exact
    check then decides. About a third of its cost for the small flat objects a lane checks
    on every call (a stopped workflow's state, an action's id, type and workflow)."""
    c = 0
    if keys is None and _len(d) > MAX_INPUT_ITEMS:
        return False
    get = d.get
    for k in d if keys is None else keys:
        v = get(k, _miss)
        if v is _miss:
            continue
        if _type(k) is not _str:
            return False
        c += _len(k)
        if not k.isascii() and _surrogate(k):
            return False
        t = _type(v)
        if t is _str:
            c += _len(v)
            if not v.isascii() and _surrogate(v):
                return False
        elif t is int or t is bool or v is None:
            pass
        elif t is float:
            if v - v != 0.0:
                return False
        else:
            return False
    return c <= MAX_INPUT_CHARS


def check_fields(action: dict, keys: tuple | None) -> str | None:
    """Why the fields `keys` of `action` (all of it if None) exceed the input limits, or None.

    The gate checks only the fields its conditions can read, and those a decision shows
    (`compiler.reads_of`): a field no condition reads cannot change the decision, so it
    is never looked at (a NaN or a megabyte of text in it costs nothing and denies
    nothing). The limits apply to the checked fields together, as to one object."""
    if keys is None:
        return check_size(action)
    return check_size({k: action[k] for k in keys if k in action})


def _check_size(root: Any) -> str | None:
    """Why `root` exceeds the input limits, or None. Iterative: no recursion, stops early.

    Runs on every call, so the common leaves (str, int, bool, None) are handled before any
    isinstance check; floats are checked for NaN/Infinity (they compare false with
    everything, so a NaN amount could slip past `deny when `action.amount > 1000.0``).
    """
    items = 0
    chars = 0
    stack = [(root, 0)]
    pop = stack.pop
    push = stack.append
    while stack:
        v, d = pop()
        t = type(v)
        if t is dict:
            vals = v.values()
            for k in v:
                tk = type(k)
                if tk is str:
                    chars += len(k)
                    if not k.isascii() and _SURROGATE_RE.search(k):
                        return _SURROGATE
                elif tk not in _KEYS:
                    return _not_json(k, True)
        elif t is list or t is tuple:
            vals = v
        elif t is str:
            chars += len(v)
            if not v.isascii() and _SURROGATE_RE.search(v):
                return _SURROGATE
            continue
        elif t is float:
            if not isfinite(v):
                return _NONFINITE
            continue
        elif isinstance(v, _Mapping):
            vals = list(v.values())
            for k in v:
                tk = type(k)
                if tk is str:
                    chars += len(k)
                    if not k.isascii() and _SURROGATE_RE.search(k):
                        return _SURROGATE
                elif tk not in _KEYS:
                    return _not_json(k, True)
        elif t in _LEAVES:
            continue
        else:  # an arbitrary object, or a subclass of a plain type: never evaluated
            return _not_json(v)
        if d >= MAX_INPUT_DEPTH:
            return f"input nests more than {MAX_INPUT_DEPTH} levels deep"
        items += len(vals)
        if items > MAX_INPUT_ITEMS:
            return f"input has more than {MAX_INPUT_ITEMS} values"
        d1 = d + 1
        for x in vals:
            tx = type(x)
            if tx is str:
                chars += len(x)
                if not x.isascii() and _SURROGATE_RE.search(x):
                    return _SURROGATE
            elif tx is int or tx is bool or x is None:
                pass
            elif tx is float:
                if not isfinite(x):
                    return _NONFINITE
            else:
                push((x, d1))
        if chars > MAX_INPUT_CHARS:
            return f"input holds more than {MAX_INPUT_CHARS} characters of text"
    if chars > MAX_INPUT_CHARS:
        return f"input holds more than {MAX_INPUT_CHARS} characters of text"
    return None


def declared_problem(ca: Any, action: dict) -> str | None:
    """Why `action` does not have its type's declared shape (`fields { ... }`), or None
    (also when the type declares none). Every path checks this before any condition."""
    if ca is None or ca.fields is None:
        return None
    return value_problem(ca.fields, action, "action")


# ================================================================== a model's input, checked in one walk
# `check_size(raw)` then `Model.model_validate(raw)` walk a model-shaped input twice, the second
# time building every part of the model. A model walker (`model_walker(model_spec(Model, {}))`)
# does the work of both in one walk for the inputs it can prove valid, and builds nothing: it
# answers (values, characters), as `check_size` counts them, only when every value has an exact
# plain type, each dict has its model's keys (by alias; extra="forbid", the required ones present)
# and each field its type (str, int, bool, finite float, a Literal of strs, tuples, nested models,
# each optionally None), no lone surrogate: then `check_size` finds no problem within the limits
# and pydantic accepts the value for sure. Anything else raises Unproven, and the caller asks the
# reference (a value pydantic would coerce, "1" for an int, is left to it too). `model_spec`
# refuses a model whose validation it cannot mirror (validators, constraints, other configuration).


class Unproven(Exception):
    """A model walker cannot prove the value valid (or a model cannot be mirrored): the
    reference (`check_size`, then pydantic) decides."""


KIND_STR, KIND_INT, KIND_BOOL, KIND_FLOAT, KIND_LIT, KIND_MODEL, KIND_TSTR, KIND_TMODEL = range(8)
_INT_BOUND = 1 << 63  # ints are accepted within +-2**63 (pydantic takes any; beyond: the reference decides)
# the model configuration keys a walker knows the meaning of (anything else: no walker)
_KNOWN_CONFIG = frozenset({"frozen", "extra", "populate_by_name", "serialize_by_alias", "validate_by_name",
                           "title"})


class ModelSpec:
    """What the walker of one model accepts (`model_walker`): its keys (the alias of a field that
    has one, else its name), the required ones, and each key's (kind, nullable, argument)."""

    __slots__ = ("model", "fields", "required")

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model
        self.fields: dict[str, tuple] = {}
        self.required: frozenset = frozenset()


def model_spec(model: type[BaseModel], specs: dict) -> ModelSpec:
    """The spec of `model` (built once per model; raises Unproven for a model whose
    validation it cannot mirror: another `extra`, validators, constraints, aliases beyond a
    plain one, a field type it does not know)."""
    got = specs.get(model)
    if got is not None:
        return got
    cfg = dict(model.model_config)
    if (cfg.get("extra") != "forbid" or cfg.get("strict") or not set(cfg) <= _KNOWN_CONFIG
            or getattr(model, "__pydantic_root_model__", False)
            or getattr(model, "__pydantic_post_init__", None) is not None):
        raise Unproven(f"{model.__name__}: configuration")
    dec = model.__pydantic_decorators__
    if dec.validators or dec.field_validators or dec.root_validators or dec.model_validators:
        raise Unproven(f"{model.__name__}: validators")
    if "__get_pydantic_core_schema__" in model.__dict__:
        raise Unproven(f"{model.__name__}: its own core schema")
    spec = specs[model] = ModelSpec(model)
    required = []
    for name, f in model.model_fields.items():
        if f.metadata or f.discriminator is not None:
            raise Unproven(f"{model.__name__}.{name}: constraints")
        key = f.alias if f.alias is not None else name
        if type(key) is not str or not key.isascii() or not key.isidentifier() or f.validation_alias not in (None, key):
            raise Unproven(f"{model.__name__}.{name}: alias")
        spec.fields[key] = _kind_of(f.annotation, specs)
        if f.is_required():
            required.append(key)
    spec.required = frozenset(required)
    return spec


def _kind_of(ann: Any, specs: dict) -> tuple:
    """(kind, nullable, argument) of a field annotation; raises Unproven for one not known."""
    import types
    import typing

    nullable = False
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Union or origin is types.UnionType:
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1 or len(args) != 2:
            raise Unproven(f"{ann}: a union")
        nullable, ann = True, rest[0]
        origin, args = typing.get_origin(ann), typing.get_args(ann)
    if ann is str:
        return KIND_STR, nullable, None
    if ann is int:
        return KIND_INT, nullable, None
    if ann is bool:
        return KIND_BOOL, nullable, None
    if ann is float:
        return KIND_FLOAT, nullable, None
    if origin is typing.Literal and args and all(type(a) is str for a in args):
        return KIND_LIT, nullable, frozenset(args)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if args[0] is str:
            return KIND_TSTR, nullable, None
        if isinstance(args[0], type) and issubclass(args[0], BaseModel):
            return KIND_TMODEL, nullable, model_spec(args[0], specs)
    elif isinstance(ann, type) and issubclass(ann, BaseModel):
        return KIND_MODEL, nullable, model_spec(ann, specs)
    raise Unproven(f"{ann}: a type the walkers do not read")


def _field_checks(kind: int, arg: Any, fn: str, i: int, names: dict) -> list[str]:
    """The checks of a present field's value `x` (of `kind`), at no indentation."""
    if kind == KIND_STR:
        return ["if _type(x) is not _str:",
                "    raise _U",
                "c += _len(x)",
                "if not x.isascii() and _sur(x):",
                "    raise _U"]
    if kind == KIND_LIT:
        out = [f"if _type(x) is not _str or x not in {fn}_lit{i}:",
               "    raise _U",
               "c += _len(x)"]
        if not all(a.isascii() for a in arg):  # (an exact str equal to an ASCII literal is ASCII)
            out += ["if not x.isascii() and _sur(x):",
                    "    raise _U"]
        return out
    if kind == KIND_INT:
        return ["if _type(x) is not _int or not -_B < x < _B:",
                "    raise _U"]
    if kind == KIND_BOOL:
        return ["if x is not True and x is not False:",
                "    raise _U"]
    if kind == KIND_FLOAT:
        return ["if _type(x) is not _float or x - x != 0.0:  # (NaN, +-Infinity: refused by the reference)",
                "    raise _U"]
    if kind == KIND_MODEL:
        return [f"n2, c2 = {names[arg]}(x)",
                "n += n2",
                "c += c2"]
    if kind in (KIND_TSTR, KIND_TMODEL):
        out = ["t = _type(x)",
               "if t is not _list and t is not _tuple:",
               "    raise _U",
               "if x:  # (often empty)",
               "    n += _len(x)",
               "    for y in x:"]
        if kind == KIND_TSTR:
            return out + ["        if _type(y) is not _str:",
                          "            raise _U",
                          "    y = _join(x)  # (exact strs: a lone surrogate in one is one in the whole)",
                          "    c += _len(y)",
                          "    if not y.isascii() and _sur(y):",
                          "        raise _U"]
        return out + [f"        n2, c2 = {names[arg]}(y)",
                      "        n += n2",
                      "        c += c2"]
    raise Unproven(f"kind {kind}")  # pragma: no cover - _kind_of makes no other kind


def _walker_source(spec: ModelSpec, names: dict) -> str:
    """The source of `spec`'s walker (see `model_walker`), named in `names` (spec -> function name)."""
    fn = names[spec]
    out = [f"def {fn}(v):",
           "    if _type(v) is not _dict:",
           "        raise _U",
           "    for k in v:  # (before any lookup: only exact str keys are hashed and compared)",
           "        if _type(k) is not _str:",
           "            raise _U",
           "    n = _len(v)",
           "    c = 0  # characters: each key found is a field's (by alias), of a length known here",
           "    m = 0  # the keys found: all n of them, or the dict holds another (extra='forbid')",
           "    get = v.get"]
    for i, (key, (kind, nullable, arg)) in enumerate(spec.fields.items()):
        checks = _field_checks(kind, arg, fn, i, names)
        out += [f"    x = get({key!r}, _M)",
                "    if x is not _M:",
                f"        c += {len(key)}",
                "        m += 1"]
        if nullable:
            out += ["        if x is not None:"] + ["            " + line for line in checks]
        else:
            out += ["        " + line for line in checks]
        if key in spec.required:
            out += ["    else:",
                    "        raise _U"]
    out += ["    if m != _len(v):  # a key that is no field of the model",
            "        raise _U",
            "    return n, c"]
    return "\n".join(out) + "\n"


def model_walker(root: ModelSpec) -> tuple[Any, str]:
    """The walker of `root`'s model (and the source of every walker): called with a value,
    it returns (values, characters) counted as `check_size` counts them, or raises Unproven
    unless pydantic validates the value as that model for sure and `check_size` finds no
    problem in it. Exact types only (dict, list, tuple, str, int, bool, None, a finite
    float; exact str keys), no lone surrogate, each model's keys exactly its fields' (by
    alias), its required ones present, each field of its type (a Literal's one of its
    values, a nested model's dict walked by that model's walker). One function per model,
    generated from the specs: the checks of each field inlined (several times faster than a
    walk that looks each key up)."""
    names: dict = {}
    order = []

    def visit(spec: ModelSpec) -> None:
        if spec in names:
            return
        names[spec] = f"_w_{spec.model.__name__}_{len(names)}"
        order.append(spec)
        for kind, _, arg in spec.fields.values():
            if kind in (KIND_MODEL, KIND_TMODEL):
                visit(arg)

    visit(root)
    ns: dict[str, Any] = {"_type": type, "_dict": dict, "_list": list, "_tuple": tuple, "_str": str, "_int": int,
                          "_float": float, "_len": len, "_join": "".join, "_M": _ABSENT, "_U": Unproven,
                          "_sur": _surrogate, "_B": _INT_BOUND}
    src = []
    for spec in order:
        fn = names[spec]
        for i, (kind, _, arg) in enumerate(spec.fields.values()):
            if kind == KIND_LIT:
                ns[f"{fn}_lit{i}"] = arg
        src.append(_walker_source(spec, names))
    text = "\n".join(src)
    exec(compile(text, f"<stopline model walkers: {root.model.__name__}>", "exec", dont_inherit=True), ns)  # noqa: S102 - our own source, from the models
    return ns[names[root]], text


_ABSENT: Any = object()


def spec_depth(spec: ModelSpec, seen: tuple = ()) -> int:
    """The deepest container a value of `spec`'s model can hold (the model's dict at 0)."""
    if spec in seen:  # a recursive model: unbounded
        return MAX_INPUT_DEPTH
    d = 0
    for kind, _, arg in spec.fields.values():
        if kind == KIND_MODEL:
            d = max(d, 1 + spec_depth(arg, seen + (spec,)))
        elif kind == KIND_TMODEL:
            d = max(d, 2 + spec_depth(arg, seen + (spec,)))
        elif kind == KIND_TSTR:
            d = max(d, 1)
    return d


quick_walk = _quick_walk  # (the fused gate's prologue calls it for nested values)
