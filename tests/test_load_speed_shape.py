"""How loading is made fast (issue 16, goal 5), without timing anything: the cyclic
collector is paused while a policy set loads and always restored; a host that disabled it
keeps it disabled; concurrent loads restore it once, after the last one; diagnostics are
the same with and without the pause."""

from __future__ import annotations

import gc
import threading

import pytest

from policy_engine.language.loader import collector_paused, load_text

GOOD = 'roles [r]\nworkflow "w" {\n  version "1"\n  owners { business "b" technical "t" }\n  default deny\n' \
       '  action a {\n    system "s"\n    irreversible\n    deny big when `action.n > 3`\n  }\n}\n'
BAD = GOOD.replace("action.n > 3", "action.n >")


@pytest.fixture(autouse=True)
def _collector_back_on():
    was = gc.isenabled()
    yield
    (gc.enable if was else gc.disable)()


def test_the_collector_is_paused_while_loading_and_enabled_afterwards():
    gc.enable()
    seen = []
    with collector_paused():
        seen.append(gc.isenabled())
    assert seen == [False] and gc.isenabled()
    assert load_text(GOOD).policy_set is not None and gc.isenabled()
    assert load_text(BAD).errors and gc.isenabled()  # a policy with errors: restored too


def test_an_error_inside_restores_the_collector():
    gc.enable()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError
    assert gc.isenabled()


def test_a_host_that_disabled_the_collector_keeps_it_disabled():
    gc.disable()
    load_text(GOOD)
    with collector_paused():
        pass
    assert not gc.isenabled()


def test_concurrent_loads_restore_the_collector_after_the_last_one():
    gc.enable()
    inside = threading.Barrier(2)
    release = threading.Event()
    states = []

    def long_load():
        with collector_paused():
            inside.wait()
            release.wait(120)  # (released by the test: the timeout only bounds a failure)

    t = threading.Thread(target=long_load)
    t.start()
    with collector_paused():
        inside.wait()
    states.append(gc.isenabled())  # the other load still runs: still paused
    release.set()
    t.join()
    states.append(gc.isenabled())
    assert states == [False, True]


def test_diagnostics_do_not_depend_on_the_pause():
    paused = [(d.code, str(d.span), d.message) for d in load_text(BAD).diagnostics]
    gc.disable()  # the pause is then not ours: nothing changes either
    assert [(d.code, str(d.span), d.message) for d in load_text(BAD).diagnostics] == paused


def test_the_hash_order_is_the_name_then_the_canonical_json_as_before():
    import random

    from policy_engine.language.loader import _canon, _sort_named

    rng = random.Random(3)
    for _ in range(300):
        items = [rng.choice([{"name": rng.choice("abc"), "v": rng.randrange(3)}, {"v": rng.randrange(3)}, "s", 1,
                             {"name": 2, "v": 0}]) for _ in range(rng.randrange(8))]
        want = sorted(items, key=lambda i: (str(i.get("name", "")) if isinstance(i, dict) else "", _canon(i)))
        got = list(items)
        _sort_named(got)
        assert [_canon(x) for x in got] == [_canon(x) for x in want]


def test_loading_the_shipped_policies_needs_neither_cel_pythons_parser_nor_its_import():
    """Every shipped condition is in the hand-written CEL parser's subset (cel/rdparse.py):
    a fresh process loads them without importing celpy or building Lark's CEL parser."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = ("import sys, policy_engine; policy_engine.load(sys.argv[1]); "
            "from policy_engine.cel import parse; print('celpy' in sys.modules, bool(parse._FAST_PARSER))")
    for d in ("policies", "benchmarks/policies"):
        out = subprocess.run([sys.executable, "-c", code, str(root / d)], capture_output=True, text=True,
                             cwd=str(root), timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["False", "False"], (d, out.stdout)
