"""A diagnostic about a path as a whole (a path that does not exist) has no position: no
`policies/:1:1` in its text, its rendering or its JSON; and `serve -p` reads
STOPLINE_POLICIES, as `rt` does, with the POLICIES given winning over it."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from runtime_support import write_policy

import policy_engine
from policy_engine.cli import main
from policy_engine.diagnostics import Diagnostic, PolicyError, render
from policy_engine.source import SourceFile, Span


# 1. the span itself
def test_a_span_with_no_position_prints_the_path_alone_and_null_in_json():
    sp = Span.nowhere("policies/")
    assert not sp.located and str(sp) == "policies/"
    assert sp.to_json() == {"file": "policies/", "line": None, "col": None, "end_line": None, "end_col": None}
    located = SourceFile("a.policy", "workflow\n").span(0, 8)  # a real span at 1:1 is unchanged
    assert located.located and str(located) == "a.policy:1:1"
    assert located.to_json() == {"file": "a.policy", "line": 1, "col": 1, "end_line": 1, "end_col": 9}


def test_a_diagnostic_with_no_position_renders_no_line_and_no_caret():
    d = Diagnostic("E006", "error", "no such file or directory: policies/", Span.nowhere("policies/"),
                   help="name the files or the directories that hold the .policy files")
    # even with the file's text at hand: there is no line of it to show
    for source in (None, SourceFile("policies/", "workflow \"w\" {}\n")):
        assert render(d, source) == (
            "error[E006]: no such file or directory: policies/\n"
            " --> policies/\n"
            "  = help: name the files or the directories that hold the .policy files"
        )


def test_the_label_of_a_diagnostic_with_no_position_is_not_lost():
    d = Diagnostic("W206", "warning", "the policy set declares no workflow", Span.nowhere("a.policy"),
                   label="every action evaluated against it is denied", notes=("a note",), help="declare one")
    assert render(d, None) == (
        "warning[W206]: the policy set declares no workflow\n"
        " --> a.policy\n"
        "  = note: every action evaluated against it is denied\n"
        "  = note: a note\n"
        "  = help: declare one"
    )


def test_the_summary_of_a_policy_error_with_no_position():
    missing = Diagnostic("E006", "error", "no such file or directory: policies/", Span.nowhere("policies/"))
    assert str(PolicyError([missing])) == "no such file or directory: policies/"  # the path named once
    big = Diagnostic("E005", "error", "policy file is 2000000 bytes; the limit is 1000000", Span.nowhere("big.policy"))
    assert str(PolicyError([big])) == "big.policy: policy file is 2000000 bytes; the limit is 1000000"


# 2. policy_engine.load on a missing path: the diagnostic, not just its text
def test_load_of_a_missing_path_gives_a_diagnostic_with_no_position(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PolicyError) as e:
        policy_engine.load("policies/")
    (d,) = e.value.diagnostics
    assert d.code == "E006" and not d.span.located
    assert d.to_json()["file"] == "policies/" and d.to_json()["line"] is None and d.to_json()["col"] is None
    assert str(e.value) == "no such file or directory: policies/"
    text = e.value.render()
    assert ":1:1" not in text and " --> policies/\n" in text and "^" not in text, text


def test_load_of_several_paths_names_the_missing_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = write_policy(tmp_path)
    with pytest.raises(PolicyError) as e:
        policy_engine.load([good, "gone/"])
    (d,) = e.value.diagnostics
    assert d.span.path == "gone/", d.span  # not the first path given, which is there
    assert str(e.value) == "no such file or directory: gone/"


# 3. `serve -p` reads STOPLINE_POLICIES; POLICIES given wins over it
@pytest.fixture
def served(monkeypatch):
    pytest.importorskip("uvicorn")
    import uvicorn

    seen: list[str] = []

    def run(app, **kw):  # the server as configured, not started
        seen.append(app.state.config.policies)
        app.state.close()

    monkeypatch.setattr(uvicorn, "run", run)
    return seen


def test_serve_reads_the_policies_from_the_environment(tmp_path, monkeypatch, served):
    pol = str(write_policy(tmp_path))
    monkeypatch.setenv("STOPLINE_POLICIES", pol)
    r = CliRunner().invoke(main, ["serve", "--port", "0"])
    assert r.exit_code == 0, r.output
    assert served == [pol]


def test_serve_policies_given_win_over_the_environment(tmp_path, monkeypatch, served):
    pol = str(write_policy(tmp_path))
    monkeypatch.setenv("STOPLINE_POLICIES", str(tmp_path / "elsewhere"))  # not there: read, it would fail
    r = CliRunner().invoke(main, ["serve", pol, "--port", "0"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["serve", "-p", pol, "--port", "0"])
    assert r.exit_code == 0, r.output
    assert served == [pol, pol]
    # both on the command line is still a slip, the variable set or not
    both = CliRunner().invoke(main, ["serve", pol, "-p", pol])
    assert both.exit_code == 2 and "not both" in both.output, both.output


def test_serve_with_no_policies_at_all_names_the_variable_too(monkeypatch):
    pytest.importorskip("uvicorn")
    monkeypatch.delenv("STOPLINE_POLICIES", raising=False)
    r = CliRunner().invoke(main, ["serve"])
    assert r.exit_code == 2 and "STOPLINE_POLICIES" in r.output and "-p/--policies" in r.output, r.output
