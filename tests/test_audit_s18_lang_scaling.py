"""Audit s18: two lints did work quadratic in the size of a policy file (found by the
mutation fuzzer, tests/test_audit_s18_lang_fuzz.py, on a rule repeated 500 times).

- W212 (`constant_errors`) looked, for every condition, through every error reported so far
  for one inside it; and
- W210 (`shadowing`) looked, for every rule, through every rule with the same condition for
  one that outranks it (and through every unconditional rule).

A file of 8,000 rules `require_approval rN by 1 nobody when `true`` (400 KB, within every
limit) took five minutes to check; it takes a second or two. The tests count the work
instead of timing it: the items the lints' `any(...)` consume, and the precedence lookups.
"""

from __future__ import annotations

import builtins

from policy_engine.language import lints
from policy_engine.language.loader import load_text

HEAD = 'roles [reviewer]\nconst c = 2\nworkflow "w" {\n  version "1"\n  owners { business "b" technical "t" }\n'
N = 1500


def _rules(line: str) -> str:
    body = "".join(line.format(i=i) for i in range(N))
    return HEAD + f'  action a {{\n    system "s"\n    reversible full via "x"\n{body}  }}\n}}\n'


def test_w212_does_not_scan_every_error_for_every_condition(monkeypatch):
    consumed = [0]

    def counting_any(items):
        for x in items:
            consumed[0] += 1
            if x:
                return True
        return False

    monkeypatch.setattr(lints, "any", counting_any, raising=False)
    # every rule has an error (an unknown role) outside its condition, and a condition that
    # reads only constants (so W212 evaluates it)
    res = load_text(_rules("    require_approval r{i} by 1 nobody when `policy.c > 1`\n"), "x.policy")
    assert [d.code for d in res.errors] == ["E110"] * N
    assert consumed[0] < 20 * N, consumed[0]  # was about N * N / 2
    assert builtins.any is not counting_any


def test_w210_does_not_scan_the_rules_of_one_condition_for_every_rule(monkeypatch):
    looked_up = [0]

    class Counting(dict):
        def __getitem__(self, k):
            looked_up[0] += 1
            return super().__getitem__(k)

    monkeypatch.setattr(lints, "PRECEDENCE", Counting(lints.PRECEDENCE))
    # one condition, one effect: no rule outranks another, so each looked through them all
    text = _rules("    require_approval r{i} by 1 reviewer when `action.x > 1`\n")
    res = load_text(text, "x.policy")
    assert not res.errors and not [d for d in res.diagnostics if d.code == "W210"]
    assert looked_up[0] < 20 * N, looked_up[0]  # was about N * N
    # the first rule outranking the others shadows each of them
    res = load_text(text.replace("    require_approval r0 by 1 reviewer ", "    deny r0 ", 1), "x.policy")
    w210 = [d for d in res.diagnostics if d.code == "W210"]
    assert len(w210) == N - 1 and not res.errors
    assert all("shadowed by deny rule `r0` (the same condition)" in d.message for d in w210)


def test_w210_still_names_the_first_outranking_rule_in_order():
    text = HEAD + ('  action a {\n    system "s"\n    reversible full via "x"\n'
                   "    allow a1 when `action.x > 1`\n"
                   "    require_approval r1 by 1 reviewer when `action.x > 1`\n"
                   "    deny d1 when `action.x > 1`\n"
                   "    deny d2 when `action.x > 1`\n"
                   "    require_approval u1 by 1 reviewer when `true`\n"
                   "    allow a2 when `action.y`\n"
                   "  }\n}\n")
    res = load_text(text, "x.policy")
    got = sorted(d.message for d in res.diagnostics if d.code == "W210")
    assert got == [
        "rule `a1` is shadowed by require_approval rule `r1` (the same condition): it can never decide",
        "rule `a2` is shadowed by require_approval rule `u1` (an unconditional condition): it can never decide",
        "rule `r1` is shadowed by deny rule `d1` (the same condition): it can never decide",
    ]
