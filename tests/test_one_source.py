"""One source per fact (issue 13, item 3): the question schemas, timestamps and the limits each
have one definition, and what is documented or printed agrees with what is enforced."""

from __future__ import annotations

import ast
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from policy_engine import limits, timestamps
from policy_engine.cli import main

ROOT = Path(__file__).resolve().parents[1]
POL = str(ROOT / "policies")
QUESTIONS = ("GateQuestion", "RollbackQuestion", "AuthorizeQuestion", "ResumeQuestion")


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input)


# --- the question schemas: `stopline schema` prints what `stopline eval` accepts -------------------

@pytest.mark.parametrize("name", QUESTIONS)
def test_question_schema_refuses_what_eval_refuses(name):
    r = run("schema", name)
    assert r.exit_code == 0
    schema = json.loads(r.output)
    assert schema.get("additionalProperties") is False, f"{name}'s schema allows fields eval refuses"
    kind = schema["properties"]["question"]["const"]
    # every field the schema names is one eval accepts: a minimal valid envelope plus that field
    # is never refused as unknown, and a field the schema does not name always is
    base = {"gate": {"action": {}}, "rollback": {"request": {}}, "authorize": {"plan": {}},
            "resume": {"workflow": "w", "stop": "s"}}[kind]
    for field in schema["properties"]:
        envelope = {"question": kind, **base}
        envelope.setdefault(field, base.get(field, None))
        out = run("eval", POL, "--input", "-", input=json.dumps(envelope)).output
        assert "unknown field" not in out, (name, field, out)
    out = run("eval", POL, "--input", "-", input=json.dumps({"question": kind, **base, "bogus": 1})).output
    assert "unknown field for question" in out and "`bogus`" in out
    expected = re.search(r"\(expected (.*)\)", out).group(1)
    assert sorted(re.findall(r"`(\w+)`", expected)) == sorted(f for f in schema["properties"] if f != "question")


def test_question_models_forbid_extra_fields():
    from pydantic import ValidationError

    from policy_engine.models import GateQuestion

    with pytest.raises(ValidationError):
        GateQuestion.model_validate({"question": "gate", "action": {}, "bogus": 1})


# --- timestamps: the suite's `now` is read by the engine's parser ---------------------------------

def test_suite_now_without_seconds_is_refused_where_the_engine_would_refuse_it():
    """The suite check and the engine read `now` with one parser (timestamps.parse_ts): the
    T009/T006 regression of issue 13 (a `now` without seconds passed the suite check)."""
    from policy_engine.testing.suites import parse_time

    for text in ("2026-11-24T10:00Z", "2026-11-24", "2026-11-24T10:00:00"):
        assert parse_time(text) is None
        with pytest.raises(ValueError, match="not an RFC 3339 timestamp"):
            timestamps.parse_ts(text, "now")
    assert parse_time("2026-11-24 10:00:00Z") == datetime(2026, 11, 24, 10, tzinfo=UTC)


def test_one_parser_with_the_documented_difference():
    """The engine accepts a space for the `T` (RFC 3339 5.6); CEL's timestamp() does not."""
    assert timestamps.parse_rfc3339("2026-07-02 10:00:00+02:00", allow_space=True) == \
        datetime(2026, 7, 2, 8, tzinfo=UTC)
    with pytest.raises(ValueError):
        timestamps.parse_rfc3339("2026-07-02 10:00:00Z")
    with pytest.raises(ValueError):  # non-ASCII digits are not RFC 3339 digits
        timestamps.parse_rfc3339("202\u0661-07-02T10:00:00Z")
    t = timestamps.parse_rfc3339("2026-07-02T10:00:00.123456789Z")
    assert timestamps.fmt_ts(t) == "2026-07-02T10:00:00.123456Z"
    assert timestamps.format_rfc3339(t.replace(microsecond=500000), trim_fraction=True) == "2026-07-02T10:00:00.5Z"
    assert timestamps.parse_window("15m") == 900 and timestamps.format_cel_duration(
        timestamps.parse_cel_duration("1h1.5s")) == "3601.5s"


# --- limits: policy_engine/limits.py and docs/limits.md list the same constants ----------------------

def _limits_in_code() -> dict[str, int]:
    tree = ast.parse((ROOT / "policy_engine" / "limits.py").read_text(encoding="utf-8"))
    names = [t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)]
    return {n: getattr(limits, n) for n in names}


def _limits_in_docs() -> dict[str, str]:
    doc = (ROOT / "docs" / "limits.md").read_text(encoding="utf-8")
    start = doc.index("| constant | value | meaning |")
    rows = {}
    for line in doc[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1].strip("`")
    return rows


def test_every_constant_of_limits_py_is_in_docs_limits_md_and_back():
    code, docs = _limits_in_code(), _limits_in_docs()
    assert sorted(code) == sorted(docs), (
        f"only in limits.py: {sorted(set(code) - set(docs))}; only in docs/limits.md: {sorted(set(docs) - set(code))}")
    for name, value in code.items():
        assert docs[name].replace(",", "").replace("_", "") == str(value), (name, docs[name], value)


def test_the_enforcing_modules_read_limits_py():
    """The names older code and docs use are the same objects as limits.py's (no second number)."""
    from policy_engine import cel, cli
    from policy_engine.language import loader, lower, parser
    from policy_engine.testing import suites

    assert loader.MAX_FILE_BYTES == limits.MAX_FILE_BYTES and not hasattr(parser, "MAX_FILE_BYTES")  # once
    assert (loader.MAX_FILES, loader.MAX_CONDITIONS_PER_SET) == (limits.MAX_FILES, limits.MAX_CONDITIONS_PER_SET)
    assert (parser.MAX_NESTING, parser.MAX_SYNTAX_ERRORS) == (limits.MAX_NESTING, limits.MAX_SYNTAX_ERRORS)
    assert (lower.MAX_EXPRESSION_LENGTH, lower.MAX_RULES_PER_FILE) == (limits.MAX_EXPRESSION_LENGTH,
                                                                       limits.MAX_RULES_PER_FILE)
    assert cli.MAX_INPUT_BYTES == limits.MAX_INPUT_BYTES
    assert (suites.MAX_SUITE_BYTES, suites.MAX_SUITE_NODES) == (limits.MAX_SUITE_BYTES, limits.MAX_SUITE_NODES)
    lim = cel.DEFAULT_LIMITS
    assert (lim.max_expression_length, lim.max_nesting_depth, lim.max_iterations, lim.max_size) == (
        limits.CEL_MAX_EXPRESSION_LENGTH, limits.CEL_MAX_NESTING_DEPTH, limits.CEL_MAX_ITERATIONS, limits.CEL_MAX_SIZE)
    assert cel.REGEX_MAX_COST == limits.REGEX_MAX_COST


@pytest.mark.parametrize("old,template,bound", [
    ("within 60s", "within {}d", limits.MAX_WINDOW_SECONDS // 86400),
    ("cascade depth 2", "cascade depth {}", limits.MAX_CASCADE_DEPTH),
    ("by 1 reviewer", "by {} reviewer", limits.MAX_APPROVERS),
    ("= 500.0", "= {}", limits.INT64_MAX),
])
def test_policy_numbers_are_bounded_by_limits_py(old, template, bound):
    """At the bound a policy loads; one past it is E108 (the bound is limits.py's, nowhere else)."""
    from policy_engine.language.loader import load_text

    seed = (ROOT / "tests" / "fuzz" / "corpus" / "support.policy").read_text(encoding="utf-8")
    assert old in seed
    at = load_text(seed.replace(old, template.format(bound), 1), "seed.policy")
    assert at.policy_set is not None, [d.message for d in at.errors]
    past = load_text(seed.replace(old, template.format(bound + 1), 1), "seed.policy")
    assert [d.code for d in past.errors] == ["E108"]
