"""A newcomer's malformed question file: `stopline eval`/`explain` point at the mistake.

The error named line and column only ("invalid JSON: Expecting property name enclosed in
double quotes"); it now shows the line with a caret under the column, as `check` does for
a policy file, and still exits 2 without a traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from policy_engine.cli import main

POL = str(Path(__file__).resolve().parents[1] / "policies")

# a trailing comma, the commonest slip in a hand-written JSON question
TRAILING = (
    '{"question": "gate",\n'
    ' "now": "2026-11-24T10:00:00Z",\n'
    ' "action": {"workflow": "support-replies", "type": "send_customer_reply",}\n'
    "}\n"
)


@pytest.mark.parametrize("command", ["eval", "explain"])
def test_invalid_json_shows_the_line_and_a_caret(command: str, tmp_path: Path) -> None:
    q = tmp_path / "q.json"
    q.write_text(TRAILING)
    r = CliRunner().invoke(main, [command, POL, "--input", str(q)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    lines = r.output.splitlines()
    assert lines[0] == f"error: {q}:3:74: invalid JSON: Expecting property name enclosed in double quotes"
    assert lines[1] == "3 | " + TRAILING.splitlines()[2]
    assert lines[2] == "  | " + " " * 73 + "^"
    assert lines[1][lines[2].index("^")] == "}"  # the caret is under the stray `}`


def test_a_long_line_is_cut_around_the_column() -> None:
    pairs = ", ".join(f'"k{i}": {i}' for i in range(60))
    payload = '{"question": "gate", "action": {' + pairs + ', "x": tru}}'
    r = CliRunner().invoke(main, ["eval", POL, "--input", "-"], input=payload)
    assert r.exit_code == 2
    head, shown, caret = r.output.splitlines()[:3]
    assert head.startswith("error: -:1:") and "invalid JSON: Expecting value" in head
    assert len(shown) <= 4 + 100
    assert shown[caret.index("^"):].startswith("tru}}")


def test_rt_names_a_misspelt_argument(tmp_path: Path) -> None:
    """`stopline rt gate` with `actoin` said only "`gate` needs `action`"."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    r = CliRunner().invoke(main, ["rt", "gate", "-p", POL, "--ledger", url, "-i", "-"], input='{"actoin": {}}')
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert r.output.strip() == "error: `gate` needs `action` (did you mean `action`, not `actoin`?)"
    r = CliRunner().invoke(main, ["rt", "gate", "-p", POL, "--ledger", url, "-i", "-"], input='{"other": {}}')
    assert r.output.strip() == "error: `gate` needs `action`"  # nothing near: no guess
