"""Question envelopes (the input of `stopline eval`): `answer` dispatches one to the
engine's methods."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from ..construct import fast
from ..models import QUESTION_MODELS, AuthorizationVerdict
from .util import as_dict, err, short

__all__ = ["answer", "QuestionError"]


# ============================================================================ helpers


class QuestionError(ValueError):
    """A malformed `stopline eval` question envelope."""


_TWO_STEP = ("question `authorize` with `request` classifies the plan in this same call, and approvals bind to a "
             "plan's `plan_hash`, which they cannot know before it is made: use two steps. Ask question `rollback` "
             "with the request, have each approver approve the `plan_hash` it prints, then ask `authorize` with "
             "that `plan` and the approvals (docs/approvals.md)")

# The fields of each question, from the models `stopline schema` prints (one source).
_FIELDS = {kind: tuple(f for f in model.model_fields if f != "question") for kind, model in QUESTION_MODELS.items()}


def _bad_question(q: Mapping, kind: Any) -> str:
    """Why an envelope names no question it asks, with the key or the name it likely meant
    (`{"gat": {}}` read as `question` ... `null`, the slip unnamed)."""
    kinds = tuple(_FIELDS)
    must = "`question` must be one of `gate`, `rollback`, `authorize` or `resume`"
    if "question" in q:
        near = difflib.get_close_matches(kind, kinds, n=1, cutoff=0.6) if isinstance(kind, str) else []
        return f"{must}, not {short(kind)}" + (f" (did you mean `{near[0]}`?)" if near else "")
    shape = 'the question goes in a `question` field: `{"question": "gate", "action": {...}}`'
    fields = {f for fs in _FIELDS.values() for f in fs}
    keys = [k for k in q if isinstance(k, str)]
    for k in keys:  # {"gate": {...}}: the question named as a key
        if k in kinds:
            first = _FIELDS[k][0]
            return f'no `question` field: write `{{"question": "{k}", "{first}": ...}}`, not a key `{k}`'
    for k in keys:
        if k not in fields:
            near = difflib.get_close_matches(k, (*kinds, *sorted(fields)), n=1, cutoff=0.6)
            return f"unknown key `{k}`" + (f" (did you mean `{near[0]}`?)" if near else "") + f"; {shape}"
    fits = [kd for kd in kinds if keys and set(keys) <= set(_FIELDS[kd])]
    if len(fits) == 1:
        return f'no `question` field: {must} (add `"question": "{fits[0]}"`?)'
    return f"no `question` field: {must}"


# ================================================================== questions (stopline eval)
def answer(engine: Any, question: Any) -> BaseModel:
    """Answer one question envelope (the input of `stopline eval`):

        {"question": "gate", "action": {...}, "workflow_state": {...}?, "now": ts?}
        {"question": "rollback", "request": {...}, "now": ts?}
        {"question": "authorize", "plan": {...} | "request": {...} | "decision": {...},
         "approvals": [...], "now": ts?}
        {"question": "resume", "workflow": str, "stop": str | {...}, "evidence": {...}, "now": ts?}

    Raises `QuestionError` when the envelope itself is malformed (the CLI exits 2);
    bad data inside it gives a fail-closed result like the methods do."""
    q = as_dict(question)
    if not isinstance(q, Mapping):
        raise QuestionError("the input must be a JSON object with a `question` field")
    kind = q.get("question")
    known = _FIELDS
    if type(kind) is not str or kind not in known:  # (a list or an object is no name: never hashed)
        raise QuestionError(_bad_question(q, kind))
    extra = sorted(set(q) - set(known[kind]) - {"question"})
    if extra:
        raise QuestionError(f"unknown field{'s' if len(extra) > 1 else ''} for question `{kind}`: "
                            + ", ".join(f"`{x}`" for x in extra)
                            + " (expected " + ", ".join(f"`{x}`" for x in known[kind]) + ")")
    now = q.get("now")
    if kind == "gate":
        if "action" not in q:
            raise QuestionError("question `gate` needs `action`")
        return engine.evaluate(q["action"], q.get("workflow_state"), now)
    if kind == "rollback":
        if "request" not in q:
            raise QuestionError("question `rollback` needs `request`")
        return engine.classify_rollback(q["request"], now)
    if kind == "authorize":
        if sum(f in q for f in ("plan", "request", "decision")) != 1:
            raise QuestionError("question `authorize` needs exactly one of `plan` (a rollback plan), `request` "
                                "(a rollback request, classified first) or `decision` (a require_approval gate "
                                "decision)")
        if "decision" in q:
            return engine.authorize_action(q["decision"], q.get("approvals", []), now)
        if "plan" in q:
            return engine.authorize_rollback(q["plan"], q.get("approvals", []), now)
        verdict = engine.authorize_rollback(engine.classify_rollback(q["request"], now), q.get("approvals", []), now)
        if not verdict.satisfied and any(r.code == "plan_hash" for r in verdict.rejected):
            d = verdict.__dict__.copy()
            d["errors"] = verdict.errors + (err("<input>", "input", _TWO_STEP),)
            verdict = fast(AuthorizationVerdict, d)
        return verdict
    for f in ("workflow", "stop"):
        if f not in q:
            raise QuestionError(f"question `resume` needs `{f}`")
    return engine.may_resume(q["workflow"], q["stop"], q.get("evidence", {}), now)
