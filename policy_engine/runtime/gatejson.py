"""The gate's recorded decision as RFC 8785 text, without the generic canonicaliser.

A gate records ``{"action", ["action_error"], "decision", "now", ["pending_until"],
"policy_hash"}``. Its cost used to be the decision's ``model_dump`` (a 3-7 KB tree), a
walk of the whole body checking it is interoperable JSON, the sorted-key encoding and,
in the ledger, a parse of the text back. Here:

- the decision of the engine's fast lane (every decision of one outcome of one action
  type is built from one template, ``models.DecisionJson``) is written from the template's
  canonical text, rendered once per template through :func:`canonical_text` with markers in
  the four fields that vary (``action_digest``, ``action_id``, ``evaluated_at``,
  ``reversibility.reversible_until``); ``DecisionJson.render`` (the engine's own check)
  says whether a decision is its template's, and the first decision of each template is
  compared with the reference encoding before the template is trusted;
- the action's canonical text is the one the gate computes anyway to check it;
- the few strings of the envelope are escaped by the C encoder's ``encode_basestring``
  (``json.dumps(..., ensure_ascii=False)``), which is RFC 8785's escaping for any string
  without lone surrogates (checked: such a string goes to the reference path);
- the result goes to the ledger as :class:`~policy_engine.ledger.canonical.Canonical`.

Anything else (a decision not from a template, a template whose text the markers cannot
cut, a value with a lone surrogate) is encoded by :func:`canonical_text` of the plain body,
as before. ``tests/test_runtime_gatejson.py`` proves the text byte-identical to
``rfc8785.dumps`` of the body the gate used to build.
"""

from __future__ import annotations

import re
import threading
from json.encoder import encode_basestring
from typing import Any

from ..ledger.canonical import canonical_text
from ..models import DecisionJson, ReversibilityInfo, split_at_marks

_SURROGATE = re.compile("[\ud800-\udfff]")
_FIELDS = ("action_id", "action_digest", "evaluated_at", "reversible_until")
_MARK = {k: f"\x00stopline-canonical:{k}\x00" for k in _FIELDS}
_MARK_JSON = {k: encode_basestring(m) for k, m in _MARK.items()}

#: id(template fields set) -> (the set itself, keeping the id taken; plan or None when unusable)
_PLANS: dict[int, tuple[DecisionJson, Any]] = {}
_PLANS_LOCK = threading.Lock()
_UNCHECKED = object()  # a plan built, not yet compared with the reference encoding


def _str(v: Any) -> str | None:
    """RFC 8785 text of a JSON string or null; None for anything else (a lone surrogate)."""
    if v is None:
        return "null"
    if type(v) is str and (v.isascii() or not _SURROGATE.search(v)):
        return encode_basestring(v)
    return None


def _build(fs: DecisionJson) -> tuple | None:
    dec, window = fs.marked(_MARK)
    try:
        text = canonical_text(dec.model_dump(mode="json"))
    except Exception:  # noqa: BLE001 - a template the reference refuses: every decision takes the reference path
        return None
    cut = split_at_marks(text, _MARK_JSON, window)  # None: a policy text holds a marker
    if cut is None:
        return None
    return window, cut[0], cut[1]


def _render(d: Any, plan: tuple) -> str | None:
    window, order, parts = plan
    values = {"action_id": d.action_id, "action_digest": d.action_digest, "evaluated_at": d.evaluated_at}
    if window:
        rev = d.reversibility
        if type(rev) is not ReversibilityInfo:
            return None
        values["reversible_until"] = rev.reversible_until
    out = [parts[0]]
    for k, part in zip(order, parts[1:]):
        s = _str(values[k])
        if s is None:
            return None
        out.append(s)
        out.append(part)
    return "".join(out)


def decision_text(d: Any) -> str | None:
    """``canonical_text(d.model_dump(mode="json"))`` for a decision of the engine's fast lane,
    from its template's canonical text; None when the caller should ask the reference."""
    fs = d.__pydantic_fields_set__
    if type(fs) is not DecisionJson or fs.render(d) is None:  # not (exactly) its template's
        return None
    if fs.base is not None:  # the template's at one `now` (DecisionJson.at): one plan per template
        fs = fs.base
    got = _PLANS.get(id(fs))
    if got is None or got[0] is not fs:
        with _PLANS_LOCK:
            if len(_PLANS) >= 4096:
                _PLANS.clear()
            got = _PLANS[id(fs)] = (fs, _UNCHECKED)
    plan: Any = got[1]
    if plan is None:
        return None
    if plan is _UNCHECKED:  # the template's first decision: built, and compared with the reference once
        built = _build(fs)
        text = _render(d, built) if built is not None else None
        if text is None or text != canonical_text(d.model_dump(mode="json")):
            built = None
        _PLANS[id(fs)] = (fs, built)
        return text if built is not None else None
    return _render(d, plan)


def body_text(action_text: str | None, action_repr: str | None, problem: str | None, d: Any, now: str,
              pending_until: str | None) -> tuple[str, tuple[str, ...], dict] | None:
    """The canonical text, top-level keys and `pending_until` (the one top-level value the
    projections read: `Entry.top`) of the gate's decision body (see the module doc), or
    None for the reference path: the arguments of `Canonical`. ``action_text`` is the
    action's canonical text, or None with ``action_repr`` and ``problem`` for an action
    that is not JSON."""
    dt = decision_text(d)
    if dt is None:
        return None
    ph, nw = _str(d.policy_hash), _str(now)
    if ph is None or nw is None or type(d.policy_hash) is not str:
        return None
    if action_text is None:
        a, pr = _str(action_repr), _str(problem)
        if a is None or pr is None or type(action_repr) is not str or type(problem) is not str:
            return None
        out = ['{"action":', a, ',"action_error":', pr]
        keys: tuple[str, ...] = ("action", "action_error", "decision", "now", "policy_hash")
    else:
        out = ['{"action":', action_text]
        keys = ("action", "decision", "now", "policy_hash")
    out += [',"decision":', dt, ',"now":', nw]
    if pending_until is not None:
        pu = _str(pending_until)
        if pu is None:
            return None
        out += [',"pending_until":', pu]
        keys = (*keys, "pending_until")
    out += [',"policy_hash":', ph, "}"]
    return "".join(out), keys, ({"pending_until": pending_until} if pending_until is not None else {})
