"""The `stopline` command line. The only module that imports click; owns exit codes.

Exit codes: 0 ok, 1 policy or test failures, 2 usage or unreadable input.
"""

from __future__ import annotations

import json
import sys

import click

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class _Group(click.Group):
    def main(self, *args, **kwargs):  # usage errors exit 2 (click's default), never a traceback
        try:
            return super().main(*args, **kwargs)
        except KeyboardInterrupt:  # pragma: no cover
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stopline", prog_name="stopline")
def main() -> None:
    """Stopline: policy-as-code for AI-agent workflows."""


def _color(ctx_color: bool | None) -> bool:
    if ctx_color is not None:
        return ctx_color
    return sys.stdout.isatty()


# ---------------------------------------------------------------------------- check
@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
@click.option("--color/--no-color", default=None, help="Colour the output (default: when a terminal).")
def check(paths: tuple[str, ...], fmt: str, strict: bool, color: bool | None) -> None:
    """Parse, resolve, type- and lint-check policy files."""
    from .diagnostics import render_all
    from .loader import UsageError, load_paths

    try:
        result = load_paths(paths)
    except UsageError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    diags = result.diagnostics
    failed = bool(result.errors) or (strict and bool(result.warnings))
    if fmt == "json":
        payload = {
            "ok": not failed,
            "files": sorted(result.sources),
            "content_hash": result.policy_set.content_hash if result.policy_set else None,
            "diagnostics": [d.to_json() for d in diags],
        }
        click.echo(json.dumps(payload, indent=2, sort_keys=True))
    else:
        if diags:
            click.echo(render_all(diags, result.sources, color=_color(color)), err=False)
        if not failed:
            nwf = len(result.policy_set.workflows) if result.policy_set else 0
            nfiles = len(result.sources)
            click.echo(f"ok: {nfiles} file{'s' if nfiles != 1 else ''}, {nwf} workflow{'s' if nwf != 1 else ''}"
                       + (f", {len(result.warnings)} warning{'s' if len(result.warnings) != 1 else ''}" if result.warnings else ""))
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

    from .diagnostics import render_all
    from .formatter import FormatError, format_path, unified_diff
    from .loader import UsageError, discover

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
            click.echo(f"error: {e}; file left unchanged (please report this formatter bug)", err=True)
            failed = True
            continue
        except OSError as e:  # pragma: no cover - raced with a delete
            click.echo(f"error: cannot read {f}: {e.strerror or e}", err=True)
            unreadable = True
            continue
        if res.formatted is None:
            if any(d.code == "E004" for d in res.diagnostics):
                unreadable = True
            sources = {res.path: res.source} if res.source is not None else {}
            click.echo(render_all(res.diagnostics, sources, color=_color(color)), err=True)
            click.echo(f"{res.path}: not formatted (fix the errors above first)", err=True)
            failed = True
            continue
        if not res.changed:
            continue
        would_change.append(res.path)
        if show_diff:
            click.echo(unified_diff(res), nl=False)
        if check_only or show_diff:
            continue
        # write atomically next to the file, keeping its permissions
        fd, tmp = tempfile.mkstemp(prefix=f".{f.name}.", suffix=".fmt", dir=str(f.parent))
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
                out.write(res.formatted)
            os.chmod(tmp, f.stat().st_mode & 0o7777)
            os.replace(tmp, f)
        except OSError as e:
            Path(tmp).unlink(missing_ok=True)
            click.echo(f"error: cannot write {f}: {e.strerror or e}", err=True)
            unreadable = True
            continue
        click.echo(f"formatted {res.path}")
    if check_only:
        for p in would_change:
            click.echo(f"would reformat {p}")
    if unreadable:
        sys.exit(EXIT_USAGE)
    if failed or ((check_only or show_diff) and would_change):
        sys.exit(EXIT_FAIL)
    sys.exit(EXIT_OK)


if __name__ == "__main__":  # pragma: no cover
    main()
