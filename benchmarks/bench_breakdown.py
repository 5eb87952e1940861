"""Where `evaluate()`'s time goes on the benchmark mix (issue 16, goal 1): each request of
the main table's mix without a workflow state, timed alone through five callables, in
interleaved rounds, medians per effect and over the mix:

  evaluate      `Engine.evaluate(action, None, now)`, what the main table times;
  fused         the type's fused gate function called directly (`fz.fn(action, now)`): its
                input check, every condition and the decision from its template, without
                `Engine.evaluate`'s dispatch;
  mask          the same function generated without the decision (`FusedGate.generate
                (False)`: the input check and every condition, the outcome mask returned);
  check         that function cut before its first condition: the input check alone (the
                fields read, their types and limits, as the reference checks them);
  floor         the same function with its decision's template taken by the mask alone
                (one per mask, from a real decision): copied, its id set, a require_approval
                decision's action frozen, the object made and its two slots set, as the
                real function does, but no per-`now` lookup: the least a pydantic `Decision`
                of the contract costs (its decisions are not the gate's: a measure only);
  hand-written  `benchmarks/baselines/handwritten.py` (the short-circuit baseline).

So `evaluate - fused` is the dispatch (less the one dict lookup the others make),
`fused - mask` the decision's building, `floor - mask` what building a `Decision` costs at
the least, `mask - check` the conditions, `evaluate - fused + floor` what `evaluate` would
cost with its dispatch as it is and the decision at that least, and `dispatch + check +
least` what it would cost if every condition were free. Each timing includes the call of a
small lambda, whose median is subtracted.

    python benchmarks/bench_breakdown.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.requests import make_mix  # noqa: E402

_FLOOR_HEAD = """
    _x = _FLOOR[_m]
    _tpl = _x[0].copy()
"""


def _variants(engine, mix) -> tuple[dict, dict, dict]:
    """(type -> mask function, type -> floor function, type -> check function) for every
    type of the mix whose fused gate is built."""
    acc = engine.accelerator
    masks, floors, checks = {}, {}, {}
    for t, fz in acc.quick.items():
        if fz.fn is None:
            continue
        masks[t], msrc = fz.generate(False)
        head, sep, _ = msrc.partition("\n    _m = 0\n")  # the conditions start there
        assert sep, msrc
        gc_ = dict(masks[t].__globals__)
        exec(head + "\n    return 0\n", gc_)  # noqa: S102
        checks[t] = gc_["fused"]
        src = fz.source
        head, tail = src.split("    _aid = ", 1)
        g = dict(fz.fn.__globals__)
        g["_FLOOR"] = {}
        for a, s, n in mix:
            if a["type"] == t and s is None:
                d = engine.evaluate(a, s, n)
                g["_FLOOR"][masks[t](a, n)] = (dict(d.__dict__), d.__pydantic_fields_set__,
                                                d.effect == "require_approval")
        aid, rest = tail.split("\n", 1)
        # the real epilogue from the id on (the digest's freeze, the Decision), its template
        # by the mask alone
        rest = rest[rest.index("    _tpl['action_id'] = _aid"):]
        exec(head + "    _aid = " + aid + "\n" + _FLOOR_HEAD + rest, g)  # noqa: S102
        floors[t] = g["fused"]
    return masks, floors, checks


def run(rounds: int, out=print) -> dict:
    import policy_engine
    from benchmarks.baselines import handwritten

    engine = policy_engine.load(str(ROOT / "benchmarks" / "policies"))
    mix = make_mix(200)
    for _ in range(4):  # every type's fused gate built, its templates kept per `now`
        for a, s, n in mix:
            engine.evaluate(a, s, n)
    masks, floors, checks = _variants(engine, mix)
    quick = engine.accelerator.quick
    fns = {t: quick[t].fn for t in masks}  # (looked up as the other two are)
    reqs = [(a, s, n) for a, s, n in mix if s is None and a["type"] in masks]
    for a, _s, n in reqs:  # the fused function decides as evaluate does
        assert quick[a["type"]].fn(a, n) == engine.evaluate(a, None, n)
    calls = {
        "evaluate": engine.evaluate,
        "fused": lambda a, s, n: fns[a["type"]](a, n),
        "mask": lambda a, s, n: masks[a["type"]](a, n),
        "check": lambda a, s, n: checks[a["type"]](a, n),
        "floor": lambda a, s, n: floors[a["type"]](a, n),
        "hand-written": handwritten.evaluate,
        "(a lambda)": lambda a, s, n: None,
    }
    pc = time.perf_counter_ns
    per: dict = {k: [[] for _ in reqs] for k in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            xs = per[name]
            for i, (a, s, n) in enumerate(reqs):
                t0 = pc()
                fn(a, s, n)
                t1 = pc()
                xs[i].append(t1 - t0)
    med = {k: [statistics.median(x) for x in v] for k, v in per.items()}
    base = statistics.median(med.pop("(a lambda)"))
    groups: dict = defaultdict(list)
    for i, (a, s, n) in enumerate(reqs):
        groups[engine.evaluate(a, s, n).effect].append(i)
    groups = {"all": list(range(len(reqs))), **groups}
    res: dict = {"requests": len(reqs), "lambda_ns": base, "groups": {}}
    out(f"where evaluate()'s time goes: {len(reqs)} requests of the mix (no workflow state), {rounds} rounds, "
        f"medians in us (a lambda's call, {base / 1000:.2f} us, subtracted)")
    out(f"  {'':18s} {'n':>4s} {'evaluate':>9s} {'fused':>7s} {'mask':>7s} {'check':>7s} {'floor':>7s}"
        f" {'hand':>7s} {'dispatch':>9s} {'decision':>9s} {'least':>7s}")
    for g, ix in groups.items():
        m = {k: (statistics.median([v[i] for i in ix]) - base) / 1000 for k, v in med.items()}
        row = {**m, "dispatch": m["evaluate"] - m["fused"], "decision": m["fused"] - m["mask"],
               "least": m["floor"] - m["mask"], "n": len(ix)}
        res["groups"][g] = row
        out(f"  {g:18s} {len(ix):4d} {m['evaluate']:9.2f} {m['fused']:7.2f} {m['mask']:7.2f} {m['check']:7.2f}"
            f" {m['floor']:7.2f} {m['hand-written']:7.2f} {row['dispatch']:9.2f} {row['decision']:9.2f}"
            f" {row['least']:7.2f}")
    a = res["groups"]["all"]
    at_least = a["dispatch"] + a["floor"]
    res["evaluate_at_floor_vs_handwritten"] = at_least / a["hand-written"]
    out(f"evaluate / hand-written over these requests: {a['evaluate'] / a['hand-written']:.1f}x; with the "
        f"decision built at the least (dispatch + floor, {at_least:.2f} us): "
        f"{res['evaluate_at_floor_vs_handwritten']:.1f}x; the input check and the conditions alone (mask): "
        f"{a['mask'] / a['hand-written']:.1f}x")
    free = a["dispatch"] + a["check"] + a["least"]
    res["without_conditions_vs_handwritten"] = free / a["hand-written"]
    out(f"the input check alone: {a['check'] / a['hand-written']:.1f}x hand-written; with every condition "
        f"free (dispatch + check + least, {free:.2f} us): {res['without_conditions_vs_handwritten']:.1f}x")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: few rounds (figures are rough)")
    args = ap.parse_args()
    run(3 if args.quick else 60)


if __name__ == "__main__":
    main()
