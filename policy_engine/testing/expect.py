"""Expectations: comparing an answer with what a case expects, the differences, and the explanation shown on failure."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .suites import parse_time

# =============================================================================== comparing


@dataclass(frozen=True)
class Difference:
    key: str  # dotted path of the key that differs
    expected: Any
    actual: Any
    missing: bool = False  # the key is absent from the actual answer


_MISSING = object()


def _equal_scalar(e: Any, a: Any, key: str) -> bool:
    if isinstance(e, bool) or isinstance(a, bool):
        return type(e) is type(a) and e == a
    if isinstance(e, (int, float)) and isinstance(a, (int, float)):
        return e == a
    if isinstance(e, str) and isinstance(a, str):
        if e == a:
            return True
        if key.rsplit(".", 1)[-1] in ("reason", "message"):
            return e in a
        te, ta = parse_time(e), parse_time(a)
        return te is not None and ta is not None and te == ta
    return e == a


def _matches(e: Any, a: Any, key: str) -> bool:
    return not compare(e, a, key)


def _project(a: Any, like: Any) -> Any:
    """`a` cut down to the keys `like` uses (for readable list diffs)."""
    if isinstance(a, dict) and isinstance(like, dict):
        return {k: _project(a[k], like[k]) for k in like if k in a}
    return a


#: past this many pairs a list that the first-fit pairing fails is not paired again exhaustively
_MAX_PAIRS = 250_000


def _set_equal(expected: list, actual: list, key: str) -> bool:
    """Whether each expected element matches its own actual element, with none left over. An
    element that is a dict matches any actual element holding at least its keys, so the
    first fit can take the element a later, more specific one needed (`[{record_id: a},
    {record_id: a, depth: 1}]` against `[{.. depth: 1}, {.. depth: 0}]`): when it fails, the
    elements are paired again by augmenting paths (a maximum bipartite matching)."""
    if len(expected) != len(actual):
        return False
    remaining = list(range(len(actual)))
    for e in expected:  # first fit: the common case, and the answer whenever it pairs all
        for j, i in enumerate(remaining):
            if _matches(e, actual[i], key):
                del remaining[j]
                break
        else:
            break
    else:
        return True
    if len(expected) * len(actual) > _MAX_PAIRS:
        return False
    fits = [[i for i, a in enumerate(actual) if _matches(e, a, key)] for e in expected]
    owner: list[int | None] = [None] * len(actual)  # actual index -> the expected element it is paired with

    def place(x: int, seen: list[bool]) -> bool:
        for i in fits[x]:
            if not seen[i]:
                seen[i] = True
                o = owner[i]
                if o is None or place(o, seen):
                    owner[i] = x
                    return True
        return False

    return all(place(x, [False] * len(actual)) for x in range(len(expected)))


def compare(expected: Any, actual: Any, key: str = "") -> list[Difference]:
    """Partial comparison: dicts by the expected keys, lists as sets, timestamps as instants."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [Difference(key, expected, actual)]
        out = []
        for k, v in expected.items():
            sub = f"{key}.{k}" if key else str(k)
            if k not in actual:
                if v is None:
                    continue
                out.append(Difference(sub, v, None, missing=True))
                continue
            out.extend(compare(v, actual[k], sub))
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [Difference(key, expected, actual)]
        if not _set_equal(expected, actual, key):
            dict_like = next((e for e in expected if isinstance(e, dict)), None)
            if dict_like is not None:
                keys = {k: None for e in expected if isinstance(e, dict) for k in e}
                shown = [_project(a, keys) for a in actual]
            else:
                shown = list(actual)
            return [Difference(key, expected, shown)]
        return []
    if not _equal_scalar(expected, actual, key):
        return [Difference(key, expected, actual)]
    return []


def _names(items: list, field_: str = "name") -> list:
    return [i.get(field_) if isinstance(i, dict) else i for i in items]


def actual_view(kind: str, answer: dict, expect: dict) -> dict:
    """The engine's answer (JSON) reshaped to the expectation's shorthand keys."""
    out: dict = {}
    for k, e in expect.items():
        if kind == "gate":
            if k == "rule":
                d = answer.get("deciding") or {}
                out[k] = d.get("name") if d.get("kind") in ("rule", "stop") else d.get("kind")
                if isinstance(e, str) and e == d.get("name"):
                    out[k] = e
                continue
            if k == "stop":
                out[k] = (answer.get("stop") or {}).get("trigger")
                continue
            if k == "notify":
                out[k] = (answer.get("stop") or {}).get("notify", [])
                continue
            if k == "approvers":
                apps = answer.get("approvals", [])
                if isinstance(e, list) and all(isinstance(x, str) for x in e):
                    out[k] = sorted({r for a in apps for r in a.get("roles", [])})
                else:
                    out[k] = apps
                continue
            if k == "matched":
                out[k] = _names(answer.get("matched", []))
                continue
            if k == "errors" and isinstance(e, list) and all(isinstance(x, str) for x in e):
                out[k] = _names(answer.get("errors", []), "rule")
                continue
        elif kind == "rollback":
            if k == "feasibility" and isinstance(e, str):
                out[k] = (answer.get("feasibility") or {}).get("status")
                continue
            if k == "unmet_prerequisites":
                out[k] = (answer.get("feasibility") or {}).get("unmet", [])
                continue
            if k == "compensations" and isinstance(e, list) and all(isinstance(x, str) for x in e):
                out[k] = _names(answer.get("compensations", []))
                continue
            if k == "cascade" and isinstance(e, dict):
                c = dict(answer.get("cascade") or {})
                for sub, fld in (("steps", "record_id"), ("checkpoint", "record_id"), ("loops", "record_id")):
                    ev = e.get(sub)
                    if isinstance(ev, list) and ev and all(isinstance(x, str) for x in ev):
                        c[sub] = _names(c.get(sub, []), fld)
                out[k] = c
                continue
        elif kind == "authorize":
            if k == "open_slots" and isinstance(e, list) and all(isinstance(x, str) for x in e):
                out[k] = sorted({r for s in answer.get("open_slots", []) for r in s.get("roles", [])})
                continue
            if k == "filled":
                out[k] = answer.get("accepted", [])
                continue
            if k == "rejected" and isinstance(e, list) and all(isinstance(x, str) for x in e):
                out[k] = _names(answer.get("rejected", []), "principal")
                continue
        elif kind == "resume":
            if k == "met":
                out[k] = [c.get("name") for c in answer.get("criteria", []) if c.get("met")]
                continue
        if k == "errors" and isinstance(e, list) and all(isinstance(x, str) for x in e):
            # (a rollback's or an authorization's: `errors: ["<input>"]`, as a gate's; one name
            # once, as a set holds it: a verdict on a refused decision names `<input>` twice)
            out[k] = list(dict.fromkeys(_names(answer.get("errors", []), "rule")))
            continue
        out[k] = answer.get(k, _MISSING)
    return out


def diff_expectation(kind: str, expect: dict, answer: dict) -> list[Difference]:
    view = actual_view(kind, answer, expect)
    out = []
    for k, e in expect.items():
        a = view.get(k, _MISSING)
        if a is _MISSING:
            out.append(Difference(k, e, None, missing=True))
        else:
            out.extend(compare(e, a, k))
    return out


def show_value(v: Any) -> str:
    return json.dumps(v, sort_keys=False, ensure_ascii=False, default=str)


def render_diff(diffs: Sequence[Difference], indent: str = "  ") -> str:
    lines = []
    for d in diffs:
        lines.append(f"{indent}- {d.key}: {show_value(d.expected)}")
        lines.append(f"{indent}+ {d.key}: " + ("(absent)" if d.missing else show_value(d.actual)))
    return "\n".join(lines)


# =============================================================================== explain


def explain_answer(kind: str, answer_model: Any, answer: dict) -> str:
    """The explain trace of an answer: the engine helper's renderer, or a fallback."""
    _explain: Any
    try:
        from .. import explain as _explain
    except Exception:
        _explain = None
    if _explain is not None:
        for fname in ("explain", "render"):
            fn = getattr(_explain, fname, None)
            if callable(fn):
                try:
                    text = fn(answer_model)
                    if isinstance(text, str):
                        return text
                except Exception:
                    break
    return _fallback_explain(kind, answer)


def _fallback_explain(kind: str, a: dict) -> str:
    lines: list[str] = []
    if kind == "gate":
        d = a.get("deciding") or {}
        lines.append(f"{a.get('effect')}: {a.get('reason', '')}".rstrip())
        at = f" at {d['location']}" if d.get("location") else ""
        lines.append(f"  decided by {d.get('kind')} `{d.get('name')}`{at}")
        for t in a.get("trace", []):
            mark = "matched" if t.get("matched") else "not matched"
            val = f" = {t['value']}" if t.get("value") is not None else ""
            err = f" (error: {t['error']})" if t.get("error") else ""
            lines.append(
                f"  {t.get('kind')} {t.get('name')} [{t.get('effect')}] `{t.get('condition', '')}`{val}: {mark}{err}"
            )
    elif kind == "rollback":
        lines.append(
            f"scenario {a.get('scenario')}: route {a.get('route')}, window {a.get('window')}, "
            f"feasibility {(a.get('feasibility') or {}).get('status')}"
        )
        for s in (a.get("cascade") or {}).get("steps", []):
            lines.append(f"  step {s.get('record_id')} ({s.get('type')}) depth {s.get('depth')}")
    elif kind == "authorize":
        lines.append(f"satisfied: {show_value(a.get('satisfied'))}")
        for s in a.get("slots", []):
            lines.append(
                f"  slot {s.get('id')} {s.get('roles')}: filled by {s.get('filled_by')}, missing {s.get('missing')}"
            )
        for r in a.get("rejected", []):
            lines.append(f"  rejected {r.get('principal')}: {r.get('reason')}")
    else:
        lines.append(f"allowed: {show_value(a.get('allowed'))}")
        for c in a.get("criteria", []):
            lines.append(
                f"  {c.get('name')}: {'met' if c.get('met') else 'unmet'}"
                + (f" ({c['reason']})" if c.get("reason") else "")
            )
    return "\n".join(lines)
