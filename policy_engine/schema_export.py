"""JSON Schema (draft 2020-12) of declared action types: `stopline schema POLICIES`.

One schema per action type that declares its fields (`fields { ... }`), so a runtime can
validate an action before it asks. It says what the engine's run-time check
(`fieldtypes.value_problem`) says, type for type:

| declared | schema |
|---|---|
| `string`, `bool` | `{"type": "string"}`, `{"type": "boolean"}` |
| `int` | `{"type": "integer"}` |
| `double` | `{"type": "number"}` (an integer is a double too) |
| `timestamp` | `{"type": "string", "format": "date-time"}` (its JSON form, RFC 3339) |
| `duration` | `{"type": "string", "pattern": DURATION_PATTERN}` (CEL's JSON form: `"90s"`, `"1h30m"`) |
| `any` | `{}` (anything) |
| `list<T>` | `{"type": "array", "items": T}` |
| `map<string, T>` | `{"type": "object", "additionalProperties": T}` |
| `{ ... }` | `{"type": "object", "properties": ..., "required": [...]}` (other keys allowed, as at run time) |

`null` is never valid (an optional field may be absent, not null). The action itself is an
object with `type` and `workflow` fixed to its names. Two differences are JSON's, not the
policy's: JSON Schema counts `1.0` as an integer (the engine wants a JSON number written
without a fraction for `int`), and a caller that sends JSON holds a timestamp or a duration
as text, which the engine reads as a string (`docs/language.md`: declare such a field
`string` and convert it in the condition) — the schema describes the value's JSON form.

`fields from "file.json"` imports a schema of this subset back (`language/jsonschema.py`).
"""

from __future__ import annotations

from typing import Any

from .fieldtypes import DURATION_PATTERN, FType

DRAFT = "https://json-schema.org/draft/2020-12/schema"
__all__ = ["DRAFT", "DURATION_PATTERN", "action_schema", "policy_schemas", "type_schema"]
_SCALARS = {
    "string": {"type": "string"},
    "int": {"type": "integer"},
    "double": {"type": "number"},
    "bool": {"type": "boolean"},
    "timestamp": {"type": "string", "format": "date-time"},
    "duration": {"type": "string", "pattern": DURATION_PATTERN},
    "any": {},
}


def type_schema(t: FType) -> dict[str, Any]:
    """The JSON Schema of one declared type (recursive over the declaration's depth)."""
    if t.kind in _SCALARS:
        return dict(_SCALARS[t.kind])
    if t.kind == "list":
        out: dict[str, Any] = {"type": "array"}
        if t.item is not None and t.item.kind != "any":
            out["items"] = type_schema(t.item)
        return out
    if t.kind == "map":
        return {"type": "object", "additionalProperties": type_schema(t.item) if t.item is not None else {}}
    if t.kind == "object":
        fields = t.fields or ()
        obj: dict[str, Any] = {"type": "object", "properties": {f.name: type_schema(f.type) for f in fields}}
        required = [f.name for f in fields if not f.optional]
        if required:
            obj["required"] = required
        return obj
    raise ValueError(f"no JSON Schema for field type {t.kind!r}")  # pragma: no cover - the checker refuses it


def action_schema(action: str, workflow: str, fields: FType, description: str | None = None) -> dict[str, Any]:
    """The schema of an action of type `action` (workflow `workflow`) declaring `fields`."""
    body = type_schema(fields)
    props: dict[str, Any] = {"type": {"const": action}, "workflow": {"const": workflow}}
    props.update(body["properties"])  # a declared `type`/`workflow` says more: it wins
    required = ["type", "workflow"] + [r for r in body.get("required", ()) if r not in ("type", "workflow")]
    out: dict[str, Any] = {"$schema": DRAFT, "title": action}
    if description:
        out["description"] = description
    out.update({"type": "object", "properties": props, "required": required})
    return out


def policy_schemas(pset: Any, action: str | None = None) -> dict[str, dict[str, Any]]:
    """Every declared action type's schema, by action type name (a checked `ir.PolicySet`).
    Action types without `fields` are left out. `action`: only that one (KeyError if it is
    not declared, ValueError if it declares no fields)."""
    from .language.ir import field_object

    out: dict[str, dict[str, Any]] = {}
    found = False
    for w in sorted(pset.workflows, key=lambda w: w.name):
        for a in sorted(w.actions, key=lambda a: a.name):
            if action is not None and a.name != action:
                continue
            found = True
            if a.fields is None:
                if action is not None:
                    raise ValueError(f"action type `{a.name}` declares no fields")
                continue
            out[a.name] = action_schema(a.name, w.name, field_object(a.fields), a.description)
    if action is not None and not found:
        raise KeyError(action)
    return out
