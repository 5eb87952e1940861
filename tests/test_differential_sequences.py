"""The accelerated gate against the reference gate over SEQUENCES of calls on one engine.

The accelerators are stateful (fused functions built on a type's third call and rebuilt
when shapes change, templates per outcome and per `now`, the `now`s seen once, fault
templates on their second sighting, the kept values of faulted conditions, the stopped
lane's templates, deferred digests and times), so a wrong answer may need a particular
history to show. Each example here is a random policy (tests/fuzz/diffgen.py) and one
random sequence of `evaluate()` / `evaluate_json()` calls run on two engines built from
it, accelerated and `accelerate=False`; every decision must be the reference's, byte for
byte, however it is read (`model_dump_json`, `to_json`, `evaluate_json`, the ledger's
canonical text, attributes, copies, pickles, ==, hash), in whatever order, at once or
only calls later, including after the caller changed its action dict; a decision at the
clock's time must carry its own call's time; and each reference decision must keep the
gate's semantics (`diffgen.laws`, `diffgen.time_law`). The runtime's recorded body of each
decision (`runtime.gatejson.body_text`, when it gives text) must be the `rfc8785` text of
the same body built from the reference decision. "Timed" policies declare timestamps,
durations and maps of them (and of ints, records, maps) on every action type and send
what a runtime would (aware, naive and zoned datetimes, RFC 3339 text, timedeltas, "15m",
maps with odd keys or values). A small budget; the long campaign is
tests/fuzz/fuzz_differential.py, which writes a mismatch as a test like the ones here.
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.control import current_build_context

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))

import diffgen as dg  # noqa: E402
from depth import examples

from policy_engine.engine.accel import fused as fused_mod  # noqa: E402
from policy_engine.engine.accel import templates as templates_mod  # noqa: E402
from policy_engine.runtime import gatejson  # noqa: E402


def _final() -> bool:
    """Whether this is hypothesis' last run of a failing example (or no hypothesis run):
    shrink the sequence there only (hypothesis runs a failing test many times)."""
    try:
        return current_build_context().is_final
    except Exception:  # noqa: BLE001 - not inside a hypothesis test
        return True


def _check(seed: int, n: int, tiny: bool, timed: bool = False) -> None:
    """One random policy and sequence; on a mismatch, the shrunk reproducer as the message.
    `timed`: a policy declaring timestamps, durations and maps (`diffgen.gen_policy`)."""
    rng = random.Random(f"timed:{seed}" if timed else seed)
    if tiny:
        with dg.tiny_caches():
            pol, fast, ref = dg.round_of(rng, seed, timed)
            steps = dg.gen_steps(rng, pol, n)
            mism = dg.run_sequence(pol, steps, (fast, ref))
    else:
        pol, fast, ref = dg.round_of(rng, seed, timed)
        steps = dg.gen_steps(rng, pol, n)
        mism = dg.run_sequence(pol, steps, (fast, ref))
    if mism and not _final():
        pytest.fail(f"seed {seed}, tiny caches {tiny}: {mism[0]}", pytrace=False)
    if mism:
        text, small, left = dg.shrink(pol.text, steps, tiny=tiny, budget=300)
        if not left:
            text, small, left = pol.text, steps[: max(mism[0].step, mism[0].seen_at) + 1], mism
        pytest.fail(f"seed {seed}, tiny caches {tiny}: {mism[0]}\n\n" + dg.repro_text(text, small, left, tiny=tiny),
                    pytrace=False)


@settings(max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(20, 400), tiny=st.booleans())
def test_random_call_sequences_decide_as_the_reference(seed, n, tiny):
    _check(seed, n, tiny)


# a few fixed seeds, so every run checks the same sequences too (and a change that breaks
# one of them fails every time, not by chance)
@pytest.mark.parametrize("seed", [1, 2, 3, 7, 11])
def test_fixed_call_sequences_decide_as_the_reference(seed):
    _check(seed, 300, tiny=seed % 2 == 1)


def test_the_sequences_reach_the_accelerators():
    """Not vacuous: over a few sequences the accelerated engine builds fused functions,
    rebuilds them for new shapes, decides from templates at a `now` and with deferred
    times and digests, keeps fault templates and kept values, and the stopped lane's
    templates (counted on the decisions as made, before anything read them); it builds
    fused functions specialised for lists of records and of numbers and checking declared
    fields, decides declared types by them, and the undeclared-type lane answers (deny,
    and a stop trigger fired) as the stopped-workflow lane does."""
    paths: dict = {}
    lanes: dict = {}
    held = {"fused": 0, "rebuilt": 0, "faults": 0, "memo": 0, "stopped": 0, "undeclared": 0}
    with dg.lane_counts(lanes):
        for seed in range(8):
            rng = random.Random(seed)
            pol, fast, ref = dg.round_of(rng, seed)
            steps = dg.gen_steps(rng, pol, 300)
            assert dg.run_sequence(pol, steps, (fast, ref), stats=paths) == []
            for fz in fast.accelerator.gates():
                held["fused"] += fz.fn is not None
                held["rebuilt"] += fz.rebuilds > 0
                held["faults"] += len(fz.faults)
                held["memo"] += len(fz.memo)
            held["stopped"] += len(fast._stopped.templates)
            held["undeclared"] += len(fast._undeclared.templates)
    assert all(v > 0 for v in held.values()), held
    for key in ("from a template", "from a template at its now", "times deferred", "digest deferred",
                "effect:allow", "effect:deny", "effect:require_approval", "effect:stop",
                "declared type, by its fused function"):
        assert paths.get(key, 0) > 0, (key, paths)
    for key in ("fused built with records", "fused built with nums", "fused built with declared",
                "undeclared lane: answered deny", "undeclared lane: answered stop", "stopped lane: answered stop"):
        assert lanes.get(key, 0) > 0, (key, lanes)


# declared timestamps, durations and maps: every action type declares some (`timed`)
TIMED_SEEDS = range(10)


@pytest.mark.parametrize("seed", TIMED_SEEDS)
def test_timed_call_sequences_decide_as_the_reference(seed):
    _check(seed, 200, tiny=seed % 3 == 2, timed=True)


def _timed_rounds(stats: dict | None = None):
    """The first mismatch (or None) of each timed round of TIMED_SEEDS (200 calls each), one
    round at a time."""
    for seed in TIMED_SEEDS:
        rng = random.Random(f"timed:{seed}")
        pol, fast, ref = dg.round_of(rng, seed, timed=True)
        steps = dg.gen_steps(rng, pol, 200)
        mism = dg.run_sequence(pol, steps, (fast, ref), stats=stats)
        yield mism[0] if mism else None


def test_timed_sequences_reach_declared_times_maps_and_body_text():
    """Not vacuous: the timed rounds send values to declared timestamp, duration and map
    fields (of timestamps, durations, ints, records, maps) that fit and that are refused,
    the accelerated engine decides declared types holding them by its fused function, and
    `gatejson.body_text` gives text (compared with the reference's) for many decisions."""
    stats: dict = {}
    before = dict(dg.BODY_TEXT)
    assert list(_timed_rounds(stats)) == [None] * len(TIMED_SEEDS)
    for kind in ("timestamp", "duration", "map of timestamp", "map of duration", "map of int", "map of record",
                 "map of map"):
        for outcome in ("fits", "refused"):
            key = f"declared {kind} field sent: {outcome}"
            assert stats.get(key, 0) > 0, (key, stats)
    assert stats.get("declared type with timestamp/duration/map fields, by its fused function", 0) > 0, stats
    gave = dg.BODY_TEXT["text"] - before["text"]
    assert gave > 100, (gave, dg.BODY_TEXT)


# a check of the fused function's declared fields left out (`accel.declared.declared_lines`):
# a value the reference refuses then passes there
_WEAKENED = {
    "a naive datetime passes as a timestamp": lambda ln: re.sub(r" or \w+\.tzinfo is None", "", ln),
    "anything passes as a timestamp": lambda ln: None if "is not _DT" in ln else ln,
    "anything passes as a duration": lambda ln: None if "is not _TD" in ln else ln,
    "a map's keys are not checked": lambda ln: None if "type(_dk) is not str" in ln else ln,
}


@pytest.mark.parametrize("what", sorted(_WEAKENED))
def test_a_weakened_declared_time_or_map_check_is_caught(monkeypatch, what):
    """The harness itself: the timed rounds catch a fused function whose check of declared
    timestamps, durations or map keys is weaker than `fieldtypes.value_problem`."""
    real = fused_mod.declared_lines
    edit = _WEAKENED[what]

    def weakened(*a, **k):
        lines, ns = real(*a, **k)
        out = []
        for ln in lines:
            e = edit(ln)
            out.append(ln[: len(ln) - len(ln.lstrip())] + "pass" if e is None else e)
        return out, ns

    monkeypatch.setattr(fused_mod, "declared_lines", weakened)
    assert any(m is not None for m in _timed_rounds())  # (stops at the first round that catches it)


def test_a_wrong_body_text_is_caught(monkeypatch):
    """The harness itself: a recorded body that is not the reference's canonical text (one
    byte more) is reported, by a decision of the runtime's fast lane."""
    real = gatejson.body_text

    def skewed(*a, **k):
        got = real(*a, **k)
        return None if got is None else ("{ " + got[0][1:], got[1])

    monkeypatch.setattr(gatejson, "body_text", skewed)
    rng = random.Random(3)
    pol, fast, ref = dg.round_of(rng, 3)
    steps = dg.gen_steps(rng, pol, 300, odd=0.0)
    mism = dg.run_sequence(pol, steps, (fast, ref))
    assert mism and "body" in mism[0].what
    assert mism[0].got.startswith('{ "action":') and mism[0].want.startswith('{"action":')


def test_a_wrong_template_is_caught(monkeypatch):
    """The harness itself: a template that differs from the reference's decision (its
    reason changed) is reported, by the first decision made from it."""
    real = templates_mod.decide

    def skewed(*a, **k):
        d = real(*a, **k)
        return d.model_copy(update={"reason": d.reason + " [skewed]"})

    monkeypatch.setattr(templates_mod, "decide", skewed)
    rng = random.Random(3)
    pol, fast, ref = dg.round_of(rng, 3)
    steps = dg.gen_steps(rng, pol, 300, odd=0.0)
    mism = dg.run_sequence(pol, steps, (fast, ref))
    assert mism and "[skewed]" in mism[0].got and "[skewed]" not in mism[0].want


def test_the_laws_catch_a_decision_against_the_design():
    """`diffgen.laws` (checked on every reference decision of a sequence): a decision whose
    effect is not the highest-precedence matched one, or that lets an erring deny rule
    count as not matched, breaks them."""
    text = ('roles [reviewer]\nworkflow "w" {\n  version "1"\n  owners { business "B" technical "T" }\n'
            '  action t {\n    system "s"\n    allow a when `action.n > 1`\n    deny d when `action.m > 1`\n  }\n}\n')
    _, ref = dg.build_engines(text)
    d = ref.evaluate({"workflow": "w", "type": "t", "n": 2, "m": 2}, None, dg.T0)
    assert d.effect == "deny" and dg.laws(d) is None
    assert "effect allow" in dg.laws(d.model_copy(update={"effect": "allow"}))
    e = ref.evaluate({"workflow": "w", "type": "t", "n": 2}, None, dg.T0)  # `action.m` errs: deny matched
    assert e.effect == "deny" and dg.laws(e) is None
    trace = tuple(t.model_copy(update={"matched": False}) if t.error else t for t in e.trace)
    assert "counted as matched=False" in dg.laws(e.model_copy(update={"trace": trace}))
