"""The engine: gate decisions, rollback plans, rollback authorization, resume decisions.

    engine = policy_engine.load("policies/")
    engine.evaluate(action, workflow_state=None, now=None) -> Decision
    engine.classify_rollback(request, now=None) -> RollbackPlan
    engine.authorize_rollback(plan, approvals, now=None) -> AuthorizationVerdict
    engine.authorize_action(decision, approvals, now=None) -> AuthorizationVerdict
    engine.may_resume(workflow, stop, evidence, now=None) -> ResumeDecision

An `Engine` is immutable and holds no per-call state: share one between threads. None of
the four methods raises on bad input data; bad data gives a fail-closed result with the
errors listed. See the README, section "The engine".
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from itertools import islice
from json.encoder import c_encode_basestring as _c_encode_basestring  # type: ignore[attr-defined]
from json.encoder import c_make_encoder as _c_make_encoder  # type: ignore[attr-defined]
from math import isfinite
from datetime import datetime, timedelta, timezone
from collections.abc import Mapping as _Mapping
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

from pydantic import BaseModel, ValidationError

from .compiler import (  # noqa: I001
    _FIELDS_SET,
    _fields_set,
    _new,
    _set_dict,
    _set_extra,
    _set_fields_set,
    _set_private,
    CAction,
    CompiledPolicy,
    CScenario,
    ECHOED,
    CWorkflow,
    NOW_CACHE_MAX,
    PATTERNS_MAX,
    compile_policy,
    fast,
)
from .diagnostics import Diagnostic, PolicyError
from .models import (
    AuthorizationRequirement,
    AuthorizationVerdict,
    Cascade,
    CascadeLoop,
    CascadeStep,
    CheckpointRecord,
    Compensation,
    CriterionResult,
    Decision,
    DistinctRef,
    EvalError,
    Feasibility,
    PrerequisiteResult,
    RejectedApproval,
    ReversibilityInfo,
    ResumeDecision,
    RollbackPlan,
    RuleRef,
    SlotFill,
    SlotSpec,
    StopInfo,
    TraceEntry,
)
from .source import Span

__all__ = ["Engine", "load", "MAX_INPUT_ITEMS", "MAX_INPUT_DEPTH", "MAX_INPUT_CHARS", "MAX_CASCADE_RECORDS",
           "MAX_APPROVALS", "plan_hash", "action_digest", "canonical_principal"]

# Input limits, checked before any conversion or evaluation (documented in the README, section "The engine").
MAX_INPUT_ITEMS = 100_000  # values in containers (dict entries + list items), whole input
MAX_INPUT_DEPTH = 200  # container nesting
MAX_INPUT_CHARS = 4_000_000  # total characters of all strings (keys and values)
MAX_CASCADE_RECORDS = 10_000  # steps + checkpoint records of one rollback plan
MAX_APPROVALS = 1_000  # approvals per authorization
MAX_LOOPS_LISTED = 100

_UTC = timezone.utc
_TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
_CONTAINERS = (dict, list, tuple)


# ============================================================================ small helpers


def parse_ts(value: Any, what: str = "timestamp") -> datetime:
    """An RFC 3339 string or datetime -> tz-aware UTC datetime. Naive datetimes are UTC.
    Raises ValueError with a message naming `what`."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=_UTC) if value.tzinfo is None else value.astimezone(_UTC)
    if isinstance(value, str):
        if len(value) <= 40 and _TS_RE.match(value):
            text = value
            m = re.search(r"\.(\d+)", text)
            if m and len(m.group(1)) > 6:  # nanoseconds: truncate to microseconds
                text = text[: m.start(1) + 6] + text[m.end(1):]
            try:
                return datetime.fromisoformat(text.replace("z", "Z").replace("t", "T")).astimezone(_UTC)
            except (ValueError, OverflowError):
                pass
        raise ValueError(f"{what} {_short(value)} is not an RFC 3339 timestamp (e.g. 2026-07-02T10:00:00Z)")
    raise ValueError(f"{what} must be an RFC 3339 string, not {_tname(value)}")


_D2 = tuple(f"{i:02d}" for i in range(100))  # "00".."99": fmt_ts without %-formatting


def fmt_ts(t: datetime) -> str:
    """RFC 3339 in UTC with a `Z` suffix; microseconds only when non-zero (6 digits)."""
    if t.tzinfo is not _UTC:
        t = t.astimezone(_UTC)
    y = t.year
    if y < 1000:
        return _fmt_ts_slow(t)
    d2 = _D2  # 4-digit year: the common case, ~3x cheaper than the %-format below
    us = t.microsecond
    if us:
        return f"{y}-{d2[t.month]}-{d2[t.day]}T{d2[t.hour]}:{d2[t.minute]}:{d2[t.second]}.{us:06d}Z"
    return f"{y}-{d2[t.month]}-{d2[t.day]}T{d2[t.hour]}:{d2[t.minute]}:{d2[t.second]}Z"


def _fmt_ts_slow(t: datetime) -> str:
    if t.microsecond:
        return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (
            t.year, t.month, t.day, t.hour, t.minute, t.second, t.microsecond)
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (t.year, t.month, t.day, t.hour, t.minute, t.second)


def _add_seconds(t: datetime, seconds: Union[int, timedelta]) -> Optional[str]:
    try:
        return fmt_ts(t + (seconds if type(seconds) is timedelta else timedelta(seconds=seconds)))
    except OverflowError:
        return "9999-12-31T23:59:59Z"


_DECISION_FIELDS = _FIELDS_SET.get(Decision) or _fields_set(Decision)  # the set fast(Decision, ...) uses


PER_NOW_MAX = 64  # finished decision templates kept per `now` and action type


def _now_fields(fz: Any, now_dt: datetime) -> dict:
    """The type's cache entry for `now_dt`: a dict holding, at key None, the decision's
    (evaluated_at, reversibility) at `now_dt`, and per outcome mask the finished template
    (see `Engine._lane_decision`); kept for the last few `now`s (a batch or a replay evaluates
    many actions at the same `now`)."""
    entry = {None: (fmt_ts(now_dt), _reversibility(fz.action, now_dt))}
    cache = fz.now
    if len(cache) >= NOW_CACHE_MAX:
        cache.clear()
    cache[now_dt] = entry
    return entry


def _reversibility(ca: Optional[CAction], now_dt: datetime) -> Optional[ReversibilityInfo]:
    """The action type's reversibility, with `reversible_until` for an execution at `now_dt`."""
    if ca is None or ca.reversibility is None:
        return None
    rev = ca.reversibility
    if ca.window_td is None:
        return rev
    d = rev.__dict__.copy()
    d["reversible_until"] = _add_seconds(now_dt, ca.window_td)
    return fast(ReversibilityInfo, d)


def _internal(e: BaseException) -> str:
    try:
        text = str(e)
    except Exception:  # noqa: BLE001 - str() of a hostile exception may raise too
        text = "<unprintable>"
    return f"internal error while evaluating ({type(e).__name__}: {text[:200]}); the result fails closed"


def _short(v: Any, limit: int = 60) -> str:
    try:
        s = json.dumps(v, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        s = repr(type(v))
    if not s.isascii() and _SURROGATE_RE.search(s):  # keep messages encodable
        s = s.encode("utf-8", "backslashreplace").decode("utf-8")
    return "`" + (s if len(s) <= limit else s[: limit - 3] + "...") + "`"


def _tname(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a bool"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, (list, tuple)):
        return "a list"
    if isinstance(v, Mapping):
        return "an object"
    return f"a {type(v).__name__}"


# NaN compares false with everything, so `deny when `action.amount > 1000.0`` would not match it.
_NONFINITE = "input holds a non-finite number (NaN or Infinity); numbers must be finite"
# A JSON `"\ud800"` escape decodes to a lone surrogate: no decision holding it can be encoded.
_SURROGATE = "input holds an unpaired surrogate (`\\ud800`-`\\udfff`): text must be valid Unicode"
_SURROGATE_RE = re.compile("[\ud800-\udfff]")

# Values are JSON-like: exactly dict (or a Mapping), list, tuple, str, int, float, bool,
# None, plus the CEL kinds datetime, timedelta and bytes. Anything else is an input error,
# never evaluated: an arbitrary object brings its own `__eq__`/`__hash__` (an object equal
# to everything would match `action.tier == "gold"`), and a subclass of str, int or float
# (a StrEnum, an IntEnum) can override what `==`, `in` and the input check itself call, so
# membership and equality could disagree about it. Subclasses are refused, not converted:
# the caller passes the plain value (`member.value`). See docs/values.md.
_LEAVES = frozenset({int, bool, type(None), datetime, timedelta, bytes})
_KEYS = frozenset({str, int, bool})  # map keys: JSON's strings, and CEL's int and bool keys


def _not_json(v: Any, key: bool = False) -> str:
    t = type(v)
    what = "a map key" if key else "a value"
    for base in (str, bool, int, float, bytes, list, tuple, datetime, timedelta):
        if isinstance(v, base):
            return (f"input holds {what} of type `{t.__name__}`, a subclass of {base.__name__}: subclasses are "
                    f"not accepted (pass the plain {base.__name__}, e.g. an enum member's `.value`)")
    return (f"input holds {what} of type `{t.__name__}`: values must be JSON-like (object, list, string, "
            f"number, bool, null)" + ("; map keys strings, ints or bools" if key else ""))


def check_size(root: Any) -> Optional[str]:
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


def check_fields(action: dict, keys: Optional[tuple]) -> Optional[str]:
    """Why the fields `keys` of `action` (all of it if None) exceed the input limits, or None.

    The gate checks only the fields its conditions can read, and those a decision shows
    (`compiler.reads_of`): a field no condition reads cannot change the decision, so it
    is never looked at (a NaN or a megabyte of text in it costs nothing and denies
    nothing). The limits apply to the checked fields together, as to one object."""
    if keys is None:
        return check_size(action)
    return check_size({k: action[k] for k in keys if k in action})


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
                      dict: "dict", list: "list", _Missing: None}
_FLAT = (str, int, float, bool, _NONE_T)  # the value types of a flat object (see _tag)
_LIST_STR = ("list", str)  # the tag of a list of strings
_FLAT_MAX = 16  # keys of a flat object specialised key by key (more: walked)


def _tag(v: Any) -> Any:
    """The shape tag of one field value: its type (one of `_SHAPE_KINDS`); `_LIST_STR` for
    a list of strings; ("dict", ((key, type), ...)) for a small object with ASCII keys and
    plain scalar values; None for anything a fused gate function does not specialise."""
    t = type(v)
    if t is list:
        if len(v) > _FLAT_MAX * 64:  # not scanned: a miss must stay cheap
            return list
        for x in v:
            if type(x) is not str:
                return list
        return _LIST_STR
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


def shape_of(action: dict, keys: Optional[tuple]) -> dict:
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


def widen(seen: Optional[frozenset], tag: Any) -> frozenset:
    """The shape tags a field has been seen with, plus `tag`: a list of strings and a
    list are a list; two different flat objects, or one and any object, are an object."""
    tags = set(seen or ()) | {tag}
    flats = [t for t in tags if type(t) is tuple and t[0] == "dict"]
    if len(flats) > 1 or (flats and dict in tags):
        tags.difference_update(flats)
        tags.add(dict)
    if _LIST_STR in tags and list in tags:
        tags.discard(_LIST_STR)
    return frozenset(tags)


def _tag_order(t: Any) -> int:
    base = dict if type(t) is tuple and t[0] == "dict" else list if t == _LIST_STR else t
    return list(_SHAPE_KINDS).index(base)


def _check_lines(v: str, t: type) -> list:
    """The lines checking a scalar local `v` of type `t` (its type already proved)."""
    if t is str:
        return [f"if not {v}.isascii() and _sur({v}): _fb()"]
    if t is float:
        return [f"if {v} - {v} != 0.0: _fb()"]
    return []


def lane_prologue(keys: Optional[tuple], skip: tuple = (), shapes: Optional[Mapping] = None
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
          "_join": _join, "TypeError": TypeError}
    if keys is None:
        return ["if _chk(_p0) is not None: _fb()"], ns, {}, {}
    skipped = dict(skip)
    shapes = shapes or {}
    items = len(keys)  # upper bounds: every key present
    chars = sum(len(k) for k in keys) + sum(len(v) for k, v in skipped.items() if k in keys)
    n_parts: list = []  # summands of the item and character counts (None: a running count)
    c_parts: list = []
    lines: list = []
    present: list = []  # fields always seen: fetched by subscript (a KeyError is a new shape)
    absent: list = []  # the others: fetched with a default
    fields: dict = {}
    i = -1
    for k in keys:
        if k in skipped:
            continue
        i += 1
        v = f"_f{i}"
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
            elif t == _LIST_STR:  # strings alone: one join checks them all
                fields[("action", k)] = (v, "list", False)
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
                    lines.append(f"if type({v}) is not {t.__name__}: _fs()")
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
                lines.append(f"{kw} _y is {t.__name__}: pass")
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


def lane_epilogue(fields: Mapping, nows: dict) -> tuple[list, dict]:
    """The end of a fused gate function (after its conditions have set the mask `_m`):
    source lines that check the action's `id` (a str or absent/None, else raise), then
    return the whole `Decision` when the type's cache (`nows`, see `_now_fields`) holds
    the finished template of `_m` at `now`, else `_m` (the caller fills the cache: see
    `Engine._lane_decision`); and their globals. The Decision is
    built as `Engine.evaluate`'s lane builds it (`fast`): the template, its per-call
    fields set, no validation."""
    ns = {"_NOW": nows, "_DEC": Decision, "_new": _new, "_sdict": _set_dict,
          "_sfs": _set_fields_set, "_sext": _set_extra, "_spriv": _set_private, "_DFS": _DECISION_FIELDS,
          "_PER_ACTION": _PER_ACTION, "_adg": action_digest}
    f = fields.get(("action", "id"))
    if f is not None and f[1] == "str" and not f[2]:
        lines = [f"_aid = {f[0]}"]  # the prologue proved it a str
    else:
        lines = [f"_aid = {f[0]} if {f[0]} is not _MISS else None" if f is not None else "_aid = _p0.get('id')",
                 "if _aid is not None and type(_aid) is not str: _fb()"]
    lines += ["_now = _NOW.get(_p2)", "if _now is None: return _m", "_tpl = _now.get(_m)", "if _tpl is None: return _m",
              "_tpl = _tpl.copy()", "_tpl['action_id'] = _aid",
              # a require_approval decision's digest, of this action (see Engine._lane_decision)
              "if _tpl['action_digest'] is _PER_ACTION: _tpl['action_digest'] = _adg(_p0)",
              "_dec = _new(_DEC)", "_sdict(_dec, _tpl)",
              "_sfs(_dec, _DFS)", "_sext(_dec, None)", "_spriv(_dec, None)", "return _dec"]
    return lines, ns


def _check_size(root: Any) -> Optional[str]:
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


def _as_dict(value: Any) -> Any:
    """Models -> dicts (JSON-like, extras kept); everything else unchanged (no copy)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="python", by_alias=True)
    return value


def _value_text(v: Any) -> Optional[str]:
    try:
        from .cel import to_cel_json

        s = json.dumps(to_cel_json(v), ensure_ascii=False, sort_keys=True)
    except Exception:  # noqa: BLE001 - a display helper never fails the decision
        try:
            s = repr(v)
        except Exception:  # noqa: BLE001 - e.g. an int of more than 4300 digits
            s = f"<{type(v).__name__}>"
    return s if len(s) <= 200 else s[:197] + "..."


def _cond_outcome(v: Any) -> tuple[Optional[bool], Optional[str], Optional[str]]:
    """(truth or None on error, error message, budget)."""
    if v is True:
        return True, None, None
    if v is False:
        return False, None, None
    msg = getattr(v, "message", None)
    if msg is not None and type(v).__name__ == "CelError":
        return None, msg, getattr(v, "budget", None)
    return None, f"condition returned {_tname(v)} ({_value_text(v)}), not a bool", None


def _err(rule: str, kind: str, message: str, location: Optional[str] = None,
         budget: Optional[str] = None) -> EvalError:
    return fast(EvalError, {"rule": rule, "kind": kind, "message": message, "location": location,
                            "budget": budget})


# The canonical JSON of plan hashes and action digests: keys sorted, no whitespace, UTF-8
# text, no NaN or Infinity; a value of another type is a TypeError, a cycle a
# RecursionError. Exactly `json.dumps(data, sort_keys=True, separators=(",", ":"),
# ensure_ascii=False, allow_nan=False)`, by the C encoder built once (json.dumps builds one
# per call; it keeps no state between calls), else by json's own encoder.
def _no_json(v: Any) -> Any:
    raise TypeError(f"a {type(v).__name__} is not JSON")


if _c_make_encoder is not None:
    _c_canon = _c_make_encoder(None, _no_json, _c_encode_basestring, None, ":", ",", True, False, False)

    def _canonical(data: Any, _enc: Any = _c_canon, _join: Callable = "".join) -> str:
        return _join(_enc(data, 0))
else:  # pragma: no cover - a Python without the C accelerator
    _canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def plan_hash(plan: Union[RollbackPlan, Mapping[str, Any]]) -> str:
    """sha256 of the plan's canonical JSON, without `plan_hash` and `evaluated_at`.

    Approvals bind to this hash: any change to what the plan does, who must authorize
    it, or the policy that made it gives a different hash."""
    data = plan.model_dump(mode="json") if isinstance(plan, BaseModel) else dict(plan)
    data.pop("plan_hash", None)
    data.pop("evaluated_at", None)
    return "sha256:" + hashlib.sha256(_canonical(data).encode("utf-8", "surrogatepass")).hexdigest()


def action_digest(action: Any) -> Optional[str]:
    """`sha256:` + hex of the action's canonical JSON (as `plan_hash`), or None when the
    action is not plain JSON (a value of another type, a non-finite number, a cycle,
    nesting too deep). A require_approval decision carries it (`Decision.action_digest`),
    computed when the gate decides (what was decided, not what the action later becomes);
    an approval names it, so an approval of one action never releases another
    (`Engine.authorize_action`)."""
    try:  # a model as the gate reads it (an `Action` without an id has `id: null`)
        text = _canonical(_as_dict(action))
    except (TypeError, ValueError, RecursionError):
        return None
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class _PerAction:
    """In a finished template (kept per `now`): the field is filled per action."""

    __slots__ = ()


_PER_ACTION = _PerAction()


def _set_digest(d: dict, action: Any) -> None:
    """Fill the `action_digest` of a require_approval decision's fields `d` (every path).
    None when the action is not plain JSON: `authorize_action` then says why it refuses."""
    d["action_digest"] = action_digest(action)


# ============================================================================ the engine


class Engine:
    """A compiled, immutable policy set. Thread-safe; build with `load()` or
    `Engine.from_load_result()`."""

    __slots__ = ("_p", "_lanes", "_types", "policy_set", "policy_hash", "sources", "diagnostics")

    def __init__(self, policy_set: Any, compiled_exprs: Mapping, sources: Optional[Mapping] = None,
                 diagnostics: Sequence[Diagnostic] = ()) -> None:
        p = compile_policy(policy_set, compiled_exprs)
        object.__setattr__(self, "_p", p)
        # (workflow, action type) -> (workflow, action type, its fused gate): evaluate()'s fast lane
        object.__setattr__(self, "_lanes", {(w.name, a.name): (a.fused, w.running_state, w.policy)
                                            for w in p.workflows.values() for a in w.actions.values()})
        # action type -> (its workflow, its fused gate), for a type declared in one workflow only
        count: dict = {}
        for w in p.workflows.values():
            for a in w.actions.values():
                count[a.name] = count.get(a.name, 0) + 1
        object.__setattr__(self, "_types", {a.name: (w.name, a.fused) for w in p.workflows.values()
                                            for a in w.actions.values() if count[a.name] == 1})
        object.__setattr__(self, "policy_set", policy_set)
        object.__setattr__(self, "policy_hash", policy_set.content_hash)
        object.__setattr__(self, "sources", dict(sources or {}))
        object.__setattr__(self, "diagnostics", tuple(diagnostics))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Engine is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Engine is immutable")

    def __repr__(self) -> str:
        return f"Engine({len(self._p.workflows)} workflows, {self.policy_hash[:19]})"

    @classmethod
    def from_load_result(cls, result: Any) -> "Engine":
        """From a `loader.LoadResult`; raises `PolicyError` if it holds errors."""
        from .loader import require_ok

        pset = require_ok(result)
        return cls(pset, result.compiled, result.sources, result.diagnostics)

    @property
    def compiled(self) -> CompiledPolicy:
        return self._p

    @property
    def workflows(self) -> tuple[str, ...]:
        return tuple(self._p.workflows)

    def version(self, workflow: str) -> Optional[str]:
        wf = self._p.workflows.get(workflow)
        return wf.version if wf else None

    # ------------------------------------------------------------------ now
    @staticmethod
    def _now(now: Any) -> tuple[datetime, Optional[str]]:
        if now is None:
            return datetime.now(_UTC), None
        if type(now) is datetime and now.tzinfo is _UTC:
            return now, None
        try:
            return parse_ts(now, "`now`"), None
        except ValueError as e:
            return datetime.now(_UTC), str(e)

    # ================================================================== gate
    # ---------------------------------------------------------------- the public calls
    # Each is a last-resort guard around the real evaluator: whatever an input does
    # (an object whose own methods raise, a bug of ours), the caller gets a fail-closed
    # result naming the problem, never an exception.

    def evaluate(self, action: Any, workflow_state: Any = None, now: Any = None) -> Decision:
        """May this proposed action execute now? Never raises on bad input."""
        try:
            # The fast lane: the common call (a plain dict for a declared workflow and action
            # type, a running workflow, `now` in UTC or omitted) once its type's fused gate
            # is built: exactly what _evaluate -> _gate return for it, in fewer steps.
            # Anything else, and anything the fused gate refuses, takes the full path.
            if type(action) is dict and workflow_state is None and type(now) is datetime and now.tzinfo is _UTC:
                # the commonest call of all (no state, a `now` given): the same, shorter
                tname = action.get("type")
                lane = self._types.get(tname) if type(tname) is str else None
                if lane is not None:
                    wname = action.get("workflow")
                    fn = lane[1].fn
                    if fn is not None and type(wname) is str and wname == lane[0]:
                        try:
                            m = fn(action, now)
                        except ShapeMiss:  # the full path decides; the lane widens
                            lane[1].missed(action)
                            m = -1
                        except Exception:  # noqa: BLE001 - the full path decides
                            m = -1
                        if type(m) is not int:
                            return m
                        if m >= 0:
                            return self._lane_decision(lane[1], m, now, False, wname, tname, action.get("id"), action)
                        return self._evaluate(action, workflow_state, now)
            if type(action) is dict:
                live = now is None  # the clock: a `now` no other call shares (no cache)
                if live:
                    now = datetime.now(_UTC)
                wname = action.get("workflow")
                tname = action.get("type")
                if type(wname) is str and type(tname) is str and type(now) is datetime and now.tzinfo is _UTC:
                    lane = self._types.get(tname)
                    if lane is not None and lane[0] == wname:
                        fz = lane[1]
                    else:
                        lane = self._lanes.get((wname, tname))
                        fz = lane[0] if lane is not None else None
                    if fz is not None:
                        fn = fz.fn
                        if workflow_state is not None:
                            status = workflow_state.get("status") if type(workflow_state) is dict else None
                            if not (type(status) is str and status == "running" and check_size(workflow_state) is None):
                                fn = None
                        if fn is not None:
                            # fn checks the fields it reads and the id; with its type's
                            # caches filled, it returns the whole decision, else its mask
                            try:
                                m = fn(action, now) if workflow_state is None else fn(action, now, workflow_state)
                            except ShapeMiss:  # the full path decides; the lane widens
                                fz.missed(action)
                                m = -1
                            except Exception:  # noqa: BLE001 - the full path decides
                                m = -1
                            if type(m) is not int:
                                return m
                            if m >= 0:
                                return self._lane_decision(fz, m, now, live, wname, tname, action.get("id"), action)
            return self._evaluate(action, workflow_state, now)
        except Exception as e:  # noqa: BLE001
            return self._fail(self._safe_now(now), None, None, None, _internal(e))

    def classify_rollback(self, request: Any, now: Any = None) -> RollbackPlan:
        """Scenario, route, window, authorization, feasibility and cascade of a rollback."""
        try:
            return self._classify_rollback(request, now)
        except Exception as e:  # noqa: BLE001
            try:  # keep the plan's identity (workflow, scenario, route) where it is plain text
                req = _as_dict(request)
                ident = {k: req[k] for k in ("workflow", "scenario", "requested_by")
                         if k in req and type(req[k]) is str} if type(req) is dict else {}
                plan = self._classify_rollback(ident, self._safe_now(now))
            except Exception:  # noqa: BLE001
                plan = self._classify_rollback({}, self._safe_now(now))
            d = plan.__dict__.copy()
            d["errors"] = plan.errors + (_err("<input>", "input", _internal(e)),)
            d["authorizable"] = False
            d["plan_hash"] = ""
            return fast(RollbackPlan, d)

    def authorize_rollback(self, plan: Any, approvals: Iterable[Any], now: Any = None) -> AuthorizationVerdict:
        """Do these approvals satisfy the plan's authorization requirement?"""
        try:
            return self._authorize_rollback(plan, approvals, now)
        except Exception as e:  # noqa: BLE001
            return self._verdict(False, "", (), (), (), (_err("<input>", "input", _internal(e)),),
                                 self._safe_now(now))

    def authorize_action(self, decision: Any, approvals: Iterable[Any], now: Any = None) -> AuthorizationVerdict:
        """Do these approvals release the action a `require_approval` decision holds?

        Every matched require_approval rule's requirement (from the policy) must be met, one
        principal filling at most one slot across them; an approval counts only if it names
        the decision's `action_digest`. Never raises: see docs/approvals.md."""
        try:
            return self._authorize_action(decision, approvals, now)
        except Exception as e:  # noqa: BLE001
            return self._verdict(False, "", (), (), (), (_err("<input>", "input", _internal(e)),),
                                 self._safe_now(now))

    def may_resume(self, workflow: Any, stop: Any, evidence: Any, now: Any = None) -> ResumeDecision:
        """May the stopped workflow act again? Every re-enable criterion must hold."""
        try:
            return self._may_resume(workflow, stop, evidence, now)
        except Exception as e:  # noqa: BLE001
            r = self._may_resume(None, None, {}, self._safe_now(now))
            d = r.__dict__.copy()
            d["allowed"] = False
            d["errors"] = r.errors + (_err("<input>", "input", _internal(e)),)
            return fast(ResumeDecision, d)

    def _safe_now(self, now: Any) -> datetime:
        try:
            return self._now(now)[0]
        except Exception:  # noqa: BLE001
            return datetime.now(_UTC)

    def _evaluate(self, action: Any, workflow_state: Any = None, now: Any = None) -> Decision:
        """May this proposed action execute now? Never raises on bad input."""
        if type(now) is datetime and now.tzinfo is _UTC:  # the common case of _now, inline
            now_dt, now_err = now, None
        else:
            now_dt, now_err = self._now(now)
        if type(action) is not dict:
            action = _as_dict(action)
        if type(action) is not dict:
            if isinstance(action, Mapping):
                action = dict(action)
            else:
                return self._fail(now_dt, None, None, None, "the action must be an object, not " + _tname(action))
        problem = check_fields(action, ECHOED)  # what the decision may show; the rest as the gate reads it
        if problem:
            return self._fail(now_dt, None, None, None, problem)
        wname = action.get("workflow")
        tname = action.get("type")
        aid = action.get("id")
        aid = aid if type(aid) is str else (None if aid is None else _short(aid)[1:-1])
        if now_err:
            return self._fail(now_dt, wname if type(wname) is str else None,
                              tname if type(tname) is str else None, aid, now_err)
        # workflow state
        p = self._p
        wf = p.workflows.get(wname) if type(wname) is str else None
        if workflow_state is None:
            state = wf.running_state if wf is not None else None
        else:
            state = _as_dict(workflow_state)
            if not isinstance(state, Mapping):
                return self._fail(now_dt, wname, tname, aid, "the workflow state must be an object, not "
                                  + _tname(state))
            problem = check_size(state)
            if problem:
                return self._fail(now_dt, wname, tname, aid, "workflow state: " + problem)
            status = state.get("status", "running")
            # exactly the str `running` or `stopped`, nothing that merely compares equal or
            # unequal to them (fail closed: anything else is denied below)
            if type(status) is not str:
                return self._fail(now_dt, wname, tname, aid,
                                  f"workflow state status must be the string `running` or `stopped`, not "
                                  f"{_tname(status)}")
            if status == "stopped":
                ca = wf.actions.get(tname) if (wf is not None and type(tname) is str) else None
                if ca is not None and ca.runs_while_stopped:
                    problem = check_fields(action, ca.reads)
                    if problem:
                        return self._fail(now_dt, wname, tname, aid, problem, wf=wf)
                    return self._repair_while_stopped(wf, ca, action, state, now_dt, wname, tname, aid)
                return self._stopped(now_dt, wf, wname, tname, aid, state)
            if status != "running":
                return self._fail(now_dt, wname, tname, aid,
                                  f"workflow state status {_short(status)} is neither `running` nor `stopped`")
        if type(wname) is not str:
            return self._fail(now_dt, None, tname if type(tname) is str else None, aid,
                              "the action has no `workflow` (a string naming its workflow)"
                              if wname is None else f"the action's `workflow` must be a string, not {_tname(wname)}")
        if wf is None:
            known = ", ".join(f"`{n}`" for n in p.workflows) or "none"
            return self._undeclared(now_dt, None, wname, tname if type(tname) is str else None, aid,
                                    "undeclared workflow", f"workflow `{wname}` is not declared in the policy set "
                                                           f"(declared: {known})")
        if type(tname) is not str:
            return self._fail(now_dt, wname, None, aid, "the action has no `type` (a string naming its action type)"
                              if tname is None else f"the action's `type` must be a string, not {_tname(tname)}",
                              wf=wf)
        ca = wf.actions.get(tname)
        problem = check_fields(action, ca.reads if ca is not None else wf.stop_reads)
        if problem:
            return self._fail(now_dt, wname, tname, aid, problem, wf=wf)
        return self._gate(wf, ca, action, state, now_dt, wname, tname, aid)

    def _gate(self, wf: CWorkflow, ca: Optional[CAction], action: dict, state: Any, now_dt: datetime,
              wname: str, tname: str, aid: Optional[str]) -> Decision:
        if ca is not None:
            fz = ca.fused
            fn = fz.fn
            if fn is not None:
                # the fast lane: every condition in one generated function, the decision
                # from the template of its outcome (see FusedGate); anything unusual (an
                # error, a non-bool, an input the fast paths do not handle) raises, and the
                # conditions are evaluated one by one below, exactly
                try:
                    m = fn(action, now_dt, state)
                except ShapeMiss:
                    fz.missed(action)
                    m = -1
                except Exception:  # noqa: BLE001
                    m = -1
                if type(m) is not int:  # the whole decision (see FusedGate.build)
                    return m
                if m >= 0:
                    return self._lane_decision(fz, m, now_dt, False, wname, tname, aid, action)
            elif fz.pending:
                fz.observe(action)  # the shapes it is built for
                fz.pending -= 1  # (racing threads may build it twice: harmless)
                if fz.pending <= 0:
                    fz.build()
            entries = ca.gate
        else:
            entries = wf.gate_stops
        act = {"action": action, "workflow": state, "now": now_dt, "policy": wf.policy}
        values = [False if e[0] is None else e[0](act) for e in entries]
        return self._decide(wf, ca, entries, values, now_dt, wname, tname, aid, action)

    def _lane_decision(self, fz: Any, m: int, now_dt: datetime, live: bool, wname: str, tname: str,
                       aid: Optional[str], action: Any) -> Decision:
        """The decision the fused gate's outcome `m` makes at `now_dt` for the id `aid`
        (a str or None), when the fused function found no finished template: the template
        is built and kept per `now` (see `_now_fields`), unless `now_dt` is the clock's."""
        tmpl = fz.patterns.get(m)
        if tmpl is None:
            tmpl = self._template(fz, m, now_dt, wname, tname, aid)
        d = tmpl.copy()
        if live:
            d["evaluated_at"] = fmt_ts(now_dt)
            d["reversibility"] = _reversibility(fz.action, now_dt)
        else:
            entry = fz.now.get(now_dt)
            if entry is None:
                entry = _now_fields(fz, now_dt)
            d["evaluated_at"], d["reversibility"] = entry[None]
            if len(entry) <= PER_NOW_MAX:
                entry[m] = d
                if d["effect"] == "require_approval":  # its digest is per action (see lane_epilogue)
                    d["action_digest"] = _PER_ACTION
            d = d.copy()  # the kept one stays without an id
        d["action_id"] = aid
        if d["effect"] == "require_approval":
            _set_digest(d, action)
        return fast(Decision, d)

    def _template(self, fz: Any, m: int, now_dt: datetime, wname: str, tname: str, aid: Optional[str]) -> dict:
        """The fields of the decision the fused gate's outcome `m` makes (kept per `m`)."""
        wf = self._p.workflows[wname]
        ca = wf.actions[tname]
        values = [False if b is None else bool(m & b) for b in fz.slots]
        tmpl = self._decide(wf, ca, ca.gate, values, now_dt, wname, tname, aid).__dict__.copy()
        if len(fz.patterns) < PATTERNS_MAX:
            fz.patterns[m] = tmpl
        return tmpl

    def _decide(self, wf: CWorkflow, ca: Optional[CAction], entries: tuple, values: list, now_dt: datetime,
                wname: str, tname: str, aid: Optional[str], action: Any = None) -> Decision:
        """The gate decision from the values of `entries`' conditions (None: constant false);
        without `action` (a template), a require_approval decision has no digest yet."""
        trace: list = []
        matched: list = []
        errors: list = []
        approvals: list = []
        add_trace = trace.append
        add_matched = matched.append
        first = None  # the first matched stop trigger or rule: it decides
        # the workflow's stop triggers (by name), then the type's rules (by precedence, name);
        # each entry precomputed by the compiler (see CAction.gate)
        for (_, trace_true, trace_false, ref, approval, item), v in zip(entries, values):
            if v is False:
                add_trace(trace_false)
            elif v is True:
                add_trace(trace_true)
                add_matched(ref)
                if approval is not None:
                    approvals.append(approval)
                if first is None:
                    first = item
            else:
                self._cond_error(item, v, trace, errors, item.kind)
                if item.effect != "allow":  # errors never widen permission
                    add_matched(ref)
                    if approval is not None:
                        approvals.append(approval)
                    if first is None:
                        first = item
        if ca is None and first is None:
            return self._undeclared(now_dt, wf, wname, tname, aid, "undeclared action type",
                                    f"action type `{tname}` is not declared in workflow `{wname}`",
                                    trace=tuple(trace), matched=tuple(matched), errors=tuple(errors))
        stop_info = None
        if first is not None:
            deciding = first.ref
            effect = first.effect
            if errors:
                name = first.name
                reason = first.reason_err if any(e.rule == name for e in errors) else first.reason
            else:
                reason = first.reason
            if effect == "stop":  # stop triggers come first: `first` is the first matched trigger
                stop_info = first.info
                receipt = ca.receipt if ca is not None else ()
                if first.receipt:
                    receipt = tuple(sorted(set(receipt) | set(first.receipt)))
            else:
                receipt = ca.receipt
        else:
            deciding = wf.default_ref
            effect = wf.default_effect
            reason = ca.default_reason
            receipt = ca.receipt
        rev = _reversibility(ca, now_dt)
        d = {
            "effect": effect, "deciding": deciding, "reason": reason, "workflow": wname, "action_type": tname,
            "action_id": aid, "matched": tuple(matched),
            "approvals": tuple(approvals) if effect == "require_approval" else (), "action_digest": None,
            "stop": stop_info, "reversibility": rev, "receipt": receipt, "errors": tuple(errors),
            "trace": tuple(trace), "evaluated_at": fmt_ts(now_dt), "policy_hash": self.policy_hash,
            "policy_version": wf.version, "owners": wf.owners}
        if effect == "require_approval" and action is not None:
            _set_digest(d, action)
        return fast(Decision, d)

    @staticmethod
    def _cond_error(r: Any, v: Any, trace: list, errors: list, kind: str) -> None:
        _, msg, budget = _cond_outcome(v)
        value = None if type(v).__name__ == "CelError" else _value_text(v)
        matched = r.effect != "allow"
        trace.append(fast(TraceEntry, {"kind": kind, "name": r.name, "effect": r.effect, "location": r.location,
                                       "condition": r.source, "value": value, "error": msg, "matched": matched}))
        errors.append(_err(r.name, kind, msg, r.location, budget))

    def _fail(self, now_dt: datetime, wname: Any, tname: Any, aid: Optional[str], message: str,
              wf: Optional[CWorkflow] = None) -> Decision:
        """Bad input: deny, with the problem as an error."""
        if wf is None and type(wname) is str:
            wf = self._p.workflows.get(wname)
        ref = fast(RuleRef, {"kind": "error", "name": "invalid input", "effect": "deny", "location": None})
        return fast(Decision, {
            "effect": "deny", "deciding": ref, "reason": f"denied: {message}",
            "workflow": wname if type(wname) is str else None, "action_type": tname if type(tname) is str else None,
            "action_id": aid, "matched": (), "approvals": (), "action_digest": None, "stop": None,
            "reversibility": None, "receipt": (), "errors": (_err("<input>", "input", message),), "trace": (),
            "evaluated_at": fmt_ts(now_dt),
            "policy_hash": self.policy_hash, "policy_version": wf.version if wf else None,
            "owners": wf.owners if wf else None})

    def _undeclared(self, now_dt: datetime, wf: Optional[CWorkflow], wname: str, tname: Optional[str],
                    aid: Optional[str], name: str, message: str, trace: tuple = (), matched: tuple = (),
                    errors: tuple = ()) -> Decision:
        ref = fast(RuleRef, {"kind": "undeclared", "name": name, "effect": "deny", "location": None})
        return fast(Decision, {
            "effect": "deny", "deciding": ref, "reason": f"denied: {message}", "workflow": wname,
            "action_type": tname, "action_id": aid, "matched": matched, "approvals": (), "action_digest": None,
            "stop": None, "reversibility": None, "receipt": (), "errors": errors + (_err("<input>", "input", message),),
            "trace": trace, "evaluated_at": fmt_ts(now_dt), "policy_hash": self.policy_hash,
            "policy_version": wf.version if wf else None, "owners": wf.owners if wf else None})

    def _repair_while_stopped(self, wf: CWorkflow, ca: CAction, action: dict, state: Mapping, now_dt: datetime,
                              wname: str, tname: str, aid: Optional[str]) -> Decision:
        """A `runs_while_stopped` action in a stopped workflow: its own rules and the stop triggers decide."""
        d = self._gate(wf, ca, action, state, now_dt, wname, tname, aid)
        trigger = state.get("stopped_by")
        by = f"`{trigger}`" if type(trigger) is str else "an unnamed trigger"
        fields = d.__dict__.copy()
        fields["reason"] = (f"the workflow is stopped by {by}, but `{tname}` runs while stopped (a repair action), "
                            f"so its own rules decide: {d.reason}")
        return fast(Decision, fields)

    def _stopped(self, now_dt: datetime, wf: Optional[CWorkflow], wname: Any, tname: Any, aid: Optional[str],
                 state: Mapping) -> Decision:
        trigger = state.get("stopped_by")
        stopped_at = state.get("stopped_at")
        at_text = None
        errors = []
        if stopped_at is not None:
            try:
                at_text = fmt_ts(parse_ts(stopped_at, "`stopped_at`"))
            except ValueError as e:
                errors.append(_err("<input>", "input", str(e)))
        s = wf.stops_by_name.get(trigger) if (wf is not None and type(trigger) is str) else None
        tname_s = trigger if type(trigger) is str else ("<unknown>" if trigger is None else _short(trigger)[1:-1])
        if s is not None:
            d = dict(s.info.__dict__)
            d["stopped_at"] = at_text
            info = fast(StopInfo, d)
            location = s.location
        else:
            if wf is None:
                why = "its workflow is not declared" if type(wname) is str else "the action names no workflow"
            elif trigger is None:
                why = "the workflow state names no `stopped_by` trigger"
            else:
                why = f"workflow `{wf.name}` declares no stop trigger `{tname_s}`"
            errors.append(_err("<input>", "input", f"stopped by an unknown trigger: {why}; the workflow stays stopped"))
            info = fast(StopInfo, {"trigger": tname_s, "known": False, "severity": None, "owner": None,
                                   "affects": (), "rollback": None, "notify": (), "resume_criteria": (),
                                   "receipt": (), "location": None, "stopped_at": at_text})
            location = None
        ca = wf.actions.get(tname) if (wf is not None and type(tname) is str) else None
        receipt = tuple(sorted(set(ca.receipt if ca else ()) | set(info.receipt)))
        rev = _reversibility(ca, now_dt)
        ref = fast(RuleRef, {"kind": "stopped", "name": tname_s, "effect": "stop", "location": location})
        return fast(Decision, {
            "effect": "stop", "deciding": ref,
            "reason": f"the workflow is stopped by `{tname_s}`; it stays stopped until a resume decision allows it",
            "workflow": wname if type(wname) is str else None, "action_type": tname if type(tname) is str else None,
            "action_id": aid, "matched": (), "approvals": (), "action_digest": None, "stop": info, "reversibility": rev,
            "receipt": receipt,
            "errors": tuple(errors), "trace": (), "evaluated_at": fmt_ts(now_dt), "policy_hash": self.policy_hash,
            "policy_version": wf.version if wf else None, "owners": wf.owners if wf else None})

    # ================================================================== rollback
    def _classify_rollback(self, request: Any, now: Any = None) -> RollbackPlan:
        """Scenario, route, window, authorization, feasibility and cascade of a rollback."""
        now_dt, now_err = self._now(now)
        req = _as_dict(request)
        errors: list[EvalError] = []
        if now_err:
            errors.append(_err("<input>", "input", now_err))
        valid = isinstance(req, Mapping)
        if not isinstance(req, Mapping):
            errors.append(_err("<input>", "input", "the rollback request must be an object, not " + _tname(req)))
            req = {}
        else:
            problem = check_size(req)
            if problem:
                errors.append(_err("<input>", "input", problem))
                req = {}
                valid = False
        p = self._p
        wname = req.get("workflow")
        sname = req.get("scenario")
        requested_by = req.get("requested_by")
        original = req.get("original")
        wf = p.workflows.get(wname) if type(wname) is str else None
        if valid and wf is None:
            errors.append(_err("<input>", "input", f"workflow {_short(wname)} is not declared in the policy set"
                               if type(wname) is str else "the request has no `workflow` (a string)"))
        sc: Optional[CScenario] = wf.scenarios.get(sname) if (wf is not None and type(sname) is str) else None
        if wf is not None and sc is None:
            declared = ", ".join(f"`{n}`" for n in wf.scenarios) or "none"
            errors.append(_err("<input>", "input",
                               f"rollback scenario {_short(sname)} is not declared in workflow `{wf.name}` "
                               f"(declared: {declared})" if type(sname) is str
                               else "the request has no `scenario` (a string)"))
        if valid and type(requested_by) is not str:
            errors.append(_err("<input>", "input", "the request has no `requested_by` (a principal id string)"))
        if not isinstance(original, Mapping):
            if valid:
                errors.append(_err("<input>", "input", "the request has no `original` record (an object)"))
            original = {}
        oid = original.get("id")
        otype = original.get("type")
        if original and type(oid) is not str:
            errors.append(_err("<input>", "input", "the original record has no `id` (a string)"))
        # The original's type is looked up in the request's workflow only: the same name in
        # another workflow has another window, route and requirement (and a type of no
        # workflow has none). Anything else is not authorizable.
        actions: Mapping[str, CAction] = wf.actions if wf is not None else {}
        ca = actions.get(otype) if type(otype) is str else None
        type_ok = ca is not None
        if wf is not None and original and ca is None:
            if type(otype) is not str:
                errors.append(_err("<input>", "input", "the original record has no `type` (a string naming an "
                                                       f"action type of workflow `{wf.name}`); the plan is not "
                                                       "authorizable"))
            else:
                elsewhere = sorted(w.name for w in p.workflows.values() if otype in w.actions)
                declared = ", ".join(f"`{n}`" for n in wf.actions) or "none"
                errors.append(_err("<input>", "input", (
                    f"the original's type {_short(otype)} is not declared in workflow `{wf.name}` (declared: "
                    f"{declared})" + (f"; it is declared in {', '.join(f'`{n}`' for n in elsewhere)}, whose "
                                      "requirement does not apply to a rollback filed under this workflow"
                                      if elsewhere else "")
                    + "; the plan is not authorizable"), wf.location))
        # ---------------------------------------------------------------- window
        window = "none"
        executed_at = None
        until = None
        overflow = False
        if ca is not None and ca.window_seconds is not None and ca.klass != "irreversible":
            ex = original.get("executed_at")
            executed_at, until, within, problem, overflow = _window(ca, ex, now_dt, "`original.executed_at`")
            if problem is not None:
                errors.append(_err("<input>", "input", problem + ("; the plan is not authorizable" if overflow else ""),
                                   ca.location if overflow else None))
            window = "standard" if within else "escalated"
        elif original.get("executed_at") is not None:
            try:
                executed_at = fmt_ts(parse_ts(original.get("executed_at"), "`original.executed_at`"))
            except (ValueError, OverflowError) as e:
                errors.append(_err("<input>", "input", str(e) if isinstance(e, ValueError) else
                                   "`original.executed_at` is out of the representable range"))
        escalated = window == "escalated"
        # ---------------------------------------------------------------- authorization
        slots: tuple = ()
        distinct_paths: tuple = ()
        route = None
        notify: tuple = ()
        comps: list = []
        depth_limit = 0
        if sc is not None:
            slots = tuple(s.spec for s in sc.slots)
            distinct_paths = sc.distinct_from
            route = sc.route
            notify_set = set(sc.notify)
            comps = [(n, a, "standard") for n, a in sc.compensate]
            depth_limit = sc.cascade_depth
            if escalated and sc.has_escalation:
                slots = slots + tuple(s.spec for s in sc.esc_slots)
                distinct_paths = distinct_paths + sc.esc_distinct_from
                route = sc.esc_route or route
                notify_set |= set(sc.esc_notify)
                have = {n for n, _, _ in comps}
                comps += [(n, a, "escalation") for n, a in sc.esc_compensate if n not in have]
            notify = tuple(sorted(notify_set))
        drefs = []
        unresolved = False
        for path in dict.fromkeys(distinct_paths):
            principals, problem = _resolve(req, path)
            for principal in principals:
                drefs.append(fast(DistinctRef, {"ref": ".".join(path), "principal": principal}))
            if problem is not None:  # nobody to exclude is not "exclude nobody": fail closed
                unresolved = True
                errors.append(_err("<input>", "input", f"`distinct from {'.'.join(path)}`: {problem}; the plan is "
                                                       "not authorizable", sc.location if sc is not None else None))
        drefs.sort(key=lambda d: (d.ref, d.principal or ""))
        excluded = tuple(sorted({d.principal for d in drefs if d.principal is not None}))
        auth = fast(AuthorizationRequirement, {"slots": slots, "distinct_from": tuple(drefs),
                                               "excluded_principals": excluded})
        compensations = tuple(fast(Compensation, {"name": n, "kind": "action" if a else "text", "source": src})
                              for n, a, src in sorted(comps, key=lambda c: (c[2] != "standard", c[0])))
        # ---------------------------------------------------------------- feasibility and cascade
        pol = wf.policy if wf is not None else {}
        if original:
            cascade = self._cascade(original, depth_limit, errors, actions, req, now_dt, pol,
                                    wf.name if wf is not None else None)
            root = cascade.steps[0]
        else:
            cascade = fast(Cascade, {"depth_limit": depth_limit, "steps": (), "checkpoint": (), "loops": (),
                                     "partial": False, "truncated": False, "truncated_reason": None})
            root = None
        feas = self._feasibility(ca, otype, root, cascade)
        authorizable = wf is not None and sc is not None and bool(slots) and type(oid) is str \
            and type(requested_by) is str and not now_err and type_ok and not unresolved and not overflow
        data = {
            "workflow": wname if type(wname) is str else "", "scenario": sname if type(sname) is str else "",
            "scenario_declared": sc is not None, "standard_scenario": bool(sc and sc.standard),
            "authorizable": authorizable, "errors": tuple(errors),
            "original_id": oid if type(oid) is str else None, "original_type": otype if type(otype) is str else None,
            "requested_by": requested_by if type(requested_by) is str else None, "route": route, "window": window,
            "window_seconds": ca.window_seconds if ca is not None else None, "executed_at": executed_at,
            "reversible_until": until, "authorization": auth, "notify": notify, "compensations": compensations,
            "feasibility": feas, "cascade": cascade, "evaluated_at": fmt_ts(now_dt),
            "policy_hash": self.policy_hash, "policy_version": wf.version if wf is not None else None,
            "owners": wf.owners if wf is not None else None, "plan_hash": "",
        }
        plan = fast(RollbackPlan, data)
        data["plan_hash"] = plan_hash(plan)
        return fast(RollbackPlan, data)

    @staticmethod
    def _feasibility(ca: Optional[CAction], otype: Any, root: Optional[CascadeStep], cascade: Cascade
                     ) -> Feasibility:
        """The plan's feasibility: the original's own (its class, its prerequisites, from its
        cascade step), then `partial` when any step (the original's included) is manual,
        blocked or out of its window."""
        reasons = []
        status = "feasible"
        if ca is None:
            status = "manual"
            reasons.append(f"action type {_short(otype)} is not declared in the request's workflow; reverse it by "
                           "hand" if type(otype) is str else
                           "the original record names no action type; reverse it by hand")
        elif ca.klass == "irreversible":
            status = "manual"
            reasons.append(f"`{ca.name}` is irreversible: route to manual handling")
        elif ca.klass is None:
            status = "manual"
            reasons.append(f"`{ca.name}` declares no reversal method: route to manual handling")
        results: tuple = ()
        unmet: tuple = ()
        if ca is not None and root is not None:
            results = root.prerequisites
            unmet = root.unmet
        if unmet:
            reasons.append("prerequisites not met: " + ", ".join(f"`{n}`" for n in unmet))
            if status == "feasible":
                status = "blocked"
        manual = tuple(s.record_id for s in cascade.steps if s.status == "manual")
        blocked = tuple(s.record_id for s in cascade.steps if s.status == "blocked")
        late = tuple(s.record_id for s in cascade.steps if s.status == "out_of_window")
        for word, ids in (("manual", manual), ("blocked (prerequisites not met)", blocked),
                          ("out of their reversal window", late)):
            if ids:
                shown = ", ".join(f"`{i}`" for i in ids[:MAX_STEPS_NAMED])
                more = f" and {len(ids) - MAX_STEPS_NAMED} more" if len(ids) > MAX_STEPS_NAMED else ""
                reasons.append(f"cascade steps {word}: {shown}{more}")
        if status == "feasible" and (manual or blocked or late):
            status = "partial"
        return fast(Feasibility, {"status": status, "reasons": tuple(reasons), "prerequisites": results,
                                  "unmet": unmet, "manual_steps": manual, "blocked_steps": blocked,
                                  "out_of_window_steps": late})

    def _cascade(self, original: Mapping, depth_limit: int, errors: list, actions: Mapping[str, CAction],
                 req: Mapping, now_dt: datetime, pol: Mapping, wname: Optional[str]) -> Cascade:
        """Breadth-first over `downstream` records. Linear in records, bounded by MAX_CASCADE_RECORDS.
        Each step's type is looked up in the request's workflow (`actions`)."""
        steps: list = []
        checkpoint: list = []
        loops: list = []
        nloops = 0
        partial = False
        truncated = False
        truncated_reason = None
        root_id = original.get("id")
        root_id = root_id if type(root_id) is str else "<original>"
        parent_of: dict[str, Optional[str]] = {root_id: None}
        queue = [(original, 0, None, root_id)]
        head = 0
        count = 0
        while head < len(queue):
            rec, depth, parent, rid = queue[head]
            head += 1
            rtype = rec.get("type")
            rtype_s = rtype if type(rtype) is str else "<missing>"
            if depth > depth_limit:
                checkpoint.append(fast(CheckpointRecord, {"record_id": rid, "type": rtype_s, "depth": depth,
                                                          "parent": parent}))
            else:
                steps.append(self._step(actions.get(rtype) if type(rtype) is str else None, rid, rtype_s, depth,
                                        parent, rec, req, now_dt, pol, wname, errors if depth == 0 else None))
            count += 1
            downstream = rec.get("downstream")
            if downstream is None or truncated:
                continue
            if not isinstance(downstream, (list, tuple)):
                errors.append(_err("<input>", "input", f"`downstream` of record `{rid}` must be a list"))
                partial = True
                continue
            for i, child in enumerate(downstream):
                if not isinstance(child, Mapping):
                    errors.append(_err("<input>", "input", f"downstream[{i}] of record `{rid}` is not an object"))
                    partial = True
                    continue
                cid = child.get("id")
                if type(cid) is not str:
                    cid = f"{rid}/downstream[{i}]"
                    errors.append(_err("<input>", "input", f"downstream[{i}] of record `{rid}` has no `id`; "
                                                           f"called `{cid}` in this plan"))
                if cid in parent_of:
                    partial = True
                    nloops += 1
                    if len(loops) < MAX_LOOPS_LISTED:
                        loops.append(fast(CascadeLoop, {"record_id": cid, "parent": rid,
                                                        "path": _path(parent_of, rid) + (cid,)}))
                    continue
                if len(parent_of) >= MAX_CASCADE_RECORDS:
                    if not truncated:
                        truncated = True
                        partial = True
                        truncated_reason = (f"the cascade reaches more than {MAX_CASCADE_RECORDS} records; planning "
                                            f"stopped at downstream[{i}] of record `{rid}`; it and every record "
                                            f"after it in breadth-first order are not planned")
                    break
                parent_of[cid] = rid
                queue.append((child, depth + 1, rid, cid))
        if nloops > len(loops):
            errors.append(_err("<input>", "input", f"{nloops} loops in the cascade; the first "
                                                   f"{MAX_LOOPS_LISTED} are listed"))
        return fast(Cascade, {"depth_limit": depth_limit, "steps": tuple(steps), "checkpoint": tuple(checkpoint),
                              "loops": tuple(loops), "partial": partial, "truncated": truncated,
                              "truncated_reason": truncated_reason})

    @staticmethod
    def _step(ca: Optional[CAction], rid: str, rtype: str, depth: int, parent: Optional[str], rec: Mapping,
              req: Mapping, now_dt: datetime, pol: Mapping, wname: Optional[str],
              errors: Optional[list] = None) -> CascadeStep:
        """One cascade step and its own feasibility: its type's class, its prerequisites
        evaluated over its own record (as `original`), its own window from its own
        `executed_at`. Status: manual (class) > blocked (prerequisites) > out_of_window.
        `errors` (the original's step only): where its prerequisites' errors are listed."""
        manual = False
        reason = None
        if ca is None:
            manual, reason = True, (f"action type `{rtype}` is not declared in workflow `{wname}`"
                                    if wname is not None else f"action type `{rtype}` is not declared")
        elif ca.klass == "irreversible":
            manual, reason = True, f"`{rtype}` is irreversible"
        elif ca.klass is None:
            manual, reason = True, f"`{rtype}` declares no reversal method"
        reasons = [reason] if reason else []
        results: list = []
        unmet: list = []
        executed_at = until = None
        within: Optional[bool] = None
        if ca is not None:
            act = {"original": rec, "request": req, "now": now_dt, "policy": pol}
            for pr in ca.prerequisites:
                ok, msg, budget = _cond_outcome(pr.fn(act))
                if ok:
                    results.append(fast(PrerequisiteResult, {"name": pr.name, "met": True, "reason": None,
                                                             "location": pr.location}))
                    continue
                results.append(fast(PrerequisiteResult, {
                    "name": pr.name, "met": False, "reason": "condition is false" if ok is False else f"error: {msg}",
                    "location": pr.location}))
                if ok is None and errors is not None:
                    errors.append(_err(pr.name, "prerequisite", msg, pr.location, budget))
                unmet.append(pr.name)
            if unmet:
                reasons.append("prerequisites not met over this record: " + ", ".join(f"`{n}`" for n in unmet))
        ex = rec.get("executed_at")
        if ca is not None and ca.window_seconds is not None and ca.klass != "irreversible":
            executed_at, until, within, problem, _ = _window(ca, ex, now_dt, f"`executed_at` of record `{rid}`")
            if problem is not None:
                reasons.append(problem)
            elif not within:
                reasons.append(f"its reversal window ({ca.window}) closed at {until}")
        elif ex is not None:
            try:
                executed_at = fmt_ts(parse_ts(ex, "`executed_at`"))
            except (ValueError, OverflowError):
                reasons.append(f"`executed_at` of record `{rid}` is not an RFC 3339 timestamp")
        status = "manual" if manual else "blocked" if unmet else "out_of_window" if within is False else "feasible"
        return fast(CascadeStep, {
            "record_id": rid, "type": rtype, "depth": depth, "parent": parent,
            "method": ca.method if ca is not None else None, "verify": ca.verify if ca is not None else None,
            "reversibility": ca.klass if ca is not None else None, "manual": manual, "reason": reason,
            "status": status, "executed_at": executed_at,
            "window_seconds": ca.window_seconds if ca is not None else None, "reversible_until": until,
            "within_window": within, "prerequisites": tuple(results), "unmet": tuple(unmet),
            "reasons": tuple(reasons)})

    # ================================================================== authorization
    def _authorize_rollback(self, plan: Any, approvals: Iterable[Any], now: Any = None) -> AuthorizationVerdict:
        """Do these approvals satisfy the authorization the policy requires for this plan?"""
        now_dt, now_err = self._now(now)
        errors: list[EvalError] = []
        if now_err:
            errors.append(_err("<input>", "input", now_err))
        if not isinstance(plan, RollbackPlan):
            plan, problem = _parsed(RollbackPlan, plan, "plan")
            if problem:
                return self._verdict(False, "", (), (), (), (_err("<input>", "input", problem),) + tuple(errors),
                                     now_dt)
        expected = plan_hash(plan)
        if plan.plan_hash != expected:
            errors.append(_err("<input>", "input", "the plan's content does not match its `plan_hash`: it was "
                                                   "changed after classification; classify the rollback again"))
        if plan.policy_hash != self.policy_hash:
            errors.append(_err("<input>", "policy", f"the plan was classified under policy {plan.policy_hash}; "
                                                    f"this engine holds {self.policy_hash}"))
        if not plan.authorizable:
            errors.append(_err("<input>", "input", "the plan is not authorizable (see the plan's errors)"))
        # The slots come from the policy (the plan's workflow, scenario and original type, its
        # window recomputed from `executed_at` at now), never from the plan itself: a plan
        # edited and rehashed cannot lower them.
        slots, problem = self._required(plan, now_dt)
        if problem:
            errors.append(_err("<input>", "policy", problem))
        excluded: dict[str, set] = {p: set() for p in plan.authorization.excluded_principals}
        for d in plan.authorization.distinct_from:
            if d.principal is not None:
                excluded.setdefault(d.principal, set()).add(f"`{d.ref}`")
        why = {p: (", ".join(sorted(refs)) or "excluded by the plan") for p, refs in excluded.items()}
        fills, open_slots, accepted, rejected = _judge(approvals, "plan_hash", plan.plan_hash, plan.policy_hash,
                                                       slots, why, now_dt, errors)
        satisfied = not errors and bool(slots) and not open_slots
        return self._verdict(satisfied, plan.plan_hash, fills, open_slots, accepted, tuple(errors), now_dt, rejected)

    def _required(self, plan: RollbackPlan, now_dt: datetime) -> tuple[tuple[SlotSpec, ...], Optional[str]]:
        """The slots the policy requires for the plan's workflow, scenario and original type
        at `now_dt` (the window recomputed from the plan's `executed_at` by `_window`, as
        `classify_rollback` does), and why the plan's own requirement differs, or None."""
        wf = self._p.workflows.get(plan.workflow)
        sc = wf.scenarios.get(plan.scenario) if wf is not None else None
        if sc is None:
            return (), (f"the plan names scenario `{plan.scenario}` of workflow `{plan.workflow}`, which this policy "
                        "does not declare")
        ca = wf.actions.get(plan.original_type) if plan.original_type is not None else None
        if ca is None:
            return (), (f"the plan's original type `{plan.original_type}` is not declared in workflow "
                        f"`{plan.workflow}`: no requirement applies; classify the rollback again")
        window = "none"
        if ca.window_seconds is not None and ca.klass != "irreversible":
            _, _, within, _, _ = _window(ca, plan.executed_at, now_dt, "the plan's `executed_at`")
            window = "standard" if within else "escalated"
        slots = tuple(s.spec for s in sc.slots)
        paths = tuple(sc.distinct_from)
        if window == "escalated" and sc.has_escalation:
            slots += tuple(s.spec for s in sc.esc_slots)
            paths += sc.esc_distinct_from
        if window != plan.window:
            return slots, (f"the plan says its reversal window is `{plan.window}`, but at {fmt_ts(now_dt)} it is "
                           f"`{window}` (`{ca.name}` executed at {plan.executed_at}, window {ca.window}): the "
                           f"{window} path applies; classify the rollback again")
        auth = plan.authorization
        want_refs = {".".join(p) for p in paths}
        have_refs = {d.ref for d in auth.distinct_from}
        excluded = {d.principal for d in auth.distinct_from if d.principal is not None}
        if tuple(auth.slots) != slots or have_refs != want_refs or set(auth.excluded_principals) != excluded:
            return slots, (f"the plan's authorization requirement is not what scenario `{plan.scenario}` requires "
                           f"({window} path): it was changed after classification; classify the rollback again")
        return slots, None

    def _authorize_action(self, decision: Any, approvals: Iterable[Any], now: Any = None) -> AuthorizationVerdict:
        """Do these approvals release the action this require_approval decision holds?"""
        now_dt, now_err = self._now(now)
        errors: list[EvalError] = []
        if now_err:
            errors.append(_err("<input>", "input", now_err))
        if not isinstance(decision, Decision):
            decision, problem = _parsed(Decision, decision, "decision")
            if problem:
                return self._verdict(False, "", (), (), (), (_err("<input>", "input", problem),) + tuple(errors),
                                     now_dt)
        d = decision
        digest = d.action_digest
        if d.policy_hash != self.policy_hash:
            errors.append(_err("<input>", "policy", f"the decision was made under policy {d.policy_hash}; this "
                                                    f"engine holds {self.policy_hash}: evaluate the action again"))
        wf = self._p.workflows.get(d.workflow) if d.workflow is not None else None
        ca = wf.actions.get(d.action_type) if (wf is not None and d.action_type is not None) else None
        slots: list[SlotSpec] = []
        if d.effect != "require_approval":
            errors.append(_err("<input>", "input", f"the decision is `{d.effect}`: approvals release only a "
                                                   "`require_approval` decision"))
        elif ca is None:
            errors.append(_err("<input>", "input", f"the decision names action type `{d.action_type}` of workflow "
                                                   f"`{d.workflow}`, which this policy does not declare"))
        else:
            # the requirement of every matched require_approval rule, from the policy (never
            # the decision's own `approvals`): one slot per rule
            rules = {(r.name, r.location): r for r in ca.rules}
            reqs = []
            for ref in d.matched:
                if ref.effect != "require_approval":
                    continue
                rule = rules.get((ref.name, ref.location)) if ref.kind == "rule" else None
                if rule is None or rule.effect != "require_approval":
                    errors.append(_err("<input>", "input", f"the decision names matched rule `{ref.name}`, which "
                                                           f"is not a require_approval rule of `{ca.name}`"))
                elif rule.approval is None:
                    errors.append(_err(rule.name, "rule", f"rule `{rule.name}` names no approvers (`by N role`): "
                                                          "no approval can release it", rule.location))
                else:
                    reqs.append(rule.approval)
            if not reqs and not errors:
                errors.append(_err("<input>", "input", f"no require_approval rule with approvers matched (decided "
                                                       f"by {d.deciding.kind} `{d.deciding.name}`): the policy "
                                                       "names nobody who may release this action"))
            if tuple(reqs) != tuple(d.approvals):
                errors.append(_err("<input>", "input", "the decision's `approvals` are not what its matched rules "
                                                       "require: it was changed after evaluation; evaluate the "
                                                       "action again"))
            ids: dict[str, int] = {}
            for r in reqs:
                ids[r.rule] = ids.get(r.rule, 0) + 1
                sid = r.rule if ids[r.rule] == 1 else f"{r.rule}#{ids[r.rule]}"
                slots.append(fast(SlotSpec, {"id": sid, "count": r.count, "roles": r.roles, "any_of": r.any_of,
                                             "source": "standard"}))
        if type(digest) is not str or not digest:
            errors.append(_err("<input>", "input", "the decision carries no `action_digest` (its action is not plain "
                                                   "JSON, or it is not a require_approval decision): no approval "
                                                   "can be bound to it"))
            digest = None
        fills, open_slots, accepted, rejected = _judge(approvals, "action_digest", digest, d.policy_hash,
                                                       tuple(slots), {}, now_dt, errors)
        satisfied = not errors and bool(slots) and not open_slots
        return self._verdict(satisfied, "", fills, open_slots, accepted, tuple(errors), now_dt, rejected, digest)

    def _verdict(self, satisfied: bool, ph: str, fills: tuple, open_slots: tuple, accepted: tuple, errors: tuple,
                 now_dt: datetime, rejected: tuple = (), digest: Optional[str] = None) -> AuthorizationVerdict:
        return fast(AuthorizationVerdict, {
            "satisfied": satisfied, "plan_hash": ph, "action_digest": digest, "slots": fills,
            "open_slots": open_slots, "accepted": accepted, "rejected": rejected, "errors": errors,
            "evaluated_at": fmt_ts(now_dt), "policy_hash": self.policy_hash})

    # ================================================================== questions (stopline eval)
    def answer(self, question: Any) -> BaseModel:
        """Answer one question envelope (the input of `stopline eval`):

            {"question": "gate", "action": {...}, "workflow_state": {...}?, "now": ts?}
            {"question": "rollback", "request": {...}, "now": ts?}
            {"question": "authorize", "plan": {...} | "request": {...} | "decision": {...},
             "approvals": [...], "now": ts?}
            {"question": "resume", "workflow": str, "stop": str | {...}, "evidence": {...}, "now": ts?}

        Raises `QuestionError` when the envelope itself is malformed (the CLI exits 2);
        bad data inside it gives a fail-closed result like the methods do."""
        q = _as_dict(question)
        if not isinstance(q, Mapping):
            raise QuestionError("the input must be a JSON object with a `question` field")
        kind = q.get("question")
        known = {"gate": ("action", "workflow_state", "now"), "rollback": ("request", "now"),
                 "authorize": ("plan", "request", "decision", "approvals", "now"),
                 "resume": ("workflow", "stop", "evidence", "now")}
        if kind not in known:
            raise QuestionError(f"`question` must be one of `gate`, `rollback`, `authorize` or `resume`, not "
                                f"{_short(kind)}")
        extra = sorted(set(q) - set(known[kind]) - {"question"})
        if extra:
            raise QuestionError(f"unknown field{'s' if len(extra) > 1 else ''} for question `{kind}`: "
                                + ", ".join(f"`{x}`" for x in extra)
                                + " (expected " + ", ".join(f"`{x}`" for x in known[kind]) + ")")
        now = q.get("now")
        if kind == "gate":
            if "action" not in q:
                raise QuestionError("question `gate` needs `action`")
            return self.evaluate(q["action"], q.get("workflow_state"), now)
        if kind == "rollback":
            if "request" not in q:
                raise QuestionError("question `rollback` needs `request`")
            return self.classify_rollback(q["request"], now)
        if kind == "authorize":
            if sum(f in q for f in ("plan", "request", "decision")) != 1:
                raise QuestionError("question `authorize` needs exactly one of `plan` (a rollback plan), `request` "
                                    "(a rollback request, classified first) or `decision` (a require_approval gate "
                                    "decision)")
            if "decision" in q:
                return self.authorize_action(q["decision"], q.get("approvals", []), now)
            if "plan" in q:
                return self.authorize_rollback(q["plan"], q.get("approvals", []), now)
            verdict = self.authorize_rollback(self.classify_rollback(q["request"], now), q.get("approvals", []), now)
            if not verdict.satisfied and any(r.code == "plan_hash" for r in verdict.rejected):
                d = verdict.__dict__.copy()
                d["errors"] = verdict.errors + (_err("<input>", "input", _TWO_STEP),)
                verdict = fast(AuthorizationVerdict, d)
            return verdict
        for f in ("workflow", "stop"):
            if f not in q:
                raise QuestionError(f"question `resume` needs `{f}`")
        return self.may_resume(q["workflow"], q["stop"], q.get("evidence", {}), now)

    # ================================================================== resume
    def _may_resume(self, workflow: Any, stop: Any, evidence: Any, now: Any = None) -> ResumeDecision:
        """Are the re-enable criteria of the trigger that stopped `workflow` all met?"""
        now_dt, now_err = self._now(now)
        errors: list[EvalError] = []
        if now_err:
            errors.append(_err("<input>", "input", now_err))
        for problem in (check_size(_as_dict(workflow)), check_size(_as_dict(stop))):
            if problem:  # e.g. an unpaired surrogate that the result would echo
                errors.append(_err("<input>", "input", problem))
                workflow = stop = None
        workflow = _as_dict(workflow)
        state: dict = {}
        if isinstance(workflow, Mapping):
            state = dict(workflow)
            workflow = workflow.get("name")
        stop = _as_dict(stop)
        stopped_at = None
        if isinstance(stop, Mapping):
            if "stopped_by" in stop:
                state = {**state, **stop}
                trigger = stop.get("stopped_by")
                stopped_at = stop.get("stopped_at")
            else:  # a StopInfo or a Decision's `stop`
                inner = stop.get("stop") if isinstance(stop.get("stop"), Mapping) else stop
                trigger = inner.get("trigger")
                stopped_at = inner.get("stopped_at")
        else:
            trigger = stop
        wf = self._p.workflows.get(workflow) if type(workflow) is str else None
        s = wf.stops_by_name.get(trigger) if (wf is not None and type(trigger) is str) else None
        if wf is None:
            errors.append(_err("<input>", "input", f"workflow {_short(workflow)} is not declared in the policy set"
                               if type(workflow) is str else "no workflow named (a string)"))
        elif s is None:
            declared = ", ".join(f"`{x.name}`" for x in wf.stops) or "none"
            errors.append(_err("<input>", "input",
                               f"workflow `{wf.name}` declares no stop trigger {_short(trigger)} (declared: {declared})"
                               if type(trigger) is str else "no stop trigger named (a string, or a workflow state "
                                                            "with `stopped_by`)"))
        ev = _as_dict(evidence)
        if ev is None:
            ev = {}
        bad_input = False  # evidence or stop state that fails the input check: never evaluated
        if not isinstance(ev, Mapping):
            errors.append(_err("<input>", "input", "evidence must be an object, not " + _tname(ev)))
            bad_input = True
        else:
            problem = check_size(ev)
            if problem:
                errors.append(_err("<input>", "input", "evidence: " + problem))
                bad_input = True
        criteria = []
        unmet = []
        if s is not None:
            stop_val = {"name": s.name, "trigger": s.name, "severity": s.info.severity, "owner": s.info.owner}
            if stopped_at is not None:
                try:
                    stop_val["stopped_at"] = parse_ts(stopped_at, "`stopped_at`")
                except ValueError as e:
                    errors.append(_err("<input>", "input", str(e)))
                    bad_input = True
        if s is not None and bad_input:
            # not evaluated on a stand-in (`{}` would make `!has(evidence.open_incidents)`
            # hold): every criterion is unmet, the input error says why
            for c in s.criteria:
                unmet.append(c.name)
                criteria.append(fast(CriterionResult, {"name": c.name, "met": False,
                                                       "reason": "not evaluated: the input has an error",
                                                       "description": c.description, "location": c.location}))
        elif s is not None:
            state.setdefault("name", wf.name)
            state["status"] = "stopped"
            state["stopped_by"] = s.name
            act = {"evidence": ev, "workflow": state, "stop": stop_val, "now": now_dt, "policy": wf.policy}
            for c in s.criteria:
                ok, msg, budget = _cond_outcome(c.fn(act))
                if ok:
                    reason = None
                elif ok is False:
                    reason = "condition is false"
                else:
                    reason = f"error: {msg}"
                    errors.append(_err(c.name, "criterion", msg, c.location, budget))
                if not ok:
                    unmet.append(c.name)
                criteria.append(fast(CriterionResult, {"name": c.name, "met": bool(ok), "reason": reason,
                                                       "description": c.description, "location": c.location}))
        # any error (an input error, a criterion's) means not allowed: errors never widen permission
        allowed = s is not None and not unmet and not errors and bool(criteria)
        return fast(ResumeDecision, {
            "workflow": workflow if type(workflow) is str else "",
            "trigger": trigger if type(trigger) is str else None, "allowed": allowed, "criteria": tuple(criteria),
            "unmet": tuple(unmet), "errors": tuple(errors), "evaluated_at": fmt_ts(now_dt),
            "policy_hash": self.policy_hash, "policy_version": wf.version if wf is not None else None})


# ============================================================================ helpers


class QuestionError(ValueError):
    """A malformed `stopline eval` question envelope."""


_TWO_STEP = ("question `authorize` with `request` classifies the plan in this same call, and approvals bind to a "
             "plan's `plan_hash`, which they cannot know before it is made: use two steps. Ask question `rollback` "
             "with the request, have each approver approve the `plan_hash` it prints, then ask `authorize` with "
             "that `plan` and the approvals (docs/approvals.md)")


def _rej(who: str, code: str, reason: str) -> RejectedApproval:
    return fast(RejectedApproval, {"principal": who, "code": code, "reason": reason})


def _parsed(model: type, raw: Any, what: str) -> tuple[Any, Optional[str]]:
    """`raw` (a dict or a model) validated as `model`, or why it is not one."""
    raw = _as_dict(raw)
    if not isinstance(raw, Mapping):
        return None, f"the {what} must be an object, not " + _tname(raw)
    problem = check_size(raw)
    if problem:
        return None, problem
    try:
        return model.model_validate(raw), None
    except ValidationError as e:
        return None, f"the {what} is not a {model.__name__}: " + "; ".join(
            f"{'.'.join(str(x) for x in er['loc'])}: {er['msg']}" for er in e.errors()[:5])


# Default_Ignorable_Code_Point, from the Unicode Character Database, DerivedCoreProperties.txt
# (https://www.unicode.org/Public/15.1.0/ucd/DerivedCoreProperties.txt; the same ranges since
# Unicode 14.0, the version of Python 3.11's `unicodedata`): code points that render as
# nothing (zero-width spaces and joiners, bidi controls, variation selectors, tags, fillers).
DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F),
    (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)
_IGNORABLE_RE = re.compile("[" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in DEFAULT_IGNORABLE) + "]")


def canonical_principal(principal: str) -> str:
    """The form under which two spellings of one principal id are the same person: NFKC,
    case folded, default-ignorable code points removed (Unicode's NFKC_Casefold, in
    effect). Exact ids still identify principals; this form only keeps one person from
    counting twice, or approving their own rollback, under another spelling."""
    s = _IGNORABLE_RE.sub("", principal)
    s = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", s).casefold())
    return _IGNORABLE_RE.sub("", s)


def _shown(v: Any) -> str:
    return (v if type(v) is str else _short(v)[1:-1])[:80]  # str() of a 5000-digit int raises


def _judge(approvals: Any, bind: str, bound: Optional[str], policy_hash: str, slots: Sequence[SlotSpec],
           excluded: Mapping[str, str], now_dt: datetime, errors: list) -> tuple[tuple, tuple, tuple, tuple]:
    """Which approvals fill `slots`: the one matching of `authorize_rollback` and
    `authorize_action`. An approval counts when it is an object within the input limits
    that names a `principal` (a non-empty string) and `roles` (a list of strings), is bound
    to `bound` by its field `bind` (`plan_hash` or `action_digest`), names no other
    `policy_hash`, has not expired and is not dated after now, is not by a principal of
    `excluded` (principal -> why) nor by another spelling of one or of a principal already
    counted (`canonical_principal`; of several spellings, the first in sorted order counts),
    and holds a role some slot needs. One principal fills at most one slot across all of
    them; the slots are filled by a maximum matching. At most MAX_APPROVALS + 1 approvals
    are read. Returns (fills, open slots, accepted principals, rejected approvals)."""
    what = "plan" if bind == "plan_hash" else "action"
    slot_roles = [set(s.roles) for s in slots]
    all_roles = set().union(*slot_roles) if slot_roles else set()
    rejected: list = []
    cand_roles: dict[str, set] = {}
    if isinstance(approvals, (str, bytes, Mapping)) or not isinstance(approvals, Iterable):
        errors.append(_err("<input>", "input", "approvals must be a list"))
        approvals = ()
    approvals = list(islice(approvals, MAX_APPROVALS + 1))  # an endless iterator stops here
    if len(approvals) > MAX_APPROVALS:
        errors.append(_err("<input>", "input", f"more than {MAX_APPROVALS} approvals; the rest are ignored"))
        approvals = approvals[:MAX_APPROVALS]
    canon: dict[str, str] = {}

    def canonical(p: str) -> str:
        c = canon.get(p)
        if c is None:
            c = canon[p] = canonical_principal(p)
        return c

    excluded_by_form = {canonical(p): p for p in sorted(excluded, reverse=True)}
    for i, a in enumerate(approvals):
        a = _as_dict(a)
        if not isinstance(a, Mapping) or check_size(a):
            rejected.append(_rej(f"<approval #{i}>", "invalid", "the approval is not an object within the "
                                                                "input limits"))
            continue
        who = a.get("principal")
        if type(who) is not str or not who:
            rejected.append(_rej(f"<approval #{i}>", "invalid", "the approval names no `principal` (a string)"))
            continue
        roles = a.get("roles", [])
        if isinstance(roles, str) or not isinstance(roles, (list, tuple)) or not all(type(r) is str for r in roles):
            rejected.append(_rej(who, "invalid", "`roles` must be a list of strings"))
            continue
        b = a.get(bind)
        if b is None:
            rejected.append(_rej(who, bind, f"the approval names no `{bind}`; approvals bind to one {what}"))
            continue
        if bound is None or b != bound:
            rejected.append(_rej(who, bind, f"the approval is for {what} `{_shown(b)}`, not `{bound}`"))
            continue
        pol = a.get("policy_hash")
        if pol is not None and pol != policy_hash:
            rejected.append(_rej(who, "policy_hash", f"the approval was given under policy `{_shown(pol)}`, "
                                                     f"not `{policy_hash}`"))
            continue
        try:
            exp = parse_ts(a["expires_at"], "`expires_at`") if a.get("expires_at") is not None else None
            at = parse_ts(a["at"], "`at`") if a.get("at") is not None else None
        except (ValueError, OverflowError) as e:
            rejected.append(_rej(who, "invalid", str(e) if isinstance(e, ValueError) else "a time out of range"))
            continue
        if exp is not None and exp <= now_dt:
            rejected.append(_rej(who, "expired", f"the approval expired at {fmt_ts(exp)}"))
            continue
        if at is not None and at > now_dt:
            rejected.append(_rej(who, "future", f"the approval is dated {fmt_ts(at)}, after now ({fmt_ts(now_dt)})"))
            continue
        if who in excluded:
            rejected.append(_rej(who, "distinct_from", f"`{who}` is {excluded[who]}; the authorization must come "
                                                       f"from someone else"))
            continue
        same = excluded_by_form.get(canonical(who))
        if same is not None:
            rejected.append(_rej(who, "alias", f"`{who}` is `{same}` written another way (the same id after NFKC, "
                                               f"case folding and removing invisible characters), and `{same}` is "
                                               f"{excluded[same]}; the authorization must come from someone else"))
            continue
        useful = set(roles) & all_roles
        if not useful:
            need = ", ".join(f"`{r}`" for r in sorted(all_roles)) or "none"
            rejected.append(_rej(who, "missing_role", f"`{who}` holds none of the roles the slots need ({need})"))
            continue
        if who in cand_roles:
            cand_roles[who] |= useful
            rejected.append(_rej(who, "duplicate", f"`{who}` already approved; one principal fills at most one "
                                                   f"slot (counted once)"))
            continue
        cand_roles[who] = useful
    counted: dict[str, str] = {}  # canonical form -> the principal counted under it
    for who in sorted(cand_roles):
        first = counted.setdefault(canonical(who), who)
        if first != who:
            rejected.append(_rej(who, "alias", f"`{who}` is `{first}` written another way (the same id after NFKC, "
                                               f"case folding and removing invisible characters); one principal "
                                               f"fills at most one slot (counted once, as `{first}`)"))
    cands = sorted(counted.values())
    assign = _match(cands, cand_roles, slots, slot_roles)
    filled: dict[str, list] = {s.id: [] for s in slots}
    for who, sid in assign.items():
        filled[sid].append(who)
    for who in cands:
        if who not in assign:
            rejected.append(_rej(who, "unused", f"every slot `{who}` could fill ("
                                 + ", ".join(f"`{r}`" for r in sorted(cand_roles[who]))
                                 + ") is already filled"))
    fills = []
    for s in slots:
        by = tuple(sorted(filled[s.id]))
        fills.append(fast(SlotFill, {"id": s.id, "roles": s.roles, "any_of": s.any_of, "count": s.count,
                                     "source": s.source, "filled_by": by, "missing": s.count - len(by)}))
    rejected.sort(key=lambda r: (r.principal, r.code, r.reason))
    return tuple(fills), tuple(f for f in fills if f.missing > 0), tuple(sorted(assign)), tuple(rejected)


def _path(parent_of: Mapping[str, Optional[str]], rid: str) -> tuple[str, ...]:
    out = []
    cur: Optional[str] = rid
    while cur is not None and len(out) <= MAX_CASCADE_RECORDS:
        out.append(cur)
        cur = parent_of.get(cur)
    return tuple(reversed(out))


MAX_STEPS_NAMED = 20  # record ids named per kind in a plan's feasibility reasons (the fields list them all)


def _window(ca: CAction, ex: Any, now_dt: datetime, what: str
            ) -> tuple[Optional[str], Optional[str], bool, Optional[str], bool]:
    """The reversal window of a record of type `ca` (which has one) executed at `ex`:
    (executed_at, reversible_until, within the window at `now_dt`, problem, overflow).
    A missing or unreadable `executed_at`, or one whose window would end after the last
    representable time (overflow), is a problem and the window is treated as closed."""
    if ex is None:
        return None, None, False, f"{what} is missing; the reversal window is treated as expired", False
    try:
        ex_dt = parse_ts(ex, what)
    except ValueError as e:
        return None, None, False, f"{e}; the window is treated as expired", False
    except OverflowError:  # a datetime whose offset moves it out of range
        return None, None, False, f"{what} is out of the representable range; the window is treated as expired", \
            False
    executed_at = fmt_ts(ex_dt)
    try:
        until_dt = ex_dt + ca.window_td
    except OverflowError:
        return executed_at, None, False, (
            f"{what} {executed_at} plus the {ca.window} reversal window of `{ca.name}` ends after "
            f"9999-12-31T23:59:59Z, the last representable time: the execution time cannot be right; the window "
            f"is treated as expired"), True
    return executed_at, fmt_ts(until_dt), now_dt <= until_dt, None, False


def _resolve(req: Mapping, path: tuple[str, ...]) -> tuple[list[Optional[str]], Optional[str]]:
    """Principal ids a `distinct from` reference names in the request, and why it cannot
    be resolved (None when it can). A non-empty string names one principal; a non-empty
    list of them names each. Anything else (missing, null, empty, another type, a list
    holding a non-string) cannot be resolved: the strings it holds are still excluded,
    None stands for the rest, and the plan is not authorizable."""
    where = ".".join(path)
    cur: Any = req if path[0] == "request" else req.get("original") if path[0] == "original" else None
    for part in path[1:]:
        if not isinstance(cur, Mapping):
            return [None], f"the request has no `{where}`"
        cur = cur.get(part)
    if type(cur) is str and cur:
        return [cur], None
    if isinstance(cur, (list, tuple)):
        names = sorted({x for x in cur if type(x) is str and x})
        bad = [i for i, x in enumerate(cur) if not (type(x) is str and x)]
        if not cur:
            return [None], f"`{where}` is an empty list, not the principal ids to exclude"
        if bad:
            return names + [None], f"`{where}[{bad[0]}]` is {_what(cur[bad[0]])}, not a principal id (a non-empty " \
                                   "string)"
        return names, None
    if cur is None:
        return [None], f"the request gives no `{where}` (a principal id, or a list of them)"
    return [None], f"`{where}` is {_what(cur)}, not a principal id (a non-empty string) or a list of them"


def _what(x: Any) -> str:
    if type(x) is str:
        return "an empty string"
    if isinstance(x, str):  # a str subclass (an enum member): not a plain principal id
        return f"a `{type(x).__name__}` (a str subclass)"
    return _tname(x)


def _match(cands: list[str], roles: Mapping[str, set], slots: Sequence, slot_roles: list[set]) -> dict[str, str]:
    """Maximum assignment of principals to slots (with capacities): augmenting paths.

    Deterministic: principals in sorted order, slots in declaration order."""
    cap = [s.count for s in slots]
    holders: list[list[str]] = [[] for _ in slots]
    where: dict[str, int] = {}
    elig = {c: [i for i, r in enumerate(slot_roles) if roles[c] & r] for c in cands}

    def augment(c: str, seen: set) -> bool:
        for i in elig[c]:
            if i in seen:
                continue
            seen.add(i)
            if len(holders[i]) < cap[i]:
                holders[i].append(c)
                where[c] = i
                return True
            for other in list(holders[i]):
                if augment(other, seen):
                    holders[i].remove(other)
                    holders[i].append(c)
                    where[c] = i
                    return True
        return False

    for c in cands:
        if sum(len(h) for h in holders) >= sum(cap):
            break
        augment(c, set())
    return {c: slots[i].id for c, i in where.items()}


# ============================================================================ loading


def load(path_or_paths: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]) -> Engine:
    """Load, check and compile a policy file, a directory, or several. Raises `PolicyError`."""
    from .loader import UsageError, load_paths

    paths = [path_or_paths] if isinstance(path_or_paths, (str, os.PathLike)) else list(path_or_paths)
    try:
        result = load_paths(paths)
    except UsageError as e:
        where = str(paths[0]) if paths else "<no path>"
        raise PolicyError([Diagnostic("E006", "error", str(e), Span(where, 0, 0, 1, 1, 1, 1))]) from None
    return Engine.from_load_result(result)
