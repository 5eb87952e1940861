"""Issue 16, goals 1-3: the gate on the paths a runtime takes, each measured against the
fixed-`now` `evaluate()` of the same run (bench_engine.py prints these lines).

- `now=None`: the clock read on every call, `evaluated_at` / `reversible_until` rendered per
  call (goal 2: <= 1.5x the fixed-`now` median);
- a new `now` on every call (a runtime passing its own clock's time; each `now` a distinct
  datetime, one microsecond apart, built before timing): goal 2 likewise;
- the decision as JSON, what a runtime logs: `engine.evaluate_json(...)`, the one documented
  call (goal 3: <= 2x `evaluate()` alone), beside `evaluate(...).to_json()` (two calls: the
  decision is compared with its template before it is written), `model_dump_json()` (with
  no arguments, `to_json()` itself), pydantic's own serializer (`BaseModel.model_dump_json`,
  what `model_dump_json()` was before: the same bytes, checked on every decision of the mix
  for each of the others, any difference fails the run), `model_dump(mode="json")` (from the
  template, see `engine.accel.dumps`) beside pydantic's own dump (the same dict, checked
  likewise); and
  `evaluate(action, state).to_json()` with the clock (informational: a runtime's whole path).

Every line is timed per call (timer overhead subtracted), interleaved in rounds with the
fixed-`now` `evaluate()` and the hand-written baseline, so machine noise hits all alike; the
ratios are of medians of this run. Medians are also given per effect: a require_approval
decision's JSON includes its action digest (sha256 of the action's canonical JSON), which
`evaluate()` defers until it is read.
"""

from __future__ import annotations

import statistics
import time
from datetime import timedelta

pc = time.perf_counter_ns

TARGETS = {
    "evaluate_vs_handwritten_max": 3.0,  # goal 1 (also the main table's target)
    "clock_vs_fixed_max": 1.5,  # goal 2: now=None
    "new_now_vs_fixed_max": 1.5,  # goal 2: a different now on every call
    "json_vs_evaluate_max": 2.0,  # goal 3: evaluate_json() (evaluate + the JSON in one call) vs evaluate
}


def check_json(engine, mix) -> list[str]:
    """Every decision of the mix (fixed `now`, clock, a new `now`) as `to_json()`, as
    `model_dump_json()` and by `evaluate_json()`, each against pydantic's own serializer:
    the differences (none expected)."""
    from pydantic import BaseModel

    bad = []
    for i, (a, s, n) in enumerate(mix):
        for now in (n, None, n + timedelta(microseconds=i + 1)):
            d = engine.evaluate(a, s, now)
            want = BaseModel.model_dump_json(d)
            if d.to_json() != want:
                bad.append(f"{a.get('id')} at {now}: to_json() differs from pydantic's model_dump_json()")
            if d.model_dump_json() != want:
                bad.append(f"{a.get('id')} at {now}: model_dump_json() differs from pydantic's")
            got, ref = d.model_dump(mode="json"), BaseModel.model_dump(d, mode="json")
            if got != ref or list(got) != list(ref):
                bad.append(f"{a.get('id')} at {now}: model_dump(mode='json') differs from pydantic's")
            if now is not None and hasattr(engine, "evaluate_json") and \
                    engine.evaluate_json(a, s, now) != BaseModel.model_dump_json(engine.evaluate(a, s, now)):
                bad.append(f"{a.get('id')} at {now}: evaluate_json() differs from pydantic's model_dump_json()")
    return bad


def _timed(fn, reqs, overhead: int, out: list) -> None:
    for a, s, n in reqs:
        t0 = pc()
        fn(a, s, n)
        t1 = pc()
        out.append(t1 - t0 - overhead)


def run(engine, handwritten, mix, quick: bool, overhead: int, other=None) -> dict:
    """Medians (us) of each path, interleaved with evaluate() and hand-written; per effect too.
    `other`: a second engine of the same policy for the new-`now`-per-call line (the `now`s
    it caches would otherwise push the fixed `now`s out of `engine`'s caches between rounds,
    which a runtime does not do: it passes one kind of `now`)."""
    from pydantic import BaseModel

    pydantic_json, pydantic_dump = BaseModel.model_dump_json, BaseModel.model_dump
    ev = engine.evaluate
    paths = {
        "hand-written": handwritten,
        "evaluate": ev,
        "evaluate, now=None": ev,
        "evaluate, new now per call": (other or engine).evaluate,
        "evaluate_json()": getattr(engine, "evaluate_json", lambda a, s, n: ev(a, s, n).to_json()),
        "evaluate + to_json()": lambda a, s, n: ev(a, s, n).to_json(),
        "evaluate now=None + to_json()": lambda a, s, n: ev(a, s, None).to_json(),
        "evaluate + model_dump_json()": lambda a, s, n: ev(a, s, n).model_dump_json(),
        "evaluate + pydantic's JSON": lambda a, s, n: pydantic_json(ev(a, s, n)),
        "evaluate + model_dump(json)": lambda a, s, n: ev(a, s, n).model_dump(mode="json"),
        "evaluate + pydantic's dump(json)": lambda a, s, n: pydantic_dump(ev(a, s, n), mode="json"),
        "evaluate, a field missing": ev,
        "evaluate, every field missing": ev,
    }
    # actions as a runtime may send them, lacking fields their conditions read: each of the
    # mix's actions without its first field besides workflow, type and id; and without all
    alt = missing_fields(mix)
    rounds = 2 if quick else 24
    slow = {"evaluate + pydantic's JSON", "evaluate + pydantic's dump(json)"}  # 4x fewer rounds (slow, informational)
    effect = [ev(a, s, n).effect for a, s, n in mix]
    effects = {name: [ev(a, s, n).effect for a, s, n in reqs] for name, reqs in alt.items()}
    clock = [(a, s, None) for a, s, _ in mix]
    samples: dict[str, list[int]] = {k: [] for k in paths}
    by_effect: dict[str, dict[str, list[int]]] = {k: {} for k in paths}
    step = 0
    for _ in range(2):  # warm-up (every path's caches)
        for name, fn in paths.items():
            _timed(fn, clock if name == "evaluate, now=None" else alt.get(name, mix), 0, [])
    for r in range(rounds):
        for name, fn in paths.items():
            if name in slow and r % 4:
                continue
            if name == "evaluate, now=None":
                reqs = clock
            elif name == "evaluate, new now per call":
                reqs = []
                for a, s, n in mix:  # distinct datetimes, built before timing
                    step += 1
                    reqs.append((a, s, n + timedelta(microseconds=step)))
            else:
                reqs = alt.get(name, mix)
            xs: list[int] = []
            _timed(fn, reqs, overhead, xs)
            samples[name] += xs
            for e, x in zip(effects.get(name, effect), xs):
                by_effect[name].setdefault(e, []).append(x)
    res = {name: statistics.median(xs) / 1000 for name, xs in samples.items()}
    res["floors"] = floors(engine, mix, rounds, overhead)
    res["undeclared"] = undeclared_path(engine, mix, rounds, overhead)
    res["forms"] = input_forms(engine, mix, rounds, overhead)
    res["by_effect"] = {name: {e: statistics.median(v) / 1000 for e, v in sorted(d.items())}
                        for name, d in by_effect.items()}
    res["samples"] = {name: len(xs) for name, xs in samples.items()}
    return res


def missing_fields(mix) -> dict[str, list]:
    """The mix's actions lacking fields: each without its first field besides `workflow`,
    `type` and `id` (those that have one), and each with only those three."""
    ident = ("workflow", "type", "id")
    one, every = [], []
    for a, s, n in mix:
        rest = [k for k in a if k not in ident]
        if rest:
            one.append(({k: v for k, v in a.items() if k != rest[0]}, s, n))
        every.append(({k: a[k] for k in ident if k in a}, s, n))
    return {"evaluate, a field missing": one, "evaluate, every field missing": every}


_FLOOR_POLICY = """
workflow "floor" {
  version "1"
  owners { business "b" technical "t" }
  default deny
  action noop {
    system "x"
    reversible full via "x.undo" within 30d
    receipt [policy_rule]
  }
}
"""


def floors(engine, mix, rounds: int, overhead: int) -> dict:
    """What the gate costs before its first condition, and what the digest costs by its
    definition (the context of goals 1 and 3):
    - `evaluate` of an action of a declared type with no condition at all (the call, the
      input check of its id, the decision built from its template), at a fixed `now`;
    - the action digest as `engine.digests.action_digest` defines it (sha256 of the
      canonical JSON, by the C encoder) of each require_approval action of the mix."""
    from policy_engine.engine import Engine
    from policy_engine.engine.digests import action_digest
    from policy_engine.language.loader import load_text

    bare = Engine.from_load_result(load_text(_FLOOR_POLICY, "floor.policy"))
    now = mix[0][2]
    noop = [({"id": f"f-{i}", "type": "noop", "workflow": "floor"}, None, now) for i in range(len(mix))]
    approvals = [(a, s, n) for a, s, n in mix if engine.evaluate(a, s, n).effect == "require_approval"]
    for _ in range(4):  # its fused gate built, the templates kept
        _timed(bare.evaluate, noop, 0, [])
    assert bare.evaluate(*noop[0]).effect == "deny"  # (the default: a policy may not default to allow)
    empty: list[int] = []
    digest: list[int] = []
    for _ in range(rounds):
        _timed(bare.evaluate, noop, overhead, empty)
        _timed(lambda a, s, n: action_digest(a), approvals, overhead, digest)
    return {"no_condition_us": statistics.median(empty) / 1000, "digest_us": statistics.median(digest) / 1000}


def undeclared_path(engine, mix, rounds: int, overhead: int) -> dict | None:
    """The mix's requests of a type their (declared) workflow does not declare (its
    `wire_transfer`s): `evaluate()` and `evaluate_json()` (the undeclared-type lane,
    `engine/accel/undeclared.py`) against the reference gate of the same policy
    (`accelerate=False`; its JSON by `model_dump_json()`), interleaved, each round the
    requests ten times over; None when the mix has none."""
    from policy_engine.engine import Engine
    from policy_engine.language.loader import load_sources

    wfs = engine.compiled.workflows
    reqs = [(a, s, n) for a, s, n in mix if s is None and type(a.get("workflow")) is str
            and a["workflow"] in wfs and a.get("type") not in wfs[a["workflow"]].actions] * 10
    if not reqs:
        return None
    ref = Engine.from_load_result(load_sources(list(engine.sources.values()), accelerate=False), accelerate=False)
    paths = {"evaluate": engine.evaluate, "reference": ref.evaluate, "evaluate_json()": engine.evaluate_json,
             "reference json": lambda a, s, n: ref.evaluate(a, s, n).model_dump_json()}
    samples: dict[str, list[int]] = {k: [] for k in paths}
    for fn in paths.values():  # warm-up
        _timed(fn, reqs, 0, [])
    for _ in range(rounds):
        for name, fn in paths.items():
            _timed(fn, reqs, overhead, samples[name])
    out = {name: statistics.median(xs) / 1000 for name, xs in samples.items()}
    out["requests"] = len(reqs) // 10
    return out


# an action type whose conditions read a declared time and duration (input_forms)
TIMES_POLICY = """roles [reviewer]
workflow "bookings" {
  version "1"
  owners { business "b" technical "t" }
  default deny
  action book {
    reversible full via "b.undo" within 1h
    fields {
      due: timestamp
      hold: duration
      amount: double
      tags: list<string>
    }
    deny late when `action.due < now`
    require_approval long by 1 reviewer when `action.hold > duration("48h")`
    require_approval vip by 1 reviewer when `"vip" in action.tags`
    allow fine when `action.amount < 300.0`
  }
}
"""


def input_forms(engine, mix, rounds: int, overhead: int) -> dict:
    """The same requests (the mix's without a workflow state) in the other forms a runtime
    may send them, each against the plain form (a dict action, `now` a datetime in UTC) and
    against the reference gate (`accelerate=False`) given the same form, interleaved:
    `now` as an RFC 3339 string and as another zone's datetime, the action as the package's
    `Action` model, a running workflow's state as a dict. And an action type that declares
    its fields (`fields { ... }`, policies/refunds.policy's `issue_refund`), against a
    copy of the policy without the declaration; and one whose conditions read a declared
    `timestamp` and a `duration` field (a Python caller's `datetime` and `timedelta`,
    `TIMES_POLICY`), against the reference gate."""
    import re
    import tempfile
    from datetime import timezone
    from pathlib import Path

    import policy_engine
    from policy_engine.engine import Engine
    from policy_engine.language.loader import load_sources
    from policy_engine.models import Action
    from policy_engine.source import SourceFile

    ref = Engine.from_load_result(load_sources(list(engine.sources.values()), accelerate=False), accelerate=False)
    plain = [(a, s, n) for a, s, n in mix if s is None]
    east = timezone(timedelta(hours=2))
    running = {"status": "running", "name": "runtime"}
    forms = {
        "plain": plain,
        "now as a string": [(a, s, n.isoformat().replace("+00:00", "Z")) for a, s, n in plain],
        "now in another zone": [(a, s, n.astimezone(east)) for a, s, n in plain],
        "an Action model": [(Action(**a), s, n) for a, s, n in plain],
        "a running state dict": [(a, running, n) for a, s, n in plain],
    }
    root = Path(__file__).resolve().parents[1]
    text = (root / "policies/refunds.policy").read_text()
    untyped_text = re.sub(r"\n    fields \{.*?\n    \}\n", "\n", text, flags=re.S)
    a = {"workflow": "refunds", "type": "issue_refund", "id": "r1", "amount": 40.0, "currency": "USD",
         "reason": "damaged_item", "payee_account_id": "c1",
         "order": {"id": "o1", "total": 100.0, "refunded_amount": 0.0, "customer_account_id": "c1"}}
    typed = [(dict(a, id=f"r{i}"), None, plain[0][2]) for i in range(50)]
    with tempfile.TemporaryDirectory() as d:
        for name, body in (("typed", text), ("untyped", untyped_text)):
            (Path(d) / name).mkdir()
            (Path(d) / name / "refunds.policy").write_text(body)
            (Path(d) / name / "roles.policy").write_text((root / "policies/roles.policy").read_text())
        typed_engine = policy_engine.load(str(Path(d) / "typed"))
        untyped_engine = policy_engine.load(str(Path(d) / "untyped"))
        typed_ref = policy_engine.load(str(Path(d) / "typed"), accelerate=False)
    times_engine, times_ref = (Engine.from_load_result(load_sources([SourceFile("times.policy", TIMES_POLICY)],
                                                                    accelerate=acc), accelerate=acc)
                               for acc in (True, False))
    now0 = plain[0][2]
    timed = [({"workflow": "bookings", "type": "book", "id": f"b{i}", "due": now0 + timedelta(hours=i - 10),
               "hold": timedelta(hours=3 * i), "amount": 20.0 + 10 * i, "tags": ["vip"] if i % 7 == 0 else ["a"]},
              None, now0) for i in range(50)]
    paths = {f"{k}": (engine.evaluate, v) for k, v in forms.items()}
    paths.update({f"{k}, reference": (ref.evaluate, v) for k, v in forms.items() if k != "plain"})
    paths.update({"declared fields": (typed_engine.evaluate, typed), "without the declaration": (
        untyped_engine.evaluate, typed), "declared fields, reference": (typed_ref.evaluate, typed),
        "declared times": (times_engine.evaluate, timed), "declared times, reference": (times_ref.evaluate, timed)})
    for _ in range(3):  # warm-up: fused gates built, templates kept
        for fn, reqs in paths.values():
            _timed(fn, reqs, 0, [])
    samples: dict[str, list[int]] = {k: [] for k in paths}
    for _ in range(max(2, rounds // 3)):
        for name, (fn, reqs) in paths.items():
            _timed(fn, reqs, overhead, samples[name])
    return {name: statistics.median(xs) / 1000 for name, xs in samples.items()}


def report(out, res: dict, main: tuple[float, float] | None = None) -> dict:
    """Print the lines and the goal 1-3 ratios with met/MISSED; return the ratios. `main`:
    the (evaluate, hand-written) medians of bench_engine's main table, which goal 1 is
    measured on there (each run alone, 100 rounds; here they run between heavier lines,
    with colder caches)."""
    met = lambda b: "met" if b else "MISSED"  # noqa: E731
    ev = res["evaluate"]
    out("runtime paths (issue 16, goals 1-3; us per call, medians, interleaved in this run; "
        "per effect: allow / deny / require_approval / stop):")
    for name in ("hand-written", "evaluate", "evaluate, now=None", "evaluate, new now per call", "evaluate_json()",
                 "evaluate + to_json()",
                 "evaluate now=None + to_json()", "evaluate + model_dump_json()", "evaluate + pydantic's JSON",
                 "evaluate + model_dump(json)", "evaluate + pydantic's dump(json)",
                 "evaluate, a field missing", "evaluate, every field missing"):
        eff = res["by_effect"][name]
        per = " / ".join(f"{eff[e]:.2f}" if e in eff else "-" for e in ("allow", "deny", "require_approval", "stop"))
        out(f"  {name:<30}{res[name]:>8.2f}   ({per})")
    t = TARGETS
    ratios = {
        "evaluate_vs_handwritten": main[0] / main[1] if main else ev / res["hand-written"],
        "clock_vs_fixed": res["evaluate, now=None"] / ev,
        "new_now_vs_fixed": res["evaluate, new now per call"] / ev,
        "json_vs_evaluate": res["evaluate_json()"] / ev,
        "to_json_vs_evaluate": res["evaluate + to_json()"] / ev,
        "model_dump_json_vs_evaluate": res["evaluate + model_dump_json()"] / ev,
        "pydantic_json_vs_evaluate": res["evaluate + pydantic's JSON"] / ev,
        "model_dump_vs_evaluate": res["evaluate + model_dump(json)"] / ev,
        "pydantic_dump_vs_evaluate": res["evaluate + pydantic's dump(json)"] / ev,
    }
    g1, g2c, g2n, g3 = (ratios[k] for k in ("evaluate_vs_handwritten", "clock_vs_fixed", "new_now_vs_fixed",
                                             "json_vs_evaluate"))
    out(f"goal 1: evaluate / hand-written {g1:.1f}x{' (the main table above)' if main else ''} "
        f"(target <= {t['evaluate_vs_handwritten_max']:.0f}x: {met(g1 <= t['evaluate_vs_handwritten_max'])})")
    out(f"goal 2: evaluate now=None / fixed now {g2c:.2f}x (target <= {t['clock_vs_fixed_max']}x: "
        f"{met(g2c <= t['clock_vs_fixed_max'])}); a new now per call / fixed now {g2n:.2f}x "
        f"(target <= {t['new_now_vs_fixed_max']}x: {met(g2n <= t['new_now_vs_fixed_max'])})")
    out(f"goal 3: evaluate_json() / evaluate {g3:.2f}x (target <= {t['json_vs_evaluate_max']:.0f}x: "
        f"{met(g3 <= t['json_vs_evaluate_max'])}); evaluate + to_json() {ratios['to_json_vs_evaluate']:.2f}x; "
        f"evaluate + model_dump_json() {ratios['model_dump_json_vs_evaluate']:.2f}x; pydantic's own serializer "
        f"instead: {ratios['pydantic_json_vs_evaluate']:.1f}x")
    out(f"the decision as a dict (the contract's model_dump(mode=\"json\")): evaluate + model_dump(mode=\"json\") "
        f"{ratios['model_dump_vs_evaluate']:.1f}x evaluate(); pydantic's own dump instead: "
        f"{ratios['pydantic_dump_vs_evaluate']:.1f}x")
    ratios["one_missing_vs_evaluate"] = res["evaluate, a field missing"] / ev
    ratios["all_missing_vs_evaluate"] = res["evaluate, every field missing"] / ev
    out(f"actions lacking fields their conditions read: one field {ratios['one_missing_vs_evaluate']:.2f}x "
        f"evaluate() of the whole actions, every field {ratios['all_missing_vs_evaluate']:.2f}x (each decided as "
        f"the reference gate decides it, with its errors: tests/test_missing_fields.py)")
    und = res.get("undeclared")
    if und:
        ratios["undeclared_vs_reference"] = und["evaluate"] / und["reference"]
        ratios["undeclared_json_vs_reference"] = und["evaluate_json()"] / und["reference json"]
        out(f"an action type its workflow does not declare (the mix's {und['requests']} such requests): evaluate "
            f"{und['evaluate']:.2f} us, the reference gate (accelerate=False) {und['reference']:.2f} us = "
            f"{ratios['undeclared_vs_reference']:.2f}x; evaluate_json() {und['evaluate_json()']:.2f} us, the "
            f"reference's model_dump_json() {und['reference json']:.2f} us = "
            f"{ratios['undeclared_json_vs_reference']:.2f}x")
    fo = res.get("forms")
    if fo:
        base = fo["plain"]
        out(f"other forms of the same requests (us per call, medians; x the plain form {base:.2f} us; the reference "
            f"gate given the same form):")
        for name in ("now as a string", "now in another zone", "an Action model", "a running state dict"):
            ratios[f"form {name}"] = fo[name] / base
            out(f"  {name:<28}{fo[name]:>8.2f}   ({fo[name] / base:.2f}x; reference {fo[name + ', reference']:.2f} us)")
        ratios["declared_vs_undeclared"] = fo["declared fields"] / fo["without the declaration"]
        out(f"  {'declared fields':<28}{fo['declared fields']:>8.2f}   ({ratios['declared_vs_undeclared']:.2f}x the "
            f"same policy without the declaration, {fo['without the declaration']:.2f} us; reference "
            f"{fo['declared fields, reference']:.2f} us; policies/refunds.policy issue_refund)")
        if "declared times" in fo:
            ratios["times_vs_reference"] = fo["declared times"] / fo["declared times, reference"]
            out(f"  {'declared times':<28}{fo['declared times']:>8.2f}   ({ratios['times_vs_reference']:.2f}x the "
                f"reference's {fo['declared times, reference']:.2f} us; a timestamp and a duration field read by "
                f"the conditions, as datetime and timedelta)")
    fl = res.get("floors")
    if fl:
        hw = main[1] if main else res["hand-written"]
        ratios["no_condition_vs_handwritten"] = fl["no_condition_us"] / hw
        ratios["digest_vs_evaluate_approval"] = fl["digest_us"] / res["by_effect"]["evaluate"]["require_approval"]
        out(f"floors: evaluate of a type with no condition {fl['no_condition_us']:.2f} us = "
            f"{ratios['no_condition_vs_handwritten']:.1f}x the hand-written median (goal 1's 3x leaves "
            f"{3 * hw - fl['no_condition_us']:.2f} us for a request's conditions); the action digest by its "
            f"definition (canonical JSON + sha256) {fl['digest_us']:.2f} us = "
            f"{ratios['digest_vs_evaluate_approval']:.2f}x evaluate() of the same require_approval requests")
    return ratios


def main() -> None:
    """`python benchmarks/bench_paths.py`: these lines alone, on the `policy_engine` that
    imports (to compare trees: `PYTHONPATH=<other checkout> python benchmarks/bench_paths.py`;
    a tree without `Decision.to_json` is measured with `model_dump_json()` in its place)."""
    import json
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    if str(here.parent) not in sys.path:
        sys.path.insert(0, str(here.parent))  # this checkout's package, before an installed one
    import policy_engine
    from policy_engine.models import Decision

    if not hasattr(Decision, "to_json"):  # a tree from before issue 16
        Decision.to_json = Decision.model_dump_json  # type: ignore[attr-defined]
    from benchmarks.baselines import handwritten
    from benchmarks.requests import make_mix

    mix = make_mix(200)
    engine = policy_engine.load(str(here / "policies"))
    for _ in range(4):  # fused gates built, templates kept
        for a, s, n in mix:
            engine.evaluate(a, s, n)
    bad = check_json(engine, mix)
    other = policy_engine.load(str(here / "policies"))
    for _ in range(4):
        for a, s, n in mix:
            other.evaluate(a, s, n)
    res = run(engine, handwritten.evaluate, mix, "--quick" in sys.argv, 40, other)
    print(f"policy_engine from {Path(policy_engine.__file__).parent}")
    # goal 1 as bench_engine's main table measures it: each implementation alone, many rounds
    alone = {}
    for name, fn in (("evaluate", engine.evaluate), ("hand-written", handwritten.evaluate)):
        xs: list[int] = []
        for _ in range(10 if "--quick" in sys.argv else 100):
            _timed(fn, mix, 40, xs)
        alone[name] = statistics.median(xs) / 1000
    print(f"alone (bench_engine's main table): evaluate {alone['evaluate']:.2f} us, hand-written "
          f"{alone['hand-written']:.2f} us")
    res["ratios"] = report(print, res, (alone["evaluate"], alone["hand-written"]))
    print(json.dumps({"medians_us": {k: v for k, v in res.items() if isinstance(v, float)},
                      "ratios": res["ratios"], "json_differences": bad}))
    if bad:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
