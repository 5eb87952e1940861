"""An action type that declares its fields (`fields { ... }`) has them checked inside its
fused gate function (`engine.accel.declared`), where the generic `value_problem` walk
cost two to three times the rest of the decision. Two things must hold:
  - passing the unrolled check proves `value_problem` passes (so the lane can never decide
    an action the full path refuses as an input error), and the plain actions that
    `value_problem` passes do pass it (so the lane is taken);
  - every decision equals the reference gate's, byte for byte, whatever the actions.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from depth import examples
from engine_support import engine_from_texts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy_engine.cel import fuse
from policy_engine.engine import inputs
from policy_engine.engine.accel import declared
from policy_engine.engine.accel import shapes as sh
from policy_engine.fieldtypes import FField, FType, value_problem

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


class S(str):
    pass


# ----------------------------------------------------------------------------- types and values
SCALARS = ["string", "int", "double", "bool", "any", "timestamp", "duration"]


def ftypes():
    scalar = st.sampled_from(SCALARS).map(FType)

    def grow(inner):
        field = st.builds(FField, st.sampled_from(["a", "b", "c"]), inner, st.booleans())
        obj = st.lists(field, min_size=0, max_size=3, unique_by=lambda f: f.name).map(
            lambda fs: FType("object", fields=tuple(fs)))
        return st.one_of(obj, inner.map(lambda t: FType("list", t)), inner.map(lambda t: FType("map", t)),
                         st.just(FType("list")), st.just(FType("map")))

    return st.recursive(scalar, grow, max_leaves=6)


ODD = st.sampled_from([None, "x", S("x"), 1, 1.5, True, [], {}, (1,), {1: 1}, datetime(2026, 1, 1),
                       datetime(2026, 1, 1, tzinfo=UTC), timedelta(seconds=1), b"x", float("nan")])


@st.composite
def value_of(draw, ft: FType, odd: float = 0.1):
    """A value fitting `ft`, now and then something else (at any depth)."""
    if draw(st.floats(0, 1)) < odd:
        return draw(ODD)
    k = ft.kind
    if k == "string":
        return draw(st.sampled_from(["", "s", "é"]))
    if k == "int":
        return draw(st.integers(-3, 3))
    if k == "double":
        return draw(st.one_of(st.floats(-5, 5), st.integers(-3, 3)))
    if k == "bool":
        return draw(st.booleans())
    if k == "timestamp":
        return datetime(2026, 1, 1, tzinfo=UTC)
    if k == "duration":
        return timedelta(seconds=draw(st.integers(0, 9)))
    if k == "any":
        return draw(ODD)
    if k == "list":
        return [draw(value_of(ft.item or FType("any"), odd)) for _ in range(draw(st.integers(0, 3)))]
    if k == "map":
        return {draw(st.sampled_from(["p", "q"])): draw(value_of(ft.item or FType("any"), odd))
                for _ in range(draw(st.integers(0, 2)))}
    out = {}
    for f in ft.fields or ():
        if f.optional and draw(st.booleans()):
            continue
        out[f.name] = draw(value_of(f.type, odd))
    if draw(st.floats(0, 1)) < 0.1:
        out["extra"] = 1  # undeclared: allowed
    return out


def _plain(v) -> bool:
    """Only dicts and lists as containers (what the unrolled check takes; a tuple or another
    Mapping falls back, decided by the reference)."""
    if type(v) is dict:
        return all(_plain(x) for x in v.values())
    if type(v) is list:
        return all(_plain(x) for x in v)
    return type(v) is not tuple


def _checker(t: FType, shapes=None, reads=None):
    keys = tuple(sorted(shapes)) if shapes else None
    prologue, ns, fields, known = sh.lane_prologue(keys, (), shapes or {}) if shapes else ([], {"_MISS": sh.MISSING},
                                                                                          {}, {})
    lines, ns_d = declared.declared_lines(t, shapes, keys)
    fn, src = fuse([], ("action", "workflow", "now", "policy"), prologue + lines, {**ns, **ns_d}, fields, known,
                   dicts=("action",))
    assert fn is not None, src
    return fn, src


def _passes(fn, action) -> bool:
    try:
        fn(action, None, None, None)
    except Exception:  # noqa: BLE001 - falls back: the reference decides
        return False
    return True


@given(data=st.data(), fields=st.lists(st.builds(FField, st.sampled_from(["a", "b", "c", "d"]), ftypes(),
                                                 st.booleans()), max_size=4, unique_by=lambda f: f.name))
@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_unrolled_check_is_value_problem(data, fields):
    t = FType("object", fields=tuple(fields))
    fn, src = _checker(t)
    for _ in range(8):
        action = data.draw(value_of(t, odd=data.draw(st.sampled_from([0.0, 0.05, 0.3]))))
        exact = value_problem(t, action, "action") is None
        lane = _passes(fn, action)
        if lane:
            assert exact, (src, action)  # sound: never passes what value_problem refuses
        elif exact:
            assert not _plain(action), (src, action)  # complete for plain data


@given(data=st.data(), fields=st.lists(st.builds(FField, st.sampled_from(["a", "b", "c", "d"]), ftypes(),
                                                 st.booleans()), max_size=4, unique_by=lambda f: f.name))
@settings(max_examples=examples(120), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fields_the_prologue_proved_are_not_tested_again_and_still_proven(data, fields):
    """With the shapes of a few actions seen (the prologue then proves some fields), passing
    the prologue and the declared lines still proves `value_problem` passes."""
    t = FType("object", fields=tuple(fields))
    seen = [v for v in (data.draw(value_of(t, odd=0.05)) for _ in range(3)) if type(v) is dict]
    keys = tuple(f.name for f in fields)
    shapes: dict = {}
    for s in seen:
        for k, tag in sh.shape_of(s, keys).items():
            shapes[k] = sh.widen(shapes.get(k), tag)
    if not shapes:
        return
    fn, src = _checker(t, shapes, tuple(sorted(shapes)))
    for action in seen + [data.draw(value_of(t, odd=0.2)) for _ in range(6)]:
        if type(action) is dict and _passes(fn, action):
            assert value_problem(t, action, "action") is None, (src, action)
            assert inputs.check_fields(action, tuple(sorted(shapes))) is None


def test_a_proven_field_is_not_fetched_again():
    t = FType("object", fields=(FField("amount", FType("double")), FField("note", FType("string"), True),
                                FField("order", FType("object", fields=(FField("total", FType("double")),))),
                                FField("tags", FType("list", FType("string")))))
    shapes = {"amount": frozenset({float}), "order": frozenset({sh._tag({"total": 1.0})}),
              "tags": frozenset({sh._LIST_STR})}
    lines, _ = declared.declared_lines(t, shapes, tuple(shapes))
    text = "\n".join(lines)
    assert "'amount'" not in text and "'order'" not in text and "'tags'" not in text
    assert "'note'" in text  # not read: tested
    lines, _ = declared.declared_lines(t, {"amount": frozenset({str})}, ("amount",))
    assert "'amount'" in "\n".join(lines)  # a shape that does not fit: tested (and it falls back)


# ----------------------------------------------------------------------------- decisions
POLICY = """roles [reviewer]
workflow "w" {
  version "1"
  owners { business "b" technical "t" }
  default deny
  action pay {
    reversible full via "p.undo" within 1h
    fields {
      amount: double
      reason: string
      note?: string
      lines: list {
        sku: string
        qty: int
      }
      order: {
        total: double
        id?: string
      }
      meta?: map<string, int>
    }
    deny too_big when `action.amount > 5000.0`
    require_approval big by 1 reviewer when `action.amount > 100.0`
    allow small when `action.amount <= 100.0 && action.order.total >= action.amount`
    require_approval many by 1 reviewer when `action.lines.exists(l, l.qty > 5)`
  }
  stop s {
    when `action.type == "pay" && action.reason == "fraud"`
    severity low
    owner "o"
    resume when { ok: `evidence.ok` }
  }
}
"""

PAY = FType("object", fields=(
    FField("amount", FType("double")), FField("reason", FType("string")), FField("note", FType("string"), True),
    FField("lines", FType("list", FType("object", fields=(FField("sku", FType("string")),
                                                          FField("qty", FType("int")))))),
    FField("order", FType("object", fields=(FField("total", FType("double")), FField("id", FType("string"), True)))),
    FField("meta", FType("map", FType("int")), True)))


@st.composite
def pay(draw):
    a = draw(value_of(PAY, odd=draw(st.sampled_from([0.0, 0.0, 0.05, 0.2]))))
    if type(a) is not dict:
        a = {}
    a.update({"workflow": "w", "type": "pay", "id": draw(st.sampled_from(["a1", "a2"]))})
    if draw(st.booleans()) and type(a.get("reason")) is str:
        a["reason"] = draw(st.sampled_from(["fraud", "ok"]))
    return a


@given(batch=st.lists(pay(), min_size=1, max_size=20))
@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_actions_decide_like_the_full_path(batch):
    slow = engine_from_texts({"p.policy": POLICY}, accelerate=False)
    fast = engine_from_texts({"p.policy": POLICY})
    for action in batch + batch + batch:
        for now in (T0, None):
            d = fast.evaluate(action, None, now)
            if now is None:  # (the clock: compare all but the time fields)
                ref = slow.evaluate(action, None, datetime.fromisoformat(d.evaluated_at))
                assert d.model_dump(exclude={"reversibility"}) == ref.model_dump(exclude={"reversibility"})
                continue
            ref = slow.evaluate(action, None, now)
            assert d.model_dump_json() == ref.model_dump_json()
            assert fast.evaluate_json(action, None, now) == ref.model_dump_json()


def test_a_declared_type_takes_the_quick_path_and_value_problem_is_not_called(monkeypatch):
    fast = engine_from_texts({"p.policy": POLICY})
    slow = engine_from_texts({"p.policy": POLICY}, accelerate=False)
    good = {"workflow": "w", "type": "pay", "id": "a1", "amount": 50.0, "reason": "ok",
            "lines": [{"sku": "x", "qty": 1}], "order": {"total": 80.0}}
    for _ in range(4):
        assert fast.evaluate(good, None, T0).model_dump_json() == slow.evaluate(good, None, T0).model_dump_json()
    assert "pay" in fast.accelerator.quick
    calls = []
    real = inputs.value_problem

    def counted(*a):
        calls.append(a)
        return real(*a)

    monkeypatch.setattr(inputs, "value_problem", counted)
    d = fast.evaluate(good, None, T0)
    assert d.effect == "allow" and calls == []  # decided by the fused function alone
    bad = {**good, "lines": [{"sku": "x", "qty": "1"}]}
    d = fast.evaluate(bad, None, T0)
    assert d.effect == "deny" and d.errors[0].message == "`action.lines[0].qty` must be int, not string"
    assert calls  # the fallback: the reference's check says why
    assert d.model_dump_json() == slow.evaluate(bad, None, T0).model_dump_json()


def test_the_switch_restores_the_generic_check(monkeypatch):
    monkeypatch.setattr(declared, "ENABLED", False)
    fast = engine_from_texts({"p.policy": POLICY})
    assert "pay" not in fast.accelerator.quick
    good = {"workflow": "w", "type": "pay", "id": "a1", "amount": 50.0, "reason": "ok", "lines": [],
            "order": {"total": 80.0}}
    for _ in range(4):
        assert fast.evaluate(good, None, T0).effect == "allow"
    assert "_d0" not in (fast.accelerator.gate("w", "pay").source or "")


@pytest.mark.parametrize("kind, good, bad", [
    ("timestamp", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1)),
    ("duration", timedelta(seconds=1), 1),
    ("double", 1, True),
    ("int", 1, 1.0),
])
def test_scalar_kinds_as_value_problem_has_them(kind, good, bad):
    t = FType("object", fields=(FField("v", FType(kind)),))
    fn, _ = _checker(t)
    assert _passes(fn, {"v": good}) and value_problem(t, {"v": good}, "action") is None
    assert not _passes(fn, {"v": bad}) and value_problem(t, {"v": bad}, "action") is not None


@pytest.mark.parametrize("ft, good, bad", [
    (FType("map", FType("int")), {"k": 1}, {1: 1}),
    (FType("map", FType("any")), {"k": None}, {S("k"): 1}),
    (FType("map"), {1: 1}, []),  # a map of no declared item: its keys are not checked
    (FType("list", FType("string")), ["a"], ["a", 1]),
    (FType("list"), [1, "a"], {}),
    (FType("object", fields=(FField("x", FType("int"), True),)), {}, {"x": None}),
    (FType("object", fields=(FField("x", FType("int")),)), {"x": 1, "y": "extra"}, {"y": 1}),
])
def test_container_kinds_as_value_problem_has_them(ft, good, bad):
    t = FType("object", fields=(FField("v", ft),))
    fn, _ = _checker(t)
    assert _passes(fn, {"v": good}) and value_problem(t, {"v": good}, "action") is None
    assert not _passes(fn, {"v": bad}) and value_problem(t, {"v": bad}, "action") is not None
