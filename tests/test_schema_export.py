"""`stopline schema POLICIES`: a JSON Schema (draft 2020-12) per declared action type.

The schema says what the engine's run-time field check says: a hypothesis property over
the shipped refunds declarations checks that an action the check accepts validates
against the schema and one it rejects does not (with the `jsonschema` library, which the
test extra brings in through schemathesis). The schemas of the refunds workflow are
snapshotted (refresh: python -m pytest tests/test_schema_export.py --snapshot-update).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from depth import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import policy_engine
from policy_engine.cli import main
from policy_engine.engine.inputs import declared_problem
from policy_engine.fieldtypes import FType
from policy_engine.language.loader import load_paths, load_text, require_ok
from policy_engine.schema_export import DRAFT, DURATION_PATTERN, action_schema, policy_schemas, type_schema

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"
NOW = "2026-11-24T10:00:00Z"

try:  # installed with the test extra (schemathesis needs it); without it, only the structure is compared
    import jsonschema
except ImportError:  # pragma: no cover - the test extra brings it
    jsonschema = None
needs_jsonschema = pytest.mark.skipif(jsonschema is None, reason="the jsonschema library is not installed")


@pytest.fixture(scope="module")
def engine():
    return policy_engine.load(POLICIES)


@pytest.fixture(scope="module")
def schemas():
    return policy_schemas(require_ok(load_paths([POLICIES])))


def refunds_types(engine) -> list[str]:
    return sorted(n for n, ca in engine.compiled.workflows["refunds"].actions.items() if ca.fields is not None)


def test_refunds_schemas_snapshot(schemas, engine, snapshot) -> None:
    refunds = {n: schemas[n] for n in refunds_types(engine)}
    assert json.dumps(refunds, indent=2) == snapshot


@needs_jsonschema
def test_every_schema_is_a_valid_draft_2020_12_schema(schemas) -> None:
    assert schemas  # the shipped library declares fields
    for doc in schemas.values():
        assert doc["$schema"] == DRAFT
        jsonschema.Draft202012Validator.check_schema(doc)


def test_type_mapping() -> None:
    T = FType
    decl = load_text('''
workflow "w" {
  version "1"
  owners {
    business "b"
    technical "t"
  }

  action a {
    system "s"
    irreversible
    fields {
      s: string
      i?: int
      d: double
      b: bool
      ts: timestamp
      du: duration
      x: any
      tags: list<string>
      anything: list<any>
      limits: map<string, int>
      o: {
        k?: string
      }
      lines: list {
        sku: string
      }
      byname: map {
        n: int
      }
    }
    require_approval by 1 r when `true`
  }
}
roles [r]
''', "x.policy")
    (a,) = require_ok(decl).workflows[0].actions
    doc = policy_schemas(require_ok(decl))["a"]
    p = doc["properties"]
    assert p["type"] == {"const": "a"} and p["workflow"] == {"const": "w"}
    assert p["s"] == {"type": "string"} and p["i"] == {"type": "integer"} and p["d"] == {"type": "number"}
    assert p["b"] == {"type": "boolean"} and p["x"] == {}
    assert p["ts"] == {"type": "string", "format": "date-time"}
    assert p["du"] == {"type": "string", "pattern": DURATION_PATTERN}
    assert p["tags"] == {"type": "array", "items": {"type": "string"}} and p["anything"] == {"type": "array"}
    assert p["limits"] == {"type": "object", "additionalProperties": {"type": "integer"}}
    assert p["o"] == {"type": "object", "properties": {"k": {"type": "string"}}}  # no `required`: k is optional
    assert p["lines"]["items"] == {"type": "object", "properties": {"sku": {"type": "string"}}, "required": ["sku"]}
    assert p["byname"]["additionalProperties"]["required"] == ["n"]
    assert doc["required"] == ["type", "workflow", "s", "d", "b", "ts", "du", "x", "tags", "anything", "limits",
                               "o", "lines", "byname"]
    assert "additionalProperties" not in doc  # keys not declared may be sent, as at run time
    assert type_schema(T("map", T("any"))) == {"type": "object", "additionalProperties": {}}
    import re

    for ok in ("90s", "1.5s", "1h30m", "-2m", "100ms"):
        assert re.match(DURATION_PATTERN, ok)
    for bad in ("", "90", "1 h", "P1D", "1d"):
        assert not re.match(DURATION_PATTERN, bad)


# ------------------------------------------------------------------ run time and schema agree
JSON_SCALARS = (st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=4)
                # an integral float is the one value JSON Schema and the engine read differently
                # (JSON Schema's `integer` accepts 1.0; the engine wants an int): left out
                | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()))
JSON = st.recursive(JSON_SCALARS, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c,
                                                                                        max_size=3), max_leaves=6)


def valid(t: FType) -> st.SearchStrategy:
    k = t.kind
    if k == "string":
        return st.text(max_size=6)
    if k == "int":
        return st.integers(-(10**9), 10**9)
    if k == "double":
        return st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(10**6), 10**6)
    if k == "bool":
        return st.booleans()
    if k == "any":
        return JSON
    if k == "list":
        return st.lists(valid(t.item) if t.item else JSON, max_size=3)
    if k == "map":
        return st.dictionaries(st.text(max_size=4), valid(t.item) if t.item else JSON, max_size=3)
    assert k == "object", k
    fields = t.fields or ()
    declared = {f.name for f in fields}
    extra = st.dictionaries(st.text(max_size=4).filter(lambda x: x not in declared), JSON, max_size=2)
    body = st.fixed_dictionaries({f.name: valid(f.type) for f in fields if not f.optional},
                                 optional={f.name: valid(f.type) for f in fields if f.optional})
    return st.tuples(extra, body).map(lambda p: {**p[0], **p[1]})


def paths(v: Any, at: tuple = ()) -> list[tuple]:
    out = []
    if isinstance(v, dict):
        for k, x in v.items():
            out.append(at + (k,))
            out.extend(paths(x, at + (k,)))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            out.append(at + (i,))
            out.extend(paths(x, at + (i,)))
    return out


def mutate(v: Any, path: tuple, new: Any, delete: bool) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(v, dict):
        v = dict(v)
        if delete and not rest:
            del v[head]
        else:
            v[head] = mutate(v[head], rest, new, delete)
        return v
    v = list(v)
    if delete and not rest:
        del v[head]
    else:
        v[head] = mutate(v[head], rest, new, delete)
    return v


@needs_jsonschema
@settings(max_examples=examples(120), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_run_time_check_and_schema_agree_on_the_refunds_declarations(engine, schemas, data) -> None:
    name = data.draw(st.sampled_from(refunds_types(engine)))
    ca = engine.compiled.workflows["refunds"].actions[name]
    action = {**data.draw(valid(ca.fields)), "type": name, "workflow": "refunds"}
    validator = jsonschema.Draft202012Validator(schemas[name])
    assert declared_problem(ca, action) is None
    assert validator.is_valid(action)
    where = [p for p in paths(action) if p[0] not in ("type", "workflow")]
    if not where:
        return
    path = data.draw(st.sampled_from(where))
    delete = data.draw(st.booleans())
    changed = mutate(action, path, data.draw(JSON), delete)
    accepted = declared_problem(ca, changed) is None
    assert validator.is_valid(changed) == accepted, (changed, declared_problem(ca, changed))


@needs_jsonschema
def test_an_action_the_schema_accepts_is_decided_not_refused(engine, schemas) -> None:
    action = {"type": "issue_refund", "workflow": "refunds", "amount": 20, "reason": "damaged_item",
              "payee_account_id": "acct-1",
              "order": {"total": 50.0, "refunded_amount": 0, "customer_account_id": "acct-1"}}
    assert jsonschema.Draft202012Validator(schemas["issue_refund"]).is_valid(action)
    assert engine.evaluate(action, now=NOW).effect == "allow"
    bad = {**action, "amount": "20"}
    assert not jsonschema.Draft202012Validator(schemas["issue_refund"]).is_valid(bad)
    d = engine.evaluate(bad, now=NOW)
    assert d.effect == "deny" and "`action.amount` must be double, not string" in d.reason


# ------------------------------------------------------------------ the command
def test_cli_prints_every_declared_type_or_one(schemas) -> None:
    r = CliRunner().invoke(main, ["schema", str(POLICIES)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == schemas
    r = CliRunner().invoke(main, ["schema", str(POLICIES), "--action", "issue_refund"])
    assert r.exit_code == 0 and json.loads(r.output) == schemas["issue_refund"]


def test_cli_writes_one_file_per_type(tmp_path: Path, schemas) -> None:
    out = tmp_path / "schemas"
    r = CliRunner().invoke(main, ["schema", str(POLICIES), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.json" for n in schemas)
    assert json.loads((out / "issue_refund.json").read_text()) == schemas["issue_refund"]


def test_cli_usage_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["schema", str(POLICIES), "--action", "issue_refnud"])
    assert r.exit_code == 2 and "no action type `issue_refnud`" in r.output
    assert "did you mean `issue_refund`" in r.output
    r = runner.invoke(main, ["schema", str(POLICIES), "--action", "send_customer_reply"])
    assert r.exit_code == 2 and "declares no fields" in r.output
    broken = tmp_path / "b.policy"
    broken.write_text('workflow "w" { version "1" owners { business "b" technical "t" } '
                      "action a { fields { n: float } } }\n")
    r = runner.invoke(main, ["schema", str(broken)])
    assert r.exit_code == 2 and "E117" in r.output and "Traceback" not in r.output
    r = runner.invoke(main, ["schema", "--action", "x"])
    assert r.exit_code == 2 and "need a policy path" in r.output
    # the models' schemas are still there
    r = runner.invoke(main, ["schema", "Decision"])
    assert r.exit_code == 0 and json.loads(r.output)["title"] == "Decision"


def test_action_schema_lets_a_declared_type_field_win() -> None:
    doc = action_schema("a", "w", FType("object", fields=()))
    assert doc["required"] == ["type", "workflow"]
