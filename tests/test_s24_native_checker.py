"""The native input check (`_speedups.Checker`) against the generated lines it replaces
(`shapes.lane_prologue`), for inputs whose keys run code of their own during the check:
a key's `__eq__` raising `KeyError` (the lines' `except KeyError` makes it a shape miss),
a key's `__hash__` raising (the lines' `v.keys() != _K` hashes it), a key's `__eq__`
changing the record or an earlier list while the check runs (the lines count a list's
length at the end). Each case is built afresh for each form (a case changes its input)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from policy_engine.cel import emit
from policy_engine.engine.accel import native
from policy_engine.engine.accel.shapes import ShapeMiss, _tag, lane_prologue, widen
from policy_engine.engine.inputs import MAX_INPUT_ITEMS

OFF = os.environ.get("STOPLINE_NATIVE", "1").strip() in ("0", "false", "no", "off")
pytestmark = pytest.mark.skipif(OFF, reason="STOPLINE_NATIVE=0: the native helpers are switched off")

SAMPLE = {"a": ["x"], "d": {"x": "y", "z": 2, "q": None}, "r": [{"k": "v", "n": 1.0}], "s": "s"}
KEYS = tuple(sorted(SAMPLE))  # (the check's order: a's list before r's records)


def _fn(on: bool, monkeypatch, sample: dict = SAMPLE):
    monkeypatch.setattr(native, "ENABLED", on)
    shapes = {k: widen(None, _tag(v)) for k, v in sample.items()}
    lines, ns, fields, _ = lane_prologue(tuple(sorted(sample)), (("workflow", "w"), ("type", "t")), shapes)
    assert ("_CK(_p0)" in "".join(lines)) is on
    names = [f[0] for f in fields.values()]
    src = "def _f(_p0):\n" + "".join(f"    {x}\n" for x in lines) + f"    return ({''.join(n + ', ' for n in names)})\n"
    g = dict(ns)
    g["_fb"] = emit._fb
    exec(src, g)  # noqa: S102
    return g["_f"]


def _outcome(fn, action):
    try:
        return ("ok", fn(action))
    except ShapeMiss:
        return ("shape miss",)
    except emit._FastFallback:
        return ("fallback",)
    except Exception as e:  # noqa: BLE001 - what escapes, by class and text
        return ("raised", type(e).__name__, str(e))


def _both(make, monkeypatch):
    """The outcome of the native check and of the generated lines, each on its own input."""
    native_fn, lines_fn = _fn(True, monkeypatch), _fn(False, monkeypatch)
    return _outcome(native_fn, make()), _outcome(lines_fn, make())


def _key(text: str, like: str, on_eq=None, on_hash=None):
    """A str-subclass key equal to `text`, hashed as `like`, running `on_eq` when compared
    (its result, when not None, is the comparison's) and `on_hash` when hashed after its
    insertion."""
    inserted = []

    class K(str):
        def __hash__(self):
            if inserted and on_hash is not None:
                on_hash()
            return hash(like)

        def __eq__(self, other):
            if inserted and on_eq is not None:
                r = on_eq()
                if r is not None:
                    return r
            return str.__eq__(self, other)

    k = K(text)
    return k, inserted


def _action(**fields):
    a = {"workflow": "w", "type": "t", **{k: (list(v) if type(v) is list else v) for k, v in SAMPLE.items()}}
    a.update(fields)
    return a


def _raise_key_error():
    raise KeyError("from __eq__")


def test_a_key_error_from_a_key_of_the_action_is_a_shape_miss(monkeypatch):
    # the lines fetch the fields inside `try: ... except KeyError: _fs()`
    def make():
        k, armed = _key("zz", "s", on_eq=_raise_key_error)  # (compared when "s" is looked up)
        a = {k: 1}
        a.update(_action())
        armed.append(1)
        return a

    n, p = _both(make, monkeypatch)
    assert n == p == ("shape miss",)


def test_a_key_error_from_a_key_of_a_record_is_a_shape_miss(monkeypatch):
    def make():
        k, armed = _key("zz", "n", on_eq=_raise_key_error)
        rec = {k: 1.0, "k": "v"}
        armed.append(1)
        return _action(r=[rec])

    n, p = _both(make, monkeypatch)
    assert n == p == ("shape miss",)


def test_a_raising_hash_of_a_flat_objects_key_raises_as_the_lines_do(monkeypatch):
    # the lines compare the object's keys with a frozenset: the key is hashed, and raises
    def on_hash():
        raise ValueError("hash refused")

    def make():
        k, armed = _key("x", "x", on_hash=on_hash)
        d = {k: "y", "z": 2, "q": None}
        armed.append(1)
        return _action(d=d)

    n, p = _both(make, monkeypatch)
    assert n == p == ("raised", "ValueError", "hash refused")


def test_a_flat_objects_key_that_replaces_itself_while_compared(monkeypatch):
    # a str-subclass key that, compared, swaps itself for the plain key: what the lines'
    # comparison then finds, the check finds
    def make():
        box = {}

        def swap():
            d = box["d"]
            if k in d.keys() and type(next(iter(d))) is not str:
                v = d.pop(k)
                d["x"] = v
            return None

        k, armed = _key("x", "x", on_eq=swap)
        box["d"] = d = {k: "y", "z": 2, "q": None}
        armed.append(1)
        return _action(d=d)

    n, p = _both(make, monkeypatch)
    assert n[0] == p[0]
    if n[0] == "ok":
        assert len(n[1]) == len(p[1]) and all(x == y for x, y in zip(n[1], p[1], strict=True))
    else:
        assert n == p


def test_a_list_grown_by_a_later_fields_key_counts_at_its_length_then(monkeypatch):
    # the lines add up `len(v)` of each list at the end: a list a later field's lookup
    # has grown past the items limit falls back (the exact walk refuses it), as counted then
    def make():
        box = {}

        def grow():
            if not box.pop("armed", None):  # (once: itself swapped for the plain key)
                return False
            del box["rec"][k]
            box["rec"]["n"] = 1.0
            box["a"].extend(["x"] * int(MAX_INPUT_ITEMS))
            return False

        k, armed = _key("zz", "n", on_eq=grow)
        box["rec"] = rec = {k: 1.0, "k": "v"}
        box["a"] = lst = ["x"]
        box["armed"] = True
        armed.append(1)
        return _action(a=lst, r=[rec])

    n, p = _both(make, monkeypatch)
    assert n == p == ("fallback",)


def test_plain_inputs_still_pass_and_miss_as_before(monkeypatch):
    base = _action()
    n, p = _both(_action, monkeypatch)
    assert n[0] == p[0] == "ok" and n[1] == p[1]
    for odd in ({"d": {"x": "y", "z": 2}}, {"d": {"x": "y", "z": 2, "q": None, "e": 1}},
                {"d": {1: "y", "z": 2, "q": None}}, {"d": {"x": "y", "z": 2, "w": None}}, {"r": [{"k": "v"}]},
                {"r": [{"k": "v", "m": 1.0}]}, {"a": ["x"] * (int(MAX_INPUT_ITEMS) + 1)}):
        n, p = _both(lambda odd=odd: dict(base, **odd), monkeypatch)
        assert n == p, odd


TWIN = {"d1": {"a": 1, "b": "x"}, "d2": {"a": 2, "b": "y"}, "f": 0.5, "lf": [1.5], "r": [{"a": 1, "b": "z"}]}


@pytest.mark.parametrize("change", [
    {}, {"d2": {"a": 2, "b": "y", "c": None}}, {"d1": {"a": True, "b": "x"}}, {"d2": {"b": "y", "a": 3}},
    {"f": float("nan")}, {"f": float("-inf")}, {"f": 1}, {"lf": [1.5, float("inf")]}, {"lf": [1.5, 2]}, {"lf": []},
    {"r": []}, {"r": [{"a": 1, "b": "z"}, {}]}, {"r": [{"a": 1.0, "b": "z"}]}, {"r": [{"a": 1, "b": "\udbff"}]},
    {"d1": {"a": 1, "b": "\ud800x"}}, {"d1": {}},
])
def test_two_flat_objects_of_the_same_keys_and_odd_numbers(change, monkeypatch):
    native_fn, lines_fn = _fn(True, monkeypatch, TWIN), _fn(False, monkeypatch, TWIN)
    a = {"workflow": "w", "type": "t", **TWIN, **change}
    n, p = _outcome(native_fn, a), _outcome(lines_fn, a)
    if n[0] == p[0] == "ok":
        assert len(n[1]) == len(p[1]) and all(x is y for x, y in zip(n[1], p[1], strict=True))
    else:
        assert n == p


_HALF_FILLED = textwrap.dedent('''
    import gc
    from policy_engine.cel import emit
    from policy_engine.engine.accel import _speedups as S
    from policy_engine.engine.accel.shapes import ShapeMiss

    ck = S.Checker(("a", "b", "c"), (("s",), ("s",), ("s",)), 3, 100000, 3, 4000000, ShapeMiss, emit._FastFallback)
    armed = []

    class K(str):  # compared when "b" is looked up: the values' tuple then holds one of three
        def __hash__(self):
            return hash("b")

        def __eq__(self, other):
            if armed:
                armed.clear()
                for t in gc.get_objects():
                    if type(t) is tuple and len(t) == 3:
                        list(t)
            return False

    a = {K("k"): 1}
    a.update({"a": "x", "b": "y", "c": "z"})
    armed.append(1)
    print(ck(a))
''')


def test_the_values_tuple_is_out_of_the_collectors_sight_until_full(tmp_path):
    # a key's __eq__ walking gc.get_objects() found the half-filled tuple and read a NULL
    # (a segfault); it is untracked until every value is in it
    script = tmp_path / "half.py"
    script.write_text(_HALF_FILLED)
    env = dict(os.environ, PYTHONPATH=str(Path(native.__file__).parents[3]))
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert (proc.returncode, proc.stdout.strip()) == (0, "('x', 'y', 'z')"), proc.stderr[-2000:]
