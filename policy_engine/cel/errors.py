"""CEL errors: ``CelError`` (a value an evaluation returns), ``CelCompileError`` (raised by
``compile_cel``), and the private exceptions that carry an error through the closures.

Inside the closures a CEL error travels as ``_Fail`` (free on the happy path in CPython 3.11);
``&&``, ``||``, ``?:`` and the ``all``/``exists`` macros absorb it where CEL says so (a
``_BudgetFail`` never), and ``CompiledExpr.__call__`` turns whatever is left into a
``CelError`` value. A leaf of the package: it imports nothing of it.
"""

from __future__ import annotations

__all__ = ["CelError", "CelCompileError"]


class CelError:
    """A CEL evaluation error, returned as a value (never raised out of evaluation).

    ``budget`` names the exceeded limit (``"max_iterations"``, ``"max_size"``,
    ``"max_nesting_depth"``) when the error is a budget error, else ``None``.
    """

    __slots__ = ("message", "budget")

    def __init__(self, message: str, budget: str | None = None) -> None:
        self.message = message
        self.budget = budget

    def __repr__(self) -> str:
        if self.budget:
            return f"CelError({self.message!r}, budget={self.budget!r})"
        return f"CelError({self.message!r})"

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is CelError
            and other.message == self.message
            and other.budget == self.budget
        )

    def __hash__(self) -> int:
        return hash((self.message, self.budget))


class CelCompileError(Exception):
    """A CEL syntax or limit error. ``offset``/``end`` index into the CEL source."""

    def __init__(self, message: str, offset: int, end: int, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.end = end
        self.hint = hint

    def __repr__(self) -> str:
        return f"CelCompileError({self.message!r}, offset={self.offset}, end={self.end}, hint={self.hint!r})"



# ---------------------------------------------------------------------------
# Internal error signalling
# ---------------------------------------------------------------------------


class _Fail(Exception):
    """Carries a CelError through the closures. Never escapes ``CompiledExpr.__call__``."""

    __slots__ = ("err",)

    def __init__(self, message: str, budget: str | None = None) -> None:
        self.err = CelError(message, budget)


class _BudgetFail(_Fail):
    """A budget error: never absorbed by ``&&``, ``||`` or the macros."""


def _to_error(ex: BaseException) -> CelError:
    if isinstance(ex, _Fail):
        return ex.err
    if isinstance(ex, RecursionError):
        return CelError("expression too deeply nested for evaluation", "max_nesting_depth")
    if isinstance(ex, (OverflowError,)):
        return CelError("range error: " + str(ex))
    return CelError(f"no such overload ({type(ex).__name__}: {ex})")


def _absorbable(ex: BaseException) -> bool:
    return not isinstance(ex, (_BudgetFail, RecursionError))

