"""Large action types (issue 16, goal 4): a type with more conditions than one fused
function takes is fused in chunks, and conditions that compare a str field with constants
first (`action.tool == "x" && ...`) are indexed by that field. Every decision must be the
reference path's (`accelerate=False`), byte for byte, errors and fail-closed cases included.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from depth import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.gen_policies import large_type_handwritten, large_type_requests, large_type_text
from policy_engine.cel import _FUSE_MAX, compile_cel
from policy_engine.cel.codegen import generator_of
from tests.engine_support import engine_from_texts

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
T1 = datetime(2026, 3, 2, 23, 15, tzinfo=UTC)


def both(text: str):
    return engine_from_texts({"p.policy": text}), engine_from_texts({"p.policy": text}, accelerate=False)


def same_everywhere(fast, ref, actions, nows=(T0, T1, None)):
    """Every action decided alike by both engines, each `now`, several passes (the fused
    function is built on the third evaluation and rebuilt when a shape is new)."""
    for _ in range(3):
        for a in actions:
            for now in nows:
                got = fast.evaluate(a, None, now)
                want = ref.evaluate(a, None, now)
                if now is None:  # the clock: compare all but the time
                    got = got.model_copy(update={"evaluated_at": want.evaluated_at,
                                                 "reversibility": want.reversibility})
                assert got.model_dump_json() == want.model_dump_json(), a


@pytest.fixture(scope="module")
def large():
    return both(large_type_text(600))


def test_the_generated_large_type_is_fused_in_chunks_and_indexed(large):
    fast, ref = large
    reqs = large_type_requests(600, 60)
    same_everywhere(fast, ref, reqs, nows=(T0,))
    fz = fast.accelerator.gate("tools", "call_tool")
    assert fz.fn is not None
    src = fz.source
    assert "_X0 = {" in src and "_X1 = {" in src  # `tool` and `tenant` index the conditions
    assert "def _x0_" in src and "def _c_" not in src  # the rest fits one function
    # the fused function decides (a Decision straight from it, not the mask)
    assert type(fz.fn(reqs[0], T0)).__name__ == "Decision"


def test_large_type_agrees_with_the_reference_on_mutated_and_bad_inputs(large):
    fast, ref = large
    reqs = large_type_requests(600, 40, seed=3)
    rng = random.Random(5)
    weird = [None, "", "tool3", "tool1", 1, 1.5, float("nan"), True, [], {}, ["tool3"], {"role": "admin"},
             "x" * 5000, "t42", "\ud800", 10**30]
    keys = ["tool", "tenant", "amount", "user", "tags", "note", "id"]
    actions = list(reqs)
    for a in reqs:
        for _ in range(4):
            b = dict(a)
            k = rng.choice(keys)
            if rng.random() < 0.2:
                b.pop(k, None)  # a missing field: conditions reading it err (fail closed)
            else:
                b[k] = rng.choice(weird)
            if rng.random() < 0.3:
                b["user"] = {"role": rng.choice(["admin", "r7", 3, None]), "level": rng.choice([0, 4, "1", 2.5])}
            actions.append(b)
    same_everywhere(fast, ref, actions, nows=(T0, None))


def test_the_hand_written_baseline_of_the_large_type_agrees_with_evaluate(large):
    fast, _ = large
    ns: dict = {}
    exec(compile(large_type_handwritten(600), "<large-handwritten>", "exec"), ns)  # noqa: S102 - generated
    effects = set()
    for a in large_type_requests(600, 200):
        d = fast.evaluate(a, None, T0)
        effect, rule, approvals = ns["evaluate"](a, None, T0)
        assert (d.effect, tuple(x.rule for x in d.approvals)) == (effect, tuple(x[0] for x in approvals))
        assert rule.startswith("<") or d.deciding.name == rule
        effects.add(effect)
    assert effects == {"deny", "require_approval", "allow"}


def test_field_guard_reads_the_first_and_operand_and_every_or_operand():
    def guard(src):
        ex = compile_cel(src)
        g = generator_of(ex)
        return g.field_guard if g is not None else "no fast path"

    assert guard('action.tool == "a" && action.n > 1') == ("tool", frozenset({"a"}))
    assert guard('"a" == action.tool') == ("tool", frozenset({"a"}))
    assert guard('action.tool in ["a", "b"] && action.x') == ("tool", frozenset({"a", "b"}))
    assert guard('action.tool == "a" || action.tool in ["b"]') == ("tool", frozenset({"a", "b"}))
    # not a guard: negated, second operand, another field in an `||`, nested, not a str constant
    assert guard('action.tool != "a"') is None
    assert guard('action.n > 1 && action.tool == "a"') is None
    assert guard('action.tool == "a" || action.kind == "b"') is None
    assert guard('action.user.role == "a"') is None
    assert guard("action.tool == 1") is None
    assert guard('!(action.tool == "a")') is None


# random large types: the index and the chunks against the reference, errors included
_COND = [
    'action.tool == "{t}" && action.n > {i}',
    'action.tool == "{t}" && action.missing > {i}',  # errs only for its own tool
    'action.tool in ["{t}", "{u}"] && action.s.startsWith("{c}")',
    'action.tool == "{t}" || action.tool == "{u}"',
    'action.tool == "{t}" && action.n / action.d > 1',  # division by zero for d == 0
    'action.n > {i} && action.tool == "{t}"',  # not indexed: its first operand may err
    'action.tool != "{t}" && action.n == {i}',
    'action.s == "{c}"',
    'action.s.matches("^{c}[0-9]+$")',
    'action.tags.exists(x, x == "{c}")',
]
_EFFECTS = ["deny", "require_approval", "allow", "deny"]


def _random_type(rng: random.Random, n: int) -> str:
    lines = []
    for i in range(n):
        cond = rng.choice(_COND).format(t=f"t{rng.randrange(12)}", u=f"t{rng.randrange(12)}", i=rng.randrange(20),
                                        c=rng.choice("abc"))
        effect = rng.choice(_EFFECTS)
        by = " by 1 reviewer" if effect == "require_approval" else ""
        lines.append(f"    {effect} r{i:04d}{by} when `{cond}`\n")
    return ('roles [reviewer]\nworkflow "w" {\n  version "1"\n  owners { business "b" technical "t" }\n'
            '  default deny\n  action a {\n    system "s"\n    irreversible\n' + "".join(lines) + "  }\n}\n")


_value = st.one_of(st.none(), st.booleans(), st.integers(-3, 25), st.sampled_from([0.0, 2.5, float("nan")]),
                   st.sampled_from(["t1", "t3", "t7", "a1", "b22", "c", ""]),
                   st.lists(st.sampled_from("abc"), max_size=3))


@settings(max_examples=examples(6), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), n=st.sampled_from([80, _FUSE_MAX + 40]),
       actions=st.lists(st.fixed_dictionaries({}, optional={
           "tool": st.one_of(st.sampled_from([f"t{i}" for i in range(12)]), _value),
           "n": _value, "d": _value, "s": _value, "tags": _value, "missing": _value}), min_size=1, max_size=6))
def test_random_large_types_decide_like_the_reference(seed, n, actions):
    fast, ref = both(_random_type(random.Random(seed), n))
    base = [{"workflow": "w", "type": "a", "tool": f"t{i}", "n": i, "d": 1, "s": "a1", "tags": ["a"]} for i in range(4)]
    same_everywhere(fast, ref, base + [{"workflow": "w", "type": "a", **a} for a in actions], nows=(T0,))
    fz = fast.accelerator.gate("w", "a")
    assert fz.fn is not None  # built (and rebuilt for new shapes) all along
