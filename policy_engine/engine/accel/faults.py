"""Faults of a fused gate function: the conditions that raised in it, evaluated alone.

A fused gate function runs each condition under its own `try` (`cel.fuse`, `isolate`):
one that raises (a field the action lacks, an error, a value its fast path does not
decide) sets its fault bit, `1 << (n + i)` for condition `i` of `n`, and the others keep
their values. The caller then evaluates the faulted conditions alone, each with the very
call the reference gate makes (`CompiledExpr.__call__`: its own fast path, else its
closures), so every condition's value is exactly the reference gate's (`resolve`); when
some are errors (or not bools), the decision is `decide`'s for these values, kept per
outcome as a template (`fault_key`, `fault_template`). An action lacking a field a
condition reads so costs that condition alone, not the whole gate.

A condition that reads nothing but some action fields (and the policy's constants) has
one value per value of those fields, whatever else the action holds (CEL is pure;
`CompiledExpr.reads` names every field it can read): when they are absent or small
scalars, its value is kept per their values (`memo_key`, `FusedGate.memo`), e.g.
the error "no such key: amount" of `action.amount > 100` for every action lacking
`amount`, or `false` for `action.tier == "x" && !action.confirmed` lacking `tier` with
`confirmed` true."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..util import cond_outcome, value_text

__all__ = ["fields_only", "resolve", "fault_key", "memo_key", "absent_key", "FAULTS_MAX", "MEMO_MAX"]

FAULTS_MAX = 256  # templates of outcomes with errors kept per action type (then cleared: messages may vary)
MEMO_MAX = 512  # values of faulted conditions kept per action type (then cleared, see `resolve`)
MEMO_TEXT_MAX = 64  # the longest str field value a kept value is keyed by
_UNSET: Any = object()


def fields_only(ex: Any) -> tuple[str, ...] | None:
    """The action fields condition `ex` reads, when it reads nothing else but the policy's
    constants (see `CompiledExpr.reads`): with all of them absent its value is a constant.
    None: it reads something else (the workflow state, `now`, the action as a whole)."""
    reads = getattr(ex, "reads", None)
    if not reads:
        return None
    keys = []
    for root, key in reads:
        if root == "policy":
            continue
        if root != "action" or key is None:
            return None
        keys.append(key)
    return tuple(keys) if keys else None


def fault_key(i: int, v: Any) -> tuple:
    """What the decision reads of condition `i`'s value `v` when it is not a bool (see
    `decide.cond_error`): its error message, budget and value text."""
    _, msg, budget = cond_outcome(v)
    return (i, msg, budget, None if type(v).__name__ == "CelError" else value_text(v))


def resolve(fz: Any, m: int, action: Mapping, state: Any, now_dt: datetime) -> tuple[Any, dict | None]:
    """The outcome of a mask with fault bits (`m >= fz.full`): each faulted condition
    evaluated alone, by its closures (`CompiledExpr._slow`: the value its own fast path
    returns too, when it returns; it has fewer facts than the fused function that turned
    this input away). (mask, None) when every value is a bool (the mask of their values,
    as the fused function returns it for an input it decides); else ((mask, keys),
    values): the key of the decision's template (`fault_key` of each condition that is
    not a bool, in order) and the values of those conditions evaluated now, by index
    (a kept error is its key alone: see `fault_template`).

    A condition that reads nothing but action fields (`alone`) has one value per value of
    those fields: a bool or an error is kept per condition and field values (`memo_key`;
    an error as its `fault_key`), a few at a time. With all those fields absent (one
    value per condition) and its closures released, they are compiled for that one
    evaluation and not kept (`CompiledExpr._once`)."""
    full = fz.full
    faults = m // full
    m &= full - 1
    exprs = fz.exprs
    alone = fz.alone
    memo = fz.memo
    act = None
    values: dict = {}
    keys: list = []
    while faults:
        low = faults & -faults
        faults ^= low
        i = low.bit_length() - 1
        fields = alone[i]
        k = memo_key(i, fields, action) if fields is not None else None
        hit = memo.get(k) if k is not None else None
        if hit is None:
            if act is None:
                act = {"action": action, "workflow": state, "now": now_dt, "policy": fz.policy}
            ex = exprs[i]
            v = ex._once(act) if k is not None and k[1:] == fz.absent[i] else ex._slow(act)
            if v is True or v is False:
                hit = v
            else:
                values[i] = v
                hit = fault_key(i, v)
                if hit[3] is not None:  # not an error: kept as itself only (see fault_template)
                    k = None
            if k is not None:
                if len(memo) >= MEMO_MAX:
                    memo.clear()
                memo[k] = hit
        if hit is True:
            m |= low
        elif hit is not False:
            keys.append(hit)
    if not keys:
        return m, None
    return (m, tuple(keys)), values


# the types a kept value's key names (as small ints: a key of atomic values is not tracked
# by the host's cyclic collector); an absent field is 0
_CODES = {str: 1, int: 2, bool: 3, type(None): 4, float: 5}


def memo_key(i: int, fields: tuple, action: Mapping) -> tuple | None:
    """The key of condition `i`'s value among the values kept (`FusedGate.memo`): `i`,
    then each field's type (`_CODES`) and value, when each is absent, None, a bool, an
    int, a float or a short str (values equal with the same type are the same CEL value;
    a float zero is keyed by its text: `0.0 == -0.0`); None otherwise (objects, lists,
    long texts: not kept)."""
    k: tuple = (i,)
    for f in fields:
        x = action.get(f, _UNSET)
        if x is _UNSET:
            k += (0, None)
            continue
        c = _CODES.get(type(x))
        if c is None:
            return None
        if c == 1:
            if len(x) > MEMO_TEXT_MAX:
                return None
        elif c == 5 and x == 0.0:
            x = repr(x)
        k += (c, x)
    return k


def absent_key(fields: tuple | None) -> tuple | None:
    """The tail of `memo_key` for an action lacking every one of `fields`."""
    return None if fields is None else (0, None) * len(fields)
