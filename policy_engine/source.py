"""Source files and spans, and the Unicode table both the language (W217: an invisible
character typed into a string) and the engine (canonical principals) read. Depends on
nothing else in the package."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SourceFile:
    """One policy file's text, with a line index for offset -> line/column."""

    path: str
    text: str
    _line_starts: tuple[int, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        starts = [0]
        find = self.text.find
        i = find("\n")
        while i != -1:
            starts.append(i + 1)
            i = find("\n", i + 1)
        object.__setattr__(self, "_line_starts", tuple(starts))

    def line_col(self, offset: int) -> tuple[int, int]:
        """1-based line and column of a character offset."""
        offset = max(0, min(offset, len(self.text)))
        line = bisect.bisect_right(self._line_starts, offset) - 1
        return line + 1, offset - self._line_starts[line] + 1

    def offset(self, line: int, col: int) -> int:
        line = max(1, min(line, len(self._line_starts)))
        return min(self._line_starts[line - 1] + col - 1, len(self.text))

    def line_text(self, line: int) -> str:
        if line < 1 or line > len(self._line_starts):
            return ""
        start = self._line_starts[line - 1]
        end = self.text.find("\n", start)
        return self.text[start:] if end == -1 else self.text[start:end]

    def span(self, start: int, end: int | None = None) -> Span:
        end = start if end is None else end
        line, col = self.line_col(start)
        end_line, end_col = self.line_col(end)
        return Span(self.path, start, end, line, col, end_line, end_col)


@dataclass(frozen=True, order=True)
class Span:
    """A half-open character range in a file, with 1-based line/column of both ends; or,
    with line 0 (`Span.nowhere`), a file or path as a whole, that has no position (a path
    that does not exist, a file too big to read): printed as the path alone, with no
    `:line:col`, no source line and no caret, and `null` line and columns in JSON."""

    path: str
    start: int
    end: int
    line: int
    col: int
    end_line: int
    end_col: int

    @classmethod
    def nowhere(cls, path: str) -> Span:
        """The span of something with no line or column in `path` (see the class)."""
        return cls(path, 0, 0, 0, 0, 0, 0)

    @property
    def located(self) -> bool:
        """Whether the span has a line and a column (not `Span.nowhere`)."""
        return self.line > 0

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}" if self.located else self.path

    def to_json(self) -> dict:
        located = self.located
        return {
            "file": self.path,
            "line": self.line if located else None,
            "col": self.col if located else None,
            "end_line": self.end_line if located else None,
            "end_col": self.end_col if located else None,
        }


# Default_Ignorable_Code_Point, from the Unicode Character Database, DerivedCoreProperties.txt
# (https://www.unicode.org/Public/15.1.0/ucd/DerivedCoreProperties.txt; the same ranges since
# Unicode 14.0, the version of Python 3.11's `unicodedata`): code points that render as
# nothing (zero-width spaces and joiners, bidi controls, variation selectors, tags, fillers).
DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
