"""The documentation walked as a new user walks it: claims of the pages that the generic
block checks of tests/test_docs.py do not reach (a shown output, a number quoted as a fact,
a documented two-step flow, a table of the shipped policies), each checked against what
the code does, so that page and code cannot drift apart silently.

Fast by design (one engine per module, the CLI in-process); the examples that take seconds
(examples/agent_runtime.py, examples/engine_loop.py) have their own tests.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_docs import blocks_of, cwd, run_stopline

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def page(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def engine():
    import policy_engine

    with cwd(ROOT):
        return policy_engine.load("policies/")


def _table_after(text: str, header: str) -> list[list[str]]:
    """The body rows of the markdown table whose header line starts with `header`."""
    lines = text[text.index(header):].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.strip().startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


# --- README: the first command works on a core install ------------------------------------

# Every module of the extras (pyproject.toml, [project.optional-dependencies]) that a core
# install lacks; the README's first command must not need any of them.
_EXTRAS = ["pytest", "syrupy", "hypothesis", "psycopg", "pymerkle", "mkdocs", "fastapi", "starlette", "uvicorn",
           "jinja2", "prometheus_client", "jwt", "multipart", "python_multipart", "httpx", "schemathesis",
           "selenium", "matplotlib", "opentelemetry", "langgraph", "langchain_core", "agents", "mcp", "cedarpy"]
_CORE_ONLY = """
import importlib.abc, runpy, sys
EXTRAS = set(sys.argv.pop(1).split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in EXTRAS:
            raise ImportError(f"{name} is not part of a core install")
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_readme_main_job_needs_no_extra(tmp_path):
    """`pip install -e . && python examples/agent_runtime.py`: no extra is imported, and it
    ends with `stopline ledger verify` passing, as the README says."""
    readme = page("README.md")
    assert "pip install -e . && python examples/agent_runtime.py" in readme
    assert "ending with `stopline ledger verify`" in readme
    proc = subprocess.run(
        [sys.executable, "-c", _CORE_ONLY, ",".join(_EXTRAS), "examples/agent_runtime.py", str(tmp_path / "s.db")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    tail = proc.stdout.rstrip().splitlines()[-2:]
    assert tail[0].startswith("$ stopline ledger verify --ledger sqlite:///") and tail[1].startswith("ok: "), tail


def test_readme_and_index_link_every_page():
    """A new user finds every page of the site from the README and from the site's home."""
    config = yaml.safe_load(page("mkdocs.yml"))
    pages = set()

    def walk(nav):
        for item in nav:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            walk(value) if isinstance(value, list) else pages.add(value)

    walk(config["nav"])
    readme, index = page("README.md"), page("docs/index.md")
    for p in sorted(pages - {"index.md"}):
        assert f"](docs/{p})" in readme, f"the README links docs/{p}"
        assert f"]({p})" in index, f"docs/index.md links {p}"


# --- engine.md ------------------------------------------------------------------------------


def test_engine_eval_output_length_is_as_quoted():
    m = re.search(r"the full output is (\d+) lines", page("docs/engine.md"))
    assert m
    _, out = run_stopline(["stopline", "eval", "policies/", "--input", "examples/questions/gate.json"], ROOT)
    assert len(out.rstrip("\n").splitlines()) == int(m[1])


def test_engine_approval_cap_is_as_documented(engine):
    from policy_engine.limits import MAX_APPROVALS

    assert f"The first {MAX_APPROVALS:,} approvals are read" in page("docs/engine.md")
    refund = {"workflow": "refunds", "type": "issue_refund", "id": "rf-1", "order_id": "o-1", "amount": 2000.0,
              "currency": "EUR", "reason": "damaged_item", "payee_account_id": "acct-9",
              "order": {"total": 5000.0, "refunded_amount": 0.0, "customer_account_id": "acct-9"}}
    d = engine.evaluate(refund, now="2026-11-24T10:00:00Z")
    ok = [{"principal": p, "roles": r, "action_digest": d.action_digest}
          for p, r in (("sam", ["support_manager"]), ("fiona", ["finance_approver"]), ("fred", ["finance_approver"]))]
    filler = [{"principal": f"p{i}", "roles": ["reviewer"], "action_digest": d.action_digest}
              for i in range(MAX_APPROVALS - len(ok))]
    assert engine.authorize_action(d, ok + filler, now="2026-11-24T10:05:00Z").satisfied
    over = engine.authorize_action(d, ok + filler + filler[:1], now="2026-11-24T10:05:00Z")
    assert not over.satisfied and over.errors[0].kind == "input"


def test_engine_decision_fields_are_the_documented_ones(engine):
    """Every field of a decision's JSON is named in engine.md's list of `Decision` fields."""
    text = page("docs/engine.md")
    listed = text[text.index("`Decision` fields:"):text.index("**The decision as JSON")]
    d = engine.evaluate({"workflow": "support-replies", "type": "send_customer_reply",
                         "claims": [{"kind": "timeline", "sourced": False}]}, now="2026-11-24T10:00:00Z")
    dump = d.model_dump(mode="json")
    for key in [*dump, *dump["stop"], *dump["reversibility"]]:
        assert f"`{key}`" in listed, key


# --- values.md ------------------------------------------------------------------------------


def test_values_example_prints_what_the_page_shows():
    text = page("docs/values.md")
    block = next(b for b in blocks_of(DOCS / "values.md") if b.lang == "python")
    shown = re.search(r"^prints\n\n((?:    .*\n)+)", text, re.M)
    assert shown
    out = io.StringIO()
    with cwd(ROOT), contextlib.redirect_stdout(out):
        exec(compile(block.text, block.id, "exec"), {"__name__": "__docs__"})
    assert out.getvalue().strip() == shown[1].strip()


# --- cel.md ---------------------------------------------------------------------------------


def test_cel_documented_behaviours():
    from policy_engine.cel import CelCompileError, CelError, compile_cel

    text = page("docs/cel.md")
    assert "`1 + 1.0` is `2.0`" in text
    assert compile_cel("1 + 1.0")({}) == 2.0
    assert "(`unbound function: f`)" in text
    assert compile_cel("f(1)")({}).message == "unbound function: f"
    assert '"message construction is not supported"' in text
    with pytest.raises(CelCompileError, match="message construction is not supported"):
        compile_cel("Foo{a: 1}")
    assert "`{true: 1, 1: 2}` is an error" in text
    assert isinstance(compile_cel("{true: 1, 1: 2}")({}), CelError)
    assert "`9223372036854775807 < 9223372036854775808.0` is `false`" in text
    assert compile_cel("9223372036854775807 < 9223372036854775808.0")({}) is False
    assert compile_cel("m.?key.orValue(1)")({"m": {}}) == 1  # (optionals: docs/cel.md)
    with pytest.raises(CelCompileError):
        compile_cel("42.size()")
    assert compile_cel("m.`content-type`")({"m": {"content-type": 1}}) == 1  # (CEL 2024's backquoted names)


# --- testing.md -----------------------------------------------------------------------------


def test_testing_stopline_case_example_names_a_shipped_case():
    """The `stopline_case` example runs a case of the shipped suite, and it passes."""
    block = next(b for b in blocks_of(DOCS / "testing.md") if b.lang == "python" and "stopline_case" in b.text)
    suite, name = re.search(r'stopline_case\("([^"]+)",\s*"([^"]+)"\)', block.text).groups()
    code, out = run_stopline(["stopline", "test", suite, "-k", name], ROOT)
    assert code == 0 and out.rstrip().endswith("1 passed, 0 failed"), out


def test_testing_exit_codes_and_summary(tmp_path):
    """`N passed, N failed` (`, N skipped`, `, N errors`); exit 0, 1 on a failing case, 2 when
    a suite cannot run."""
    text = page("docs/testing.md")
    assert "Exit code 0 when all pass, 1 on a failing case" in text
    suite = tmp_path / "x.policy-test.yaml"
    suite.write_text(
        f"suite: x\npolicies: [{(ROOT / 'policies').as_posix()}]\nnow: \"2026-11-24T10:00:00Z\"\ncases:\n"
        "  - name: wrong\n"
        "    gate: {action: {workflow: support-replies, type: reopen_ticket, previous_status: solved}}\n"
        "    expect: {effect: deny}\n"
        "  - name: later\n    skip: not yet\n"
        "    gate: {action: {workflow: support-replies, type: reopen_ticket, previous_status: solved}}\n"
        "    expect: {effect: allow}\n",
        encoding="utf-8")
    code, out = run_stopline(["stopline", "test", str(suite)], ROOT)
    assert code == 1 and out.rstrip().endswith("0 passed, 1 failed, 1 skipped"), out
    assert re.search(r"^FAIL .*x\.policy-test\.yaml:5 wrong$", out, re.M), out
    assert '  - effect: "deny"' in out and '  + effect: "allow"' in out
    code, out = run_stopline(["stopline", "test", str(tmp_path / "missing.policy-test.yaml")], ROOT)
    assert code == 2 and out.rstrip().endswith("0 passed, 0 failed, 1 error"), out


# --- approvals.md ---------------------------------------------------------------------------


def test_approvals_two_step_authorize_with_stopline_eval(tmp_path):
    """"ask the `gate` question, give the `action_digest` it prints to the approvers, then
    ask `authorize` with the printed decision and the approvals"."""
    assert "then ask `authorize` with the printed\ndecision and the approvals" in page("docs/approvals.md")
    action = {"workflow": "refunds", "type": "issue_refund", "id": "rf-1", "order_id": "o-1", "amount": 2000.0,
              "currency": "EUR", "reason": "damaged_item", "payee_account_id": "acct-9",
              "order": {"total": 5000.0, "refunded_amount": 0.0, "customer_account_id": "acct-9"}}
    gate = tmp_path / "gate.json"
    gate.write_text(json.dumps({"question": "gate", "now": "2026-11-24T10:00:00Z", "action": action}))
    code, out = run_stopline(["stopline", "eval", "policies/", "--input", str(gate)], ROOT)
    assert code == 0, out
    decision = json.loads(out)
    assert decision["effect"] == "require_approval" and decision["action_digest"].startswith("sha256:")

    def ask(people):
        q = tmp_path / "authorize.json"
        q.write_text(json.dumps({"question": "authorize", "now": "2026-11-24T10:06:00Z", "decision": decision,
                                 "approvals": [{"principal": p, "roles": r, "action_digest": decision["action_digest"]}
                                               for p, r in people]}))
        code, out = run_stopline(["stopline", "eval", "policies/", "--input", str(q)], ROOT)
        assert code == 0, out
        return json.loads(out)

    one = ask([("sam", ["support_manager"])])
    assert not one["satisfied"] and [(s["id"], s["missing"]) for s in one["open_slots"]] == [("large_refund", 2)]
    three = ask([("sam", ["support_manager"]), ("fiona", ["finance_approver"]), ("fred", ["finance_approver"])])
    assert three["satisfied"] and three["accepted"] == ["fiona", "fred", "sam"]


def test_principal_spellings_are_as_documented():
    """approvals.md and limits.md: NFKC, case folded, default-ignorable code points,
    whitespace and control characters removed."""
    import unicodedata

    from policy_engine.engine import canonical_principal

    assert "`bob `, `\\tbob` and `b ob` are `bob` written another way" in page("docs/approvals.md").replace("\n", " ")
    assert "`bob `, `\\tbob` and `b ob` are `bob` written another way" in page("docs/limits.md").replace("\n", " ")
    for spelling in ("Bob", "ｂｏｂ", "b\u200bob", "bob ", "\tbob", "b ob"):
        assert canonical_principal(spelling) == "bob", repr(spelling)
    assert canonical_principal(unicodedata.normalize("NFD", "zoë")) == canonical_principal("zoë")
    assert canonical_principal(" \u200b\t") == ""


# --- rollback-plans.md ----------------------------------------------------------------------


def test_rollback_plans_explain_shows_a_blocked_step(tmp_path):
    """The (illustrative) explain excerpt of rollback-plans.md is what explain prints for a
    refund whose loyalty points were spent."""
    block = next(b for b in blocks_of(DOCS / "rollback-plans.md") if b.lang == "text")
    q = tmp_path / "rollback.json"
    q.write_text(json.dumps({"question": "rollback", "now": "2026-11-24T10:00:00Z", "request": {
        "workflow": "refunds", "scenario": "reviewer_error", "requested_by": "carol",
        "original": {"id": "rf1", "type": "issue_refund", "executed_at": "2026-11-24T09:00:00Z", "reviewer": "bob",
                     "customer": {"account_status": "open"}, "chargeback_opened": False,
                     "downstream": [{"id": "pts", "type": "award_loyalty_points",
                                     "executed_at": "2026-11-24T09:00:01Z", "points_spent": 10}]}}}))
    code, out = run_stopline(["stopline", "explain", "policies/", "--input", str(q)], ROOT)
    assert code == 0, out
    for shown in block.text.strip().splitlines():
        prefix = shown.split("verify: ...")[0]
        assert any(line.startswith(prefix) for line in out.splitlines()), (shown, out)


# --- ledger.md ------------------------------------------------------------------------------


def test_ledger_kinds_table_is_the_code():
    from policy_engine.ledger import KINDS

    rows = _table_after(page("docs/ledger.md"), "| kind | required body keys | also |")
    documented = {r[0].strip("`"): set(re.findall(r"`(\w+)`", re.sub(r"\(.*?\)", "", r[1]))) for r in rows}
    assert documented == {k: set(v[0]) for k, v in KINDS.items()}


def test_ledger_sqlite_url_options(tmp_path):
    from policy_engine.ledger import Ledger
    from policy_engine.ledger.errors import LedgerUnavailable

    url = f"sqlite:///{tmp_path / 'l.db'}"
    with Ledger.open(url + "?durability=normal", create=True) as led:
        assert led.size == 0
    for option in ("mode=ro", "uri=true", "timeout=5"):
        with pytest.raises(LedgerUnavailable, match=option.split("=")[0]):
            Ledger.open(f"{url}?{option}")


# --- policies.md: the tables of the shipped library -----------------------------------------


def _workflows(engine):
    return {w.name: w for f in engine.policy_set.files for w in f.workflows}


def _reversibility(cell: str):
    if "irreversible" in cell:
        return ("irreversible", None, None)
    m = re.fullmatch(r"(full|partial) via `([\w.]+)`(?: within `(\w+)`)?(?: \(no window\))?", cell)
    assert m, cell
    return m.groups()


def test_policies_action_tables_are_the_shipped_policies(engine):
    text = page("docs/policies.md")
    workflows = _workflows(engine)
    sections = re.split(r"^## ", text, flags=re.M)
    checked = set()
    for sec in sections:
        m = re.match(r"([\w-]+) \(`(\w+\.policy)`\)", sec)
        if not m:
            continue
        wf = workflows[m[1]]
        actions = {a.name: a for a in wf.actions}
        rows = _table_after(sec, "| action type | system |")
        assert {r[0].strip("`") for r in rows} == set(actions), m[1]
        for name, system, rev, pre, side, rules in rows:
            a = actions[name.strip("`")]
            r = a.reversibility
            assert system == a.system, name
            assert _reversibility(rev.replace("**", "")) == (r.klass, r.method, r.window_text), name
            assert set(re.findall(r"`(\w+)`", pre)) == {p.name for p in a.prerequisites}, name
            assert set(re.findall(r"`(\w+)`", side)) == {s.name for s in a.side_effects}, name
            got, effect = {}, None
            for em in re.finditer(r"(?:(deny|require_approval|allow) )?`(\w+)`(?: \((?:[^:()]*: )?(\d+) "
                                  r"(?:of \[([^\]]+)\]|(\w+))\))?", rules):
                effect = em[1] or effect
                got[em[2]] = (effect, em[3] and (int(em[3]), tuple((em[4] or em[5]).replace(" ", "").split(","))))
            want = {rl.name: (rl.effect, rl.approvers
                              and (rl.approvers.count, tuple(x.name for x in rl.approvers.roles)))
                    for rl in a.rules}
            assert got == want, name
        checked.add(m[1])
    assert checked == set(workflows)


def test_policies_at_a_glance_and_roles(engine):
    text = page("docs/policies.md")
    workflows = _workflows(engine)
    for wf_cell, _, stops in _table_after(text, "| workflow (file) | main action types |"):
        wf = workflows[re.match(r"`([\w-]+)`", wf_cell)[1]]
        documented = {}
        for part in stops.split(";"):
            trigger, criteria = part.split("→")
            documented[trigger.strip().strip("`")] = set(re.findall(r"`(\w+)`", criteria))
        assert documented == {s.name: {c.name for c in s.criteria} for s in wf.stops}, wf.name
    roles = set()
    for cell, _ in _table_after(text, "| role | who |"):
        roles |= set(re.findall(r"`(\w+)`", cell))
    declared = {r.name for f in engine.policy_set.files for r in f.roles}
    assert roles == declared
    for wf in workflows.values():
        assert (wf.version, wf.default_effect) == ("2026.11.1", "require_approval")
        assert wf.owner("business") and wf.owner("technical")


def test_policies_escalation_table(engine):
    text = page("docs/policies.md")
    workflows = _workflows(engine)
    rows = _table_after(text, "| workflow | escalated route (reviewer_error, customer_request) |")
    assert {r[0] for r in rows} == set(workflows)
    for name, route, extra in rows:
        sc = {s.name: s for s in workflows[name].scenarios}
        for scenario in ("reviewer_error", "customer_request"):
            assert f"`{sc[scenario].escalation.route.name}`" == route.split(" ")[0], (name, scenario)
        slot = sc["reviewer_error"].escalation.authorization.slots[0]
        assert extra.startswith(f"`{slot.count} {slot.roles[0].name}`"), name


# --- ARCHITECTURE.md ------------------------------------------------------------------------


def test_architecture_quoted_constants_are_the_code():
    import importlib

    where = {"REBUILDS_MAX": "policy_engine.engine.accel.fused", "FUSE_AFTER": "policy_engine.engine.accel.fused",
             "_FUSE_MAX": "policy_engine.cel.fuse", "PATTERNS_MAX": "policy_engine.engine.accel.templates",
             "NOW_CACHE_MAX": "policy_engine.engine.accel.templates",
             "PER_NOW_MAX": "policy_engine.engine.accel.templates", "SEEN_MAX": "policy_engine.engine.accel.templates"}
    quoted = re.findall(r"`(?:[\w.]+\.)?([A-Z_]+)` = ([\d,]+)", page("docs/ARCHITECTURE.md"))
    assert {n for n, _ in quoted} == set(where) - {"FUSE_AFTER"}
    for name, value in quoted:
        assert getattr(importlib.import_module(where[name]), name) == int(value.replace(",", "")), name


def test_policies_repair_actions(engine):
    text = page("docs/policies.md")
    para = text[text.index("Repair actions are marked `runs_while_stopped`"):]
    para = para[:para.index("\n\n")]
    for wf in _workflows(engine).values():
        listed = re.search(rf"((?:`\w+`(?:, )?)+) \({re.escape(wf.name)}\)", para.replace("\n", " "))
        assert listed, wf.name
        assert set(re.findall(r"`(\w+)`", listed[1])) == {a.name for a in wf.actions if a.runs_while_stopped}, wf.name
