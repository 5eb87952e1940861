"""The documentation's examples mean what they say: what tests/test_docs.py does not check.

tests/test_docs.py runs every block of README.md and docs/*.md by its fence language: a
``stopline`` block loads and is canonical, a ``python`` block runs, a ``console`` block's
output is the real output, an ``sh`` block's ``stopline`` commands exit 0, a ``json`` block
parses, a ``yaml`` suite passes, a ``text`` block is a golden diagnostic. This file checks
what running alone cannot see:

- ``json``: the block is accepted by what takes it — a question envelope through the model
  ``stopline eval`` validates it with and answered without errors, an action or a rollback
  request evaluated without input errors, an AuthZEN request through the server and the
  AuthZEN response after it against the real one, a batch body through its pydantic model
  (and its ``select`` compiles), and anything else is part of a real answer to one of
  examples/questions/*.json (an output excerpt).
- ``yaml``: a fixture suite (run by tests/test_docs.py) or an identities file, loaded by
  ``Identities.load`` beside stand-in key files.
- ``python``: a ``print(x)  # literal`` line prints that value; a ``def test_...(fixtures)``
  block is called with the real fixtures (a doc's test that is only defined proves nothing).
- ``sh``: every command is one we can check: ``stopline`` (run by tests/test_docs.py), a
  ``python path.py --option`` whose script exists and has the option, ``pip install`` of
  extras pyproject.toml declares, pytest on paths that exist, ``mkdocs build``.

Every block is checked (here or there) or marked, on the line before its fence or before
its ``<!-- illustrative -->``, with ``<!-- snippet: REASON -->``: why it cannot be checked
(a synopsis, an elided value, a command needing a server). A block neither checked nor
marked fails `test_every_block_is_checked_or_marked`, so a new example cannot go unchecked.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re
import shlex
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_docs import COPIED, ROOT, Block, blocks_of, commands_of, cwd

# Pages other sessions are editing: their blocks are skipped (the skip names this list) until the lead empties it.
PAGES_PENDING: list[str] = []

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = re.compile(r"^<!-- snippet: (?P<reason>\S.*?) -->$")
NOW = "2026-11-24T10:00:00Z"


def marker(block: Block) -> str | None:
    """The reason of the `<!-- snippet: ... -->` among the HTML comments right before the fence."""
    lines = block.page.read_text(encoding="utf-8").splitlines()[: block.line - 1]
    for line in reversed(lines):
        s = line.strip()
        if not s:
            continue
        if not (s.startswith("<!--") and s.endswith("-->")):
            return None
        if m := MARK.match(s):
            return m["reason"]
    return None


def rel(block: Block) -> str:
    return block.page.relative_to(ROOT).as_posix()


ALL = [b for p in PAGES for b in blocks_of(p)]


def params(pred) -> list:
    out = []
    for b in ALL:
        if not pred(b) or marker(b) is not None:
            continue
        pending = rel(b) in PAGES_PENDING
        out.append(pytest.param(b, id=b.id, marks=[pytest.mark.skip(reason=f"{rel(b)} is in PAGES_PENDING")]
                                if pending else []))
    return out


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("snippets")
    for r in COPIED:
        if (ROOT / r).exists():
            shutil.copytree(ROOT / r, root / r)
    return root


@pytest.fixture(scope="module")
def engine(sandbox: Path):
    import policy_engine

    return policy_engine.load(sandbox / "policies")


# --- what each kind of block is ------------------------------------------------------------

def json_docs(text: str) -> list[Any]:
    """One document, or one per line (as tests/test_docs.py reads them)."""
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        return [json.loads(ln) for ln in text.splitlines() if ln.strip()]


def json_kind(doc: Any) -> str:
    if not isinstance(doc, dict):
        return "excerpt"
    keys = set(doc)
    if "question" in keys:
        return "question"
    if {"subject", "action", "resource"} <= keys:
        return "authzen request"
    if isinstance(doc.get("decision"), bool) and "context" in keys:
        return "authzen response"
    if keys & {"select", "executions"} and {"scenario", "reason"} <= keys:
        return "batch body"
    if {"workflow", "scenario", "requested_by", "original"} <= keys:
        return "rollback request"
    if {"workflow", "type"} <= keys:
        return "action"
    return "excerpt"


def yaml_kind(doc: Any) -> str | None:
    if isinstance(doc, dict) and {"suite", "cases"} <= set(doc):
        return "suite"
    if isinstance(doc, dict) and doc and set(doc) <= {"tokens", "jwt"}:
        return "identities"
    return None


def sh_kind(argv: list[str]) -> str | None:
    """What checks a command of an sh block (None: nothing can)."""
    if argv[0] == "stopline":
        return "stopline"  # tests/test_docs.py runs it
    if argv[:3] == ["python", "-m", "pytest"] or argv[0] == "pytest":
        return "pytest"
    if argv[0] == "python" and len(argv) > 1 and argv[1].endswith(".py"):
        return "script"
    if argv[:2] == ["pip", "install"]:
        return "pip"
    if argv[:2] == ["mkdocs", "build"]:
        return "mkdocs"  # tests/test_docs.py builds the site --strict
    return None


def unchecked(b: Block) -> str | None:
    """Why a block is neither checked here nor by tests/test_docs.py (None: it is checked)."""
    if b.illustrative:
        return "marked <!-- illustrative -->: tests/test_docs.py skips it"
    if b.lang == "json":
        return None  # every shape has a check: an input the code takes, else part of a real answer
    if b.lang == "yaml":
        return None if yaml_kind(yaml.safe_load(b.text)) else "a YAML block that is neither a suite nor identities"
    if b.lang == "sh":
        bad = [shlex.join(c) for c in commands_of(b.text) if sh_kind(c) is None]
        return f"commands nothing runs: {bad}" if bad else None
    return None  # stopline, python, console, text: run by tests/test_docs.py


def test_every_block_is_checked_or_marked():
    problems = []
    for b in ALL:
        if rel(b) in PAGES_PENDING:
            continue
        why = unchecked(b)
        if why and marker(b) is None:
            problems.append(f"{b.id}: {why}; check it, or say why not with <!-- snippet: REASON -->")
    assert not problems, "\n".join(problems)


def test_markers_give_a_reason_and_sit_on_a_block():
    """A `<!-- snippet: ... -->` names why, and marks the block right after it (not prose)."""
    for page in PAGES:
        if page.relative_to(ROOT).as_posix() in PAGES_PENDING:
            continue
        lines = page.read_text(encoding="utf-8").splitlines()
        starts = {b.line for b in blocks_of(page)}
        for i, line in enumerate(lines):
            if not line.strip().startswith("<!-- snippet"):  # (prose may name the marker in backticks)
                continue
            assert MARK.match(line.strip()), f"{page.name}:{i + 1}: write <!-- snippet: REASON -->"
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or lines[j].strip() == "<!-- illustrative -->"):
                j += 1
            assert j + 1 in starts, f"{page.name}:{i + 1}: a snippet marker must come right before a code block"


EXCERPT = re.compile(r"^an excerpt of `(?P<path>[\w./-]+)`")


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id) for b in ALL if rel(b) not in PAGES_PENDING
                                   and EXCERPT.match(marker(b) or "")])
def test_excerpt_is_in_its_file(block: Block):
    """A block marked `<!-- snippet: an excerpt of `PATH`... -->` is lines of that file (indentation aside)."""
    path = EXCERPT.match(marker(block) or "")["path"]  # type: ignore[index]
    whole = [ln.strip() for ln in (ROOT / path).read_text(encoding="utf-8").splitlines()]
    part = [ln.strip() for ln in block.text.strip("\n").splitlines()]
    assert any(whole[i:i + len(part)] == part for i in range(len(whole))), f"not lines of {path}"


# --- json -----------------------------------------------------------------------------------

def is_part(part: Any, whole: Any) -> bool:
    """`part` is `whole` with some keys of its objects left out."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(k in whole and is_part(v, whole[k]) for k, v in part.items())
    if isinstance(part, list):
        return isinstance(whole, list) and len(part) == len(whole) and all(map(is_part, part, whole))
    return part == whole


def authzen_response(sandbox: Path, body: dict) -> dict:
    from starlette.testclient import TestClient

    from policy_engine.server import ServerConfig, create_app

    with TestClient(create_app(ServerConfig(str(sandbox / "examples" / "authzen-todo"), reload_interval=0))) as http:
        r = http.post("/access/v1/evaluation", json=body)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("block", params(lambda b: b.lang == "json" and not b.illustrative))
def test_json_block_is_accepted(block: Block, engine, sandbox: Path):
    from policy_engine.cel import compile_cel
    from policy_engine.models import QUESTION_MODELS, RollbackRequest
    from policy_engine.server import authzen
    from policy_engine.server.native import BatchBody

    for doc in json_docs(block.text):
        kind = json_kind(doc)
        if kind == "question":
            QUESTION_MODELS[doc["question"]].model_validate(doc)
            answer = engine.answer(doc)  # a malformed envelope raises QuestionError
            if {} not in doc.values():  # (an empty object in place of the action, request...: a synopsis)
                assert not answer.errors, f"the question shown is answered with errors: {answer.errors}"
        elif kind == "action":
            d = engine.evaluate(doc, now=NOW)
            assert d.errors == (), f"the action shown gives input errors: {[e.message for e in d.errors]}"
        elif kind == "rollback request":
            RollbackRequest.model_validate(doc)
            plan = engine.classify_rollback(doc, now=doc.get("requested_at") or NOW)
            assert plan.errors == (), plan.errors
        elif kind == "authzen request":
            authzen.parse_evaluation(doc)
            assert authzen_response(sandbox, doc)["context"]["effect"] in ("allow", "deny", "require_approval", "stop")
        elif kind == "authzen response":
            # the response to the AuthZEN request shown last before it on the page
            before = [b for b in blocks_of(block.page) if b.lang == "json" and b.line < block.line
                      and json_kind(json_docs(b.text)[0]) == "authzen request"]
            assert before, "an AuthZEN response is shown after the request it answers"
            real = authzen_response(sandbox, json_docs(before[-1].text)[0])
            assert set(doc) == set(real) and set(doc["context"]) == set(real["context"]), (doc, real)
            fixed = {k: v for k, v in real["context"].items() if k not in ("decision_id", "policy_hash")}
            assert doc["decision"] == real["decision"] and is_part(fixed, doc["context"]), (doc, real)
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", doc["context"]["policy_hash"])
        elif kind == "batch body":
            body = BatchBody.model_validate(doc)
            if body.select:
                compile_cel(body.select)
        else:  # an excerpt of an output: part of a real answer
            answers = [engine.answer(json.loads(q.read_text(encoding="utf-8"))).model_dump(mode="json")
                       for q in sorted((sandbox / "examples" / "questions").glob("*.json"))]
            assert any(is_part(doc, a) for a in answers), \
                "neither an input the code takes nor part of an answer to examples/questions/*.json"


# --- yaml -----------------------------------------------------------------------------------

@pytest.mark.parametrize("block", params(lambda b: b.lang == "yaml" and not b.illustrative
                                         and yaml_kind(yaml.safe_load(b.text)) == "identities"))
def test_identities_block_loads(block: Block, tmp_path: Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from policy_engine.server.identity import Identities

    conf = yaml.safe_load(block.text).get("jwt") or {}
    pem = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if "public_key" in conf:  # the key file it names, a stand-in
        (tmp_path / conf["public_key"]).write_bytes(pem)
    if "jwks" in conf:
        (tmp_path / conf["jwks"]).write_text('{"keys": []}', encoding="utf-8")
    (tmp_path / "identities.yaml").write_text(block.text, encoding="utf-8")
    ids = Identities.load(tmp_path / "identities.yaml")
    for t in yaml.safe_load(block.text).get("tokens") or []:
        assert t["sha256"].lower() in ids._tokens


# --- python ---------------------------------------------------------------------------------

SHOWN = re.compile(r"^(?P<indent>\s*)print\((?P<expr>.*)\)\s*#\s*(?P<shown>.+)$")


def shown_outputs(text: str) -> list[tuple[int, str]]:
    """(line, value) of every `print(x)  # value` whose comment is a Python literal."""
    out = []
    for i, line in enumerate(text.splitlines()):
        if (m := SHOWN.match(line)):
            with contextlib.suppress(ValueError, SyntaxError):
                ast.literal_eval(m["shown"])
                out.append((i, m["shown"].strip()))
    return out


@pytest.mark.parametrize("block", params(lambda b: b.lang == "python" and not b.illustrative
                                         and shown_outputs(b.text)))
def test_python_shown_output_is_printed(block: Block, sandbox: Path):
    buf = io.StringIO()
    with cwd(sandbox), contextlib.redirect_stdout(buf):
        exec(compile(block.text, block.id, "exec"), {"__name__": "__docs__"})
    printed = buf.getvalue().splitlines()
    prints = [i for i, ln in enumerate(block.text.splitlines()) if SHOWN.match(ln) or ln.lstrip().startswith("print(")]
    assert len(printed) == len(prints), printed
    for line, shown in shown_outputs(block.text):
        real = printed[prints.index(line)]
        assert real == shown, f"line {line + 1} of the block prints {real}, not the {shown} shown"


class _Recorder:
    """Stands for syrupy's `snapshot` in a doc's test: records what it is compared with."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def __eq__(self, other: object) -> bool:
        self.seen.append(other)
        return True

    __hash__ = None  # type: ignore[assignment]


@pytest.mark.parametrize("block", params(lambda b: b.lang == "python" and not b.illustrative
                                         and re.search(r"^def test_\w*\(", b.text, re.M)))
def test_python_test_function_passes(block: Block, sandbox: Path, request: pytest.FixtureRequest):
    ns: dict[str, Any] = {"__name__": "__docs__"}
    exec(compile(block.text, block.id, "exec"), ns)
    tests = [f for name, f in ns.items() if name.startswith("test_") and callable(f)]
    assert tests
    for fn in tests:
        snap = _Recorder()
        args = {name: snap if name == "snapshot" else request.getfixturevalue(name)
                for name in fn.__code__.co_varnames[: fn.__code__.co_argcount]}
        with cwd(sandbox):
            fn(**args)
        if "snapshot" in args:
            assert snap.seen and all(v not in (None, "", {}, []) for v in snap.seen), snap.seen


# --- sh -------------------------------------------------------------------------------------

@pytest.mark.parametrize("block", params(lambda b: b.lang == "sh" and not b.illustrative
                                         and any(sh_kind(c) not in (None, "stopline") for c in commands_of(b.text))))
def test_sh_commands_exist(block: Block):
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
                 ["project"]["optional-dependencies"])
    for argv in commands_of(block.text):
        kind = sh_kind(argv)
        if kind == "script":
            script = ROOT / argv[1]
            assert script.is_file(), f"`{shlex.join(argv)}`: no {argv[1]}"
            source = script.read_text(encoding="utf-8")
            for opt in (a for a in argv[2:] if a.startswith("--")):
                assert f'"{opt}"' in source or f"'{opt}'" in source, f"`{shlex.join(argv)}`: {argv[1]} has no {opt}"
        elif kind == "pip":
            for spec in argv[2:]:
                if spec != "-e":
                    for extra in re.findall(r"\[([\w,-]+)\]", spec)[:1]:
                        missing = set(extra.split(",")) - extras
                        assert not missing, f"`{shlex.join(argv)}`: pyproject.toml has no extra {missing}"
        elif kind == "pytest":
            for path in (a for a in argv[1:] if "/" in a):
                assert (ROOT / path).exists(), f"`{shlex.join(argv)}`: no {path}"
