"""What the fused gate functions leave out of their generated code, and why that never
changes a decision (issue 16, goal 1): a macro's variable over a field the prologue proved
a list of strings is known to be a str (no type test per item), and a condition's
iteration budget is not counted when it cannot be exceeded (`cel.fuse._fold_budget`).
Each is checked against the reference path (`accelerate=False`), byte for byte."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from depth import examples
from engine_support import engine_from_texts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy_engine.cel.fuse import _fold_budget
from policy_engine.engine.accel import fused as fused_mod
from policy_engine.engine.accel import native

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)

POLICY = """roles [reviewer]
workflow "w" {
  version "1"
  owners { business "b" technical "t" }
  default deny
  action tag {
    allow fine when `action.n >= 0`
    deny star when `action.tags.exists(t, t.endsWith(":*"))`
    require_approval admin by 1 reviewer when `action.tags.exists(t, t.startsWith("admin:") || t == "root")`
    deny unread when `!action.tags.all(t, t.startsWith("read:")) && action.n > 3`
    deny one when `action.tags.exists_one(t, size(t) > 5)`
    deny picked when `size(action.tags.filter(t, t.contains("x"))) > 1`
    deny mapped when `"X" in action.tags.map(t, t.upperAscii())`
    deny paired when `action.tags.all(t, action.tags.all(u, u != t + "!")) && action.n == 6`
  }
}
"""

tags = st.one_of(
    st.lists(st.sampled_from(["read:a", "admin:b", "x:*", "root", "xx", "x", "abcdefg", "x!", "\ud800", "é"]),
             max_size=6),
    st.lists(st.one_of(st.integers(0, 2), st.just("x"), st.none()), max_size=3),  # not strings: another shape
    st.just(["x"] * 1001),  # past the fast path's list length: the closures decide
    st.just([f"t{i}" for i in range(400)]),  # the nested macro passes the iteration budget
)
action = st.fixed_dictionaries({"workflow": st.just("w"), "type": st.just("tag"), "id": st.just("a1"),
                                "tags": tags, "n": st.integers(0, 6)})


def dump(d) -> str:
    return json.dumps(d.model_dump(mode="json"), sort_keys=True)


def test_a_macro_over_a_list_of_strings_has_no_type_test_per_item_and_no_needless_budget(monkeypatch):
    # the generated lines of the prologue (the native check, which replaces them where the
    # extension is built, is held to them by tests/test_native_speedups.py)
    monkeypatch.setattr(native, "ENABLED", False)
    fast = engine_from_texts({"p.policy": POLICY})
    a = {"workflow": "w", "type": "tag", "id": "a1", "tags": ["read:a", "x"], "n": 1}
    for _ in range(fused_mod.FUSE_AFTER + 1):
        fast.evaluate(a, None, T0)
    fz = fast.accelerator.gate("w", "tag")
    src = fz.source
    assert src is not None and "_join(" in src  # the field's shape: a list of strings
    # no per-item type test in the loops over it (each was `... if type(_s1) is str else _fb()`)
    for test in ("if _s1.endswith(':*'):", "if not _s1.startswith('read:'):", "if (len(_s1) > 5):",
                 "if ('x' in _s1):"):
        assert test in src
    # one budget count is left: the nested macro's (its inner loop runs once per item)
    assert src.count("_it = 0") == 1 and src.count("_it += ") == 2


@given(batch=st.lists(action, min_size=1, max_size=8))
@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_macros_over_lists_decide_like_the_reference_path(batch):
    slow = engine_from_texts({"p.policy": POLICY}, accelerate=False)
    fast = engine_from_texts({"p.policy": POLICY})
    for a in batch + batch + batch:  # built on the third, widened on a new shape
        assert dump(fast.evaluate(a, None, T0)) == dump(slow.evaluate(a, None, T0))


def test_the_budget_nested_in_a_loop_still_fails_closed_on_the_fast_path():
    slow = engine_from_texts({"p.policy": POLICY}, accelerate=False)
    fast = engine_from_texts({"p.policy": POLICY})
    small = {"workflow": "w", "type": "tag", "id": "a1", "tags": ["a", "b"], "n": 1}
    for _ in range(fused_mod.FUSE_AFTER + 1):
        fast.evaluate(small, None, T0)
    big = {**small, "tags": [f"t{i}" for i in range(400)]}  # 400 x 400 iterations > 100,000
    d = fast.evaluate(big, None, T0)
    assert d.effect == "deny" and any(e.rule == "paired" for e in d.errors)
    assert dump(d) == dump(slow.evaluate(big, None, T0))


def _macro(seq: str, ind: int = 0) -> list[tuple[int, str]]:
    return [(ind, f"if len({seq}) > 1000: _fb()"), (ind, f"_it += len({seq})"), (ind, "if _it > 100000: _fb()"),
            (ind, "_t1 = False"), (ind, f"for _s1 in {seq}:"), (ind + 1, "if _s1: _t1 = True")]


def test_fold_budget_drops_only_counts_that_cannot_pass_the_budget():
    top = _macro("_f0") + _macro("_f1")
    folded = _fold_budget(top)
    assert not any("_it" in t for _, t in folded)
    assert [t for _, t in folded if "_it" not in t] == [t for _, t in top if "_it" not in t]
    # a macro inside another's loop runs once per item: kept, and the whole condition's count
    nested = _macro("_f0") + _macro("_f1", 1)
    assert _fold_budget(nested) == nested
    # after the loop (back at its indentation) a macro runs once again: foldable
    assert not any("_it" in t for _, t in _fold_budget(_macro("_f0") + [(0, "_x = 1")] + _macro("_f1")))
    # a budget smaller than what the macros may add: kept
    small = [(i, t.replace("100000", "1500")) for i, t in top]
    assert _fold_budget(small) == small
    # `_it` read any other way: kept
    other = top + [(0, "_y = _it")]
    assert _fold_budget(other) == other
