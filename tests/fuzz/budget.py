"""A fuzz campaign's time budget (`--seconds`), checked on every input, not between rounds.

A round of a campaign is hundreds of inputs (a hypothesis run of `max_examples`, a
differential sequence of up to 1000 calls): checked only between rounds, `--seconds 5`
ran for a minute. The campaigns call `Budget.check()` before each input; once the time
is spent it raises `TimeUp`, a BaseException, so that hypothesis neither reports it as a
failure nor shrinks it, and the campaign ends its round there. Not a test module.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TimeUp(BaseException):
    """The campaign's time is spent (raised by `Budget.check`, caught by the campaign)."""


class Budget:
    """`seconds` from now on `clock` (a test passes a fake clock)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.start = clock()
        self.end = self.start + seconds

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        return self.end - self.clock()

    def spent(self) -> bool:
        return self.clock() >= self.end

    def check(self) -> None:
        """Raise TimeUp once the time is spent."""
        if self.clock() >= self.end:
            raise TimeUp


class Failures:
    """The failing inputs a campaign's property saw, kept by its wrapper, so a failure
    found in a round the time limit cuts short (hypothesis still shrinking it) is
    reported, not lost with the round."""

    def __init__(self) -> None:
        self.first: tuple[BaseException, str] | None = None

    def saw(self, exc: BaseException, shown: str) -> None:
        if self.first is None:
            self.first = (exc, shown[:2000])

    def take(self) -> tuple[BaseException, str] | None:
        first, self.first = self.first, None
        return first
