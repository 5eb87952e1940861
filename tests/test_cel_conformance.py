"""Run the plain cases of the CEL conformance suite (../shared/cel-conformance/*.json).

A case is *plain* (README of the suite) when no `object_value` occurs in its bindings or
expected value, its type_env declares no `message_type`, and it has no `container`. We
also skip `check_only` cases (we have no type checker) and expressions that construct
protobuf messages (`TypeName{...}`), which compile to a clear CelCompileError.

Each file is its own test and must reach the floor recorded in
tests/cel/conformance_floor.json. The suite is kept beside the checkout: without it the
test skips, or fails under STOPLINE_REQUIRE_SHARED=1 (tests/shared_data.py). Refresh the
floors after an improvement with:

    PYTHONPATH=. python tests/test_cel_conformance.py --update-floor
"""

from __future__ import annotations

import base64
import json
import math
import sys
from contextlib import nullcontext as _nullcontext
from pathlib import Path
from typing import Any

import pytest
from shared_data import CEL_CONFORMANCE as CONF_DIR
from shared_data import present, require

from policy_engine.cel import CelCompileError, CelError, CelType, CelUint, compile_cel

FLOOR_FILE = Path(__file__).parent / "cel" / "conformance_floor.json"
FILES = sorted(p.stem for p in CONF_DIR.glob("*.json")) if present(CONF_DIR) else []
_MESSAGE_CONSTRUCTION = "message construction is not supported"


class Skip(Exception):
    pass


def convert(v: dict) -> Any:
    """A cel.expr.Value (protobuf JSON mapping) as a Python value."""
    (kind, x), = v.items()
    if kind == "null_value":
        return None
    if kind == "bool_value":
        return bool(x)
    if kind == "int64_value":
        return int(x)
    if kind == "uint64_value":
        return CelUint(int(x))
    if kind == "double_value":
        if isinstance(x, str):
            return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[x]
        return float(x)
    if kind == "string_value":
        return x
    if kind == "bytes_value":
        return base64.b64decode(x)
    if kind == "list_value":
        return [convert(e) for e in x.get("values", [])]
    if kind == "map_value":
        return {convert(e["key"]): convert(e["value"]) for e in x.get("entries", [])}
    if kind == "type_value":
        return CelType(x)
    raise Skip(f"value kind {kind}")


def same(a: Any, b: Any) -> bool:
    """Strict comparison: int, uint, double and bool are distinct; NaN matches NaN."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return (a != a and b != b) or a == b
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        if len(a) != len(b):
            return False
        for k, v in a.items():
            match = [k2 for k2 in b if type(k2) is type(k) and k2 == k]
            if not match or not same(v, b[match[0]]):
                return False
        return True
    return a == b


def is_plain(t: dict) -> bool:
    blob = json.dumps({k: t.get(k) for k in ("bindings", "value", "typed_result")})
    if "object_value" in blob:
        return False
    if "message_type" in json.dumps(t.get("type_env", [])):
        return False
    return not t.get("container")


def run_case(t: dict) -> tuple[str, str]:
    """('pass'|'fail'|'skip', detail)."""
    if not is_plain(t):
        return "skip", "not plain"
    if t.get("check_only"):
        return "skip", "check_only"
    try:
        act = {k: convert(v["value"]) for k, v in t.get("bindings", {}).items()}
        if "eval_error" in t:
            want: Any = CelError
        elif "value" in t:
            want = convert(t["value"])
        elif "typed_result" in t:
            want = convert(t["typed_result"]["result"])
        else:
            want = True
    except Skip as ex:
        return "skip", str(ex)
    try:
        expr = compile_cel(t["expr"])
    except CelCompileError as ex:
        if ex.message.startswith(_MESSAGE_CONSTRUCTION):
            return "skip", "message construction"
        return "fail", f"compile error: {ex.message}"
    got = expr(act)
    if want is CelError:
        if type(got) is CelError:
            return "pass", ""
        return "fail", f"expected an error, got {got!r}"
    if type(got) is CelError:
        return "fail", f"error {got.message}"
    if same(got, want):
        return "pass", ""
    return "fail", f"got {got!r}, want {want!r}"


def run_file(name: str) -> dict:
    data = json.loads((CONF_DIR / f"{name}.json").read_text())
    res = {"pass": 0, "fail": 0, "skip": 0, "failures": []}
    for section in data.get("section", []):
        for t in section.get("test", []):
            status, detail = run_case(t)
            res[status] += 1
            if status == "fail":
                res["failures"].append(f"{section['name']}/{t['name']}: {t['expr']!r}: {detail}")
    return res


def floors() -> dict:
    return json.loads(FLOOR_FILE.read_text()) if FLOOR_FILE.exists() else {}


_RESULTS: dict[str, dict] = {}


@pytest.fixture(scope="module", autouse=True)
def _summary(request: pytest.FixtureRequest):
    yield
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    if tr is None or not _RESULTS:
        return
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    with capman.global_and_fixture_disabled() if capman else _nullcontext():
        tr.write_line("")
        tr.write_line("CEL conformance (plain cases)      pass  fail  skip  floor")
        for name in sorted(_RESULTS):
            r = _RESULTS[name]
            tr.write_line(
                f"  {name:<30} {r['pass']:>6}{r['fail']:>6}{r['skip']:>6}{floors().get(name, 0):>7}"
            )
        tr.write_line(f"  {'total':<30} {sum(r['pass'] for r in _RESULTS.values()):>6}")


@pytest.mark.parametrize("name", FILES or ["<none>"])
def test_conformance_file(name: str) -> None:
    require(CONF_DIR)  # (skips, or fails under STOPLINE_REQUIRE_SHARED=1, without the data)
    res = run_file(name)
    _RESULTS[name] = res
    floor = floors().get(name, 0)
    assert res["pass"] >= floor, (
        f"{name}: {res['pass']} passed, below the recorded floor {floor}; failures:\n"
        + "\n".join(res["failures"][:50])
    )


if __name__ == "__main__":
    update = "--update-floor" in sys.argv
    verbose = "-v" in sys.argv
    only = [a for a in sys.argv[1:] if not a.startswith("-")]
    table = {}
    for name in only or FILES:
        r = run_file(name)
        table[name] = r["pass"]
        print(f"{name:<20} pass {r['pass']:>4} fail {r['fail']:>4} skip {r['skip']:>4}")
        if verbose:
            for f in r["failures"]:
                print("   ", f)
    print("total pass", sum(table.values()))
    if update:
        FLOOR_FILE.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
        print("wrote", FLOOR_FILE)
