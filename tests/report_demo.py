"""A small demo ledger for the report (the page tests/test_report_browser.py opens in Chromium
and docs/report.png shows): the bench's ops workflow (a0 -> ... -> a5 chains), an incident
batch over one run's chains approved by its lead with steps done, partial and failed, three
policy reversals (one denied), reviewers and times spread over a day.

    python tests/report_demo.py docs/report.png     # re-render the screenshot (needs Chromium)
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks import bench_incidents as B  # noqa: E402

AS_OF = B.T0 + timedelta(hours=8)  #: the time the demo's report is read at

#: what each scenario and action type costs (`cost 120 USD` in the policy)
SCENARIO_COST = {"incident": (120.0, "USD"), "policy_reversal": (1.5, "hours")}
TYPE_COST = {"a0": (25.0, "USD"), "a1": (0.25, "hours"), "a2": (18.0, "EUR")}


def priced_policy(scen: dict = SCENARIO_COST, types: dict = TYPE_COST) -> str:
    """The bench's policy with `cost` on its scenarios and action types (by default these
    above: the first three types)."""
    text = B.POLICY
    for t, (amount, unit) in types.items():
        line = f'reversible full via "undo.{t}"'
        text = text.replace(line, f"{line}\n    cost {amount:g} {unit}")
    for sc, (amount, unit) in scen.items():
        text = text.replace(f"rollback {sc} {{", f"rollback {sc} {{\n    cost {amount:g} {unit}")
    return text


def build(tmp: Path) -> tuple[str, str]:
    """Write the demo ledger under ``tmp``; returns (its URL, the policy that prices it)."""
    import policy_engine
    from policy_engine import Runtime
    from policy_engine.ledger import Ledger

    pol = tmp / "ops.policy"
    pol.write_text(priced_policy())
    engine = policy_engine.load(str(pol))
    url = f"sqlite:///{tmp / 'demo.db'}"
    led = Ledger.open(url, create=True)
    B.fill_executions(led, 40, 160)  # 240 chained + 160 lone executions over ~7 minutes
    h = B.T0 + timedelta(hours=2)
    with Runtime(engine, led) as rt:
        b = rt.request_bulk_rollback('original.type == "a0" && original.receipt.run == "run-3"', "incident",
                                     "ops-lead", "run-3 misfired", now=h)
        rt.approve_batch(b.batch_id, principal="lee", roles=["incident_lead"], batch_hash=b.batch_hash,
                         now=h + timedelta(minutes=12))
        for i, rb in enumerate(b.rollbacks):
            duties = led.get(rb).body["duties"]
            t = h + timedelta(minutes=30 + 20 * i)
            if i < 3:  # done
                for d in duties:
                    rt.step(rb, d, "completed", key=f"c-{d}", now=t)
            elif i == 3:  # partial: one reversal failed
                rt.step(rb, duties[0], "completed", key="p0", now=t)
                rt.step(rb, duties[1], "failed", key="p1", now=t)
        execs = {e.id: e.body for e in led.entries(kind="execution")}
        lone = [i for i, x in execs.items() if x["type"] == "a1" and x["caused_by"] is None]
        for k, ex in enumerate(lone[:3]):
            t = h + timedelta(hours=3 + k)
            r = rt.request_rollback(ex, scenario="policy_reversal", requested_by="ops", reason="stricter limit",
                                    now=t)
            verdict = "deny" if k == 2 else "approve"
            rt.approve(r.rollback_id, principal="lee", roles=["incident_lead"], verdict=verdict,
                       now=t + timedelta(minutes=5 + 10 * k))
    led.close()
    return url, str(pol)


def render(url: str, pricing: str, out: Path) -> Path:
    from policy_engine.report.compute import compute_report
    from policy_engine.report.html import render_html

    # as of the incident's evening (its story ends about 5 h after the batch): a report read
    # days later would find the two approved chains never started expired (their approvals lapse)
    out.write_text(render_html(compute_report(url, policies=pricing, now=AS_OF)), encoding="utf-8")
    return out


if __name__ == "__main__":  # python tests/report_demo.py docs/report.png
    import tempfile

    sys.path.insert(0, str(ROOT / "tests"))
    from test_report_browser import screenshot

    tmp = Path(tempfile.mkdtemp(prefix="report-demo-"))
    u, p = build(tmp)
    page = render(u, p, tmp / "report.html")
    screenshot(page, Path(sys.argv[1]))
    print(f"wrote {sys.argv[1]} from {page}")
