"""`Decision.model_dump(mode="json")` of a decision of the fast lane, from its template: the
form the public contract shows (`decision.model_dump(mode="json")`), the same dict as
pydantic's, about three times faster; likewise `model_dump()` (python mode: the same with
tuples where the model has them).

Every decision built from one template (`DecisionJson`, see `models`) has the template's
fields apart from `action_id`, `action_digest`, `evaluated_at` and, for an action type with
a reversal window, `reversibility.reversible_until`. pydantic dumps the template once, with
markers in those fields, and that dict becomes the source of a function returning it as one
literal, the four fields its parameters: each call builds new containers (nothing shared
with any other call's result, so a caller may change what it gets; the strings, immutable,
are the code's constants), faster than pydantic walks the models or `pickle` loads a copy.
The dump is checked to hold only what a literal writes exactly (str, int, finite float,
bool, None, list, tuple, dict with str keys; a tuple literal of constants is one shared
constant, immutable like the strings); a template that holds anything else or whose dump
is larger than `MAX_SOURCE`, a decision whose other fields are not its template's (checked
as `DecisionJson.render` checks them), or one that holds a value of another type, is dumped
by pydantic. Installed into `models` on import (the fast lane's modules import it):
`models.DUMP_FROM_TEMPLATE`.
"""

from __future__ import annotations

import math
from typing import Any

from ... import models
from ...construct import Deferred, DeferredTimes, raw_dict, resolve_digest
from ...models import _MARK, Decision, DecisionJson, ReversibilityInfo

__all__ = ["dump_from_template"]

_dump = models.BaseModel.model_dump  # pydantic's own
_PARAMS = {"action_id": "_a", "action_digest": "_d", "evaluated_at": "_e", "reversible_until": "_u"}
# the largest dump made a function (its source, in characters): a typical decision's is 3-5
# KB, compiled in about 1 ms into about 6 KB; one of thousands of matched rules and
# approvals (a MB of JSON) would take a compile of a fifth of a second, once, for a dump
# pydantic writes barely slower
MAX_SOURCE = 65536


def _literal(v: Any) -> bool:
    """Whether `repr(v)` is a Python literal of exactly `v` (a dump's data)."""
    t = type(v)
    if t is str or t is int or t is bool or v is None:
        return True
    if t is float:
        return math.isfinite(v)
    if t is list or t is tuple:
        return all(_literal(x) for x in v)
    if t is dict:
        return all(type(k) is str and _literal(x) for k, x in v.items())
    return False


def _builder(fs: DecisionJson, mode: str) -> Any:
    """The function `(action_id, action_digest, evaluated_at, reversible_until) -> the dump`
    (`mode`: "json" or "python") of `fs`'s template (False when its dump is not all
    literals or is larger than `MAX_SOURCE`), kept on the template's fields set (a fields
    set at one `now` uses its template's)."""
    owner = fs.base if fs.base is not None else fs
    kept = owner.dumps
    if kept is None:
        kept = owner.dumps = {}
    got = kept.get(mode)
    if got is None:
        dec, _window = owner.marked(_MARK)
        dump = _dump(dec, mode=mode)
        got = False
        src = repr(dump) if _literal(dump) else ""
        if 0 < len(src) <= MAX_SOURCE:
            for field, marker in _MARK.items():
                src = src.replace(repr(marker), _PARAMS[field])  # (markers: NUL-delimited, nowhere else)
            ns: dict = {}
            exec(compile(f"def dump(_a, _d, _e, _u):\n    return {src}\n", "<decision dump>", "exec"), ns)
            got = ns["dump"]
        kept[mode] = got
    return got


def dump_from_template(fs: DecisionJson, dec: Decision, mode: str = "json") -> dict[str, Any] | None:
    """`dec.model_dump(mode=mode)` from its template, or None when `dec` is not this
    template's or holds a value of another type (the caller then asks pydantic)."""
    plan = fs.plan
    if plan is None:
        plan = fs.plan = fs._build()
    get, static, rev_get, rev_static = plan[:4]
    if get is None:
        return None
    raw = raw_dict(dec)
    if get(raw) != static:  # (every field but the four; at one `now` every field but id and digest)
        return None
    aid = raw["action_id"]
    if aid is not None and type(aid) is not str:
        return None
    dg = raw["action_digest"]
    if dg is not None and type(dg) is not str:
        if type(dg) is not dict and not isinstance(dg, Deferred):
            return None
        raw["action_digest"] = dg = resolve_digest(dg)  # (as the attribute stores it)
        if dg is not None and type(dg) is not str:
            return None
    ev = raw["evaluated_at"]
    rev = raw["reversibility"]
    if type(ev) is str:
        if type(rev) is ReversibilityInfo:
            rd = raw_dict(rev)
            if rev_get is not None and rev_get(rd) != rev_static:
                return None
            ru = rd["reversible_until"]
        elif rev is None:
            ru = None
        else:
            return None
    elif isinstance(ev, DeferredTimes):
        if rev_get is not None and (rev is not ev or type(ev.base) is not ReversibilityInfo
                                    or rev_get(raw_dict(ev.base)) != rev_static):
            return None
        ev, ru = ev.texts()
    else:
        return None
    if ru is not None and type(ru) is not str:
        return None
    build = _builder(fs, mode)
    if build is False:
        return None
    return build(aid, dg, ev, ru)


models.DUMP_FROM_TEMPLATE = dump_from_template
