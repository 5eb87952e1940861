"""A stateful differential generator for the gate: random policies, and long random
sequences of `evaluate()` / `evaluate_json()` calls run on two engines built from the same
text, one accelerated (fused gates, shape speculation, templates, per-`now` caches, the
fault lane, the stopped-workflow lane, deferred digests and times, `to_json`) and one the
reference (`accelerate=False`: the closures alone, the oracle). Every decision of the
accelerated engine must be byte for byte the reference's.

Used by tests/test_differential_sequences.py (hypothesis, a small budget) and by the long
campaign tests/fuzz/fuzz_differential.py (random seeds, minutes to hours). Everything is
drawn from a `random.Random`, so a (seed, round) pair replays exactly; `shrink` cuts a
failing sequence down, `repro_text` writes it as a pytest test.

What a sequence exercises (each is a cache that holds state between calls):
- a type's calls before and after its fused function is built (`FUSE_AFTER`), actions whose
  read fields change shape (rebuilds up to `REBUILDS_MAX`, then every plain type);
- outcome templates (`patterns`), per-`now` entries (`now`, `now_full`, `seen`,
  `seen_full`) with `now`s reused, new, sharing a microsecond with another, the clock's;
- fields missing (fault bits, `faults.resolve`, the memo per field values, fault
  templates on their second sighting), wrong types, NaN, -0.0, big ints, lone surrogates,
  subclasses, huge values;
- stopped workflows (every trigger, unknown triggers, `stopped_at` of every kind), running
  states with extra fields the conditions read, malformed states, both with more keys
  (nested values, odd ones: the stopped lane's `plain_flat` and `check_size`);
- lists of records (`items`: mostly records of the same keys and value types, a records
  shape; empty; records that differ; odd records; a float `price` sometimes NaN; 256 and
  257 records) and lists of numbers (`nums`: ints, floats or bools, with an odd item
  sometimes: NaN, an infinity, a bool among ints, an int among floats, a str, a big int),
  each at the input limits too;
- declared fields (`fields { ... }`, every kind used here, optional members absent and
  present, nested objects, maps, `any`): checked inside the fused function; a rule that
  does not type-check against them is dropped, or the type's fields are;
- declared `timestamp` and `duration` fields and maps (`map<string, timestamp>`, of
  durations, of ints, of maps, `map { ... }` of records holding both), with what a runtime
  really sends: aware datetimes (UTC, a fixed offset, a named zone), naive ones, a
  datetime subclass, RFC 3339 text (Z, offsets, fractions, invalid: a JSON caller's, refused
  for a declared timestamp), timedeltas (zero, negative, sub-second, past CEL's range) and
  duration text ("15m"); maps with non-string keys, values of another kind, nested one level
  too deep; conditions comparing them with `now`, duration arithmetic, map lookups, `in`,
  `has()` and macros over them (`TIMES`);
- action types their workflow does not declare (several names, a type of another
  workflow: the undeclared-type lane), with stop triggers guarded by them (and not);
- the caller changing its action dict after `evaluate()` returned and before reading the
  decision (the digest must be the action's as decided), the same dict reused;
- the order in which a decision is first read (`to_json`, `model_dump_json`, an attribute,
  `model_dump`, a copy, a pickle, `==`, the ledger's canonical text), since the first
  reader resolves deferred values;
- read fields together exactly at the input limits (values, characters) or one past;
  large types (up to 1,100 rules: chunks, the index on `action.s`, fault bits past 1,024);
- with `tiny_caches`, every bounded cache a few entries long (emptied, refused, rebuilt).

Besides the bytes, `run_sequence` checks that the runtime's recorded body
(`runtime.gatejson.body_text`, the ledger's text of a gate decision written from the
template) is exactly the canonical JSON (`rfc8785`) of the same body built from the
reference decision, whenever body_text gives text (`BODY_TEXT` counts how often); that
a decision at the clock's time carries the time of its own call, that it equals (==,
hash) the reference's, and that each reference decision keeps DESIGN.md's gate
semantics (`laws`) and times computed here (`time_law`), which catch what both engines
would share (a helper or cache of the package itself).
"""

from __future__ import annotations

import copy
import math
import pickle
import random
import re
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

from policy_engine.cel import api as _api
from policy_engine.engine import Engine
from policy_engine.engine.accel import faults as _faults
from policy_engine.engine.accel import fused as _fused
from policy_engine.engine.accel import stopped as _stopped
from policy_engine.engine.accel import templates as _templates
from policy_engine.engine.accel import undeclared as _undeclared
from policy_engine.engine.digests import action_digest
from policy_engine.engine.util import parse_ts
from policy_engine.language.loader import load_sources
from policy_engine.models import Action, WorkflowState
from policy_engine.source import SourceFile

try:  # a zone other than UTC whose tzinfo is not `datetime.UTC` (optional: tzdata may be absent)
    from zoneinfo import ZoneInfo

    _ZONES: list = []
    for _z in ("UTC", "Europe/Paris", "America/New_York"):
        try:
            _ZONES.append(ZoneInfo(_z))
        except Exception:  # noqa: BLE001 - no tz database here
            pass
except ImportError:  # pragma: no cover
    _ZONES = []

__all__ = ["Policy", "Step", "Mismatch", "gen_policy", "gen_steps", "build_engines", "run_sequence", "shrink",
           "repro_text", "tiny_caches", "round_of", "lane_counts", "shape_kinds"]


# ================================================================================ values


class S(str):
    """A str subclass (the input check refuses subclasses)."""

    __slots__ = ()


class I(int):  # noqa: E742 - a short name, written into reproducers
    """An int subclass."""

    __slots__ = ()


class F(float):
    """A float subclass."""

    __slots__ = ()


class DT(datetime):
    """A datetime subclass (a mocked clock's, say)."""


class TD(timedelta):
    """A timedelta subclass."""


NAN = float("nan")
INF = float("inf")

STRS = ["a", "ab", "abc", "b", "", "x1", "10", "é", "a b", "A", "zz", "a.b", "read:x", "write:y"]
INTS = [-3, 0, 1, 2, 3, 5, 10, 100, 9007199254740993, 2**63 - 1, -(2**63)]
FLOATS = [0.0, -0.0, 0.5, 1.0, 2.5, 10.0, 99.9, 1e-7, 3.0, 1e300]
ODD_SCALARS = [NAN, INF, -INF, 2**64 + 1, -(2**70), "\ud800", "a\udfff", "\x00\"\\", "\u2028", S("a"), I(1),
               F(2.5), b"by", (1, 2), ("a",), True, False, None, 1.5, "x" * 70]
HUGE = [None]  # filled lazily: a 4,000,001-character string (over MAX_INPUT_CHARS)


def _huge() -> str:
    if HUGE[0] is None:
        HUGE[0] = "h" * 4_000_001
    return HUGE[0]


# ================================================================================ policies

# the fields a workflow's actions may hold: name -> kind
FIELDS = {"s": "str", "t": "str", "n": "int", "m": "int", "x": "float", "b": "bool", "tags": "tags",
          "obj": "obj", "items": "items", "meta": "meta", "when": "ts", "nums": "nums",
          # CEL timestamps and durations (Python datetimes and timedeltas), and maps of them
          "at": "dt", "ttl": "td", "stamps": "dtmap", "limits": "tdmap", "counts": "imap", "sched": "recmap",
          "grid": "grid"}
# a kind's declaration (`fields { ... }`): the first mostly, the others sometimes (optional
# members, a nested object, `any`), each one the kind's usual values fit
DECL = {"str": ["string", "string", "any"], "int": ["int"], "float": ["double"], "bool": ["bool"],
        "tags": ["list<string>", "list<string>", "list<any>"],
        "obj": ["{ level: int name: string ok: bool }", "{ level: int name?: string ok?: bool }",
                "{ level: int name: string ok: bool extra?: { a: string } }",
                "{ level: double name: string ok: bool }"],
        "items": ["list { sku: string qty: int ok: bool price?: double }",
                  "list { sku: string qty?: int ok: bool price?: double }"],
        "meta": ["map<string, string>", "map<string, string>", "map<string, any>"], "ts": ["string"],
        "nums": ["list<int>", "list<double>"],
        "dt": ["timestamp", "timestamp", "any"], "td": ["duration", "duration", "any"],
        "dtmap": ["map<string, timestamp>", "map<string, timestamp>", "map<string, any>"],
        "tdmap": ["map<string, duration>"], "imap": ["map<string, int>", "map<string, int>", "map<string, double>"],
        "recmap": ["map { at: timestamp ttl?: duration }", "map { at: timestamp ttl?: duration note?: string }",
                   "map { at: timestamp ttl: duration }"],
        "grid": ["map<string, map<string, int>>", "map<string, map<string, int>>", "map<string, map<string, any>>",
                 "map<string, map<string, double>>"]}
# fields no condition reads (a datetime among them: the action's digest and recorded text)
UNREAD = {"ref": "str", "note": "str", "cents": "int", "blob": "obj", "when2": "ts", "at2": "dt"}
UNDECLARED = ["undeclared", "u2", "w"]  # action types no workflow declares (see _action)
KINDS = {**FIELDS, **UNREAD}
ROLES = ["reviewer", "manager", "legal"]
EFFECTS = ["allow", "allow", "allow", "deny", "deny", "require_approval", "require_approval", "require_approval"]
WINDOWS = [None, None, "30d", "60s", "1h", "1m", "1s"]


@dataclass
class Policy:
    text: str
    # [(name, [(type, window, runs_while_stopped, {field: declared type} or None, carried)], [triggers])]
    workflows: list
    seed: Any = None
    reads: dict = field(default_factory=dict)  # (workflow, type) -> the fields its gate reads (CAction.reads)
    large: set = field(default_factory=set)  # the types with many rules (indexed by `action.s`)


def _lit_str(rng: random.Random) -> str:
    return rng.choice(["a", "ab", "b", "x1", "é", "", "A", "read:", "write:"])


def _num(rng: random.Random, kind: str) -> str:
    if kind == "int":
        return str(rng.choice([0, 1, 2, 3, 5, 10, 100, -1]))
    return rng.choice(["0.0", "0.5", "1.0", "2.5", "10.0", "99.9", "-0.0"])


# conditions that read the action as a whole (`CompiledExpr.reads` (action, None)): the type's
# fused function then checks every field and specialises none, so they are rare here
WHOLE = ['size(action) > 5', '"n" in action', 'action.exists(k, k == "tags")', "cel.bind(a, action, a.n > 1)",
         'action["s"] == "a"', "dyn(action).n > 1"]


# conditions over `action.nums`, a list of ints or of floats (see _value: sometimes with a
# NaN, an infinity, a bool among the ints, an int among the floats, a str, a big int)
NUMS = ["action.nums.exists(v, v > 2)", "size(action.nums) > 1", "action.nums.all(v, v < 10)", "2 in action.nums",
        "action.nums.exists(v, v == 2.0)", "action.nums.exists(v, v > 2.5)", "action.nums.all(v, v >= 0.0)",
        "action.nums.map(v, v * 2).exists(w, w > 5)", "action.nums.filter(v, v > 1).size() > 0",
        "action.nums[0] > 1", "action.nums.exists(v, v > action.n)", "action.nums.all(v, v != 0)",
        "action.nums.exists(v, v + 1 > 3)", "action.nums.exists(v, -v < 0)", "action.nums.exists_one(v, v == 1)",
        "action.nums.all(v, type(v) == int)", "action.nums.exists(v, v / 2 == 1)", "action.nums == [1, 2]",
        "action.nums.exists(v, string(v) == \"1\")", "action.nums.exists(v, int(v) > 1)",
        "action.nums.exists(v, v in [1, 2.5])", "action.nums.exists(v, v < action.x)", "size(action.nums) == 0",
        "math.greatest(action.nums) > 3", "action.nums.exists(v, double(v) > 1.5)", "action.nums.all(v, v % 2 == 0)",
        "action.nums.map(v, v + 1).all(w, w > 1)", "action.nums.exists(v, v == action.n)", "1.0 in action.nums",
        "action.nums.exists(v, v > 9007199254740992.0)", "action.nums.exists(v, v * 4611686018427387904 > 0)",
        "action.nums.exists(v, v == true)", "action.nums.all(v, v)", "action.nums.exists(v, !v)"]


# conditions over timestamps (`action.at`), durations (`action.ttl`) and maps of them
# (`stamps`, `limits`, `counts`, `sched`: records of both, `grid`: maps of maps): compared with
# `now`, duration arithmetic (an overflow at year 1 or 9999 is an error), accessors,
# conversions, lookups, `in`, `has()`, macros over the maps
TIMES = ["action.at < now", "action.at >= now", 'now - action.at > duration("1h")', "now - action.at < action.ttl",
         "action.at + action.ttl > now", "action.at - action.ttl < now", 'action.ttl > duration("15m")',
         'action.ttl <= duration("1h30m")', 'action.ttl == duration("0s")', "action.at.getHours() > 12",
         'action.at.getHours("Europe/Paris") > 14', "action.at.getDayOfWeek() == 1",
         'action.at == timestamp("2026-03-02T14:30:00Z")', 'string(action.at) == "2026-03-02T14:30:00Z"',
         "int(action.at) > 1772400000", "action.at < timestamp(action.when)", "timestamp(action.at) < now",
         "action.ttl.getSeconds() > 60", 'action.ttl + action.ttl > duration("1h")',
         'duration("1h") - action.ttl > duration("0s")', 'string(action.ttl) == "900s"',
         "duration(string(action.ttl)) == action.ttl", "-action.ttl < action.ttl", "action.at in [now]",
         'action.at in [timestamp("2026-03-02T14:30:00.123456Z"), timestamp("2026-03-01T00:00:00Z")]',
         "type(action.at) == google.protobuf.Timestamp", "type(action.ttl) == google.protobuf.Duration",
         "action.at == action.stamps.j", 'now - duration("24h") < action.at',
         'action.stamps["k"] < now', '"k" in action.stamps', "has(action.stamps.k)", "size(action.stamps) > 1",
         "action.stamps.exists(k, action.stamps[k] < now)", 'action.stamps.all(k, v, v > now - duration("24h"))',
         "action.stamps.exists(k, action.stamps[k] > action.at)",
         "action.stamps.transformList(k, v, v).exists(t, t < now)",
         'action.limits["k"] > duration("1m")', "action.limits.exists(k, action.limits[k] < action.ttl)",
         '"j" in action.limits', 'action.limits.all(k, v, v >= duration("0s"))',
         'action.limits.map(k, action.limits[k]).exists(d, d > duration("1h"))',
         'now - action.stamps["k"] > action.limits["k"]',
         'action.counts["k"] > 2', "action.counts.exists(k, action.counts[k] > action.n)", "has(action.counts.k)",
         "action.counts.all(k, v, v < 10)", "size(action.counts) == 0", '"é" in action.counts',
         'action.counts == {"k": 1}', 'action.counts["j"] + action.n > 3',
         'action.sched["k"].at < now', "has(action.sched.k) && action.sched.k.at < now",
         "action.sched.exists(k, has(action.sched[k].ttl) && action.sched[k].at + action.sched[k].ttl < now)",
         'action.sched.all(k, v, v.at > timestamp("2026-01-01T00:00:00Z"))', '"k" in action.sched',
         'action.grid["a"]["b"] > 1', '"b" in action.grid["a"]', "action.grid.exists(k, size(action.grid[k]) > 1)",
         "action.grid.exists(k, action.grid[k].exists(j, action.grid[k][j] > action.n))", "has(action.grid.a.b)"]


def _atom(rng: random.Random, types: list[str], whole: bool = True) -> str:
    """One comparison or test over the action (and sometimes the workflow state, `now`,
    the policy's constants)."""
    if whole and rng.random() < 0.012:  # the action as a whole: the type's read set is every field
        return rng.choice(WHOLE)
    if rng.random() < 0.06:  # a list of numbers
        return rng.choice(NUMS)
    if rng.random() < 0.05:  # timestamps, durations, maps of them (more in a `timed` policy)
        return rng.choice(TIMES)
    c = rng.randrange(95)
    if c >= 75:  # numbers and comparisons at the edges (int vs double, 2^53, overflow, -0.0, text)
        return rng.choice([
            "action.n < action.x", "action.x == action.n", "action.n > 9007199254740992.0",
            "action.x >= 9007199254740993", "action.n + 1 > action.m", "action.n - action.m < 0",
            "action.n / 2 == 1", "-action.n < 0", "action.x * 2.0 > action.x", "action.x / 0.0 > 1.0",
            "action.n % 0 == 1", "action.n * 4611686018427387904 > 0", "action.n in [1.0, 2.0]",
            "action.x in [0, 1]", "action.b == 1", "action.b in [true]", 'action.s < "b"', "action.s <= action.t",
            'action.tags == ["a"]', 'action.obj == {"level": 1, "name": "a", "ok": true}', "action.meta == {}",
            "uint(action.n) > 1u", "action.n > 1u", "math.abs(action.n) > 2", "math.greatest(action.n, action.m) > 3",
            "action.s.size() > action.n", "action.tags.size() == action.n", 'string(action.x) == "0"',
            'string(action.x).startsWith("-")', "int(action.x) > 1", "double(action.n) == action.x",
            "action.x < 1e300", "action.n == -0.0", "action.x == -0.0", 'string(action.n) + action.s == "1a"',
            "action.tags.exists(t, t < action.s)", "action.items.exists(i, i.qty == action.x)",
            'action.obj.level == action.obj.level && action.obj.name != ""', "action.n >= action.obj.level",
            'action.s.matches(action.t)', 'action.s.contains(action.t)', "size(action.s + action.t) > 2",
            # (a constant on the left of `==`, in an `||`: the loader's lints raise KeyError on
            # `"a" == action.s && action.s == "b"`, see LOADER_CRASHES)
            '("a" == action.s || false)', "1 < action.n", "action.items.map(i, i.qty > 1, i.qty).size() > 0",
            'action.s.lowerAscii().startsWith("a")', "[action.n, 1, action.x].size() > 2", "action.b > 0",
            "action.n == true", "action.b in [1, 2]", "!action.n", "action.s > 1", "action.n > action.s"])
    if c >= 60:  # reading the action in less usual ways (read sets, kept values, shapes)
        return rng.choice([
            "[action.n, action.m].exists(v, v > 3)", "has(action.obj)", 'action.obj["level"] > 1',
            'action.meta[action.s] == "v"', "action.items.exists(i, i.sku == action.s)",
            'action.tags.map(t, t + action.s).exists(u, u == "aa")', "workflow.mode == action.s",
            "now.getHours() > action.n", "[1].exists(action, action > 0)", 'cel.bind(action, {"n": 9}, action.n > 1)',
            "action.tags.exists(action, action == \"a\")", 'type(action.n) == int', "action.obj.level == action.n",
            'action.s == action.t', "action.x + action.x > 1.0", "double(action.s) > 1.0", 'string(action.n) == "1"',
            "action.items.all(i, has(i.qty) && i.qty > 0)", "size(action.meta) == 0",
            "action.items.exists(i, has(i.price) && i.price > 1.0)", "action.items.exists(i, i.qty > action.n)",
            'action.items.map(i, i.sku).exists(k, k == "a")', "size(action.items) > 1",
            # no fast path (called as themselves inside the fused function)
            'action.meta.all(k, v, v != "")', "action.tags.all(i, t, i < 5)",
            "action.meta.transformList(k, v, k).size() > 0", 'action.tags.exists(i, t, i > 0 && t == "a")',
            'action.tags.transformList(i, t, t + "x").exists(u, u == "ax")', '{"a": action.n}.a > 1',
            'action.meta.transformMap(k, v, v + "x")["k"] == "vx"'])
    s = rng.choice(["s", "t"])
    n = rng.choice(["n", "m"])
    if c == 0:
        return f'action.{s} == "{_lit_str(rng)}"'
    if c == 1:
        return f'action.{s} in ["a", "ab", "{_lit_str(rng)}"]'
    if c == 2:
        return f"action.{s} in policy.names"
    if c == 3:
        return f"action.{n} {rng.choice(['>', '<', '>=', '<=', '==', '!='])} {_num(rng, 'int')}"
    if c == 4:
        return f"action.x {rng.choice(['>', '<', '>=', '<=', '==', '!='])} {_num(rng, 'float')}"
    if c == 5:
        return f"action.n + action.m > {_num(rng, 'int')}"
    if c == 6:
        return "action.n * 2 < action.m"
    if c == 7:
        return "action.x > double(action.n)"
    if c == 8:
        return "action.b"
    if c == 9:
        return "!action.b"
    if c == 10:
        return "action.b == true"
    if c == 11:
        return f"size(action.tags) > {rng.choice([0, 1, 2])}"
    if c == 12:
        return f'"{_lit_str(rng)}" in action.tags'
    if c == 13:
        return f'action.tags.exists(t, t.startsWith("{rng.choice(["a", "read:", "w"])}"))'
    if c == 14:
        return "action.tags.all(t, size(t) < 3)"
    if c == 15:
        return f'action.{s}.startsWith("{rng.choice(["a", "x", ""])}")'
    if c == 16:
        return f'action.{s}.contains("{rng.choice(["b", "1", " "])}")'
    if c == 17:
        return f'action.{s}.matches("{rng.choice(["^a", "b$", "[0-9]", "^$"])}")'
    if c == 18:
        return f"action.obj.level > {rng.choice([0, 1, 2])}"
    if c == 19:
        return f'action.obj.name == "{_lit_str(rng)}"'
    if c == 20:
        return "action.obj.ok"
    if c == 21:
        return "has(action.obj.level)"
    if c == 22:
        return f"has(action.{rng.choice(list(FIELDS))})"
    if c == 23:
        return f"action.items.exists(i, i.qty > {rng.choice([0, 1, 3])})"
    if c == 24:
        return "action.items.all(i, i.ok)"
    if c == 25:
        return "action.items.filter(i, i.qty > 1).size() > 1"
    if c == 26:
        return "action.items.map(i, i.qty).exists(q, q > 5)"
    if c == 27:
        return f"1 / action.{n} > 0"
    if c == 28:
        return f"action.{n} % 3 == 0"
    if c == 29:
        return f"int(action.{s}) > 0"
    if c == 30:
        return 'action.meta["k"] == "v"'
    if c == 31:
        return '"k" in action.meta'
    if c == 32:
        return f'workflow.mode == "{rng.choice(["strict", "lax"])}"'
    if c == 33:
        return f"now.getHours() {rng.choice(['<', '>='])} {rng.choice([6, 12, 22])}"
    if c == 34:
        return 'now > timestamp("2026-03-02T14:30:00Z")'
    if c == 35:
        return "timestamp(action.when) < now"
    if c == 36:
        return f'action.type == "{rng.choice(types)}"'
    if c == 37:
        return f"action.b ? action.{n} > 1 : action.x < 2.0"
    if c == 38:
        return f'action.{s} + "x" == "ax"'
    if c == 39:
        return f"size(action.{s}) > {rng.choice([0, 1, 3])}"
    if c == 40:
        return f"action.{n} in [1, 2, 3]"
    if c == 41:
        return "action.x == 0.0"
    if c == 42:
        return "action.n == action.m"
    if c == 43:
        return "action.n == 1.0"
    if c == 44:
        return "action.n + 9223372036854775000 > 0"
    if c == 45:
        return "action.nosuch > 1"
    if c == 46:
        return f"action.{n} <= policy.limit"
    if c == 47:
        return "action.x < policy.ratio"
    if c == 48:
        return "action.s.startsWith(policy.prefix)"
    if c == 49:
        return 'action.id == "a1"'
    if c == 50:
        return "action.tags.exists_one(t, t == \"a\")"
    if c == 51:
        return f"action.{s} in policy.glob"
    if c == 52:
        return "action.obj.level + action.n > 3"
    if c == 53:
        return "action.x"  # not a bool: an error
    if c == 54:
        return "action.items[0].qty > 0"
    if c == 55:
        return "action.tags[1] == \"b\""
    if c == 56:
        return 'cel.bind(v, action.n, v > 1 && v < 10)'
    if c == 57:
        return "[1, 2, 3].map(k, [k, k, k]).size() > 0"
    if c == 58:
        return 'workflow.status == "running"'
    return f"action.{s}.lowerAscii() == \"{rng.choice(['a', 'ab'])}\""


def _cond(rng: random.Random, types: list[str], depth: int = 0) -> str:
    r = rng.random()
    if depth >= 2 or r < 0.45:
        return _atom(rng, types)
    if r < 0.7:
        return f"{_cond(rng, types, depth + 1)} && {_cond(rng, types, depth + 1)}"
    if r < 0.9:
        return f"({_cond(rng, types, depth + 1)} || {_cond(rng, types, depth + 1)})"
    return f"!({_cond(rng, types, depth + 1)})"


def _large_rules(rng: random.Random, n: int, types: list[str]) -> str:
    """`n` rules, most starting by comparing `action.s` (or `action.t`) with string
    constants (what the fused gate indexes), some not (or with the test second)."""
    out = []
    for i in range(n):
        eff = rng.choice(EFFECTS)
        by = " by 1 reviewer" if eff == "require_approval" else ""
        q = rng.random()
        f = "s" if rng.random() < 0.8 else "t"
        v = rng.choice(STRS[:10])
        tail = _atom(rng, types, whole=i < 2) if rng.random() < 0.7 else "true"
        if q < 0.5:
            cond = f'action.{f} == "{v}" && {tail}'
        elif q < 0.7:
            cond = f'action.{f} in ["{v}", "{rng.choice(STRS[:10])}"] && {tail}'
        elif q < 0.8:
            cond = f'(action.{f} == "{v}" || action.{f} == "zz") && {tail}'
        elif q < 0.9:
            cond = f'{tail} && action.{f} == "{v}"'
        else:
            cond = tail
        out.append(f"    {eff} big{i}{by} when `{cond}`\n")
    return "".join(out)


def _fields_decl(rng: random.Random, names: list[str]) -> tuple[str, set, dict]:
    """A `fields { ... }` block declaring `names` (each of its kind's declarations, see
    `DECL`), the names declared optional, and each name's declared type (as written)."""
    lines = []
    optional = set()
    chosen = {}
    for f in names:
        q = "?" if rng.random() < 0.4 else ""
        if q:
            optional.add(f)
        decls = DECL[FIELDS[f]]
        chosen[f] = decls[0] if rng.random() < 0.6 else rng.choice(decls)
        lines.append(f"      {f}{q}: {chosen[f]}")
    return "    fields {\n" + "\n".join(lines) + "\n    }\n", optional, chosen


# the fields of timestamps, durations and maps of them (or of ints, maps): read by `TIMES`,
# declared by every type of a `timed` policy (see gen_policy), by others when read
TIMED = ["at", "ttl", "stamps", "limits", "counts", "sched", "grid"]
_UNTIMED = [f for f in FIELDS if f not in TIMED]


def gen_policy(rng: random.Random, seed: Any = None, timed: bool = False) -> Policy:
    """A random policy text: one to three workflows, each with a few action types (some
    sharing a name across workflows), rules of every effect, stop triggers guarded and not.
    `timed`: every action type declares its fields, among them timestamps, durations and
    maps (`TIMED`), and half of them have two or three more rules reading them (`TIMES`)."""
    nwf = rng.choice([1, 1, 2, 3])
    text = f"roles [{', '.join(ROLES)}]\nconst glob = [\"x1\", \"ab\"]\n\n"
    workflows = []
    large: set = set()
    pool: list[str] = []  # conditions reused across rules (one CompiledExpr per text)
    for w in range(nwf):
        wname = ["w", "w2", "other"][w]
        ntypes = rng.randint(1, 3)
        types = [f"t{w}{k}" for k in range(ntypes)]
        default = rng.choice(["deny", "require_approval", None])
        text += f'workflow "{wname}" {{\n  version "{w}.{rng.randrange(9)}"\n'
        text += '  owners { business "B" technical "T" }\n'
        if default:
            text += f"  default {default}\n"
        # the same names in every workflow, not always the same values
        names = ", ".join(f'"{x}"' for x in rng.sample(["a", "x1", "é", "ab", "b", ""], 3))
        ratio, prefix = rng.choice(["2.5", "0.5", "-0.0"]), rng.choice(["a", "x", ""])
        text += (f"  const names = [{names}]\n  const limit = {rng.choice([5, 1, 100])}\n"
                 f"  const ratio = {ratio}\n  const prefix = \"{prefix}\"\n")
        tinfo = []
        for t in types:
            window = rng.choice(WINDOWS)
            irreversible = window is None and rng.random() < 0.3
            rws = rng.random() < 0.2
            text += f"  action {t} {{\n    system \"sys\"\n"
            if irreversible:
                text += "    irreversible\n"
            elif window is not None or rng.random() < 0.5:
                cls = rng.choice(["full", "partial"])
                text += f"    reversible {cls} via \"undo\"" + (f" within {window}" if window else "") + "\n"
            if rws:
                text += "    runs_while_stopped\n"
            if rng.random() < 0.5:
                text += f"    receipt [{', '.join(rng.sample(['s', 'n', 'obj', 'policy_rule'], rng.randint(1, 3)))}]\n"
            head, text = text, ""  # (the rules first: the declared fields are those they read)
            nrules = rng.choice([0, 1, 2, 3, 4, 5, 6, 8])
            rules_at = len(text)
            if rng.random() < 0.04:  # a large type: chunks, an index on `action.s`
                text += _large_rules(rng, rng.choice([70, 120, 300, 70, 120, 300, 600, 1100]), types)
                large.add(t)
            permissive = rng.random() < 0.35  # mostly allow rules: allow decisions are not rare
            for r in range(nrules):
                eff = rng.choice(EFFECTS) if not permissive or rng.random() < 0.2 else "allow"
                name = f" r{r}" if rng.random() < 0.9 else ""
                by = ""
                if eff == "require_approval":
                    by = (f" by {rng.randint(1, 2)} {rng.choice(ROLES)}" if rng.random() < 0.7
                          else f" by 1 of [{', '.join(rng.sample(ROLES, 2))}]")
                if pool and rng.random() < 0.25:
                    cond = rng.choice(pool)
                else:
                    cond = _cond(rng, types)
                    pool.append(cond)
                if not name and any(f"when `{cond}`" in line for line in text.splitlines()[-nrules:]):
                    name = f" u{r}"
                text += f"    {eff}{name}{by} when `{cond}`\n"
            # (half the types read none: a read field holding a datetime or a timedelta always
            # takes the full path, a declared one no condition reads is checked by the fused function)
            for r in range(rng.choice([0, 0, 2, 3]) if timed else 0):
                eff = rng.choice(EFFECTS)
                by = " by 1 reviewer" if eff == "require_approval" else ""
                cond = rng.choice(TIMES) if rng.random() < 0.8 else f"{rng.choice(TIMES)} && {_atom(rng, types)}"
                text += f"    {eff} tm{r}{by} when `{cond}`\n"
            # the fields its actions carry: mostly those its rules read, a few others, and
            # sometimes fields no condition reads at all
            reads = sorted(set(re.findall(r"action\.(\w+)", text[rules_at:])) & set(FIELDS))
            declared: dict | None = None  # name -> its declared type, as written
            optional: set = set()
            if timed or rng.random() < 0.3:  # declared fields (`fields { ... }`): checked in the fused function
                names = sorted(set(reads) | set(rng.sample(_UNTIMED, rng.randint(0, 3))) | (
                    set(rng.sample(TIMED, rng.randint(2, 4))) if timed else set()))
                if names:
                    block, optional, declared = _fields_decl(rng, names)
                    head += block
            text = head + text + "  }\n"

            carried = [f for f in reads if rng.random() < 0.9]
            # a declared type's actions carry its required fields (else none would pass the
            # check), its optional ones sometimes
            carried += [f for f in declared or ()
                        if f not in carried and rng.random() < (0.6 if f in optional else 0.97)]
            carried += [f for f in rng.sample(list(FIELDS), rng.randint(0, 3)) if f not in carried]
            carried += [f for f in rng.sample(list(UNREAD), rng.randint(0, 2)) if f not in carried]
            tinfo.append((t, window, rws, declared, tuple(carried)))
        triggers = []
        stops_at = len(text)
        for k in range(rng.choice([0, 0, 1, 1, 2, 3])):
            g = rng.random()
            c = rng.choice(pool) if pool and rng.random() < 0.3 else _cond(rng, types, rng.choice([0, 1, 2]))
            if rng.random() < 0.25:  # a type no workflow declares, or one of another workflow (see _action)
                guards = types + UNDECLARED[:2] + ["t00", "t10"]
            else:
                guards = types
            if g < 0.45:
                when = f'action.type == "{rng.choice(guards)}" && ({c})'
            elif g < 0.65:
                names = ", ".join(f'"{t}"' for t in rng.sample(guards, min(2, len(guards))))
                when = f"action.type in [{names}] && ({c})"
            elif g < 0.8:
                when = c
            elif g < 0.87:  # guarded, but not by `==` or `in` (no type guard: always called)
                listed = ", ".join(f'"{t}"' for t in types)
                when = rng.choice([f'action.type != "{rng.choice(types)}" && ({c})',
                                   f'action.type.startsWith("u") && ({c})', f"!(action.type in [{listed}]) && ({c})",
                                   f'(action.type == "{rng.choice(guards)}" || ({c}))'])
            else:
                when = f'({c}) && action.type == "{rng.choice(guards)}"'
            name = f"st{k}"
            triggers.append(name)
            severity = rng.choice(["low", "medium", "high", "critical"])
            text += f"  stop {name} {{\n    when `{when}`\n    severity {severity}\n"
            text += '    owner "O"\n'
            if rng.random() < 0.5:
                text += "    affects [sys]\n"
            if rng.random() < 0.5:
                text += f"    receipt [{rng.choice(['s', 'n', 'evidence_x'])}]\n"
            if rng.random() < 0.5:
                text += '    rollback "undo it"\n'
            if rng.random() < 0.5:
                text += f"    notify [{rng.choice(ROLES)}]\n"
            text += "    resume when {\n      ok: `evidence.ok == true`\n    }\n  }\n"
        # the actions mostly carry what the stop triggers read too (else most of them would err: stop)
        treads = sorted(set(re.findall(r"action\.(\w+)", text[stops_at:])) & set(FIELDS))
        tinfo = [(*ti[:4], ti[4] + tuple(f for f in treads if f not in ti[4] and rng.random() < 0.85))
                 for ti in tinfo]
        text += "  rollback incident {\n    route ops\n    authorize 1 reviewer\n    cascade depth 1\n  }\n}\n\n"
        workflows.append((wname, tinfo, triggers))
    return Policy(text, workflows, seed, large=large)


def build_engines(text: str) -> tuple[Engine, Engine]:
    """(accelerated, reference) engines from one policy text (raises PolicyError)."""
    out = []
    for accelerate in (True, False):
        res = load_sources([SourceFile("p.policy", text)], accelerate=accelerate)
        out.append(Engine.from_load_result(res, accelerate=accelerate))
    return out[0], out[1]


def _strip_fields(text: str) -> str:
    """The text without its `fields { ... }` blocks (a random condition may not type-check)."""
    out = []
    skip = False
    for line in text.splitlines(keepends=True):
        if line.strip() == "fields {":
            skip = True
            continue
        if skip:
            if line.strip() == "}":
                skip = False
            continue
        out.append(line)
    return "".join(out)


def _strip_fields_at(text: str, bad: list) -> str | None:
    """The text without the `fields { ... }` blocks of the action types whose blocks hold
    a line of `bad` (ints, 1-based: where the checker found an error) or that `bad` names
    (strs), or None if there are none."""
    lines = text.splitlines(keepends=True)
    starts = []  # (first, last) line of each action block, 0-based
    first = None
    for i, ln in enumerate(lines):
        if ln.startswith("  action "):
            first = i
        elif first is not None and ln.rstrip("\n") == "  }":
            starts.append((first, i))
            first = None
    strip = {a for a, e in starts for b in bad if type(b) is int and a <= b - 1 <= e}
    names = {b for b in bad if type(b) is str}  # types named by an error elsewhere (a stop trigger's)
    strip |= {a for a, _ in starts if lines[a].split()[1] in names}
    if not strip:
        return None
    out = []
    cur = None
    skip = False
    for i, ln in enumerate(lines):
        if ln.startswith("  action "):
            cur = i
        if cur in strip and ln.strip() == "fields {":
            skip = True
            continue
        if skip:
            if ln.strip() == "}":
                skip = False
            continue
        out.append(ln)
    return "".join(out)


def _drop_rules_at(text: str, bad: list) -> str | None:
    """The text without the rule lines of `bad` (ints, 1-based) that are in an action
    block declaring fields (its conditions do not type-check against them), or None."""
    lines = text.splitlines(keepends=True)
    drop = set()
    declared = False
    for i, ln in enumerate(lines):
        if ln.startswith("  action "):
            declared = False
        elif ln.strip() == "fields {":
            declared = True
        elif declared and i + 1 in bad and ln.startswith(("    allow", "    deny", "    require_approval")):
            drop.add(i)
    if not drop:
        return None
    return "".join(ln for i, ln in enumerate(lines) if i not in drop)


def _declared_types(text: str) -> set:
    """The action types whose block in `text` declares fields."""
    out = set()
    cur = None
    for ln in text.splitlines():
        if ln.startswith("  action "):
            cur = ln.split()[1]
        elif cur is not None and ln.strip() == "fields {":
            out.add(cur)
    return out


LOADER_CRASHES = [0]  # policy texts the loader raised on (not a PolicyError): skipped


def round_of(rng: random.Random, seed: Any = None, timed: bool = False) -> tuple[Policy, Engine, Engine]:
    """A policy that loads (the declared fields of a type dropped when one of its
    conditions does not type-check against them; all of them when that does not help)
    and its two engines. `timed`: see `gen_policy`."""
    from policy_engine.diagnostics import PolicyError

    for _ in range(20):
        pol = gen_policy(rng, seed, timed)
        text = pol.text
        for attempt in range(4):
            try:
                fast, ref = build_engines(text)
            except PolicyError as e:
                errors = [d for d in e.diagnostics if d.severity == "error"]
                bad: list = [d.span.line for d in errors]
                for d in errors:  # (`no field x is declared for action type(s) t, ...`: a trigger's)
                    if "action type" in d.message:
                        bad += re.findall(r"`(\w+)`", d.message.split("action type", 1)[1])
                nxt = None
                if attempt == 0 and len(text) % 2 == 0:  # half the time, the erring rules go, not the fields
                    nxt = _drop_rules_at(text, bad)
                if (nxt is None or nxt == text) and attempt < 2:
                    nxt = _strip_fields_at(text, bad)
                if nxt is None or nxt == text:
                    nxt = _strip_fields(text)
                if nxt == text:
                    break  # no fields left to drop: not a loadable policy
                text = nxt
                continue
            except Exception:  # noqa: BLE001 - the loader crashed (its own bug, not the gate's): skip
                # (seen: lints' _FLIP lacks "==": `5 == action.n && action.n > 1` raises KeyError)
                LOADER_CRASHES[0] += 1
                if _strip_fields(text) == text:
                    break
                text = _strip_fields(text)
                continue
            if text is not pol.text:
                kept = _declared_types(text)
                pol = Policy(text, [(w, [(t, win, rws, d if t in kept else None, c) for t, win, rws, d, c in ti], tr)
                                    for w, ti, tr in pol.workflows], seed, large=pol.large)
            pol.reads = {(w.name, a.name): a.reads for w in ref.compiled.workflows.values()
                         for a in w.actions.values()}
            return pol, fast, ref
    raise RuntimeError("no loadable policy in 20 tries (the generator is broken)")


# ================================================================================ calls

_MISSING = "<missing>"


def _style(rng: random.Random) -> dict:
    """What a sequence's lists mostly hold (so a fused function specialised for one list
    shape lives long enough to meet an odd item of that shape, a NaN among floats, say):
    `nums` "int", "float", "bool" or "mixed"; `priced` (every record with a `price`) True,
    False or None (mixed); `exact`: the actions carry the fields their type reads alone."""
    return {"nums": rng.choice(["int", "int", "float", "float", "mixed", "bool"]),
            "priced": rng.choice([False, False, False, True, True, None]), "exact": rng.random() < 0.2}


_MIXED = {"nums": "mixed", "priced": None}


def _value(rng: random.Random, kind: str, odd: float, style: dict = _MIXED) -> Any:
    """A value for a field of `kind`: mostly of its kind from a small pool (so outcomes and
    shapes repeat), sometimes absent, of another type, or odd. `style`: see `_style`."""
    r = rng.random()
    if r < odd * 0.25:
        return _MISSING
    if r < odd * 0.5:
        return rng.choice(ODD_SCALARS)
    if r < odd * 0.75:  # another kind's value
        return _value(rng, rng.choice(sorted(set(FIELDS.values()) - {kind})), 0.0)
    if r < odd and rng.random() < 0.02:
        return _huge()
    if kind == "str":
        return rng.choice(STRS)
    if kind == "int":
        return rng.choice(INTS[:8]) if rng.random() < 0.9 else rng.choice(INTS)
    if kind == "float":
        return rng.choice(FLOATS)
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "tags":
        return [rng.choice(STRS[:8]) for _ in range(rng.choice([0, 1, 2, 2, 3]))] if rng.random() < 0.9 else \
            [rng.choice(STRS), rng.choice([1, None, ["a"], {"a": 1}, 2.5])]
    if kind == "obj":
        o = {"level": rng.choice([0, 1, 2, 3]), "name": rng.choice(STRS[:6]), "ok": rng.random() < 0.5}
        q = rng.random()
        if q < 0.1:
            o.pop(rng.choice(list(o)))
        elif q < 0.2:
            o["extra"] = rng.choice([1, "e", None, [1], {"a": "x"}, {"a": "x"}, {"a": 1}])
        elif q < 0.3:
            o["level"] = rng.choice([1.5, "2", None, True, -0.0])
        elif q < 0.35:
            o = {S("level"): 1, "name": "a", "ok": True}
        return o
    if kind == "items":  # records: mostly all of the same keys and value types (a records shape)
        out = []
        priced = style["priced"]  # every record with a float `price` too (another records shape)
        if priced is None:
            priced = rng.random() < 0.3
        rare = 0.01 if odd == 0.0 else 0.05  # an odd value in a record
        q = rng.random()
        n = rng.choice([0, 1, 2, 3]) if q < 0.97 else rng.choice([4, 5, 255, 256, 257])  # (256: _RECORDS_MAX)
        for _ in range(n):
            it = {"sku": rng.choice(STRS[:4]), "qty": rng.choice([0, 1, 2, 5, 7]), "ok": rng.random() < 0.7}
            if priced:
                it["price"] = rng.choice([0.5, 2.5, 10.0, -0.0, 1e300]) if rng.random() >= rare * 2 else \
                    rng.choice([NAN, NAN, INF, -INF, 3, None])
            if rng.random() < rare * 2:
                it.pop("qty")
            if rng.random() < rare:
                it["qty"] = rng.choice([2.0, "3", None, True, 2**64 + 1])
            if rng.random() < rare:  # a lone surrogate (the same shape: only the check of the text tells)
                it["sku"] = rng.choice(["\ud800", "a\udfff", "é"])
            if rng.random() < rare:  # an odd record: keys reordered, an odd key or value, not a dict
                it = rng.choice([dict(reversed(list(it.items()))), {**it, "sku": rng.choice(["é", "\ud800", S("a")])},
                                 {S("sku") if k == "sku" else k: v for k, v in it.items()}, {**it, "x": 1}, None, "x",
                                 [it], {}])
            out.append(it)
        return out
    if kind == "nums":  # ints or floats, sometimes with an odd item
        q = rng.random()
        n = rng.choice([0, 1, 2, 3, 4]) if q < 0.98 else rng.choice([1024, 1025])  # (1024: _tag scans no more)
        flavour = style["nums"]
        if flavour == "mixed":
            flavour = rng.choice(["int", "float", "float", "bool"])
        if flavour == "int":
            out = [rng.choice([0, 1, 2, 3, 5, 9, 10, -1]) for _ in range(n)]
        elif flavour == "float":
            out = [rng.choice([0.0, 0.5, 1.0, 2.0, 2.5, 9.5, -0.0, 1e300]) for _ in range(n)]
        else:  # bools (a shape of their own)
            out = [rng.random() < 0.5 for _ in range(n)]
        if out and rng.random() < (0.04 if odd == 0.0 else 0.15):
            # half of the time a value of the list's own shape (an int list's big ints, a float
            # list's NaN and infinities): only the check of the value tells
            same = {"int": [2**64 + 1, 2**63 - 1, -(2**63), 9007199254740993, -(2**70)],
                    "float": [NAN, NAN, INF, -INF, 1e308], "bool": [True, False]}[flavour]
            out[rng.randrange(len(out))] = rng.choice(same) if rng.random() < 0.5 else \
                rng.choice([NAN, INF, True, False, 2, 2.0, "2", None, I(2), F(2.5), [1]])
        return out
    if kind == "meta":
        return {k: rng.choice(["v", "w", 1, {"in": "v"}, ["v"]]) if rng.random() < 0.2 else rng.choice(["v", "w"])
                for k in rng.sample(["k", "j", "é", "a.b"], rng.randint(0, 3))}
    if kind == "ts":
        return rng.choice(["2026-03-01T00:00:00Z", "2026-03-03T00:00:00Z", "2026-03-02T14:30:00.5+02:00", "bad",
                           "9999-12-31T23:59:59Z"])
    rare = 0.03 if odd == 0.0 else 0.2  # a value a declared type refuses (text, naive, a subclass...)
    if kind == "dt":
        return _timestamp(rng, rare)
    if kind == "td":
        return _duration(rng, rare)
    if kind in ("dtmap", "tdmap", "imap", "recmap", "grid"):
        return _map(rng, kind, rare)
    raise AssertionError(kind)


# timestamps as a runtime sends them: aware datetimes (most of them), in UTC or not
_T0 = datetime(2026, 3, 2, 14, 30, 0, 123456, tzinfo=UTC)  # (= T0 below)
_STAMPS = [_T0, _T0 - timedelta(hours=1),
           _T0 + timedelta(hours=1), _T0 - timedelta(days=2), datetime(2026, 3, 1, tzinfo=UTC),
           datetime(2026, 3, 2, 14, 30, tzinfo=UTC), _T0 + timedelta(microseconds=1)]
_STAMPS_EDGE = [datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                datetime(1970, 1, 1, tzinfo=UTC), _T0.replace(fold=1)]
# what a declared timestamp refuses: a JSON caller's RFC 3339 text (valid or not), naive or
# subclassed datetimes, a date
_STAMPS_TEXT = ["2026-03-02T14:30:00Z", "2026-03-02T16:30:00+02:00", "2026-03-02T14:30:00.123456789Z",
                "2026-03-02T14:30:00.5-05:30", "2026-03-02t14:30:00z", "2026-03-02 14:30:00Z", "2026-13-01T00:00:00Z",
                "2026-03-02T14:30:00", "not a time", "", "2026-02-30T00:00:00Z", "2026-03-02T24:00:00Z"]


def _timestamp(rng: random.Random, rare: float) -> Any:
    r = rng.random()
    if r < rare:  # refused by a declared `timestamp` (an input error, the same on both paths)
        q = rng.random()
        if q < 0.45:
            return rng.choice(_STAMPS_TEXT)
        if q < 0.8:
            return rng.choice(_STAMPS).replace(tzinfo=None)  # naive
        if q < 0.9:
            t = rng.choice(_STAMPS)
            return DT(t.year, t.month, t.day, t.hour, t.minute, t.second, t.microsecond, tzinfo=UTC)
        return rng.choice([T0.date(), 1772461800, 1772461800.5, None])
    t = rng.choice(_STAMPS) if rng.random() < 0.95 else rng.choice(_STAMPS_EDGE)
    q = rng.random()
    if q < 0.7:
        return t
    try:  # (the same instant in another zone; year 1 and 9999 may not have one)
        if q < 0.85:
            return t.astimezone(timezone(timedelta(hours=rng.choice([2, -5, 0]), minutes=rng.choice([0, 30]))))
        if q < 0.95 and _ZONES:
            return t.astimezone(rng.choice(_ZONES))
    except (OverflowError, ValueError):
        return t
    return t.replace(tzinfo=timezone(timedelta(0), "Z"))  # a named zero offset (not `UTC` itself)


_DURATIONS = [timedelta(0), timedelta(minutes=15), timedelta(hours=1), timedelta(seconds=90), timedelta(seconds=1.5),
              timedelta(milliseconds=250), timedelta(microseconds=1), timedelta(seconds=-30), timedelta(days=30),
              timedelta(hours=2), timedelta(minutes=15)]
# past CEL's duration range (+-315,576,000,000 s) or timedelta's own ends
_DURATIONS_EDGE = [timedelta.max, timedelta.min, timedelta(days=3_652_500), timedelta(days=-3_652_500),
                   timedelta(seconds=315_576_000_000), timedelta(seconds=315_576_000_001)]
# what a declared duration refuses: CEL's duration text (a JSON caller's), numbers, a subclass
_DURATIONS_TEXT = ["15m", "1h30m", "90s", "1.5s", "-250ms", "0", "bad", "P1D", "1d", ""]


def _duration(rng: random.Random, rare: float) -> Any:
    r = rng.random()
    if r < rare:
        q = rng.random()
        if q < 0.6:
            return rng.choice(_DURATIONS_TEXT)
        if q < 0.8:
            return rng.choice([900, 900.0, -1, 1.5, True])
        return TD(seconds=rng.choice([1, 900]))
    return rng.choice(_DURATIONS) if rng.random() < 0.97 else rng.choice(_DURATIONS_EDGE)


_MAP_KEYS = ["k", "j", "é", "a.b", "a", "b"]


def _map(rng: random.Random, kind: str, rare: float) -> Any:
    """A map with string keys and values of its kind (`dtmap` timestamps, `tdmap` durations,
    `imap` ints, `recmap` records `{at, ttl?, note?}`, `grid` maps of ints), sometimes one
    a declared type refuses: a non-string key, a value of another kind, nested too deep."""

    def item() -> Any:
        if kind == "dtmap":
            return _timestamp(rng, rare / 3)
        if kind == "tdmap":
            return _duration(rng, rare / 3)
        if kind == "imap":
            return rng.choice([0, 1, 2, 3, 5, 10, -1])
        if kind == "recmap":
            rec: dict = {"at": _timestamp(rng, rare / 3)}
            if rng.random() < 0.6:
                rec["ttl"] = _duration(rng, rare / 3)
            if rng.random() < 0.2:
                rec["note"] = rng.choice(["n", "é", ""])
            return rec
        return {k: rng.choice([0, 1, 2, 5]) for k in rng.sample(["a", "b", "c"], rng.randint(0, 2))}  # grid

    keys = rng.sample(_MAP_KEYS[:4] if kind != "grid" else ["a", "b", "k"], rng.randint(0, 3))
    if kind in ("dtmap", "tdmap", "recmap") and rng.random() < 0.5 and "k" not in keys:
        keys.append("k")  # (the key most conditions look up)
    out: dict = {k: item() for k in keys}
    if rng.random() < rare:
        q = rng.random()
        bad_key = rng.choice([1, True, S("k"), 2.5, None, ("k",)])
        if q < 0.25:
            out[bad_key] = item()  # a key that is not a string (some the input check refuses outright)
        elif q < 0.5:  # a value of another kind
            out[rng.choice(["k", "j"])] = rng.choice(["2026-03-02T14:30:00Z", "15m", 1, 1.5, None, [1], True,
                                                      T0, timedelta(seconds=1), {"at": "x"}])
        elif q < 0.75:  # nested one level too deep
            out["k"] = {"in": item()}
        elif q < 0.9 and kind in ("recmap", "grid") and out:
            k = next(iter(out))
            out[k] = {"at": "2026-03-02T14:30:00Z"} if kind == "recmap" else {"a": {"deep": 1}}
        else:  # not a map at all
            return rng.choice([[("k", T0)], "k=v", [], T0, [{"k": T0}]])
    return out


# fixed `now`s, some sharing a microsecond (the key of the per-`now` caches)
T0 = datetime(2026, 3, 2, 14, 30, 0, 123456, tzinfo=UTC)
NOWS = [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2), T0 + timedelta(hours=9),
        datetime(2026, 3, 2, 14, 30, tzinfo=UTC), datetime(2026, 3, 2, 14, 31, tzinfo=UTC),
        datetime(2026, 3, 2, 5, 0, 0, 1, tzinfo=UTC), datetime(2026, 3, 2, 23, 0, 0, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 123456, tzinfo=UTC), datetime(1, 1, 1, tzinfo=UTC),
        T0.replace(fold=1)]


def _now(rng: random.Random, counter: list) -> Any:
    r = rng.random()
    if r < 0.45:
        return rng.choice(NOWS[:4]) if rng.random() < 0.8 else rng.choice(NOWS)
    if r < 0.6:
        return None  # the clock
    if r < 0.75:  # a new one each call (a runtime's own clock), often sharing a key with a fixed one
        counter[0] += 1
        if rng.random() < 0.5:
            return T0 + timedelta(seconds=counter[0])
        return T0 + timedelta(microseconds=counter[0])
    if r < 0.8:  # an equal `now`, another object
        n = rng.choice(NOWS[:4])
        return datetime(n.year, n.month, n.day, n.hour, n.minute, n.second, n.microsecond, tzinfo=UTC)
    if r < 0.85:
        return T0.astimezone(timezone(timedelta(hours=rng.choice([2, -5]))))
    if r < 0.88 and _ZONES:
        return T0.astimezone(rng.choice(_ZONES))
    if r < 0.9:
        return datetime(2026, 3, 2, 14, 30)  # naive
    if r < 0.93:
        return rng.choice(["2026-03-02T14:30:00.123456Z", "2026-03-02T16:30:00+02:00", "yesterday", ""])
    if r < 0.95:  # timezone(timedelta(0)) is UTC itself (CPython); a named zero offset is not
        return T0.replace(tzinfo=rng.choice([timezone(timedelta(0)), timezone(timedelta(0), "Z")]))
    if r < 0.97:
        n = rng.choice(NOWS[:4])
        return DT(n.year, n.month, n.day, n.hour, n.minute, n.second, n.microsecond, tzinfo=UTC)
    return rng.choice([12345, 1.5, b"now", T0.date()])


STATE_EXTRAS = [("since", 12), ("note", "é"), ("by", {"who": "x", "n": [1, 2]}), ("history", [{"t": "st0"}, {"t": 1}]),
                ("x", 1.5), ("x", NAN), ("note", "\ud800"), ("reason", None), ("ok", True), ("deep", [[[1]]]),
                (S("k"), "v"), (1, "v"), ("why", S("v")), ("big", "x" * 5000), ("stopped_by", "st0"),
                ("level", -0.0), ("at", "2026-03-02T14:00:00Z"), ("tags", ["a", "b"])]


def _state_extras(rng: random.Random) -> dict:
    """Keys of a workflow state besides `status` (and `stopped_by`, `stopped_at`, `mode`)."""
    out: dict = {}
    for k, v in rng.sample(STATE_EXTRAS, rng.randint(1, 3)):
        out[k] = copy.deepcopy(v)
    return out


def _state(rng: random.Random, pol: Policy, wname: Any) -> Any:
    r = rng.random()
    wf = next((w for w in pol.workflows if w[0] == wname), None)
    triggers = (wf[2] if wf else []) + ["nosuch"]
    if r < 0.6:
        return None
    if r < 0.7:
        st: dict = {"status": "running"}
        if rng.random() < 0.6:
            st["mode"] = rng.choice(["strict", "lax", 1, None])
        if rng.random() < 0.2:
            st.update(_state_extras(rng))
        return st
    if r < 0.85:
        st = {"status": "stopped"}
        q = rng.random()
        if q < 0.85:
            st["stopped_by"] = rng.choice(triggers) if q < 0.8 else rng.choice([None, 1, "\ud800", S("st0")])
        q = rng.random()
        if q < 0.6:
            st["stopped_at"] = rng.choice(["2026-03-02T14:00:00Z", "2026-03-02T15:00:00+01:00",
                                           "2026-03-02T14:00:00.5Z"])
        elif q < 0.75:
            st["stopped_at"] = rng.choice(["not a time", 12, None, T0, ""])
        if rng.random() < 0.2:
            st["mode"] = "strict"
        if rng.random() < 0.25:  # more keys (nested, odd): the lane checks them (plain_flat, then check_size)
            st.update(_state_extras(rng))
        return st
    if r < 0.9:
        return rng.choice([{}, {"status": "paused"}, {"status": 1}, {"status": S("running")}, {"mode": "strict"},
                           {"status": "running", "big": [1] * 100_001}])
    if r < 0.95:
        return rng.choice(["running", [], 7])
    try:
        if rng.random() < 0.5:
            return WorkflowState(status="running", mode="strict")
        return WorkflowState(status="stopped", stopped_by=rng.choice(triggers))
    except Exception:  # noqa: BLE001
        return None


def _action(rng: random.Random, pol: Policy, odd: float, absent: float = 0.15, style: dict = _MIXED) -> dict:
    wf = rng.choice(pol.workflows)
    wname, tinfo, _ = wf
    a: dict = {}
    r = rng.random()
    info = rng.choice(tinfo)
    carried = info[4]
    if r < 0.83:
        t = info[0]
    elif r < 0.9:  # a type its workflow does not declare (the undeclared-type lane)
        t = rng.choice(UNDECLARED)
    elif r < 0.95:  # a type of another workflow
        info = rng.choice(rng.choice(pol.workflows)[1])
        t, carried = info[0], info[4]
    else:
        t = rng.choice([None, 1, _MISSING, "\ud800", S("t00")])
    if rng.random() < 0.1:
        carried = tuple(rng.sample(list(KINDS), rng.randint(0, len(KINDS))))
    r = rng.random()
    w: Any = wname
    if r < 0.03:
        w = rng.choice(["nowf", None, _MISSING, 3])
    elif r < 0.06:
        w = rng.choice(pol.workflows)[0]
    keys = ["workflow", "type", "id"]
    rng.shuffle(keys)  # key order is not part of the decision
    for k in keys:
        if k == "workflow" and w is not _MISSING:
            a["workflow"] = w
        elif k == "type" and t is not _MISSING:
            a["type"] = t
        elif k == "id":
            q = rng.random()
            if q < 0.5:
                a["id"] = rng.choice(["a1", "a2", "é3", ""]) if rng.random() < 0.9 else \
                    rng.choice(["\u2028", "\x7f", "\x00", "😀", '"', "\\", "</script>", "a" * 300, "\u00e9\u0301"])
            elif q < 0.55:
                a["id"] = rng.choice([7, None, "\ud800", ["x"], S("a1"), 2.5])
    if style.get("exact"):  # only the fields its conditions read: a frozen copy's actions (see shapes.frozen_copy)
        reads = pol.reads.get((w, t))
        if reads is not None:
            carried = tuple(f for f in carried if f in reads)
    for f in carried:
        if rng.random() < absent:
            continue  # absent
        v = _value(rng, KINDS[f], odd, style)
        if v is not _MISSING:
            a[f] = v
    if t in pol.large and not odd and rng.random() < 0.97:  # its index field: a present str
        a["s"] = rng.choice(STRS[:10])
    if rng.random() < 0.015:  # a key of a str subclass (equal to the name a condition reads)
        k = rng.choice(list(a))
        if type(k) is str:
            a = {S(k) if x == k else x: v for x, v in a.items()}
    if rng.random() < (0.01 if style.get("exact") else 0.1):
        a["extra"] = rng.choice([NAN, "\ud800", [1, [2, [3]]], {"deep": {"er": [1.5, -0.0]}}, 2**80, 1e-7])
    if rng.random() < 0.02:
        deep: Any = 1
        for _ in range(rng.choice([40, 201])):
            deep = [deep]
        a["deep"] = deep
    return a


def _count(v: Any) -> tuple[int, int]:
    """(values, characters) as the input check counts them (`inputs._check_size`)."""
    items = chars = 0
    stack = [v]
    while stack:
        x = stack.pop()
        if type(x) is dict:
            chars += sum(len(k) for k in x if type(k) is str)
            vals = list(x.values())
        elif type(x) in (list, tuple):
            vals = list(x)
        else:
            if type(x) is str:
                chars += len(x)
            continue
        items += len(vals)
        stack.extend(vals)
    return items, chars


def _at_the_limit(rng: random.Random, pol: Policy, a: dict) -> dict:
    """`a` with its read fields together exactly at the input limit of values or of
    characters, or one past it (a field padded, or two sharing the padding)."""
    from policy_engine.limits import MAX_INPUT_CHARS, MAX_INPUT_ITEMS

    keys = pol.reads.get((a.get("workflow"), a.get("type")))
    if not keys:
        return a
    a = dict(a)
    over = rng.choice([0, 1, 1, -1])
    if rng.random() < 0.5 and "tags" in keys:  # values: a list of empty strings
        a["tags"] = []
        items, _ = _count({k: a[k] for k in keys if k in a})
        a["tags"] = [""] * max(0, MAX_INPUT_ITEMS + over - items)
        return a
    if rng.random() < 0.5 and "nums" in keys:  # values: a list of ints or floats
        a["nums"] = []
        items, _ = _count({k: a[k] for k in keys if k in a})
        a["nums"] = [rng.choice([1, 2.5])] * max(0, MAX_INPUT_ITEMS + over - items)
        return a
    if rng.random() < 0.5 and "items" in keys:  # records: values (4 per record), or characters (one long sku)
        rec = {"sku": "a", "qty": 1, "ok": True}
        a["items"] = []
        if rng.random() < 0.5:
            pad = "tags" in keys
            if pad:  # the rest (the values modulo 4) in the tags: exactly at the limit
                a["tags"] = []
            items, _ = _count({k: a[k] for k in keys if k in a})
            need = max(0, MAX_INPUT_ITEMS + over - items)
            a["items"] = [dict(rec) for _ in range(need // 4)]
            if pad:
                a["tags"] = [""] * (need % 4)
            return a
        a["items"] = [dict(rec) for _ in range(3)]
        _, chars = _count({k: a[k] for k in keys if k in a})
        a["items"][1]["sku"] = "a" * max(0, MAX_INPUT_CHARS + over - chars + 1)
        return a
    strs = [k for k in ("s", "t") if k in keys]
    if not strs:
        return a
    for k in strs:
        a[k] = ""
    _, chars = _count({k: a[k] for k in keys if k in a})
    need = max(0, MAX_INPUT_CHARS + over - chars)
    if len(strs) == 2 and rng.random() < 0.5:
        a["s"], a["t"] = "a" * (need // 2), "b" * (need - need // 2)
    else:
        a[strs[0]] = "a" * need
    return a


def _mutation(rng: random.Random, action: Any) -> list:
    """Edits the caller makes to its action after `evaluate()` returned: (path, value)
    to set, (path, _DEL) to delete, (path, ("append", value)) to append to a list."""
    if type(action) is not dict or not action:
        return []
    ops = []
    inner = [k for k, v in action.items() if type(v) in (list, dict) and v]
    for _ in range(rng.randint(1, 3)):
        k = rng.choice(inner) if inner and rng.random() < 0.4 else rng.choice(list(action))
        v = action[k]
        q = rng.random()
        if isinstance(v, list) and v and type(v[0]) is dict and v[0] and q < 0.3:  # inside an item
            ops.append(((k, rng.randrange(len(v)), rng.choice(list(v[0]))), rng.choice([99, "changed", None, [1]])))
        elif isinstance(v, list) and v and q < 0.2:  # an item replaced
            ops.append(((k, rng.randrange(len(v))), rng.choice([99, 2.5, "changed", None])))
        elif isinstance(v, list) and v and q < 0.4:
            ops.append(((k,), ("append", rng.choice(["zz", 99, {"qty": 9}]))))
        elif isinstance(v, dict) and v and q < 0.4:
            kk = rng.choice(list(v))
            ops.append(((k, kk), rng.choice(["changed", 42, None])))
        elif q < 0.6:
            ops.append(((k,), rng.choice(["changed", 12345, -0.0, None, ["new"]])))
        elif q < 0.7:
            ops.append(((k,), "<del>"))
        else:
            ops.append((("added",), rng.choice([1, "x", [2]])))
    return ops


def apply_mutation(action: Any, ops: list) -> None:
    for path, value in ops:
        try:
            tgt = action
            for p in path[:-1]:
                tgt = tgt[p]
            k = path[-1]
            if value == "<del>":
                tgt.pop(k, None)
            elif type(value) is tuple and value and value[0] == "append":
                tgt[k].append(copy.deepcopy(value[1]))
            else:
                tgt[k] = copy.deepcopy(value)
        except Exception:  # noqa: BLE001 - the path is gone (an earlier edit): skip
            pass


READS = ["to_json", "dump_json", "digest", "evaluated_at", "reversibility", "model_dump", "copy", "deepcopy",
         "pickle", "eq", "model_copy", "repr", "canonical", "canonical", "body", "body"]


@dataclass
class Step:
    """One call. `action` is the value as passed (deep-copied per run); `slot` (not None):
    the caller's dict object kept in that slot is reused, changed in place to `action`;
    `wrap`: "dict", "model" (an `Action`), "odict" (a dict subclass), "proxy" (a mapping); `mutate`: the edits
    the caller makes after the call (see `_mutation`); `api`: "evaluate", "json" or "both";
    `reads`: the order the accelerated decision is first read in."""

    action: Any
    state: Any
    now: Any
    api: str = "evaluate"
    slot: int | None = None
    wrap: str = "dict"
    mutate: list = field(default_factory=list)
    reads: tuple = ("to_json",)
    ref_json: bool = False  # also compare the reference engine's own to_json
    hold: int = 0  # read the decision only after this many more calls (0: at once)


def gen_steps(rng: random.Random, pol: Policy, n: int, odd: float | None = None) -> list[Step]:
    """A random call sequence of length `n`. Calls often repeat a previous action exactly
    or nearly (so fused functions get built, templates filled and reused, `now`s seen
    twice), change one field's shape, or reuse the caller's dict. `odd`: how often a
    value is absent, of another type or odd (drawn per sequence when None: some
    sequences are clean, so the specialised functions live long, others hostile)."""
    odd = rng.choice([0.0, 0.0, 0.02, 0.1, 0.3]) if odd is None else odd
    absent = rng.choice([0.0, 0.02, 0.15]) if odd == 0.0 else 0.15
    style = _style(rng)  # what its lists mostly hold
    steps: list[Step] = []
    counter = [0]
    recent: list = []
    for _ in range(n):
        r = rng.random()
        if recent and r < 0.35:
            a = copy.deepcopy(rng.choice(recent))
        elif recent and r < 0.6:  # a previous action with one field changed
            a = copy.deepcopy(rng.choice(recent))
            if type(a) is dict:
                f = rng.choice([k for k in a if k in KINDS] or list(KINDS)) if rng.random() < 0.8 else \
                    rng.choice(list(KINDS))
                v = _value(rng, KINDS[f], odd * 2 if odd else rng.choice([0.0, 0.0, 0.0, 0.3]), style)
                if v is _MISSING:
                    a.pop(f, None)
                else:
                    a[f] = v
        else:
            a = _action(rng, pol, odd, absent, style)
        if pol.reads and type(a) is dict and rng.random() < 0.008:
            a = _at_the_limit(rng, pol, a)  # (not kept for reuse: a few of these are enough)
        else:
            recent.append(a)
            if len(recent) > 12:
                recent.pop(0)
        wname = a.get("workflow") if type(a) is dict else None
        st = _state(rng, pol, wname) if rng.random() < 0.6 else None
        q = rng.random()
        wrap = "dict" if q < 0.94 else ("model" if q < 0.96 else ("odict" if q < 0.98 else "proxy"))
        q = rng.random()
        slot = rng.randrange(3) if q < 0.15 else None
        mutate = _mutation(rng, a) if rng.random() < 0.3 else []
        q = rng.random()
        api = "evaluate" if q < 0.6 else ("json" if q < 0.8 else "both")
        reads = tuple(rng.sample(READS, rng.randint(1, 4)))
        hold = rng.choice([0] * 12 + [1, 2, 5, 20])  # some decisions read only calls later
        steps.append(Step(a, st, _now(rng, counter), api, slot, wrap, mutate, reads, rng.random() < 0.05, hold))
    return steps


# ================================================================================ running


@dataclass
class Mismatch:
    step: int  # the call whose decision differs
    what: str
    got: str
    want: str
    seen_at: int = -1  # the call before which it was seen (a decision read later: after `step`)

    def __str__(self) -> str:
        return f"step {self.step}: {self.what}\n  accelerated: {self.got}\n  reference:   {self.want}"


def _wrap(a: Any, wrap: str) -> Any:
    if wrap == "model" and type(a) is dict:
        try:
            return Action(**a)
        except Exception:  # noqa: BLE001 - not a valid model: pass the dict
            return a
    if wrap == "odict" and type(a) is dict:
        return OrderedDict(a)
    if wrap == "proxy" and type(a) is dict:  # a read-only mapping, not a dict
        return MappingProxyType(a)
    return a


def _as_gate_reads(a: Any) -> Any:
    """The action as the gate reads it (a model dumped, a mapping as a dict)."""
    from collections.abc import Mapping

    from policy_engine.engine.util import as_dict

    a = as_dict(a)
    return dict(a) if type(a) is not dict and isinstance(a, Mapping) else a


def _json_or_exc(f) -> str:
    try:
        return f()
    except Exception as e:  # noqa: BLE001 - pydantic refuses a lone surrogate: both must refuse alike
        return f"<raises {type(e).__name__}>"


def _parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _evaluated_at(js: str) -> datetime | None:
    import json

    try:
        return _parse_ts(json.loads(js)["evaluated_at"])
    except Exception:  # noqa: BLE001
        return None


_EVALUATED_AT = re.compile(r'evaluated_at(["\']?\s*[:=]\s*["\'])[^"\']*')


def _no_time(v: Any) -> Any:
    """`v` (a decision's text) without its `evaluated_at` value."""
    return _EVALUATED_AT.sub(r"evaluated_at\1<clock>", v) if isinstance(v, str) else v


def _bad_now(now: Any) -> bool:
    """Whether the gate denies for this `now` (unreadable) and stamps the clock's time."""
    if now is None:
        return False
    try:
        parse_ts(now, "`now`")
        return False
    except Exception:  # noqa: BLE001
        return True


_PREC = {"stop": 0, "deny": 1, "require_approval": 2, "allow": 3}


def laws(d: Any) -> str | None:
    """Which of DESIGN.md's gate semantics the (reference) decision `d` breaks, or None:
    precedence (stop > deny > require_approval > allow, whatever the order of the rules),
    errors count as matched for stop, deny and require_approval and never for allow, the
    matched list is the trace's, approvals only for require_approval, never `allow` by
    default."""
    trace = d.trace
    matched = {(m.kind, m.name) for m in d.matched}
    from_trace = set()
    for t in trace:
        if t.error is not None and t.matched != (t.effect != "allow"):
            return f"an erring {t.effect} condition ({t.name}) counted as matched={t.matched}"
        if t.error is None and t.value in ("true", "false") and t.matched != (t.value == "true"):
            return f"{t.name}: value {t.value} but matched={t.matched}"
        if t.matched:
            from_trace.add((t.kind, t.name))
    if trace and matched != from_trace:
        return f"matched {sorted(matched)} is not the trace's {sorted(from_trace)}"
    if d.deciding.kind in ("rule", "stop", "default"):
        effects = [m.effect for m in d.matched]
        if effects and _PREC[d.effect] != min(_PREC[e] for e in effects):
            return f"effect {d.effect} but matched effects {effects}"
        if not effects and d.deciding.kind != "default":
            return "decided by a rule, but nothing matched"
    if d.effect == "allow" and d.deciding.kind != "rule":
        return f"allow decided by {d.deciding.kind}"
    if d.approvals and d.effect != "require_approval":
        return "approvals listed for a decision that is not require_approval"
    if d.action_digest is not None and d.effect != "require_approval":
        return "a digest on a decision that is not require_approval"
    return None


def _rfc3339(t: datetime) -> str:
    """RFC 3339 in UTC, `Z`, microseconds when not zero: written here without the engine's
    helpers (their per-second cache is shared by both engines, so only an oracle sees it)."""
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    frac = f".{t.microsecond:06d}" if t.microsecond else ""
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}{frac}Z"


def time_law(d: Any, at: Any) -> str | None:
    """Whether the decision's times are `at` (a datetime) and `at` + its reversal window."""
    if not isinstance(at, datetime):
        return None
    want = _rfc3339(at)
    if d.evaluated_at != want:
        return f"evaluated_at {d.evaluated_at}, not {want}"
    rev = d.reversibility
    if rev is not None and rev.window_seconds is not None:
        try:
            until = _rfc3339(at.astimezone(UTC) + timedelta(seconds=rev.window_seconds))
        except OverflowError:
            until = "9999-12-31T23:59:59Z"
        if rev.reversible_until != until:
            return f"reversible_until {rev.reversible_until}, not {until}"
    return None


def _raw_time(d: Any) -> datetime | None:
    """A decision's `evaluated_at` as a time, read without resolving anything (deferred
    times give their text without storing it: the decision's first reader is still to come)."""
    from policy_engine.models import DeferredTimes, _raw_dict

    if d is None:
        return None
    try:
        v = _raw_dict(d)["evaluated_at"]
        return _parse_ts(v.texts()[0] if isinstance(v, DeferredTimes) else v)
    except Exception:  # noqa: BLE001
        return None


# how often `runtime.gatejson.body_text` gave the recorded body's text for an accelerated
# decision ("text", compared with the reference's) or left it to the generic encoder ("none")
BODY_TEXT = {"text": 0, "none": 0}
_DAY = timedelta(hours=24)  # (the runtime's decision_ttl: only its text matters here)


def _runtime_now(at: Any) -> tuple[str, datetime]:
    """The `now` a runtime records with a decision made at `at` (`runtime.results._ts`), as
    text and as a time. (`_ts` writes year 1 as `1-01-01T...`: the text is the runtime's.)"""
    from policy_engine.runtime.results import _ts

    try:
        t = parse_ts(at, "`now`") if isinstance(at, str) else at
        if isinstance(t, datetime):
            t = t if t.tzinfo is not None else t.replace(tzinfo=UTC)
            return _ts(t), t
    except Exception:  # noqa: BLE001 - an unreadable `now`: any time will do, the same on both sides
        pass
    return "2026-03-02T14:30:00.123456Z", T0


def _envelope(d: Any, ctx: tuple) -> tuple:
    """What `runtime.executions.gate` gives `gatejson.body_text` for decision `d`: (the
    action's canonical text or None, the action as recorded, its problem or None, the
    `pending_until` text or None). `ctx`: (the action as the runtime holds it, the
    runtime's `now` as text and as a time)."""
    from policy_engine.ledger.canonical import canonical_text
    from policy_engine.ledger.errors import InvalidEntry
    from policy_engine.runtime.results import _ts

    a, _, now_dt = ctx
    try:
        text: str | None = canonical_text(a)
        rec, problem = a, None
    except InvalidEntry as e:
        text, rec, problem = None, repr(a)[:4096], str(e)
    try:
        pending = _ts(now_dt + _DAY) if d.effect == "require_approval" else None
    except OverflowError:  # (at 9999-12-31 the runtime itself could not set one)
        pending = "9999-12-31T23:59:59.999999Z"
    return text, rec, problem, pending


def body_fast(d: Any, ctx: tuple) -> str | None:
    """`runtime.gatejson.body_text` of the (accelerated) decision `d`, as the runtime's gate
    calls it (see `_envelope`), or None when it leaves the body to the generic encoder
    (counted in BODY_TEXT); its keys are checked against the body's (a wrong one is
    appended to the text, so the comparison fails). Any exception is `<raises ...>`."""
    from policy_engine.runtime.gatejson import body_text

    text, rec, problem, pending = _envelope(d, ctx)
    try:
        got = body_text(text, rec if problem else None, problem, d, ctx[1], pending)
    except Exception as e:  # noqa: BLE001 - the gate would crash: a mismatch
        BODY_TEXT["text"] += 1
        return f"<raises {type(e).__name__}: {e}>"
    BODY_TEXT["text" if got is not None else "none"] += 1
    if got is None:
        return None
    keys = {"action", "decision", "now", "policy_hash"} | ({"action_error"} if problem else set()) | (
        {"pending_until"} if pending is not None else set())
    return got[0] if set(got[1]) == keys and len(got[1]) == len(keys) else f"{got[0]} <keys {got[1]}>"


def body_reference(d: Any, ctx: tuple) -> str:
    """The canonical text of the same body built from decision `d` (the reference's) the
    way the gate builds it without gatejson, by `rfc8785.dumps` (not the package's own
    encoders); `<raises>` if refused."""
    import rfc8785

    _, rec, problem, pending = _envelope(d, ctx)
    body = {"action": rec, "decision": d.model_dump(mode="json"), "policy_hash": d.policy_hash, "now": ctx[1]}
    if problem:
        body["action_error"] = problem
    if pending is not None:
        body["pending_until"] = pending
    try:
        return rfc8785.dumps(body).decode("utf-8")
    except Exception:  # noqa: BLE001 - a lone surrogate, a big int...: body_text must not give text either
        return "<raises>"


def _read(d: Any, how: str, ctx: tuple | None = None) -> Any:
    """One way of reading a decision (what its first reader makes of deferred values).
    `ctx`: what "body" needs (see `_envelope`)."""
    if how == "to_json":
        return _json_or_exc(d.to_json)
    if how == "dump_json":
        return _json_or_exc(d.model_dump_json)
    if how == "digest":
        return d.action_digest
    if how == "evaluated_at":
        return d.evaluated_at
    if how == "reversibility":
        r = d.reversibility
        return None if r is None else _json_or_exc(r.model_dump_json)
    if how == "model_dump":
        return _json_or_exc(lambda: repr(d.model_dump(mode="json")))
    if how == "copy":
        return _json_or_exc(copy.copy(d).model_dump_json)
    if how == "deepcopy":
        return _json_or_exc(copy.deepcopy(d).model_dump_json)
    if how == "pickle":
        return _json_or_exc(pickle.loads(pickle.dumps(d)).model_dump_json)
    if how == "model_copy":
        return _json_or_exc(d.model_copy().to_json)
    if how == "repr":
        return _json_or_exc(lambda: repr(d))
    if how == "canonical":  # the ledger's canonical text (runtime.gatejson), from the template where it can
        from policy_engine.ledger.canonical import canonical_text
        from policy_engine.runtime.gatejson import decision_text

        def text() -> str:
            t = decision_text(d)
            return canonical_text(d.model_dump(mode="json")) if t is None else t

        return _json_or_exc(text)
    if how == "eq":  # == resolves both sides' deferred values
        return _json_or_exc(lambda: repr(d == d.model_copy()))
    if how == "body":  # the runtime's recorded body by runtime.gatejson.body_text (None: not by it)
        assert ctx is not None
        return body_fast(d, ctx)
    raise AssertionError(how)


def _timed_fields(eng: Engine) -> dict:
    """(workflow, type) -> {field: its declared type} of the top-level declared fields of
    kind timestamp, duration or map (of anything) of `eng`'s action types."""
    out = {}
    for w in eng.compiled.workflows.values():
        for a in w.actions.values():
            if a.fields is not None:
                fs = {f.name: f.type for f in a.fields.fields or () if f.type.kind in ("timestamp", "duration", "map")}
                if fs:
                    out[(w.name, a.name)] = fs
    return out


def _type_label(ft: Any) -> str:
    if ft.kind != "map":
        return ft.kind
    item = ft.item.kind if ft.item is not None else "any"
    return f"map of {'record' if item == 'object' else item}"


def _tally_sent(stats: dict, timed: dict, action: Any) -> None:
    """Count the declared timestamp, duration and map fields an action of such a type carries,
    by whether the value fits its declaration (`fieldtypes.value_problem`) or is refused."""
    from policy_engine.fieldtypes import value_problem

    if type(action) is not dict:
        return
    fs = timed.get((action.get("workflow"), action.get("type")))
    for f, ft in (fs or {}).items():
        if f in action:
            fits = value_problem(ft, action[f], "x") is None
            key = f"declared {_type_label(ft)} field sent: {'fits' if fits else 'refused'}"
            stats[key] = stats.get(key, 0) + 1


def _tally(stats: dict, d: Any, declared: frozenset = frozenset(), timed: Any = frozenset()) -> None:
    """Count how a decision was made (read before anything resolves it). `declared`: the
    (workflow, type) pairs that declare their fields; `timed`: those with a declared
    timestamp, duration or map field."""
    from policy_engine.models import DecisionJson, Deferred, _raw_dict

    fs = d.__pydantic_fields_set__
    raw = _raw_dict(d)
    keys = ["effect:" + str(raw.get("effect"))]
    if type(fs) is DecisionJson:
        keys.append("from a template at its now" if fs.base is not None else "from a template")
        deciding = raw.get("deciding")
        if (raw.get("workflow"), raw.get("action_type")) in declared and getattr(deciding, "kind", None) != "stopped":
            keys.append("declared type, by its fused function")
            if (raw.get("workflow"), raw.get("action_type")) in timed:
                keys.append("declared type with timestamp/duration/map fields, by its fused function")
    if isinstance(raw.get("evaluated_at"), Deferred):
        keys.append("times deferred")
    if isinstance(raw.get("action_digest"), Deferred):
        keys.append("digest deferred")
    for k in keys:
        stats[k] = stats.get(k, 0) + 1


def run_sequence(pol: Policy | str, steps: list[Step], engines: tuple[Engine, Engine] | None = None,
                 stop_at_first: bool = True, stats: dict | None = None,
                 tick: Callable[[], None] | None = None) -> list[Mismatch]:
    """Run `steps` on fresh engines of the policy (or `engines`), comparing every decision
    with the reference's; the mismatches (the first only, with `stop_at_first`). `stats`:
    a dict to count in how the accelerated engine's decisions were made. A step with
    `hold` has its decision read and compared only after that many more calls. `tick` is
    called before each step (a campaign's time check: what it raises ends the sequence)."""
    text = pol if isinstance(pol, str) else pol.text
    fast, ref = engines if engines is not None else build_engines(text)
    declared = frozenset() if isinstance(pol, str) else frozenset(
        (w, t) for w, ti, _ in pol.workflows for t, _, _, dcl, _ in ti if dcl)
    timed = _timed_fields(ref) if stats is not None else {}
    slots: dict[int, Any] = {}
    out: list[Mismatch] = []
    held: list = []  # (due step, the call's check) for decisions read later
    now_at = [0]  # the call being made (its index)

    def bad(i: int, what: str, got: Any, want: Any) -> bool:
        out.append(Mismatch(i, what, _short(got), _short(want), max(i, now_at[0])))
        return stop_at_first

    def reference(at: Any, st: Step) -> tuple[Any, str]:
        r = ref.evaluate(_wrap(copy.deepcopy(st.action), st.wrap), copy.deepcopy(st.state), at)
        return r, _json_or_exc(r.model_dump_json)

    def check(i: int, st: Step, d: Any, at: Any, bad_now: bool) -> bool:
        """Read the accelerated decision `d` of step `i` (in the step's order) and compare
        it with the reference's at `at`; True to stop."""
        from policy_engine.runtime.results import _plain

        plain = _plain(_wrap(copy.deepcopy(st.action), st.wrap))  # the action as a runtime records it
        now_s, now_dt = _runtime_now(at)
        ctx = (plain, now_s, now_dt)
        reads = [(how, _read(d, how, ctx)) for how in st.reads]
        got = _json_or_exc(d.model_dump_json)
        got_to = _json_or_exc(d.to_json)
        rd, want = reference(at, st)
        if bad_now:  # denied, at the clock's time: everything but the time compared
            got, got_to, want = _no_time(got), _no_time(got_to), _no_time(want)
            reads = [(how, _no_time(v) if isinstance(v, str) else v) for how, v in reads if how != "evaluated_at"]
        broken = laws(rd) or (time_law(rd, at) if not bad_now else None)
        if broken and bad(i, f"law (the REFERENCE decision): {broken}", want, "DESIGN.md"):
            return True
        later = f" (read {st.hold} calls later)" if st.hold else ""
        if got != want and bad(i, "model_dump_json" + later, got, want):
            return True
        if got_to != want and bad(i, "to_json" + later, got_to, want):
            return True
        rd_reads = {how: _no_time(_read(rd, how)) if bad_now else _read(rd, how) for how in st.reads if how != "body"}
        for how, v in reads:
            if how == "body":  # body_text's text (when it gave some) is the reference body's rfc8785 text
                if v is not None:
                    wb = _no_time(body_reference(rd, ctx)) if bad_now else body_reference(rd, ctx)
                    if v != wb and bad(i, f"read body (runtime.gatejson.body_text; reads {st.reads}){later}", v, wb):
                        return True
            elif how in ("to_json", "dump_json", "copy", "deepcopy", "pickle", "model_copy"):
                if v != want and bad(i, f"read {how} (reads {st.reads}){later}", v, want):
                    return True
            elif v != rd_reads[how] and bad(i, f"read {how} (reads {st.reads}){later}", v, rd_reads[how]):
                return True
        if not bad_now and not want.startswith("<raises"):  # == and hash agree with the bytes
            try:
                same = d == rd and hash(d) == hash(rd)
            except Exception as e:  # noqa: BLE001
                same = f"raises {type(e).__name__}"
            if same is not True and bad(i, "== or hash differs from the reference decision's" + later, same, True):
                return True
        if rd.effect == "require_approval":
            wd = action_digest(_as_gate_reads(_wrap(copy.deepcopy(st.action), st.wrap)))
            if rd.action_digest != wd and bad(i, "reference digest vs action_digest(copy)", rd.action_digest, wd):
                return True
        if st.ref_json:
            rj = _no_time(_json_or_exc(rd.to_json)) if bad_now else _json_or_exc(rd.to_json)
            if rj != want and bad(i, "reference to_json", rj, want):
                return True
        if "body" not in st.reads:  # the runtime's recorded body, every decision (after its other readers)
            gb = body_fast(d, ctx)
            if gb is not None:
                wb = body_reference(rd, ctx)
                if bad_now:
                    gb, wb = _no_time(gb), _no_time(wb)
                if gb != wb and bad(i, "read body (runtime.gatejson.body_text), after the other reads" + later, gb, wb):
                    return True
        return False

    for i, st in enumerate(steps):
        if tick is not None:
            tick()
        now_at[0] = i
        while held and held[0][0] <= i:  # decisions whose reading was put off until now
            _, args = held.pop(0)
            if check(*args):
                return out
        snap = st.action
        if timed:
            _tally_sent(stats, timed, snap)
        # the caller's object
        if st.slot is not None and type(snap) is dict and type(slots.get(st.slot)) is dict:
            obj = slots[st.slot]
            obj.clear()
            obj.update(copy.deepcopy(snap))
        else:
            obj = copy.deepcopy(snap)
            if st.slot is not None and type(obj) is dict:
                slots[st.slot] = obj
        arg = _wrap(obj, st.wrap)
        state = copy.deepcopy(st.state)
        now = st.now
        d = js = None
        before = datetime.now(UTC)
        try:
            if st.api in ("evaluate", "both"):
                d = fast.evaluate(arg, state, now)
            if st.api in ("json", "both"):
                js = fast.evaluate_json(arg, state, now)
        except Exception:  # noqa: BLE001 - evaluate never raises
            if bad(i, "the accelerated engine raised", traceback.format_exc(limit=4), "a decision"):
                return out
            continue
        after = datetime.now(UTC)
        bad_now = _bad_now(now)
        d_at = _raw_time(d)  # (read without resolving anything: the decision's first reader is to come)
        if now is None or bad_now:  # the clock's time: this call's, not one kept from another
            for what, when in (("evaluate", d_at), ("evaluate_json", _evaluated_at(js) if js else None)):
                if when is not None and not before <= when <= after and bad(
                        i, f"{what}: evaluated_at is not the clock's time during the call", str(when),
                        f"{before} .. {after}"):
                    return out
        if stats is not None and d is not None:
            _tally(stats, d, declared, timed)
        apply_mutation(obj, st.mutate)  # the caller changes its action afterwards
        if st.mutate and type(state) is dict:  # and its workflow state
            state["stopped_by"] = "changed"
            state["status"] = "running" if state.get("status") == "stopped" else "stopped"
        if d is not None:
            args = (i, st, d, d_at if now is None else now, bad_now)
            if st.hold:
                held.append((i + st.hold, args))
                held.sort(key=lambda h: h[0])
            elif check(*args):
                return out
        if js is not None:
            _, want = reference(_evaluated_at(js) if now is None else now, st)
            if bad_now:
                js, want = _no_time(js), _no_time(want)
            if js != want and bad(i, "evaluate_json", js, want):
                return out
    now_at[0] = len(steps) - 1
    for _, args in held:  # the rest, after the last call
        if check(*args):
            return out
    return out


def _short(v: Any, n: int = 1500) -> str:
    s = v if isinstance(v, str) else repr(v)
    return s if len(s) <= n else s[:n] + f"... ({len(s)} chars)"


# ================================================================================ counters


def shape_kinds(fz: Any) -> set:
    """What the fused function of `fz` (as built from its current shapes) specialises:
    "records" (a read field of one records shape: a list of flat objects of the same keys
    and value types), "nums" (a list of ints, floats or bools), "declared" (its declared
    fields checked inside), "any shape" (past its rebuilds: every plain type)."""
    from policy_engine.engine.accel import declared as _declared

    out = set()
    if fz.action.fields is not None and _declared.ENABLED:
        out.add("declared")
    if fz.shapes is None:
        out.add("any shape")
        return out
    for k, seen in fz.shapes.items():
        if fz.reads is None or k not in fz.reads or not seen or len(seen) != 1:
            continue
        (t,) = seen
        if type(t) is tuple and t[0] == "list" and type(t[1]) is tuple:
            out.add("records")
        elif type(t) is tuple and t[0] == "list" and t[1] in (int, float, bool):
            out.add("nums")
    return out


class lane_counts:
    """Within a `with`, count in `counts` what the accelerators' lanes do: decisions the
    undeclared-type and stopped-workflow lanes answered (by effect) or left to the
    reference, and the fused functions built, by what they specialise (`shape_kinds`)."""

    def __init__(self, counts: dict) -> None:
        self.counts = counts

    def __enter__(self):
        from policy_engine.engine.accel.stopped import StoppedLane
        from policy_engine.engine.accel.undeclared import UndeclaredLane

        c = self.counts
        self.old = [(UndeclaredLane, "decide", UndeclaredLane.decide), (StoppedLane, "decide", StoppedLane.decide),
                    (_fused.FusedGate, "build", _fused.FusedGate.build)]

        def lane(name: str, real: Any) -> Any:
            def decide(self: Any, *a: Any, **k: Any) -> Any:
                d = real(self, *a, **k)
                key = f"{name} lane: " + ("left to the reference" if d is None else "answered " + d.__dict__["effect"])
                c[key] = c.get(key, 0) + 1
                return d

            return decide

        real_build = _fused.FusedGate.build

        def build(fz: Any) -> None:
            real_build(fz)
            if fz.fn is not None:
                for key in ["fused built", *(f"fused built with {k}" for k in sorted(shape_kinds(fz)))]:
                    c[key] = c.get(key, 0) + 1

        UndeclaredLane.decide = lane("undeclared", UndeclaredLane.decide)
        StoppedLane.decide = lane("stopped", StoppedLane.decide)
        _fused.FusedGate.build = build
        return self

    def __exit__(self, *exc):
        for cls, name, real in self.old:
            setattr(cls, name, real)
        return False


# ================================================================================ caches


_TINY = ((_api, "INLINED_KEPT", 2), (_templates, "NOW_CACHE_MAX", 2), (_templates, "PER_NOW_MAX", 2),
         (_templates, "SEEN_MAX", 3),
         (_templates, "PATTERNS_MAX", 3), (_templates, "FAULTS_MAX", 2), (_faults, "FAULTS_MAX", 2),
         (_faults, "MEMO_MAX", 3), (_stopped, "_MAX", 2), (_undeclared, "_MAX", 2), (_fused, "REBUILDS_MAX", 2),
         (_fused, "FUSE_AFTER", 1))


class tiny_caches:
    """Every bounded cache of the accelerators made tiny (emptied, refused, rebuilt often),
    for the duration of a `with` (engines built inside it)."""

    def __enter__(self):
        self.old = [(m, k, getattr(m, k)) for m, k, _ in _TINY]
        for m, k, v in _TINY:
            setattr(m, k, v)
        return self

    def __exit__(self, *exc):
        for m, k, v in self.old:
            setattr(m, k, v)
        return False


# ================================================================================ shrinking


def _still_fails(text: str, steps: list[Step], tiny: bool) -> list[Mismatch]:
    try:
        if tiny:
            with tiny_caches():
                return run_sequence(text, steps)
        return run_sequence(text, steps)
    except Exception:  # noqa: BLE001 - the policy no longer loads: not a reproducer
        return []


def shrink(text: str, steps: list[Step], tiny: bool = False, budget: int = 400,
           until: Callable[[], bool] | None = None) -> tuple[str, list[Step], list[Mismatch]]:
    """A shorter sequence (and policy text) that still mismatches: steps after the first
    mismatch dropped, then chunks of steps, then single steps, then the policy's rule and
    trigger lines, then each step's edits, reads and odd details. At most `budget`
    replays, and none once `until()` is true (a campaign's time spent): what it has then."""
    first = _still_fails(text, steps, tiny)
    if not first:
        return text, steps, []
    steps = steps[: max(first[0].step, first[0].seen_at) + 1]
    tries = [0]

    def fails(t: str, s: list[Step]) -> list[Mismatch]:
        tries[0] += 1
        if tries[0] > budget or (until is not None and until()):
            return []
        return _still_fails(t, s, tiny)

    # steps: ddmin-like chunks, then single steps
    chunk = max(1, len(steps) // 2)
    while chunk >= 1:
        i = 0
        while i < len(steps) - 1:
            cand = steps[:i] + steps[i + chunk:]
            if cand and (cand[-1] is steps[-1]) and fails(text, cand):
                steps = cand
            else:
                i += chunk
        chunk //= 2
    # the policy text: drop rule lines, stop blocks, whole action blocks
    lines = text.splitlines(keepends=True)
    changed = True
    while changed:
        changed = False
        i = 0
        while i < len(lines):
            ln = lines[i].strip()
            j = None
            if ln.startswith(("allow", "deny", "require_approval", "receipt", "runs_while_stopped", "reversible",
                              "irreversible", "affects", "notify", "rollback \"")):
                j = i + 1
            elif ln.startswith(("stop ", "action ", "fields {")):
                depth = 0
                for k in range(i, len(lines)):
                    depth += lines[k].count("{") - lines[k].count("}")
                    if depth == 0:
                        j = k + 1
                        break
            if j is not None:
                cand = "".join(lines[:i] + lines[j:])
                if fails(cand, steps):
                    lines = lines[:i] + lines[j:]
                    text = cand
                    changed = True
                    continue
            i += 1
    # each step's details
    for k, st in enumerate(steps):
        for attr, simpler in (("mutate", []), ("reads", ("to_json",)), ("reads", ()), ("api", "evaluate"),
                              ("api", "json"), ("slot", None), ("wrap", "dict"), ("ref_json", False),
                              ("hold", 0), ("state", None)):
            if getattr(st, attr) == simpler:
                continue
            cand_step = copy.copy(st)
            setattr(cand_step, attr, simpler)
            cand = steps[:k] + [cand_step] + steps[k + 1:]
            if fails(text, cand):
                steps = cand
                st = cand_step
        if type(st.action) is dict:
            for f in list(st.action):
                a2 = dict(st.action)
                del a2[f]
                cand_step = copy.copy(st)
                cand_step.action = a2
                cand = steps[:k] + [cand_step] + steps[k + 1:]
                if fails(text, cand):
                    steps = cand
                    st = cand_step
    return text, steps, _still_fails(text, steps, tiny)


# ================================================================================ reproducers


def py(v: Any) -> str:
    """A Python expression for `v` (NaN, infinities, subclasses, datetimes included)."""
    if isinstance(v, float) and type(v) is float:
        if math.isnan(v):
            return 'float("nan")'
        if math.isinf(v):
            return 'float("inf")' if v > 0 else 'float("-inf")'
        return repr(v)
    if type(v) is S:
        return f"S({str.__repr__(v)})"
    if type(v) is I:
        return f"I({int.__repr__(v)})"
    if type(v) is F:
        return f"F({float.__repr__(v)})"
    if type(v) is str and len(v) > 200 and len(set(v)) == 1:
        return f"{v[0]!r} * {len(v)}"
    if type(v) is dict:
        return "{" + ", ".join(f"{py(k)}: {py(x)}" for k, x in v.items()) + "}"
    if type(v) is list:
        if len(v) > 50 and all(x == v[0] for x in v):
            return f"[{py(v[0])}] * {len(v)}"
        if len(v) == 1 and type(v[0]) is list:
            depth, x = 0, v
            while type(x) is list and len(x) == 1:
                depth, x = depth + 1, x[0]
            if depth > 10:
                return f"nest({py(x)}, {depth})"
        return "[" + ", ".join(py(x) for x in v) + "]"
    if type(v) is tuple:
        return "(" + "".join(py(x) + ", " for x in v) + ")"
    if isinstance(v, datetime):
        tz = v.tzinfo
        base = (f"{'DT' if type(v) is DT else 'datetime'}({v.year}, {v.month}, {v.day}, {v.hour}, {v.minute}, "
                f"{v.second}, {v.microsecond}")
        if v.fold:
            base += ", fold=1"
        if tz is None:
            return base + ")"
        if tz is UTC:
            return base + ", tzinfo=UTC)"
        if isinstance(tz, timezone):
            off = int(tz.utcoffset(None).total_seconds())
            name = tz.tzname(None)
            named = "" if name == str(timezone(timedelta(seconds=off))) else f", {name!r}"
            return base + f", tzinfo=timezone(timedelta(seconds={off}){named}))"
        return base + f", tzinfo=ZoneInfo({str(tz)!r}))"
    if isinstance(v, timedelta):
        cls = "TD" if type(v) is TD else "timedelta"
        return f"{cls}(days={v.days}, seconds={v.seconds}, microseconds={v.microseconds})"
    if type(v) is date:
        return f"date({v.year}, {v.month}, {v.day})"
    if isinstance(v, WorkflowState):
        return f"WorkflowState(**{py(v.model_dump())})"
    return repr(v)


def nest(x: Any, depth: int) -> Any:
    for _ in range(depth):
        x = [x]
    return x


def repro_text(text: str, steps: list[Step], mism: list[Mismatch], name: str = "test_repro",
               tiny: bool = False) -> str:
    """A pytest test replaying `steps` on the policy `text` (uses tests/fuzz/diffgen)."""
    lines = [f"def {name}():", f"    text = {text!r}", "    steps = ["]
    for st in steps:
        lines.append(f"        Step({py(st.action)}, {py(st.state)}, {py(st.now)}, api={st.api!r}, slot={st.slot!r},"
                     f" wrap={st.wrap!r}, mutate={py(st.mutate)}, reads={st.reads!r}, ref_json={st.ref_json!r},"
                     f" hold={st.hold!r}),")
    lines.append("    ]")
    if tiny:
        lines.append("    with tiny_caches():")
        lines.append("        assert run_sequence(text, steps) == []")
    else:
        lines.append("    assert run_sequence(text, steps) == []")
    body = "\n".join(lines)
    return "# " + "\n# ".join(str(m) for m in mism).replace("\n", "\n# ") + "\n" + body + "\n"
