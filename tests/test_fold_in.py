"""`x in [constant strings]` with `x` known when the fused function is built (the action's
type, which every caller matched; a string literal) is folded to its value: no test left
for the call to make. The decisions are the reference's."""

from __future__ import annotations

from datetime import UTC, datetime

from engine_support import engine_from_texts

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)

POLICY = """roles [reviewer]
workflow "w" {
  version "1"
  owners { business "b" technical "t" }
  default deny
  action pay {
    allow small when `action.n <= 10 && "pay" in ["pay", "refund"]`
    deny never when `"x" in ["a", "b"] || action.n > 1000`
  }
  action refund { allow tiny when `action.n <= 1` }
  action other { allow any when `action.n >= 0` }
  stop mass {
    when `action.type in ["pay", "refund"] && action.n > 100`
    severity low
    owner "o"
    resume when { ok: `evidence.ok` }
  }
}
"""


def test_a_known_type_in_a_list_is_folded_and_decides_like_the_reference():
    fast = engine_from_texts({"p.policy": POLICY})
    slow = engine_from_texts({"p.policy": POLICY}, accelerate=False)
    cases = [{"workflow": "w", "type": t, "id": "a", "n": n} for t in ("pay", "refund", "other")
             for n in (0, 5, 50, 500, 5000, "x")]
    for _ in range(4):
        for a in cases:
            assert fast.evaluate(a, None, T0).model_dump_json() == slow.evaluate(a, None, T0).model_dump_json()
    assert fast.evaluate({"workflow": "w", "type": "pay", "id": "a", "n": 500}, None, T0).effect == "stop"
    src = fast.accelerator.gate("w", "pay").source
    assert src is not None and "'pay' in _k" not in src and "'x' in _k" not in src  # folded


def test_a_condition_reading_the_type_and_present_fields_runs_without_its_own_try():
    """The action's type is present in every call (the caller matched it): a condition
    reading only it and fields the prologue proved present is not isolated (`_may_lack`)."""
    fast = engine_from_texts({"p.policy": POLICY})
    for n in (1, 2, 3, 4):
        fast.evaluate({"workflow": "w", "type": "pay", "id": "a", "n": n}, None, T0)
    src = fast.accelerator.gate("w", "pay").source
    body = src[src.index("_m = 0"):src.index("_aid = ")]
    assert "try:" not in body, body


CONSTS = """roles [reviewer]
workflow "c" {
  version "1"
  owners { business "b" technical "t" }
  default deny
  const words = ["lawsuit", "refund", "urgent"]
  const limits = [3, 10, 100]
  const rates = [0.5, 1.5]
  const flags = [true, false]
  const mixed = [1, "a", 2.5]
  action post {
    deny banned when `policy.words.exists(w, action.body.contains(w))`
    require_approval big by 1 reviewer when `policy.limits.exists_one(l, action.n > l)`
    allow ok when `policy.rates.all(r, action.x < r * 10.0) && policy.flags.filter(f, f).size() == 1`
    deny odd when `policy.mixed.exists(m, m == action.n) || policy.limits.map(l, l * 2).exists(v, v == action.n)`
  }
}
"""


def test_a_macro_over_a_constant_list_reads_the_constant_and_decides_like_the_reference():
    fast = engine_from_texts({"p.policy": CONSTS})
    slow = engine_from_texts({"p.policy": CONSTS}, accelerate=False)
    cases = [{"workflow": "c", "type": "post", "id": "a", "body": b, "n": n, "x": x}
             for b in ("hello", "an urgent refund", "") for n in (0, 1, 5, 20, 200, "1") for x in (0.1, 4.9, 100.0)]
    for _ in range(4):
        for a in cases:
            assert fast.evaluate(a, None, T0).model_dump_json() == slow.evaluate(a, None, T0).model_dump_json()
    src = fast.accelerator.gate("c", "post").source
    assert src is not None and "list(_k" not in src  # no fresh copy of a constant per call
