"""`Decision.to_json()` is pydantic's `model_dump_json()`, byte for byte, and so is
`Decision.model_dump_json()` itself; a require_approval decision's
deferred `action_digest` is the digest of the action as it was decided; `fmt_ts` is
`format_rfc3339` (issue 16, goals 1-3).

The fast lane builds every decision of one outcome of one action type from one template and
gives them a `DecisionJson` fields set: `to_json()` writes them from that template's JSON,
rendered once, with the varying fields (`action_id`, `action_digest`,
`reversibility.reversible_until`, `evaluated_at`) encoded alone. Every other decision, and
any decision whose fields are not its template's, is written by pydantic. The
digest of a require_approval decision is computed on first read, from a frozen copy of the
action (`engine.digests.PendingDigest`): later changes to the caller's dict must not reach it.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

import policy_engine
from policy_engine import construct
from policy_engine.engine import Engine, action_digest
from policy_engine.engine.digests import PendingDigest
from policy_engine.models import Decision, DecisionJson, Deferred
from policy_engine.testing import Runner, discover_suites, load_policies, load_suite
from policy_engine.timestamps import fmt_ts, format_rfc3339

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from depth import examples  # noqa: E402

from benchmarks.requests import make_mix  # noqa: E402

BENCH = ROOT / "benchmarks" / "policies"
MIX = make_mix(200)
# pydantic's own serializer: the reference (`Decision.model_dump_json()` with no arguments is
# `to_json()`, the template's fragments)
pydantic_json = BaseModel.model_dump_json


@pytest.fixture(scope="module")
def engines():
    return policy_engine.load(str(BENCH)), policy_engine.load(str(BENCH), accelerate=False)


def _raw(d: Decision) -> dict:
    from pydantic import BaseModel

    return BaseModel.__dict__["__dict__"].__get__(d)


def _same_json(d: Decision) -> str:
    """to_json() (first: on the deferred fields as the gate left them) and model_dump_json()
    of `d`: equal, or both refuse alike; then `model_dump(mode="json")`: pydantic's dict, in
    its order."""
    try:
        got = d.to_json()
    except Exception as e:  # noqa: BLE001 - pydantic refuses (a lone surrogate): so must to_json
        with pytest.raises(type(e)):
            pydantic_json(d)
        got = ""
    else:
        assert got == pydantic_json(d) == d.model_dump_json()
    assert _same_dump(d.model_dump(mode="json"), BaseModel.model_dump(d, mode="json"))
    assert _same_dump(d.model_dump(), BaseModel.model_dump(d))
    return got


def test_to_json_is_model_dump_json_on_the_benchmark_mix(engines):
    fast, ref = engines
    templated = at_now = 0
    for _round in range(5):  # fused gates built on the third evaluation, templates per now after
        for i, (a, s, n) in enumerate(MIX):
            for now in (n, None, n + timedelta(microseconds=i + 1), n.isoformat()):
                d = fast.evaluate(a, s, now)
                text = _same_json(d)
                fs = d.__pydantic_fields_set__
                templated += type(fs) is DecisionJson
                at_now += type(fs) is DecisionJson and fs.base is not None and len(fs.plan or ()) > 5
                if now is not None:
                    assert text == pydantic_json(ref.evaluate(a, s, now)) == ref.evaluate(a, s, now).to_json()
    assert templated > 2000  # the template path was taken (not every decision fell back to pydantic)
    assert at_now > 500  # and the per-`now` one (DecisionJson.at: the times written in)


def test_evaluate_json_is_model_dump_json_on_the_benchmark_mix(engines, monkeypatch):
    """`Engine.evaluate_json` (one call: the decision written without comparing its fields
    with its template again) gives exactly `evaluate(...).model_dump_json()`, on both
    engines, at every kind of `now`, and its fast path is the one taken."""
    fast, ref = engines
    fresh = []
    real = DecisionJson.render

    def render(self, dec, fresh_=False):
        text = real(self, dec, fresh_)
        fresh.append(fresh_ and text is not None)
        return text

    monkeypatch.setattr(DecisionJson, "render", render)
    for _round in range(5):
        for i, (a, s, n) in enumerate(MIX):
            for now in (n, n + timedelta(microseconds=i + 1), n.isoformat(), None):
                text = fast.evaluate_json(a, s, now)
                if now is None:  # (the clock's time: a decision of this action, read back)
                    assert Decision.model_validate_json(text).action_id == a.get("id")
                    continue
                assert text == ref.evaluate_json(a, s, now) == pydantic_json(fast.evaluate(a, s, now))
    assert sum(fresh) > 2000


def test_model_dump_json_without_arguments_is_written_from_the_template(engines, monkeypatch):
    """`model_dump_json()` with no arguments, the form a runtime logs, is `to_json()`: the
    template's fragments write it (not pydantic), the same bytes as pydantic's own
    serializer; with any argument pydantic writes it, as pydantic would."""
    fast, _ = engines
    for _ in range(4):
        for a, s, n in MIX:
            fast.evaluate(a, s, n)
    rendered = []
    real = DecisionJson.render

    def render(self, dec, fresh=False):
        text = real(self, dec, fresh)
        rendered.append(text is not None)
        return text

    monkeypatch.setattr(DecisionJson, "render", render)
    templated = 0
    for a, s, n in MIX:
        d = fast.evaluate(a, s, n)
        rendered.clear()
        text = d.model_dump_json()
        assert text == pydantic_json(d)
        if type(d.__pydantic_fields_set__) is DecisionJson:
            assert rendered == [True]  # one render, which wrote it
            templated += 1
        for kwargs in ({"indent": 2}, {"exclude": {"trace", "matched"}}, {"exclude_defaults": True},
                       {"include": {"effect", "action_digest"}}):
            rendered.clear()
            assert d.model_dump_json(**kwargs) == pydantic_json(d, **kwargs)
            assert rendered == []
    assert templated > 150


def _same_dump(got, want) -> bool:
    """Equal dumps, key for key in the same order at every level (`==` alone ignores the
    order of a dict's keys), with the same containers (a tuple where pydantic has one)."""
    if type(got) is not type(want):
        return False
    if type(got) is dict:
        return list(got) == list(want) and all(_same_dump(got[k], want[k]) for k in got)
    if type(got) in (list, tuple):
        return len(got) == len(want) and all(_same_dump(x, y) for x, y in zip(got, want))
    return got == want


def _scribble(dump) -> None:
    """Change every list and dict of a dump, at every level."""
    for v in list(dump.values()) if type(dump) is dict else list(dump):
        if type(v) in (dict, list, tuple):
            _scribble(v)
    if type(dump) is dict:
        dump["scribbled"] = True
    elif type(dump) is list:
        dump.append("scribbled")


@pytest.mark.parametrize("mode", ["json", "python"])
def test_model_dump_is_pydantic_s_dict_from_the_template(engines, monkeypatch, mode):
    """`model_dump(mode="json")` (the contract's form) and `model_dump()` of a fast-lane
    decision are built from its template's dump (`engine.accel.dumps`): pydantic's dict,
    key for key and in the same order, with its lists and tuples, at a fixed `now`, the
    clock's and a new one; a new copy on every call (a caller may change it); any other
    form, and a changed decision, dumped by pydantic."""
    from policy_engine import models

    fast, _ = engines
    for _ in range(4):
        for a, s, n in MIX:
            fast.evaluate(a, s, n)
    made = []
    real = models.DUMP_FROM_TEMPLATE

    def counted(fs, dec, m):
        out = real(fs, dec, m)
        made.append(out is not None)
        return out

    monkeypatch.setattr(models, "DUMP_FROM_TEMPLATE", counted)
    kw = {"mode": mode} if mode == "json" else {}
    for i, (a, s, n) in enumerate(MIX):
        for now in (n, None, n + timedelta(microseconds=i + 1)):
            d = fast.evaluate(a, s, now)
            got = d.model_dump(**kw)
            want = BaseModel.model_dump(d, mode=mode)
            assert _same_dump(got, want), (a, now)
            _scribble(got)  # a new copy each call: nothing of it is shared
            assert _same_dump(d.model_dump(mode=mode), want)
    assert sum(made) > 1000  # the template's path was taken (at most 1,200: 600 decisions, two dumps each)
    d = fast.evaluate(*MIX[0])
    made.clear()
    for kwargs in ({"mode": mode, "exclude": {"trace"}}, {"mode": mode, "by_alias": False}, {"include": {"effect"}}):
        assert _same_dump(d.model_dump(**kwargs), BaseModel.model_dump(d, **kwargs))
    changed = d.model_copy(update={"reason": "other"})
    assert _same_dump(changed.model_dump(**kw), BaseModel.model_dump(changed, mode=mode))
    assert made == []
    tampered = fast.evaluate(*MIX[0])
    _raw(tampered)["reason"] = "tampered"  # (no one should; the template check still sees it)
    assert tampered.model_dump(**kw)["reason"] == "tampered" and made == [False]


def test_a_dump_too_large_for_a_function_is_pydantic_s(monkeypatch):
    """A template whose dump's source would pass `dumps.MAX_SOURCE` gets no function
    (its compile would be a long pause, once): pydantic dumps its decisions, the same dict."""
    from policy_engine import models
    from policy_engine.engine.accel import dumps

    monkeypatch.setattr(dumps, "MAX_SOURCE", 100)
    fast = policy_engine.load(str(BENCH))  # (no template of it dumped yet)
    for _ in range(4):
        for a, s, n in MIX[:40]:
            fast.evaluate(a, s, n)
    made = []
    real = models.DUMP_FROM_TEMPLATE
    monkeypatch.setattr(models, "DUMP_FROM_TEMPLATE", lambda fs, dec, m: made.append(real(fs, dec, m)) or made[-1])
    for a, s, n in MIX[:40]:
        d = fast.evaluate(a, s, n)
        assert _same_dump(d.model_dump(mode="json"), BaseModel.model_dump(d, mode="json"))
    assert made and all(x is None for x in made)


def test_model_dump_from_template_names_the_action_as_decided(engines):
    fast, _ = engines
    a, s, n = _approval_case(fast)
    for _ in range(4):
        fast.evaluate(copy.deepcopy(a), s, n)
    action = copy.deepcopy(a)
    before = action_digest(action)
    d = fast.evaluate(action, s, n)
    assert type(d.__pydantic_fields_set__) is DecisionJson and _pending(_raw(d)["action_digest"])
    action["new"] = True
    assert d.model_dump(mode="json")["action_digest"] == before


def test_evaluate_json_builds_the_decision_when_its_fields_cannot_be_written(engines, monkeypatch):
    """Where the template's fragments cannot write a decision's fields (`render` says None),
    evaluate_json builds the Decision from them and pydantic writes it: the same bytes."""
    fast, ref = engines
    for _ in range(4):
        for a, s, n in MIX:
            fast.evaluate_json(a, s, n)
    monkeypatch.setattr(DecisionJson, "render", lambda self, dec, fresh=False: None)
    for a, s, n in MIX:
        assert fast.evaluate_json(a, s, n) == ref.evaluate(a, s, n).model_dump_json()


def test_evaluate_json_computes_a_digest_at_once_and_evaluate_defers_it(engines, monkeypatch):
    """In one call the digest is read at once, so the fused function computes it (no
    frozen copy made to be read back); `evaluate` still defers it to its first reader."""
    fast, _ = engines
    approvals = [(a, s, n) for a, s, n in MIX if fast.evaluate(a, s, n).effect == "require_approval"]
    for _ in range(4):
        for a, s, n in approvals:
            fast.evaluate_json(a, s, n)
    made = []
    real_init, real_resolve = PendingDigest.__init__, construct.SNAPSHOT_DIGEST

    def init(self, snap):
        made.append(snap)
        real_init(self, snap)

    def resolve(snap):  # a frozen copy stored as it is, resolved on first read
        made.append(snap)
        return real_resolve(snap)

    monkeypatch.setattr(PendingDigest, "__init__", init)
    monkeypatch.setattr(construct, "SNAPSHOT_DIGEST", resolve)
    texts = [fast.evaluate_json(a, s, n) for a, s, n in approvals]
    assert made == []
    decisions = [fast.evaluate(a, s, n) for a, s, n in approvals]
    assert all(type(d.__dict__["action_digest"]) is str for d in decisions)  # (each read once)
    assert len(made) == len(approvals)
    assert texts == [pydantic_json(d) for d in decisions]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pick=st.integers(0, len(MIX) - 1), changes=st.dictionaries(st.sampled_from(
    ["id", "amount", "body", "tags", "claims", "customer", "type", "workflow", "extra"]), st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                  st.floats(allow_nan=True, allow_infinity=True),
                  st.one_of(st.text(max_size=12), st.sampled_from(["\ud800", "a\udfff", "\x00\"\\", "\u2028"]))),
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
        max_leaves=12), max_size=3), state=st.sampled_from([None, {"status": "stopped", "stopped_by": "x"}, 7]))
def test_evaluate_json_on_random_and_bad_input(engines, pick, changes, state):
    fast, _ = engines
    a, _s, n = MIX[pick]
    action = {**a, **changes}
    for _ in range(4):  # lanes built, templates kept
        try:
            want = pydantic_json(fast.evaluate(action, state, n))
        except Exception as e:  # noqa: BLE001 - pydantic refuses (a lone surrogate): so must evaluate_json
            with pytest.raises(type(e)):
                fast.evaluate_json(action, state, n)
            return
        assert fast.evaluate_json(action, state, n) == want
        d = fast.evaluate(action, state, n)
        assert _same_dump(d.model_dump(mode="json"), BaseModel.model_dump(d, mode="json"))
        assert _same_dump(d.model_dump(), BaseModel.model_dump(d))


def test_to_json_on_every_shipped_fixture_case():
    seen: list[Decision] = []

    class Recording(Engine):
        __slots__ = ()

        def evaluate(self, action, workflow_state=None, now=None):
            d = super().evaluate(action, workflow_state, now)
            seen.append(d)
            return d

    def load(paths):
        loaded = load_policies(paths)
        if loaded.engine is None:
            return loaded
        engine = policy_engine.load(list(paths))
        object.__setattr__(engine, "__class__", Recording)
        return dataclasses.replace(loaded, engine=engine)

    suites = sorted(f for d in (ROOT / "policies", ROOT / "tests" / "suites" / "good") for f in discover_suites([d])[0])
    runner = Runner(loader=load)
    for _ in range(4):
        for f in suites:
            assert not runner.run_suite(load_suite(f)).error
    assert len(seen) > 100
    for d in seen:
        _same_json(d)
    assert any(type(d.__pydantic_fields_set__) is DecisionJson for d in seen)


_TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["\ud800", "a\udfff", "\x00\"\\", "\u2028"]))
_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), _TEXT)
_JSONISH = st.recursive(_SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(_TEXT, inner, max_size=4)), max_leaves=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pick=st.integers(0, len(MIX) - 1), changes=st.dictionaries(st.sampled_from(
    ["id", "amount", "body", "tags", "claims", "customer", "text", "role", "channel", "percent", "extra"]), _JSONISH,
    max_size=3), now=st.sampled_from([None, "fixed", "new"]), data=st.data())
def test_to_json_and_the_digest_on_random_actions(engines, pick, changes, now, data):
    fast, ref = engines
    a, s, n = MIX[pick]
    action = {**a, **changes}
    when = {None: None, "fixed": n, "new": n + timedelta(microseconds=data.draw(st.integers(1, 10**9)))}[now]
    for _ in range(4):  # lanes built, templates kept
        d = fast.evaluate(action, s, when)
    frozen = copy.deepcopy(action)
    want_digest = action_digest(frozen)
    for k in changes:  # the caller changes its dict afterwards: the decision's digest does not move
        if isinstance(action[k], list):
            action[k].append("changed")
        elif isinstance(action[k], dict):
            action[k]["changed"] = True
        else:
            action[k] = ["changed"]
    _same_json(d)
    if d.effect == "require_approval":
        assert d.action_digest == want_digest
    if when is not None:  # the reference path decides the same (the clock's time aside)
        assert ref.evaluate(frozen, s, when).model_dump() == d.model_dump()


def test_a_frozen_copy_pending_in_the_digest_is_written_from_the_fragments(engines):
    """A fused gate stores its frozen copy itself as the pending digest (a dict): `to_json`
    writes such a decision from its template's fragments (not by falling back to pydantic),
    the digest computed from the copy, the same bytes as `model_dump_json()`."""
    _, ref = engines
    fast = policy_engine.load(str(BENCH))  # (its lanes widened by no other test's inputs)
    written = 0
    for a, s, n in MIX:
        if ref.evaluate(a, s, n).effect != "require_approval":
            continue
        for _ in range(4):
            fast.evaluate(copy.deepcopy(a), s, n)
        d = fast.evaluate(copy.deepcopy(a), s, n)
        if type(_raw(d)["action_digest"]) is not dict:
            continue
        fs = d.__pydantic_fields_set__
        assert type(fs) is DecisionJson
        text = fs.render(d)
        assert text is not None and type(_raw(d)["action_digest"]) is str  # resolved, kept
        assert text == pydantic_json(d) == d.model_dump_json() == ref.evaluate(a, s, n).model_dump_json()
        written += 1
    assert written > 50


def _approval_case(engine):
    for a, s, n in MIX:
        if engine.evaluate(a, s, n).effect == "require_approval":
            return a, s, n
    raise AssertionError("no require_approval request in the mix")


def test_the_digest_names_the_action_as_decided_not_as_it_becomes(engines):
    fast, ref = engines
    a, s, n = _approval_case(fast)
    for engine in (fast, ref):
        for _ in range(4):
            engine.evaluate(copy.deepcopy(a), s, n)
        action = copy.deepcopy(a)
        before = action_digest(action)
        d = engine.evaluate(action, s, n)
        pending = _raw(d)["action_digest"]  # deferred: not computed yet (a fused gate stores its copy)
        assert type(pending) is dict or isinstance(pending, PendingDigest)
        for k, v in list(action.items()):  # change everything, nested values in place too
            if isinstance(v, list):
                v.append("more")
            elif isinstance(v, dict):
                v["more"] = 1
            elif k not in ("workflow", "type"):
                action[k] = "changed"
        action["new"] = True
        assert action_digest(action) != before
        assert d.action_digest == before
        assert f'"action_digest":"{before}"' in d.to_json()


def test_the_clock_and_a_new_now_are_rendered_when_read(engines):
    fast, ref = engines
    windowed = [m for m in MIX if m[1] is None and (r := fast.evaluate(*m).reversibility) is not None
                and r.window_seconds]
    assert windowed
    readers = [lambda d: d.to_json(), lambda d: d.model_dump_json(), lambda d: d.evaluated_at,
               lambda d: d.reversibility, lambda d: d.model_dump(), repr, copy.copy,
               lambda d: pickle.loads(pickle.dumps(d)), hash]
    fresh = iter(range(1, 10**6))  # a `now` no call has used yet
    for a, s, n in windowed[:20]:
        for _ in range(4):
            fast.evaluate(a, s, None)
        for fixed in (False, True):
            for read in readers:
                now = n + timedelta(seconds=next(fresh), microseconds=123) if fixed else None
                d = fast.evaluate(a, s, now)  # the clock's time, or a `now` seen once: deferred
                raw = _raw(d)
                assert isinstance(raw["evaluated_at"], Deferred)  # not rendered yet
                assert raw["reversibility"] is raw["evaluated_at"]  # (a windowed type: both at once)
                read(d)
                assert "pending" not in repr(d)
                assert type(_raw(d)["evaluated_at"]) is str
                when = datetime.fromisoformat(d.evaluated_at.replace("Z", "+00:00"))
                assert d.evaluated_at == fmt_ts(when)
                rev = d.reversibility
                assert rev.reversible_until == fmt_ts(when + timedelta(seconds=rev.window_seconds))
                if now is not None:
                    assert pydantic_json(d) == ref.evaluate(a, s, now).model_dump_json()
            _same_json(fast.evaluate(a, s, n - timedelta(seconds=next(fresh)) if fixed else None))  # to_json() first


def _pending(v) -> bool:
    """A digest not computed yet: a `Deferred`, or a fused gate's frozen copy itself."""
    return type(v) is dict or isinstance(v, Deferred)


def test_a_deferred_digest_never_shows(engines):
    fast, _ = engines
    a, s, n = _approval_case(fast)
    want = action_digest(a)
    readers = [
        lambda d: d.action_digest, lambda d: d.model_dump()["action_digest"],
        lambda d: d.model_dump(mode="json")["action_digest"], lambda d: d.__dict__["action_digest"],
        lambda d: vars(d)["action_digest"], lambda d: copy.copy(d).action_digest,
        lambda d: copy.deepcopy(d).action_digest, lambda d: pickle.loads(pickle.dumps(d)).action_digest,
        lambda d: d.model_copy(update={"reason": "x"}).action_digest, lambda d: dict(d)["action_digest"],
    ]
    for read in readers:
        d = fast.evaluate(a, s, n)
        assert _pending(_raw(d)["action_digest"])
        assert read(d) == want
        assert _raw(d)["action_digest"] == want  # resolved once, kept
    d = fast.evaluate(a, s, n)
    assert "pending" not in repr(d) and want in repr(d)
    d1, d2 = fast.evaluate(a, s, n), fast.evaluate(a, s, n)
    assert d1 == d2 and hash(d1) == hash(d2)
    d = fast.evaluate(a, s, n)
    assert Decision.model_validate(d.model_dump()) == d
    with pytest.raises(ValidationError):  # still frozen
        d.action_digest = "sha256:0"
    with pytest.raises(AttributeError):  # no class attribute, as for every field
        Decision.action_digest  # noqa: B018


def test_an_action_that_cannot_be_frozen_gets_its_digest_at_once(engines):
    fast, ref = engines
    a, s, n = _approval_case(fast)

    class Text(str):
        pass

    for extra, digest_is_none in ((Text("x"), False), (datetime(2026, 1, 1, tzinfo=UTC), True), ((1, 2), False)):
        action = {**a, "unread": extra}
        for engine in (fast, ref):
            d = engine.evaluate(action, s, n)
            assert d.effect == "require_approval"
            assert not _pending(_raw(d)["action_digest"]) or type(extra) is tuple
            assert d.action_digest == action_digest(action)
            assert (d.action_digest is None) is digest_is_none


def test_a_changed_decision_is_written_by_pydantic(engines):
    fast, _ = engines
    a, s, n = MIX[0]
    for _ in range(4):
        d = fast.evaluate(a, s, n)
    assert type(d.__pydantic_fields_set__) is DecisionJson
    for changed in (d.model_copy(update={"reason": "other"}), d.model_copy(update={"trace": ()}),
                    d.model_copy(update={"action_id": "a\u2028\"b\\"}), copy.copy(d), pickle.loads(pickle.dumps(d))):
        assert type(changed.__pydantic_fields_set__) is set  # a copy keeps no template
        assert changed.to_json() == pydantic_json(changed) == changed.model_dump_json()
    tampered = fast.evaluate(a, s, n)
    _raw(tampered)["reason"] = "tampered"  # (no one should; the template check still sees it)
    assert '"tampered"' in tampered.to_json() == pydantic_json(tampered) == tampered.model_dump_json()
    surrogate = fast.evaluate(a, s, n)
    _raw(surrogate)["action_id"] = "\ud800"
    _same_json(surrogate)


def test_ids_of_any_text_are_written_as_pydantic_writes_them(engines):
    fast, _ = engines
    a, s, n = MIX[0]
    for aid in ("", "plain", "quote\"back\\slash", "\x00\x1f\x7f", "\n\t\r\b\f", "é漢字🙂", "\u2028\u2029",
                "x" * 300, None):
        for _ in range(4):
            d = fast.evaluate({**a, "id": aid}, s, n)
        assert type(d.__pydantic_fields_set__) is DecisionJson
        _same_json(d)


@settings(max_examples=examples(300), deadline=None)
@given(t=st.datetimes(timezones=st.one_of(st.just(UTC), st.timezones(), st.just(timezone(timedelta(hours=-3)))),
                      min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
def test_fmt_ts_is_format_rfc3339(t):
    assert fmt_ts(t) == format_rfc3339(t)
    u = t.astimezone(UTC)
    assert fmt_ts(u) == format_rfc3339(u) == u.isoformat().replace("+00:00", "Z")


@settings(max_examples=examples(300), deadline=None)
@given(t=st.datetimes(timezones=st.one_of(st.just(UTC), st.timezones()), min_value=datetime(1, 1, 2),
                      max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)),
       seconds=st.one_of(st.integers(0, 10**6), st.integers(0, 400 * 366 * 86400)),
       micros=st.sampled_from([0, 0, 0, 1, 999_999]))
def test_the_two_renderings_of_a_decision_in_one_pass(t, seconds, micros):
    """`util.times` (the clock's and a new `now`'s renderings) is `(fmt_ts, reversibility)`,
    overflow past year 9999 included; `fmt_ts_pair` is two `fmt_ts`."""
    from types import SimpleNamespace

    from policy_engine.engine.util import reversibility, times
    from policy_engine.models import ReversibilityInfo
    from policy_engine.timestamps import fmt_ts_pair

    later = timedelta(seconds=seconds, microseconds=micros)
    u = t.astimezone(UTC)
    try:
        want = (fmt_ts(u), fmt_ts(u + later))
    except OverflowError:
        with pytest.raises(OverflowError):
            fmt_ts_pair(u, later)
    else:
        assert fmt_ts_pair(u, later) == want
    rev = ReversibilityInfo(klass="full", method="undo", window=f"{seconds}s", window_seconds=seconds)
    for ca in (SimpleNamespace(reversibility=rev, window_td=later), SimpleNamespace(reversibility=rev, window_td=None),
               SimpleNamespace(reversibility=None, window_td=later), None):
        ev, r = times(ca, u)  # type: ignore[arg-type]
        assert ev == fmt_ts(u)
        assert (r.model_dump() if r else r) == ((x := reversibility(ca, u)) and x.model_dump())  # type: ignore[arg-type]
