"""`policy_engine.load()` in a fresh process imports and builds only what loading and the
gate use (issue 16, goal 5, without timing anything): the engine's rollback, authorization,
resume and question modules are imported by the first call that needs them, and the pydantic
models only those answer with (the rollback plan, the verdict, the resume decision, their
parts, their inputs) are built on first use. What the engine exports is the same, and the
first call of each kind answers as before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydantic.main

import policy_engine
from policy_engine import engine as engine_mod
from policy_engine import limits, models, source
from policy_engine.engine import util

ROOT = Path(__file__).resolve().parents[1]
LAZY_MODULES = [f"policy_engine.engine.{m}" for m in ("authorize", "rollback", "resume", "questions")]
DEFERRED = ["RollbackPlan", "AuthorizationVerdict", "ResumeDecision", "Cascade", "CascadeStep", "OriginalRecord",
            "RollbackRequest", "Approval", "ResumeRequest", "GateQuestion", "AuthorizeQuestion"]
BUILT = ["Decision", "RuleRef", "TraceEntry", "StopInfo", "ReversibilityInfo", "EvalError", "Action", "WorkflowState"]

_FRESH = """
import json, sys
import policy_engine
from policy_engine import models
engine = policy_engine.load(sys.argv[1])
loaded = {m: m in sys.modules for m in sys.argv[2].split(",")}
built = {n: getattr(models, n).__pydantic_complete__ for n in sys.argv[3].split(",")}
d = engine.evaluate({"workflow": "x", "type": "y"}, None, "2026-01-01T00:00:00Z")
print(json.dumps({"loaded": loaded, "built": built, "decision": d.effect}))
"""


def _fresh(*names: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _FRESH, str(ROOT / "policies"), ",".join(LAZY_MODULES), ",".join(names)],
        capture_output=True, text=True, cwd=str(ROOT), env={**os.environ, "STOPLINE_CACHE_DIR": ""}, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_load_imports_neither_rollback_authorize_resume_nor_questions():
    got = _fresh(*BUILT)
    assert got["loaded"] == dict.fromkeys(LAZY_MODULES, False)
    assert got["decision"] == "deny"  # (an undeclared workflow: the gate answers without them)


def test_load_builds_the_gate_models_and_defers_the_others():
    got = _fresh(*DEFERRED, *BUILT)
    assert {n: got["built"][n] for n in BUILT} == dict.fromkeys(BUILT, True)
    # deferred only where pydantic rebuilds under a lock (models._LAZY); otherwise built, as before
    lazy = hasattr(pydantic.main, "_rebuild_lock")
    assert {n: got["built"][n] for n in DEFERRED} == dict.fromkeys(DEFERRED, not lazy)
    assert models._LAZY is lazy


def test_without_pydantics_rebuild_lock_every_model_is_built_on_import():
    code = ("import pydantic.main; pydantic.main.__dict__.pop('_rebuild_lock', None)\n"
            "from pydantic import BaseModel\nfrom policy_engine import models\n"
            "print(models._LAZY, sorted(n for n, c in vars(models).items() if isinstance(c, type) and "
            "issubclass(c, BaseModel) and c.__module__ == models.__name__ and not c.__pydantic_complete__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "[]"]


def test_the_engine_exports_the_same_names_and_objects():
    assert engine_mod.MAX_APPROVALS is limits.MAX_APPROVALS
    assert engine_mod.MAX_CASCADE_RECORDS is limits.MAX_CASCADE_RECORDS
    assert engine_mod.MAX_LOOPS_LISTED is limits.MAX_LOOPS_LISTED
    assert engine_mod.MAX_STEPS_NAMED is limits.MAX_STEPS_NAMED
    assert engine_mod.DEFAULT_IGNORABLE is source.DEFAULT_IGNORABLE
    assert engine_mod.canonical_principal is util.canonical_principal
    from policy_engine.engine import authorize, questions, rollback

    assert engine_mod.QuestionError is questions.QuestionError
    assert authorize.MAX_APPROVALS is engine_mod.MAX_APPROVALS
    assert authorize.DEFAULT_IGNORABLE is engine_mod.DEFAULT_IGNORABLE
    assert authorize.canonical_principal is engine_mod.canonical_principal
    assert rollback.MAX_CASCADE_RECORDS is engine_mod.MAX_CASCADE_RECORDS
    assert engine_mod.rollback is rollback and engine_mod.authorize is authorize  # (the submodules, as attributes)
    for name in engine_mod.__all__:
        assert getattr(engine_mod, name) is not None, name


_FIRST_CALLS = """
import json, sys
import policy_engine
from policy_engine.engine import QuestionError
engine = policy_engine.load(sys.argv[1])
now = "2026-03-01T12:00:00Z"
req = {"workflow": "refunds", "scenario": "customer_request", "requested_by": "rita",
       "original": {"id": "r1", "type": "issue_refund", "executed_at": "2026-03-01T11:59:00Z", "amount": 10}}
plan = engine.classify_rollback(req, now)
approvals = [{"principal": "ann", "roles": ["customer_service"], "plan_hash": plan.plan_hash}]
verdict = engine.authorize_rollback(plan, approvals, now)
resume = engine.may_resume("refunds", "refund_payee_mismatch", {"payee_check": {"enabled": True, "tested": False}}, now)
try:
    engine.answer({"question": "nope"})
    raised = None
except QuestionError as e:
    raised = type(e).__name__
print(json.dumps({"plan": plan.model_dump_json(), "verdict": verdict.model_dump_json(),
                  "resume": resume.model_dump_json(), "raised": raised}))
"""


def test_the_first_rollback_authorize_and_resume_calls_answer_as_before():
    """The first call of each kind, in a fresh process (its module imported, its models
    built then), answers what the same calls answer in this process (where they are not the
    first: the rest of the suite has made them)."""
    out = subprocess.run([sys.executable, "-c", _FIRST_CALLS, str(ROOT / "policies")], capture_output=True, text=True,
                         cwd=str(ROOT), env={**os.environ, "STOPLINE_CACHE_DIR": ""}, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["raised"] == "QuestionError"
    engine = policy_engine.load(str(ROOT / "policies"))
    now = "2026-03-01T12:00:00Z"
    req = {"workflow": "refunds", "scenario": "customer_request", "requested_by": "rita",
           "original": {"id": "r1", "type": "issue_refund", "executed_at": "2026-03-01T11:59:00Z", "amount": 10}}
    plan = engine.classify_rollback(req, now)
    approvals = [{"principal": "ann", "roles": ["customer_service"], "plan_hash": plan.plan_hash}]
    assert got["plan"] == plan.model_dump_json()
    assert got["verdict"] == engine.authorize_rollback(plan, approvals, now).model_dump_json()
    evidence = {"payee_check": {"enabled": True, "tested": False}}
    assert got["resume"] == engine.may_resume("refunds", "refund_payee_mismatch", evidence, now).model_dump_json()
    assert plan.authorizable and plan.plan_hash.startswith("sha256:")
    assert json.loads(got["verdict"])["satisfied"] is True
    assert json.loads(got["resume"])["unmet"] == ["payee_check_enforced", "related_refunds_reviewed"]


_THREADS = """
import json, sys, threading
import policy_engine
engine = policy_engine.load(sys.argv[1])
now = "2026-03-01T12:00:00Z"
req = {"workflow": "refunds", "scenario": "customer_request", "requested_by": "rita",
       "original": {"id": "r1", "type": "issue_refund", "executed_at": "2026-03-01T11:59:00Z", "amount": 10,
                    "downstream": [{"id": "r2", "type": "award_loyalty_points"}]}}
start = threading.Barrier(8)
out = []

def first_use():
    start.wait()
    plan = engine.classify_rollback(req, now)
    approval = {"principal": "ann", "roles": ["customer_service"], "plan_hash": plan.plan_hash}
    verdict = engine.authorize_rollback(plan, [approval], now)
    out.append((plan.model_dump_json(), verdict.model_dump_json(), json.dumps(plan.model_dump(mode="json"))))

threads = [threading.Thread(target=first_use) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(out))
"""


def test_eight_threads_using_the_deferred_models_first_get_the_same_answers():
    """The deferred models are built by whichever thread uses one first, the others waiting
    (pydantic's lock): every thread's plan and verdict are the same, whole, bytes."""
    out = subprocess.run([sys.executable, "-c", _THREADS, str(ROOT / "policies")], capture_output=True, text=True,
                         cwd=str(ROOT), env={**os.environ, "STOPLINE_CACHE_DIR": ""}, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert len(got) == 8 and all(g == got[0] for g in got)
    plan = json.loads(got[0][0])
    assert plan["workflow"] == "refunds" and plan["cascade"]["steps"] and json.loads(got[0][1])["satisfied"] is True
