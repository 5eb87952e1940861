"""Smoke test of the benchmark harness (no timing assertions: the machine is shared)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


def test_generated_files_are_up_to_date():
    p = subprocess.run([sys.executable, str(BENCH / "gen_policies.py"), "--check"], capture_output=True, text=True,
                       cwd=str(ROOT))
    assert p.returncode == 0, p.stdout + p.stderr


def test_bench_engine_quick_run_agrees_and_reports_every_figure():
    p = subprocess.run([sys.executable, str(BENCH / "bench_engine.py"), "--quick"], capture_output=True, text=True,
                       cwd=str(ROOT), timeout=600)
    out = p.stdout
    assert p.returncode == 0, out + p.stderr
    assert "DISAGREE" not in out
    assert re.search(
        r"^agreement: hand-written 200/200, hand-written-full 200/200, cel-python 200/200, cedarpy 200/200 "
        r"-- AGREEMENT OK$",
        out,
        re.M,
    ), out
    assert re.search(r"^policy set: (\d+) gate rules, \d+ stop triggers, (\d+) action types", out, re.M)
    rules, types = map(
        int, re.search(r"policy set: (\d+) gate rules, \d+ stop triggers, (\d+) action types", out).groups()
    )
    assert rules >= 100 and types >= 20
    for name in ("evaluate", "hand-written", "hand-written-full", "cel-python", "cedarpy"):
        assert re.search(rf"^  {re.escape(name)}\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+\d+$", out, re.M), (name, out)
    for line in (
        r"^ratio evaluate / hand-written: [\d.]+x \(means: [\d.]+x\) vs short-circuit hand-written \(target",
        r"^ratio evaluate / hand-written-full: [\d.]+x \(means: [\d.]+x\) vs equal-work hand-written",
        r"^ratio cedarpy / evaluate: [\d.]+x",
        r"^ratio cel-python / evaluate: [\d.]+x",
        r"^compile 1000 rules .*median \d+ ms",
        r"^stopline check benchmarks/policies/: wall median \d+ ms",
        # the other forms of a call (bench_paths.input_forms), each against the reference
        r"^  an Action model\s+[\d.]+\s+\([\d.]+x; reference [\d.]+ us\)",
        r"^  declared times\s+[\d.]+\s+\([\d.]+x the reference's [\d.]+ us",
        # goal 3, and model_dump_json() (to_json() itself) beside pydantic's own serializer
        r"^goal 3: evaluate_json\(\) / evaluate [\d.]+x \(target <= 2x: (met|MISSED)\); evaluate \+ to_json\(\) "
        r"[\d.]+x; evaluate \+ model_dump_json\(\) [\d.]+x; pydantic's own serializer instead: [\d.]+x$",
        r"^the decision as a dict \(the contract's model_dump\(mode=\"json\"\)\): evaluate \+ "
        r"model_dump\(mode=\"json\"\) [\d.]+x evaluate\(\); pydantic's own dump instead: [\d.]+x$",
    ):
        assert re.search(line, out, re.M), (line, out)
    # issue 16, goals 4-6 (benchmarks/bench_scale.py): one line each, with its target's verdict
    for line in (
        r"^large type \d+ rules \(one action type\): evaluate [\d.]+ us, hand-written [\d.]+ us: [\d.]+x "
        r"\(target <= 3x: (met|MISSED)\)",
        r"^large type \d+ rules: evaluate .* per rule .*\(target flat, <= [\d.]+x: (met|MISSED)\)",
        r"^load 1000 rules: in-process [\d.]+ s .* fresh with no parser-table cache [\d.]+ s \(target",
        r"^load one type of \d+ / \d+ rules: .* per rule [\d.]+x in cpu time \(target linear",
        r"^gc\.collect\(\) in a fresh process: [\d.]+ ms without the engine, [\d.]+ ms with .* after gc\.freeze\(\)",
        r"^  the same with STOPLINE_GC_QUIET=0 \(the engine's objects in the collector's generations, .*\): "
        r"[+-][\d.]+ ms just loaded "
        r"\(\d+ more objects in them\), [+-][\d.]+ ms after the first evaluations$",
        r"^threads on one engine: 4 threads [\d.]+x the throughput of 1 .* \(target: .*: (met|MISSED)\)",
    ):
        assert re.search(line, out, re.M), (line, out)
    assert "DISAGREE large type" not in out
    # every kind of decision is in the mix
    mix = re.search(r"^request mix: 200 requests: (.*)$", out, re.M).group(1)
    for effect in ("allow", "deny", "require_approval", "stop"):
        assert effect in mix


def test_bench_breakdown_quick_run_splits_evaluate_by_effect():
    """`bench_breakdown.py` (where evaluate()'s time goes, issue 16 goal 1): it asserts the
    fused function decides as `evaluate` does, and prints a row per effect and the ratios."""
    p = subprocess.run([sys.executable, str(BENCH / "bench_breakdown.py"), "--quick"], capture_output=True,
                       text=True, cwd=str(BENCH.parent), timeout=600)
    assert p.returncode == 0, p.stderr
    num = r"\s+-?\d+\.\d\d"
    for group in ("all", "allow", "require_approval", "deny", "stop"):
        assert re.search(rf"^  {group}\s+\d+" + num * 9 + "$", p.stdout, re.M), (group, p.stdout)
    assert re.search(r"^evaluate / hand-written over these requests: \d+\.\dx; with the decision built at the "
                     r"least \(dispatch \+ floor, \d+\.\d\d us\): \d+\.\dx; the input check and the conditions "
                     r"alone \(mask\): \d+\.\dx$", p.stdout, re.M), p.stdout
    assert re.search(r"^the input check alone: \d+\.\dx hand-written; with every condition free \(dispatch \+ "
                     r"check \+ least, \d+\.\d\d us\): \d+\.\dx$", p.stdout, re.M), p.stdout


def test_benchmark_policies_check_clean_in_strict_mode():
    exe = Path(sys.executable).parent / "stopline"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "policy_engine.cli"]
    p = subprocess.run(
        cmd + ["check", "--strict", str(BENCH / "policies")], capture_output=True, text=True, cwd=str(ROOT)
    )
    assert p.returncode == 0, p.stdout + p.stderr
