"""Shape speculation for the fused gate functions: the shape tag of a field value (`_tag`),
the shapes an action type has been seen with (`shape_of`, `widen`), and the prologue of a
fused gate function (`lane_prologue`): the input check of the fields the type reads,
specialised for the shapes seen, raising `ShapeMiss` for any other (the reference gate
then decides). Only the speed depends on what is speculated, never the decision."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from ...cel.emit import _FastFallback
from ..inputs import MAX_INPUT_CHARS, MAX_INPUT_ITEMS, _join, _quick_walk, _surrogate, check_size
from .native import KINDS as _NATIVE_KINDS
from .native import checker as _native_checker
from .native import enabled as _native_enabled

__all__ = ["ShapeMiss", "MISSING", "shape_of", "widen", "lane_prologue", "frozen_copy", "unread", "copy_plain",
           "EXTRA_MAX", "NO_EXTRA"]


class _Missing:
    """An absent field, in a fused gate function (see `lane_prologue`)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


_MISS = _Missing()


class ShapeMiss(Exception):
    """Raised by a fused gate function whose action fields have types its build never saw
    (see `lane_prologue`): the full path decides, and the gate may be rebuilt wider."""


def _fs() -> Any:
    raise ShapeMiss


_NONE_T = type(None)
# the types a fused gate function may specialise a field for, in the order its tests come,
# and the kind `cel.fuse` then knows the field's local has (None: nothing it uses)
_SHAPE_KINDS: dict = {str: "str", int: "int", float: "float", bool: "bool", _NONE_T: None,
                      dict: "dict", list: "list", _Missing: None, datetime: None, timedelta: None}
# a time and a duration (a Python caller's values of declared `timestamp` and `duration`
# fields): leaves the exact walk passes as they are (no text, no items), the conditions
# read them by their generic code; never exact plain data, so no frozen copy is made of an
# action that may hold one (see frozen_copy)
_TIMES = (datetime, timedelta)
_TYPE_NAME = {datetime: "_DT", timedelta: "_TD"}  # (their names in the generated code)
_FLAT = (str, int, float, bool, _NONE_T)  # the value types of a flat object (see _tag)
_LIST_STR = ("list", str)  # the tag of a list of strings
_LIST_EMPTY = ("list", None)  # the tag of an empty list (checked as a list of strings)
_LIST_ITEMS = (str, int, float, bool)  # the item types a list of scalars is specialised for
_FLAT_MAX = 16  # keys of a flat object specialised key by key (more: walked)
_RECORDS_MAX = 256  # items of a list of objects scanned for one shape (more: walked)


def _tag(v: Any) -> Any:
    """The shape tag of one field value: its type (one of `_SHAPE_KINDS`); ("list", t)
    for a non-empty list whose items are all of one scalar type `t` (`_LIST_STR` for
    strings), `_LIST_EMPTY` for an empty one; ("dict", ((key, type), ...)) for a small
    object with ASCII keys and plain scalar values; ("list", ("dict", ...)) for a list of
    such objects all of the same keys and value types (records: claims, line items); None
    for anything a fused gate function does not specialise."""
    t = type(v)
    if t is list:
        if not v:
            return _LIST_EMPTY
        if len(v) > _FLAT_MAX * 64:  # not scanned: a miss must stay cheap
            return list
        t0 = type(v[0])
        if t0 is dict:
            if len(v) > _RECORDS_MAX:
                return list
            first = _tag(v[0])
            if first is dict:
                return list
            keys = len(first[1])
            for x in v:
                if type(x) is not dict or len(x) != keys:
                    return list
                for k, vt in first[1]:
                    if type(x.get(k, _MISS)) is not vt:
                        return list
                for k in x:  # (the keys of the first: each an exact ASCII str)
                    if type(k) is not str:
                        return list
            return ("list", first)
        if t0 not in _LIST_ITEMS:
            return list
        for x in v:
            if type(x) is not t0:
                return list
        return _LIST_STR if t0 is str else ("list", t0)
    if t is dict:
        if len(v) > _FLAT_MAX:
            return dict
        items = []
        for k, x in v.items():
            if type(k) is not str or not k.isascii() or type(x) not in _FLAT:
                return dict
            items.append((k, type(x)))
        items.sort(key=lambda kv: kv[0])
        return ("dict", tuple(items))
    return t if t in _SHAPE_KINDS else None


def shape_of(action: dict, keys: tuple | None) -> dict:
    """The shape tag (see `_tag`) of each field `keys` of `action` (`_Missing` when
    absent); fields of a type a fused gate function does not specialise are left out."""
    if not keys:
        return {}
    out = {}
    for k in keys:
        t = _tag(action.get(k, _MISS))
        if t is not None:
            out[k] = t
    return out


def widen(seen: frozenset | None, tag: Any) -> frozenset:
    """The shape tags a field has been seen with, plus `tag`: a list of strings and a
    list are a list; two different flat objects, or one and any object, are an object."""
    tags = set(seen or ()) | {tag}
    flats = [t for t in tags if type(t) is tuple and t[0] == "dict"]
    if len(flats) > 1 or (flats and dict in tags):
        tags.difference_update(flats)
        tags.add(dict)
    # lists: an empty one is any list; lists of different items, or one and any list, are a list
    lists = [t for t in tags if type(t) is tuple and t[0] == "list"]
    if _LIST_EMPTY in tags and (len(lists) > 1 or list in tags):
        tags.discard(_LIST_EMPTY)
        lists.remove(_LIST_EMPTY)
    if len(lists) > 1 or (lists and list in tags):
        tags.difference_update(lists)
        tags.add(list)
    out = frozenset(tags)
    # one object per distinct set, shared by every type's `shapes` (a warm engine of 1,000
    # rules held ~1,900 of them, ten-odd distinct: issue 16, goal 5); bounded, since flat
    # object tags name their keys
    return _WIDE.setdefault(out, out) if len(_WIDE) < _WIDE_MAX else _WIDE.get(out, out)


_WIDE: dict = {}  # the sets `widen` has returned, by value (see there)
_WIDE_MAX = 256  # (process-wide and never emptied: at most this many kept for the host)


def _tag_order(t: Any) -> int:
    base = (dict if t[0] == "dict" else list) if type(t) is tuple else t
    return list(_SHAPE_KINDS).index(base)


def _check_lines(v: str, t: type) -> list:
    """The lines checking a scalar local `v` of type `t` (its type already proved)."""
    if t is str:
        return [f"if not {v}.isascii() and _sur({v}): _fb()"]
    if t is float:
        return [f"if {v} - {v} != 0.0: _fb()"]
    return []


def _field_locals(keys: tuple, skipped: Any) -> Any:
    """(i, field, local) for each field of `keys` not in `skipped`: the local a fused gate
    function keeps its value in (`lane_prologue` names them, `frozen_copy` reads them)."""
    i = -1
    for k in keys:
        if k in skipped:
            continue
        i += 1
        yield i, k, f"_f{i}"


def _records_lines(i: int, v: str, items: tuple, ns: dict, n_parts: list, c_parts: list) -> list:
    """The lines of `lane_prologue` checking a list of records (see `_tag`) in the local
    `v`: each item an exact dict of exactly the keys seen (as many, each found, each an
    exact `str`), each value of the type seen and checked as a scalar field is; the counts
    `_quick_walk` makes of it (an item and its keys per record, its keys' and its strings'
    characters). A missing key raises `KeyError`, which the fetch turns into `ShapeMiss`."""
    lines = [f"if type({v}) is not list: _fs()",
             f"if len({v}) > {int(MAX_INPUT_ITEMS)}: _fb()"]
    strs = any(vt is str for _, vt in items)
    if strs:
        lines.append(f"_r{i} = 0")
    loop = [f"for _x in {v}:",
            f"    if type(_x) is not dict or len(_x) != {len(items)}: _fs()"]
    for key, vt in items:
        loop.append(f"    _y = _x[{key!r}]")
        loop.append("    if _y is not None: _fs()" if vt is _NONE_T else f"    if type(_y) is not {vt.__name__}: _fs()")
        loop += ["    " + x for x in _check_lines("_y", vt)]
        if vt is str:
            loop.append(f"    _r{i} += len(_y)")
    # the keys found are those seen; each exactly a str (a subclass compares equal to one)
    loop += ["    for _k in _x:", "        if type(_k) is not str: _fs()"]
    lines += ["try:"] + ["    " + x for x in loop] + ["except KeyError:", "    _fs()"]
    ns["KeyError"] = KeyError
    n_parts.append(f"len({v}) * {len(items) + 1}")
    chars = sum(len(key) for key, _ in items)
    if chars:
        c_parts.append(f"len({v}) * {chars}")
    if strs:
        c_parts.append(f"_r{i}")
    return lines


def _native_spec(t: Any) -> tuple | None:
    """The `native.checker` spec of one field's shape tag (see `_tag`), or None where the
    generated lines must check it: a scalar, a list of strings (or empty) or of numbers or
    bools, a flat object, a list of records."""
    if type(t) is type:
        code = _NATIVE_KINDS.get(t)
        return (code,) if code is not None else None
    if type(t) is not tuple:
        return None
    if t[0] == "dict":  # a flat object, key by key
        subs = tuple((key, _NATIVE_KINDS.get(vt)) for key, vt in t[1])
        return ("D", subs) if subs and all(c is not None for _, c in subs) else None
    if type(t[1]) is tuple:  # a list of records
        subs = tuple((key, _NATIVE_KINDS.get(vt)) for key, vt in t[1][1])
        return ("R", subs) if subs and all(c is not None for _, c in subs) else None
    if t[1] is None or t[1] is str:  # strings alone, or an empty list
        return ("L", "s")
    code = _NATIVE_KINDS.get(t[1])
    return ("L", code) if code in ("i", "b", "f") else None


def _native_prologue(keys: tuple, skipped: dict, shapes: Mapping, items: int, chars: int, ns: dict
                     ) -> tuple[list, dict, dict, dict] | None:
    """`lane_prologue`'s result as one `native.checker` call, where every field the type
    reads is always present and of one shape `_native_spec` knows: the same checks in the
    same order and the same exceptions (see `_speedups.c`), the same `fields`; else None
    (the generated lines do it)."""
    if not _native_enabled():
        return None
    names: list = []
    specs: list = []
    targets: list = []
    fields: dict = {}
    for _, k, v in _field_locals(keys, skipped):
        seen = shapes.get(k)
        if not seen or len(seen) != 1:
            return None
        t = next(iter(seen))
        spec = _native_spec(t)
        if spec is None:
            return None
        names.append(k)
        specs.append(spec)
        targets.append(v)
        if spec[0] == "D":
            fields[("action", k)] = (v, "dict", False)
            for j, (key, vt) in enumerate(t[1]):
                fields[("action", k, key)] = (f"{v}_{j}", _SHAPE_KINDS[vt], False)
                targets.append(f"{v}_{j}")
        elif spec[0] == "R":
            fields[("action", k)] = (v, "list", False)
        elif spec[0] == "L":
            fields[("action", k)] = (v, "list", False, "str" if spec[1] == "s" else _SHAPE_KINDS[t[1]])
        else:
            fields[("action", k)] = (v, _SHAPE_KINDS[t], False)
    if not names:
        return None
    ns["_CK"] = _native_checker(tuple(names), tuple(specs), items, int(MAX_INPUT_ITEMS), chars, int(MAX_INPUT_CHARS),
                               ShapeMiss, _FastFallback)
    return ["".join(f"{x}, " for x in targets) + "= _CK(_p0)"], ns, fields, {
        ("action", k): repr(v) for k, v in skipped.items()}


def lane_prologue(keys: tuple | None, skip: tuple = (), shapes: Mapping | None = None
                  ) -> tuple[list, dict, dict, dict]:
    """The start of a fused gate function (see `compiler.FusedGate`, `cel.fuse`): source
    lines that prove `check_fields(action, keys)` is None, with the action as `_p0`, or
    raise (and the caller takes the full path, which says why); their globals; and the
    `fields` and `known` arguments of `cel.fuse`: per field, what `_quick_walk` does for
    one value, unrolled, leaving the value in a local the conditions then read. `skip`
    holds (field, value) pairs every caller has matched exactly (the workflow and type
    names): only their lengths are counted, and the conditions see them as literals.

    `shapes` maps a field to the shape tags (see `_tag`, `widen`) it has been seen with:
    a speculation, like a JIT's inline cache. A field is then checked for those shapes
    alone, and anything else raises `ShapeMiss` (the full path decides, exactly). A field
    of one shape gives the conditions that shape's kind, so they drop their own type
    tests; a flat object is checked key by key (its keys must be exactly those seen) and
    its values are locals too; a list of strings is checked by joining it. A field not
    in `shapes` is checked for every plain type. Every check counts at least what the
    exact walk counts and refuses at least what it refuses, so passing it proves the
    exact walk passes."""
    ns = {"_qw": _quick_walk, "_sur": _surrogate, "_chk": check_size, "_MISS": _MISS, "_fs": _fs,
          "_join": _join, "TypeError": TypeError, "_DT": datetime, "_TD": timedelta}
    if keys is None:
        return ["if _chk(_p0) is not None: _fb()"], ns, {}, {}
    skipped = dict(skip)
    shapes = shapes or {}
    items = len(keys)  # upper bounds: every key present
    chars = sum(len(k) for k in keys) + sum(len(v) for k, v in skipped.items() if k in keys)
    native_check = _native_prologue(keys, skipped, shapes, items, chars, ns)
    if native_check is not None:
        return native_check
    n_parts: list = []  # summands of the item and character counts (None: a running count)
    c_parts: list = []
    lines: list = []
    present: list = []  # fields always seen: fetched by subscript (a KeyError is a new shape)
    absent: list = []  # the others: fetched with a default
    fields: dict = {}
    for i, k, v in _field_locals(keys, skipped):
        seen = shapes.get(k)
        if seen and _Missing not in seen:
            present.append(f"{v} = _p0[{k!r}]")
        else:
            absent.append(f"{v} = _g({k!r}, _MISS)")
        if not seen:  # every plain type, each checked as _quick_walk does
            fields[("action", k)] = (v, None, True)
            lines += [
                f"_y = type({v})",
                "if _y is str:", f"    _c += len({v})", f"    if not {v}.isascii() and _sur({v}): _fb()",
                f"elif _y is int or _y is bool or {v} is None or {v} is _MISS: pass",
                "elif _y is float:", f"    if {v} - {v} != 0.0: _fb()",
                "elif _y is dict or _y is list:", f"    _q = _qw({v}, 2)", "    _n += _q[0]", "    _c += _q[1]",
                "else: _fb()",
            ]
            n_parts.append(None)
            c_parts.append(None)
            continue
        tags = sorted(seen, key=_tag_order)  # a fixed order: the same source for the same shapes
        if len(tags) == 1:
            t = tags[0]
            if type(t) is tuple and t[0] == "dict":  # a flat object, key by key
                fields[("action", k)] = (v, "dict", False)
                ns[f"_K{i}"] = frozenset(key for key, _ in t[1])
                lines.append(f"if type({v}) is not dict or {v}.keys() != _K{i}: _fs()")
                # keys equal to those seen but of a str subclass: the exact walk refuses them
                lines += [f"for _k in {v}:", "    if type(_k) is not str: _fs()"]
                n_parts.append(str(len(t[1])))
                c_parts.append(str(sum(len(key) for key, _ in t[1])))
                for j, (key, vt) in enumerate(t[1]):
                    w = f"_f{i}_{j}"
                    fields[("action", k, key)] = (w, _SHAPE_KINDS[vt], False)
                    lines.append(f"{w} = {v}[{key!r}]")
                    lines.append(f"if {w} is not None: _fs()" if vt is _NONE_T
                                 else f"if type({w}) is not {vt.__name__}: _fs()")
                    lines += _check_lines(w, vt)
                    if vt is str:
                        c_parts.append(f"len({w})")
            elif type(t) is tuple and type(t[1]) is tuple:  # a list of records, item by item
                lines += _records_lines(i, v, t[1][1], ns, n_parts, c_parts)
                fields[("action", k)] = (v, "list", False)
            elif type(t) is tuple and t[1] in (int, float, bool):  # a list of numbers or bools
                fields[("action", k)] = (v, "list", False, _SHAPE_KINDS[t[1]])
                lines += [f"if type({v}) is not list: _fs()",
                          f"if len({v}) > {int(MAX_INPUT_ITEMS)}: _fb()",
                          f"for _x in {v}:", f"    if type(_x) is not {t[1].__name__}: _fs()"]
                if t[1] is float:
                    lines.append("    if _x - _x != 0.0: _fb()")
                n_parts.append(f"len({v})")
            elif type(t) is tuple:  # strings alone (or empty): one join checks them all
                fields[("action", k)] = (v, "list", False, "str")  # (its items: see cel.fuse)
                lines += [f"if type({v}) is not list: _fs()",
                          f"if len({v}) > {int(MAX_INPUT_ITEMS)}: _fb()",  # (before joining it)
                          # exactly str items (join would take a str subclass, the exact walk does not)
                          f"for _x in {v}:", "    if type(_x) is not str: _fs()",
                          f"_j{i} = _join({v})",
                          f"if not _j{i}.isascii() and _sur(_j{i}): _fb()"]
                n_parts.append(f"len({v})")
                c_parts.append(f"len(_j{i})")
            else:
                fields[("action", k)] = (v, _SHAPE_KINDS[t], t is _Missing)
                if t is _Missing:
                    lines.append(f"if {v} is not _MISS: _fs()")
                elif t is _NONE_T:
                    lines.append(f"if {v} is not None: _fs()")
                else:
                    lines.append(f"if type({v}) is not {_TYPE_NAME.get(t, t.__name__)}: _fs()")
                    lines += _check_lines(v, t)
                    if t is str:
                        c_parts.append(f"len({v})")
                    elif t is dict or t is list:
                        lines.append(f"_q{i} = _qw({v}, 2)")
                        n_parts.append(f"_q{i}[0]")
                        c_parts.append(f"_q{i}[1]")
            continue
        # a few shapes: a chain of their types alone (objects and lists walked)
        fields[("action", k)] = (v, None, _Missing in tags)
        lines.append(f"_y = type({v})")
        done: set = set()
        for t in tags:
            if type(t) is tuple:
                t = dict if t[0] == "dict" else list
            if t in done:
                continue
            done.add(t)
            kw = "if" if len(done) == 1 else "elif"
            if t is _Missing:
                lines.append(f"{kw} {v} is _MISS: pass")
            elif t is _NONE_T:
                lines.append(f"{kw} {v} is None: pass")
            elif t is str:
                lines += [f"{kw} _y is str:", f"    _c += len({v})",
                          f"    if not {v}.isascii() and _sur({v}): _fb()"]
                c_parts.append(None)
            elif t is float:
                lines += [f"{kw} _y is float:", f"    if {v} - {v} != 0.0: _fb()"]
            elif t is dict or t is list:
                lines += [f"{kw} _y is {t.__name__}:", f"    _q = _qw({v}, 2)", "    _n += _q[0]",
                          "    _c += _q[1]"]
                n_parts.append(None)
                c_parts.append(None)
            else:
                lines.append(f"{kw} _y is {_TYPE_NAME.get(t, t.__name__)}: pass")
        lines.append("else: _fs()")
    # the totals: running counters (`_n`, `_c`) where a branch adds to them, else one sum
    head = []
    tail = []
    for name, const, parts, limit in (("_n", items, n_parts, MAX_INPUT_ITEMS), ("_c", chars, c_parts, MAX_INPUT_CHARS)):
        extra = [p for p in parts if p is not None]
        if None in parts:
            head.append(f"{name} = {const}")
            if extra:
                tail.append(f"{name} += " + " + ".join(extra))
        elif extra:
            tail.append(f"{name} = {const} + " + " + ".join(extra))
        elif const <= limit:
            continue
        else:
            tail.append("_fb()")
            continue
        tail.append(f"if {name} > {int(limit)}: _fb()")
    fetch = []
    if present:
        fetch += ["try:"] + ["    " + x for x in present] + ["except KeyError:", "    _fs()"]
        ns["KeyError"] = KeyError
    if absent:
        fetch += ["_g = _p0.get"] + absent
    return head + fetch + lines + tail, ns, fields, {("action", k): repr(v) for k, v in skipped.items()}


EXTRA_MAX = 8  # unread fields a fused gate function's frozen copy checks by name (see unread)
NO_EXTRA: frozenset = frozenset()  # none seen yet (one object for every type)


def unread(action: dict, keys: tuple | None, skip: tuple, seen: frozenset | None) -> frozenset | None:
    """`seen` plus the names of `action`'s fields that no condition of its type reads (nor
    the `skip` ones): what an action of the type carries besides (an id of the entity it
    acts on, say), for `frozen_copy`. None (given up) past `EXTRA_MAX` names or for a key
    that is not a short `str`."""
    if seen is None or keys is None:
        return None
    names = set(seen)
    for k in action:
        if k in keys or k in skip:
            continue
        if type(k) is not str or len(k) > 64:
            return None
        names.add(k)
    if len(names) > EXTRA_MAX:
        return None
    return seen if len(names) == len(seen) else frozenset(names)


def copy_plain(v: Any, _type: Any = type, _dict: type = dict, _list: type = list) -> Any:
    """A deep copy of `v`, which a fused gate function's input check proved exact plain
    data (`_quick_walk`, or a shape: nothing but exact dicts, lists, str, int, float, bool
    and None, at most `_QUICK_DEPTH` deep): the containers copied, the scalars shared."""
    t = _type(v)
    if t is _dict:
        out = v.copy()
        for k, x in out.items():  # (a store to an existing key: the iteration goes on)
            t = _type(x)
            if t is _dict or t is _list:
                out[k] = copy_plain(x)
        return out
    if t is _list:
        out = v.copy()
        for i, x in enumerate(out):
            t = _type(x)
            if t is _dict or t is _list:
                out[i] = copy_plain(x)
        return out
    return v


def frozen_copy(keys: tuple | None, skip: tuple = (), shapes: Mapping | None = None,
                extra: frozenset | None = NO_EXTRA) -> tuple[int, tuple, tuple, tuple] | None:
    """How a fused gate function built by `lane_prologue(keys, skip, shapes)` may freeze
    the action it decided on without looking at it again (a require_approval decision's
    pending digest, see `templates.lane_epilogue`): `(count, maybe, copies, extra)`, or
    None when its check proves nothing (`keys` None: it reads the whole action) or a field
    may hold a time or a duration (`_TIMES`: the generic freeze then digests it).

    Every other value the prologue lets through is exact plain data (see `lane_prologue`): a
    scalar of an exact type, immutable, which a copy may share; a flat object or a list
    of strings, copied by `.copy()`; anything else a walked object or list, copied by
    `copy_plain`. `copies` holds (field, local, how: "copy", "records" (each item copied) or "deep", maybe absent) for
    the fields whose value may be a container. An action whose key count is `count` plus
    one per field of `maybe` (locals) that is present, and which holds every name of
    `extra` (fields no condition reads, see `unread`) each with a value of an exact scalar
    type (the function checks both), holds the fields read, the `skip` ones (the workflow
    and type names, exact `str`s every caller matched) and nothing else. So
    `action.copy()` with those containers copied again is the action as it was, as exact
    plain data (but for its keys, which may be of a `str` subclass), whatever the caller
    later does to it."""
    if keys is None:
        return None
    shapes = shapes or {}
    names = {k for k, _ in skip}
    count = 0
    maybe = []
    copies = []
    for _, k, v in _field_locals(keys, names):
        seen = shapes.get(k)
        if seen and len(seen) == 1:
            (t,) = seen
            if t is _Missing:
                continue  # proven absent
            count += 1
            if type(t) is tuple and t[0] == "list" and type(t[1]) is tuple:
                copies.append((k, v, "records", False))  # each record copied
            elif type(t) is tuple:  # a flat object, a list of scalars
                copies.append((k, v, "copy", False))
            elif t is dict or t is list:
                copies.append((k, v, "deep", False))
            elif t not in _FLAT:  # a time or a duration: the generic freeze (see _TIMES)
                return None
            continue
        if seen and any(t in _TIMES for t in seen):
            return None
        # of several shapes, or of any plain type (a chain of type tests): maybe absent
        absent = not seen or _Missing in seen
        if absent:
            maybe.append(v)
        else:
            count += 1
        if not seen or any(t is dict or t is list or type(t) is tuple for t in seen):
            copies.append((k, v, "deep", absent))
    names.update(keys)
    more = tuple(sorted(k for k in extra or () if k not in names))
    return count + len(skip) + len(more), tuple(maybe), tuple(copies), more


MISSING = _MISS  # an absent field, in a fused gate function
