"""Session 27, task R3LANG: defects of the language front end and of `stopline test -k`.

- two `resume when { ... }` blocks in one stop trigger were merged in silence (the criteria of
  both applied), where every other repeated statement is E121: now E121 at the second block;
- two `owners` blocks in a workflow gave a spurious E134 ("has no technical owner", when the
  second block gives one) next to the E121: now only the E121;
- the `-k` expression parser recursed: a 3000-deep `((((a))))` (or `not not ... a`) raised
  RecursionError out of `keyword_error` / `keyword_matches` (the CLI guarded it; a caller of
  `Runner.run(keyword=...)` from Python did not): now a depth limit with a clear error.
"""

from __future__ import annotations

from policy_engine.diagnostics import render_all
from policy_engine.language.loader import load_text
from policy_engine.testing import runner
from policy_engine.testing.runner import keyword_error, keyword_matches

ACTION = '  default deny\n  action a {\n    system "s"\n    allow when `true`\n  }\n'


def _errors(text: str) -> list:
    return [d for d in load_text(text, "p.policy").diagnostics if d.severity == "error"]


def test_a_second_resume_block_is_e121_at_that_block():
    text = ('roles [reviewer]\n\nworkflow "w" {\n  version "1"\n  owners { business "b" technical "t" }\n' + ACTION
            + '  stop s1 {\n    when `action.type == "a"`\n    severity high\n    owner "o"\n'
            '    resume when {\n      c1: `true`\n    }\n'
            '    resume when {\n      c2: `false`\n    }\n  }\n}\n')
    result = load_text(text, "p.policy")
    errors = [d for d in result.diagnostics if d.severity == "error"]
    assert [d.code for d in errors] == ["E121"], render_all(result.diagnostics, result.sources)
    (d,) = errors
    assert result.policy_set is None  # refused, not compiled with both blocks' criteria
    line = text[: d.span.start].count("\n") + 1
    blocks = [i + 1 for i, t in enumerate(text.splitlines()) if t == "    resume when {"]
    assert line == blocks[1]  # the second block
    assert "resume when" in d.message and d.label == "second declaration"
    assert d.help is not None and "p.policy:" in d.help  # where the first one is
    shown = render_all(result.diagnostics, result.sources)
    assert "p.policy:" in shown and "^" in shown


def test_one_resume_block_still_loads():
    text = ('roles [reviewer]\n\nworkflow "w" {\n  version "1"\n  owners { business "b" technical "t" }\n' + ACTION
            + '  stop s1 {\n    when `action.type == "a"`\n    severity high\n    owner "o"\n'
            '    resume when {\n      c1: `true`\n      c2: `false`\n    }\n  }\n}\n')
    result = load_text(text, "p.policy")
    assert result.policy_set is not None, render_all(result.diagnostics, result.sources)
    (stop,) = result.policy_set.workflows[0].stops
    assert [c.name for c in stop.criteria] == ["c1", "c2"]


def test_two_owners_blocks_are_e121_only():
    text = ('roles [reviewer]\n\nworkflow "w" {\n  version "1"\n  owners { business "b" }\n'
            '  owners { technical "t" }\n' + ACTION + '}\n')
    errors = _errors(text)
    assert [d.code for d in errors] == ["E121"], [(d.code, d.message) for d in errors]
    assert text[: errors[0].span.start].count("\n") + 1 == 6


def test_two_owners_blocks_missing_a_kind_in_both_still_say_so():
    text = ('roles [reviewer]\n\nworkflow "w" {\n  version "1"\n  owners { business "b" }\n'
            '  owners { business "c" }\n' + ACTION + '}\n')
    codes = sorted(d.code for d in _errors(text))
    assert codes == ["E121", "E134"]  # no technical owner anywhere: that E134 is real


def test_deeply_nested_k_expression_is_a_clear_error_not_recursion():
    for k in ["(" * 3000 + "a" + ")" * 3000, "not " * 3000 + "a"]:
        err = keyword_error(k)
        assert err is not None and "nest more than" in err
        assert keyword_matches(k, "s.yaml::a case") in (True, False)  # no RecursionError


def test_nesting_within_the_limit_still_selects():
    depth = runner.MAX_KEYWORD_DEPTH
    assert depth >= 50  # deep enough for any expression a person writes
    k = "(" * depth + "refund" + ")" * depth
    assert keyword_error(k) is None
    assert keyword_matches(k, "s.yaml::refund small")
    assert not keyword_matches(k, "s.yaml::reply")
    k = "not " * depth + "refund"  # an even count: `refund`
    assert keyword_error(k) is None and keyword_matches(k, "s.yaml::refund")
