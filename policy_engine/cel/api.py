"""The public entry points: ``compile_cel`` -> ``CompiledExpr`` (call it with an activation),
and ``to_cel_json`` (a CEL value rendered for JSON).

``CompiledExpr.__call__`` evaluates the reference closures (compile.py); unless compiled with
``accelerate=False`` it first tries the generated fast path (codegen.py, built on the second
evaluation), which returns only when its value is exactly the closures'.

A loaded engine's expressions are *released* (``CompiledExpr._release``): they keep what
compiles them again exactly, and compile their closures and tree on first need (issue 16,
goal 5: the objects every full collection of the host walks). An expression a fused
function inlines (``CompiledExpr._inline``) keeps its closures and own fast path only
while it is among the last ``INLINED_KEPT`` such expressions to need them (``_keep``),
and for good once needed again after that.
"""

from __future__ import annotations

import base64
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from .analysis import read_set, type_guard
from .codegen import _FAST_WARMUP, _build_fast, generator_of, plan
from .compile import Reference, _Compiler
from .conversions import _to_string
from .datetimes import _format_duration, _format_timestamp
from .errors import CelCompileError, CelError, _Fail, _to_error
from .limits import DEFAULT_LIMITS, Limits
from .nodes import _N
from .parse import _bracket_depth, _parse
from .values import CelType, CelUint

_UNBUILT: Any = object()  # `_plan` of a released expression (see `CompiledExpr._tree`)

# The inlined expressions (see ``CompiledExpr._inline``) that hold their closures or own
# fast path, oldest first (id -> expression); past ``INLINED_KEPT`` the oldest drops them.
# (Strong references: at most this many expressions outlive an engine dropped by its host.)
INLINED_KEPT = 64
_kept: OrderedDict[int, CompiledExpr] = OrderedDict()
_kept_lock = threading.Lock()


def _keep(ex: CompiledExpr) -> None:
    """Note that inlined `ex` holds its closures or fast path now (the newest), and let the
    oldest beyond ``INLINED_KEPT`` drop theirs (``CompiledExpr._evict``)."""
    with _kept_lock:
        k = id(ex)
        if k in _kept:
            _kept.move_to_end(k)
        else:
            _kept[k] = ex
            while len(_kept) > INLINED_KEPT:
                _kept.popitem(last=False)[1]._evict()


class CompiledExpr:
    """A compiled CEL expression. Call it with an activation (a mapping of names).

    A loaded engine keeps its conditions *released* (``_release``, called by
    ``compiler.compile_policy``): only what rebuilds them exactly (the source, the
    constants, the limits, whether it is accelerated) and what its readers need without
    evaluating (``type_guard``, ``reads``). The closure tree (``_fn``) and the compiled
    tree the fast paths are generated from (``_plan``) are compiled again on first need
    (the first call, the first fast path or fused gate built, ``references``), then kept.
    For 1,000 rules that is about 30,000 fewer objects for every full collection of the
    host to walk (issue 16, goal 5). The same source, constants and limits compile to the
    same closures (compiling is deterministic), and they compiled once without error.

    Once a fused function inlines the expression (``_inline``, by ``fuse.fuse``), it is
    evaluated on its own only when that function turns an input away (an error, an
    unusual input: the engine's reference gate decides it), so its closures and its own
    fast path are a cache: kept while it is among the last ``INLINED_KEPT`` inlined
    expressions to need them (``_keep``, process-wide), dropped beyond (``_evict``). Needed
    again after that, they are compiled again and kept for good: its inputs do come back
    to the reference gate, and compiling costs about 0.15 ms where keeping costs about
    14 objects. A 1,000-rule engine after one action of every type three times (every
    fused gate built) keeps closures for 64 of its ~1,100 conditions, not all (about
    14,000 objects fewer); a host whose inputs keep coming back to the reference gate
    gets theirs back, each compiled once more. A fused function that inlines more than
    ``INLINED_KEPT`` conditions leaves their closures alone: one input it turned away
    would compile them all again.

    Thread safety: each materialized value is stored in one attribute store of a complete
    value; two threads materializing at once each get a correct value, and either store
    wins (they are equivalent). Every reader reads an attribute once, into a local, so
    dropping a value (``_evict``, ``_release``) never disturbs a caller already using it.
    """

    __slots__ = ("source", "_refs", "limits", "type_guard", "reads", "_fn", "_nslots",
                 "_needs_ctx", "_fast", "_fast_source", "_plan", "_pending", "_constants", "_accel",
                 "_keep_tree", "_cache")

    def __init__(
        self, source: str, references: tuple[Reference, ...], limits: Limits,
        fn: Callable, nslots: int, needs_ctx: bool, plan: _N | None = None,
        type_guard: frozenset[str] | None = None, reads: tuple[tuple[str, str | None], ...] = (),
        constants: Mapping[str, Any] | None = None,
    ) -> None:
        self.source = source
        # What the expression reads of its free variables: (variable, top-level field), the
        # field None when it may use the variable as a whole (`size(action)`,
        # `action["k"]`, `action.exists(..)`, passing it to a function...).
        self.reads = reads
        # The action types for which this condition can be anything but `false`, when the
        # condition says so itself: its first `&&` operand (or every `||` operand) is
        # `action.type == "t"` or `action.type in ["t", ...]`. With `action.type` a string
        # naming another type, the condition is `false`, with no error and nothing else
        # evaluated. None: not known (any type).
        self.type_guard = type_guard
        # The fast path (codegen.py) is built from the compiled tree, lazily: ``_plan`` is the
        # tree (its generator is made from it at each build, ``codegen.generator_of``, not
        # kept); None with ``accelerate=False`` or outside the subset; ``_UNBUILT`` when
        # released (see ``_tree``).
        self._plan = plan
        self._accel = plan is not None  # whether it has a tree (``_plan``) at all
        self._keep_tree = True  # whether a tree compiled again is kept (see ``_drop_tree``)
        # what happens to the closures and fast path once built: 0 kept; 1 a cache entry
        # (inlined, see ``_inline``); 2 kept (compiled again after a cache eviction)
        self._cache = 0
        self._refs: tuple[Reference, ...] | None = references  # None when released
        self.limits = limits
        self._constants = constants  # compile_cel's (what a release compiles again with)
        self._fn: Callable | None = fn  # None when released (see ``_closures``)
        self._nslots = nslots
        self._needs_ctx = needs_ctx
        self._fast: Callable | None = None  # generated ``fast(a)`` (see _Gen), once built
        self._fast_source: str | None = None
        # evaluations left before the fast path is built; -1: built or tried (or accelerate=False)
        self._pending = _FAST_WARMUP if plan is not None else -1

    def __call__(self, activation: Mapping[str, Any]) -> Any:
        """Evaluate. Returns the value, or a ``CelError``; never raises."""
        fast = self._fast
        if fast is not None:
            try:
                return fast(activation)
            except Exception:  # anything unusual: the closures decide, exactly
                pass
        elif self._pending > 0:
            self._pending -= 1
            if self._pending <= 0:
                self._fast_fn()
        fn = self._fn
        if fn is None:
            fn = self._closures()
        try:
            if self._needs_ctx:
                return fn(activation, [0] * self._nslots)
            return fn(activation, None)
        except _Fail as ex:
            return ex.err
        except Exception as ex:  # a Python error in an unusual input: still an error value
            return _to_error(ex)

    def _fast_fn(self) -> Callable | None:
        """The generated fast path, built now if it was not yet; None outside the subset."""
        if self._pending >= 0:  # not tried yet (another thread may see none meanwhile: harmless)
            self._pending = -1
            gen = generator_of(self)
            if gen is not None:
                fast, self._fast_source = _build_fast(gen, self.limits)
                self._fast = fast
                if self._cache == 1 and fast is not None:
                    _keep(self)
                return fast
        return self._fast

    def _slow(self, activation: Mapping[str, Any]) -> Any:
        """The closures alone (the reference the fast path is tested against)."""
        fn = self._fn
        if fn is None:
            fn = self._closures()
        return self._run(fn, activation)

    def _once(self, activation: Mapping[str, Any]) -> Any:
        """``_slow``, without keeping closures it does not hold: released or evicted, it
        compiles them for this evaluation alone, exactly as ``_materialize`` does (for a
        value the caller keeps: the engine's fused gates, ``engine.accel.faults``)."""
        fn = self._fn
        if fn is None:
            fn = _recompile(self.source, self.limits, self._constants)[1].fn
        return self._run(fn, activation)

    def _run(self, fn: Callable, activation: Mapping[str, Any]) -> Any:
        """The value of this expression's closure tree `fn` on `activation`: any failure is
        its CEL error value."""
        try:
            if self._needs_ctx:
                return fn(activation, [0] * self._nslots)
            return fn(activation, None)
        except _Fail as ex:
            return ex.err
        except Exception as ex:
            return _to_error(ex)

    # -- released / materialized ------------------------------------------

    @property
    def references(self) -> tuple[Reference, ...]:
        """The identifiers and select chains it reads, with their offsets in ``source``."""
        refs = self._refs
        if refs is None:
            refs = self._refs = tuple(_recompile(self.source, self.limits, self._constants)[0].refs)
        return refs

    def _closures(self) -> Callable:
        """The closure tree (``_fn``), compiled again if released."""
        fn = self._fn
        if fn is None:
            fn = self._materialize(True).fn
        return fn

    def _tree(self) -> _N | None:
        """What the fast paths are generated from (``_plan``), compiled again if released
        or dropped; None with ``accelerate=False`` or outside the subset (see
        ``codegen.plan``)."""
        p = self._plan
        if p is _UNBUILT:
            p = plan(self._materialize(False))
        return p

    def _materialize(self, closures: bool) -> _N:
        """Compile the source again, exactly as ``compile_cel`` did; keep the closures if
        released (unless inlined and only the tree is wanted: ``closures`` False), and
        the tree if released and not dropped since (``_drop_tree``). Each is one
        attribute store of a complete value. Never raises: the same inputs compiled
        without error before (see ``_recompile``)."""
        _, node = _recompile(self.source, self.limits, self._constants)
        if self._fn is None and (closures or self._cache == 0):
            self._fn = node.fn
            if self._cache == 1:
                _keep(self)
        if self._keep_tree and self._plan is _UNBUILT:
            self._plan = plan(node)
        return node

    def _release(self) -> None:
        """Drop what ``_materialize`` rebuilds (the closures, the tree, the references).
        Only for an expression ``compile_cel`` made (it knows the constants it was compiled
        with); safe while other threads evaluate it (they read each attribute once).
        Called by ``compiler.compile_policy`` for every condition of a loaded engine."""
        self._refs = None
        if self._accel:
            self._plan = _UNBUILT
        self._fn = None

    def _drop_tree(self) -> None:
        """Drop the compiled tree and no longer keep one (the closures stay): its tree
        is then read again only to build another fused function or the condition's own
        fast path; compiled again then (about 0.1 ms), not kept."""
        if self._accel:
            self._keep_tree = False
            self._plan = _UNBUILT

    def _inline(self, together: int = 1) -> None:
        """Called by ``fuse.fuse`` for each condition a fused function it made inlines
        (``together`` of them): drop the tree (``_drop_tree``), and if ``together`` is at
        most ``INLINED_KEPT`` (and it was not evicted before), keep the closures and the
        own fast path from now on only while among the last ``INLINED_KEPT`` inlined
        expressions to need them (see the class doc); those it holds now count as needed
        now."""
        self._drop_tree()
        if together <= INLINED_KEPT and self._cache == 0:
            self._cache = 1
        if self._cache == 1 and (self._fn is not None or self._fast is not None):
            _keep(self)

    def _evict(self) -> None:
        """Drop the closures and the own fast path (``_keep``: no longer among the last
        ``INLINED_KEPT``); both are built again on next need, exactly as before (the fast
        path after ``_FAST_WARMUP`` more evaluations), and then kept. Safe while other
        threads evaluate it: they read each attribute once (a thread calling a dropped
        function finishes with it)."""
        self._cache = 2
        self._fast = None
        self._fast_source = None
        self._pending = _FAST_WARMUP if self._accel else -1
        self._fn = None

    def __repr__(self) -> str:
        return f"CompiledExpr({self.source!r})"


def _compile_tree(source: str, limits: Limits, constants: Mapping[str, Any] | None) -> tuple[_Compiler, _N]:
    """Parse and compile checked source text (the length and nesting checks done)."""
    try:
        tree = _parse(source)
        comp = _Compiler(source, limits, constants)
        node = comp.c(tree)
        exact = comp.exact
    except CelCompileError:
        exact = True
    if exact:
        # The tree without positions takes a subtree's span from its first and last
        # kept token; a dropped `)` or leading `.` would shift it. Errors and the rare
        # `.name` are compiled again from the tree with positions, exactly.
        tree = _parse(source, exact=True)
        comp = _Compiler(source, limits, constants)
        node = comp.c(tree)
    return comp, node


def _recompile(source: str, limits: Limits, constants: Mapping[str, Any] | None) -> tuple[_Compiler, _N]:
    """``_compile_tree`` of a source that compiled before. Its only input that can differ
    from the first time is the caller's stack: a deeply nested condition that fit in the
    recursion limit at load time could pass it when materialized deep in a host's stack,
    so a RecursionError compiles it again in a fresh thread (an empty Python stack)."""
    try:
        return _compile_tree(source, limits, constants)
    except RecursionError:
        pass
    out: list = []
    err: list = []

    def run() -> None:
        try:
            out.append(_compile_tree(source, limits, constants))
        except BaseException as ex:  # noqa: BLE001 - re-raised in the caller's thread
            err.append(ex)

    t = threading.Thread(target=run, name="stopline-cel-recompile", daemon=True)
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]


def compile_cel(
    source: str, *, limits: Limits = DEFAULT_LIMITS, constants: Mapping[str, Any] | None = None,
    accelerate: bool = True,
) -> CompiledExpr:
    """Compile CEL source text. Raises ``CelCompileError`` (offsets into ``source``).

    ``constants`` maps root names to values known at compile time (the policy's
    ``policy`` constants): a reference chain that resolves fully inside them is folded
    into a literal; one that does not is looked up in the activation at run time. The
    expression keeps a reference to ``constants`` (to compile itself again when
    released: see ``CompiledExpr``): do not mutate it afterwards.

    ``accelerate=False``: evaluate with the reference closures only; no Python source is
    generated for this expression, ever (nor by ``fuse``, which then calls it as itself).
    Results are identical either way (tests/test_cel_fastpath.py checks it).
    """
    if not isinstance(source, str):
        raise CelCompileError("CEL source must be a string", 0, 0)
    if len(source) > limits.max_expression_length:
        raise CelCompileError(
            f"expression is {len(source)} characters long, more than the limit of "
            f"{limits.max_expression_length}",
            limits.max_expression_length, len(source), "split the condition into smaller rules",
        )
    if not source.strip():
        raise CelCompileError("empty expression", 0, len(source))
    deep = _bracket_depth(source, limits.max_nesting_depth)
    if deep is not None:
        off, _ = deep
        raise CelCompileError(
            f"expression nested more than {limits.max_nesting_depth} levels deep",
            off, off + 1, "simplify the expression",
        )
    try:
        comp, node = _compile_tree(source, limits, constants)
    except RecursionError:
        raise CelCompileError(
            "expression is too deeply nested", 0, len(source), "simplify the expression"
        ) from None
    return CompiledExpr(source, tuple(comp.refs), limits, node.fn, comp.nslots, comp.needs_ctx,
                        plan(node) if accelerate else None,  # the one hook into the fast path
                        type_guard(node), read_set(comp.refs, comp.has_fields), constants)


def to_cel_json(value: Any) -> Any:
    """Render a CEL result for JSON: RFC 3339 timestamps, "1.5s" durations, base64 bytes."""
    t = type(value)
    if value is None or t is bool or t is str or t is int:
        return value
    if t is CelUint:
        return int(value)
    if t is float:
        if value != value:
            return "NaN"
        if value in (math.inf, -math.inf):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if t is bytes or t is bytearray:
        return base64.b64encode(bytes(value)).decode("ascii")
    if t is datetime:
        return _format_timestamp(value)
    if t is timedelta:
        return _format_duration(value)
    if t is CelType:
        return value.name
    if t is CelError:
        return {"error": value.message, "budget": value.budget} if value.budget else {"error": value.message}
    if isinstance(value, Mapping):
        return {
            (k if type(k) is str else ("true" if k else "false") if type(k) is bool else to_cel_json(_to_string(k))): (
                to_cel_json(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [to_cel_json(v) for v in value]
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return to_cel_json(float(value))
    return str(value)
