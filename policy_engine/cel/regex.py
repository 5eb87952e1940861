"""Regular expressions for CEL's `matches`: RE2 (linear time), with a cost budget.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from ..limits import REGEX_MAX_COST
from .errors import _BudgetFail, _Fail
from .values import _no_overload

# ---------------------------------------------------------------------------
# Regular expressions (RE2: linear time)
# ---------------------------------------------------------------------------


def _re2_compile_raw(pattern: str) -> Any:
    import re2

    opts = re2.Options()
    opts.max_mem = 8 << 20
    opts.never_capture = True  # `matches` needs no groups; 10k nested groups made one search take seconds
    opts.log_errors = False  # hostile patterns must not flood stderr
    return re2.compile(pattern, opts)


def _found(rx: Any) -> Callable[[str], bool]:
    """``rx.search(s) is not None`` for a str ``s``, the same RE2 call without the
    wrapper's generator and match object (3 us -> 0.5 us a search): what
    ``re2._Regexp.search`` does for a whole str is encode it as UTF-8 and run
    ``Match(UNANCHORED, text, 0, len(text))``; no match is the span (-1, -1). That wrapper
    is google-re2's own Python code, so it is checked once per pattern on probes, and
    if anything differs (another google-re2) the public ``search`` is used."""
    search = rx.search
    try:
        import re2

        match = rx._regexp.Match
        anchor = re2._Anchor.UNANCHORED
        null = re2._NULL_SPAN

        def found(s: str) -> bool:
            b = s.encode("utf-8")  # (a lone surrogate raises here, as in the wrapper)
            return match(anchor, b, 0, len(b))[0] != null

        for probe in ("", "a", "0", "-", " \u00e9\n", rx.pattern):
            if found(probe) is not (search(probe) is not None):
                raise ValueError(probe)
        return found
    except Exception:  # noqa: BLE001 - keep the public API
        return lambda s: search(s) is not None


# RE2 is linear in the text, but when its DFA cache overflows it falls back to an NFA
# whose cost is len(text) * program size: 'a' * 20000 over 100k characters takes ~1 s.
# Above this product (REGEX_MAX_COST, policy_engine.limits) a match is a budget error
# (fails closed); ~0.5 s worst case.


def _regex_cost_check(s: str, rx: Any) -> None:
    if len(s) * rx.programsize > REGEX_MAX_COST:
        raise _BudgetFail(f"regular expression match too costly ({len(s)} characters x program size "
                          f"{rx.programsize} > {REGEX_MAX_COST})", "max_regex_cost")


@lru_cache(maxsize=256)  # bounded; lru_cache is thread-safe
def _re2_cached(pattern: str) -> Any:
    try:
        rx = _re2_compile_raw(pattern)
        return rx, _found(rx)
    except Exception as ex:  # re2.error and friends
        return _Fail(f"invalid regular expression {pattern!r}: {ex}")


def _regex(pattern: Any) -> Any:
    """(the compiled pattern, its search as a bool function)."""
    if type(pattern) is not str:
        raise _no_overload("matches", pattern)
    r = _re2_cached(pattern)
    if isinstance(r, _Fail):
        raise _Fail(r.err.message)
    return r


def _matches(s: Any, pattern: Any) -> bool:
    if type(s) is not str:
        raise _no_overload("matches", s, pattern)
    rx, found = _regex(pattern)
    _regex_cost_check(s, rx)
    return found(s)


