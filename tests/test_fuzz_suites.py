"""Hostile fixture suites (`.policy-test.yaml`): located diagnostics, never a traceback;
and `stopline fmt` never fails on hostile policy files."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))

import hostile_common as hc  # noqa: E402
from depth import examples

from policy_engine.cli import main  # noqa: E402
from policy_engine.language.fmt import format_source  # noqa: E402
from policy_engine.language.loader import decode_source  # noqa: E402
from policy_engine.testing import Runner, load_suite  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "policies" / "refunds.policy-test.yaml"

pytestmark = pytest.mark.skipif(not SEED.is_file(), reason="needs the shipped refunds suite")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("suites")
    for f in (ROOT / "policies").glob("*.policy"):
        shutil.copy(f, d / f.name)
    return d


def seed_text() -> str:
    return SEED.read_text(encoding="utf-8")


def load_and_run(workdir: Path, name: str, data: bytes):
    p = workdir / f"{name}.policy-test.yaml"
    p.write_bytes(data)
    suite = load_suite(p)
    for d in suite.diagnostics:
        assert d.span.line >= 1 and d.span.col >= 1 and d.span.path == suite.display
    result = Runner().run_suite(suite)
    str(result)
    return suite, result


HOSTILE = {
    "deep_flow": "suite: x\ncases: " + "[" * 100_000,
    "bomb": "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
            "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n",
    "python_tag": 'suite: !!python/object/apply:os.system ["echo pwned"]\n',
    "nul": 'suite: "a\x00b"\n',
    "selfref": "a: &a [*a]\n",
    "empty": "",
    "tab": "\tsuite: x",
    "dup_anchor": "a: &x 1\nb: &x 2\nc: *x\n",
    "complex_key": "? [a, b]\n: 1\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_yaml(workdir, name):
    suite, _ = load_and_run(workdir, name, HOSTILE[name].encode())
    assert suite.diagnostics


# Regression: a YAML `"\ud800"` escape became a lone surrogate and `stopline test
# --format json` crashed writing the report (fixed in testing.parse_yaml: T001).
@pytest.mark.parametrize("old,new", [("suite: refunds", 'suite: "r\\udc00"'),
                                     ("id: refund-5001", 'id: "\\ud800"'),
                                     ("workflow: refunds", '"\\ud800": 1\n      workflow: refunds')])
def test_unpaired_surrogate_in_a_suite_is_located(workdir, old, new):
    text = seed_text()
    assert old in text
    suite, _ = load_and_run(workdir, "surr", text.replace(old, new, 1).encode())
    (d,) = [d for d in suite.diagnostics if d.severity == "error"]
    assert d.code == "T001" and "surrogate" in d.message
    out = workdir / "report.json"
    r = CliRunner().invoke(main, ["test", str(workdir / "surr.policy-test.yaml"), "--format", "json",
                                  "--output", str(out)])
    assert r.exit_code == 2 and "Traceback" not in r.output and "bug in Stopline" not in r.output
    json.loads(out.read_text(encoding="utf-8"))


@pytest.mark.parametrize("value", ["9" * 5000, ".nan", "-.inf", "!!binary aGVsbG8=", "[" * 60 + "]" * 60,
                                   "2026-01-01", "~", "1e400"])
def test_hostile_values_in_inputs(workdir, value):
    text = seed_text()
    assert "amount: 80.0" in text
    suite, result = load_and_run(workdir, "values", text.replace("amount: 80.0", "amount: " + value, 1).encode())
    for fmt in ("text", "json", "junit"):
        r = CliRunner().invoke(main, ["test", str(workdir / "values.policy-test.yaml"), "--format", fmt,
                                      "--output", str(workdir / f"out.{fmt}")])
        assert r.exit_code in (0, 1, 2) and "Traceback" not in r.output and "bug in Stopline" not in r.output, fmt


@st.composite
def suite_mutations(draw):
    lines = seed_text().split("\n")
    for _ in range(draw(st.integers(1, 4))):
        j = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "dup", "value", "indent"]))
        if op == "delete":
            del lines[j]
        elif op == "dup":
            lines.insert(j, lines[draw(st.integers(0, len(lines) - 1))])
        elif op == "indent":
            lines[j] = draw(st.sampled_from(["", " ", "  ", "\t"])) + lines[j].lstrip()
        elif ":" in lines[j]:
            key = lines[j].split(":")[0]
            lines[j] = key + ": " + draw(st.sampled_from(
                ["null", "[]", "{}", "1e400", "-1", '"x"', "true", ".nan", "9" * 5000, "[[[[1]]]]", "2026-01-01",
                 "~", "&a x", "*a", "!!str 1", "|", '"\\ud83d\\ude00"']))
        if not lines:
            lines = [""]
    return "\n".join(lines).encode("utf-8")


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(suite_mutations())
def test_mutated_suites_never_raise(workdir, data):
    load_and_run(workdir, "mut", data)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.one_of(hc.policy_texts().map(lambda t: t.encode("utf-8", "surrogatepass")),
                 st.sampled_from(hc.seed_files()).flatmap(lambda s: hc.mutations(s[1].encode("utf-8")))))
def test_fmt_never_fails_on_hostile_policies(data):
    src, err = decode_source(data, "f.policy")
    if err is None:
        res = format_source(src)  # FormatError would be a formatter bug
        if res.formatted is not None:
            src2, err2 = decode_source(res.formatted.encode("utf-8"), "f.policy")
            assert err2 is None and format_source(src2).formatted == res.formatted


@pytest.mark.parametrize("value", ["[]", "{}", "[refunds]", "1", "true", "null"])
def test_a_workflow_that_is_not_a_name_is_reported_not_raised(workdir, value):
    # found by test_mutated_suites_never_raise: `workflow: []` reached a dict lookup with an
    # unhashable key while the suite was checked against the policy (TypeError)
    text = seed_text()
    suite, result = load_and_run(workdir, "wf", text.replace("workflow: refunds", "workflow: " + value, 1).encode())
    r = CliRunner().invoke(main, ["test", str(workdir / "wf.policy-test.yaml")])
    assert r.exit_code in (1, 2) and "Traceback" not in r.output and "bug in Stopline" not in r.output
