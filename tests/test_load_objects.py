"""What a loaded policy keeps for the cyclic collector (issue 16, goal 5): the compiled
conditions' functions made by the CEL compiler (compile.py, operators.py, nodes.py) take
what they use as default arguments, not closure cells (a cell is one more object every
full collection walks; a defaults tuple of strings is untracked after the first
collection). Structural, no timing: such a function reachable from a compiled condition
has no closure."""

from __future__ import annotations

import gc
import types

from policy_engine.cel import compile as cel_compile
from policy_engine.cel import compile_cel
from policy_engine.cel import nodes as cel_nodes
from policy_engine.cel import operators as cel_operators

CONDITIONS = [
    "action.amount > 100 && action.customer.tier == 'gold'",
    "action.a.b.c == 'x' || size(action.items) > 3",
    "action.tool in ['a', 'b'] && action.body.contains('secret')",
    "action.items.exists(i, i.price > 10 && i.sku.startsWith('x'))",
    "request.user == original.owner",
    "action.x",
    "action.n != 3 && action.m <= 2.5 && action.k >= 1 && action.j < 7 && action.s != 'x' && action.b == true",
    "action.v == action.w || !(action.q in action.list) || action.z == null",
]
FILES = {cel_compile.__file__, cel_operators.__file__, cel_nodes.__file__}


def functions_of(expr) -> list[types.FunctionType]:
    """Every Python function reachable from the compiled expression (objects the collector
    tracks, breadth first, not through modules, classes or code objects)."""
    seen: set[int] = set()
    out = []
    stack = [expr]
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, (type, types.ModuleType, types.CodeType)):
            continue
        seen.add(id(o))
        if isinstance(o, types.FunctionType):
            out.append(o)
            stack.extend(o.__defaults__ or ())
            stack.extend(c.cell_contents for c in (o.__closure__ or ()) if _full(c))
            continue
        if gc.is_tracked(o) or isinstance(o, tuple):
            stack.extend(gc.get_referents(o))
    return out


def _full(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def test_compiled_functions_have_no_cells():
    names = set()
    for src in CONDITIONS:
        fns = [f for f in functions_of(compile_cel(src)) if f.__code__.co_filename in FILES]
        for f in fns:
            names.add(f.__name__)
            assert not f.__closure__, f"{f.__qualname__} keeps closure cells"
    # the common templates were reached: variable chains, logic, calls
    assert {"ident2", "two", "size", "eqs", "eqn", "fn", "fn_strs", "fn_any", "<lambda>"} <= names, names



def test_released_conditions_keep_no_functions_and_compile_again_without_cells():
    # a loaded engine's conditions are released (compiler.compile_policy): nothing of the
    # closure tree is reachable until first needed; compiled again, the same templates
    for src in CONDITIONS:
        e = compile_cel(src)
        eager = sorted(f.__qualname__ for f in functions_of(e))
        e._release()
        assert not functions_of(e), src
        e._closures()
        e._tree()
        again = functions_of(e)
        assert sorted(f.__qualname__ for f in again) == eager, src
        assert not any(f.__closure__ for f in again if f.__code__.co_filename in FILES)
