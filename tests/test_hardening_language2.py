"""Hardening of the language front end, second pass: the W201 label on the edge that closes
the cycle, a policy scan that meets vanishing directories and pseudo-filesystems, E108's help
for a window of no time, and `stopline fmt` keeping a one-line block's trailing comment with
its statement.

Each test names the defect it pins. Refresh the snapshots with
`python -m pytest tests/test_hardening_language2.py --snapshot-update` and review the diff.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from policy_engine.cli import main
from policy_engine.diagnostics import render_all
from policy_engine.language import loader
from policy_engine.language.fmt import format_text
from policy_engine.language.loader import UsageError, load_paths, load_text

HEAD = 'roles [reviewer]\n\nworkflow "w" {\n  version "1"\n  owners { business "b" technical "t" }\n'


def _action(name: str, effects: list[str]) -> str:
    return (f'  action {name} {{\n    system "s"\n    reversible full via "x"\n'
            f'    side_effects [{", ".join(effects)}]\n  }}\n')


def _w201(text: str):
    res = load_text(text, "x.policy")
    ds = [d for d in res.diagnostics if d.code == "W201"]
    return ds, res


def _at(text: str, d) -> tuple[int, str]:
    return d.span.line, text[d.span.start:d.span.end]


# ------------------------------------------------------------------ W201
def test_w201_points_at_the_edge_that_closes_the_cycle(snapshot):
    """Defect: the label "this edge closes the cycle" sat on the first edge in name order
    (`a -> b`, wherever the loop was closed): it now marks the back edge the walk met, and
    the cycle is spelled so that this edge is its last (`... -> c -> a`)."""
    text = HEAD + _action("a", ["b"]) + _action("b", ["c"]) + _action("c", ["a"]) + "}\n"
    (d,), res = _w201(text)
    assert d.message == "side effects form a cycle: a -> b -> c -> a"
    assert d.label == "this edge closes the cycle"
    assert _at(text, d) == (19, "a")  # `side_effects [a]` of action c (the closing edge c -> a)
    assert render_all([d], res.sources) == snapshot


def test_w201_entered_away_from_its_first_name_is_spelled_from_where_the_walk_entered():
    """a -> c -> b -> c: the walk enters the cycle at c, and the edge that closes it is b -> c;
    the message spells the cycle from c so that its last edge is the one marked."""
    text = HEAD + _action("a", ["c"]) + _action("b", ["c"]) + _action("c", ["b"]) + "}\n"
    (d,), _ = _w201(text)
    assert d.message == "side effects form a cycle: c -> b -> c"
    line, item = _at(text, d)
    assert item == "c" and text.splitlines()[line - 1].strip() == "side_effects [c]"
    assert line == 14  # in action b, not action a's `side_effects [c]` (line 9)


def test_w201_the_closing_edge_is_the_exact_item_when_a_list_names_several():
    text = (HEAD + _action("a", ["x", "b"]) + _action("b", ["y", "a"]) + _action("x", []).replace(
        "    side_effects []\n", "") + _action("y", []).replace("    side_effects []\n", "") + "}\n")
    (d,), _ = _w201(text)
    assert d.message == "side effects form a cycle: a -> b -> a"
    line, item = _at(text, d)
    assert item == "a" and text.splitlines()[line - 1].strip() == "side_effects [y, a]"


def test_w201_self_loop_and_two_cycles_each_once():
    text = HEAD + _action("a", ["a", "b"]) + _action("b", ["a"]) + "}\n"
    ds, _ = _w201(text)
    assert [d.message for d in ds] == ["side effects form a cycle: a -> a", "side effects form a cycle: a -> b -> a"]
    assert [_at(text, d)[1] for d in ds] == ["a", "a"]
    assert [_at(text, d)[0] for d in ds] == [9, 14]  # a's own `a`; b's `a`


# ------------------------------------------------------------------ scanning for policy files
POLICY = HEAD + '  action a {\n    system "s"\n    reversible full via "x"\n  }\n}\n'


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "keep").mkdir(parents=True)
    (root / "keep" / "w.policy").write_text(POLICY)
    for d in ("gone", "gone2/deeper"):
        (root / d).mkdir(parents=True)
        (root / d / "x.txt").write_text("x")
    return root


def _vanishing(monkeypatch, victims: list[Path]) -> None:
    """os.scandir as if each victim directory vanished (a process exiting under /proc) just
    before it is listed: it is removed, then listed."""
    real = os.scandir
    left = {os.fspath(v) for v in victims}

    def scandir(path=".", *a, **k):
        if isinstance(path, int):  # (rmtree lists by file descriptor)
            return real(path, *a, **k)
        p = os.fspath(path)
        if p in left:
            left.discard(p)
            shutil.rmtree(p)
        return real(path, *a, **k)
    monkeypatch.setattr(os, "scandir", scandir)


def test_a_directory_that_vanishes_during_the_scan_is_skipped(tmp_path, monkeypatch):
    """Defect: `Path.rglob` let the FileNotFoundError of a directory that vanished between
    its listing and its scan escape: `policies: ["/"]` in a suite said "loading the
    policies failed: FileNotFoundError…" (and `stopline check /` crashed the same way)."""
    root = _tree(tmp_path)
    _vanishing(monkeypatch, [root / "gone", root / "gone2" / "deeper"])
    res = load_paths([str(root)])
    assert res.policy_set is not None and [d.code for d in res.diagnostics] == []
    assert [p.name for p in loader.find_files([root], ".policy")[0]] == ["w.policy"]


def test_a_suite_over_a_tree_with_a_vanishing_directory_runs(tmp_path, monkeypatch):
    root = _tree(tmp_path)
    suite = tmp_path / "s.policy-test.yaml"
    suite.write_text(f'policies: ["{root}"]\nnow: "2026-11-24T10:00:00Z"\ncases:\n  - name: a\n'
                     '    gate: {action: {workflow: w, type: a}}\n    expect: {effect: require_approval}\n')
    _vanishing(monkeypatch, [root / "gone"])
    res = CliRunner().invoke(main, ["test", str(suite)])
    assert "FileNotFoundError" not in res.output and "loading the policies failed" not in res.output, res.output
    assert res.exit_code == 0, res.output


def test_a_policy_file_that_vanishes_before_it_is_read_is_a_located_e004(tmp_path, monkeypatch):
    root = _tree(tmp_path)
    (root / "keep" / "v.policy").write_text(POLICY.replace('"w"', '"v"'))
    real = loader.read_source

    def read(path, display):
        if path.name == "v.policy":
            path.unlink()
        return real(path, display)
    monkeypatch.setattr(loader, "read_source", read)
    res = load_paths([str(root)])
    assert [(d.code, d.message) for d in res.diagnostics] == [
        ("E004", "cannot read policy file: No such file or directory")]


def test_pseudo_filesystems_are_refused_by_name_and_skipped_under_a_directory(tmp_path, monkeypatch, snapshot):
    """`stopline check /proc` (or a suite's `policies: ["/sys"]`) is refused with one line;
    a scan of `/` does not descend into /proc, /sys or /dev (shown here with a directory
    standing in for /proc)."""
    out = []
    for p in ("/proc", "/proc/self", "/sys", "/dev"):
        res = CliRunner().invoke(main, ["check", p])
        assert res.exit_code == 2 and "Traceback" not in res.output
        out.append(res.output)
        with pytest.raises(UsageError, match="pseudo-filesystem"):
            load_paths([p])
    assert out == snapshot
    root = _tree(tmp_path)
    fake = root / "fakeproc"
    (fake / "1").mkdir(parents=True)
    (fake / "1" / "p.policy").write_text("not even a policy {{{")
    assert len(loader.find_files([root], ".policy")[0]) == 2
    monkeypatch.setattr(loader, "PSEUDO_FILESYSTEMS", (os.path.realpath(fake),))
    assert [p.name for p in loader.find_files([root], ".policy")[0]] == ["w.policy"]
    assert load_paths([str(root)]).policy_set is not None
    with pytest.raises(UsageError, match="is inside"):
        load_paths([str(fake / "1")])


def test_the_scan_finds_what_rglob_found(tmp_path):
    """The walk that replaced `Path.rglob`: hidden files and directories included, symbolic
    links to files included, symbolic links to directories not followed, sorted."""
    root = tmp_path / "r"
    (root / ".hidden" / "deep").mkdir(parents=True)
    (root / "b").mkdir()
    for f in (".hidden/deep/z.policy", "b/a.policy", "top.policy", ".dot.policy", "b/no.policyx"):
        (root / f).write_text(POLICY)
    (root / "b" / "link.policy").symlink_to(root / "top.policy")
    (root / "dirlink").symlink_to(root / "b", target_is_directory=True)
    (root / "b" / "dangling.policy").symlink_to(root / "nope.policy")
    want = sorted(q for q in root.rglob("*.policy") if q.is_file())
    got = loader._walk(root, ".policy")
    assert got == want and len(got) == 5


# ------------------------------------------------------------------ E108
@pytest.mark.parametrize("window", ["0s", "0d", "000h", "36501d"])
def test_e108_for_a_window_of_no_time_or_too_long_has_a_help_line(window, snapshot):
    """Defect: `within 0s` was E108 with a message and a bare caret: no label, no help."""
    text = POLICY.replace('reversible full via "x"', f'reversible full via "x" within {window}')
    res = load_text(text, "x.policy")
    (d,) = [d for d in res.diagnostics if d.code == "E108"]
    assert d.help and d.label
    assert render_all([d], res.sources) == snapshot


# ------------------------------------------------------------------ fmt
CASES = {
    "one-line owners then version": ('  owners { business "b" technical "t" } # c\n  version "1"\n'),
    "version and one-line owners on one line": ('  version "1" owners { business "b" technical "t" } # c\n'),
    "one-line action, comments around": ('  version "1" # v\n  owners { business "b" technical "t" }   # c\n'
                                         '  # before a\n  action a { system "s" reversible full via "x" } # act\n'),
    "block over two lines": ('  version "1"\n  owners { business "b" # b\n    technical "t" } # c\n'),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fmt_keeps_a_one_line_blocks_trailing_comment_with_its_statement(name, snapshot):
    """Defect: the comment after a one-line `owners {…} # c` went to the first statement on
    its line that was printed: `business "b"  # c` inside the expanded block, or the
    `version "1"  # c` line when version came first on that line."""
    text = 'roles [reviewer]\n\nworkflow "w" {\n' + CASES[name] + "}\n"
    out = format_text(text, "x.policy")
    assert format_text(out, "x.policy") == out  # idempotent
    lines = out.splitlines()
    c = next(ln for ln in lines if ln.rstrip().endswith("# c"))
    assert c.strip().startswith("owners {") or c.strip() == "}  # c", out
    assert not any(ln.strip().startswith(("version", "business")) and "# c" in ln for ln in lines), out
    assert out == snapshot
