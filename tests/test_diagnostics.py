"""Golden diagnostics: every producible code has a case under tests/cases/diagnostics.

Each case `<code>_<name>.policy` sits beside `<code>_<name>.expected` (the rendered
text, refreshed with `python tests/update_golden.py`); where each diagnostic points is
asserted separately from the `# expect: CODE LINE:COL` lines written in the case.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from update_golden import CASES, ROOT, expected_locations, load_case, render_diagnostics_case

from policy_engine import diagnostics
from policy_engine.cli import main
from policy_engine.language.loader import MAX_FILE_BYTES, load_paths, load_text

CASE_FILES = sorted((CASES / "diagnostics").glob("*.policy"))
BROKEN = sorted((ROOT / "tests" / "broken").glob("*.policy"))
# Codes that no policy text can produce: E006 is a usage error (exit 2).
NOT_FROM_TEXT = {"E006"}


def ids(paths):
    return [p.stem for p in paths]


@pytest.mark.parametrize("path", CASE_FILES, ids=ids(CASE_FILES))
def test_rendered_text_matches_golden(path: Path) -> None:
    expected = path.with_suffix(".expected").read_text(encoding="utf-8")
    assert render_diagnostics_case(path) == expected, "run `python tests/update_golden.py` and review the diff"


@pytest.mark.parametrize("path", CASE_FILES, ids=ids(CASE_FILES))
def test_structure(path: Path) -> None:
    code = path.stem.split("_", 1)[0]
    want = expected_locations(path)
    assert want, f"{path.name} has no `# expect:` line"
    result = load_case(path)
    got = [(d.code, d.span.line, d.span.col) for d in result.diagnostics]
    assert sorted(got) == sorted(want)
    assert any(d.code == code for d in result.diagnostics)
    for d in result.diagnostics:
        assert d.code in diagnostics.CODES
        assert d.severity == ("warning" if d.code.startswith("W") else "error")
        assert d.span.path == path.relative_to(ROOT).as_posix()
        assert d.message and not d.message.endswith(".") and not d.message[0].isupper()


def test_every_code_has_a_case() -> None:
    covered = {p.stem.split("_", 1)[0] for p in CASE_FILES}
    assert set(diagnostics.CODES) - NOT_FROM_TEXT - covered == set()


def test_goldens_are_up_to_date() -> None:
    from update_golden import main as update

    assert update(["--check"]) == 0


def test_style_example_unknown_effect() -> None:
    """The bar from STYLE.md: code, caret under the word, label, did-you-mean help."""
    text = render_diagnostics_case(CASES / "diagnostics" / "E102_unknown_effect.policy")
    assert "error[E102]: unknown effect `permit`" in text
    assert (
        "    permit when `action.amount > 100.0`\n   |     ^^^^^^ expected `allow`, `require_approval` or `deny`"
        in text
    )
    assert "= help: did you mean `allow`?" in text


def test_cycle_is_spelled_out() -> None:
    result = load_case(CASES / "diagnostics" / "W201_side_effect_cycle.policy")
    (d,) = result.diagnostics
    assert d.message == "side effects form a cycle: log_activity -> send_reply -> log_activity"
    assert len(d.notes) == 2


def test_cel_error_points_into_the_condition() -> None:
    result = load_case(CASES / "diagnostics" / "E101_cel_syntax.policy")
    (d,) = result.diagnostics
    src = result.sources[d.span.path]
    assert src.text[d.span.start] == ")"


def test_file_size_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.policy"
    big.write_text("# padding\n" * (MAX_FILE_BYTES // 10 + 1))
    result = load_paths([big])
    (d,) = result.diagnostics
    assert (d.code, str(d.span), d.span.to_json()["line"]) == ("E005", str(big), None)  # the file, no position
    assert "the limit is" in d.message


def test_no_policy_files_is_a_usage_error(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["check", str(tmp_path)])
    assert r.exit_code == 2
    assert "no .policy files found" in r.output


def test_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["check", str(tmp_path / "nope.policy")])
    assert r.exit_code == 2


def test_json_format_has_the_same_data() -> None:
    import json

    path = CASES / "diagnostics" / "E110_unknown_role_in_rule.policy"
    r = CliRunner().invoke(main, ["check", "--format", "json", str(path)])
    assert r.exit_code == 1
    payload = json.loads(r.output)
    (d,) = payload["diagnostics"]
    assert (d["code"], d["line"], d["col"], d["help"]) == ("E110", 11, 27, "did you mean `reviewer`?")


# ------------------------------------------------------------------ broken files via the CLI
@pytest.mark.parametrize("path", BROKEN, ids=ids(BROKEN))
def test_check_reports_broken_file(path: Path) -> None:
    r = CliRunner().invoke(main, ["check", "--no-color", str(path)])
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert r.exit_code == 1
    assert "Traceback" not in r.output
    assert f"{path}:" in r.output
    lines = r.output.splitlines()
    assert any(ln.lstrip(" 0123456789").startswith("| ") and "^" in ln for ln in lines), r.output


def test_check_broken_file_in_a_real_process() -> None:
    import subprocess
    import sys

    path = ROOT / "tests" / "broken" / "E102.policy"
    rel = path.relative_to(ROOT).as_posix()
    p = subprocess.run(
        [sys.executable, "-m", "policy_engine.cli", "check", "--no-color", rel],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 1
    assert "Traceback" not in p.stdout + p.stderr
    assert f"{rel}:11:5" in p.stdout
    assert "^^^^^^" in p.stdout


def test_policy_error_carries_every_diagnostic() -> None:
    from policy_engine.language.loader import require_ok

    text = (CASES / "diagnostics" / "E110_unknown_role_in_authorize.policy").read_text()
    with pytest.raises(diagnostics.PolicyError) as ei:
        require_ok(load_text(text, "x.policy"))
    assert [d.code for d in ei.value.diagnostics] == ["W205", "E110", "E110"]
    assert "x.policy:14:17" in str(ei.value)
    assert "^" in ei.value.render()


def test_every_code_is_documented() -> None:
    doc = (ROOT / "docs" / "diagnostics.md").read_text(encoding="utf-8")
    for code, title in diagnostics.CODES.items():
        assert f"#### {code} — {title}" in doc


def test_unreadable_files_show_their_line_and_control_characters_are_neutralised(tmp_path) -> None:
    """E004 at offset 0 still shows the line with a caret; terminal escapes and bidi
    controls in a shown line are printed as U+FFFD, one for one (the caret stays aligned)."""
    (tmp_path / "nul.policy").write_bytes(b"\x00workflow")
    (tmp_path / "esc.policy").write_bytes(b'workflow "x" {\n  sytem \x1b[31m "x"\n}\n')
    res = CliRunner().invoke(main, ["check", "--no-color", str(tmp_path)])
    assert res.exit_code == 1
    out = res.output
    assert "nul.policy:1:1" in out and "1 | \ufffdworkflow" not in out  # NUL shown as a space
    assert "1 |  workflow" in out and "^ NUL byte" in out
    assert "\x1b" not in out and "sytem \ufffd[31m" in out
