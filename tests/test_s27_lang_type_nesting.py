"""Session 27 audit of the policy front end: the nesting limit (32 levels, E005 at the
bracket: docs/limits.md) counted `{` and `[` but not the `<` of a field type, so
`list<list<...>>` nested 300 deep passed the parser and `stopline check` ended in an internal
error ("Maximum serialization depth exceeded", from the policy hash); 40 deep was accepted,
deeper than any block may nest. A field type's `<` now counts as a level, on both parse paths
(the fast one, and Lark's for a file with a syntax error)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from policy_engine.cli import main
from policy_engine.language.loader import load_text
from policy_engine.limits import MAX_NESTING

HEAD = """\
workflow "w" {
  version "1"
  owners {
    business "b"
    technical "t"
  }
  default require_approval
  action send {
    system "s"
    irreversible
    fields {
      a: """
TAIL = """
    }
    deny big when `size(action.a) > 100`
  }
}
"""


def policy(n: int, slip: str = "") -> str:
    return HEAD + "list<" * n + "int" + ">" * n + TAIL + slip


@pytest.mark.parametrize("slip", ["", "\nbogus here\n"])
@pytest.mark.parametrize("n", [MAX_NESTING, 300, 3000])
def test_a_field_type_nested_past_the_limit_is_E005_at_its_bracket(n, slip):
    r = load_text(policy(n, slip), "p.policy")
    assert r.policy_set is None
    deep = [d for d in r.diagnostics if d.code == "E005"]
    assert len(deep) == 1, r.diagnostics
    d = deep[0]
    # workflow, action and fields are 3 levels: the type's (MAX_NESTING - 2)th `<` is one too many
    line = HEAD.count("\n") + 1
    col = len("      a: ") + (MAX_NESTING - 2) * len("list<")
    assert (d.span.line, d.span.col) == (line, col), d
    assert "nesting deeper than 32 levels" in d.message


def test_a_field_type_at_the_limit_loads_and_every_command_takes_it(tmp_path):
    r = load_text(policy(MAX_NESTING - 3), "p.policy")
    assert r.policy_set is not None, r.diagnostics
    (tmp_path / "p.policy").write_text(policy(300), encoding="utf-8")
    res = CliRunner().invoke(main, ["check", "--no-color", str(tmp_path / "p.policy")])
    assert res.exit_code == 1, res.output
    assert "internal error" not in res.output and "error[E005]" in res.output, res.output
    (tmp_path / "p.policy").write_text(policy(MAX_NESTING - 3), encoding="utf-8")
    for args in (["check"], ["fmt", "--check"], ["schema"]):
        res = CliRunner().invoke(main, [*args, str(tmp_path / "p.policy")])
        assert res.exit_code in (0, 1) and "internal error" not in res.output, (args, res.output)
