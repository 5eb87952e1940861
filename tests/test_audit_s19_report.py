"""Audit (session 19) of `stopline report` as a demanding operator meets it: ledgers built
through the Runtime with pinned times (SQLite and PostgreSQL), each figure of the page
checked against a hand count, and the command run as an operator runs it. Each test names
the defect it pins."""

from __future__ import annotations

import html as _html
import json
import re
import sys
import warnings

import pytest
from click.testing import CliRunner
from ledger_fixtures import ledger_url  # noqa: F401  (fixture)
from runtime_support import RECEIPT, WF, at, send, write_policy

from policy_engine import Runtime
from policy_engine.cli import main
from policy_engine.ledger import Ledger
from policy_engine.report import html as report_html
from policy_engine.report.compute import compute_report
from policy_engine.report.html import render_html

MAX_BARS = getattr(report_html, "MAX_BARS", 30)  # (the most bars a plot draws)


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _figures(page: str) -> dict[str, tuple[dict, str, str]]:
    """Each plot of the page: (its data-values, its caption, its SVG)."""
    return {pid: (json.loads(_html.unescape(vals)), _html.unescape(cap), svg) for pid, vals, cap, svg in re.findall(
        r"<figure id=\"plot-([^\"]+)\" data-values='([^']*)'><figcaption>(.*?)</figcaption>(.*?)</figure>", page,
        re.S)}


def _bar_labels(svg: str) -> list[str]:
    return [_html.unescape(t) for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg)]


# ------------------------------------------------------------------ --out and the system of record
def test_out_never_overwrites_the_ledger_a_policy_or_another_ledger(tmp_path):
    """Defect: `stopline report --out stopline.db` (the default ledger's file: a typo for
    `--out stopline.html`) wrote the page over the ledger, the system of record: every entry
    lost, `ledger verify` then said "file is not a database". So did an `--out` naming
    another ledger's file or the policy file."""
    pol = write_policy(tmp_path)
    db = tmp_path / "stopline.db"
    url = f"sqlite:///{db}"
    with Runtime.open(str(pol), ledger=url) as rt:
        g = rt.gate(send(50.0), now=at(0))
        rt.executed(g.decision_id, receipt=RECEIPT, now=at(1))
    other = tmp_path / "other.db"
    Ledger.open(f"sqlite:///{other}", create=True).close()
    before = {p: p.read_bytes() for p in (db, other, pol)}
    for args in (["--out", db], ["--out", db, "--format", "json"], ["--out", other], ["--out", pol, "-p", pol],
                 ["--out", pol, "-p", tmp_path]):
        r = _cli("report", "--ledger", url, *args)
        assert r.exit_code == 2, (args, r.output)
        assert "Traceback" not in r.output and "does not overwrite" in r.output, r.output
    assert {p: p.read_bytes() for p in before} == before  # nothing written over
    assert compute_report(url)["totals"]["executions"] == 1
    # (the ledger named as a path with another spelling is the same file)
    r = _cli("report", "--ledger", f"sqlite:///{tmp_path}/./stopline.db", "--out", tmp_path / "." / "stopline.db")
    assert r.exit_code == 2 and "is the ledger" in r.output, r.output
    # a page beside it is written, and written again
    page = tmp_path / "report.html"
    for _ in range(2):
        r = _cli("report", "--ledger", url, "--out", page, "-p", pol)
        assert r.exit_code == 0 and page.read_text().startswith("<!doctype html>"), r.output


def test_out_never_overwrites_a_sqlite_ledger_while_reading_postgresql(ledger_url, tmp_path):  # noqa: F811
    """The same defect with the ledger on PostgreSQL: an `--out` naming a SQLite ledger's file
    (a local copy, another deployment's) was truncated."""
    with Runtime.open(str(write_policy(tmp_path)), ledger=ledger_url) as rt:
        rt.executed(rt.gate(send(50.0), now=at(0)).decision_id, receipt=RECEIPT, now=at(1))
    local = tmp_path / "local.db"
    Ledger.open(f"sqlite:///{local}", create=True).close()
    kept = local.read_bytes()
    r = _cli("report", "--ledger", ledger_url, "--format", "json", "--out", local)
    assert r.exit_code == 2 and "a SQLite database" in r.output and "Traceback" not in r.output, r.output
    assert local.read_bytes() == kept
    r = _cli("report", "--ledger", ledger_url, "--format", "json", "--out", tmp_path / "r.json")
    assert r.exit_code == 0 and json.loads((tmp_path / "r.json").read_text())["totals"]["executions"] == 1


# ------------------------------------------------------------------ the plots say what the ledger holds
def test_an_empty_interval_is_no_bar_not_a_bar_at_zero(ledger_url, tmp_path):  # noqa: F811
    """Defect: with no completed rollback (and no approval yet), the time plot drew
    `completion p25 .. max` as bars labelled 0 seconds, and the approval latency plot five
    bars at 0: a measured "instant" where nothing was measured (the tables said nothing:
    count 0). `data-values` held those zeros too."""
    pytest.importorskip("matplotlib")
    with Runtime.open(str(write_policy(tmp_path)), ledger=ledger_url) as rt:
        g = rt.gate(send(50.0, id="a"), now=at(0))
        x = rt.executed(g.decision_id, receipt=RECEIPT, now=at(2)).execution_id
        rt.request_rollback(x, scenario="customer_request", requested_by="rita", reason="r", now=at(32))
    r = compute_report(ledger_url, until=at(40))
    assert r["time_to_rollback_request_s"]["p50"] == 30.0
    assert r["time_to_rollback_completion_s"] == {"count": 0} and r["approval_latency_s"] == {"count": 0}
    figs = _figures(render_html(r))
    values, _cap, svg = figs["time-to-rollback"]
    assert values == {f"request {q}": 30.0 for q in ("p25", "p50", "p75", "p90", "max")}
    assert not [t for t in _bar_labels(svg) if t.startswith("completion")]  # no bar for what did not happen
    values, _cap, svg = figs["approval-latency"]
    assert values == {} and "none in this report" in _bar_labels(svg)
    assert not {"p25", "p50", "p75", "p90", "max"} & set(_bar_labels(svg))
    # each drawn value is a bar's label; nothing else is drawn as a number
    for pid, (values, _cap, svg) in figs.items():
        assert all(f"{v:g}" in _bar_labels(svg) for v in values.values()), pid


def test_a_plot_of_many_names_draws_the_busiest_and_the_table_lists_them_all(ledger_url, tmp_path):  # noqa: F811
    """Defect: one bar per action type (and per reviewer), however many: 2,000 action types
    took 22 s to draw (20,000: minutes) into a 4.5 MB page whose plot was a smear of bars
    and overprinted labels. Now a plot draws the MAX_BARS names with the most executions
    and its caption says so; the tables and the JSON keep every name."""
    pytest.importorskip("matplotlib")
    n = MAX_BARS + 5
    with Runtime.open(str(write_policy(tmp_path)), ledger=ledger_url) as rt:
        for i in range(n):  # type t00 ran once, t01 twice, ...: the busiest are the last MAX_BARS
            for k in range(i + 1 if i < 3 or i >= n - MAX_BARS else 1):
                rt.executed(None, receipt={"reviewer": f"r{i:02}"}, action={"workflow": WF, "type": f"t{i:02}"},
                            now=at(i * 100 + k))
    r = compute_report(ledger_url, until=at(10_000))
    assert len(r["by_action_type"]) == n and len(r["by_reviewer"]) == n
    page = render_html(r)
    figs = _figures(page)
    busiest = {f"t{i:02}" for i in range(n - MAX_BARS, n)}
    for pid, table, prefix in (("rate-by-type", "by_action_type", "t"), ("rate-by-reviewer", "by_reviewer", "r")):
        values, cap, svg = figs[pid]
        assert set(values) == {prefix + name[1:] for name in busiest}, pid
        assert values == {k: r[table][k]["rate"] for k in values}
        assert f"the {MAX_BARS} with the most executions of {n}" in cap
        assert len(re.findall(r"<text[^>]*>t\d\d</text>|<text[^>]*>r\d\d</text>", svg)) == MAX_BARS
    rows = re.findall(r"<tr><td>(t\d\d)</td>", page)
    assert sorted(rows) == sorted(r["by_action_type"])  # every name in its table
    # a plot of few names is not cut, and its caption says nothing of it
    assert figs["status"][1] == "Rollbacks by status"


def test_a_name_with_control_characters_draws_without_warnings_on_the_operators_terminal(ledger_url,  # noqa: F811
                                                                                       tmp_path):
    """Defect: an action type or reviewer holding a control character (a NUL, an ESC, a
    tab: a ledger records names as given) printed matplotlib's `UserWarning: Glyph 0 missing
    from font(s) DejaVu Sans` with the source line of `html.py`, twice per plot, on the
    terminal of whoever ran `stopline report`; the name is drawn all the same."""
    pytest.importorskip("matplotlib")
    names = ["nul\x00type", "esc\x1b[31mred", "tab\there"]
    with Runtime.open(str(write_policy(tmp_path)), ledger=ledger_url) as rt:
        for i, name in enumerate(names):
            rt.executed(None, receipt={"reviewer": name}, action={"workflow": WF, "type": name}, now=at(i))
    r = compute_report(ledger_url, until=at(100))
    assert sorted(r["by_action_type"]) == sorted(names)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        page = render_html(r)
    assert [str(w.message) for w in seen] == []
    assert sorted(_figures(page)["rate-by-type"][0]) == sorted(names)


def test_without_the_plotting_extra_the_page_has_its_tables_and_says_how_to_get_plots(tmp_path, monkeypatch):
    """Not a defect (a check of the documented behaviour): without matplotlib the command
    writes the page with every table and each plot's numbers, and one line saying how to
    install the extra; no traceback."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    with Runtime.open(str(write_policy(tmp_path)), ledger=url) as rt:
        x = rt.executed(rt.gate(send(50.0), now=at(0)).decision_id, receipt=RECEIPT, now=at(1)).execution_id
        rt.request_rollback(x, scenario="customer_request", requested_by="rita", reason="r", now=at(11))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # (an environment without the extra)
    out = tmp_path / "r.html"
    r = _cli("report", "--ledger", url, "--out", out, "--until", "2026-11-26T12:01:00Z")
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    page = out.read_text()
    assert "<svg" not in page and "pip install 'stopline[report]'" in page
    figs = _figures(page)
    assert figs["status"][0] == {"pending": 1} and figs["rate-by-type"][0] == {"send": 1.0}
    assert "<h2>By action type</h2>" in page


# ------------------------------------------------------------------ a NUL in a recorded text
def test_a_nul_in_a_receipt_or_a_reason_does_not_make_the_report_impossible(ledger_url, tmp_path,  # noqa: F811
                                                                              monkeypatch):
    """Defect (PostgreSQL): one execution whose receipt held a NUL character (a tool's binary
    output, recorded as given: canonical JSON writes it `\\u0000`) made every later
    `stopline report` fail with "unsupported Unicode escape sequence": the database picks the
    report's fields out of each body with its `json` type, which cannot make text of
    `\\u0000` anywhere in the body, so the whole page of 5,000 entries was refused. The
    ledger is append-only: that report could never be produced again. The same for a NUL
    in a rollback's reason or an approval's note. The figures are those of the same ledger
    without the NULs."""
    import policy_engine.report.compute as compute

    monkeypatch.setattr(compute, "PAGE", 2)  # (pages of 2: several pages hold a NUL, others none)
    with Runtime.open(str(write_policy(tmp_path)), ledger=ledger_url) as rt:
        xs = []
        for i in range(6):  # executed at 0, 10, ..., 50; receipts 1 and 4 hold a NUL
            g = rt.gate(send(50.0, id=f"s{i}"), now=at(10 * i))
            receipt = {**RECEIPT, "message": "bin\x00ary"} if i in (1, 4) else RECEIPT
            xs.append(rt.executed(g.decision_id, receipt=receipt, now=at(10 * i)).execution_id)
        rid = rt.request_rollback(xs[1], scenario="customer_request", requested_by="rita", reason="nul\x00here",
                                  now=at(100)).rollback_id
        assert rt.approve(rid, principal="cs", roles=["customer_service"], note="ok\x00", now=at(130)).counted
        rt.request_rollback(xs[5], scenario="customer_request", requested_by="rita", reason="r", now=at(150))
    r = compute_report(ledger_url, until=at(200))
    assert r["totals"]["executions"] == 6 and r["totals"]["rollbacks"] == 2
    assert r["totals"]["rolled_back_executions"] == 2 and r["by_action_type"]["send"]["rolled_back"] == 2
    assert r["rollback_status"] == {"approved": 1, "pending": 1}
    assert r["time_to_rollback_request_s"]["min"] == 90.0 and r["time_to_rollback_request_s"]["max"] == 100.0
    assert r["approval_latency_s"]["p50"] == 30.0
    # with --since: the original executed before it is read by id (a NUL in its receipt)
    w = compute_report(ledger_url, since=at(100), until=at(200))
    assert w["totals"]["executions"] == 0 and w["time_to_rollback_request_s"]["count"] == 2
    res = _cli("report", "--ledger", ledger_url, "--format", "json", "--until", "2026-11-26T12:03:20Z")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["rollback_status"] == {"approved": 1, "pending": 1}


def test_a_cost_sum_beyond_a_float_is_valid_json_not_infinity(tmp_path):
    """Defect: the language takes any finite cost (`cost 1e308 USD`); two such rollbacks
    summed to `inf`, and `stopline report --format json` wrote `"USD": Infinity`, which is
    not JSON (RFC 8259): `jq` and every strict parser refuse the whole report. The sum is
    now null with its unit listed under `cost.overflow`, and the page says so."""
    from runtime_support import POLICY

    pol = write_policy(tmp_path, POLICY.replace("rollback customer_request {",
                                                "rollback customer_request {\n    cost 1e308 USD"))
    url = f"sqlite:///{tmp_path / 'l.db'}"
    with Runtime.open(str(pol), ledger=url) as rt:
        for i in range(2):
            x = rt.executed(rt.gate(send(50.0, id=f"s{i}"), now=at(i)).decision_id, receipt=RECEIPT,
                            now=at(i)).execution_id
            rt.request_rollback(x, scenario="customer_request", requested_by="rita", reason="r", now=at(10))
    res = _cli("report", "--ledger", url, "--format", "json", "-p", pol, "--until", "2026-11-26T12:00:20Z")
    assert res.exit_code == 0, res.output
    cost = json.loads(res.output, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))["cost"]
    assert cost["total"] == {"USD": None} and cost["by_scenario"] == {"customer_request": {"USD": None}}
    assert cost["overflow"] == ["USD"] and cost["rollbacks"] == 2
    page = render_html(compute_report(url, until=at(20), policies=str(pol)))
    assert "Sums beyond what a number holds (left blank): USD." in page
