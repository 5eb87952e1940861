"""Declared fields (`fields { ... }`, `evidence { ... }`): the checker type-checks the
conditions that read them, and at run time an input of the wrong shape is an input
error that fails closed, the same on the reference path and the accelerated one."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

import policy_engine
from policy_engine.cel.typecheck import ActionVar, typecheck
from policy_engine.fieldtypes import FField, FType, value_problem
from policy_engine.language.fmt import format_text
from policy_engine.language.loader import load_text

# a timezone.utc datetime: the accelerated gate's own fast lane takes only those (a string
# goes to the reference gate, with the fused gate as its hook)
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)

POLICY = '''
roles [reviewer]

workflow "refunds" {
  version "1.0.0"
  owners {
    business "B"
    technical "T"
  }

  action issue_refund {
    system "payments"
    reversible full via "payments.reverse"
    fields {
      amount: double
      reason: string
      note?: string
      tags: list<string>
      order: {
        total: double
      }
    }
    deny too_big when `action.amount > 5000.0`
    require_approval by 1 reviewer when `action.amount > 100.0`
    allow small when `action.amount <= 100.0 && action.order.total >= action.amount`
  }

  action untyped {
    system "crm"
    reversible full via "crm.undo"
    allow when `action.whatever == 1`
  }

  stop bad_reason {
    when `action.type == "issue_refund" && action.reason == "fraud"`
    severity high
    owner "B"
    evidence {
      fixed: bool
      reviewed: list {
        ok: bool
      }
    }
    resume when {
      fixed: `evidence.fixed && evidence.reviewed.all(r, r.ok)`
    }
  }
}
'''

GOOD = {"workflow": "refunds", "type": "issue_refund", "id": "r-1", "amount": 80.0, "reason": "damaged",
        "tags": ["a"], "order": {"total": 200.0}}


@pytest.fixture(scope="module")
def engines(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("fields") / "refunds.policy"
    path.write_text(POLICY, encoding="utf-8")
    return {"reference": policy_engine.load(path, accelerate=False), "accelerated": policy_engine.load(path)}


def codes(text: str) -> list[tuple[str, int, int, str | None]]:
    res = load_text(text, "x.policy")
    return [(d.code, d.span.line, d.span.col, d.help) for d in res.diagnostics]


# ------------------------------------------------------------------ check time
def test_policy_checks_clean() -> None:
    assert codes(POLICY) == []


def test_misspelt_field_is_an_error_with_did_you_mean_at_the_field() -> None:
    text = POLICY.replace("action.amount <= 100.0 &&", "action.amout <= 100.0 &&")
    line = text.splitlines().index(next(ln for ln in text.splitlines() if "action.amout" in ln)) + 1
    col = next(ln for ln in text.splitlines() if "action.amout" in ln).index("amout") + 1
    assert codes(text) == [("E115", line, col, "did you mean `amount`?")]


def test_misspelt_nested_field_and_evidence_field() -> None:
    text = POLICY.replace("action.order.total", "action.order.totl").replace("evidence.fixed &&", "evidence.fixd &&")
    got = codes(text)
    assert [c[0] for c in got] == ["E115", "E115"]
    assert [c[3] for c in got] == ["did you mean `total`?", "did you mean `fixed`?"]


def test_type_mismatch_is_located_at_the_operand() -> None:
    text = POLICY.replace("action.amount > 5000.0", 'action.amount > "5000"')
    ln = next(i for i, line in enumerate(text.splitlines(), 1) if '"5000"' in line)
    col = text.splitlines()[ln - 1].index('"5000"') + 1
    (d,) = load_text(text, "x.policy").diagnostics
    assert (d.code, d.span.line, d.span.col, d.span.end_col - d.span.col) == ("E116", ln, col, len('"5000"'))
    assert d.message == "cannot compare double with string (`>`)"


@pytest.mark.parametrize("cond, kind", [
    ('action.reason in [1, 2]', "mismatch"),
    ("action.tags.exists(t, t > 3)", "mismatch"),
    ("size(action.amount) > 1", "mismatch"),
    ("action.amount + action.reason > 1.0", "mismatch"),
    ("action.reason.startsWith(\"x\") && action.amount.startsWith(\"y\")", "mismatch"),
    ("!action.amount", "mismatch"),
])
def test_mismatches(cond: str, kind: str) -> None:
    text = POLICY.replace("action.amount > 5000.0", cond)
    assert [c[0] for c in codes(text)] == ["E116"], cond


def test_without_declarations_nothing_is_checked() -> None:
    # `untyped` declares no fields: `action.whatever` is read as today
    assert "action.whatever" in POLICY and codes(POLICY) == []
    text = POLICY.replace("    fields {\n      amount: double", "    fields_removed {\n      amount: double")
    assert codes(text)  # (sanity: the block is what makes the difference)
    no_fields = POLICY.split("    fields {")[0] + "    deny too_big" + POLICY.split("    deny too_big", 1)[1]
    assert codes(no_fields.replace("action.amount <= 100.0", "action.amout <= 100.0")) == []


def test_bad_field_types_are_refused() -> None:
    got = codes(POLICY.replace("amount: double", "amount: float").replace("tags: list<string>", "tags: list"))
    assert [(c[0], c[3]) for c in got][:2] == [("E117", "did you mean `double`?"), ("E117", "write `list<string>`")]
    got = codes(POLICY.replace("tags: list<string>", "tags: map<int, string>"))
    assert [c[0] for c in got] == ["E117"]
    got = codes(POLICY.replace("      note?: string\n", "      note?: string\n      note: int\n"))
    assert [c[0] for c in got] == ["E120"]


def test_type_guard_and_has_narrow_reads() -> None:
    refund = FType("object", fields=(FField("amount", FType("double")), FField("note", FType("string"), True)))
    pts = FType("object", fields=(FField("points", FType("int")),))
    env = {"action": ActionVar({"issue_refund": refund, "award": pts})}
    assert [f.kind for f in typecheck("action.amount > 1.0", env)] == ["unguarded"]
    assert typecheck('action.type == "issue_refund" && action.amount > 1.0', env) == []
    assert typecheck('action.type in ["issue_refund"] ? action.amount > 1.0 : false', env) == []
    assert typecheck("has(action.amount) && action.amount > 1.0", env) == []
    assert typecheck('action.type == "issue_refund" && (!has(action.note) || action.note == "x")', env) == []
    assert [f.kind for f in typecheck('action.type == "award" && action.amount > 1.0', env)] == ["unknown_field"]
    assert [f.kind for f in typecheck('action.type == "issue_refund" && action.note == "x"', env)] == ["optional"]


# ------------------------------------------------------------------ fmt
def test_fmt_is_idempotent_and_keeps_comments() -> None:
    messy = POLICY.replace("      amount: double\n", "amount:double # the amount\n").replace(
        "      order: {\n        total: double\n      }", "order:{total:double}")
    out = format_text(messy)
    assert format_text(out) == out
    assert "      amount: double  # the amount\n" in out
    assert "      order: {\n        total: double\n      }\n" in out
    assert load_text(out, "x").policy_set == load_text(POLICY, "x").policy_set


def test_hash_unchanged_for_policies_without_declarations() -> None:
    plain = POLICY.split("    fields {")[0] + "    deny too_big" + POLICY.split("    deny too_big", 1)[1]
    plain = plain.split("    evidence {")[0] + "    resume when" + plain.split("    resume when", 1)[1]
    a = load_text(plain, "x").policy_set.content_hash
    b = load_text(POLICY, "x").policy_set.content_hash
    assert a != b  # the declarations are part of what the policy decides
    # the refunds library's hash covered its declarations (and nothing else changed): see test_policies


# ------------------------------------------------------------------ run time
BAD = [
    ({"amount": "80"}, "`action.amount` must be double, not string"),
    ({"amount": True}, "`action.amount` must be double, not bool"),
    ({"order": {"total": "1"}}, "`action.order.total` must be double, not string"),
    ({"order": []}, "`action.order` must be an object, not list"),
    ({"tags": ["a", 3]}, "`action.tags[1]` must be string, not int"),
    ({"note": None}, "`action.note` must be string, not null"),
]


@pytest.mark.parametrize("mode", ["reference", "accelerated"])
@pytest.mark.parametrize("patch, message", BAD, ids=[m for _, m in BAD])
def test_wrong_type_fails_closed_on_every_path(engines, mode, patch, message) -> None:
    engine = engines[mode]
    for now in (NOW, None, "2026-11-24T10:00:00Z"):  # each way in (the fast lane takes datetimes and None)
        for _ in range(5):  # the accelerated gate is built on the third evaluation
            assert engine.evaluate(GOOD, now=now).effect == "allow"
        assert engine.evaluate({**GOOD, **patch}, now=now).effect == "deny"
    d = engine.evaluate({**GOOD, **patch}, now=NOW)
    assert d.effect == "deny" and d.deciding.kind == "error"
    assert [(e.kind, e.message) for e in d.errors] == [("input", message)]
    assert engine.evaluate(GOOD, now=NOW).effect == "allow"
    # the same answer from both paths, byte for byte
    other = engines["reference" if mode == "accelerated" else "accelerated"]
    assert other.evaluate({**GOOD, **patch}, now=NOW).model_dump() == d.model_dump()


@pytest.mark.parametrize("mode", ["reference", "accelerated"])
def test_missing_required_field_fails_closed(engines, mode) -> None:
    action = {k: v for k, v in GOOD.items() if k != "reason"}
    d = engines[mode].evaluate(action, now=NOW)
    assert d.effect == "deny"
    assert d.errors[0].message == "`action.reason` is missing (declared `reason: string`)"


@pytest.mark.parametrize("mode", ["reference", "accelerated"])
def test_lenient_where_json_is(engines, mode) -> None:
    engine = engines[mode]
    assert engine.evaluate({**GOOD, "amount": 80}, now=NOW).effect == "allow"  # an int is a double
    undeclared = {**GOOD, "extra": object.__class__.__name__}
    assert engine.evaluate(undeclared, now=NOW).effect == "allow"  # undeclared: ignored
    assert engine.evaluate({**GOOD, "note": "n"}, now=NOW).effect == "allow"  # optional, given
    assert engine.evaluate({"workflow": "refunds", "type": "untyped", "whatever": 1}, now=NOW).effect == "allow"


def test_stopped_repair_path_checks_too(tmp_path: Path) -> None:
    text = POLICY.replace('    system "payments"\n', '    system "payments"\n    runs_while_stopped\n', 1)
    path = tmp_path / "p.policy"
    path.write_text(text, encoding="utf-8")
    for accelerate in (False, True):
        engine = policy_engine.load(path, accelerate=accelerate)
        state = {"status": "stopped", "stopped_by": "bad_reason"}
        assert engine.evaluate(GOOD, state, now=NOW).effect == "allow"
        d = engine.evaluate({**GOOD, "amount": "x"}, state, now=NOW)
        assert d.effect == "deny" and d.errors[0].kind == "input"


@pytest.mark.parametrize("mode", ["reference", "accelerated"])
def test_evidence_of_the_wrong_shape_is_refused(engines, mode) -> None:
    engine = engines[mode]
    ok = {"fixed": True, "reviewed": [{"ok": True}]}
    assert engine.may_resume("refunds", "bad_reason", ok, now=NOW).allowed
    r = engine.may_resume("refunds", "bad_reason", {"fixed": "yes", "reviewed": []}, now=NOW)
    assert not r.allowed and [e.message for e in r.errors] == ["`evidence.fixed` must be bool, not string"]
    r = engine.may_resume("refunds", "bad_reason", {"fixed": True}, now=NOW)
    assert not r.allowed and "`evidence.reviewed` is missing" in r.errors[0].message


def test_value_problem_never_raises_on_odd_values() -> None:
    t = FType("object", fields=(FField("m", FType("map", FType("int"))),))
    assert value_problem(t, {"m": {1: 2}}, "action") == "`action.m` must have string keys, not int"
    assert value_problem(t, {"m": {"a": 2}}, "action") is None
    assert value_problem(t, [], "action") == "`action` must be an object, not list"


def test_a_naive_timestamp_is_named_as_such() -> None:
    t = FType("object", fields=(FField("at", FType("timestamp")),))
    assert value_problem(t, {"at": datetime(2026, 3, 2, tzinfo=UTC)}, "action") is None
    assert value_problem(t, {"at": datetime(2026, 3, 2)}, "action") == (
        "`action.at` must be timestamp, not a timestamp without a time zone (a naive datetime)")
    assert value_problem(t, {"at": "2026-03-02T00:00:00Z"}, "action") == "`action.at` must be timestamp, not string"


def test_shipped_policy_declares_its_fields() -> None:
    engine = policy_engine.load(Path(__file__).resolve().parent.parent / "policies")
    ca = engine.compiled.workflows["refunds"].actions["issue_refund"]
    assert ca.fields is not None and ca.fields.field("amount").type.kind == "double"
    text = (Path(__file__).resolve().parent.parent / "policies" / "refunds.policy").read_text(encoding="utf-8")
    bad = text.replace("`action.amount > policy.refund_hard_limit`", "`action.amout > policy.refund_hard_limit`")
    # (the roles are declared in policies/roles.policy: unknown here, E110)
    assert [d.code for d in load_text(bad, "refunds.policy").diagnostics if d.code != "E110"] == ["E115"]
