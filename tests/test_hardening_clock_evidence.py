"""Evidence at resume time: only a declared `evidence { ... }` block checks its shape.

- W213 (language/lints.py) warns about a stop trigger whose re-enable criteria read
  evidence no block declares (a warning: `check --strict` fails on it).
- A declared block is enforced by `may_resume`: a wrong type, a missing field, `null`
  for an optional one are input errors, no criterion is evaluated, the workflow stays
  stopped; fields the block does not declare are allowed (no criterion can read them: E115).
"""

from __future__ import annotations

import copy

import pytest

import policy_engine
from policy_engine import diagnostics
from policy_engine.language.loader import load_text

POLICY = """roles [reviewer]

workflow "w" {
  version "1"
  owners {
    business "B"
    technical "T"
  }
  default deny

  action a {
    system "s"
    reversible full via "x.undo"
    allow ok when `true`
  }

  stop undeclared {
    when `action.type == "zz"`
    severity high
    owner "B"
    resume when {
      fixed: `evidence.screen.shows_source`
      promises_blocked: `size(evidence.blocked_promises) > 0`
    }
  }

  stop declared {
    when `action.type == "yy"`
    severity high
    owner "B"
    evidence {
      screen: {
        shows_source: bool
      }
      blocked_promises: list<string>
      note?: string
    }
    resume when {
      fixed: `evidence.screen.shows_source`
      promises_blocked: `size(evidence.blocked_promises) > 0`
    }
  }

  stop no_evidence {
    when `action.type == "xx"`
    severity high
    owner "B"
    resume when {
      later: `now > timestamp("2026-01-01T00:00:00Z")`
    }
  }

  rollback reviewer_error {
    authorize 1 reviewer
  }
}
"""
NOW = "2026-07-02T10:00:00Z"
GOOD = {"screen": {"shows_source": True}, "blocked_promises": ["legal_advice"]}


def test_w213_is_registered():
    assert diagnostics.CODES["W213"] == "re-enable criteria read undeclared evidence"


def test_w213_warns_once_per_trigger_that_reads_undeclared_evidence():
    ds = [d for d in load_text(POLICY, "x.policy").diagnostics if d.code == "W213"]
    assert len(ds) == 1  # `declared` declares its evidence; `no_evidence` reads none
    (d,) = ds
    assert d.severity == "warning"
    assert "stop trigger `undeclared`" in d.message
    assert "`evidence.screen.shows_source`, `evidence.blocked_promises`" in d.message
    line = POLICY.splitlines()[d.span.line - 1]
    assert line[d.span.col - 1:].startswith("evidence.screen.shows_source`")  # its first read
    assert "`evidence { screen: {...} blocked_promises: <type> }`" in (d.help or "")
    assert any('"x"' in n for n in d.notes)


def test_w213_is_a_warning_that_fails_check_strict(tmp_path):
    from click.testing import CliRunner

    from policy_engine.cli import main

    (tmp_path / "x.policy").write_text(POLICY, encoding="utf-8")
    res = CliRunner().invoke(main, ["check", "--strict", str(tmp_path)])
    assert res.exit_code == 1 and "warning[W213]" in res.output


# ------------------------------------------------------------------ the reason: undeclared is unchecked

@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    path = tmp_path_factory.mktemp("ev") / "x.policy"
    path.write_text(POLICY, encoding="utf-8")
    return policy_engine.load(str(path))


def test_undeclared_evidence_of_another_type_is_taken_as_given(engine):
    """What W213 warns about: the string "x" has a size."""
    ev = {"screen": {"shows_source": True}, "blocked_promises": "x"}
    assert engine.may_resume("w", "undeclared", ev, now=NOW).allowed
    assert not engine.may_resume("w", "declared", ev, now=NOW).allowed


# ------------------------------------------------------------------ a declared block is enforced

def test_declared_evidence_of_the_right_shape_resumes(engine):
    assert engine.may_resume("w", "declared", GOOD, now=NOW).allowed
    extra = {**GOOD, "ticket": 7, "screen": {"shows_source": True, "colour": "red"}}
    assert engine.may_resume("w", "declared", extra, now=NOW).allowed  # undeclared fields: unchecked, unread


def _set(path, value):
    ev = copy.deepcopy(GOOD)
    cur = ev
    for k in path[:-1]:
        cur = cur[k]
    if value is _DELETE:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value
    return ev


_DELETE = object()


@pytest.mark.parametrize("path, value, said", [
    (("blocked_promises",), "x", "`evidence.blocked_promises` must be list<string>, not string"),
    (("blocked_promises",), {"legal_advice": True}, "`evidence.blocked_promises` must be list<string>, not object"),
    (("blocked_promises",), [1], "`evidence.blocked_promises[0]` must be string, not int"),
    (("screen", "shows_source"), "true", "`evidence.screen.shows_source` must be bool, not string"),
    (("screen", "shows_source"), 1, "`evidence.screen.shows_source` must be bool, not int"),
    (("screen",), True, "`evidence.screen` must be an object, not bool"),
    (("screen", "shows_source"), _DELETE, "`evidence.screen.shows_source` is missing"),
    (("blocked_promises",), _DELETE, "`evidence.blocked_promises` is missing"),
    (("note",), None, "`evidence.note` must be string, not null"),
    (("note",), 5, "`evidence.note` must be string, not int"),
])
def test_declared_evidence_of_another_shape_is_refused(engine, path, value, said):
    r = engine.may_resume("w", "declared", _set(path, value), now=NOW)
    assert not r.allowed
    assert any(said in e.message and e.kind == "input" for e in r.errors), r.errors
    assert all(not c.met and c.reason == "not evaluated: the input has an error" for c in r.criteria)


@pytest.mark.parametrize("evidence", [None, [], "x", 1])
def test_declared_evidence_that_is_not_an_object_is_refused(engine, evidence):
    r = engine.may_resume("w", "declared", evidence, now=NOW)
    assert not r.allowed and all(not c.met for c in r.criteria)


INDEXED = POLICY.replace(
    'fixed: `evidence.screen.shows_source`\n      promises_blocked: `size(evidence.blocked_promises) > 0`\n'
    '    }\n  }\n\n  stop no_evidence',
    'fixed: `evidence.screen.shows_source`\n      promises_blocked: `size(evidence.blocked_promises) > 0`\n'
    '      signed: `evidence["signed_off"] == true`\n      few: `size(evidence) <= 3`\n'
    '      deep: `!("overridden" in evidence.screen)`\n    }\n  }\n\n'
    '  stop no_evidence')


def test_fields_a_declared_block_does_not_declare_are_never_read():
    """E115 refuses `evidence.signed_off` for an undeclared field, but an index or `size`
    reads past the type checker: at run time the criteria see only what the block
    declares (the rest is not checked, so it is not read)."""
    assert INDEXED != POLICY
    result = load_text(INDEXED, "x.policy")
    assert not result.errors, result.errors
    engine = policy_engine.Engine.from_load_result(result)
    ev = {**GOOD, "signed_off": True}
    r = engine.may_resume("w", "declared", ev, now=NOW)
    assert not r.allowed and "signed" in r.unmet and "few" not in r.unmet and "deep" not in r.unmet
    many = {**GOOD, "a": 1, "b": 2, "note": "n"}  # three declared fields, two undeclared: `few` counts three
    assert "few" not in engine.may_resume("w", "declared", many, now=NOW).unmet
    # nested objects too: `screen.overridden` is not declared, so it is absent to the criteria
    r = engine.may_resume("w", "declared", {**GOOD, "screen": {"shows_source": True, "overridden": True}}, now=NOW)
    assert "deep" not in r.unmet
