"""Decision templates: a fused gate's outcome (a bit mask of its conditions' values)
always makes the same decision apart from the action's id, its digest and the time, so
the decision's fields are built once per outcome by the reference decision builder
(`decide.decide`) and kept (`FusedGate.patterns`), and, for the last few `now`s seen
more than once, kept finished at that time (`FusedGate.now`, see `now_fields`).
`lane_epilogue` is the end of a fused gate function: the finished decision from these
caches, or the mask."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import partial
from typing import Any

from ...cel import CelError
from ...compiled import CompiledPolicy
from ...construct import new, none_until_set, set_dict, set_extra, set_fields_set, set_private
from ...models import Decision, DecisionJson
from ..decide import decide
from ..digests import (
    deferred_digest,
    deferred_digest_nested,
    digest_exact,
    digest_now,
    digest_now_nested,
    set_digest,
)
from ..util import UTC, PendingTimes, deferred_times, times, utc_now
from .dumps import dump_from_template  # noqa: F401 - installs Decision.model_dump(mode="json")'s fast form
from .faults import FAULTS_MAX, resolve
from .native import maker as _native_maker
from .shapes import MISSING, copy_plain

_UNSET: Any = object()
_ATOMS = frozenset({str, int, float, bool, type(None)})  # values a copy may share
_str_keys = frozenset({str}).issuperset

__all__ = ["PATTERNS_MAX", "NOW_CACHE_MAX", "PER_NOW_MAX", "SEEN_MAX", "lane_decision", "lane_epilogue",
           "now_fields", "now_key", "seen_before", "clock", "lane_now"]

PATTERNS_MAX = 1024  # decision templates kept per action type (each ~1 KB)
NOW_CACHE_MAX = 16  # renderings of `now` kept per action type
PER_NOW_MAX = 64  # finished decision templates kept per `now` and action type
SEEN_MAX = 256  # `now`s seen once remembered per action type (a second sighting gets an entry)
FROZEN_COPY = True  # False: every fused gate function freezes by `deferred_digest` (see _frozen_lines)
_new, _set_dict, _set_fields_set, _set_extra, _set_private = new, set_dict, set_fields_set, set_extra, set_private
# True: the decisions built here set `__dict__` and `__pydantic_fields_set__` alone; a
# Decision's `__pydantic_extra__` and `__pydantic_private__` read None until set (installed
# once, here, before this module builds any decision; see construct.none_until_set)
DECISION_SLOTS_NONE = none_until_set(Decision)
clock = partial(datetime.now, UTC)  # `now` omitted: the current time, in UTC


def lane_now(now: Any) -> datetime | None:
    """A lane's `now`: the clock's time when omitted, else `now` as the reference gate reads
    it when that is a datetime in UTC (`util.utc_now`: a string, a naive time, another
    zone's time converted); None when unreadable (the reference decides, and says why)."""
    return clock() if now is None else utc_now(now)


def now_key(now_dt: datetime) -> int:
    """The key of `now_dt` in a type's `now` caches: its microsecond, one attribute read
    where hashing an aware datetime costs about 0.3 us on every new `now`. Several `now`s
    may share a key (whole seconds, say): every slot keyed by it keeps its `now` and
    serves only an equal one, and the `now`s that find their key's slot taken by another
    go to a map keyed by the `now` itself (see `now_fields`), so a shared key costs a
    hash, never a wrong answer."""
    return now_dt.microsecond


def seen_before(fz: Any, k: int, now_dt: datetime) -> bool:
    """Whether `now_dt` (key `k`) was seen before by this type; if not, remember it
    (bounded, `SEEN_MAX`): `fz.seen` maps a key to the first `now` seen with it, and
    `fz.seen_full` holds the `now`s whose key was taken (a key without a `now` in `seen`
    has none in `seen_full`: both are cleared together)."""
    seen = fz.seen
    once = seen.get(k)
    if once is None:
        if len(seen) >= SEEN_MAX:
            seen.clear()
            fz.seen_full.clear()
        seen[k] = now_dt
        return False
    if once == now_dt:
        return True
    full = fz.seen_full
    if now_dt in full:
        return True
    if len(full) >= SEEN_MAX:
        full.clear()
    full[now_dt] = None
    return False


def now_fields(fz: Any, now_dt: datetime) -> dict | None:
    """The type's cache entry for `now_dt`: a dict holding, at key None, the decision's
    (evaluated_at, reversibility) at `now_dt`, and per outcome mask the finished template
    (see `lane_decision`); kept for the last few `now`s seen more than once (a batch or a
    replay evaluates many actions at the same `now`): `fz.now_full` maps each such `now`
    to its entry, and `fz.now` maps a key (`now_key`) to one (now, entry) with that key,
    the lookup that needs no hash (a key without a slot in `now` has no entry in
    `now_full`: both are cleared together). None for a `now` seen for the first time
    (`lane_decision` then defers that decision's time fields, `util.deferred_times`): a
    caller passing its own clock's time, a new `now` on every call, renders nothing it
    does not read. The `now`s seen once are remembered apart (`seen_before`), so a stream
    of new ones never pushes a repeated `now` out of the entries."""
    slot = fz.now_id.get(id(now_dt))
    if slot is not None:  # (the slot holds its `now`: no other object has its id meanwhile)
        return slot[1]
    k = now_dt.microsecond  # (now_key, inline)
    slot = fz.now.get(k)
    if slot is not None:
        if slot[0] is now_dt or slot[0] == now_dt:
            return slot[1]
        entry = fz.now_full.get(now_dt)
        if entry is not None:
            return entry
    if not seen_before(fz, k, now_dt):
        return None
    full = fz.now_full
    if len(full) >= NOW_CACHE_MAX:
        fz.now_id.clear()
        full.clear()
        fz.now.clear()
    entry = {None: times(fz.action, now_dt)}
    full[now_dt] = entry
    fz.now[k] = (now_dt, entry)
    fz.now_id[id(now_dt)] = (now_dt, entry)  # (keeps its `now` alive: its id stays its own)
    return entry


def lane_decision(p: CompiledPolicy, fz: Any, m: int, now_dt: datetime, live: bool, wname: str, tname: str,
                   aid: str | None, action: Any, state: Any = None) -> Decision:
    """The decision the fused gate's outcome `m` makes at `now_dt` for the id `aid`
    (a str or None), when the fused function found no finished template: the template
    is built and kept per `now` (see `now_fields`), unless `now_dt` is the clock's. A
    mask with fault bits (`m >= fz.full`) has its faulted conditions evaluated alone
    (`faults.resolve`, with the workflow state `state`, None: the running state); when
    some are errors, the template of that outcome is kept apart (`fz.faults`)."""
    values = None
    key: Any = m  # (a mask with faults: its resolved key, see `faults.resolve`)
    entry = None if live else now_fields(fz, now_dt)
    if m >= fz.full:
        key, values = resolve(fz, m, action, fz.running if state is None else state, now_dt)
        x = entry.get(key) if entry is not None else None
        if x is not None:  # this outcome's finished template at this `now` (as the fused function takes it)
            d = x[0].copy()
            d["action_id"] = aid
            if x[2]:
                set_digest(d, action)
            return decision_of(d, x[1])
    if values is None:
        pat = fz.patterns.get(key)
        if pat is None:
            pat = template(p, fz, key, now_dt, wname, tname, aid)
    else:
        pat = fz.faults.get(key)
        if pat is None:
            pat = fault_template(p, fz, key, values, now_dt, wname, tname, aid)
            if pat is None:
                return decide(p, p.workflows[wname], fz.action, fz.action.gate, values_of(fz, key, values),
                              now_dt, wname, tname, aid, action)
    tmpl, fs, digest = pat
    d = tmpl.copy()
    if entry is None:  # the clock's time, or a `now` seen once: rendered when read
        deferred_times(fz.action, d, now_dt)
    else:
        d["evaluated_at"], d["reversibility"] = entry[None]
        if len(entry) <= PER_NOW_MAX:
            fs = fs.at(d)  # its JSON with this `now`'s times written in
            entry[key] = (d, fs, digest)  # its digest is per action (see lane_epilogue)
        d = d.copy()  # the kept one stays without an id
    d["action_id"] = aid
    if digest:
        set_digest(d, action)
    return decision_of(d, fs)


def decision_of(fields: dict, fs: Any) -> Decision:
    """The `Decision` of a template's fields and fields set, built as the fused function
    builds one (see `lane_epilogue`): no validation."""
    dec = _new(Decision)
    _set_dict(dec, fields)
    _set_fields_set(dec, fs)
    if not DECISION_SLOTS_NONE:  # (else they read None unset: construct.none_until_set)
        _set_extra(dec, None)
        _set_private(dec, None)
    return dec


def template(p: CompiledPolicy, fz: Any, m: int, now_dt: datetime, wname: str, tname: str, aid: str | None
             ) -> tuple[dict, DecisionJson, bool]:
    """The fields of the decision the fused gate's outcome `m` makes, the fields set
    of the decisions built from them (`models.DecisionJson`: what `Decision.to_json`
    writes them with), and whether it needs the action's digest (require_approval);
    kept per `m`."""
    wf = p.workflows[wname]
    ca = wf.actions[tname]
    values = [False if b is None else bool(m & b) for b in fz.slots]
    tmpl = decide(p, wf, ca, ca.gate, values, now_dt, wname, tname, aid).__dict__.copy()
    pat = (tmpl, DecisionJson(tmpl), tmpl["effect"] == "require_approval")
    if len(fz.patterns) < PATTERNS_MAX:
        fz.patterns[m] = pat
    fz.keep_quiet()  # the fragments it was made of, out of the collector's walks
    return pat


def values_of(fz: Any, key: tuple, values: dict) -> list:
    """The values of a fused gate's conditions, in the order of its gate sequence, for an
    outcome with errors (see `faults.resolve`): `key` is (the mask of the true
    conditions, what the decision reads of the others' values, `faults.fault_key`),
    `values` the values evaluated now, by condition; a value kept is an error, made again
    from its key (the decision reads its message and budget alone)."""
    m = key[0]
    errs = {k[0]: k for k in key[1]}
    vals: list = []
    for b in fz.slots:
        if b is None:
            vals.append(False)
            continue
        i = b.bit_length() - 1
        k = errs.get(i)
        if k is None:
            vals.append(bool(m & b))
        else:
            v = values.get(i, _UNSET)
            vals.append(CelError(k[1], k[2]) if v is _UNSET else v)
    return vals


def fault_template(p: CompiledPolicy, fz: Any, key: tuple, values: dict, now_dt: datetime, wname: str, tname: str,
                   aid: str | None) -> tuple[dict, DecisionJson, bool] | None:
    """`template` for an outcome with errors (see `values_of`), made on its second
    sighting (None on the first, remembered: the caller decides with `decide`): an input
    that errs once, say while an engine warms up, keeps no decision fragments. Kept per
    key in `fz.faults` (bounded: error messages may name input values, so emptied when
    full)."""
    faults = fz.faults
    if len(faults) >= FAULTS_MAX:
        faults.clear()
    if key not in faults:
        faults[key] = None
        return None
    wf = p.workflows[wname]
    ca = wf.actions[tname]
    tmpl = decide(p, wf, ca, ca.gate, values_of(fz, key, values), now_dt, wname, tname, aid).__dict__.copy()
    pat = (tmpl, DecisionJson(tmpl), tmpl["effect"] == "require_approval")
    faults[key] = pat
    fz.keep_quiet()
    return pat


def _frozen_lines(frozen: tuple[int, tuple, tuple, tuple] | None) -> list:
    """The lines of `lane_epilogue` that set a require_approval decision's pending digest
    (see there): `frozen` is `shapes.frozen_copy`'s plan, or None (the generic freeze)."""
    if frozen is None or not FROZEN_COPY:
        return ["    _tpl['action_digest'] = _adg(_p0)"]
    copies = frozen[2]
    lines = [f"    if {_plan_test(frozen)}:", "        _sn = _p0.copy()"]
    for k, v, how, absent in copies:
        copy = (f"_sn[{k!r}] = {v}.copy()" if how == "copy" else f"_sn[{k!r}] = _lst(_map(_dcp, {v}))"
                if how == "records" else f"_sn[{k!r}] = _cpp({v})")
        lines.append(f"        if {v} is not _MISS: {copy}" if absent else f"        {copy}")
    return lines + ["        _tpl['action_digest'] = _sn",  # (pending: the copy itself, see construct.resolve_digest)
                    "    else:",
                    "        _tpl['action_digest'] = _adg(_p0)"]


def _plan_test(frozen: tuple[int, tuple, tuple, tuple]) -> str:
    """The test that an action holds nothing but what `frozen` (see `shapes.frozen_copy`)
    proves: its key count and its unread fields, each a scalar of an exact type."""
    count, maybe, _, extra = frozen
    n = " + ".join([str(count), *(f"({v} is not _MISS)" for v in maybe)])
    return f"len(_p0) == {n}" + "".join(f" and type(_p0.get({k!r}, _MISS)) in _ATOMS" for k in extra)


def _eager_lines(frozen: tuple[int, tuple, tuple, tuple] | None) -> list:
    """The lines of `lane_epilogue` that set a require_approval decision's digest at once
    (`Engine.evaluate_json`): an action `frozen` proves exact plain data, its keys exact
    `str`s too, is written by `digests.digest_exact` (no look at each value's type, no
    marshal image: 0.7 of `digest_now_nested`'s time on the benchmark's nested actions);
    any other by the generic `digests.digest_now`, and so is every action of a type that
    reads no object or list (flat: `digest_now` writes it faster than `digest_exact`)."""
    if frozen is None or not FROZEN_COPY or not frozen[2]:
        return ["        _tpl['action_digest'] = _adgn(_p0)"]
    return [f"        if {_plan_test(frozen)} and _strk(_map(type, _p0)):",
            "            _tpl['action_digest'] = _dgx(_p0)",
            "        else:",
            "            _tpl['action_digest'] = _adgn(_p0)"]


def lane_epilogue(fields: Mapping, fz: Any, live: str = "False", eager: str = "False",
                  frozen: tuple[int, tuple, tuple, tuple] | None = None) -> tuple[list, dict]:
    """The end of a fused gate function (after its conditions have set the mask `_m`):
    source lines that check the action's `id` (a str or absent/None, else raise), then
    return the whole `Decision` when the type's caches hold what it needs, else `_m`
    (the caller fills the caches: see `lane_decision`); and their globals. `live` is the
    expression (a parameter) true when `now` is the clock's. At a `now` with an entry
    (`fz.now`, see `now_fields`), the finished template of `_m`; at the clock's time (never
    cached, never remembered) and at a `now` never seen (a new one on every call), the
    template of `_m` (`fz.patterns`) with its time fields deferred, as `lane_decision`
    makes it, and the `now` remembered (`seen_before`); a `now` seen once before goes to
    `lane_decision`, which gives it an entry. The Decision is built as `lane_decision`
    builds it (`fast`): the template, its per-call fields set, no validation. `eager` is
    the expression (a parameter) true when the caller will write the decision's JSON at
    once (`Engine.evaluate_json`): a require_approval decision's digest is then computed
    now (`digests.digest_now`: no frozen copy made only to be read back at once), and the
    function returns the decision's fields and fields set, `(fields, DecisionJson)`,
    instead of a `Decision` (the caller writes it from them, or builds it).

    `frozen` (see `shapes.frozen_copy`): when the prologue proves every field the type reads
    to be of one plain shape, an action with exactly the fields it reads (and its workflow
    and type) is frozen for its pending digest by a copy, its objects and lists of strings
    copied again, where the generic `digests.deferred_digest` first looks at every value's
    type (a flat action) or makes a marshal image (anything else): a third of the cost of
    a require_approval decision of a flat action of ten fields. An action with any other
    field goes to `deferred_digest`."""
    ca = fz.action
    windowed = ca.window_td is not None and ca.reversibility is not None
    nested = any(f[1] in ("list", "dict") for f in fields.values())
    ns = {"_NOW": fz.now, "_NOWF": fz.now_full, "_NOWI": fz.now_id, "_id": id, "_SEEN": fz.seen,
          "_SEENF": fz.seen_full, "_FZ": fz,
          "_SB": seen_before, "_PAT": fz.patterns, "_CA": ca, "_PT": PendingTimes,
          "_DEC": Decision, "_new": _new, "_sdict": _set_dict,
          "_sfs": _set_fields_set, "_sext": _set_extra, "_spriv": _set_private,
          # a type that reads a list or an object: its actions are not flat, go to marshal at once
          "_adg": deferred_digest_nested if nested else deferred_digest,
          "_adgn": digest_now_nested if nested else digest_now,
          "_ATOMS": _ATOMS, "_MISS": MISSING, "_cpp": copy_plain,
          "_strk": _str_keys, "_map": map, "_dgx": digest_exact, "_lst": list, "_dcp": dict.copy}
    f = fields.get(("action", "id"))
    if f is not None and f[1] == "str" and not f[2]:
        lines = [f"_aid = {f[0]}"]  # the prologue proved it a str
    else:
        lines = [f"_aid = {f[0]} if {f[0]} is not _MISS else None" if f is not None else "_aid = _p0.get('id')",
                 "if _aid is not None and type(_aid) is not str: _fb()"]
    # conditions that raised (fault bits, see `faults`): the caller evaluates them alone
    lines.append(f"if _m >= {fz.full}: return _m" if fz.full < 1 << 62 else "if _m >= _FULL: return _m")
    ns["_FULL"] = fz.full
    lines += [
        # (now_fields, inline: first the `now` passed again, by identity; then one equal to it.
        # The clock's time is never cached: its lookups find no slot but for the one
        # microsecond in a million a cached `now` shares, and then no entry)
        "_e = _NOWI.get(_id(_p2))",
        "if _e is not None: _e = _e[1]",
        "else:",
        "    _e = _NOW.get(_p2.microsecond)",
        "    if _e is not None: _e = _e[1] if _e[0] is _p2 or _e[0] == _p2 else _NOWF.get(_p2)",
        "if _e is not None:",  # the entry of `now`: the finished template of `_m` at `now` (see lane_decision)
        "    _x = _e.get(_m)",
        "    if _x is None: return _m",
    ]
    mk = _native_maker(Decision, None) if DECISION_SLOTS_NONE else None
    if mk is not None:  # (native: the Decision in one call; one needing nothing more, its template copied too)
        ns["_MK"], ns["_MKX"] = mk, _native_maker(Decision, "action_id")
        lines.append(f"    if not _x[2] and not {eager}: return _MKX(_x, _aid)")
    lines += [
        "    _tpl = _x[0].copy()",
        "else:",  # the clock's time, or a `now` never seen: the template, its times rendered when read
        "    _x = _PAT.get(_m)",
        "    if _x is None: return _m",
        f"    if not {live}:",  # (seen_before, inline for a free key; the clock's time: not remembered)
        "        _k = _p2.microsecond",
        "        _s = _SEEN.get(_k)",
        "        if _s is None:",
        f"            if len(_SEEN) >= {SEEN_MAX}: _SEEN.clear(); _SEENF.clear()",
        "            _SEEN[_k] = _p2",
        # seen before: lane_decision gives it an entry
        "        elif _s is _p2 or _s == _p2 or _SB(_FZ, _k, _p2): return _m",
        "    _tpl = _x[0].copy()",
        "    _tpl['evaluated_at'] = _tm = _PT(_CA, _p2)",  # (util.deferred_times, inline)
    ]
    if windowed:
        lines.append("    _tpl['reversibility'] = _tm")
    lines += ["_tpl['action_id'] = _aid",
              # a require_approval decision's digest, of this action (see lane_decision)
              "if _x[2]:",
              f"    if {eager}:",  # (the caller writes the JSON at once: no Decision made)
              *_eager_lines(frozen),
              "        return (_tpl, _x[1])",
              *_frozen_lines(frozen),
              f"elif {eager}: return (_tpl, _x[1])",
              *(("return _MK(_tpl, _x[1])",) if mk is not None else (
                  "_dec = _new(_DEC)", "_sdict(_dec, _tpl)", "_sfs(_dec, _x[1])",
                  # (the extra and private slots read None unset: construct.none_until_set)
                  *(() if DECISION_SLOTS_NONE else ("_sext(_dec, None)", "_spriv(_dec, None)")), "return _dec"))]
    return lines, ns
