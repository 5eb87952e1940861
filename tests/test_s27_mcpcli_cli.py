"""Audit (s27) of the top-level CLI: `stopline eval`/`explain` read the question as the
server reads a body (a key given twice, a number out of range: refused, at file:line:col
with a caret), `test --min-coverage nan` is refused at the option, and a `-k` expression
nested past the parser's depth is a usage error, not an internal error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from policy_engine.cli import main

ROOT = Path(__file__).resolve().parent.parent
POLICIES = str(ROOT / "policies")
GATE = json.loads((ROOT / "examples" / "questions" / "gate.json").read_text(encoding="utf-8"))


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def question(tmp_path: Path, text: str, prefix: bytes = b"") -> str:
    f = tmp_path / "q.json"
    f.write_bytes(prefix + text.encode("utf-8"))
    return str(f)


@pytest.mark.parametrize("cmd", ["eval", "explain"])
def test_a_key_given_twice_is_refused_where_it_is_given(tmp_path, cmd):
    text = json.dumps(GATE, indent=1).replace('"confidence": 0.97', '"confidence": 0.10,\n  "confidence": 0.97')
    r = run(cmd, POLICIES, "-i", question(tmp_path, text, b"\xef\xbb\xbf"))
    # before: exit 0, answered on the last value in silence (the server refuses such a body)
    assert r.exit_code == 2, r.output
    line = next(n for n, t in enumerate(text.splitlines(), 1) if '"confidence": 0.97' in t)
    col = text.splitlines()[line - 1].index('"confidence"') + 1
    first = r.stderr.splitlines()[0]
    assert first.endswith(f"q.json:{line}:{col}: invalid JSON: the key \"confidence\" is given twice in one "
                          "object: which value is meant?"), first
    assert r.stderr.splitlines()[2].index("^") == r.stderr.splitlines()[1].index('"confidence": 0.97')
    assert r.stdout == ""


@pytest.mark.parametrize("number, says", [
    ("1e999", "the number 1e999 is out of range (numbers must be finite)"),
    ("-1E400", "the number -1E400 is out of range (numbers must be finite)"),
    ("9" * 5000, "an integer of 5000 digits is too long to read"),
    ("NaN", "`NaN` is not JSON (numbers must be finite)"),
])
def test_a_number_out_of_range_is_refused_where_it_is(tmp_path, number, says):
    text = '{"question": "gate",\n "action": {"workflow": "refunds", "type": "issue_refund", "amount": ' + number + "}}"
    r = run("eval", POLICIES, "-i", question(tmp_path, text))
    # before: 1e999 was answered (deny, exit 0); 5000 digits said "use sys.set_int_max_str_digits()";
    # none said where
    assert r.exit_code == 2 and r.stdout == "", r.output
    col = text.splitlines()[1].index(number[:5]) + 1
    assert r.stderr.splitlines()[0].endswith(f"q.json:2:{col}: invalid JSON: {says}"), r.stderr
    assert "set_int_max_str_digits" not in r.stderr


def test_a_question_within_the_rules_is_still_answered(tmp_path):
    q = {**GATE, "action": {**GATE["action"], "confidence": 0.5, "n": 10**30, "note": '"a": 1, "a": 2 1e999'}}
    r = run("eval", POLICIES, "-i", question(tmp_path, json.dumps(q)))
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["effect"] in ("allow", "deny", "require_approval")


@pytest.mark.parametrize("value", ["nan", "NaN", "-nan"])
def test_min_coverage_nan_is_a_usage_error_at_the_option(tmp_path, value):
    # before: accepted by the option (FloatRange lets nan through), the suites run, then refused
    r = run("test", str(tmp_path / "none"), "--min-coverage", value)
    assert r.exit_code == 2
    assert "Invalid value for '--min-coverage': nan is not a percentage (give one from 0 to 100)" in r.stderr
    assert "no *.policy-test.yaml" not in r.stderr  # refused before anything else is read


def test_a_keyword_nested_past_the_parsers_depth_is_a_usage_error():
    deep = "(" * 3000 + "refund" + ")" * 3000
    r = CliRunner().invoke(main, ["test", str(ROOT / "examples" / "suites"), "-k", deep])
    # before: "stopline: internal error: RecursionError: ... this is a bug in Stopline"
    assert r.exit_code == 2 and "internal error" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: -k '((((")
    assert "is not a valid expression: `(` and `not` nest more than 100 deep" in r.stderr
    assert len(r.stderr.splitlines()[0]) < 200
