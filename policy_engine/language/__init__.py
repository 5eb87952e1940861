"""The policy language front end: files -> parse tree -> IR -> a checked PolicySet.

    parser   Lark LALR with positions; syntax errors with recovery (the grammar is
             policy_engine.grammar, grammar/stopline.lark in a checkout)
    lower    parse tree -> IR (ir: the frozen pydantic policy model); structural problems
    check    names, scopes, lints; compiles every condition once (policy_engine.cel)
    acknowledge  `# stopline: acknowledge W202 -- reason` comments: the warnings they accept
    loader   files and directories -> LoadResult (policy set, diagnostics, sources, content hash)
    fmt      the canonical formatter (`stopline fmt`), checked by a re-parse

Only these modules (and cel/parse.py, CEL's own parser) import lark; lower and parser load it
when first used through the loader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .loader import (
    LoadResult,
    UsageError,
    decode_source,
    discover,
    find_files,
    load_paths,
    load_sources,
    load_text,
    read_source,
    require_ok,
)

__all__ = [
    "LoadResult", "UsageError", "decode_source", "discover", "find_files", "load_paths", "load_sources",
    "load_text", "read_source", "require_ok",
    "FormatError", "FormatResult", "format_path", "format_source", "format_text", "unified_diff",
]

if TYPE_CHECKING:
    from .fmt import FormatError, FormatResult, format_path, format_source, format_text, unified_diff

# the formatter's names are imported when first asked for (PEP 562): loading a policy never
# formats, and a fresh process's load does not compile fmt.py (issue 16, goal 5)
_FMT_NAMES = frozenset({"FormatError", "FormatResult", "format_path", "format_source", "format_text", "unified_diff"})


def __getattr__(name: str) -> Any:
    if name in _FMT_NAMES:
        from . import fmt

        return getattr(fmt, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
