"""Refresh the golden files under tests/cases/ (the one documented command):

    /tmp/dev/bin/python tests/update_golden.py          # rewrite every .expected
    /tmp/dev/bin/python tests/update_golden.py --check  # exit 1 if any is out of date

- tests/cases/diagnostics/<code>_<name>.policy -> <code>_<name>.expected: the rendered
  text diagnostics of `stopline check` (no colour), paths relative to the repository.
  Each .policy also states, in `# expect: CODE LINE:COL` comments, where every
  diagnostic must point; those lines are written by hand and never refreshed.
- tests/cases/fmt/<name>.policy -> <name>.expected: the output of `stopline fmt`.

Review the diff (`git diff tests/cases`) before committing refreshed files.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "cases"
EXPECT_RE = re.compile(r"^# expect: (?P<code>[EW]\d{3}) (?P<line>\d+):(?P<col>\d+)\s*$", re.M)


def load_case(path: Path):
    """(LoadResult, sources to render with) for one case file, shown by its repo path."""
    from policy_engine.language.loader import display_source, load_sources, read_source

    display = path.relative_to(ROOT).as_posix()
    src, err = read_source(path, display)
    if err is not None:
        result = load_sources([], [err])
        result.sources[display] = src or display_source(path, display)
        return result
    return load_sources([src])


def render_diagnostics_case(path: Path) -> str:
    from policy_engine.diagnostics import render_all

    result = load_case(path)
    return render_all(result.diagnostics, result.sources, color=False) + "\n"


def expected_locations(path: Path) -> list[tuple[str, int, int]]:
    text = path.read_bytes().decode("utf-8", errors="replace")
    return [(m["code"], int(m["line"]), int(m["col"])) for m in EXPECT_RE.finditer(text)]


def render_fmt_case(path: Path) -> str:
    from policy_engine.language.fmt import format_text

    return format_text(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())


def goldens() -> list[tuple[Path, Path, str]]:
    out = []
    for p in sorted((CASES / "diagnostics").glob("*.policy")):
        out.append((p, p.with_suffix(".expected"), render_diagnostics_case(p)))
    for p in sorted((CASES / "fmt").glob("*.policy")):
        out.append((p, p.with_suffix(".expected"), render_fmt_case(p)))
    return out


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = 0
    for _src, expected, text in goldens():
        old = expected.read_text(encoding="utf-8") if expected.exists() else None
        if old == text:
            continue
        stale += 1
        rel = expected.relative_to(ROOT)
        if check:
            print(f"out of date: {rel}")
        else:
            expected.write_text(text, encoding="utf-8")
            print(f"{'updated' if old is not None else 'created'}: {rel}")
    if check and stale:
        print(f"{stale} golden file(s) out of date; run: python tests/update_golden.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
