"""Every code block of README.md and docs/*.md is checked, and the documented tables match the code.

How a block is checked, by its fence language (conventions: docs/development.md):

- ``stopline`` (or ``policy``): a complete policy file; it loads without errors and is
  written in the canonical layout (`stopline fmt` leaves it unchanged).
- ``python``: runs, in a copy of the repository's policies/, examples/ and test cases,
  with that copy as the working directory.
- ``console``: ``$ stopline ...`` lines are run from the root of that copy; the lines after
  a command are its exact output, where a line ``...`` stands for any number of lines.
- ``sh``: every ``stopline`` command (``&&`` chains and ``\\`` continuations included) runs
  and exits 0; other commands (pip, python, pytest) are not run here.
- ``json``: parses, as one document or one document per line.
- ``yaml``: parses; a fixture suite (``suite:`` and ``cases:``) is run against the
  shipped policies and passes.
- ``text``: a rendered diagnostic that names a golden case under tests/cases/diagnostics/
  must be part of that case's ``.expected`` output.

A block preceded by the line ``<!-- illustrative -->`` is a fragment or a synopsis and is
not checked (``text`` only, or a language whose check cannot apply); keep those rare.

Refresh the shown outputs of console blocks after a deliberate change:

    python tests/test_docs.py --update
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ILLUSTRATIVE = "<!-- illustrative -->"
LANGUAGES = {"stopline", "policy", "python", "console", "sh", "json", "yaml", "text"}
# What the examples may read, copied so that commands writing files never touch the checkout.
COPIED = ["policies", "examples", "tests/cases", "tests/broken", "benchmarks/policies"]
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[ \t]*$")


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    illustrative: bool
    end: int  # 1-based line of the closing fence

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT).as_posix()}:{self.line}:{self.lang or 'none'}"


def blocks_of(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent = m["indent"]
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        if j == len(lines):
            raise AssertionError(f"{page.name}:{i + 1}: code block is never closed")
        body = [ln[len(indent):] if ln.startswith(indent) else ln.lstrip() for ln in lines[i + 1:j]]
        prev = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        out.append(Block(page, i + 1, m["lang"], "\n".join(body) + "\n", prev == ILLUSTRATIVE, j + 1))
        i = j + 1
    return out


ALL_BLOCKS = [b for p in PAGES for b in blocks_of(p)]


def _blocks(*langs: str) -> list:
    return [pytest.param(b, id=b.id) for b in ALL_BLOCKS if b.lang in langs and not b.illustrative]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Path:
    """A copy of what the examples read; commands run from its root as from the checkout's."""
    root = tmp_path_factory.mktemp("docs")
    for rel in COPIED:
        if (ROOT / rel).exists():
            shutil.copytree(ROOT / rel, root / rel)
    return root


@contextlib.contextmanager
def cwd(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_stopline(argv: list[str], where: Path) -> tuple[int, str]:
    """Run `stopline ARGS` in-process (what a user sees: stdout and stderr interleaved)."""
    from click.testing import CliRunner

    from policy_engine.cli import main

    assert argv[0] == "stopline", argv
    with cwd(where):
        res = CliRunner().invoke(main, argv[1:], catch_exceptions=True)
    assert "Traceback" not in res.output, res.output
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise AssertionError(f"`{shlex.join(argv)}` raised {res.exception!r}")
    return res.exit_code, res.output


def commands_of(text: str) -> list[list[str]]:
    """The commands of an sh block: continuations joined, comments dropped, `&&` split."""
    joined = re.sub(r"\\\n\s*", " ", text)
    cmds: list[list[str]] = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        current: list[str] = []
        for w in words:
            if w == "&&":
                cmds.append(current)
                current = []
            else:
                current.append(w)
        if current:
            cmds.append(current)
    return [c for c in cmds if c]


def console_steps(text: str) -> list[tuple[str, list[str]]]:
    steps: list[tuple[str, list[str]]] = []
    for line in text.rstrip("\n").splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            assert steps, f"console block does not start with a `$ ` command: {line!r}"
            steps[-1][1].append(line)
    return steps


def output_matches(expected: list[str], actual: list[str]) -> bool:
    """Line by line (trailing blanks ignored); a line `...` matches any number of lines."""

    exp = [ln.rstrip() for ln in expected]
    act = [ln.rstrip() for ln in actual]

    @functools.cache
    def match(i: int, j: int) -> bool:
        if i == len(exp):
            return j == len(act)
        if exp[i] == "...":
            return any(match(i + 1, k) for k in range(j, len(act) + 1))
        return j < len(act) and exp[i] == act[j] and match(i + 1, j + 1)

    return match(0, 0)


# --- the blocks --------------------------------------------------------------------------

def test_every_block_has_a_checked_language():
    bad = [b.id for b in ALL_BLOCKS if b.lang not in LANGUAGES]
    assert not bad, f"give these blocks a language ({', '.join(sorted(LANGUAGES))}): {bad}"


def test_illustrative_blocks_are_rare():
    marked = [b.id for b in ALL_BLOCKS if b.illustrative]
    assert len(marked) <= max(3, len(ALL_BLOCKS) // 10), marked


@pytest.mark.parametrize("block", _blocks("stopline", "policy"))
def test_policy_block_loads(block: Block):
    from policy_engine.language.fmt import format_text
    from policy_engine.language.loader import load_text

    result = load_text(block.text, f"{block.id}.policy")
    assert result.errors == [], "\n".join(f"{d.code} {d.message}" for d in result.errors)
    assert format_text(block.text) == block.text, "not in the canonical layout: run `stopline fmt` on it"


@pytest.mark.parametrize("block", _blocks("python"))
def test_python_block_runs(block: Block, sandbox: Path):
    code = compile(block.text, block.id, "exec")
    with cwd(sandbox):
        exec(code, {"__name__": "__docs__"})


@pytest.mark.parametrize("block", _blocks("console"))
def test_console_block_output_is_real(block: Block, sandbox: Path):
    for command, expected in console_steps(block.text):
        argv = shlex.split(command)
        assert argv[0] == "stopline", f"console blocks show stopline commands: {command}"
        _, out = run_stopline(argv, sandbox)  # the exit code shows in the output compared
        actual = out.rstrip("\n").splitlines() if out.strip() else []
        assert output_matches(expected, actual), \
            f"`{command}` printed:\n{out}\n(refresh with `python tests/test_docs.py --update`)"


@pytest.mark.parametrize("block", _blocks("sh"))
def test_sh_block_commands_run(block: Block, sandbox: Path):
    for argv in commands_of(block.text):
        if argv[0] != "stopline":
            continue
        code, out = run_stopline(argv, sandbox)
        assert code == 0, f"`{shlex.join(argv)}` exited {code}:\n{out}"


@pytest.mark.parametrize("block", _blocks("json"))
def test_json_block_parses(block: Block):
    try:
        json.loads(block.text)
    except json.JSONDecodeError:
        for line in block.text.splitlines():
            if line.strip():
                json.loads(line)


@pytest.mark.parametrize("block", _blocks("yaml"))
def test_yaml_block_parses_and_suites_pass(block: Block, sandbox: Path):
    data = yaml.safe_load(block.text)
    if not (isinstance(data, dict) and "suite" in data and "cases" in data):
        return
    suite = sandbox / "policies" / "docs_block.policy-test.yaml"
    suite.write_text(block.text, encoding="utf-8")
    try:
        code, out = run_stopline(["stopline", "test", "policies/docs_block.policy-test.yaml"], sandbox)
    finally:
        suite.unlink()
    assert code == 0, out
    assert re.search(r"^\d+ passed, 0 failed$", out, re.M), out


@pytest.mark.parametrize("block", _blocks("text"))
def test_text_block_is_a_real_diagnostic(block: Block):
    m = re.search(r"--> (tests/cases/diagnostics/[\w.-]+\.policy)(?::\d+:\d+)?", block.text)
    assert m, f"{block.id}: a text block must be a golden diagnostic, or be marked {ILLUSTRATIVE}"
    golden = (ROOT / m[1]).with_suffix(".expected").read_text(encoding="utf-8")
    assert block.text.strip() in golden, f"{block.id} differs from {m[1]}'s golden output"


# --- paths, commands, the site -----------------------------------------------------------

PATH_RE = re.compile(
    r"`((?:policies|examples|benchmarks|tests|docs|grammar|policy_engine)/[\w./*-]*)"  # a path under a top folder
    r"(?::\d+(?::\d+)?)?`"  # an optional :line or :line:column
)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_named_files_exist(page: Path):
    """A repository path named in the docs (`policies/x.policy`, `examples/questions/gate.json`) exists."""
    missing = []
    for rel in sorted(set(PATH_RE.findall(page.read_text(encoding="utf-8")))):
        if not (list(ROOT.glob(rel)) if "*" in rel else (ROOT / rel).exists()):
            missing.append(rel)
    assert not missing, missing


def test_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    for page in ("docs/language.md", "docs/engine.md", "docs/cli.md", "docs/testing.md", "docs/diagnostics.md"):
        assert f"]({page}" in readme, f"the README links {page}"
    assert re.search(r"```console\n\$ stopline explain ", readme), "the README shows one real explain trace"


def test_readme_test_command_is_what_ci_runs():
    """.ci/run installs with the README's test command: keep the two in sync."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    m = re.search(r"^pip install -e '(\.\[[\w,]+\])' && python -m pytest -q( [^\n]*)?$", readme, re.M)
    assert m, "the README's test command"
    assert f"python -m pip install --quiet -e '{m[1]}'" in ci
    assert f"python -m pytest -q{m[2] or ''}" in ci
    assert 'mkdocs build --strict -d "$(mktemp -d)"' in ci


def test_readme_main_job_is_what_ci_runs():
    """The README's first command installs and runs the main job; .ci/run runs the same script."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    first = re.search(r"```sh\n(.+?)\n```", readme, re.S)
    assert first and first[1] == "pip install -e . && python examples/agent_runtime.py"
    assert "python examples/agent_runtime.py " in ci


def _nav_pages(nav) -> list[str]:
    out: list[str] = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out.extend(_nav_pages(value) if isinstance(value, list) else [value])
    return out


def test_mkdocs_nav_covers_every_page():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    nav = _nav_pages(config["nav"])
    pages = sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md"))
    assert sorted(nav) == pages


def test_mkdocs_build_is_strict_clean(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is in the `test` and `docs` extras")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- documented tables against the code --------------------------------------------------


def _table(doc: str, header: str, strip: str = "`") -> dict[str, str]:
    """The rows (first cell -> second cell) of the markdown table that starts with `header`."""
    start = doc.index(header)
    rows: dict[str, str] = {}
    for line in doc[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0].strip(strip)] = cells[1]
    return rows


def test_diagnostic_code_table_matches_the_code():
    from policy_engine import diagnostics

    doc = (ROOT / "docs" / "diagnostics.md").read_text(encoding="utf-8")
    assert _table(doc, "| code | meaning |") == dict(diagnostics.CODES)
    headings = dict(re.findall(r"^#### ([EW]\d{3}) — (.*)$", doc, re.M))
    assert headings == dict(diagnostics.CODES)


def test_suite_code_table_matches_the_code():
    from policy_engine import testing

    doc = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    assert _table(doc, "| code | meaning |") == dict(testing.T_CODES)


def test_limits_table_matches_the_code():
    """docs/limits.md states every default limit once; each number here comes from policy_engine/limits.py
    (tests/test_one_source.py checks the page's by-name table against that file, both ways)."""
    from policy_engine import limits as L

    doc = (ROOT / "docs" / "limits.md").read_text(encoding="utf-8")
    rows = _table(doc, "| What | Default | When exceeded |", strip="")

    def n(x: int) -> str:
        return f"{x:,}"

    expected = {
        "policy file": [f"{n(L.MAX_FILE_BYTES)} bytes", f"{n(L.MAX_FILES)} files"],
        "nesting in a policy file": [f"{L.MAX_NESTING} levels"],
        "a condition": [f"{n(L.MAX_EXPRESSION_LENGTH)} characters", f"{L.CEL_MAX_NESTING_DEPTH} levels"],
        "rules and conditions": [
            f"{n(L.MAX_RULES_PER_FILE)} rules per file",
            f"{n(L.MAX_CONDITIONS_PER_SET)} conditions per set",
        ],
        "one evaluator input": [
            f"{n(L.MAX_INPUT_ITEMS)} values",
            f"{L.MAX_INPUT_DEPTH} levels",
            f"{n(L.MAX_INPUT_CHARS)} characters",
        ],
        "one condition evaluation": [
            f"{n(L.CEL_MAX_ITERATIONS)} comprehension iterations",
            f"up to {n(L.CEL_MAX_SIZE)}",
            f"10^{len(str(L.REGEX_MAX_COST)) - 1}",
        ],
        "a rollback cascade": [f"{n(L.MAX_CASCADE_RECORDS)} records", f"{L.MAX_LOOPS_LISTED} loops"],
        "one authorization": [f"{n(L.MAX_APPROVALS)} approvals"],
        "`stopline eval` input": [f"{L.MAX_INPUT_BYTES // 1_000_000} MB"],
        "numbers in policies": [
            f"int{(L.INT64_MAX + 1).bit_length()}",
            f"{L.MAX_WINDOW_SECONDS // (365 * 86400)} years",
        ],
    }
    assert L.REGEX_MAX_COST == 10 ** (len(str(L.REGEX_MAX_COST)) - 1)
    assert (L.INT64_MIN, L.INT64_MAX) == (-(2**63), 2**63 - 1)
    by_row = {k.split(" (")[0]: v for k, v in rows.items()}
    assert set(by_row) == set(expected)
    for row, texts in expected.items():
        for text in texts:
            assert text in by_row[row], f"limits table, row {row!r}: expected {text!r} in {by_row[row]!r}"


def test_cel_budget_table_matches_the_code():
    from policy_engine import cel

    doc = (ROOT / "docs" / "cel.md").read_text(encoding="utf-8")
    start = doc.index("| limit | default |")
    rows = {}
    for line in doc[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1].split(" ")[0]
    lim = cel.DEFAULT_LIMITS
    assert rows == {
        name: f"{getattr(lim, name):,}"
        for name in ("max_expression_length", "max_nesting_depth", "max_iterations", "max_size")
    }


# --- refreshing the shown outputs --------------------------------------------------------


def _refreshed(expected: list[str], actual: list[str]) -> list[str]:
    if "..." not in expected:
        return actual
    cut = expected.index("...")
    head, tail = cut, len(expected) - cut - 1
    return actual[:head] + ["..."] + (actual[len(actual) - tail :] if tail else [])


def update() -> int:
    """Rewrite the output shown under every console command with the real output."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        box = Path(tmp)
        for rel in COPIED:
            if (ROOT / rel).exists():
                shutil.copytree(ROOT / rel, box / rel)
        for page in PAGES:
            lines = page.read_text(encoding="utf-8").splitlines()
            for block in reversed(blocks_of(page)):
                if block.lang != "console" or block.illustrative:
                    continue
                new: list[str] = []
                for command, expected in console_steps(block.text):
                    _, out = run_stopline(shlex.split(command), box)
                    actual = out.rstrip("\n").splitlines() if out.strip() else []
                    new += [f"$ {command}", *_refreshed(expected, actual)]
                indent = re.match(r"[ \t]*", lines[block.line - 1])[0]
                lines[block.line : block.end - 1] = [indent + ln if ln else ln for ln in new]
            page.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--update"]:
        sys.exit(update())
    sys.exit(pytest.main([__file__, *sys.argv[1:]]))
