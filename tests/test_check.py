"""Checker: name resolution, scopes, lints, across files."""

from __future__ import annotations

from policy_engine.language.check import cond_key
from policy_engine.language.loader import load_sources, load_text
from policy_engine.source import SourceFile

HEAD = 'workflow "w" {\n  version "1"\n  owners { business "B" technical "T" }\n'


def codes(text: str) -> list[str]:
    return [d.code for d in load_text(text, "x.policy").diagnostics]


def test_clean_policy_has_no_diagnostics_and_compiles_every_condition() -> None:
    text = ("roles [reviewer]\nconst limit = 100\n" + HEAD +
            '  action a {\n    system "s"\n    reversible full via "x"\n    prerequisite `!original.opened`\n'
            "    allow when `action.amount < policy.limit`\n"
            "    require_approval by 1 reviewer when `action.amount >= policy.limit`\n  }\n"
            '  stop s {\n    when `action.amount > 10000`\n    severity high\n    owner "o"\n'
            "    resume when { ok: `evidence.fixed && stop.severity == \"high\"` }\n"
            "    evidence { fixed: bool }\n  }\n"
            + "".join(f"  rollback {name} {{ authorize 1 reviewer distinct from original.reviewer }}\n"
                      for name in ("reviewer_error", "customer_request", "incident", "policy_reversal",
                                   "regulatory_order"))
            + "}\n")
    result = load_text(text, "x.policy")
    assert result.diagnostics == []
    conds = [r.condition for w in result.policy_set.workflows for a in w.actions for r in a.rules]
    assert all(cond_key(c) in result.compiled for c in conds)


def test_scopes_differ_by_kind_of_condition() -> None:
    text = HEAD + ('  action a {\n    system "s"\n    reversible full via "x"\n'
                   "    prerequisite `action.amount > 1`\n    deny when `original.x`\n  }\n}\n")
    ds = load_text(text, "x.policy").diagnostics
    assert [(d.code, d.message) for d in ds] == [
        ("E113", "`action` is not in scope in a prerequisite"),
        ("E113", "`original` is not in scope in a gate rule"),
    ]


def test_names_resolve_across_files() -> None:
    roles = SourceFile("roles.policy", "roles [reviewer]\nconst limit = 5\n")
    wf = SourceFile("wf.policy", HEAD + '  action a {\n    system "s"\n    reversible full via "x"\n'
                    "    require_approval by 1 reviewer when `action.n > policy.limit`\n  }\n}\n")
    assert load_sources([roles, wf]).diagnostics == []
    assert [d.code for d in load_sources([wf]).diagnostics] == ["E110", "E114"]


def test_action_types_are_unique_across_files() -> None:
    a = SourceFile("a.policy", HEAD + '  action a { system "s" reversible full via "x" }\n}\n')
    b = SourceFile("b.policy", HEAD.replace('"w"', '"v"') + '  action a { system "s" reversible full via "x" }\n}\n')
    ds = load_sources([a, b]).diagnostics
    assert [(d.code, d.span.path) for d in ds] == [("E120", "b.policy")]
    assert "a.policy:4:10" in ds[0].help


def test_some_but_not_all_standard_scenarios_warn() -> None:
    text = ("roles [reviewer]\n" + HEAD + '  action a { system "s" reversible full via "x" }\n'
            "  rollback incident { authorize 1 reviewer }\n}\n")
    ds = load_text(text, "x.policy").diagnostics
    assert [(d.code, d.severity) for d in ds] == [("W205", "warning")]
    assert "`reviewer_error`, `customer_request`, `policy_reversal` or `regulatory_order`" in ds[0].message
    assert codes(text.replace("  rollback incident { authorize 1 reviewer }\n", "")) == []


def test_unnamed_rules_with_same_content_warn_once_not_duplicate_name() -> None:
    text = (
        HEAD
        + '  action a {\n    system "s"\n    reversible full via "x"\n'
        + "    deny when `true`\n    deny when `true`\n  }\n}\n"
    )
    assert codes(text) == ["W203"]


def test_cycle_of_three_is_reported_once() -> None:
    acts = "".join(
        f'  action {n} {{ system "s" reversible full via "x" side_effects [{m}] }}\n'
        for n, m in (("a", "b"), ("b", "c"), ("c", "a"))
    )
    ds = load_text(HEAD + acts + "}\n", "x.policy").diagnostics
    assert [d.message for d in ds] == ["side effects form a cycle: a -> b -> c -> a"]


def test_self_loop_is_a_cycle() -> None:
    ds = load_text(HEAD + '  action a { system "s" reversible full via "x" side_effects [a] }\n}\n', "x").diagnostics
    assert [d.message for d in ds] == ["side effects form a cycle: a -> a"]


def test_effect_synonym_help() -> None:
    ds = load_text(HEAD + '  action a { system "s" reversible full via "x" forbid when `true` }\n}\n', "x").diagnostics
    assert [(d.code, d.help) for d in ds] == [("E102", "did you mean `deny`?")]


def test_missing_everything_on_a_stop_trigger() -> None:
    assert sorted(codes(HEAD + "  stop s {}\n}\n")) == ["E130", "E131", "E132", "E134"]


def test_errors_block_the_policy_set_warnings_do_not() -> None:
    warn = load_text(HEAD + '  action a { reversible full via "x" }\n}\n', "x.policy")
    assert [d.code for d in warn.diagnostics] == ["W204"] and warn.policy_set is not None
    err = load_text(HEAD + "  default allow\n}\n", "x.policy")
    assert err.policy_set is None


def test_a_compiler_bug_becomes_a_located_diagnostic(monkeypatch) -> None:
    """An unexpected exception while compiling a condition is reported, never a traceback."""
    import policy_engine.cel as cel

    def broken(src, **kw):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(cel, "compile_cel", broken)
    text = HEAD + '  action a {\n    system "s"\n    reversible full via "x"\n    deny when `1 / 0 > 1`\n  }\n}\n'
    ds = load_text(text, "x.policy").diagnostics
    assert [d.code for d in ds] == ["E101"]
    assert "internal error" in ds[0].message and ds[0].span.line == 7
