"""Shared helpers for the engine tests (tests/test_engine*.py, tests/test_explain*.py)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import policy_engine
from policy_engine.engine import Engine
from policy_engine.language.loader import load_sources
from policy_engine.source import SourceFile

ROOT = Path(__file__).resolve().parent.parent
POLICIES = "tests/engine_policies"
NOW = "2026-07-02T10:00:00Z"
WF = "support-replies"


@contextlib.contextmanager
def at_root():
    old = os.getcwd()
    os.chdir(ROOT)
    try:
        yield
    finally:
        os.chdir(old)


def load_engine() -> Engine:
    """The fixture policy set, loaded with repository-relative paths (stable locations)."""
    with at_root():
        return policy_engine.load(POLICIES)


def engine_from_texts(texts: dict[str, str], accelerate: bool = True) -> Engine:
    """An engine from in-memory files {path: text}, loaded in the given order
    (`accelerate=False`: the reference path alone)."""
    sources = [SourceFile(p, t) for p, t in texts.items()]
    return Engine.from_load_result(load_sources(sources, accelerate=accelerate), accelerate=accelerate)


def warm_bench_engines() -> tuple[Engine, Engine, list]:
    """(accelerated engine, reference engine, the 200-request mix) on the benchmark's
    policies, the accelerated one warmed (every fused gate built, its templates kept)."""
    from benchmarks.requests import make_mix

    fast = policy_engine.load(str(ROOT / "benchmarks/policies"))
    slow = policy_engine.load(str(ROOT / "benchmarks/policies"), accelerate=False)
    mix = make_mix(200)
    for _ in range(3):
        for a, s, n in mix:
            fast.evaluate(a, s, n)
    return fast, slow, mix


def reply(**attrs):
    base = {"workflow": WF, "type": "send_customer_reply", "amount": 50.0, "recipient": {"domain": "ok.example"}}
    base.update(attrs)
    return base


def request(scenario="reviewer_error", **original):
    rec = {"id": "m1", "type": "send_customer_reply", "executed_at": "2026-07-02T09:59:30Z", "reviewer": "rita",
           "requester": "quinn", "recipient_opened": False,
           "downstream": [{"id": "c1", "type": "log_crm_activity"}]}
    rec.update(original)
    return {"workflow": WF, "scenario": scenario, "requested_by": "rita", "reason": "wrong reply", "original": rec}
