"""A bulk rollback's select that does not compile points at the slip (session 27): the
line holding it, a caret under it, and `line L, column C` when the select has several
lines. Before, the caret was put under the whole text as one line: for a select written
on two lines (`$'...\\n...'` in a shell, a long select in a JSON request), `column 54` and a
caret past the end of the wrong line; a tab before the slip shifted the caret too."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import policy_path, rt  # noqa: F401  (fixtures)

from policy_engine.cli import main
from policy_engine.runtime import RuntimeUsageError


def _error(rt, select: str) -> list[str]:  # noqa: F811
    with pytest.raises(RuntimeUsageError) as info:
        rt.request_bulk_rollback(select, "customer_request", "rita", "r", dry_run=True)
    return str(info.value).split("\n")


def test_a_select_on_two_lines_shows_the_line_of_the_slip_with_the_caret_under_it(rt):  # noqa: F811
    head, line, caret = _error(rt, 'original.type == "send" &&\n  original.receipt.run == )')
    assert head == "the select does not compile: unexpected `)` (line 2, column 27)"
    assert line == "    original.receipt.run == )"
    assert caret.index("^") == line.index(")") and caret.strip() == "^"


def test_a_one_line_select_keeps_its_column_and_a_tab_before_the_slip_keeps_the_caret_under_it(rt):  # noqa: F811
    head, line, caret = _error(rt, 'original.type ==\t"send" && original.x +* 2')
    assert head == "the select does not compile: unexpected `*` (column 40)"
    assert line == '  original.type ==\t"send" && original.x +* 2'
    # the tab is kept in the caret's line: shown on a terminal, the caret is under the `*` whatever its tab stops
    assert caret == "  " + " " * len("original.type ==") + "\t" + " " * len('"send" && original.x +') + "^"
    head, line, caret = _error(rt, "original.type ==")
    assert head == "the select does not compile: unexpected end of expression (column 17)"
    assert caret == "  " + " " * 16 + "^"


def test_the_command_shows_the_line_of_the_slip(rt, ledger_url, policy_path):  # noqa: F811
    r = CliRunner().invoke(main, ["rollback", "--select", 'original.type == "send" &&\r\n original.x +* 2',
                                  "--scenario", "customer_request", "--requested-by", "a", "--reason", "r",
                                  "-p", str(policy_path), "--ledger", ledger_url, "--dry-run"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    lines = r.output.rstrip("\n").split("\n")
    assert lines[-3].endswith("unexpected `*` (line 2, column 14)")
    assert lines[-2] == "   original.x +* 2"
    assert lines[-1].index("^") == lines[-2].index("*")
