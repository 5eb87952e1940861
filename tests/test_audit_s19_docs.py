"""The documentation keeps up with the code: every command, option and HTTP route is documented,
every documented option and route exists, and every link between the pages resolves.

What tests/test_docs.py does not cover: it runs the code blocks; this checks the reference
against the command tree (`stopline ... --help`), the server's OpenAPI document and the pages'
own headings, both ways where a drift would mislead a user.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", ROOT / "SECURITY.md", *DOCS]
CLI_MD = ROOT / "docs" / "cli.md"
SERVER_MD = ROOT / "docs" / "server.md"
FENCED = re.compile(r"^[ \t]*```.*?^[ \t]*```[ \t]*$", re.S | re.M)


def _prose(text: str) -> str:
    """The text without its fenced code blocks."""
    return FENCED.sub("", text)


# --- the command line --------------------------------------------------------------------


def _commands() -> list[tuple[str, click.Command]]:
    """Every command of the CLI as ("stopline ledger verify", command), the root first."""
    from policy_engine.cli import main

    out: list[tuple[str, click.Command]] = []

    def walk(cmd: click.Command, path: str) -> None:
        out.append((path, cmd))
        if isinstance(cmd, click.Group):
            for name, sub in sorted(cmd.commands.items()):
                if not sub.hidden:
                    walk(sub, f"{path} {name}")

    walk(main, "stopline")
    return out


def _options(cmd: click.Command) -> list[list[str]]:
    """The names of each option of `cmd` (help excluded), e.g. [["--color", "--no-color"], ["-i", "--input"]]."""
    return [
        [*p.opts, *p.secondary_opts]
        for p in cmd.params
        if isinstance(p, click.Option) and not p.hidden and "--help" not in p.opts
    ]


def _cli_rows() -> dict[str, set[Path]]:
    """docs/cli.md's command table: "stopline ledger verify" -> the pages its row links."""
    rows: dict[str, set[Path]] = {}
    for line in CLI_MD.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\| `(stopline [^`]*)` \|.*\|(.*)\|$", line)
        if not m:
            continue
        words = []
        for w in m[1].split()[1:]:
            if not re.fullmatch(r"[a-z][a-z-]*", w):
                break
            words.append(w)
        pages = {(CLI_MD.parent / href.split("#")[0]).resolve() for href in re.findall(r"\]\(([^)]+)\)", m[2])}
        rows.setdefault(" ".join(["stopline", *words]), set()).update(pages)
    return rows


def _mentions(text: str, name: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text) is not None


def test_every_command_has_a_row_in_the_cli_page():
    rows = _cli_rows()
    missing = [path for path, cmd in _commands()[1:] if not isinstance(cmd, click.Group) and path not in rows]
    assert not missing, f"docs/cli.md's command table has no row for: {missing}"
    unknown = sorted(set(rows) - {path for path, _ in _commands()})
    assert not unknown, f"docs/cli.md lists commands that do not exist: {unknown}"


def test_every_option_is_documented_where_its_command_is():
    """Each option is named in docs/cli.md or in a page its command's row links to."""
    rows = _cli_rows()
    cli_text = CLI_MD.read_text(encoding="utf-8")
    undocumented = []
    for path, cmd in _commands():
        texts = [cli_text] + [p.read_text(encoding="utf-8") for p in rows.get(path, ()) if p.exists()]
        for names in _options(cmd):
            if not any(_mentions(t, n) for t in texts for n in names):
                undocumented.append(f"{path} {'/'.join(names)}")
    assert not undocumented, f"options no page documents: {undocumented}"


def _resolve(words: list[str]) -> tuple[click.Command, list[str]]:
    from policy_engine.cli import main

    cmd, path = main, []
    for w in words:
        if isinstance(cmd, click.Group) and w in cmd.commands:
            cmd, path = cmd.commands[w], [*path, w]
        else:
            break
    return cmd, path


def test_every_option_the_docs_give_a_command_exists():
    """`stopline ledger show 0 --history` in a page: `ledger show` has `--history`."""
    wrong = []
    for page in PAGES:
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            for m in re.finditer(r"stopline((?: [a-z][\w-]*)+)([^`\n]*)", line):
                words = m[1].split()
                cmd, path = _resolve(words)
                if not path:
                    continue
                known = {name for names in _options(cmd) for name in names} | {"-h", "--help"}
                rest = " ".join(words[len(path):]) + " " + m[2]
                for opt in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", rest):
                    if opt not in known:
                        wrong.append(f"{page.relative_to(ROOT)}:{n}: `stopline {' '.join(path)}` has no {opt}")
    assert not wrong, "\n".join(wrong)


# --- the server --------------------------------------------------------------------------

ROUTE = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`\s]*)`")


def _norm(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


@pytest.fixture(scope="module")
def openapi_routes(tmp_path_factory) -> set[tuple[str, str]]:
    pytest.importorskip("fastapi", reason="the server extra")
    from starlette.testclient import TestClient

    from policy_engine.server import ServerConfig, create_app

    ledger = tmp_path_factory.mktemp("s19") / "ledger.db"
    app = create_app(ServerConfig(str(ROOT / "policies"), ledger=f"sqlite:///{ledger}", reload_interval=0))
    with TestClient(app) as http:
        doc = http.get("/openapi.json").json()
    return {(m.upper(), _norm(p)) for p, ops in doc["paths"].items() for m in ops}


def test_every_http_route_is_documented_in_the_server_page(openapi_routes):
    documented = {(m, _norm(p)) for m, p in ROUTE.findall(SERVER_MD.read_text(encoding="utf-8"))}
    missing = sorted(f"{m} {p}" for m, p in openapi_routes - documented)
    assert not missing, f"docs/server.md does not name these routes of /openapi.json: {missing}"


def test_every_route_the_server_page_names_exists(openapi_routes):
    documented = {(m, _norm(p)) for m, p in ROUTE.findall(SERVER_MD.read_text(encoding="utf-8"))}
    # the reviewer's pages, /openapi.json and /docs are served outside the OpenAPI document
    api = {(m, p) for m, p in documented if not p.startswith(("/ui", "/openapi.json", "/docs"))}
    unknown = sorted(f"{m} {p}" for m, p in api - openapi_routes)
    assert not unknown, f"docs/server.md names routes the server does not have: {unknown}"


# --- links and anchors -------------------------------------------------------------------


def _anchors(page: Path) -> set[str]:
    """The ids of a page's headings, as MkDocs (Python-Markdown's toc) and GitHub make them."""
    from markdown.extensions.toc import slugify, unique

    text = _prose(page.read_text(encoding="utf-8"))
    used: set[str] = set()
    github_used: dict[str, int] = {}
    out = set(re.findall(r'<a (?:name|id)="([^"]+)"', text))
    for m in re.finditer(r"^#{1,6}[ \t]+(.*?)[ \t#]*$", text, re.M):
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m[1])
        out.add(unique(slugify(title.replace("`", ""), "-"), used))
        gh = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        n = github_used.get(gh, 0)
        github_used[gh] = n + 1
        out.add(gh if n == 0 else f"{gh}-{n}")
    return out


def _links(page: Path) -> list[str]:
    text = re.sub(r"`[^`\n]*`", "", _prose(page.read_text(encoding="utf-8")))
    return re.findall(r"\]\(([^)\s]+)(?:[ \t]+\"[^\"]*\")?\)", text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_and_anchors_resolve(page: Path):
    broken = []
    for url in _links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", url):
            continue  # https:, mailto:
        path, _, anchor = url.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{url}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{url}: {target.name} has no heading #{anchor}")
    assert not broken, broken


SECTION_REF = re.compile(
    r"`?((?:docs/)?[\w-]+\.md)`?, \"([^\"]+)\""  # docs/incidents.md, "Approving and reading a batch"
    r"|\"([^\"]+)\" in `?((?:docs/)?[\w-]+\.md)`?"  # "The server" in `SECURITY.md`
)


def _headings(page: Path) -> set[str]:
    text = _prose(page.read_text(encoding="utf-8"))
    return {re.sub(r"^\d+\.\s+", "", h.replace("`", "")) for h in re.findall(r"^#{1,6}[ \t]+(.*?)[ \t#]*$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_sections_named_in_prose_exist(page: Path):
    """`docs/incidents.md, "Approving and reading a batch"` names a heading of that page."""
    broken = []
    for m in SECTION_REF.finditer(page.read_text(encoding="utf-8").replace("\n", " ")):
        name, title = (m[1], m[2]) if m[1] else (m[4], m[3])
        target = next((p for p in (ROOT / name, ROOT / "docs" / name) if p.exists()), None)
        if target is None:
            broken.append(f"{name}: no such page")
            continue
        heads = _headings(target)
        if not any(title == h or h.startswith(title) for h in heads):
            broken.append(f'{name}, "{title}": no such heading')
    assert not broken, broken


# --- the tests a promise names ------------------------------------------------------------

EVIDENCE = re.compile(r"`(tests/[\w/]+\.py)`|`(tests/[\w/]+\.py)?::(test_\w+)`")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_test_named_as_evidence_exists(page: Path):
    """`tests/test_x.py::test_y` (and a following `::test_z`, of the same file) is a real test."""
    missing, current = [], None
    for m in EVIDENCE.finditer(page.read_text(encoding="utf-8")):
        if m[1]:
            current = m[1]
            continue
        current = m[2] or current
        source = ROOT / current if current else None
        if source is None or not source.exists():
            missing.append(f"{current}::{m[3]}: no such file")
        elif not re.search(rf"^\s*(?:async )?def {m[3]}\b", source.read_text(encoding="utf-8"), re.M):
            missing.append(f"{current}::{m[3]}")
    assert not missing, missing
