"""The shipped fixture suites give identical answers on the reference path and the
accelerated one.

`policy_engine.load(path, accelerate=False)` evaluates with the compiled closures alone;
the default adds the accelerators (fused gates, shape speculation, decision templates,
per-`now` caches; see policy_engine/engine/accel/). Every case of every
`policies/*.policy-test.yaml` and `tests/suites/good` suite is run both ways, the
accelerated engine several rounds (its fused gates are built on a type's third
evaluation, then its templates are kept per outcome and per `now`), and every answer must
be the same JSON, case for case.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import policy_engine
from policy_engine.testing import Runner, discover_suites, load_policies, load_suite

ROOT = Path(__file__).resolve().parent.parent
SUITE_DIRS = [ROOT / "policies", ROOT / "tests" / "suites" / "good"]
ROUNDS = 4  # accelerated: built after the third evaluation of a type, templates from the fourth


def _loader(accelerate: bool):
    def load(paths: tuple[str, ...]):
        loaded = load_policies(paths)
        if loaded.engine is None:
            return loaded
        engine = policy_engine.load(list(paths), accelerate=accelerate)
        assert engine.accelerated is accelerate and engine.policy_hash == loaded.engine.policy_hash
        return dataclasses.replace(loaded, engine=engine)

    return load


def _answers(runner: Runner, files: list[Path]) -> dict[str, str]:
    out = {}
    for f in files:
        sr = runner.run_suite(load_suite(f))
        assert not sr.error, sr.error
        for r in sr.results:
            assert r.status != "failed", (r.case.nodeid, r.message, r.differences)
            answer = dict(r.answer or {})
            if r.case.now is None:  # the clock's time: not comparable between runs
                answer.pop("evaluated_at", None)
            out[r.case.nodeid] = json.dumps(answer, sort_keys=True)
    return out


SUITES = sorted(f for d in SUITE_DIRS for f in discover_suites([d])[0])


def test_every_shipped_suite_is_found():
    assert len([f for f in SUITES if f.parent == ROOT / "policies"]) >= 5
    assert any(f.parent.name == "good" for f in SUITES)


@pytest.mark.parametrize("suite", SUITES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_suite_answers_the_same_with_and_without_the_accelerators(suite):
    reference = _answers(Runner(loader=_loader(False)), [suite])
    assert reference
    accelerated = Runner(loader=_loader(True))  # one engine for every round: its lanes warm up
    for round_ in range(ROUNDS):
        answers = _answers(accelerated, [suite])
        assert answers.keys() == reference.keys()
        for nodeid, want in reference.items():
            assert answers[nodeid] == want, (round_, nodeid)
    engine = next(iter(accelerated._loaded.values())).engine
    assert any(fz.fn is not None for fz in engine.accelerator.gates())  # the fused gates ran


def test_the_reference_engine_builds_no_accelerator():
    engine = policy_engine.load(str(ROOT / "policies"), accelerate=False)
    assert engine.accelerator is None and not engine.accelerated
    for _ in range(10):
        engine.evaluate({"workflow": "refunds", "type": "issue_refund", "id": "r1", "amount": 10.0,
                         "currency": "EUR", "customer": {"tier": "standard"}})
    # nothing was generated: the compiled policy holds no accelerator state either, and its
    # CEL conditions were compiled without generated fast paths (compile_cel(accelerate=False))
    for wf in engine.compiled.workflows.values():
        for ca in wf.actions.values():
            assert not hasattr(ca, "fused")
            assert all(item.fn._fast_fn() is None for *_, item in ca.gate)
    accelerated = policy_engine.load(str(ROOT / "policies"))
    assert any(item.fn._fast_fn() is not None for wf in accelerated.compiled.workflows.values()
               for ca in wf.actions.values() for *_, item in ca.gate)


def test_a_policy_store_can_hold_reference_engines():
    from policy_engine.store import PolicyStore

    store = PolicyStore(str(ROOT / "policies"), accelerate=False)
    assert store.engine.accelerator is None
    assert store.reload().ok and store.engine.accelerator is None  # reloads keep the mode
    assert PolicyStore(str(ROOT / "policies")).engine.accelerated
