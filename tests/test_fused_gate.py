"""The gate's fast lane decides exactly what the condition-by-condition path decides.

evaluate() has three ways to the same decision (see engine.accel):
  - the reference path (`accelerate=False`): every condition called on its own (closures
    or their fast paths);
  - the fused gate: one generated function per action type evaluates all its conditions
    at once, and the decision comes from a template kept per outcome;
  - the lane in evaluate() itself: the fused gate for the common call, with fewer steps.
And stop triggers guarded by `action.type` are constant `false` for the other types.
Each test here compares them on the same inputs, by the decision's JSON.
"""

from __future__ import annotations

import json
import math
import random
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from engine_support import ROOT, engine_from_texts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import policy_engine
from policy_engine import compiler
from policy_engine.cel import compile_cel, fuse
from policy_engine.cel.emit import _FastFallback
from policy_engine.engine.accel import fused as fused_mod
from policy_engine.engine.accel import templates as templates_mod

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.requests import make_mix  # noqa: E402

UTC = UTC
T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


def lanes(engine):
    return engine.accelerator.gates()


def with_lanes(engine):
    for fz in lanes(engine):
        fz.build()
    return engine


def dump(d) -> str:
    return json.dumps(d.model_dump(mode="json"), sort_keys=True)


# ----------------------------------------------------------------------------- type guards
@pytest.mark.parametrize("src, guard", [
    ('action.type == "a"', {"a"}),
    ('"a" == action.type && action.x > 1', {"a"}),
    ('action.type in ["a", "b"] && action.y', {"a", "b"}),
    ('(action.type == "a" && action.q) || action.type == "b"', {"a", "b"}),
    ('action.type in policy.kinds && action.n > 0', {"k1", "k2"}),  # a folded constant
    # not guards: the guard is not evaluated first, or does not decide `false`
    ('action.x > 1 && action.type == "a"', None),  # a budget error on the left is not absorbed
    ('action.type == "a" || action.z', None),
    ('!(action.type == "a")', None),
    ('action.type != "a"', None),
    ('action.type == 1', None),
    ('[{"type": "a"}].exists(action, action.type == "a")', None),  # a local, not the input
    ('action.kind == "a"', None),
    ('action.type == "a" ? true : false', None),
])
def test_type_guard_is_recognised_only_where_it_decides(src, guard):
    e = compile_cel(src, constants={"policy": {"kinds": ("k1", "k2")}})
    assert e.type_guard == (frozenset(guard) if guard is not None else None)


TAILS = ["action.n > 3", "1 / action.n == 1", "action.missing", "action.list.all(x, x > 0)",
         "int(action.s) > 0", "action.n", "[1, 2, 3].map(x, [x, x, x, x]).size() > 0"]


@given(tail=st.sampled_from(TAILS), typ=st.sampled_from(["a", "b", "c"]),
       n=st.one_of(st.integers(-2, 5), st.floats(-2, 5, allow_nan=False), st.text(max_size=2), st.none()),
       s=st.sampled_from(["1", "x", ""]))
@settings(max_examples=200, deadline=None)
def test_a_guarded_condition_is_false_for_every_other_type(tail, typ, n, s):
    """What the compiler relies on to skip a stop trigger: whatever else the condition
    holds (errors included), with `action.type` naming another type it is `false`."""
    e = compile_cel(f'action.type in ["a", "b"] && ({tail})')
    assert e.type_guard == frozenset({"a", "b"})
    act = {"action": {"type": typ, "n": n, "s": s, "list": [1, n]}, "workflow": {}, "now": T0, "policy": {}}
    v = e(act)
    if typ not in e.type_guard:
        assert v is False


def test_the_compiler_skips_only_triggers_that_cannot_fire():
    engine = policy_engine.load(str(ROOT / "benchmarks/policies"))
    skipped = evaluated = 0
    for wf in engine.compiled.workflows.values():
        for ca in wf.actions.values():
            fz = engine.accelerator.gate(wf.name, ca.name)
            assert len(fz.slots) == len(ca.gate)
            for (call, *_, item), slot in zip(ca.gate, fz.slots):
                guard = item.fn.type_guard
                if call is None:
                    assert item.kind == "stop" and guard is not None and ca.name not in guard and slot is None
                    skipped += 1
                else:
                    assert guard is None or ca.name in guard
                    assert slot is not None
                    evaluated += 1
    assert skipped > 30 and evaluated > 100  # the benchmark's triggers are mostly per type


# ----------------------------------------------------------------------------- fuse()
def test_fuse_sets_one_bit_per_true_condition_and_raises_on_anything_else():
    srcs = ['action.amount > 10.0', 'action.claims.exists(c, !c.sourced)', 'now.getHours() < 6',
            'action.tags.filter(t, t.startsWith("x")).size() > 0', 'string(action.amount) == "12"',
            'action.amount']
    exprs = [compile_cel(s) for s in srcs]
    fn, src = fuse(exprs[:5], ("action", "workflow", "now", "policy"))
    assert fn is not None and src.startswith("def fused(")
    a = {"amount": 12.0, "claims": [{"sourced": True}, {"sourced": False}], "tags": ["xa"]}
    assert fn(a, {}, T0.replace(hour=3), {}) == 0b11111
    assert fn({**a, "amount": 1.0, "tags": []}, {}, T0, {}) == 0b00010
    with pytest.raises(_FastFallback):
        fn({**a, "amount": "12"}, {}, T0, {})  # a type the fast paths do not decide: the caller falls back
    with pytest.raises(KeyError, match="claims"):
        fn({k: v for k, v in a.items() if k != "claims"}, {}, T0, {})  # a missing field: an error
    fn6, _ = fuse(exprs, ("action", "workflow", "now", "policy"))
    with pytest.raises(_FastFallback):
        fn6(a, {}, T0, {})  # a condition that is not a bool
    assert fuse(exprs[:1], ("workflow",)) == (None, None)  # a name the activation does not have


# ----------------------------------------------------------------------------- decisions
def _mutations(mix, seed):
    rng = random.Random(seed)
    weird = [None, "x", "", 1, 0, -1, 1.5, 10**30, 2**64, True, False, [], {}, [1, "a"], {"sourced": "yes"},
             float("nan"), float("inf"), "\ud800", "é", "2026-01-01T00:00:00Z", [{"sourced": False, "kind": 1}]]
    out = []
    for action, state, now in mix:
        out.append((action, state, now))
        for _ in range(3):
            a = dict(action)
            keys = [k for k in a if k not in ("workflow", "type")]
            if keys and rng.random() < 0.5:
                del a[rng.choice(keys)]
            if keys:
                a[rng.choice(keys)] = rng.choice(weird)
            out.append((a, state, now))
    return out


def test_fast_lane_full_path_and_templates_agree_on_the_benchmark_mix():
    mix = _mutations(make_mix(200), 1)
    slow = policy_engine.load(str(ROOT / "benchmarks/policies"), accelerate=False)
    fast = with_lanes(policy_engine.load(str(ROOT / "benchmarks/policies")))
    expected = [dump(slow.evaluate(*r)) for r in mix]
    for _ in range(2):  # first pass builds the templates, the second reuses them
        assert [dump(fast.evaluate(*r)) for r in mix] == expected
    # and most of it really went through the lane: templates were made
    assert sum(len(fz.patterns) for fz in lanes(fast)) > 50


def test_the_lane_agrees_with_every_kind_of_now_and_workflow_state():
    slow = policy_engine.load(str(ROOT / "benchmarks/policies"), accelerate=False)
    fast = with_lanes(policy_engine.load(str(ROOT / "benchmarks/policies")))
    mix = make_mix(60)
    nows = [T0, T0.replace(hour=23), "2026-03-02T14:30:00Z", T0.astimezone(timezone(timedelta(hours=2))),
            T0 + timedelta(microseconds=5)]
    states = [None, {"status": "running"}, {"status": "running", "x": float("nan")},
              {"status": "stopped", "stopped_by": "nope"}, {"status": "paused"}, {}, "running"]
    for action, _, _ in mix:
        for now in nows:
            for state in states:
                assert dump(fast.evaluate(action, state, now)) == dump(slow.evaluate(action, state, now))


def test_now_none_in_the_lane_is_the_current_time():
    fast = with_lanes(policy_engine.load(str(ROOT / "benchmarks/policies")))
    action = make_mix(1)[0][0]
    before = datetime.now(UTC).replace(microsecond=0)
    for _ in range(3):
        d = fast.evaluate(action)
    after = datetime.now(UTC)
    t = datetime.fromisoformat(d.evaluated_at.replace("Z", "+00:00"))
    assert before <= t <= after


def test_shipped_policy_suites_pass_with_the_lanes_built_at_once(monkeypatch):

    monkeypatch.setattr(fused_mod, "FUSE_AFTER", 1)
    from click.testing import CliRunner

    from policy_engine.cli import main

    r = CliRunner().invoke(main, ["test", "--format", "json", str(ROOT / "policies")])
    assert r.exit_code == 0, r.output[-2000:]
    report = json.loads(r.output)
    assert report["failed"] == 0 and report["passed"] >= 229


POLICY_HEAD = (
    'roles [reviewer]\nworkflow "w" {\n  version "1"\n'
    '  owners { business "b" technical "t" }\n  default deny\n'
)
CONDS = [
    "action.amount > 100",
    "action.amount <= 100.0",
    "action.vip == true",
    "action.vip",
    'action.region == "eu"',
    "action.missing > 1",
    "size(action.tags) > 1",
    '"x" in action.tags',
    "action.amount >= 50 && action.vip",
    'action.tags.exists(t, t == "y")',
    "action.amount",
]
TYPES = ["a", "b"]


@st.composite
def policies(draw):
    text = POLICY_HEAD
    for t in TYPES:
        text += f"  action {t} {{\n"
        for i, (eff, cond) in enumerate(
            draw(
                st.lists(
                    st.tuples(st.sampled_from(["allow", "deny", "require_approval"]), st.sampled_from(CONDS)),
                    max_size=5,
                )
            )
        ):
            by = " by 1 reviewer" if eff == "require_approval" else ""
            text += f"    {eff} r{i}{by} when `{cond}`\n"
        text += "  }\n"
    for j, (guard, cond) in enumerate(
        draw(
            st.lists(
                st.tuples(
                    st.sampled_from(
                        ['action.type == "a" && ', 'action.type in ["a", "b"] && ', "", 'action.type == "zz" && ']
                    ),
                    st.sampled_from(CONDS),
                ),
                max_size=3,
            )
        )
    ):
        text += f'  stop s{j} {{ when `{guard}({cond})` severity low owner "o" resume when {{ ok: `evidence.ok` }} }}\n'
    return text + "}\n"


actions = st.fixed_dictionaries(
    {
        "workflow": st.just("w"),
        "type": st.sampled_from(TYPES + ["undeclared"]),
        "amount": st.one_of(st.integers(-10, 300), st.floats(-10, 300, allow_nan=False), st.text(max_size=2)),
        "vip": st.one_of(st.booleans(), st.none()),
        "region": st.sampled_from(["eu", "us"]),
        "tags": st.lists(st.sampled_from(["x", "y"]), max_size=3),
    },
    optional={"id": st.one_of(st.text(max_size=3), st.integers())},
)


@given(text=policies(), batch=st.lists(actions, min_size=1, max_size=6))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_policies_decide_the_same_through_every_path(text, batch):
    slow = engine_from_texts({"p.policy": text}, accelerate=False)
    fast = with_lanes(engine_from_texts({"p.policy": text}))  # built before any input: every plain type
    natural = engine_from_texts({"p.policy": text})  # built from the shapes it sees (see test_shapes.py)
    for action in batch:
        expected = dump(slow.evaluate(action, None, T0))
        assert dump(fast.evaluate(action, None, T0)) == expected
        assert dump(fast.evaluate(action, None, T0)) == expected  # from the template
        assert dump(fast.evaluate(action, {"status": "running"}, T0)) == dump(
            slow.evaluate(action, {"status": "running"}, T0)
        )
    for action in batch * 3:
        assert dump(natural.evaluate(action, None, T0)) == dump(slow.evaluate(action, None, T0))


def test_static_false_triggers_decide_like_evaluated_ones(monkeypatch):
    """The same policies compiled without type-guard skipping decide identically."""
    mix = _mutations(make_mix(100), 2)
    skipping = policy_engine.load(str(ROOT / "benchmarks/policies"), accelerate=False)
    orig = compiler._gate_entry
    monkeypatch.setattr(compiler, "_gate_entry", lambda item, atype=None: orig(item))
    evaluating = policy_engine.load(str(ROOT / "benchmarks/policies"), accelerate=False)
    assert all(
        call is not None
        for wf in evaluating.compiled.workflows.values()
        for ca in wf.actions.values()
        for call, *_ in ca.gate
    )
    for r in mix:
        assert dump(skipping.evaluate(*r)) == dump(evaluating.evaluate(*r))


def test_caches_stay_bounded(monkeypatch):
    monkeypatch.setattr(templates_mod, "PATTERNS_MAX", 2)
    monkeypatch.setattr(templates_mod, "NOW_CACHE_MAX", 3)
    monkeypatch.setattr(templates_mod, "PER_NOW_MAX", 2)
    slow = policy_engine.load(str(ROOT / "benchmarks/policies"), accelerate=False)
    fast = with_lanes(policy_engine.load(str(ROOT / "benchmarks/policies")))
    mix = make_mix(200)
    for i, (action, state, _) in enumerate(mix):
        now = T0 + timedelta(seconds=i % 7)
        assert dump(fast.evaluate(action, state, now)) == dump(slow.evaluate(action, state, now))
    for fz in lanes(fast):
        assert len(fz.patterns) <= 2 and len(fz.now) <= 3 and len(fz.now_full) <= 3
        assert all(len(entry) <= 1 + 2 for entry in fz.now_full.values())  # the renderings + a template per mask
        assert all(fz.now_full[now] is entry for now, entry in fz.now.values())
        assert len(fz.now_id) <= 3 and all(id(now) == k and fz.now_full[now] is entry
                                           for k, (now, entry) in fz.now_id.items())


def test_lanes_built_and_filled_from_8_threads_agree_with_one_thread():
    mix = _mutations(make_mix(100), 3)
    ref = policy_engine.load(str(ROOT / "benchmarks/policies"), accelerate=False)
    reference = [dump(ref.evaluate(*r)) for r in mix]
    engine = policy_engine.load(str(ROOT / "benchmarks/policies"))  # lanes built while the threads run
    results: dict[int, list[str]] = {}
    barrier = threading.Barrier(8)

    def work(k: int) -> None:
        barrier.wait()
        order = list(range(len(mix)))
        random.Random(k).shuffle(order)
        got = [None] * len(mix)
        for i in order:
            got[i] = dump(engine.evaluate(*mix[i]))
        results[k] = got

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8
    for got in results.values():
        assert got == reference
    assert any(fz.fn is not None for fz in lanes(engine))


def test_bad_values_in_read_fields_fail_closed_in_the_lane_and_unread_ones_change_nothing():
    fast = with_lanes(policy_engine.load(str(ROOT / "benchmarks/policies")))
    slow = policy_engine.load(str(ROOT / "benchmarks/policies"), accelerate=False)
    action = next(a for a, s, _ in make_mix(200) if a["type"] == "close_ticket" and s is None)
    reads = fast.compiled.workflows[action["workflow"]].actions["close_ticket"].reads
    assert "customer_tier" in reads and "unread" not in reads
    for _ in range(3):
        assert fast.evaluate(action, None, T0).errors == ()
    plain = dump(fast.evaluate(action, None, T0))
    for bad in (
        math.nan,
        math.inf,
        [1.0, -math.inf],
        {"x": [math.nan]},
        "\ud800",
        {"\ud800": 1},
        list(range(200_000)),
        "x" * 4_000_001,
    ):
        for engine in (fast, slow):
            d = engine.evaluate({**action, "customer_tier": bad}, None, T0)
            assert d.effect == "deny" and d.errors[0].kind == "input", (bad, engine is fast)
            assert dump(engine.evaluate({**action, "unread": bad}, None, T0)) == plain
    d = fast.evaluate({**action, "id": "\ud800"}, None, T0)  # a field a decision shows
    assert d.effect == "deny" and d.errors[0].kind == "input"


def test_a_budget_error_before_the_type_test_still_stops_other_types():
    """`x && action.type == "a"` is no guard: a budget error in `x` is never absorbed by
    `&&`, so for type `b` the trigger errs, and an erring stop trigger stops."""
    text = POLICY_HEAD + (
        "  action a { allow ok when `true` }\n  action b { allow ok when `true` }\n"
        '  stop heavy { when `action.big.all(x, action.big.all(y, y >= 0)) && action.type == "a"` '
        'severity low owner "o" resume when { ok: `evidence.ok` } }\n}\n'
    )
    for engine in (
        engine_from_texts({"p.policy": text}, accelerate=False),
        with_lanes(engine_from_texts({"p.policy": text})),
    ):
        ca = engine.compiled.workflows["w"].actions["b"]
        assert ca.gate[0][0] is not None  # evaluated for `b`, not skipped
        small = {"workflow": "w", "type": "b", "big": [1, 2]}
        assert engine.evaluate(small, None, T0).effect == "allow"
        d = engine.evaluate({**small, "big": list(range(400))}, None, T0)
        assert d.effect == "stop" and d.errors and d.errors[0].budget == "max_iterations"


# ----------------------------------------------------------------------------- what the gate reads
@pytest.mark.parametrize(
    "src, reads",
    [
        ("action.amount > 1", {("action", "amount")}),
        ("action.a.b.c == 1 && action.d[0].e", {("action", "a"), ("action", "d")}),
        ("has(action.x) && action.x > 1", {("action", "x")}),
        ("!has(action.maybe)", {("action", "maybe")}),
        ('action.tags.exists(t, t == "x")', {("action", "tags")}),
        ("size(action) > 2", {("action", None)}),  # the action as a whole
        ('action["amount"] > 1', {("action", None)}),
        ("action.exists(k, k == 'x')", {("action", None)}),
        ("dyn(action).amount > 1", {("action", None)}),
        ("action == {}", {("action", None)}),
        (
            'workflow.status == "x" && now > timestamp(action.at)',
            {("action", "at"), ("now", None), ("workflow", "status")},
        ),
        ("[{'a': 1}].exists(action, action.a == 1)", set()),  # a local named `action`
    ],
)
def test_reads_name_every_field_a_condition_can_touch(src, reads):
    assert set(compile_cel(src).reads) == reads


def test_a_condition_using_the_whole_action_checks_all_of_it():
    text = (
        POLICY_HEAD
        + "  action a { allow ok when `size(action) > 0` }\n  action b { allow ok when `action.n > 0` }\n}\n"
    )
    for engine in (
        engine_from_texts({"p.policy": text}, accelerate=False),
        with_lanes(engine_from_texts({"p.policy": text})),
    ):
        wf = engine.compiled.workflows["w"]
        assert wf.actions["a"].reads is None and wf.actions["b"].reads == ("id", "n", "type", "workflow")
        for _ in range(3):
            assert engine.evaluate({"workflow": "w", "type": "a", "x": math.nan}, None, T0).errors[0].kind == "input"
            assert engine.evaluate({"workflow": "w", "type": "b", "n": 1, "x": math.nan}, None, T0).effect == "allow"


junk = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=3), st.sampled_from(["\ud800", "é"])
    ),
    lambda i: st.one_of(st.lists(i, max_size=3), st.dictionaries(st.text(max_size=3), i, max_size=3)),
    max_leaves=6,
)


@given(
    text=policies(),
    action=actions,
    extra=st.dictionaries(st.sampled_from(["blob", "amount2", "note", "x"]), junk, min_size=1, max_size=3),
)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fields_no_condition_reads_never_change_a_decision(text, action, extra):
    """The contract of the read set: anything in a field outside it (NaN, surrogates,
    huge or deep values) leaves the decision exactly as it is without that field, but for
    a require_approval decision's `action_digest`, which covers the whole action (an
    approval binds to everything the action carries; issue 12, item 12)."""
    from policy_engine.engine import action_digest

    def same(d) -> str:
        return json.dumps({**d.model_dump(mode="json"), "action_digest": None}, sort_keys=True)

    for engine in (
        engine_from_texts({"p.policy": text}, accelerate=False),
        with_lanes(engine_from_texts({"p.policy": text})),
    ):
        wf = engine.compiled.workflows["w"]
        ca = wf.actions.get(action["type"])
        reads = ca.reads if ca is not None else wf.stop_reads
        assert reads is not None
        unread = {k: v for k, v in extra.items() if k not in reads}
        base = same(engine.evaluate(action, None, T0))
        for _ in range(2):
            d = engine.evaluate({**action, **unread}, None, T0)
            assert same(d) == base
            if d.effect == "require_approval":
                assert d.action_digest == action_digest({**action, **unread})


def test_a_type_with_more_conditions_than_a_fused_function_takes_is_fused_in_chunks():
    from policy_engine.cel import _FUSE_MAX

    rules = "".join(f"    deny r{i} when `action.n == {i}`\n" for i in range(_FUSE_MAX + 1))
    text = POLICY_HEAD + f"  action a {{\n{rules}    allow ok when `action.n < 0`\n  }}\n}}\n"
    engine = with_lanes(engine_from_texts({"p.policy": text}))
    reference = engine_from_texts({"p.policy": text}, accelerate=False)
    fz = engine.accelerator.gate("w", "a")
    assert fz.fn is not None and "def _c_1(" in fz.source  # two chunks of conditions
    for n, effect in ((-1, "allow"), (7, "deny"), (_FUSE_MAX, "deny"), (10_000, "deny")):
        d = engine.evaluate({"workflow": "w", "type": "a", "n": n}, None, T0)
        assert d.effect == effect and len(d.trace) == _FUSE_MAX + 2
        want = reference.evaluate({"workflow": "w", "type": "a", "n": n}, None, T0)
        assert d.model_dump_json() == want.model_dump_json()


def test_the_clock_and_new_nows_never_push_out_a_repeated_now():
    """A repeated `now` (a batch, a replay) keeps its entry of finished templates while the
    clock's time (never cached, never remembered) and a stream of new `now`s (remembered
    once, apart from the entries, bounded) come in between; every decision on the way is
    the reference gate's."""
    ref = policy_engine.load(str(ROOT / "benchmarks/policies"), accelerate=False)
    fast = with_lanes(policy_engine.load(str(ROOT / "benchmarks/policies")))
    mix = [m for m in make_mix(60) if m[1] is None]
    for _ in range(3):
        for a, s, _n in mix:
            fast.evaluate(a, s, T0)
    kept = {id(fz): fz.now_full[T0] for fz in lanes(fast) if T0 in fz.now_full}
    assert kept  # T0 seen three times: an entry with finished templates
    seen_before = {id(fz): len(fz.seen) for fz in lanes(fast)}
    for _ in range(3):
        for a, s, _n in mix:
            d = fast.evaluate(a, s)  # the clock's time
            assert dump(d) == dump(ref.evaluate(a, s, d.evaluated_at))
    assert {id(fz): len(fz.seen) for fz in lanes(fast)} == seen_before  # the clock's times: not remembered
    step = 0
    for _ in range(3):
        for a, s, _n in mix * 4:
            step += 1
            now = T0 + timedelta(seconds=step, microseconds=7)  # each `now` once
            assert dump(fast.evaluate(a, s, now)) == dump(ref.evaluate(a, s, now))
    for fz in lanes(fast):
        assert len(fz.seen) <= templates_mod.SEEN_MAX and len(fz.seen_full) <= templates_mod.SEEN_MAX
        if id(fz) in kept:
            assert fz.now_full.get(T0) is kept[id(fz)]  # the same entry, not pushed out
    for a, s, _n in mix:  # and still what the reference decides
        assert dump(fast.evaluate(a, s, T0)) == dump(ref.evaluate(a, s, T0))


def test_nows_sharing_a_cache_key_are_never_confused():
    """`now`s a whole number of seconds apart share a cache key (`now_key`: the
    microsecond): each slot keeps its `now` and serves only an equal one, the others are
    found by the `now` itself, so alternating them gets each its own entry, never another
    `now`'s decision."""
    ref = policy_engine.load(str(ROOT / "benchmarks/policies"), accelerate=False)
    fast = with_lanes(policy_engine.load(str(ROOT / "benchmarks/policies")))
    mix = [m for m in make_mix(60) if m[1] is None]
    nows = [T0, T0 + timedelta(minutes=1), T0 + timedelta(hours=9), T0 + timedelta(days=3, minutes=7)]
    assert len({templates_mod.now_key(n) for n in nows}) == 1
    for i in range(5):
        for j, (a, s, _n) in enumerate(mix):
            now = nows[(i + j) % len(nows)]
            d = fast.evaluate(a, s, now)
            assert dump(d) == dump(ref.evaluate(a, s, now))
            assert d.to_json() == BaseModel.model_dump_json(d) == d.model_dump_json()
    assert all(set(fz.now_full) <= set(nows) for fz in lanes(fast))
    assert any(set(fz.now_full) == set(nows) for fz in lanes(fast))  # a type that saw each twice: an entry each


def test_a_now_passed_again_is_found_by_its_identity_and_a_freed_one_never_lends_its_id(monkeypatch):
    """The first lookup of a fused function is the `now` object itself (`now_id`: its id
    -> (now, entry)): the slot holds its `now`, so no other object takes that id while the
    entry lives (`now_full` holds it too, but `now_id` is emptied first and filled last:
    a thread between the two must not find an entry under a freed `now`'s id). Here each
    `now` is made, used three times (an entry from the second), and dropped, with the
    caches emptied every few `now`s: CPython hands a freed object's address to the next
    one, and each decision still carries its own `now`."""
    monkeypatch.setattr(templates_mod, "NOW_CACHE_MAX", 3)
    ref = policy_engine.load(str(ROOT / "benchmarks/policies"), accelerate=False)
    fast = with_lanes(policy_engine.load(str(ROOT / "benchmarks/policies")))
    a, s, _ = next(m for m in make_mix(60) if m[1] is None and m[0]["type"] == "tag_ticket")
    fz = fast.accelerator.quick["tag_ticket"]
    for i in range(300):
        now = T0 + timedelta(seconds=i, microseconds=i % 2)
        for _ in range(3):
            d = fast.evaluate(a, s, now)
            assert d.evaluated_at == ref.evaluate(a, s, now).evaluated_at
        assert fz.now_id.get(id(now), (None,))[0] is now  # found by identity from the second call
        del now, d
    assert 0 < len(fz.now_id) <= 3


def test_threads_with_every_kind_of_now_agree_with_the_reference(monkeypatch):
    """8 threads on one engine, each mixing repeated `now`s, `now`s sharing a cache key,
    new ones and the clock, with the caches made tiny so they are emptied while the others
    read them: every decision is the reference gate's (the clock's decisions compared at
    the time they show)."""
    monkeypatch.setattr(templates_mod, "SEEN_MAX", 3)
    monkeypatch.setattr(templates_mod, "NOW_CACHE_MAX", 2)
    monkeypatch.setattr(templates_mod, "PER_NOW_MAX", 2)
    mix = [m for m in make_mix(80) if m[1] is None]
    ref = policy_engine.load(str(ROOT / "benchmarks/policies"), accelerate=False)
    engine = policy_engine.load(str(ROOT / "benchmarks/policies"))
    shared = [T0 + timedelta(seconds=s) for s in (0, 1, 60, 3600)]  # one microsecond: one key
    bad: list = []
    barrier = threading.Barrier(8)

    def work(k: int) -> None:
        rnd = random.Random(k)
        barrier.wait()
        for step in range(400):
            a, s, _n = mix[rnd.randrange(len(mix))]
            kind = rnd.randrange(4)
            if kind == 0:
                now = rnd.choice(shared)
            elif kind == 1:
                now = T0 + timedelta(microseconds=rnd.randrange(1, 5))  # repeated, other keys
            elif kind == 2:
                now = T0 + timedelta(seconds=k * 1000 + step, microseconds=17)  # new
            else:
                now = None  # the clock
            d = engine.evaluate(a, s, now)
            want = ref.evaluate(a, s, d.evaluated_at if now is None else now)
            if dump(d) != dump(want) or d.to_json() != BaseModel.model_dump_json(d):
                bad.append((k, step, kind))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad, bad[:5]
    assert any(fz.fn is not None for fz in lanes(engine))
