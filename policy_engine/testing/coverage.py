"""Coverage: which rules, triggers, scenarios and criteria the cases reached."""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

# =============================================================================== coverage


@dataclass
class CoverageItem:
    kind: str  # rule | stop | criterion | scenario
    name: str  # display name, e.g. "send_customer_reply.small"
    location: str  # file:line
    file: str
    branches: tuple[str, ...]
    hit: set = field(default_factory=set)
    unloaded: bool = False  # of a policy file under the tested paths that no suite loads

    @property
    def exercised(self) -> bool:
        """A rule or trigger is exercised once a case makes it fire (every gate case of its
        action type evaluates it, so "not fired" alone says nothing); a criterion or scenario
        once a case evaluates it."""
        if "fired" in self.branches:
            return "fired" in self.hit
        return bool(self.hit)


class Coverage:
    """Items of a policy set and the branches the decisions exercised (from traces)."""

    def __init__(self) -> None:
        self.items: dict[tuple, CoverageItem] = {}
        self._sets: set = set()
        self.unloaded: list[str] = []  # policy files under the tested paths that no suite loads
        self.unmeasured: dict[str, str] = {}  # such a file whose branches could not be counted: why
        # suites that did not run (unreadable YAML, wrong `policies`): the policy paths each
        # names, None when that is not known; and each unloaded file one of them names
        self.suites_not_run: dict[str, list[str] | None] = {}
        self.not_run: dict[str, list[str]] = {}

    def why_unloaded(self, file: str) -> str:
        """Why no case reached `file`, as the report says it: "no suite loads it" only when
        that is known. When a suite that did not run names it, or may (its YAML does not parse
        before its `policies`), the report says so: it said "no suite loads it", untested by
        design, when its suite had failed."""
        suites = self.not_run.get(file)
        if suites:
            more = f" (and {len(suites) - 1} more)" if len(suites) > 1 else ""
            return f"its suite {suites[0]}{more} did not run"
        unknown = [s for s, named in self.suites_not_run.items() if named is None]
        if unknown:
            more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
            return f"no suite that ran loads it; {unknown[0]}{more}, which did not run, may"
        return "no suite loads it"

    def add_policy_set(self, policy_set: Any, unloaded: Collection[str] | None = None) -> None:
        """Every item of `policy_set`; with `unloaded` (paths of files no suite loads, read in a
        set of their own), only the items of those files, which no case can reach: all their
        branches count as not covered (a policy file added without a suite lowers coverage)."""
        if policy_set is None or id(policy_set) in self._sets:
            return
        self._sets.add(id(policy_set))
        only = None if unloaded is None else {os.path.realpath(f) for f in unloaded}
        items: dict[tuple, CoverageItem] = {}

        def loc(node: Any) -> tuple[str, str]:
            sp = getattr(node.loc, "span", None)
            if sp is None:
                return "<unknown>", "<unknown>"
            return f"{sp.path}:{sp.line}", sp.path

        for w in policy_set.workflows:
            for a in w.actions:
                for r in a.rules:
                    lc, f = loc(r)
                    const = r.condition.source.strip().strip("`").strip()
                    br = (
                        ("fired",)
                        if const == "true"
                        else ("not fired",)
                        if const == "false"
                        else ("fired", "not fired")
                    )
                    items.setdefault(
                        ("rule", w.name, a.name, r.name), CoverageItem("rule", f"{a.name}.{r.name}", lc, f, br)
                    )
            for s in w.stops:
                lc, f = loc(s)
                items.setdefault(
                    ("stop", w.name, s.name), CoverageItem("stop", s.name, lc, f, ("fired", "not fired"))
                )
                for c in s.criteria:
                    lc, f = loc(c)
                    items.setdefault(
                        ("criterion", w.name, s.name, c.name),
                        CoverageItem("criterion", f"{s.name}.{c.name}", lc, f, ("met", "unmet")),
                    )
            for sc in w.scenarios:
                lc, f = loc(sc)
                br = ("inside window", "after window") if sc.escalation is not None else ("inside window",)
                items.setdefault(("scenario", w.name, sc.name), CoverageItem("scenario", sc.name, lc, f, br))
        for key, item in items.items():
            if only is None:
                self.items.setdefault(key, item)
            elif os.path.realpath(item.file) in only:  # (keyed apart: a workflow of the same name elsewhere)
                item.unloaded = True
                self.items.setdefault(("unloaded", item.file, *key), item)

    def _hit(self, key: tuple, branch: str) -> None:
        item = self.items.get(key)
        if item is not None and branch in item.branches:
            item.hit.add(branch)

    def record(self, kind: str, answer: dict) -> None:
        # A condition whose evaluation failed took neither branch: an erroring deny rule or
        # trigger "matches" (fail closed) and an erroring allow rule does not, and a criterion
        # is unmet when it or the input has an error. Counted, a case with an incomplete input
        # covered both branches of rules whose conditions it never evaluated.
        if kind == "gate":
            wf, typ = answer.get("workflow"), answer.get("action_type")
            errored = set()
            for t in answer.get("trace", []):
                if t.get("error"):
                    errored.add((t.get("kind") == "stop", t.get("name")))
                    continue
                branch = "fired" if t.get("matched") else "not fired"
                if t.get("kind") == "stop":
                    self._hit(("stop", wf, t.get("name")), branch)
                else:
                    self._hit(("rule", wf, typ, t.get("name")), branch)
            d = answer.get("deciding") or {}
            if d.get("kind") == "stop" and (True, d.get("name")) not in errored:
                self._hit(("stop", wf, d.get("name")), "fired")
        elif kind == "rollback":
            wf = answer.get("workflow")
            win = answer.get("window")
            if answer.get("scenario_declared", True):
                self._hit(
                    ("scenario", wf, answer.get("scenario")), "after window" if win == "escalated" else "inside window"
                )
        elif kind == "resume":
            wf, trig = answer.get("workflow"), answer.get("trigger")
            errs = [e for e in answer.get("errors", []) if isinstance(e, dict)]
            if any(e.get("kind") == "input" for e in errs):  # no criterion was evaluated
                return
            failed = {e.get("rule") for e in errs if e.get("kind") == "criterion"}
            for c in answer.get("criteria", []):
                if c.get("name") not in failed:
                    self._hit(("criterion", wf, trig, c.get("name")), "met" if c.get("met") else "unmet")

    # ----------------------------------------------------------------- reporting
    def per_file(self) -> list[dict]:
        files: dict[str, dict] = {}
        for it in self.items.values():
            f = files.setdefault(it.file, {"file": it.file, "items": 0, "exercised": 0, "branches": 0, "covered": 0})
            f["items"] += 1
            f["exercised"] += it.exercised
            f["branches"] += len(it.branches)
            f["covered"] += len(it.hit)
        out = []
        for f in sorted(files.values(), key=lambda x: x["file"]):
            f["percent"] = round(100.0 * f["covered"] / f["branches"], 1) if f["branches"] else None
            out.append(f)
        return out

    @property
    def branches(self) -> int:
        """Every branch of every item: 0 when no policy was read (each suite errored) or it has none."""
        return sum(len(i.branches) for i in self.items.values())

    @property
    def applicable(self) -> bool:
        """Whether there is a branch to cover: without one the percentage is not applicable
        (``n/a`` in the text, ``null`` in JSON), never 100%."""
        return self.branches > 0

    @property
    def percent(self) -> float:
        """Covered branches over all branches; 0.0 when there are none, so a ``--min-coverage``
        above 0 is not met (see :meth:`shortfall`; the report shows :attr:`applicable` instead
        of this number). It was 100.0: a CI asking for 80% of a policy set with nothing to
        measure went green."""
        total = self.branches
        covered = sum(len(i.hit) for i in self.items.values())
        return 100.0 * covered / total if total else 0.0

    def shortfall(self, min_coverage: float | None) -> str | None:
        """Why the coverage does not meet ``--min-coverage`` (one line), or None when it does.
        With no branch to measure a threshold above 0 is not met: the threshold asks that
        branches were exercised, and none can be shown to be (as `coverage report
        --fail-under` fails with "No data to report")."""
        if min_coverage is None:
            return None
        if min_coverage != min_coverage:  # NaN: every comparison with it is false, so it was always met
            return "--min-coverage nan is not a percentage: no coverage meets it (give one from 0 to 100)"
        if self.unmeasured and min_coverage > 0:  # (its branches are unknown: so is the percentage)
            first = next(iter(self.unmeasured))
            more = f" (and {len(self.unmeasured) - 1} more)" if len(self.unmeasured) > 1 else ""
            why = self.why_unloaded(first)
            which = ", which no suite loads," if why == "no suite loads it" else f" ({why})"
            return (f"{first}{more}{which} does not load: its branches cannot be counted, "
                    f"so --min-coverage {min_coverage:g}% is not met (`stopline check {first}`)")
        if not self.applicable:
            if min_coverage <= 0:
                return None
            return (f"coverage is not applicable, so --min-coverage {min_coverage:g}% is not met: no rule, "
                    "stop trigger, criterion or scenario was read (every suite errored, or the policies "
                    "tested declare none)")
        if self.percent + 1e-9 < min_coverage:
            return f"coverage {self.percent:.1f}% is below --min-coverage {min_coverage:g}%"
        return None

    def never_exercised(self) -> list[CoverageItem]:
        """Items never exercised, but those of files no suite loads (listed by file instead)."""
        return sorted(
            (i for i in self.items.values() if not i.exercised and not i.unloaded),
            key=lambda i: (i.file, _line_of(i.location), i.name),
        )

    def partially_exercised(self) -> list[CoverageItem]:
        return sorted(
            (i for i in self.items.values() if i.exercised and len(i.hit) < len(i.branches)),
            key=lambda i: (i.file, _line_of(i.location), i.name),
        )

    def render(self) -> str:
        rows = self.per_file()
        width = max([len(r["file"]) for r in rows] + [len("file"), len("total")])
        head = f"{'file':<{width}}  {'items':>5}  {'exercised':>9}  {'branches':>8}  {'covered':>7}  {'%':>6}"
        title = "coverage:" if self.applicable else \
            "coverage: nothing to measure (no rule, stop trigger, criterion or scenario was read)"
        lines = [title]
        if self.suites_not_run:  # (their cases count as not run: coverage is not of the whole)
            n = len(self.suites_not_run)
            lines.append(f"incomplete: {n} suite{'s' if n != 1 else ''} did not run "
                         f"({', '.join(self.suites_not_run)}); what {'they name' if n != 1 else 'it names'} "
                         "counts as never exercised")
        lines += [head, "-" * len(head)]
        for r in rows:
            lines.append(
                f"{r['file']:<{width}}  {r['items']:>5}  {r['exercised']:>9}  {r['branches']:>8}  "
                f"{r['covered']:>7}  {_pct(r['percent'])}"
            )
        tot = {k: sum(r[k] for r in rows) for k in ("items", "exercised", "branches", "covered")}
        lines.append("-" * len(head))
        lines.append(
            f"{'total':<{width}}  {tot['items']:>5}  {tot['exercised']:>9}  {tot['branches']:>8}  "
            f"{tot['covered']:>7}  {_pct(self.percent if self.applicable else None)}"
        )
        never = self.never_exercised()
        unloaded = {f: [i for i in self.items.values() if i.unloaded and i.file == f] for f in self.unloaded}
        unloaded = {f: its for f, its in unloaded.items() if its or f in self.unmeasured}  # (roles only: nothing)
        if never or unloaded:
            lines.append("")
            lines.append("never exercised:")
            for f, its in unloaded.items():  # (one line a file: no case can reach any of its items)
                if f in self.unmeasured:
                    lines.append(f"  {f}: not measured ({self.why_unloaded(f)}, and it does not load: "
                                 f"{self.unmeasured[f]})")
                else:
                    lines.append(f"  {f}: {len(its)} item{'s' if len(its) != 1 else ''} ({self.why_unloaded(f)})")
            for i in never:
                note = " (evaluated, never fired)" if i.hit else ""
                lines.append(f"  {i.location}: {i.kind} {i.name}{note}")
        part = self.partially_exercised()
        if part:
            lines.append("")
            lines.append("branches never taken:")
            for i in part:
                missing = [b for b in i.branches if b not in i.hit]
                lines.append(f"  {i.location}: {i.kind} {i.name}: {', '.join(missing)}")
        from ..diagnostics import _printable  # (file names and load errors: no terminal escape acts)

        return "\n".join(_printable(ln) for ln in lines)

    def to_json(self) -> dict:
        return {
            "percent": round(self.percent, 2) if self.applicable else None,  # (no branch: not applicable)
            "files": self.per_file(),
            "unloaded": list(self.unloaded),  # policy files under the tested paths no suite that ran loads
            "unmeasured": [{"file": f, "reason": r} for f, r in self.unmeasured.items()],
            # suites that did not run: the policy paths each names (null: not known); an
            # "unloaded" file one of them names is not untested by design, its suite failed
            "suites_not_run": [{"suite": s, "policies": p} for s, p in self.suites_not_run.items()],
            "items": [
                {
                    "kind": i.kind,
                    "name": i.name,
                    "location": i.location,
                    "branches": list(i.branches),
                    "hit": sorted(i.hit),
                    "unloaded": i.unloaded,
                }
                for i in sorted(self.items.values(), key=lambda i: (i.file, _line_of(i.location), i.name))
            ],
        }


def _pct(p: float | None) -> str:
    """A percentage in the table's last column (6 wide): ``n/a`` for none."""
    return f"{p:>5.1f}%" if p is not None else f"{'n/a':>6}"


def _line_of(location: str) -> int:
    try:
        return int(location.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return 0
