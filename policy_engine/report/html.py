"""The report as one self-contained HTML page: tables, and inline SVG plots drawn by
matplotlib (``stopline[report]``) with their text kept as SVG text. Nothing is fetched:
no scripts, fonts or styles from the network. Each plot is a ``<figure id="plot-NAME">``
whose ``data-values`` holds the numbers it draws (what the tests compare with the ledger)."""

from __future__ import annotations

import html
import io
import json
import warnings
from typing import Any

__all__ = ["render_html", "PLOTS", "MAX_BARS"]

#: the most bars a plot draws: a ledger may name thousands of action types or reviewers (every
#: one is in its table), and a plot of thousands of bars takes minutes and shows none of them
MAX_BARS = 30


def _rates(rows: dict) -> dict:
    """``{name: rate}`` of the :data:`MAX_BARS` rows with the most executions (then by name), in name order."""
    top = sorted(rows.items(), key=lambda kv: (-kv[1]["executions"], kv[0]))[:MAX_BARS]
    return {k: v["rate"] for k, v in sorted(top)}


def _quantiles(dist: dict, prefix: str = "") -> dict:
    """The quantiles of a distribution; none when it is empty (no interval: no bar, not a bar at 0)."""
    return {f"{prefix}{q}": dist[q] for q in ("p25", "p50", "p75", "p90", "max") if q in dist}


#: plot id -> (title, how to get {label: value} from the report, value label)
PLOTS: dict[str, tuple[str, Any, str]] = {
    "rate-by-type": ("Rollback rate by action type", lambda r: _rates(r["by_action_type"]), "rolled back / executed"),
    "rate-by-reviewer": ("Rollback rate by reviewer (who approved the original)",
                         lambda r: _rates(r["by_reviewer"]), "rolled back / executed"),
    "scenarios": ("Rollbacks by scenario", lambda r: dict(r["scenarios"]), "rollbacks"),
    "window": ("Within the window versus escalated", lambda r: dict(r["window_kind"]), "rollbacks"),
    "status": ("Rollbacks by status", lambda r: dict(r["rollback_status"]), "rollbacks"),
    "time-to-rollback": ("Time from execution to rollback request and completion (seconds)",
                         lambda r: _quantiles(r["time_to_rollback_request_s"], "request ")
                         | _quantiles(r["time_to_rollback_completion_s"], "completion "), "seconds"),
    "approval-latency": ("Approval latency (seconds)", lambda r: _quantiles(r["approval_latency_s"]), "seconds"),
}
#: the rate plots: the report's table each draws from (a plot of more rows draws the busiest)
_ROWS = {"rate-by-type": "by_action_type", "rate-by-reviewer": "by_reviewer"}


def _svg(values: dict, ylabel: str) -> str:
    # matplotlib's object API with the SVG canvas: no pyplot (its import and backend
    # machinery cost more than drawing), a fixed layout instead of tight_layout (which
    # draws every figure twice); one bar per label, so a plot is a few dozen artists
    from matplotlib import rc_context
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    # text.parse_math off: a label is a name from the ledger (an action type, a reviewer), drawn as
    # written; with it on, `$…$` in a name is typeset as mathematics or fails to parse (`$\frac$`)
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "stopline", "font.size": 9, "text.parse_math": False}):
        fig = Figure(figsize=(6.4, 2.8))
        FigureCanvasSVG(fig)
        labels = list(values)
        nums = [values[k] for k in values]
        rotate = len(labels) > 4
        fig.subplots_adjust(left=0.11, right=0.98, top=0.93, bottom=0.32 if rotate else 0.14)
        ax = fig.add_subplot()
        if labels:
            bars = ax.bar(range(len(labels)), nums, color="#3b6ea5")
            ax.set_xticks(range(len(labels)), labels, rotation=20 if rotate else 0,
                          ha="right" if rotate else "center")
            ax.bar_label(bars, labels=[f"{v:g}" for v in nums], padding=2)
        else:  # nothing to draw: said, not a bar at 0 (which reads as a measured 0)
            ax.set_xticks([])
            ax.text(0.5, 0.5, "none in this report", transform=ax.transAxes, ha="center", va="center")
        ax.set_ylabel(ylabel)
        ax.spines[["top", "right"]].set_visible(False)
        buf = io.StringIO()
        with warnings.catch_warnings():  # (a control character in a name has no glyph: a blank, not a warning)
            warnings.filterwarnings("ignore", message="Glyph .* missing from font")
            fig.savefig(buf, format="svg", metadata={"Date": None})
    s = buf.getvalue()
    return s[s.index("<svg"):]


def _table(rows: list[list[Any]], head: list[str]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _cost_html(cost: Any) -> str:
    out = ["<h2 id=cost>Cost of rollbacks</h2>"]
    if not cost or not cost.get("priced"):
        why = (cost or {}).get("reason") or "not priced"
        return "".join(out) + f"<p>{html.escape(why)}.</p>"
    units = sorted({u for t in (cost["by_scenario"], cost["by_action_type"]) for row in t.values() for u in row}
                   | set(cost["total"]))
    out.append(f"<p>{cost['rollbacks']} rollback(s) priced; amounts are summed per unit, never across "
               "units (a scenario's cost once per rollback, an action type's per record reversed).</p>")
    for name, key in (("scenario", "by_scenario"), ("action type", "by_action_type")):
        out.append(f"<h3>By {name}</h3>" + _table([[k, *(_amount(row.get(u)) for u in units)]
                                                  for k, row in cost[key].items()], [name, *units]))
    out.append("<h3>Total</h3>" + _table([[_amount(cost["total"].get(u)) for u in units]], units))
    if cost.get("overflow"):
        out.append("<p>Sums beyond what a number holds (left blank): " + html.escape(", ".join(cost["overflow"]))
                   + ".</p>")
    if cost.get("unpriced"):
        out.append("<p>Records of action types without a cost: " + html.escape(
            ", ".join(f"{k} ({v})" for k, v in cost["unpriced"].items())) + ".</p>")
    return "".join(out)


def _window(w: Any) -> str:
    since, until, as_of = (w or {}).get("since"), (w or {}).get("until"), (w or {}).get("as_of")
    if since and until:
        text = f"entries from {since} to before {until}"
    elif since or until:
        text = f"entries from {since}" if since else f"entries before {until}"
    else:
        text = "all entries"
    return text + (f"; statuses as of {as_of}" if as_of else "")


def _expired_html(x: Any) -> str:
    """How many rollbacks are expired as of the report's time, recorded and derived."""
    if not x or not x.get("count"):
        return ""
    text = f"Expired: {x['count']} ({x['recorded']} recorded"
    if x.get("derived"):
        shown = ", ".join(x.get("derived_ids") or ())
        more = x["derived"] - len(x.get("derived_ids") or ())
        text += (f", {x['derived']} derived: not authorized when their window or deadline passed, not yet "
                 f"recorded by the sweeper: {shown}" + (f" and {more} more" if more > 0 else ""))
    return f"<p id=expired>{html.escape(text)}).</p>"


def _amount(v: Any) -> str:
    return "" if v is None else f"{v:,.2f}"


def render_html(report: dict, *, title: str = "Stopline rollback report") -> str:
    try:
        import matplotlib  # noqa: F401

        plots = True
    except ImportError:
        plots = False
    t = report["totals"]
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p>{t['executions']} executions, {t['rollbacks']} rollbacks ({t['batches']} batches), "
             f"rollback rate {t['rollback_rate']:.2%}; {html.escape(_window(report['window']))}</p>"]
    if not plots:
        parts.append("<p class=note>plots need matplotlib: <code>pip install 'stopline[report]'</code> (in a checkout: "
                     "<code>pip install -e '.[report]'</code>)</p>")
    for pid, (ptitle, get, ylabel) in PLOTS.items():
        vals = get(report)
        svg = _svg(vals, ylabel) if plots else ""
        rows = len(report[_ROWS[pid]]) if pid in _ROWS else 0
        if rows > len(vals):
            ptitle += f" (the {len(vals)} with the most executions of {rows}; every one is in its table below)"
        parts.append(f"<figure id=\"plot-{pid}\" data-values='{html.escape(json.dumps(vals, sort_keys=True))}'>"
                     f"<figcaption>{html.escape(ptitle)}</figcaption>{svg}</figure>")
    parts.append("<h2>By action type</h2>" + _table(
        [[k, v["executions"], v["rolled_back"], f"{v['rate']:.2%}"] for k, v in report["by_action_type"].items()],
        ["action type", "executions", "rolled back", "rate"]))
    parts.append("<h2>By reviewer</h2>" + _table(
        [[k, v["executions"], v["rolled_back"], f"{v['rate']:.2%}"] for k, v in report["by_reviewer"].items()],
        ["reviewer", "executions", "rolled back", "rate"]))
    dist = [[name, *(report[key].get(q, "") for q in ("count", "min", "p50", "p90", "max"))]
            for name, key in (("execution to rollback request", "time_to_rollback_request_s"),
                              ("execution to rollback completed", "time_to_rollback_completion_s"),
                              ("rollback request to first counted approval", "approval_latency_s"))]
    parts.append("<h2>Times (seconds)</h2>" + _table(dist, ["interval", "count", "min", "p50", "p90", "max"]))
    parts.append(
        "<h2>Open, partial and failed</h2>"
        + _table(
            [
                ["open", report["open"]],
                ["partial", report.get("partial_count", len(report["partial"]))],
                ["failed (nothing done)", report.get("failed_count", len(report["failed"]))],
                ["unauthorized executions", report["unauthorized_executions"]["count"]],
                ["executions that failed", report.get("failed_executions", {}).get("count", 0)],
                ["executions missing receipt fields", report["missing_receipt_fields"]["executions"]],
            ],
            ["", "count"],
        )
    )
    parts.append(_expired_html(report.get("expired")))
    parts.append(
        "<h2>Missing receipt fields</h2>"
        + _table([[k, v] for k, v in report["missing_receipt_fields"]["by_field"].items()], ["field", "executions"])
    )
    parts.append(_cost_html(report.get("cost")))
    style = (
        "body{font:14px system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
        "figure{margin:1em 0}figcaption{font-weight:600}svg{max-width:100%;height:auto}"
    )
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
    )
