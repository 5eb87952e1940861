"""A plan hash, and what an approval binds to, do not depend on the path the policies were
loaded by (relative, absolute, through a symlink, from another directory); a plan recorded
before locations left the hash still verifies and authorizes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

import policy_engine
from policy_engine import Runtime
from policy_engine.engine import digests, rollback
from tests.ledger_fixtures import ledger_url  # noqa: F401 - the fixture (SQLite and PostgreSQL)
from tests.runtime_support import POLICY, RECEIPT, T0, WF, at, send

NOW = "2026-11-26T12:00:30Z"
REQUEST = {
    "workflow": WF,
    "scenario": "customer_request",
    "requested_by": "rita",
    "reason": "wrong",
    "original": {
        "id": "m-1",
        "type": "send",
        "executed_at": "2026-11-26T12:00:00Z",
        "opened": False,
        "downstream": [{"id": "l-1", "type": "log"}],
    },
}


@pytest.fixture
def tree(tmp_path):
    """(tmp_path, the policy directory `pol`, a symlink `link` to it)."""
    pol = tmp_path / "pol"
    pol.mkdir()
    (pol / "replies.policy").write_text(POLICY, encoding="utf-8")
    (tmp_path / "link").symlink_to(pol, target_is_directory=True)
    return tmp_path, pol, tmp_path / "link"


def _spellings(tree, monkeypatch) -> dict:
    """One engine per way of naming the same policies."""
    root, pol, link = tree
    out = {"absolute": policy_engine.load(str(pol)), "symlink": policy_engine.load(str(link) + "/")}
    monkeypatch.chdir(root)
    out["relative"] = policy_engine.load("pol/")
    out["relative file"] = policy_engine.load("./pol/replies.policy")
    monkeypatch.chdir(pol)
    out["other cwd"] = policy_engine.load(".")
    return out


def _locations(plan) -> set:
    return {p.location for s in plan.cascade.steps for p in s.prerequisites}


def test_equal_plans_have_equal_hashes_however_the_policies_are_loaded(tree, monkeypatch):
    engines = _spellings(tree, monkeypatch)
    plans = {k: e.classify_rollback(REQUEST, NOW) for k, e in engines.items()}
    assert len({e.policy_hash for e in engines.values()}) == 1
    # the plans show where their prerequisites are declared, each as it was loaded ...
    assert len({frozenset(_locations(p)) for p in plans.values()}) > 1
    assert all(loc and loc.endswith("replies.policy:14:18") for p in plans.values() for loc in _locations(p))
    # ... and hash the same
    assert len({p.plan_hash for p in plans.values()}) == 1, {k: p.plan_hash for k, p in plans.items()}
    # an approval made against one process's plan authorizes another's
    for a in plans.values():
        for k, e in engines.items():
            v = e.authorize_rollback(
                a, [{"principal": "cy", "roles": ["customer_service"], "plan_hash": plans["relative"].plan_hash}], NOW
            )
            assert v.satisfied, (k, v.errors, v.rejected)


def test_the_cli_prints_one_plan_hash_from_any_directory(tree, tmp_path):
    root, pol, link = tree
    q = tmp_path / "q.json"
    q.write_text(json.dumps({"question": "rollback", "now": NOW, "request": REQUEST}), encoding="utf-8")
    cli = [sys.executable, "-c", "from policy_engine.cli import main; main()", "eval"]
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    hashes = set()
    for cwd, path in ((root, "pol/"), (pol, "."), (tmp_path, str(pol)), (root, "link")):
        r = subprocess.run(
            [*cli, path, "--input", str(q)], cwd=cwd, capture_output=True, text=True, env=env, timeout=120
        )
        assert r.returncode in (0, 1), r.stderr
        hashes.add(json.loads(r.stdout)["plan_hash"])
    assert len(hashes) == 1


def test_a_gate_decision_is_approved_by_a_process_that_loaded_another_path(tree, monkeypatch):
    """`authorize_action` matches the decision's rules with the policy's by name and place in
    the file, not by the path the file was loaded by."""
    engines = _spellings(tree, monkeypatch)
    for k, made_by in engines.items():
        d = made_by.evaluate(send(150.0), now=NOW)
        assert d.effect == "require_approval"
        app = [{"principal": "rev", "roles": ["reviewer"], "action_digest": d.action_digest}]
        for j, judge in engines.items():
            for decision in (d, d.model_dump(mode="json"), d.model_dump(mode="json", by_alias=True)):
                v = judge.authorize_action(decision, app, NOW)
                assert v.satisfied, (k, j, v.errors)
    # (still matched by the rule: another rule's name, or its place, is not this decision)
    d = engines["absolute"].evaluate(send(150.0), now=NOW).model_dump(mode="json")
    d["matched"] = [
        {**m, "location": m["location"].replace(":19:", ":20:")} if m["name"] == "big" else m for m in d["matched"]
    ]
    v = engines["relative"].authorize_action(
        d, [{"principal": "rev", "roles": ["reviewer"], "action_digest": d["action_digest"]}], NOW
    )
    assert not v.satisfied


def test_the_runtime_counts_an_approval_made_by_another_process(tree, monkeypatch, ledger_url):  # noqa: F811
    root, pol, link = tree
    monkeypatch.chdir(root)
    with Runtime.open(str(pol), ledger=ledger_url) as host, Runtime.open("link/", ledger=ledger_url) as server:
        # a gate decision the host recorded, approved on the server
        g = host.gate(send(150.0), now=T0)
        assert g.decision.effect == "require_approval"
        a = server.approve(g.decision_id, principal="rev", roles=["reviewer"], now=at(1))
        assert a.counted
        assert host.authorization(g.decision_id, now=at(2)).status == "approved"
        assert server.authorization(g.decision_id, now=at(2)).status == "approved"
        x = host.executed(g.decision_id, receipt=RECEIPT, now=at(3))
        # a bulk rollback previewed in one process (its batch hash, over its plans' hashes) is the
        # batch the other plans
        previews = [
            r.request_bulk_rollback(
                None, "customer_request", "rita", "r", executions=[x.execution_id], now=at(4), dry_run=True
            )
            for r in (host, server)
        ]
        assert previews[0].batch_hash and previews[0].batch_hash == previews[1].batch_hash
        # a rollback the host planned: the server plans the same hash, and its approval counts
        rb = host.request_rollback(
            x.execution_id, scenario="customer_request", requested_by="rita", reason="r", now=at(4)
        )
        assert rb.rollback_id is not None and _locations(rb.plan)
        mine = server.engine.classify_rollback(_request_of(rb.plan, x.execution_id), at(4))
        theirs = host.engine.classify_rollback(_request_of(rb.plan, x.execution_id), at(4))
        assert mine.plan_hash == theirs.plan_hash
        assert _locations(mine) != _locations(theirs)
        a = server.approve(rb.rollback_id, principal="cy", roles=["customer_service"], now=at(5))
        assert a.counted
        assert host.authorization(rb.rollback_id, now=at(6)).status == "approved"
        assert host.ledger.verify().ok


def _request_of(plan, execution_id: str) -> dict:
    return {
        **REQUEST,
        "original": {"id": execution_id, "type": "send", "executed_at": plan.executed_at, "opened": False},
    }


# ---------------------------------------------------------------------------- plans recorded before
def _old_plan_hash(plan) -> str:
    """The plan hash of earlier versions (every field but `plan_hash` and `evaluated_at`, the
    locations as shown; `duties` left out when empty), written here on its own."""
    data = plan.model_dump(mode="json") if hasattr(plan, "model_dump") else dict(plan)
    data.pop("plan_hash", None)
    data.pop("evaluated_at", None)
    if not data.get("duties"):
        data.pop("duties", None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def test_the_old_hash_is_what_the_previous_version_computed(tree):
    plan = policy_engine.load(str(tree[1])).classify_rollback(REQUEST, NOW)
    assert digests.legacy_plan_hash(plan) == _old_plan_hash(plan)
    assert digests.plan_hash(plan) != _old_plan_hash(plan)


def test_a_ledger_recorded_before_still_verifies_and_authorizes(tree, monkeypatch, ledger_url):  # noqa: F811
    root, pol, _ = tree
    # the previous version: plans hashed with their locations, approvals bound to that hash
    monkeypatch.setattr(rollback, "plan_hash", _old_plan_hash)
    with Runtime.open(str(pol), ledger=ledger_url) as old:
        g = old.gate(send(50.0), now=T0)
        x = old.executed(g.decision_id, receipt=RECEIPT, now=at(1))
        rb = old.request_rollback(
            x.execution_id, scenario="customer_request", requested_by="rita", reason="r", now=at(2)
        )
        assert rb.rollback_id is not None and _locations(rb.plan)
        old_hash = rb.plan.plan_hash
        assert old_hash == _old_plan_hash(rb.plan)
        assert old.approve(rb.rollback_id, principal="cy", roles=["customer_service"], now=at(3)).counted
    monkeypatch.undo()
    assert digests.plan_hash(rb.plan) != old_hash  # (the form changed for a plan with a location)
    monkeypatch.chdir(root)
    with Runtime.open("pol", ledger=ledger_url) as new:
        assert new.ledger.verify().ok
        st = new.authorization(rb.rollback_id, now=at(4))
        assert st.status == "approved", st
        assert st.verdict.satisfied and st.verdict.plan_hash == old_hash
        # the stored plan, as an engine reads it, still matches its hash
        v = new.engine.authorize_rollback(
            rb.plan.model_dump(mode="json"),
            [{"principal": "cy", "roles": ["customer_service"], "plan_hash": old_hash}],
            at(4),
        )
        assert v.satisfied, v.errors


def test_an_edited_plan_matches_neither_form(tree):
    _, pol, _ = tree
    eng = policy_engine.load(str(pol))
    plan = eng.classify_rollback(REQUEST, NOW).model_dump(mode="json")
    edited = {**plan, "notify": []}
    for claimed in (plan["plan_hash"], _old_plan_hash(plan)):
        v = eng.authorize_rollback(
            {**edited, "plan_hash": claimed},
            [{"principal": "cy", "roles": ["customer_service"], "plan_hash": claimed}],
            NOW,
        )
        assert not v.satisfied
        assert any("does not match its `plan_hash`" in e.message for e in v.errors)
    # a location only shows where a prerequisite is: moving it changes neither what the plan
    # does nor its hash
    moved = json.loads(json.dumps(plan).replace("replies.policy:14:18", "elsewhere.policy:1:1"))
    assert digests.plan_hash(moved) == plan["plan_hash"]
    assert not digests.plan_matches_hash(moved, _old_plan_hash(plan))


def _location_paths(model, path="") -> set:
    """Every path of a `location` field in `model` (`[]`: an item of a tuple)."""
    import typing

    from pydantic import BaseModel

    out = set()
    for name, f in model.model_fields.items():
        here = f"{path}.{name}" if path else name
        if name == "location":
            out.add(here)
        todo = [(f.annotation, here)]
        while todo:
            t, at_ = todo.pop()
            if isinstance(t, type) and issubclass(t, BaseModel):
                out |= _location_paths(t, at_)
                continue
            origin = typing.get_origin(t)
            for a in typing.get_args(t):
                todo.append((a, at_ + "[]" if origin is tuple else at_))
    return out


def test_every_location_a_plan_holds_is_left_out_of_its_hash(tree):
    from policy_engine.models import RollbackPlan

    assert _location_paths(RollbackPlan) == {
        "errors[].location",
        "feasibility.prerequisites[].location",
        "cascade.steps[].prerequisites[].location",
    }
    # a plan with every kind: an error located at a prerequisite (`opened` is missing)
    eng = policy_engine.load(str(tree[1]))
    original = {k: v for k, v in REQUEST["original"].items() if k != "opened"}
    plan = eng.classify_rollback({**REQUEST, "original": original}, NOW).model_dump(mode="json")
    assert plan["errors"][0]["location"] and plan["feasibility"]["prerequisites"][0]["location"]

    def elsewhere(v):
        if isinstance(v, dict):
            return {k: "other/x.policy:1:1" if k == "location" and x else elsewhere(x) for k, x in v.items()}
        return [elsewhere(x) for x in v] if isinstance(v, list) else v

    moved = elsewhere(plan)
    assert moved != plan
    assert digests.plan_hash(moved) == digests.plan_hash(plan) == plan["plan_hash"]
    assert digests.legacy_plan_hash(moved) != digests.legacy_plan_hash(plan)
