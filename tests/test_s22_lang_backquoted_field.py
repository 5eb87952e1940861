"""A backquoted field name (CEL 2024: ``action.`x-request-id` ``) cannot be written inside a
``.policy`` condition, which is itself delimited by backquotes: the second backquote ends
the condition. The diagnostic says so and names the form that works (``action["..."]``),
instead of the generic "names are written with `_`", which points at the wrong fix."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from policy_engine import load
from policy_engine.cli import main

POLICY = """workflow "w" {{
  version "1"
  owners {{
    business "b"
    technical "t"
  }}
  default deny
  action send {{
    reversible partial via "x.undo" within 30d
    deny odd when `{cond}`
  }}
}}
"""


def test_a_backquoted_field_in_a_condition_names_the_form_that_works(tmp_path: Path, snapshot, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.policy").write_text(POLICY.format(cond='action.`x-request-id` == "a"'))
    r = CliRunner().invoke(main, ["check", "--no-color", "x.policy"])
    assert r.exit_code == 1
    assert 'write `action["x-request-id"]`' in r.output
    assert r.output == snapshot


def test_the_form_it_names_loads_and_reads_the_field(tmp_path: Path) -> None:
    (tmp_path / "x.policy").write_text(POLICY.format(cond='action["x-request-id"] == "a"'))
    eng = load(tmp_path / "x.policy")
    assert eng.evaluate({"workflow": "w", "type": "send", "x-request-id": "a"}).effect == "deny"
    assert eng.evaluate({"workflow": "w", "type": "send", "x-request-id": "b"}).effect == "deny"  # (the default)
    assert [r.name for r in eng.evaluate({"workflow": "w", "type": "send", "x-request-id": "a"}).matched] == ["odd"]


def test_a_dash_elsewhere_keeps_its_own_hint(tmp_path: Path) -> None:
    (tmp_path / "x.policy").write_text(POLICY.replace("deny odd", "deny odd-one").format(cond="true"))
    r = CliRunner().invoke(main, ["check", "--no-color", str(tmp_path / "x.policy")])
    assert r.exit_code == 1 and "names are written with `_`: `odd_one`" in r.output
