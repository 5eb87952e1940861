"""What `Runtime.approve` of a gate decision costs, and how much of it is
`Engine.authorize_action` (the runtime judges the decision as recorded, a dict of several
KB, before and after the approval: `_subject_status`). Three lines, each an A/B of the
engine's fast read of a recorded decision (`authorize.FAST_DECISION`, `decision_view`)
against the reference (`parsed`: `check_size`, then pydantic's validation), interleaved
in rounds so machine noise hits both alike; medians of the rounds, CPU time:

- ``authorize_action``: `Engine.authorize_action(recorded decision, approvals, now)` with
  no approval and with the one approval `approve` then counts;
- ``approve``: `Runtime.approve` of freshly gated `send_customer_reply` decisions on SQLite
  (durability normal: no fsync counted), against `Ledger.append` of an execution body (the
  floor of any recorded write, as in `bench_runtime.py`'s lifecycle line), with the CPU inside `authorize_action`
  during the approvals (a timing wrapper around the engine module's function) and the rest;
- ``--profile``: cProfile of `approve` with the fast path on and off (top functions).

    python benchmarks/bench_authorize.py            # a few minutes on 2 cores
    python benchmarks/bench_authorize.py --quick    # smoke run
    python benchmarks/bench_authorize.py --json     # the figures as JSON

Asserts no timing; the verdicts of both paths are compared on every decision used.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

POLICIES = str(ROOT / "policies")
WF = "support-replies"
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def reply(i: int) -> dict:
    """A reply that promises a refund: `promise_needs_review` holds it for one reviewer."""
    return {"workflow": WF, "type": "send_customer_reply", "id": f"r{i}", "recipient": {"domain": "acme.example"},
            "claims": [{"kind": "refund", "sourced": True}], "customer": {"tier": "smb"}, "confidence": 0.95}


def _flag(on: bool) -> None:
    from policy_engine.engine import authorize

    authorize.FAST_DECISION = on


class _Timed:
    """Wraps `authorize.authorize_action` (what `Engine.authorize_action` calls): CPU inside it."""

    def __init__(self) -> None:
        from policy_engine.engine import authorize

        self.mod = authorize
        self.orig = authorize.authorize_action
        self.cpu = 0.0
        self.calls = 0

    def __enter__(self) -> _Timed:
        orig = self.orig

        def timed(*a, **k):
            c = time.thread_time()
            try:
                return orig(*a, **k)
            finally:
                self.cpu += time.thread_time() - c
                self.calls += 1

        self.mod.authorize_action = timed
        return self

    def __exit__(self, *exc) -> None:
        self.mod.authorize_action = self.orig


def bench_authorize_action(rounds: int, per: int) -> dict:
    """Engine.authorize_action on a recorded decision, fast vs reference, 0 and 1 approvals."""
    from policy_engine import Runtime

    with tempfile.TemporaryDirectory() as d:
        rt = Runtime.open(POLICIES, ledger=f"sqlite:///{d}/rt.db?durability=normal")
        g = rt.gate(reply(0), now=T0)
        dec = rt.ledger.get(g.decision_id).body["decision"]
        eng = rt.engine
        rt.close()
    app = {"principal": "sam", "roles": ["reviewer"], "action_digest": dec["action_digest"],
           "at": "2026-11-26T12:00:00.000000Z", "expires_at": "2026-11-27T12:00:00.000000Z",
           "policy_hash": dec["policy_hash"]}
    out: dict = {"decision_json_bytes": len(json.dumps(dec))}
    for k, apps in (("none", []), ("one", [app])):
        _flag(False)
        ref = eng.authorize_action(dec, apps, T0)
        _flag(True)
        assert eng.authorize_action(dec, apps, T0).model_dump_json() == ref.model_dump_json()
        samples: dict = {True: [], False: []}
        for _ in range(rounds):
            for on in (False, True):
                _flag(on)
                c = time.thread_time()
                for _ in range(per):
                    eng.authorize_action(dec, apps, T0)
                samples[on].append((time.thread_time() - c) / per * 1e6)
        _flag(True)
        r, f = statistics.median(samples[False]), statistics.median(samples[True])
        out[k] = {"reference_us": r, "fast_us": f, "ratio": r / f}
    return out


def bench_approve(rounds: int, per: int) -> dict:
    """Runtime.approve CPU per call, fast vs reference, against Ledger.append."""
    from policy_engine import Runtime
    from policy_engine.ledger import Ledger

    cpu: dict = {"fast": [], "reference": [], "append": []}
    inside: dict = {"fast": [], "reference": []}
    calls: dict = {"fast": 0, "reference": 0}
    with tempfile.TemporaryDirectory() as d:
        rt = Runtime.open(POLICIES, ledger=f"sqlite:///{d}/rt.db?durability=normal")
        led = Ledger.open(f"sqlite:///{d}/plain.db?durability=normal", create=True)
        i = 0
        for _ in range(20):  # warm-up
            g = rt.gate(reply(i), now=T0)
            i += 1
            rt.approve(g.decision_id, principal="sam", roles=["reviewer"], now=T0)
        receipt = {"final_message": "Your refund of $40 is on its way.", "reviewer_decision": "approved by sam",
                   "policy_rule": "promise_needs_review", "source_excerpts": ["refund policy"], "ticket_id": "T-1",
                   "recipient": "dana@acme.example", "recipient_opened": False, "channel": "email", "reviewer": "sam"}
        body = {"decision": g.decision_id, "receipt": receipt, "authorized": True}  # (bench_runtime's lifecycle line)
        for _ in range(rounds):
            for mode in ("reference", "fast", "append"):
                gates = []
                for _ in range(per):
                    gates.append(rt.gate(reply(i), now=T0))
                    i += 1
                if mode == "append":
                    c = time.thread_time()
                    for _ in gates:
                        led.append("execution", body, workflow=WF, time=T0)
                    cpu[mode].append((time.thread_time() - c) / per * 1e6)
                    continue
                _flag(mode == "fast")
                with _Timed() as t:
                    c = time.thread_time()
                    for g in gates:
                        r = rt.approve(g.decision_id, principal="sam", roles=["reviewer"], now=T0)
                    cpu[mode].append((time.thread_time() - c) / per * 1e6)
                assert r.recorded and r.status == "approved", r
                inside[mode].append(t.cpu / per * 1e6)
                calls[mode] += t.calls
        _flag(True)
        for g in gates:  # both paths answer alike on the decisions approved here
            _flag(False)
            ref = rt.authorization(g.decision_id, now=T0)
            _flag(True)
            got = rt.authorization(g.decision_id, now=T0)
            assert (got.status, got.verdict.model_dump_json()) == (ref.status, ref.verdict.model_dump_json())
        rt.close()
        led.close()
    med = {k: statistics.median(v) for k, v in cpu.items()}
    ins = {k: statistics.median(v) for k, v in inside.items()}
    return {"rounds": rounds, "per_round": per, "approve_fast_us": med["fast"],
            "approve_reference_us": med["reference"], "append_us": med["append"],
            "approve_ratio": med["reference"] / med["fast"],
            "authorize_inside_fast_us": ins["fast"], "authorize_inside_reference_us": ins["reference"],
            "authorize_calls_per_approve": calls["fast"] / (rounds * per),
            "rest_fast_us": med["fast"] - ins["fast"], "rest_reference_us": med["reference"] - ins["reference"]}


def profile_approve(n: int, fast: bool, top: int = 25) -> str:
    from policy_engine import Runtime

    with tempfile.TemporaryDirectory() as d:
        rt = Runtime.open(POLICIES, ledger=f"sqlite:///{d}/rt.db?durability=normal")
        for i in range(20):
            g = rt.gate(reply(-1 - i), now=T0)
            rt.approve(g.decision_id, principal="sam", roles=["reviewer"], now=T0)
        gates = [rt.gate(reply(i), now=T0) for i in range(n)]
        _flag(fast)
        pr = cProfile.Profile()
        pr.enable()
        for g in gates:
            rt.approve(g.decision_id, principal="sam", roles=["reviewer"], now=T0)
        pr.disable()
        _flag(True)
        rt.close()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(top)
    return s.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: small sizes (figures are rough)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--profile", action="store_true", help="also cProfile approve, fast path on and off")
    a = ap.parse_args(argv)
    q = a.quick
    out = {"load": os.getloadavg()[0], "quick": q,
           "authorize_action": bench_authorize_action(5 if q else 41, 50 if q else 300),
           "approve": bench_approve(3 if q else 31, 10 if q else 40)}
    if a.json:
        print(json.dumps(out, indent=2))
        return 0
    aa, ap_ = out["authorize_action"], out["approve"]
    print(f"load average at start: {out['load']:.2f}" + ("  (quick: rough figures)" if q else ""))
    print(f"recorded decision: {aa['decision_json_bytes']:,} bytes of JSON")
    for k in ("none", "one"):
        x = aa[k]
        print(f"Engine.authorize_action, {k} approval(s): reference {x['reference_us']:.1f} us, fast "
              f"{x['fast_us']:.1f} us ({x['ratio']:.2f}x)")
    print(f"Runtime.approve (SQLite, durability normal), CPU per call, medians of {ap_['rounds']} rounds of "
          f"{ap_['per_round']}: reference {ap_['approve_reference_us']:.0f} us, fast {ap_['approve_fast_us']:.0f} us "
          f"({ap_['approve_ratio']:.2f}x); Ledger.append alone {ap_['append_us']:.0f} us (approve at "
          f"{ap_['approve_reference_us'] / ap_['append_us']:.1f}x -> {ap_['approve_fast_us'] / ap_['append_us']:.1f}x "
          f"of it)")
    print(f"  inside authorize_action ({ap_['authorize_calls_per_approve']:.1f} calls per approve): reference "
          f"{ap_['authorize_inside_reference_us']:.0f} us, fast {ap_['authorize_inside_fast_us']:.0f} us; the rest "
          f"of approve: {ap_['rest_reference_us']:.0f} us / {ap_['rest_fast_us']:.0f} us")
    if a.profile:
        for fast in (False, True):
            print(f"\n=== cProfile of approve, fast path {'on' if fast else 'off'} ===")
            print(profile_approve(100 if q else 500, fast))
    return 0


if __name__ == "__main__":
    sys.exit(main())
