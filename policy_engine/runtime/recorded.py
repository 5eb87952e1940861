"""The action a ``decision`` entry records, read back as the gate evaluated it.

The ledger writes a body as canonical JSON (RFC 8785), where a number is only a number: a
float with an integral value below 10^21 (``7.0``, ``-0.0``, ``1e20``) is written as its
integer digits (``7``, ``0``, ``100000000000000000000``) and read back as a Python int, a
CEL ``int`` where the gate evaluated a ``double`` (``action.amount / 2`` is then 3, not
3.5, and ``type(action.amount) == double`` is false; a declared ``double`` field accepts
both, so it changes the same way). So the gate records, beside the action, where those
values are: ``action_doubles``, a list of paths, each the keys and list indices from the
action to one value (``[["amount"], ["items", 0, "price"]]``), present only when there is
one (:func:`integral_doubles`, :func:`with_doubles`). Every re-evaluation of a recorded
action (replay, ``stopline ledger export-case``, a claim after a stop) reads it through
:func:`recorded_action`, which puts those values back as floats. A float that is not
integral (``7.5``) or from 10^21 on (``1e21``) is written with its fraction or exponent and
read back as a float: it needs no entry. A decision recorded before the field existed
reads as it always did (its integral floats as ints). ``-0.0`` reads back as ``0.0``
(canonical JSON has no negative zero). A ``resume`` entry records where its evidence's integral
floats are the same way (``evidence_doubles``: :data:`EVIDENCE_DOUBLES`), and a replay reads
them back as floats before it asks the resume again.

Imports only the ledger's ``Canonical``: the runtime, the replay and the cases import it
without importing each other.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..ledger.canonical import Canonical

__all__ = ["DOUBLES", "EVIDENCE_DOUBLES", "integral_doubles", "with_doubles", "recorded_action", "restore_doubles"]

#: the decision body's key for the locations of the action's integral floats
DOUBLES = "action_doubles"
#: the resume body's key for the locations of the evidence's integral floats
EVIDENCE_DOUBLES = "evidence_doubles"
_BOUND = 1e21  #: from here on RFC 8785 writes an exponent (``1e+21``), which reads back as a float
_HEAD = '{"action":'
# a list of paths (strings without lone surrogates, small ints; no object keys to sort): the C
# encoder writes it exactly as RFC 8785 does
_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def integral_doubles(action: Any) -> list[list[Any]]:
    """The paths (lists of keys and list indices, from the action) of the floats in
    ``action`` that canonical JSON writes as integers, sorted; ``[]`` when
    there is none (almost always: one walk over the action, nothing built unless one is
    found). ``[[]]``: the action itself is one. For an action the ledger records exactly
    (``gatejson.recordable``)."""
    out: list[list[Any]] = []
    _walk(action, (), out)
    if len(out) > 1:  # sorted, whatever the caller's key order (two paths first differ at siblings of
        out.sort()  # one container: both keys, or both indices, never a key and an index)
    return out


def _walk(v: Any, path: tuple, out: list) -> None:
    t = type(v)
    if t is dict:
        items: Any = v.items()
    elif t is list or t is tuple:
        items = enumerate(v)
    elif isinstance(v, dict):  # (subclasses, as the canonical encoder takes them)
        items = v.items()
    elif isinstance(v, (list, tuple)):
        items = enumerate(v)
    else:
        if isinstance(v, float) and float.is_integer(v) and -_BOUND < v < _BOUND:
            out.append(list(path))
        return
    for k, x in items:
        tx = type(x)
        if tx is str or tx is int or tx is bool or x is None:
            continue
        if tx is float:
            if x.is_integer() and -_BOUND < x < _BOUND:
                out.append([*path, k])
            continue
        _walk(x, (*path, k), out)


def with_doubles(body: Any, action_text: str | None, doubles: list | None) -> Any:
    """The gate's decision ``body`` (``gatejson.gate_body``: a ``Canonical`` whose text opens
    with ``{"action":`` and ``action_text``, or a plain dict) with ``action_doubles`` when
    ``doubles`` is not empty; ``body`` itself otherwise. The key sorts right after
    ``action`` (RFC 8785 orders keys by code unit), so the text is spliced there."""
    if not doubles:
        return body
    if isinstance(body, dict):
        body[DOUBLES] = doubles
        return body
    text = body.text
    n = len(_HEAD) + len(action_text or "")
    if (action_text is None or not text.startswith(_HEAD) or not text.startswith(action_text, len(_HEAD))
            or text[n:n + 1] != ","):
        raise AssertionError("a gate body's text opens with its action")  # (gatejson.body_text writes it so)
    keys = body.keys
    return Canonical(f'{text[:n]},"{DOUBLES}":{_DUMPS(doubles)}{text[n:]}', (keys[0], DOUBLES, *keys[1:]), body.top)


def restore_doubles(action: Any, doubles: Any, field: str = DOUBLES) -> Any:
    """``action`` (as read from a decision entry) with the value at each path of ``doubles``
    (its ``action_doubles``; None: no change) as a float: a copy along those paths, the
    entry's body itself is never changed. :class:`ValueError` when ``doubles`` is not a list
    of paths each leading to a number (naming ``field``: a resume's evidence is read with
    ``evidence_doubles``)."""
    if doubles is None:
        return action
    if not isinstance(doubles, list):
        raise ValueError(f"`{field}` is a list of paths, not {type(doubles).__name__}")
    what = "action" if field == DOUBLES else "evidence"
    root = [action]
    mine: set[int] = set()  # the containers copied here (ours to change)
    for p in doubles:
        if not isinstance(p, list) or len(p) > 64:
            raise ValueError(f"`{field}` holds {str(p)[:80]}, not a path (a list of keys and indices)")
        parent: Any = root
        key: Any = 0
        for k in p:
            cur = parent[key]
            if not ((type(cur) is dict and type(k) is str and k in cur)
                    or (type(cur) is list and type(k) is int and 0 <= k < len(cur))):
                raise ValueError(f"`{field}` path {str(p)[:80]} does not lead to a value of the {what}")
            if id(cur) not in mine:
                cur = cur.copy()
                mine.add(id(cur))
                parent[key] = cur
            parent, key = cur, k
        v = parent[key]
        if type(v) is float:
            continue  # (a double already)
        if type(v) is not int:
            raise ValueError(f"`{field}` path {str(p)[:80]} leads to a {type(v).__name__}, not a number")
        try:
            parent[key] = float(v)
        except OverflowError:
            raise ValueError(f"`{field}` path {str(p)[:80]} leads to a number beyond a double") from None
    return root[0]


def recorded_action(body: Mapping) -> Any:
    """The action of a ``decision`` entry's ``body`` as the gate evaluated it: its integral
    floats, which the ledger reads back as ints, as floats again (``action_doubles``; a body
    without it: its action as read). :class:`ValueError` when that field is malformed (a
    caller fails closed: the action is not re-evaluated as something it was not)."""
    return restore_doubles(body.get("action"), body.get(DOUBLES))
