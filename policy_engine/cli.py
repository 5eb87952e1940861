"""The `stopline` command line. The only module that imports click; owns exit codes.

Exit codes: 0 ok, 1 policy or test failures, 2 usage or unreadable input.
"""

from __future__ import annotations

import json
import re
import sys

import click

from .limits import MAX_INPUT_BYTES  # noqa: F401  (the input limit, read through this module too)

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class _Group(click.Group):
    def main(self, *args, **kwargs):  # usage errors exit 2 (click's default), never a traceback
        try:
            return super().main(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - a bug in Stopline is reported, never a traceback
            import os

            if os.environ.get("STOPLINE_DEBUG"):
                raise
            click.echo(f"stopline: internal error: {type(e).__name__}: {e}\n"
                       "this is a bug in Stopline, not in your policy; set STOPLINE_DEBUG=1 for the traceback "
                       "and please report it", err=True)
            sys.exit(EXIT_USAGE)

    def invoke(self, ctx):
        # Ctrl-C: one line and 130 (128 + SIGINT), as a shell reports it. Left to click, it was
        # "Aborted!" and exit 1, which the exit codes above read as "policy or test failures".
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            import os

            if os.environ.get("STOPLINE_DEBUG"):
                raise
            try:
                click.echo("\nstopline: interrupted", err=True)
            except OSError:  # pragma: no cover - stderr closed too
                pass
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stopline", prog_name="stopline")
def main() -> None:
    """Stopline: policy-as-code for AI-agent workflows."""


def _color(ctx_color: bool | None) -> bool:
    """--color/--no-color, else colour on a terminal unless NO_COLOR (https://no-color.org)
    is set or TERM is `dumb` (a terminal that shows escape codes as text)."""
    import os

    if ctx_color is not None:
        return ctx_color
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return sys.stdout.isatty()


class _ReaderLeft:
    """Around a verdict's output: when the reader of stdout leaves (`stopline test ... | head -1`),
    the rest of the output is dropped and the command still exits with its verdict. Left to
    click, a closed pipe was exit 1, "policy or test failures", for a run where all passed."""

    def __enter__(self) -> _ReaderLeft:
        return self

    def __exit__(self, typ, exc, tb) -> bool:
        if typ is None or not issubclass(typ, BrokenPipeError):
            return False
        import os

        try:  # what is still buffered, and any later write, go nowhere (no error at exit either)
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, sys.stdout.fileno())
            os.close(fd)
        except (OSError, ValueError):  # pragma: no cover - no real stdout
            pass
        return True


# ---------------------------------------------------------------------------- check
@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
@click.option(
    "--show-acknowledged",
    is_flag=True,
    help="Also print the warnings a `# stopline: acknowledge CODE -- reason` comment accepts, with the reason.",
)
@click.option("--color/--no-color", default=None, help="Colour the output (default: when a terminal).")
def check(paths: tuple[str, ...], fmt: str, strict: bool, show_acknowledged: bool, color: bool | None) -> None:
    """Parse, resolve, type- and lint-check policy files.

    A warning acknowledged in the policy (`# stopline: acknowledge W202 -- reason` on the
    declaration) is not printed and does not fail --strict; the summary counts it.
    """
    from .diagnostics import render_all
    from .language.loader import UsageError, load_paths

    try:
        result = load_paths(paths)
    except UsageError as e:
        click.echo(f"error: {e}", err=True)
        if fmt == "json":  # a CI job reading stdout gets the verdict too, in the same shape
            with _ReaderLeft():
                click.echo(json.dumps({"ok": False, "files": [], "content_hash": None,
                                       "diagnostics": [e.diagnostic().to_json()], "acknowledged": []},
                                      indent=2, sort_keys=True))
        sys.exit(EXIT_USAGE)
    diags = result.diagnostics
    acked = result.acknowledged
    failed = bool(result.errors) or (strict and bool(result.warnings))
    with _ReaderLeft():  # a reader that leaves early does not turn the verdict into exit 1
        if fmt == "json":
            payload = {
                "ok": not failed,
                "files": sorted(result.sources),
                "content_hash": result.policy_set.content_hash if result.policy_set else None,
                "diagnostics": [d.to_json() for d in diags],
                "acknowledged": [a.to_json() for a in acked],
            }
            click.echo(json.dumps(payload, indent=2, sort_keys=True))
        else:
            if diags or (show_acknowledged and acked):
                text = render_all(diags, result.sources, color=_color(color), acknowledged=acked,
                                  show_acknowledged=show_acknowledged)
                click.echo(text + ("" if diags else "\n"), err=False)  # (no count line: a blank one)
            if not failed:
                nwf = len(result.policy_set.workflows) if result.policy_set else 0
                nfiles = len(result.sources)
                click.echo(
                    f"ok: {nfiles} file{'s' if nfiles != 1 else ''}, {nwf} workflow{'s' if nwf != 1 else ''}"
                    + (
                        f", {len(result.warnings)} warning{'s' if len(result.warnings) != 1 else ''}"
                        if result.warnings
                        else ""
                    )
                    + (f", {len(acked)} acknowledged" if acked else "")
                )
    sys.exit(EXIT_FAIL if failed else EXIT_OK)


# ---------------------------------------------------------------------------- fmt
@main.command("fmt")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--check", "check_only", is_flag=True, help="Write nothing; exit 1 listing the files that would change.")
@click.option("--diff", "show_diff", is_flag=True, help="Write nothing; print a unified diff of the changes.")
@click.option("--color/--no-color", default=None, help="Colour the diagnostics (default: when a terminal).")
def fmt(paths: tuple[str, ...], check_only: bool, show_diff: bool, color: bool | None) -> None:
    """Rewrite policy files in the canonical layout (comments kept).

    Files with errors are reported and never rewritten. With --check or --diff
    nothing is written.
    """
    import os
    import tempfile
    from pathlib import Path

    from .diagnostics import _printable, render_all
    from .language.fmt import FormatError, format_path, unified_diff
    from .language.loader import UsageError, discover

    try:
        files = discover(paths)
    except UsageError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    if not files:
        click.echo("error: no .policy files found in " + ", ".join(paths), err=True)
        sys.exit(EXIT_USAGE)
    failed = unreadable = False
    would_change: list[str] = []
    for f in files:
        try:
            res = format_path(f)
        except FormatError as e:
            click.echo(f"error: {_printable(str(e))}; file left unchanged (please report this formatter bug)", err=True)
            failed = True
            continue
        except OSError as e:  # pragma: no cover - raced with a delete
            click.echo(f"error: cannot read {_printable(str(f))}: {e.strerror or e}", err=True)
            unreadable = True
            continue
        if res.formatted is None:
            if any(d.code == "E004" for d in res.diagnostics):
                unreadable = True
            sources = {res.path: res.source} if res.source is not None else {}
            click.echo(render_all(res.diagnostics, sources, color=_color(color)), err=True)
            click.echo(f"{_printable(res.path)}: not formatted (fix the errors above first)", err=True)
            failed = True
            continue
        if not res.changed:
            continue
        would_change.append(res.path)
        if show_diff:
            click.echo(unified_diff(res), nl=False)
        if check_only or show_diff:
            continue
        # write atomically next to the file, keeping its permissions; a symbolic link's target
        # is the file (replaced, the link became a copy and the file it named stayed unformatted)
        dest = Path(os.path.realpath(f))
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".fmt", dir=str(dest.parent))
        except OSError as e:
            click.echo(f"error: cannot write {_printable(str(f))}: {e.strerror or e}", err=True)
            unreadable = True
            continue
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
                out.write(res.formatted)
            os.chmod(tmp, dest.stat().st_mode & 0o7777)
            os.replace(tmp, dest)
        except OSError as e:
            Path(tmp).unlink(missing_ok=True)
            click.echo(f"error: cannot write {_printable(str(f))}: {e.strerror or e}", err=True)
            unreadable = True
            continue
        click.echo(f"formatted {_printable(res.path)}")
    if check_only:
        for p in would_change:
            click.echo(f"would reformat {_printable(p)}")
    if unreadable:
        sys.exit(EXIT_USAGE)
    if failed or ((check_only or show_diff) and would_change):
        sys.exit(EXIT_FAIL)
    sys.exit(EXIT_OK)


# ---------------------------------------------------------------------------- test
@main.command("test")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option(
    "-k",
    "keyword",
    default=None,
    metavar="PATTERN",
    help='Run only cases whose "suite::case" name contains PATTERN (and/or/not allowed, as in pytest).',
)
@click.option("--format", "fmt", type=click.Choice(["text", "json", "junit"]), default="text", show_default=True)
@click.option(
    "--output",
    "output",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write the --format report to FILE (the text report still goes to stdout).",
)
@click.option(
    "--coverage",
    "show_coverage",
    is_flag=True,
    help="Report which rules, triggers, criteria and scenarios the cases exercised, of every policy under PATHS.",
)
@click.option(
    "--min-coverage",
    "min_coverage",
    type=click.FloatRange(0, 100),
    default=None,
    metavar="PCT",
    callback=lambda ctx, param, value: _percentage(value),
    help="Exit 1 when branch coverage is below PCT (implies --coverage).",
)
@click.option("--color/--no-color", default=None, help="Colour the diagnostics (default: when a terminal).")
def test(
    paths: tuple[str, ...],
    keyword: str | None,
    fmt: str,
    output: str | None,
    show_coverage: bool,
    min_coverage: float | None,
    color: bool | None,
) -> None:
    """Run `*.policy-test.yaml` fixture suites (see docs/testing.md).

    Prints each failing case with a diff and the explain trace, then `N passed, N failed`.
    Exit 1 on a failing case or coverage below --min-coverage; 2 when a suite cannot be
    read or its policies do not load.
    """
    from pathlib import Path

    from .testing import Runner, discover_suites, json_report, junit_xml, render_text
    from .testing.suites import not_suites

    # `stopline test refunds.policy`: say which file is the suite; `stopline test policies/*`
    # (a glob naming the policies beside their suites): run the suites
    others = [p for p in paths if not (Path(p).suffix == ".policy" and Path(p).is_file())]
    policy_files = not_suites(paths, discover_suites(others)[0] if others else ())
    if policy_files:
        click.echo("\n".join(policy_files), err=True)
        sys.exit(EXIT_USAGE)
    given = paths  # (the .policy files of a glob count for coverage: Runner.run measures them)
    if others and len(others) < len(paths):
        paths = tuple(others)
    show_coverage = show_coverage or min_coverage is not None
    if output is not None and fmt == "text":  # (it wrote nothing, and said nothing)
        click.echo("error: --output writes the json or junit report: add --format json or --format junit "
                   "(the text report goes to stdout)", err=True)
        sys.exit(EXIT_USAGE)
    files, missing = discover_suites(paths)
    for f in _near_suites(paths):  # named like a suite, but not run: say so (it was skipped in silence)
        click.echo(f"warning: {f} is not run: suites are named `*.policy-test.yaml` (not `.yml`)", err=True)
    if not files and not missing:
        click.echo("error: no *.policy-test.yaml files found in " + ", ".join(paths), err=True)
        sys.exit(EXIT_USAGE)
    from .testing.runner import keyword_error

    try:
        bad_k = keyword_error(keyword)
    except RecursionError:  # (a recursive-descent parser: was "internal error ... a bug in Stopline")
        bad_k = "it nests too deeply"
    if bad_k is not None:
        k = keyword or ""
        shown = repr(k if len(k) <= 80 else f"{k[:77]}...")
        click.echo(f"error: -k {shown} is not a valid expression: {bad_k}\n"
                   "  = help: words joined by `and`, `or`, `not` and parentheses, e.g. -k \"refund and not large\"",
                   err=True)
        sys.exit(EXIT_USAGE)
    report = Runner().run(given, keyword=keyword)
    below = report.coverage.shortfall(min_coverage) if show_coverage else None

    machine = None
    if fmt == "json":
        machine = json.dumps(json_report(report, coverage=show_coverage), indent=2, ensure_ascii=False) + "\n"
    elif fmt == "junit":
        machine = junit_xml(report)
    with _ReaderLeft():  # a reader that leaves early does not turn the verdict into exit 1
        if machine is not None and output is None:
            click.echo(machine, nl=False)
        else:
            if machine is not None and output is not None:  # (machine and no output: echoed above)
                try:
                    with open(output, "w", encoding="utf-8") as fh:
                        fh.write(machine)
                except OSError as e:
                    click.echo(f"error: cannot write {output}: {e.strerror or e}", err=True)
                    sys.exit(EXIT_USAGE)
            body = render_text(report, color=_color(color))
            if body:
                click.echo(body)
                click.echo()
            if show_coverage:
                click.echo(report.coverage.render())
                if below:
                    click.echo(f"\n{below}")
                click.echo()
            click.echo(report.summary())
    if below and machine is not None and output is None:  # (the text saying so is not printed: say why exit 1)
        click.echo(below, err=True)
    total = sum(len(sr.suite.cases) for sr in report.suites if not sr.errored)
    if keyword and not report.results and total:  # a typo in -k runs nothing and passes: say so (exit unchanged)
        click.echo(f"warning: -k {keyword!r} selects none of the {total} case{'s' if total != 1 else ''}", err=True)
    if report.errors:
        sys.exit(EXIT_USAGE)
    if report.failed or below:
        sys.exit(EXIT_FAIL)
    sys.exit(EXIT_OK)


def _percentage(value: float | None) -> float | None:
    """--min-coverage: a number from 0 to 100 (``FloatRange`` lets ``nan`` through: no range holds it)."""
    if value is not None and value != value:
        raise click.BadParameter("nan is not a percentage (give one from 0 to 100)")
    return value


def _near_suites(paths: tuple[str, ...]) -> list[str]:
    """`*.policy-test.yml` files under the directories among `paths`: a suite by its name's
    intent, never discovered (only a file named on the command line is read whatever its name)."""
    import os

    from .language.loader import find_files

    dirs = [p for p in paths if os.path.isdir(p)]
    return [str(f) for f in find_files(dirs, ".policy-test.yml")[0]] if dirs else []


# ---------------------------------------------------------------------------- eval / explain / schema (engine)


def _engine_or_exit(paths: tuple[str, ...], color: bool | None):
    """Load the policy set; on failure print diagnostics like `stopline check` and exit 2."""
    from .diagnostics import render_all
    from .engine import Engine
    from .language.loader import UsageError, load_paths

    try:
        result = load_paths(paths)
    except UsageError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    if result.errors:
        click.echo(render_all(result.diagnostics, result.sources, color=_color(color)), err=True)
        sys.exit(EXIT_USAGE)
    return Engine.from_load_result(result)


class _Refused(ValueError):
    """A value the JSON parser read that the question may not hold (``kind``: ``key``, ``number``)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _no_json_constant(name: str):
    raise _Refused("number", f"`{name}` is not JSON (numbers must be finite)")


def _finite(text: str) -> float:
    """A JSON number with a fraction or exponent (``1e999`` reads as infinity: refused as ``Infinity`` is)."""
    v = float(text)
    if v - v != 0:
        raise _Refused("number", f"the number {text[:24]}{'...' if len(text) > 24 else ''} is out of range "
                                 "(numbers must be finite)")
    return v


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # (past Python's own limit on the digits of an int's text)
        raise _Refused("number", f"an integer of {len(text.lstrip('-'))} digits is too long to read") from None


def _once(pairs: list) -> dict:
    """A JSON object's members, refusing a name given twice (``json`` keeps the last one in
    silence; the server refuses such a body, and so does ``ledger append``)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise _Refused("key", f"the key {json.dumps(dup, ensure_ascii=True)[:80]} is given twice in one object: "
                              "which value is meant?")
    return out


#: the tokens of JSON text that say where a value is: strings, brackets, colons, numbers
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]:]|-?(?:Infinity|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|NaN')


def _refused_at(doc: str, kind: str) -> int | None:
    """The offset in ``doc`` of the first value the parser refused (``_Refused``): a key given
    twice in its object, or a number out of range. ``doc`` is JSON up to there."""
    stack: list[set | None] = []
    key = None  # the string token right before, when there is one
    for m in _TOKEN.finditer(doc):
        t = m.group()
        if t in ("{", "["):
            stack.append(set() if t == "{" else None)
        elif t in ("}", "]"):
            if stack:
                stack.pop()
        elif t == ":":
            if key is not None and stack and stack[-1] is not None:
                name = json.loads(key.group())
                if kind == "key" and name in stack[-1]:
                    return key.start()
                stack[-1].add(name)
        elif t[0] != '"' and kind == "number":
            try:
                (_finite if t[-1].isalpha() or any(c in t for c in ".eE") else _integer)(t)
            except ValueError:
                return m.start()
        key = m if t[0] == '"' else None
    return None


def _read_question(source: str):
    """The question envelope from a file or `-` (stdin); exits 2 if unreadable."""
    from .ledger.cli import read_bounded

    data = read_bounded(source, "input")
    doc = None
    try:
        doc = data.decode("utf-8-sig")
        question = json.loads(doc, parse_constant=_no_json_constant, parse_float=_finite, parse_int=_integer,
                              object_pairs_hook=_once)
        json.dumps(question, ensure_ascii=False).encode("utf-8")  # a lone `\ud800` escape cannot be printed back
        return question
    except UnicodeDecodeError as e:
        click.echo(f"error: input {source} is not UTF-8 text (byte {e.start})", err=True)
    except UnicodeEncodeError:
        click.echo(f"error: input {source} holds an unpaired surrogate escape such as `\\ud800`", err=True)
    except RecursionError:
        click.echo(f"error: input {source} nests too deeply", err=True)
    except ValueError as e:
        line, col = getattr(e, "lineno", None), getattr(e, "colno", None)
        if isinstance(e, _Refused) and doc is not None:  # (the parser's hooks are not told where they are)
            at = _refused_at(doc, e.kind)
            if at is not None:
                line, col = doc.count("\n", 0, at) + 1, at - doc.rfind("\n", 0, at)
        where = f":{line}:{col}" if line is not None else ""
        click.echo(f"error: {source}{where}: invalid JSON: {getattr(e, 'msg', e)}", err=True)
        if line is not None and col is not None and doc is not None:
            click.echo(_json_caret(doc, line, col), err=True)
    sys.exit(EXIT_USAGE)


def _json_caret(doc: str, line: int, col: int, width: int = 100) -> str:
    """The line of a JSON error, cut to `width` characters around the column, and a caret."""
    lines = doc.splitlines() or [""]
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    start = 0 if len(text) <= width else max(0, min(col - 1 - width // 2, len(text) - width))
    shown = text[start : start + width].expandtabs(1)
    shown = "".join(c if c.isprintable() else "?" for c in shown)
    gutter = str(line)
    return f"{gutter} | {shown}\n{' ' * len(gutter)} | {' ' * (col - 1 - start)}^"


def _answer(paths: tuple[str, ...], source: str, now: str | None, color: bool | None):
    from .engine import QuestionError

    if now is not None:  # a malformed option is a usage error (it was answered: deny, exit 0)
        from .timestamps import parse_ts

        try:
            parse_ts(now)
        except ValueError:
            click.echo(f"error: --now {now!r} is not an RFC 3339 timestamp (e.g. 2026-11-24T10:00:00Z)", err=True)
            sys.exit(EXIT_USAGE)
    engine = _engine_or_exit(paths, color)
    question = _read_question(source)
    if now is not None and isinstance(question, dict):
        question = {**question, "now": now}
    try:
        return engine.answer(question)
    except QuestionError as e:
        click.echo(f"error: {source}: {e}", err=True)
        sys.exit(EXIT_USAGE)


_EVAL_HELP = """\b
The input is one JSON object that says which question it asks:
  {"question": "gate", "action": {...}, "workflow_state": {...}, "now": "2026-07-02T10:00:00Z"}
  {"question": "rollback", "request": {...}, "now": ...}
  {"question": "authorize", "plan": {...} or "request": {...}, "approvals": [...], "now": ...}
  {"question": "resume", "workflow": "...", "stop": "trigger" or {...}, "evidence": {...}, "now": ...}
`now` is optional (default: the current time). See docs/engine.md."""


@main.command("eval", epilog=_EVAL_HELP)
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--input", "-i", "source", required=True, help="Question JSON file, or - for stdin.")
@click.option("--now", default=None, help="Override the question's `now` (RFC 3339).")
@click.option("--color/--no-color", default=None, help="Colour diagnostics (default: when a terminal).")
def eval_(paths: tuple[str, ...], source: str, now: str | None, color: bool | None) -> None:
    """Answer a gate, rollback, authorize or resume question; print the result as JSON.

    Exit 0 when evaluated (whatever the answer), 2 on an unreadable policy or input."""
    result = _answer(paths, source, now, color)
    click.echo(json.dumps(result.model_dump(mode="json"), indent=2, ensure_ascii=False))
    sys.exit(EXIT_OK)


@main.command("explain", epilog=_EVAL_HELP)
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--input", "-i", "source", required=True, help="Question JSON file, or - for stdin.")
@click.option("--now", default=None, help="Override the question's `now` (RFC 3339).")
@click.option("--color/--no-color", default=None, help="Colour diagnostics (default: when a terminal).")
def explain_(paths: tuple[str, ...], source: str, now: str | None, color: bool | None) -> None:
    """Answer the same question as `eval`, printed as a readable trace.

    Every rule considered, its condition's value or error, and why the answer won."""
    from .explain import explain

    result = _answer(paths, source, now, color)
    click.echo(explain(result), nl=False)
    sys.exit(EXIT_OK)


@main.command("schema")
@click.argument("target", required=False)
@click.option("--action", "action", default=None, help="With POLICIES: only this action type's schema.")
@click.option("--out", "out", default=None, type=click.Path(file_okay=False),
              help="With POLICIES: write DIR/<action type>.json instead of printing.")
@click.option("--color/--no-color", default=None, help="Colour diagnostics (default: when a terminal).")
def schema(target: str | None, action: str | None, out: str | None, color: bool | None) -> None:
    """The JSON Schema of each declared action type of POLICIES (a .policy file or a
    directory), or of the engine's input and output models (all, or the model NAME)."""
    import os

    from .diagnostics import did_you_mean
    from .models import ALL_MODELS, INPUT_MODELS, OUTPUT_MODELS

    if target is not None and (os.path.exists(target) or target not in ALL_MODELS and (
            action is not None or out is not None or target.endswith(".policy") or "/" in target)):
        _action_schemas(target, action, out, color)  # a policy path (an existing path wins over a model name)
    if action is not None or out is not None:
        click.echo("error: --action and --out need a policy path: stopline schema POLICIES --action TYPE", err=True)
        sys.exit(EXIT_USAGE)
    if target is None:
        payload = {
            "inputs": {n: m.model_json_schema(mode="validation") for n, m in INPUT_MODELS.items()},
            "outputs": {n: m.model_json_schema(mode="serialization") for n, m in OUTPUT_MODELS.items()},
        }
    elif target in ALL_MODELS:
        payload = ALL_MODELS[target].model_json_schema(
            mode="validation" if target in INPUT_MODELS else "serialization")
    else:
        hint = did_you_mean(target, ALL_MODELS)
        click.echo(
            f"error: unknown model `{target}`"
            + (f"; {hint}" if hint else "")
            + "\nmodels: "
            + ", ".join(sorted(ALL_MODELS))
            + "\n(or give a policy file or directory: stopline schema POLICIES [--action TYPE] [--out DIR])",
            err=True,
        )
        sys.exit(EXIT_USAGE)
    click.echo(json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False))
    sys.exit(EXIT_OK)


def _action_schemas(target: str, action: str | None, out: str | None, color: bool | None) -> None:
    """`stopline schema POLICIES`: one JSON Schema per declared action type (exits)."""
    from pathlib import Path

    from .diagnostics import did_you_mean, render_all
    from .language.loader import UsageError, load_paths
    from .schema_export import policy_schemas

    try:
        result = load_paths([target])
    except UsageError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    if result.policy_set is None:
        click.echo(render_all(result.diagnostics, result.sources, color=_color(color)), err=True)
        click.echo("error: the policy set has errors; no schema written", err=True)
        sys.exit(EXIT_USAGE)
    pset = result.policy_set
    try:
        schemas = policy_schemas(pset, action)
    except KeyError:
        names = [a.name for w in pset.workflows for a in w.actions]
        hint = did_you_mean(action or "", names)
        click.echo(f"error: no action type `{action}` in {target}" + (f"; {hint}" if hint else ""), err=True)
        sys.exit(EXIT_USAGE)
    except ValueError as e:
        click.echo(f"error: {e}; add a `fields {{ ... }}` block to give it a schema", err=True)
        sys.exit(EXIT_USAGE)
    if out is None:
        payload = schemas[action] if action is not None else schemas
        click.echo(json.dumps(payload, indent=2, ensure_ascii=False))
        sys.exit(EXIT_OK)
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        for name, doc in schemas.items():
            path = Path(out) / f"{name}.json"
            path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            click.echo(f"wrote {path}")
    except OSError as e:
        click.echo(f"error: cannot write to {out}: {e.strerror or e}", err=True)
        sys.exit(EXIT_USAGE)
    if not schemas:
        click.echo(f"no action type of {target} declares its fields; nothing written", err=True)
    sys.exit(EXIT_OK)


# ---------------------------------------------------------------------------- ledger
from .ledger.cli import ledger as _ledger_group  # noqa: E402  (click and the ledger's errors only)

main.add_command(_ledger_group)

# ---------------------------------------------------------------------------- runtime
from .runtime.cli import COMMANDS as _runtime_commands  # noqa: E402  (click only; SQLAlchemy on use)

for _cmd in _runtime_commands:
    main.add_command(_cmd)

# ---------------------------------------------------------------------------- server
from .server.cli import serve as _serve  # noqa: E402  (click only; the web stack loads when it runs)

main.add_command(_serve)

# ---------------------------------------------------------------------------- incidents (issue 18)
from .replay_cli import export_case_cmd as _export_case  # noqa: E402  (click only)
from .replay_cli import replay_cmd as _replay  # noqa: E402
from .runtime.bulk_cli import rollback as _rollback  # noqa: E402  (click only; SQLAlchemy on use)

main.add_command(_replay)
main.add_command(_rollback)
_ledger_group.add_command(_export_case)

from .report.cli import report as _report  # noqa: E402  (click only; matplotlib when it draws)

main.add_command(_report)


if __name__ == "__main__":  # pragma: no cover
    main()
