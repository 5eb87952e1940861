"""Fused gates: one generated function evaluating several conditions over one activation
(used by the engine's fused gates). Part of the fast path: each condition's generator comes
from codegen.py; a condition without one is called as itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .codegen import generator_of
from .emit import _FAST_GLOBALS, _Gen

if TYPE_CHECKING:  # (api builds on the fast path; fuse only reads what it made)
    from .api import CompiledExpr

_FUSE_MAX = 256  # conditions per fused function


def fuse(exprs: Sequence[CompiledExpr], params: Sequence[str], prologue: Sequence[str] = (),
         ns: Mapping[str, Any] | None = None,
         fields: Mapping[tuple[str, ...], tuple[str, str | None, bool]] | None = None,
         known: Mapping[tuple[str, str], str] | None = None,
         dicts: Sequence[str] = (), epilogue: Sequence[str] = (),
         defaults: Mapping[str, str] | None = None) -> tuple[Callable | None, str | None]:
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
    the conditions read the local instead (absent: as a missing key, they raise) and
    drop the type tests the kind makes needless. A key (variable, field, key) is the
    same for a key of a field the prologue has proved an object with exactly the keys
    it lists. ``known`` maps (variable, field) to the
    ``repr`` of the str every caller guarantees the field holds (the action's own type).
    ``dicts`` names the parameters every caller passes as a dict. ``epilogue`` lines run
    after the conditions, with the mask in ``_m``; they may return something else (the
    caller's contract). ``defaults`` maps parameters to the names (in ``ns``) of their
    default values: those come last in the signature, in the order of ``params``.
    (None, None) if generation fails.
    """
    if len(exprs) > _FUSE_MAX:
        return None, None
    try:
        pnames = {name: f"_p{i}" for i, name in enumerate(params)}
        em = _Gen(0)
        em.fields = dict(fields or {})
        em.known = dict(known or {})
        body: list[str] = []
        act = None
        for i, ex in enumerate(exprs):
            bit = 1 << i
            g = generator_of(ex)
            em.lines, em.ind, em.loops = [], 0, False
            if g is None:
                if act is None:  # the activation, built once, for the conditions called as such
                    act = "_act"
                    body.append("_act = {" + ", ".join(f"{n!r}: {v}" for n, v in pnames.items()) + "}")
                e, kind = f"{em.bind(ex)}(_act)", None
            else:
                e, kind = g(em)
            if em.loops:
                body.append("_it = 0")  # the iteration budget is per condition
            body += ["    " * ind + text for ind, text in em.lines]
            if kind == "bool":
                body += [f"if {e}:", f"    _m |= {bit}"]
            else:
                body += [f"_v = {e}", "if _v is True:", f"    _m |= {bit}", "elif _v is not False:", "    _fb()"]
        defaults = dict(defaults or {})
        sig = [p for n, p in pnames.items() if n not in defaults]
        sig += [f"{p}={defaults[n]}" for n, p in pnames.items() if n in defaults]
        out = [f"def fused({', '.join(sig)}):"]
        used = set(re.findall(r"\b_r\d+\b", "\n".join(body + list(epilogue))))
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
        out += ["    " + line for line in body]
        out += ["    " + line for line in epilogue]
        out.append("    return _m")
        src = "\n".join(out) + "\n"
        glob: dict[str, Any] = {"__builtins__": {}}
        glob.update(_FAST_GLOBALS)
        glob.update(ns or {})
        glob.update(em.ns)
        exec(compile(src, "<cel-fused>", "exec"), glob)  # noqa: S102 - generated, see _Gen
        return glob["fused"], src
    except Exception:  # too large for Python's compiler, etc.: no fused function
        return None, None

