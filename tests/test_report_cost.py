"""The report's cost section (issue 18, item 4): what the rollbacks in a ledger cost where the
policy declares a `cost` on a scenario (once per rollback) or an action type (once per record
reversed: the original and its cascade), summed per unit and never across units, per
scenario and per action type, in the JSON and the HTML. The sums are computed here from the
ledger's own entries (executions' types, rollbacks' originals and cascades, approvals' denials),
not from the report's code. The policy declares its costs in the language (`cost 50 USD`)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import policy_engine  # noqa: E402
from benchmarks import bench_incidents as B  # noqa: E402  (the bench's policy and ledger fillers: chains of depth 5)
from policy_engine import Runtime  # noqa: E402
from policy_engine.compiled import CCost  # noqa: E402
from policy_engine.ledger import Ledger  # noqa: E402
from policy_engine.report.compute import compute_report  # noqa: E402
from policy_engine.report.html import render_html  # noqa: E402

SCENARIO_COST = {"incident": (50.0, "USD"), "policy_reversal": (2.0, "hours")}
TYPE_COST = {"a0": (10.0, "USD"), "a1": (1.5, "hours"), "a2": (7.25, "EUR")}  # a3..a5: no cost


def priced_policy(scen=SCENARIO_COST, types=TYPE_COST) -> str:
    """The bench's policy with `cost` on its scenarios and action types."""
    from report_demo import priced_policy as priced

    return priced(scen, types)


def _expected(led, scen=SCENARIO_COST, types=TYPE_COST):
    """Per unit, from the entries: every rollback not denied costs its scenario once and
    each record it covers (original + cascade) its type's cost."""
    typ = {e.id: e.body["type"] for e in led.entries(kind="execution")}
    denied = {e.body["subject"] for e in led.entries(kind="approval")
              if e.body["verdict"] == "deny" and e.body.get("counted")}
    total: dict[str, float] = {}
    by_s: dict[str, dict[str, float]] = {}
    by_t: dict[str, dict[str, float]] = {}
    n = 0
    for rb in led.entries(kind="rollback"):
        if rb.id in denied:
            continue
        n += 1
        s = rb.body["scenario"]
        items = [(scen.get(s), by_s, s)]
        for rec in [rb.body["original"], *rb.body["cascade"]]:
            items += [(types.get(typ[rec]), by_t, typ[rec]), (types.get(typ[rec]), by_s, s)]
        for cost, table, key in items:
            if cost:
                table.setdefault(key, {})
                table[key][cost[1]] = table[key].get(cost[1], 0.0) + cost[0]
        for cost in [scen.get(s), *(types.get(typ[r]) for r in [rb.body["original"], *rb.body["cascade"]])]:
            if cost:
                total[cost[1]] = total.get(cost[1], 0.0) + cost[0]
    return n, total, by_s, by_t


@pytest.fixture
def ledger(tmp_path):
    (tmp_path / "ops.policy").write_text(B.POLICY)
    pol = tmp_path / "priced.policy"
    pol.write_text(priced_policy())
    engine = policy_engine.load(str(pol))
    assert engine.compiled.workflows["ops"].scenarios["incident"].cost == CCost(50.0, "USD")
    led = Ledger.open(f"sqlite:///{tmp_path / 'l.db'}", create=True)
    B.fill_executions(led, 12, 30)  # 12 chains a0 -> a5, 30 lone a1
    with Runtime(engine, led) as rt:
        # an incident over 4 chains (6 records each), a policy reversal of a chain's middle
        # (a2 -> a5) and of a lone a1, and one denied reversal (costs nothing)
        b = rt.request_bulk_rollback('original.type == "a0" && original.receipt.run in ["run-1", "run-2"]',
                                     "incident", "ops", "bad run")
        assert len(b.rollbacks) == 4 and b.records == 24
        execs = {e.id: e.body for e in led.entries(kind="execution")}
        mid = next(i for i, x in execs.items() if x["type"] == "a2" and x["receipt"]["run"] == "run-5")
        lone = [i for i, x in execs.items() if x["type"] == "a1" and x["caused_by"] is None]
        for ex in (mid, lone[0], lone[1]):
            rt.request_rollback(ex, scenario="policy_reversal", requested_by="ops", reason="reversal")
        last = led.entries(kind="rollback")[-1]
        rt.approve(last.id, principal="lee", roles=["incident_lead"], verdict="deny")
    yield led, engine, tmp_path
    led.close()


def test_cost_per_scenario_and_action_type_summed_per_unit_as_the_ledger_says(ledger):
    led, engine, tmp = ledger
    r = compute_report(led, policies=str(tmp / "priced.policy"))["cost"]
    n, total, by_s, by_t = _expected(led)
    assert r["priced"] and r["rollbacks"] == n == 6
    assert r["total"] == pytest.approx(total) and set(r["total"]) == {"USD", "EUR", "hours"}
    assert r["by_scenario"] == {k: pytest.approx(v) for k, v in by_s.items()}
    assert r["by_action_type"] == {k: pytest.approx(v) for k, v in by_t.items()}
    # spelled out for the incident: 4 x (50 + a0 10 USD, a1 1.5 h, a2 7.25 EUR; a3..a5 free)
    assert r["by_scenario"]["incident"] == pytest.approx({"USD": 240.0, "hours": 6.0, "EUR": 29.0})
    typ = {e.id: e.body["type"] for e in led.entries(kind="execution")}
    free: dict[str, int] = {}
    for rb in led.entries(kind="rollback")[:-1]:  # the last one was denied
        for rec in [rb.body["original"], *rb.body["cascade"]]:
            if typ[rec] not in TYPE_COST:
                free[typ[rec]] = free.get(typ[rec], 0) + 1
    assert r["unpriced"] == free and free["a3"] >= 4  # records of types without a cost are counted, not priced
    assert all(len(set(row)) == len(row) for row in r["by_scenario"].values())  # one amount per unit


def test_the_html_shows_each_sum_in_its_unit_column_and_nothing_when_unpriced(ledger):
    led, engine, tmp = ledger
    page = render_html(compute_report(led, policies=engine))
    sec = page[page.index("<h2 id=cost>"):]
    assert "declares no cost yet" not in page
    head = re.findall(r"<th>([^<]*)</th>", sec[sec.index("<h3>By scenario"):sec.index("<h3>By action type")])
    assert head == ["scenario", "EUR", "USD", "hours"]
    assert "<td>incident</td><td>29.00</td><td>240.00</td><td>6.00</td>" in sec
    # no policy given, or a policy that prices nothing: said in one line, no table
    unpriced = policy_engine.load(str(tmp / "ops.policy"))
    for pol, text in ((None, "no policy given"), (unpriced, "declares no cost")):
        page = render_html(compute_report(led, policies=pol))
        sec = page[page.index("<h2 id=cost>"):]
        assert text in sec.split("</p>")[0] and "<table" not in sec.split("<h2")[1]


def test_report_cli_prices_with_policies_and_says_so_without(ledger):
    from policy_engine.cli import main

    led, _, tmp = ledger
    url = str(led.url)
    out = CliRunner().invoke(main, ["report", "--ledger", url, "--format", "json"])
    assert out.exit_code == 0 and json.loads(out.output)["cost"]["priced"] is False
    out = CliRunner().invoke(main, ["report", "--ledger", url, "--format", "json", "-p", str(tmp / "ops.policy")])
    assert out.exit_code == 0, out.output
    cost = json.loads(out.output)["cost"]
    assert cost["rollbacks"] == 6 and not cost["priced"] and cost["reason"]  # the bench policy declares no cost
    out = CliRunner().invoke(main, ["report", "--ledger", url, "--format", "json", "-p", str(tmp / "priced.policy")])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["cost"] == compute_report(led, policies=str(tmp / "priced.policy"))["cost"]
    bad = tmp / "bad.policy"
    bad.write_text("workflow {")
    out = CliRunner().invoke(main, ["report", "--ledger", url, "--format", "json", "-p", str(bad)])
    assert out.exit_code == 2 and "Traceback" not in out.output and "bad.policy:1:" in out.output
