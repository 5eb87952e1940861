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


if __name__ == "__main__":  # pragma: no cover
    main()
