"""Fused gates: one generated function evaluating several conditions over one activation
(used by the engine's fused gates). Part of the fast path: each condition's generator comes
from codegen.py; a condition without one is called as itself.

Large sets of conditions are laid out in parts (see ``fuse``): chunks of at most
``_FUSE_MAX`` conditions in helper functions, and conditions indexed by a str field
they compare with constants (``action.tool == "x" && ...``) behind a dict lookup, so
only the conditions that can be ``true`` for the field's value run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .codegen import generator_of
from .emit import _FAST_GLOBALS, _FAST_MAX_LIST, _Gen

if TYPE_CHECKING:
    from .api import CompiledExpr

_FUSE_MAX = 256  # conditions generated into one Python function (more: in chunks)
_INDEX_MIN_CONDITIONS = 64  # conditions a set needs before it is indexed at all
_INDEX_MIN_GUARDED = 16  # conditions guarded by one field to make that field an index
_BIT_INLINE = 1024  # a bit below this is a literal in the source, above a bound name
_LOCAL = re.compile(r"\b_(?:p\d+|r\d+|f\d+(?:_\d+)?)\b")  # the locals a part may read


def _index(guards: Sequence[Any], fields: Mapping, n: int) -> dict[str, list[int]]:
    """field -> the conditions indexed by it: those whose guard (see
    ``codegen.field_guard``) names a field the prologue has proved a str (present), when
    enough conditions share it; each condition under one field at most."""
    if n < _INDEX_MIN_CONDITIONS:
        return {}
    count: dict[str, int] = {}
    for g in guards:
        if g is not None:
            f = fields.get(("action", g[0]))
            if f is not None and f[1] == "str" and not f[2]:
                count[g[0]] = count.get(g[0], 0) + 1
    chosen = sorted((f for f, c in count.items() if c >= _INDEX_MIN_GUARDED), key=lambda f: (-count[f], f))
    out: dict[str, list[int]] = {f: [] for f in chosen}
    for i, g in enumerate(guards):
        if g is not None and g[0] in out:
            out[g[0]].append(i)
    return out


_BUDGET_CHECK = re.compile(r"if _it > (\d+): _fb\(\)")
_IT = re.compile(r"\b_it\b")


def _fold_budget(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """One condition's statements without its iteration budget count when the count can
    never pass the budget: every macro adds at most `_FAST_MAX_LIST` (its list is refused
    above that, just before), so k macros none of which sits inside another's loop (each
    runs at most once) add at most k * `_FAST_MAX_LIST`; when that is within every budget
    checked, no check can fail and `_it` is read nowhere else. Otherwise `lines` as is."""
    adds = 0
    budgets = []
    loops: list[int] = []  # the indentations of the enclosing `for` statements
    for ind, text in lines:
        while loops and ind <= loops[-1]:
            loops.pop()
        if text.startswith("_it += "):
            if loops:
                return lines
            adds += 1
        elif _BUDGET_CHECK.fullmatch(text):
            budgets.append(int(text[len("if _it > "):-len(": _fb()")]))
        elif _IT.search(text):
            return lines  # read some other way: keep it
        if text.startswith(("for ", "while ")):
            loops.append(ind)
    if not budgets or adds * _FAST_MAX_LIST > min(budgets):
        return lines
    return [(ind, text) for ind, text in lines if not (text.startswith("_it += ") or _BUDGET_CHECK.fullmatch(text))]


_SHARED: dict = {}  # the constant sets of fused functions, by value (see `_shared`)
_SHARED_MAX = 512  # (process-wide and never emptied: at most this many kept for the host)


def _shared(v: Any) -> Any:
    """`v`, or for a set of str constants (`x in ["a", "b"]`), the first equal one the fused
    functions made: one object per distinct set, where a stop trigger's set is in every
    fused function of its workflow's types (a warm 1,000-rule engine held 232, 35
    distinct: issue 16, goal 5). Sets of str alone: equal means the same elements (not so
    for `{1}` and `{True}`). Bounded."""
    if type(v) is not frozenset or not all(type(x) is str for x in v):
        return v
    return _SHARED.setdefault(v, v) if len(_SHARED) < _SHARED_MAX else _SHARED.get(v, v)


def defer_fast_paths(exprs: Sequence[Any], evaluations: int) -> None:
    """Let each condition of `exprs` build its own fast path only after `evaluations` more
    evaluations of its own (the results are the same either way). For a large set that
    will be fused: its conditions are then evaluated one by one only before the fused
    function exists and when it turns an input away, and building thousands of fast
    paths it never uses cost seconds."""
    for ex in exprs:
        pending = getattr(ex, "_pending", -1)
        if pending > 0:
            ex._pending = max(pending, evaluations)


def _may_lack(ex: CompiledExpr, fields: Mapping, known: Mapping | None = None) -> bool:
    """Whether condition `ex` may read a value the activation lacks: a field of a variable
    the prologue has not proved present (`fields`: its third item False), the workflow
    state, a whole variable, or reads unknown. Only those are isolated: a `try` costs a
    bytecode dispatch per condition even when nothing raises (about 1 us for 1,000
    conditions), and one of the others that raises still turns the whole input away. A
    field every caller matched (`known`: the action's workflow and type) is present."""
    reads = getattr(ex, "reads", None)
    if not reads:
        return True
    for read in reads:
        root, key = read
        if root == "policy" or root == "now":  # the policy's constants, a datetime: never absent
            continue
        if known and read in known:
            continue
        f = fields.get(read) if key is not None else None
        if f is None or f[2]:
            return True
    return False


def fuse(exprs: Sequence[CompiledExpr], params: Sequence[str], prologue: Sequence[str] = (),
         ns: Mapping[str, Any] | None = None,
         fields: Mapping[tuple[str, ...], tuple[str, str | None, bool]] | None = None,
         known: Mapping[tuple[str, str], str] | None = None,
         dicts: Sequence[str] = (), epilogue: Sequence[str] = (),
         defaults: Mapping[str, str] | None = None, isolate: bool = False) -> tuple[Callable | None, str | None]:
    """One generated function evaluating several conditions over the same activation.

    ``fused(*values)`` takes the activation's values in the order of ``params`` (its
    names, e.g. ``("action", "workflow", "now", "policy")``) and returns an int whose bit
    ``i`` is set when ``exprs[i]`` is ``true`` and clear when it is ``false``. Anything
    else (a condition erring or not returning a bool, any unusual input the fast paths
    guard against) raises, and the caller evaluates the conditions one by one: so when
    ``fused`` returns, every bit is exactly the value ``exprs[i](activation)`` has.

    The body is each condition's fast path (see ``_Gen``) in turn, sharing the prologue
    (free variables are the parameters, checked once) and one namespace; a condition
    outside the fast-path subset is called as itself. ``prologue`` lines run first (the
    parameters are ``_p0``, ``_p1``...; they may raise, with the same meaning), with the
    names of ``ns`` as globals. ``fields`` maps (variable, field) to (a local the prologue
    has set to that field's value, or to ``_MISS`` (in ``ns``) when the field is absent;
    the kind the prologue has proved the value has, or None; whether it may be ``_MISS``):
    the conditions read the local instead (absent: as a missing key, they raise, see
    ``isolate``) and
    drop the type tests the kind makes needless. A key (variable, field, key) is the
    same for a key of a field the prologue has proved an object with exactly the keys
    it lists. ``known`` maps (variable, field) to the
    ``repr`` of the str every caller guarantees the field holds (the action's own type).
    ``dicts`` names the parameters every caller passes as a dict. ``epilogue`` lines run
    after the conditions, with the mask in ``_m``; they may return something else (the
    caller's contract). ``defaults`` maps parameters to the names (in ``ns``) of their
    default values: those come last in the signature, in the order of ``params``.
    (None, None) if generation fails.

    The conditions the function inlines are told so once it is made
    (``CompiledExpr._inline``): their compiled trees are dropped (about 14 objects a
    condition that every full collection of the host walks, issue 16, goal 5), read again
    only by the next fused function built over the condition (the engine's fused gates
    rebuild at most ``REBUILDS_MAX`` times) or its own fast path, which compile it again,
    about 0.1 ms a condition; and their closures and own fast paths, needed only for the
    inputs the function turns away, are kept for the last ``api.INLINED_KEPT`` inlined
    conditions to need them (about 14 objects a condition), unless the function inlines
    more than that (see ``CompiledExpr``).

    ``isolate``: each condition's statements run under their own ``try``: one that raises
    (a missing key, an error, a type its fast path does not decide) sets its *fault bit*
    ``1 << (n + i)`` (n = ``len(exprs)``) instead of making the whole function raise, and
    the others keep their bits. The mask then has bit ``i`` set when ``exprs[i]`` is
    ``true``, its fault bit when the caller must evaluate it alone (its value is then
    anything: ``true``, ``false``, an error), and neither when it is ``false``; the
    epilogue sees the whole mask (a mask ``>= 1 << n`` has faults). Only the conditions
    raise per condition: the prologue still raises for the whole function; and only the
    conditions that may read an absent value are isolated (``_may_lack``): any other one
    that raises still makes the whole function raise, as without ``isolate``.

    Large sets: with more than ``_FUSE_MAX`` conditions, they run in helper functions
    of at most that many each, called in turn with the prologue's locals. And a field
    the prologue has proved a str (present) that many conditions compare with str
    constants first (``codegen.field_guard``: ``action.f == "v" && ...``, ``action.f in
    [...]``) indexes them: the helpers of each constant sit in a dict, and only those of
    the field's value run; every other one of these conditions is ``false`` with no
    error (``&&`` stops at its first ``false`` operand), so its bit is clear, exactly.
    """
    try:
        pnames = {name: f"_p{i}" for i, name in enumerate(params)}
        em = _Gen(0)
        em.fields = dict(fields or {})
        em.items = {f[0]: f[3] for f in em.fields.values()  # type: ignore[misc]
                    if len(f) > 3 and f[3] is not None}  # (var, kind, maybe absent, kind of its items)
        em.known = dict(known or {})
        pieces: list[list[str]] = []  # per condition: its statements, setting its bit in `_m`
        acts: list[bool] = []  # per condition: whether it reads `_act` (called as itself)
        guards: list[Any] = []
        bits: dict[str, int] = {}  # bound names of the bits past _BIT_INLINE
        for i, ex in enumerate(exprs):
            bit = str(1 << i) if i < _BIT_INLINE else f"_b{i}"
            if i >= _BIT_INLINE:
                bits[bit] = 1 << i
            g = generator_of(ex)
            em.lines, em.ind, em.loops = [], 0, False
            if g is None:
                e, kind = f"{em.bind(ex)}(_act)", None
                guards.append(None)
            else:
                e, kind = g(em)
                guards.append(getattr(g, "field_guard", None))
            acts.append(g is None)
            body: list[str] = []
            lines = em.lines
            if em.loops:
                lines = _fold_budget(lines)
                if any(_IT.search(text) for _, text in lines):
                    body.append("_it = 0")  # the iteration budget is per condition
            body += ["    " * ind + text for ind, text in lines]
            if kind == "bool":
                body += [f"if {e}:", f"    _m |= {bit}"]
            else:
                body += [f"_v = {e}", "if _v is True:", f"    _m |= {bit}", "elif _v is not False:", "    _fb()"]
            if isolate and _may_lack(ex, em.fields, em.known):  # its own try: raising sets its fault bit (see the doc)
                j = len(exprs) + i
                fault = str(1 << j) if j < _BIT_INLINE else f"_b{j}"
                if j >= _BIT_INLINE:
                    bits[fault] = 1 << j
                body = ["try:"] + ["    " + line for line in body] + ["except _EXC:", f"    _m |= {fault}"]
            pieces.append(body)
        act_line = "_act = {" + ", ".join(f"{n!r}: {v}" for n, v in pnames.items()) + "}"

        def block(idx: Sequence[int]) -> list[str]:
            """The statements of conditions `idx`, `_act` built once if one needs it."""
            out: list[str] = []
            made = False
            for i in idx:
                if acts[i] and not made:
                    out.append(act_line)  # the activation, for the conditions called as such
                    made = True
                out += pieces[i]
            return out

        index = _index(guards, em.fields, len(exprs))
        indexed = {i for idx in index.values() for i in idx}
        rest = [i for i in range(len(exprs)) if i not in indexed]
        main: list[str] = []  # the body of `fused` after its prologue
        helpers: list[tuple[str, list[str]]] = []  # (name, body) of the helper functions
        tables: list[str] = []  # the index dicts, after the helpers

        def chunks(idx: list[int], prefix: str) -> list[str]:
            names = []
            for k in range(0, len(idx), _FUSE_MAX):
                name = f"{prefix}_{k // _FUSE_MAX}"
                helpers.append((name, block(idx[k:k + _FUSE_MAX])))
                names.append(name)
            return names

        if len(rest) <= _FUSE_MAX:
            main += block(rest)
        else:
            for name in chunks(rest, "_c"):
                main.append(f"_m |= {name}(@ARGS)")
        for j, (fname, idx) in enumerate(index.items()):
            by_value: dict[str, list[int]] = {}
            for i in idx:
                for v in sorted(guards[i][1]):
                    by_value.setdefault(v, []).append(i)
            entries = []
            for vi, (v, members) in enumerate(sorted(by_value.items())):
                entries.append(f"{v!r}: ({', '.join(chunks(members, f'_x{j}_{vi}'))},)")
            tables.append(f"_X{j} = {{{', '.join(entries)}}}")
            var = em.fields[("action", fname)][0]
            main += [f"_h = _X{j}.get({var})", "if _h is not None:", "    for _hf in _h:",
                     "        _m |= _hf(@ARGS)"]
        defaults = dict(defaults or {})
        sig = [p for n, p in pnames.items() if n not in defaults]
        sig += [f"{p}={defaults[n]}" for n, p in pnames.items() if n in defaults]
        out = [f"def fused({', '.join(sig)}):"]
        text = "\n".join(main + [line for _, b in helpers for line in b] + list(epilogue))
        used = set(re.findall(r"\b_r\d+\b", text))
        for name, (var, as_dict) in em.roots.items():
            p = pnames.get(name)
            if p is None:  # a name the activation does not have: no fused function
                return None, None
            if var not in used and not (as_dict and name not in dicts):
                continue  # read only through the prologue's locals
            out.append(f"    {var} = {p}")
            if as_dict and name not in dicts:
                out.append(f"    if type({var}) is not dict: _fb()")
        out += ["    " + line for line in prologue]
        out.append("    _m = 0")
        if helpers:
            # the locals the helpers read, passed in: parameters, roots, field locals
            defined = set(pnames.values()) | {v for v, _ in em.roots.values()} | {
                f[0] for f in em.fields.values()}
            args = ", ".join(sorted(defined & set(_LOCAL.findall("\n".join(
                line for _, b in helpers for line in b)))))
            main = [line.replace("@ARGS", args) for line in main]
        out += ["    " + line for line in main]
        out += ["    " + line for line in epilogue]
        out.append("    return _m")
        for name, b in helpers:
            out.append(f"def {name}({args}):")
            out.append("    _m = 0")
            out += ["    " + line for line in b]
            out.append("    return _m")
        out += tables
        src = "\n".join(out) + "\n"
        glob: dict[str, Any] = {"__builtins__": {}}
        glob.update(_FAST_GLOBALS)
        glob.update(ns or {})
        glob.update({k: _shared(v) for k, v in em.ns.items()})
        glob.update(bits)
        if isolate:
            glob["_EXC"] = Exception
        exec(compile(src, "<cel-fused>", "exec"), glob)  # noqa: S102 - generated, see _Gen
        together = acts.count(False)
        for ex, called in zip(exprs, acts):
            if not called:  # inlined: its tree is not read again until another build
                inline = getattr(ex, "_inline", None)
                if inline is not None:
                    inline(together)
        return glob["fused"], src
    except Exception:  # too large for Python's compiler, etc.: no fused function
        return None, None
