"""CEL conditions compiled into Python closures (the reference), with a generated fast path.

The package, stage by stage (each module imports only the ones before it):

    errors, limits, values      CelError/CelCompileError, Limits, CEL values and their operations
    optional                    optional values: their functions, the `.?`/`[?` syntax
    datetimes, regex, conversions, strings, mathext, format, builtins
                                the standard functions and the extensions (cel-go ext.Strings/Math/Network)
    parse                       cel-python's grammar through Lark; syntax errors; spans; literals
    nodes, compile              the reference compiler: parse tree -> closures (operators.py and
    operators, macros           macros.py are parts of it); the meaning of a condition
    analysis                    type guards and read sets, read from the compiled tree
    emit, codegen, fuse         the fast path: Python source generated from the compiled tree,
                                and the engine's fused gates; switched off by accelerate=False
    api                         compile_cel, CompiledExpr, to_cel_json

Only this package imports celpy and re2, and only lazily (importing it loads neither, nor lark).
"""

from __future__ import annotations

from .api import CompiledExpr, compile_cel, to_cel_json
from .compile import Reference
from .errors import CelCompileError, CelError
from .fuse import _FUSE_MAX, fuse
from .limits import DEFAULT_LIMITS, Limits
from .parse import _fast_parser, _parse
from .regex import REGEX_MAX_COST, _found, _re2_compile_raw
from .values import CelCIDR, CelIP, CelOptional, CelType, CelUint

__all__ = [
    "CelError",
    "CelCompileError",
    "CelType",
    "CelUint",
    "CelIP",
    "CelCIDR",
    "CelOptional",
    "CompiledExpr",
    "DEFAULT_LIMITS",
    "Limits",
    "Reference",
    "compile_cel",
    "to_cel_json",
    # used by the engine's accelerators (policy_engine.engine.accel)
    "fuse",
]

# Kept importable from the package (the engine, the docs and benchmarks name them here):
# REGEX_MAX_COST, _FUSE_MAX, _found, _re2_compile_raw, _parse, _fast_parser.
_COMPAT = (REGEX_MAX_COST, _FUSE_MAX, _found, _re2_compile_raw, _parse, _fast_parser)
