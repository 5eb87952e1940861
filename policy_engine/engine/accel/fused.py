"""Fused gates: one generated function per action type evaluating every condition of the
type's gate at once (see `cel.fuse`), built from the compiled policy by the engine's
accelerator (`Accelerator`), never stored inside the compiled policy."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ...cel import CompiledExpr, fuse
from ...cel.fuse import _FUSE_MAX, defer_fast_paths
from ...compiled import CAction, CWorkflow
from ...lark_cache import collector_paused
from . import declared
from . import native as _native
from .declared import declared_lines
from .faults import absent_key, fields_only
from .shapes import NO_EXTRA, frozen_copy, lane_prologue, shape_of, unread, widen
from .templates import lane_epilogue

__all__ = ["FusedGate", "fused_gate", "FUSE_AFTER", "REBUILDS_MAX", "ISOLATE"]

FUSE_AFTER = 3  # build a type's fused gate function on its third evaluation (not at load)
REBUILDS_MAX = 8  # a fused gate function is rebuilt wider at most this often, then for every type
LIVE_PARAM = "_p4"  # the fused function's fifth parameter (see `FusedGate.generate`): `now` is the clock's
EAGER_PARAM = "_p5"  # its sixth: the decision's JSON is written at once (a digest computed now)
_BUILT = threading.Lock()  # a build's last stores (see `FusedGate.build`)
# each condition of a fused gate function under its own `try` (see `cel.fuse`, `faults`);
# False: one that raises turns the whole input away to the reference gate (read per build)
ISOLATE = True


class FusedGate:
    """The fast lane of one action type's gate; filled lazily, safe to share between threads.

    `fn` (once built, see `build`, `cel.fuse`) evaluates every condition of the type's gate
    that is not a constant `false` in one generated function, into a bit mask (bit `i` for
    `exprs[i]`), and returns the finished decision for that mask from the caches below,
    or the mask itself when they lack it; `slots[j]` maps gate entry `j` to its bit, or
    None for a constant `false`. A given mask always makes the same decision apart from the
    input's id and the time, so `patterns` keeps, per mask, the finished fields of that
    decision (`templates.template` fills it). `now` caches, for the last
    few `now`s seen, the time's renderings and the finished templates at that time (see
    `templates.now_fields`): `now_full` maps now -> {None: (evaluated_at, reversibility),
    mask: fields}, and `now` maps a key (`templates.now_key`) to one (now, entry) with that
    key, the lookup that needs no hash; `now_id` maps the id of each `now` an entry was made
    at to (now, entry) (the same `now` passed again: a fixed time, a batch's; the first
    lookup); `seen` and `seen_full` remember the `now`s seen once (a second sighting gets an
    entry, see `templates.seen_before`).

    `shapes` maps each field the type reads to the shapes it has been seen with (the
    evaluations before the build, and every input the function turned away since): the
    function is specialised for them (see `shapes.lane_prologue`). An input of another
    shape raises `ShapeMiss` inside it; the reference gate decides that input, and
    `missed` widens `shapes` and builds the function again, at most `REBUILDS_MAX` times,
    after which it takes every plain type. Which function runs changes only the speed:
    every one of them returns exactly what the reference gate decides, or raises.

    Every write is a single attribute or dict-item store of a complete, immutable value:
    a thread sees either the old or the new value, and both are correct.
    """

    __slots__ = ("action", "exprs", "slots", "reads", "fn", "source", "pending", "patterns", "now", "now_full",
                 "now_id", "seen", "seen_full", "shapes", "rebuilds", "running", "policy", "wname", "full", "faults",
                 "alone", "absent", "memo", "extra", "quiet")

    def __init__(self, exprs: tuple, slots: tuple, reads: tuple | None) -> None:
        self.action: Any = None  # its CAction (set by `fused_gate`)
        self.exprs = exprs
        self.slots = slots
        self.reads = reads  # the action fields its conditions read (see CAction.reads)
        self.fn: Callable | None = None
        self.source: str | None = None
        self.pending = FUSE_AFTER
        self.patterns: dict = {}
        self.now: dict = {}
        self.now_full: dict = {}
        self.now_id: dict = {}
        self.seen: dict = {}
        self.seen_full: dict = {}
        self.shapes: dict | None = {}  # None: every plain type (no more specialising)
        self.rebuilds = 0
        self.running: Any = None  # the workflow's running state and policy constants (set with `action`)
        self.policy: Any = None
        self.wname: str | None = None  # the workflow's name (set with `action`)
        # faults (see `faults`): a mask at least `full` has fault bits, conditions evaluated
        # alone; `faults` keeps the templates of outcomes with errors (see `faults.fault_key`);
        # `alone[i]`: the action fields condition i reads when it reads nothing else (its
        # value is then one per their values, kept in `memo`, see `faults.memo_key`), else None
        self.full = 1 << len(exprs)
        self.faults: dict = {}
        self.alone: tuple = tuple(fields_only(e) for e in exprs)
        self.absent: tuple = tuple(absent_key(f) for f in self.alone)  # (the key's tail with them all absent)
        self.memo: dict = {}
        # the fields of its actions no condition reads, by name (see `shapes.unread`): what a
        # require_approval decision's frozen copy checks (see `shapes.frozen_copy`)
        self.extra: frozenset | None = NO_EXTRA  # (one shared empty set: a set is a tracked object)
        # False: what its builds make stays in the collector's walks; else (an engine whose
        # objects are out of them, `native.quiet`) a weak reference to its `Accelerator`,
        # which keeps the `Quiet` of its last build (`build`, `keep_quiet`): held by this
        # object, that Quiet would hold it (its function's globals do) in a cycle the
        # collector cannot see, and the engine's objects would never be freed
        self.quiet: Any = False

    def observe(self, action: dict) -> bool:
        """Add the types of `action`'s read fields to `shapes`; True if that widened them."""
        old = self.shapes
        if old is None:
            return False
        self.extra = unread(action, self.reads, ("workflow", "type"), self.extra)  # (never a reason to build)
        new = dict(old)
        for k, t in shape_of(action, self.reads).items():
            seen = new.get(k)
            if seen is None or t not in seen:
                new[k] = widen(seen, t)
        if new == old:
            return False
        self.shapes = new
        return True

    def missed(self, action: dict) -> None:
        """`fn` turned `action` away for its shape: widen and rebuild (bounded). Never raises."""
        try:
            if self.observe(action):
                self.rebuilds += 1
                if self.rebuilds > REBUILDS_MAX:
                    self.shapes = None
                self.build()
        except Exception:  # noqa: BLE001 - only the speed is at stake; keep the old function
            pass

    def build(self) -> None:
        """Generate `fn(action, now, workflow_state=<running>, policy=<constants>, live=False,
        eager=False)` (`live`: `now` is the clock's, never cached; `eager`: a require_approval
        decision's digest computed at once, see `templates.lane_epilogue`): the input check of the fields
        the type reads (see `shapes.lane_prologue`), every condition (see `cel.fuse`), then
        the decision from the caches (see `templates.lane_epilogue`): it returns the whole
        `Decision`, or the mask when a cache lacks its entry, or raises."""
        acc = self.quiet() if self.quiet is not False else None
        with collector_paused():  # thousands of closures and a large code object, all kept
            before = _native.young() if acc is not None else None
            fn, source = self.generate(True)
            # what it made, and the decision fragments of its type, out of the collector's
            # walks while the function lives (a rebuild's Quiet takes them over; racing
            # builds: either Quiet, each holding what its build made)
            q = _native.made((fn,), before, self.caches(), self.fragments(self.shapes)) if acc is not None else None
        with _BUILT:  # (racing builds: the function and the Quiet of the same one)
            self.pending = 0
            self.source = source
            if q is not None and acc is not None:
                acc.quiets[self] = q
            self.fn = fn

    def caches(self) -> tuple:
        """Its caches, which a build's `Quiet` leaves (their entries come and go)."""
        return (self.patterns, self.now, self.now_full, self.now_id, self.seen, self.seen_full, self.faults,
                self.memo)

    def fragments(self, *more: Any) -> list:
        """The decision fragments its type's gate entries have built (`compiled._Fragments`:
        kept by the compiled policy for its life, immutable), and `more`."""
        out = [x for e in self.action.gate for x in (e[-1]._ref, e[-1]._trace_true, e[-1]._trace_false)
               if x is not None]
        out += [x for x in more if x is not None]
        return out

    def keep_quiet(self) -> None:
        """The decision fragments built since its last build out of the collector's walks
        too (`templates`, after a template is made)."""
        acc = self.quiet() if self.quiet is not False else None
        q = acc.quiets.get(self) if acc is not None else None
        if q is not None:
            try:
                q.add(self.fragments())
            except Exception:  # noqa: BLE001 - (a MemoryError): they stay in the walks
                pass

    def generate(self, decide: bool = True) -> tuple[Callable | None, str | None]:
        """(function, source), built from the current `shapes`; with `decide` False it
        always returns the mask (the benchmark's "fused gate only" line, tests)."""
        if not all(isinstance(e, CompiledExpr) for e in self.exprs):
            return None, None
        # every caller has matched the action's workflow and type to these names
        ca = self.action
        shapes = self.shapes  # (read once: the prologue and the frozen copy of the same shapes)
        skip = (("workflow", ca.workflow), ("type", ca.name))
        prologue, ns, fields, known = lane_prologue(self.reads, skip, shapes)
        if ca.fields is not None and declared.ENABLED:  # its declared fields, unrolled (see `declared`)
            lines, ns_d = declared_lines(ca.fields, shapes, self.reads)
            prologue = prologue + lines
            ns = {**ns, **ns_d}
        epilogue: list = []
        ns = {**ns, "_RUNNING": self.running, "_POLICY": self.policy}
        if decide:
            epilogue, ns2 = lane_epilogue(fields, self, live=LIVE_PARAM, eager=EAGER_PARAM,
                                          frozen=frozen_copy(self.reads, skip, shapes, self.extra))
            ns.update(ns2)
        # `fn(action, now, workflow=<running>, policy=<constants>, live=False, eager=False)`;
        # `live` (True: `now` is the clock's) and `eager` (True: a digest computed now, see
        # `templates.lane_epilogue`) are no activation variables: no condition can read them
        # each condition isolated: one that raises sets its fault bit (see `cel.fuse`), and
        # the caller evaluates it alone (`faults.resolve`); the others keep their values
        return fuse(self.exprs, ("action", "workflow", "now", "policy", "<live>", "<eager>"), prologue, ns, fields,
                    known, dicts=("action",), epilogue=epilogue,
                    defaults={"workflow": "_RUNNING", "policy": "_POLICY", "<live>": "False", "<eager>": "False"},
                    isolate=ISOLATE)


def fused_gate(wf: CWorkflow, ca: CAction) -> FusedGate:
    """A new (unbuilt) fused gate for action type `ca` of workflow `wf`: a bit per gate
    entry that is not a constant `false`, in the order of `ca.gate`."""
    exprs: list = []
    slots: list = []
    for call, *_, item in ca.gate:
        if call is None:
            slots.append(None)
        else:
            slots.append(1 << len(exprs))
            exprs.append(item.fn)
    if len(exprs) > _FUSE_MAX:  # the fused function first: see `defer_fast_paths`
        defer_fast_paths(exprs, FUSE_AFTER + 2)
    fz = FusedGate(tuple(exprs), tuple(slots), ca.reads)
    fz.action = ca
    fz.running = wf.running_state  # what the fused gate function takes by default
    fz.policy = wf.policy
    fz.wname = wf.name
    return fz
