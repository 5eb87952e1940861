"""`fields from "file.json"`: an action type's fields from a JSON Schema file.

The subset that maps onto the field types, and nothing else (what `stopline schema`
writes, `schema_export.py`, imports back to the same declaration):

- `{"type": "object", "properties": {...}, "required": [...]}`: an object (other keys
  allowed, as at run time; `additionalProperties: true` may say so);
- `{"type": "object", "additionalProperties": T}`: a map of string to T
  (`{"type": "object"}` alone: a map of string to `any`);
- `{"type": "array", "items": T}` (without `items`: a list of `any`);
- `string`, `integer` (int), `number` (double), `boolean` (bool); `{}` or `true`: any;
- `{"type": "string", "format": "date-time"}`: timestamp; `"format": "duration"` or the
  pattern `stopline schema` writes for a duration: duration.

At the top, `type` and `workflow` may be fixed with `const` (to the action type's and the
workflow's names). Annotations (`title`, `description`, `$comment`, `examples`,
`default`, `deprecated`, `readOnly`, `writeOnly`, `$schema`, `$id`) are ignored. Anything
else — `null` among the types, `enum`, bounds, `$ref`, `oneOf`, other formats,
`additionalProperties: false` — says more than a declaration can, and is refused (E119)
rather than silently checked less than the schema says.
"""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Any

from ..fieldtypes import DURATION_PATTERN
from ..limits import MAX_FILE_BYTES, MAX_NESTING
from ..source import SourceFile
from . import ir

ANNOTATIONS = frozenset({"title", "description", "$comment", "examples", "default", "deprecated", "readOnly",
                         "writeOnly", "$schema", "$id"})
SUBSET = ("the subset: `type` object/string/integer/number/boolean/array, `properties`, `required`, `items`, "
          "`additionalProperties` (a map), `format` date-time (timestamp) or duration")
_SIMPLE = {"string": "string", "integer": "int", "number": "double", "boolean": "bool"}


class ImportProblem(Exception):
    """Why the file cannot be imported: a message and a help line (E119 at the `from` path),
    and where in the JSON file the problem is (`where`: `file:line:col`, a note of the
    diagnostic) when it is in the file's text."""

    def __init__(self, message: str, help: str = SUBSET, *, path: tuple[str, ...] | None = None,
                 offset: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.help = help
        self.path = path  # the JSON pointer of the offending member, as keys
        self.offset = offset  # or its character offset in the file's text
        self.where: str | None = None


def _ptr(path: tuple[str, ...]) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in path) if path else "the top"


def resolve(policy_path: str, rel: str) -> Path:
    """Where `fields from "rel"` of the policy file `policy_path` points (relative to its directory)."""
    base = Path(policy_path).parent if policy_path and not policy_path.startswith("<") else Path(".")
    return base / rel


_WS = re.compile(r"[ \t\n\r]*")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_SCALAR = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|true|false|null|NaN|-?Infinity")


def _locate(text: str) -> tuple[dict[tuple[str, ...], int], tuple[tuple[str, ...], int] | None]:
    """Where each member of a JSON document (already parsed once, so well formed) begins:
    JSON pointer (as keys; list items by index) -> character offset (of the key, for an
    object's member); and the first key given twice in an object, with its offset (the
    `json` module keeps the last silently)."""
    where: dict[tuple[str, ...], int] = {}
    dup: list[tuple[tuple[str, ...], int]] = []

    def ws(i: int) -> int:
        m = _WS.match(text, i)
        return m.end() if m else i

    def value(i: int, path: tuple[str, ...]) -> int:
        i = ws(i)
        where.setdefault(path, i)
        ch = text[i]
        if ch in "{[":
            close = "}" if ch == "{" else "]"
            i, n, seen = ws(i + 1), 0, set()
            while text[i] != close:
                if ch == "{":
                    at = i
                    m = _STRING.match(text, i)
                    if m is None:
                        raise ValueError(i)
                    key, i = json.loads(m.group()), m.end()
                    if key in seen and not dup:
                        dup.append((path + (key,), at))
                    seen.add(key)
                    where[path + (key,)] = at  # (the member `json` keeps: the last)
                    i = value(ws(i) + 1, path + (key,))  # after the `:`
                else:
                    i = value(i, path + (str(n),))
                    n += 1
                i = ws(i)
                if text[i] == ",":
                    i = ws(i + 1)
            return i + 1
        if ch == '"':
            m = _STRING.match(text, i)
            return m.end() if m else i + 1
        m = _SCALAR.match(text, i)
        return m.end() if m else i + 1

    try:
        value(0, ())
    except (RecursionError, IndexError, ValueError):  # (a located message is a courtesy)
        pass
    return where, (dup[0] if dup else None)


def _place(problem: ImportProblem, text: str, shown: str) -> ImportProblem:
    """`problem` with `where` set: the `file:line:col` in the JSON file it is about."""
    offset = problem.offset
    if offset is None and problem.path is not None:
        where, _ = _locate(text)
        path = problem.path
        while path and path not in where:
            path = path[:-1]
        offset = where.get(path)
    if offset is not None:
        line, col = SourceFile(shown, text).line_col(offset)
        problem.where = f"{shown}:{line}:{col}"
    return problem


def read_schema(policy_path: str, rel: str) -> tuple[Any, str]:
    """The parsed JSON of `rel` (relative to the policy file's directory) and its shown path."""
    doc, shown, _text = _read_schema(policy_path, rel)
    return doc, shown


def _read_schema(policy_path: str, rel: str) -> tuple[Any, str, str]:
    """The parsed JSON of `rel`, its shown path and its text (a leading byte order mark
    dropped, CRLF and CR read as LF, as in a policy file). A key given twice in an object
    is refused: `json` would keep the last one silently."""
    path = resolve(policy_path, rel)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # a FIFO blocked the load for good, `/dev/zero` read until memory ran out
            what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise ImportProblem(f"cannot import fields: `{rel}` is {what}",
                                "name a JSON Schema file (`stopline schema POLICIES --action TYPE` writes one)")
        size = st.st_size
        if size > MAX_FILE_BYTES:
            raise ImportProblem(f"`{rel}` is {size} bytes; the limit is {MAX_FILE_BYTES}", "split the schema")
        with path.open("rb") as fh:  # at most one byte past the limit: a file growing since its stat is not read whole
            data = fh.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ImportProblem(f"`{rel}` is more than {MAX_FILE_BYTES} bytes; the limit is {MAX_FILE_BYTES}",
                                "split the schema")
        text = data.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
    except ImportProblem:
        raise
    except FileNotFoundError:
        raise ImportProblem(f"cannot import fields: `{rel}` not found (looked for {path})",
                            "the path is relative to the policy file; `stopline schema POLICIES --out DIR` "
                            "writes one for each action type that declares its fields") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ImportProblem(f"cannot import fields: `{rel}` cannot be read ({getattr(e, 'strerror', None) or e})",
                            "the file must be readable UTF-8 JSON") from None
    shown = str(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise _place(ImportProblem(f"cannot import fields: `{rel}` is not JSON ({e.msg} at line {e.lineno}, "
                                   f"column {e.colno})", "fix the JSON", offset=e.pos), text, shown) from None
    except RecursionError:
        raise ImportProblem(f"cannot import fields: `{rel}` nests too deeply",
                            f"a field declaration nests at most {MAX_NESTING} levels") from None
    _, dup = _locate(text)
    if dup is not None:
        key_path, at = dup
        raise _place(ImportProblem(f"cannot import fields from `{rel}`: key `{key_path[-1]}` is given twice at "
                                   f"{_ptr(key_path[:-1])}",
                                   "remove one of them: a JSON reader keeps only the last", offset=at), text, shown)
    return doc, rel, text


class _Importer:
    def __init__(self, rel: str, loc: ir.Loc) -> None:
        self.rel = rel
        self.loc = loc

    def refuse(self, path: tuple[str, ...], what: str, help: str = SUBSET) -> ImportProblem:
        return ImportProblem(f"cannot import fields from `{self.rel}`: {what} at {_ptr(path)}", help, path=path)

    def check_keys(self, s: dict, allowed: set[str], path: tuple[str, ...]) -> None:
        for k in s:
            if k not in allowed and k not in ANNOTATIONS:
                help_ = SUBSET
                if k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
                         "pattern", "enum", "const", "minItems", "maxItems", "multipleOf", "uniqueItems"):
                    help_ = (f"a field declaration says only the type: remove `{k}` and test the value in a "
                             "rule's condition instead")
                elif k in ("$ref", "$defs", "definitions", "oneOf", "anyOf", "allOf", "not", "if", "then", "else"):
                    help_ = f"write the type out in place of `{k}`"
                raise self.refuse(path + (k,), f"`{k}` is outside what a field declaration can say", help_)

    def type_ref(self, s: Any, path: tuple[str, ...]) -> ir.FieldTypeRef:
        if len(path) > 2 * MAX_NESTING:
            raise self.refuse(path, "the schema nests too deeply",
                              f"a field declaration nests at most {MAX_NESTING} levels")
        loc = self.loc
        if s is True or s == {}:
            return ir.FieldTypeRef(name="any", name_loc=loc, loc=loc)
        if not isinstance(s, dict):
            raise self.refuse(path, "a schema must be an object (or `true`)")
        if "type" not in s:
            self.check_keys(s, set(), path)  # `$ref`, `oneOf`, `enum`...: named with their own help
            if not [k for k in s if k not in ANNOTATIONS]:
                return ir.FieldTypeRef(name="any", name_loc=loc, loc=loc)
            raise self.refuse(path, "a schema without `type`", "say the type: `\"type\": \"string\"`")
        t = s["type"]
        if isinstance(t, list):
            help_ = ("an optional field is one left out of `required`; a value is never null"
                     if "null" in t else "one type per field")
            raise self.refuse(path + ("type",), f"a list of types {json.dumps(t)}", help_)
        if not isinstance(t, str):  # (an object or a number as a type: no type name, and not hashable)
            raise self.refuse(path + ("type",), f"type {json.dumps(t)}",
                              "a field is an object, string, integer, number, boolean or array")
        if t in _SIMPLE:
            fmt = s.get("format")
            pattern = s.get("pattern")
            if t == "string" and fmt == "date-time" and pattern is None:
                self.check_keys(s, {"type", "format"}, path)
                return ir.FieldTypeRef(name="timestamp", name_loc=loc, loc=loc)
            if t == "string" and (fmt == "duration" or (fmt is None and pattern is not None)):
                if pattern is not None and pattern != DURATION_PATTERN:
                    raise self.refuse(path + ("pattern",), "`pattern` is outside what a field declaration can say",
                                      "a field declaration says only the type; only the duration pattern "
                                      "`stopline schema` writes is read (as `duration`)")
                self.check_keys(s, {"type", "format", "pattern"}, path)
                return ir.FieldTypeRef(name="duration", name_loc=loc, loc=loc)
            if fmt is not None:
                shown = fmt if isinstance(fmt, str) else json.dumps(fmt)
                raise self.refuse(path + ("format",), f"format `{shown}` is outside what a field declaration can say",
                                  "only `date-time` (a timestamp) and `duration` are read; remove the format "
                                  "(the field is then a string)")
            self.check_keys(s, {"type"}, path)
            return ir.FieldTypeRef(name=_SIMPLE[t], name_loc=loc, loc=loc)
        if t == "array":
            self.check_keys(s, {"type", "items"}, path)
            item = self.type_ref(s["items"], path + ("items",)) if "items" in s else \
                ir.FieldTypeRef(name="any", name_loc=loc, loc=loc)
            return ir.FieldTypeRef(name="list", name_loc=loc, args=(item,), loc=loc)
        if t == "object":
            self.check_keys(s, {"type", "properties", "required", "additionalProperties"}, path)
            extra = s.get("additionalProperties", True)
            if extra is False:
                raise self.refuse(path + ("additionalProperties",), "`additionalProperties: false`",
                                  "the engine allows keys a declaration does not name (it checks the declared "
                                  "ones): remove it")
            if "properties" in s or "required" in s:
                if extra is not True:
                    raise self.refuse(path + ("additionalProperties",),
                                      "an object with both `properties` and an `additionalProperties` schema",
                                      "a declaration is an object (named fields) or a map (one value type)")
                return ir.FieldTypeRef(fields=self.fields(s, path), loc=loc)
            value = self.type_ref({} if extra is True else extra, path + ("additionalProperties",))
            string = ir.FieldTypeRef(name="string", name_loc=loc, loc=loc)
            return ir.FieldTypeRef(name="map", name_loc=loc, args=(string, value), loc=loc)
        raise self.refuse(path + ("type",), f"type {json.dumps(t)}",
                          "a field is an object, string, integer, number, boolean or array")

    def fields(self, s: dict, path: tuple[str, ...], skip: dict[str, str] | None = None) -> tuple[ir.FieldDecl, ...]:
        props = s.get("properties", {})
        if not isinstance(props, dict):
            raise self.refuse(path + ("properties",), "`properties` must be an object")
        required = s.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise self.refuse(path + ("required",), "`required` must be a list of names")
        for r in required:
            if r not in props and r not in (skip or {}):
                raise self.refuse(path + ("required",), f"`{r}` is required but not among the `properties`",
                                  "declare it under `properties`, or remove it from `required`")
        out = []
        for name, sub in props.items():
            if skip and name in skip:
                want = skip[name]
                if not (isinstance(sub, dict) and set(sub) - ANNOTATIONS == {"const"} and sub["const"] == want):
                    raise self.refuse(path + ("properties", name),
                                      f"`{name}` must be {{\"const\": {json.dumps(want)}}} here",
                                      f"the schema is for the action type; `{name}` is always {json.dumps(want)}")
                continue
            out.append(ir.FieldDecl(name=name, optional=name not in required,
                                    type=self.type_ref(sub, path + ("properties", name)), loc=self.loc))
        return tuple(out)


def import_fields(policy_path: str, rel: str, loc: ir.Loc, action: str, workflow: str) -> tuple[ir.FieldDecl, ...]:
    """The field declarations of the JSON Schema file `rel` for action type `action` of
    `workflow`, every one located at `loc` (the `from` path). Raises `ImportProblem`."""
    doc, shown, text = _read_schema(policy_path, rel)
    try:
        return _import(doc, shown, loc, action, workflow)
    except ImportProblem as problem:
        raise _place(problem, text, str(resolve(policy_path, rel))) from None


def _import(doc: Any, shown: str, loc: ir.Loc, action: str, workflow: str) -> tuple[ir.FieldDecl, ...]:
    imp = _Importer(shown, loc)
    if not isinstance(doc, dict) or doc.get("type") != "object":
        raise imp.refuse((), "the schema of an action must be an object schema (`\"type\": \"object\"`)",
                         "`stopline schema POLICIES --action TYPE` writes one")
    imp.check_keys(doc, {"type", "properties", "required", "additionalProperties"}, ())
    if doc.get("additionalProperties", True) is not True:
        raise imp.refuse(("additionalProperties",), "`additionalProperties` on an action",
                         "an action is an object with named fields; other keys are allowed: remove it")
    return imp.fields(doc, (), skip={"type": action, "workflow": workflow})
