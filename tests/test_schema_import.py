"""`fields from "file.json"`: an action type's fields imported from a JSON Schema file.

What `stopline schema` writes imports back to the same declared type (for every action
type of the shipped library that declares its fields, and for one that uses every kind of
type); the imported fields are checked like written ones, at check time and at run time;
anything outside the subset is E119 at the `from` path; `stopline fmt` prints the syntax.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import policy_engine
from policy_engine.language.fmt import format_text
from policy_engine.language.ir import field_object
from policy_engine.language.loader import load_paths, load_text, require_ok
from policy_engine.schema_export import policy_schemas

ROOT = Path(__file__).resolve().parent.parent
NOW = "2026-11-24T10:00:00Z"

EVERY_KIND = '''roles [r]

workflow "w" {
  version "1"
  owners {
    business "b"
    technical "t"
  }

  action a {
    system "s"
    irreversible
    FIELDS
    require_approval by 1 r when `true`
  }
}
'''
BLOCK = '''fields {
      s: string
      i?: int
      d: double
      b: bool
      ts: timestamp
      du?: duration
      x: any
      tags: list<string>
      anything: list<any>
      nested: list<list<int>>
      limits: map<string, int>
      loose: map<string, any>
      empty: {
      }
      o: {
        k?: string
        deep: {
          z: bool
        }
      }
      lines: list {
        sku: string
      }
      byname: map {
        n: int
      }
    }'''


def declared(pset, name: str):
    return next(field_object(a.fields) for w in pset.workflows for a in w.actions if a.name == name)


def write(tmp_path: Path, schema: object, policy: str = EVERY_KIND) -> Path:
    (tmp_path / "schemas").mkdir(exist_ok=True)
    (tmp_path / "schemas" / "a.json").write_text(json.dumps(schema), encoding="utf-8")
    path = tmp_path / "p.policy"
    path.write_text(policy.replace("FIELDS", 'fields from "schemas/a.json"'), encoding="utf-8")
    return path


def test_every_kind_of_type_round_trips(tmp_path: Path) -> None:
    inline = require_ok(load_text(EVERY_KIND.replace("FIELDS", BLOCK), "x.policy"))
    schema = policy_schemas(inline)["a"]
    path = write(tmp_path, schema)
    imported = require_ok(load_paths([path]))
    assert declared(imported, "a") == declared(inline, "a")
    assert policy_schemas(imported) == policy_schemas(inline)  # and back out again


def test_the_shipped_declarations_round_trip(tmp_path: Path) -> None:
    shipped = require_ok(load_paths([ROOT / "policies"]))
    schemas = policy_schemas(shipped)
    assert schemas
    for name, doc in schemas.items():
        wf = next(w.name for w in shipped.workflows for a in w.actions if a.name == name)
        policy = EVERY_KIND.replace('workflow "w"', f'workflow "{wf}"').replace("action a {", f"action {name} {{")
        imported = require_ok(load_paths([write(tmp_path, doc, policy)]))
        assert declared(imported, name) == declared(shipped, name), name


def test_the_committed_example_matches_the_shipped_declaration() -> None:
    """tests/cases/schema_import (the docs' example) imports what `stopline schema` writes today."""
    shipped = require_ok(load_paths([ROOT / "policies"]))
    committed = json.loads((ROOT / "tests/cases/schema_import/schemas/issue_refund.json").read_text())
    assert committed == policy_schemas(shipped, "issue_refund")["issue_refund"], (
        "refresh: stopline schema policies --action issue_refund --out tests/cases/schema_import/schemas")
    example = require_ok(load_paths([ROOT / "tests/cases/schema_import"]))
    assert declared(example, "issue_refund") == declared(shipped, "issue_refund")


def test_imported_fields_are_checked_like_written_ones(tmp_path: Path) -> None:
    example = (ROOT / "tests/cases/schema_import/refunds.policy").read_text()
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "issue_refund.json").write_text(
        (ROOT / "tests/cases/schema_import/schemas/issue_refund.json").read_text())
    path = tmp_path / "refunds.policy"
    path.write_text(example.replace("action.amount <= 100.0", "action.amout <= 100.0"))
    (d,) = load_paths([path]).errors
    assert d.code == "E115" and d.help == "did you mean `amount`?"
    path.write_text(example)
    engine = policy_engine.load(path)
    good = {"workflow": "refunds", "type": "issue_refund", "amount": 20.0, "reason": "damaged_item",
            "payee_account_id": "a", "order": {"total": 50.0, "refunded_amount": 0.0, "customer_account_id": "a"}}
    assert engine.evaluate(good, now=NOW).effect == "allow"
    bad = engine.evaluate({**good, "amount": "20"}, now=NOW)
    assert bad.effect == "deny" and "`action.amount` must be double, not string" in bad.reason


def test_the_policy_hash_covers_the_imported_declarations(tmp_path: Path) -> None:
    doc = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    h1 = require_ok(load_paths([write(tmp_path, doc)])).content_hash
    assert require_ok(load_paths([write(tmp_path, {**doc, "title": "A"})])).content_hash == h1  # annotation
    doc["properties"]["n"] = {"type": "number"}
    assert require_ok(load_paths([write(tmp_path, doc)])).content_hash != h1


def test_type_and_workflow_may_be_fixed_to_their_names(tmp_path: Path) -> None:
    doc = {"type": "object", "properties": {"type": {"const": "a"}, "workflow": {"const": "w"},
                                            "n": {"type": "integer", "description": "how many"}},
           "required": ["type", "workflow", "n"], "title": "a", "$schema": "https://json-schema.org/draft/2020-12/schema"}
    pset = require_ok(load_paths([write(tmp_path, doc)]))
    assert declared(pset, "a").describe() == "{n: int}"


REFUSED = [
    # (schema, pointer or phrase in the message, phrase in the help)
    ({"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}}, "/properties/n/minimum",
     "test the value in a rule's condition"),
    ({"type": "object", "properties": {"n": {"type": ["string", "null"]}}}, "/properties/n/type",
     "left out of `required`"),
    ({"type": "object", "properties": {"n": {"$ref": "#/$defs/n"}}}, "/properties/n/$ref", "write the type out"),
    ({"type": "object", "properties": {"n": {"enum": ["a", "b"]}}}, "/properties/n/enum", "says only the type"),
    ({"type": "object", "properties": {"n": {"type": "string", "format": "email"}}}, "/properties/n/format",
     "date-time"),
    ({"type": "object", "properties": {"o": {"type": "object", "properties": {}, "additionalProperties": False}}},
     "/properties/o/additionalProperties", "allows keys"),
    ({"type": "object", "properties": {}, "additionalProperties": False}, "/additionalProperties", "remove it"),
    ({"type": "object", "properties": {"type": {"const": "b"}}}, "/properties/type", '"a"'),
    ({"type": "object", "properties": {}, "required": ["n"]}, "/required", "declare it under `properties`"),
    ({"type": "array"}, "an object schema", "stopline schema"),
    ({"type": "object", "properties": {"n": {"type": "null"}}}, "/properties/n/type", "a field is"),
]


@pytest.mark.parametrize(("schema", "where", "help_"), REFUSED, ids=[w for _, w, _ in REFUSED])
def test_outside_the_subset_is_e119_at_the_from_path(tmp_path: Path, schema, where: str, help_: str) -> None:
    path = write(tmp_path, schema)
    (d,) = load_paths([path]).errors
    text = path.read_text()
    line = text.splitlines()[d.span.line - 1]
    assert d.code == "E119" and where in d.message and help_ in (d.help or ""), (d.message, d.help)
    assert line[d.span.col - 1:].startswith('"schemas/a.json"')
    assert d.message[0].islower() and not d.message.endswith(".")


@pytest.mark.parametrize("content", [None, "{not json", "\xff"])
def test_a_missing_or_unreadable_file_is_e119(tmp_path: Path, content) -> None:
    path = write(tmp_path, {})
    target = tmp_path / "schemas" / "a.json"
    if content is None:
        target.unlink()
    elif content == "\xff":
        target.write_bytes(b"\xff\xfe")
    else:
        target.write_text(content)
    (d,) = load_paths([path]).errors
    assert d.code == "E119" and "schemas/a.json" in d.message and d.help


def test_fmt_prints_the_import() -> None:
    text = EVERY_KIND.replace("    FIELDS", '    fields   from\n  "schemas/a.json"')
    out = format_text(text, "nowhere/p.policy")
    assert '    fields from "schemas/a.json"\n' in out
    assert format_text(out, "nowhere/p.policy") == out


def test_a_policy_store_reloads_when_an_imported_file_changes(tmp_path: Path) -> None:
    """The store watches the files a policy imports, not only the .policy files."""
    import os

    from policy_engine.store import PolicyStore

    doc = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    path = write(tmp_path, doc)
    imported = tmp_path / "schemas" / "a.json"
    assert require_ok(load_paths([path])).files[0].imports == (str(imported),)
    store = PolicyStore(path)
    h1 = store.policy_hash
    assert store.reload_if_changed() is None
    doc["properties"]["n"] = {"type": "string"}
    imported.write_text(json.dumps(doc), encoding="utf-8")
    st = imported.stat()
    os.utime(imported, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a coarse clock: a later mtime
    result = store.reload_if_changed()
    assert result is not None and result.ok and result.changed and store.policy_hash != h1
    assert store.reload_if_changed() is None
