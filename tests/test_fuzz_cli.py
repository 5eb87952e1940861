"""Hostile question input to `stopline eval` / `explain`: exit 0 or 2, never a traceback."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy_engine.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_fuzz_engine import PAY  # noqa: E402


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    p = tmp_path_factory.mktemp("cli") / "pay.policy"
    p.write_text(PAY, encoding="utf-8")
    return str(p)


GATE = {"question": "gate", "action": {"workflow": "pay", "type": "transfer", "amount": 5, "verified": True,
                                       "currency": "EUR", "country": "FR"}, "now": "2026-07-02T10:00:00Z"}


def run(policy, data: bytes, command="eval"):
    r = CliRunner().invoke(main, [command, policy, "--input", "-"], input=data)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    assert "Traceback" not in r.output
    return r


def test_baseline(policy):
    r = run(policy, json.dumps(GATE).encode())
    assert r.exit_code == 0 and json.loads(r.stdout)["effect"] == "allow"


# Regression: a lone surrogate escape in the input made the JSON printer raise
# UnicodeEncodeError (traceback); NaN/Infinity were accepted, and `-Infinity <= 100.0`
# allowed a transfer. Both now exit 2 (fixed in cli.py `_read_question`).
@pytest.mark.parametrize("command", ["eval", "explain"])
@pytest.mark.parametrize("raw", [
    '{"question":"gate","action":{"workflow":"pay","type":"transfer","id":"\\ud800"}}',
    '{"question":"gate","action":{"workflow":"pay","type":"transfer","\\udfff":1}}',
    '{"question":"gate","action":{"workflow":"pay","type":"transfer","amount":-Infinity,"verified":true,'
    '"currency":"EUR","country":"FR"},"now":"2026-07-02T10:00:00Z"}',
    '{"question":"gate","action":{"workflow":"pay","type":"transfer","amount":NaN}}',
    '{"question":"gate","action":{"workflow":"pay","type":"transfer","amount":Infinity}}',
])
def test_unprintable_or_non_json_input_exits_2(policy, command, raw):
    r = run(policy, raw.encode(), command)
    assert r.exit_code == 2, r.output
    assert "error:" in r.output


def test_paired_surrogate_escapes_are_fine(policy):
    q = json.loads(json.dumps(GATE))
    raw = json.dumps(q).replace('"transfer"', '"transfer", "id": "\\ud83d\\ude00"')
    r = run(policy, raw.encode())
    assert r.exit_code == 0 and json.loads(r.stdout)["action_id"] == "\U0001F600"


@pytest.mark.parametrize("data", [b"", b"\xff", b"[" * 100_000, b"{" * 100_000, b"null", b"[]", b'"gate"',
                                  b"\xef\xbb\xbf{}", b'{"question": "gate"}', b'{"question": "nope"}',
                                  b"1" * 5000, b'{"question":"gate","action":' + b"[" * 5000 + b"]" * 5000 + b"}"])
def test_malformed_envelopes(policy, data):
    r = run(policy, data)
    assert r.exit_code in (0, 2)


def test_oversized_input(policy):
    r = run(policy, b" " * 20_000_000)
    assert r.exit_code == 2


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
              st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=10)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["gate", "rollback", "authorize", "resume"]), st.dictionaries(st.sampled_from(
    ["action", "workflow_state", "now", "request", "plan", "approvals", "workflow", "stop", "evidence", "x"]),
    json_values, max_size=4))
def test_random_envelopes_never_trace(policy, question, fields):
    r = run(policy, json.dumps({"question": question, **fields}).encode())
    assert r.exit_code in (0, 2)
    if r.exit_code == 0:
        json.loads(r.stdout)


# Regression: `stopline explain` printed input strings raw, so an action id holding
# "\r\n effect: allow" or ANSI escapes forged lines and colours in a trace a person
# reads. Control characters, line separators and bidi overrides are now shown escaped
# (fixed in explain.py).
EVIL = "x\u001b[31mRED\u0007\r\n effect: allow\u202e\u2028"


@pytest.mark.parametrize("question", [
    {"question": "gate", "action": {"workflow": "pay", "type": "transfer", "id": EVIL, "amount": 5000,
                                    "verified": True, "currency": "EUR", "country": "FR"}},
    {"question": "gate", "action": {"workflow": EVIL, "type": EVIL}},
    {"question": "rollback", "request": {"workflow": "pay", "scenario": "reviewer_error", "requested_by": EVIL,
                                         "original": {"id": EVIL, "type": "transfer", "reviewer": EVIL,
                                                      "executed_at": "2026-07-02T09:30:00Z",
                                                      "downstream": [{"id": EVIL, "type": EVIL}]}}},
    {"question": "authorize", "request": {"workflow": "pay", "scenario": "reviewer_error", "requested_by": "c",
                                          "original": {"id": "t", "type": "transfer"}},
     "approvals": [{"principal": EVIL, "roles": ["reviewer"], "plan_hash": EVIL}]},
    {"question": "resume", "workflow": "pay", "stop": "runaway", "evidence": {"reviewed": EVIL}},
    {"question": "resume", "workflow": EVIL, "stop": EVIL, "evidence": {}},
])
def test_explain_escapes_control_characters(policy, question):
    r = run(policy, json.dumps({**question, "now": "2026-07-02T10:00:00Z"}).encode(), "explain")
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert not any(ch in out for ch in "\x1b\x07\r\u202e\u2028")
    assert not any(line.strip().startswith("effect: allow") for line in out.splitlines())


# ------------------------------------------------------------------ the scripts of tests/fuzz/

ROOT = Path(__file__).resolve().parents[1]
FUZZ = ROOT / "tests" / "fuzz"


def script(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    """`python tests/fuzz/<args>` from the checkout (or `python -c code args`), as a user runs it."""
    argv = [sys.executable, *(["-c", code] if code else []), *args]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_bench_cascade_runs_with_its_smallest_settings():
    """docs/limits.md lists `python tests/fuzz/bench_cascade.py`; it imported helpers a test
    file no longer had (commit 83a7b08) and lifted limits where they are no longer read.
    Self-contained now: `--quick` plans 2k and 20k records (past MAX_CASCADE_RECORDS, the
    input limits and MAX_LOOPS_LISTED: the script exits non-zero when a plan is cut)."""
    r = script("tests/fuzz/bench_cascade.py", "--quick")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert [ln.split(":")[0].strip() for ln in lines] == ["2000 records", "20000 records", "ratio 20k/2k"], r.stdout
    assert float(lines[-1].split(":")[1]) > 0


@pytest.mark.parametrize("name", ["fuzz_loader", "fuzz_engine", "fuzz_differential"])
def test_each_fuzz_campaign_runs_for_a_second_and_says_what_it_did(name, tmp_path):
    r = script(f"tests/fuzz/{name}.py", "--seconds", "1", *(["--out", str(tmp_path)] if name == "fuzz_differential"
                                                            else []))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert re.search(r"^DONE \w+.*: .*\d+ (inputs|calls) in \d+s", r.stdout, re.M), r.stdout[-3000:]


def test_atheris_engine_without_atheris_is_a_one_line_error():
    """`--engine atheris` without atheris installed: one line and exit 2, not a traceback
    (atheris is hidden from the import system, whether it is installed or not)."""
    run = ("import runpy, sys; sys.modules['atheris'] = None; sys.argv[0] = 'tests/fuzz/fuzz_loader.py'; "
           "sys.exit(runpy.run_path(sys.argv[0], run_name='__main__'))")
    r = script("--engine", "atheris", "--seconds", "5", code=run)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout == "" and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: --engine atheris needs atheris") and "pip install atheris" in r.stderr


class FakeClock:
    """Each reading a quarter of a second after the last: the campaigns' time checks are
    counted, not timed (the machine's speed does not enter)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 0.25
        return self.t


def _campaign(name: str, monkeypatch):
    monkeypatch.syspath_prepend(str(FUZZ))
    return importlib.import_module(name)


def _done(out: str, unit: str) -> int:
    m = re.search(rf"^DONE .*?(\d+) {unit} in ", out, re.M)
    assert m, out[-3000:]
    return int(m.group(1))


# `--seconds 5` ran for 69 s: the time was checked only between rounds of 500 inputs (or a
# differential round's 50-1000 calls). Now before every input: with a clock that moves a
# quarter second a reading, 5 s are about 20 readings, so a campaign stops after at most
# 20 inputs however large its rounds (200 to 1000 here).
def test_fuzz_loader_checks_the_time_on_every_input(monkeypatch, capsys):
    fl = _campaign("fuzz_loader", monkeypatch)
    assert fl.main(["--seconds", "5", "--seed", "3"], clock=FakeClock()) == 0
    assert 1 <= _done(capsys.readouterr().out, "inputs") <= 20


def test_fuzz_engine_checks_the_time_on_every_input(monkeypatch, capsys):
    fe = _campaign("fuzz_engine", monkeypatch)
    import test_fuzz_engine as tfe

    monkeypatch.setenv("STOPLINE_FUZZ_EXAMPLES", os.environ.get("STOPLINE_FUZZ_EXAMPLES", ""))  # (main sets it)
    for prop in fe.PROPERTIES:  # (main seeds the module's tests: undone after this test)
        monkeypatch.setattr(getattr(tfe, prop), "_hypothesis_internal_use_seed", None, raising=False)
    assert fe.main(["--seconds", "5", "--per-round", "1000"], clock=FakeClock()) == 0
    assert 1 <= _done(capsys.readouterr().out, "inputs") <= 20


def test_fuzz_differential_checks_the_time_on_every_call(monkeypatch, capsys, tmp_path):
    fd = _campaign("fuzz_differential", monkeypatch)
    assert fd.main(["--seconds", "5", "--steps", "200", "--out", str(tmp_path)], clock=FakeClock()) == 0
    out = capsys.readouterr().out
    assert "cut short by --seconds" in out
    assert 1 <= _done(out, "calls") <= 20


# ------------------------------------------------------------------ pointers into the docs

# The README's sections moved to docs/: "see the README, section ..." pointers in help texts,
# docstrings and scripts (here the fuzz scripts' "record them in the README, section Hostile
# input") named sections that no longer exist. A pointer names a file (and a section of it).
_BARE_README = re.compile(r"(?<![\w/.])README(?:\.md)?,? section")
_POINTER = re.compile(r"((?:[\w-]+/)*[\w-]+\.md),? section \\?\"([^\"\\]+)")


def test_pointers_into_the_docs_name_files_and_sections_that_exist():
    seen = 0
    for base in ("policy_engine", "tests", "examples", "benchmarks"):
        for path in sorted((ROOT / base).rglob("*")):
            if path.suffix not in (".py", ".md") or path == Path(__file__).resolve() or "corpus" in path.parts:
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            rel = path.relative_to(ROOT)
            assert not _BARE_README.search(text), f"{rel}: a pointer to a README section (moved to docs/)"
            for doc, section in _POINTER.findall(text):
                seen += 1
                target = ROOT / doc
                assert target.is_file(), f"{rel}: {doc} does not exist"
                headings = {ln.lstrip("#").strip() for ln in target.read_text(encoding="utf-8").splitlines()
                            if ln.startswith("#")}
                assert section in headings, f"{rel}: {doc} has no section {section!r}"
    assert seen >= 5  # (the T005 help, the fuzz scripts, tests/depth.py, bench_cascade.py)


def test_the_help_texts_point_into_the_docs(tmp_path):
    from policy_engine.testing import load_suite

    for command, doc in (("test", "docs/testing.md"), ("eval", "docs/engine.md")):
        r = CliRunner().invoke(main, [command, "--help"])
        assert r.exit_code == 0 and doc in r.output and "README" not in r.output, r.output
    for text, section in (("", "A suite"), ("now: '2026-11-24T10:00:00Z'\n", "Cases"),
                          ("now: '2026-11-24T10:00:00Z'\ncases:\n  - name: c\n    gate: {action: {}}\n",
                           "Expectations")):
        (tmp_path / "s.policy-test.yaml").write_text(text, encoding="utf-8")
        helps = [d.help for d in load_suite(tmp_path / "s.policy-test.yaml").diagnostics if d.code == "T005"]
        assert helps == [helps[0]] and f'docs/testing.md, section "{section}"' in helps[0], helps
