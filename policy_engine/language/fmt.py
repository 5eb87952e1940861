"""`stopline fmt`: one canonical layout for policy files, comments kept.

The formatter prints the parse tree by hand (no pretty-printer library):

- 2-space indentation, one statement per line, blocks open on the header line
  (`action send_reply {`) and close on a line of their own;
- statements keep their source order; a blank line in the source between two
  statements is kept (runs of blank lines collapse to one); workflows, actions, stop
  triggers and rollback scenarios are always separated by a blank line;
- lists print as `[a, b]` on one line, or one item per line (with a trailing comma)
  when the line would be longer than `MAX_WIDTH`;
- conditions (backticks), strings and numbers are printed exactly as written;
- a comment is kept on the line it trails, or placed before the statement that
  follows it; a comment inside a one-line statement (e.g. between the items of a
  list written over several lines) moves above that statement; the comment after a
  block written on one line (`owners { … } # c`) stays on its header line (`owners {  # c`);
  an acknowledgement directive (`# stopline: acknowledge ...`) at the end of a line goes to
  the end of the first line of the declaration it is attached to, so that formatting never
  changes which warnings it acknowledges.

Before returning, the output is parsed and lowered again; it must give the same IR
(`ir` models compare equal regardless of source locations), the same comments and be
stable under a second formatting. Otherwise `FormatError` is raised and nothing is
written: a formatter bug must never change a policy.

Files with syntax or structural errors are not formatted: their diagnostics are
returned instead. Name resolution (unknown roles and the like) is not needed to
format a single file and is left to `stopline check`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..diagnostics import Diagnostic
from ..source import SourceFile

INDENT = "  "
MAX_WIDTH = 100

# Block statements that are always set apart by a blank line.
_BIG_BLOCKS = frozenset({"workflow", "action_decl", "stop_decl", "rollback_decl"})


class FormatError(Exception):
    """The formatted text would not mean the same as the input (a formatter bug)."""


@dataclass
class FormatResult:
    path: str
    original: str
    formatted: str | None  # None when the file has errors
    diagnostics: list[Diagnostic] = field(default_factory=list)
    source: SourceFile | None = None

    @property
    def ok(self) -> bool:
        return self.formatted is not None

    @property
    def changed(self) -> bool:
        return self.formatted is not None and self.formatted != self.original


# ------------------------------------------------------------------ tree helpers
def _is_tree(x: Any) -> bool:
    return hasattr(x, "data") and hasattr(x, "children")


def _tok(x: Any) -> str:
    return str(x)


def _names(name_list: Any) -> list[str]:
    if name_list is None:
        return []
    return [str(t) for t in name_list.children if t is not None]


def _join_list(items: list[str], prefix: str, depth: int) -> list[str]:
    """`prefix[a, b]` on one line, or one item per line when too long."""
    one = f"{prefix}[{', '.join(items)}]"
    if not items or len(INDENT * depth) + len(one) <= MAX_WIDTH:
        return [one]
    return [f"{prefix}["] + [f"{INDENT}{it}," for it in items] + ["]"]


def _value(node: Any) -> str:
    """A constant's value on one line (strings and numbers as written)."""
    kind = node.data
    if kind in ("v_string", "v_number"):
        return _tok(node.children[0])
    if kind == "v_true":
        return "true"
    if kind == "v_false":
        return "false"
    if kind == "v_null":
        return "null"
    if kind == "v_list":
        return "[" + ", ".join(_value(c) for c in node.children if c is not None) + "]"
    if kind == "v_map":
        pairs = [p for p in node.children if p is not None]
        return "{" + ", ".join(f"{_tok(p.children[0])}: {_value(p.children[1])}" for p in pairs) + "}"
    raise FormatError(f"unexpected value node `{kind}`")  # pragma: no cover


def _value_lines(node: Any, prefix: str, depth: int) -> list[str]:
    one = prefix + _value(node)
    if len(INDENT * depth) + len(one) <= MAX_WIDTH or node.data not in ("v_list", "v_map"):
        return [one]
    if node.data == "v_list":
        items = [_value(c) for c in node.children if c is not None]
        if not items:
            return [one]
        return [prefix + "["] + [f"{INDENT}{it}," for it in items] + ["]"]
    pairs = [p for p in node.children if p is not None]
    if not pairs:
        return [one]
    return [prefix + "{"] + [f"{INDENT}{_tok(p.children[0])}: {_value(p.children[1])}," for p in pairs] + ["}"]


def _type_text(node: Any) -> str:
    """`double`, `list<string>`, `map<string, list<int>>` (type_ref / type_arg)."""
    name, args = node.children
    if args is None:
        return _tok(name)
    return f"{_tok(name)}<{', '.join(_type_text(a) for a in args.children)}>"


def _with_when(lines: list[str], when: Any) -> list[str]:
    """A duty's lines with its ` when `condition`` after the list."""
    if when is None:
        return lines
    return lines[:-1] + [f"{lines[-1]} when {_tok(when.children[0])}"]


def _slot(node: Any) -> str:
    if node.data == "slot_role":
        return f"{_tok(node.children[0])} {_tok(node.children[1])}"
    return f"{_tok(node.children[0])} of [{', '.join(_names(node.children[1]))}]"


# ------------------------------------------------------------------ the printer
class _Printer:
    def __init__(self, src: SourceFile) -> None:
        from .parser import comments_of

        self.src = src
        self.text = src.text
        self.comments = [(s, e, t.rstrip()) for s, e, t in comments_of(src)]
        self.ci = 0
        self.out: list[str] = []
        self.last_end = 0  # source offset where the last printed item ended
        self.at_block_start = True
        self.force_blank = False
        # acknowledgement directives written at the end of a line, by comment offset: the
        # start of the declaration each is attached to (see `_keep_attached`)
        self.attached: dict[int, int] = {}
        self.header_line: dict[int, int] = {}  # declaration start -> index in `out` of its first line
        self.commented: set[int] = set()  # indexes in `out` of the lines that end with a comment

    def _keep_attached(self, tree: Any) -> None:
        """Note where each acknowledgement directive that ends a line is attached (the
        outermost declaration that begins on its line, or the rule written over several
        lines that holds it: acknowledge.py), so that it is printed where it stays attached
        to the same declaration: at the end of that declaration's first line. (Elsewhere a
        comment ending a line stays after what it follows, or moves above the statement it
        was inside, and there a directive may acknowledge another declaration's warnings,
        or none.) Directives on a line of their own move above the declaration they are
        attached to, as any comment does, and stay attached to it."""
        from . import acknowledge

        if not acknowledge.has_directives(self.src):
            return
        places = None
        for s, _, t in self.comments:
            if acknowledge._HEAD.match(t) is None:
                continue
            ls = self.text.rfind("\n", 0, s) + 1
            if not self.text[ls:s].strip():
                continue  # on a line of its own
            if places is None:
                places = acknowledge._Places(self.src, acknowledge.declarations(tree, self.src))
            target = places.attach(s)
            if target is not None:
                self.attached[s] = target.start

    def _relocated(self, s: int, t: str, landing: int) -> bool:
        """Put the directive comment `t` (at offset `s`) at the end of the first line of the
        declaration it is attached to, when it would land on another line (`landing`, an
        index in `out`). False: print it where it lands."""
        start = self.attached.get(s)
        if start is None:
            return False
        h = self.header_line.get(start)
        if h is None or h == landing or h in self.commented:
            return False
        self.out[h] += "  " + t
        self.commented.add(h)
        return True

    # -------------------------------------------------------------- low level
    def _begin_item(self, start: int, force: bool = False) -> None:
        """Decide whether a blank line precedes the item starting at `start`."""
        if not self.at_block_start and self.out:
            if force or self.force_blank or self.text.count("\n", self.last_end, start) >= 2:
                self.out.append("")
        self.at_block_start = False
        self.force_blank = False

    def _comments_before(self, depth: int, upto: int, force: bool = False, anchor: int | None = None) -> None:
        """Print, on their own lines, the comments that start before `upto`.

        Comments after `anchor` (inside the statement that starts there) move above it;
        blank lines are judged from the statement's start for them.
        """
        while self.ci < len(self.comments) and self.comments[self.ci][0] < upto:
            s, e, t = self.comments[self.ci]
            if self._relocated(s, t, len(self.out)):
                self.last_end = e
                self.ci += 1
                continue
            self._begin_item(min(s, anchor) if anchor is not None else s, force)
            force = False
            self.out.append(INDENT * depth + t)
            self.last_end = e
            self.ci += 1

    def _trailing(self, end: int) -> None:
        """Append a comment written right after `end` on its line (nothing but spaces between). A comment
        further along the same line trails what comes later on it: `version "1" owners {…} # c`
        or a one-line `owners { business "b" technical "t" } # c` is the owners statement's."""
        if self.ci < len(self.comments):
            s, e, t = self.comments[self.ci]
            gap = self.text[end:s]
            if s >= end and "\n" not in gap and not gap.strip():
                if not self._relocated(s, t, len(self.out) - 1):
                    self.out[-1] += "  " + t
                    self.commented.add(len(self.out) - 1)
                self.last_end = e
                self.ci += 1

    def _skip_to(self, pos: int, ch: str) -> int:
        """Offset of the next `ch` at or after `pos`, skipping blanks and comments."""
        text, n = self.text, len(self.text)
        while pos < n:
            c = text[pos]
            if c == "#":
                j = text.find("\n", pos)
                pos = n if j == -1 else j
            elif c == ch:
                return pos
            else:
                pos += 1
        return n  # pragma: no cover - the grammar guarantees the character

    # -------------------------------------------------------------- statements
    def leaf(self, node: Any, depth: int, lines: list[str], force: bool = False) -> None:
        start, end = node.meta.start_pos, node.meta.end_pos
        printed = len(self.out)
        self._comments_before(depth, end, force, anchor=start)
        had_comments = len(self.out) > printed  # (a relocated directive prints no line here)
        self._begin_item(start, force and not had_comments)
        self.header_line[start] = len(self.out)
        self.out.extend(INDENT * depth + ln for ln in lines)
        self.last_end = end
        self._trailing(end)

    def block(self, node: Any, depth: int, header: str, header_end: int, children: list,
              force: bool = False) -> None:
        start, end = node.meta.start_pos, node.meta.end_pos
        brace = self._skip_to(header_end, "{")
        close = end - 1
        printed = len(self.out)
        self._comments_before(depth, brace, force, anchor=start)
        had_comments = len(self.out) > printed  # (a relocated directive prints no line here)
        self._begin_item(start, force and not had_comments)
        inner_comment = self.ci < len(self.comments) and self.comments[self.ci][0] < close
        self.header_line[start] = len(self.out)
        if not children and not inner_comment:
            self.out.append(f"{INDENT * depth}{header} {{}}")
            self.last_end = end
            self._trailing(end)
            if node.data in _BIG_BLOCKS:
                self.force_blank = True
            return
        self.out.append(f"{INDENT * depth}{header} {{")
        self.last_end = brace + 1
        first_child = children[0].meta.start_pos if children else close
        if self.ci < len(self.comments) and self.comments[self.ci][0] < first_child:
            self._trailing(brace + 1)
        elif "\n" not in self.text[brace:end]:  # a block written on one line: its trailing comment
            self._trailing(end)  # goes on its header line, the line that now stands for the statement
        self.at_block_start = True
        self.items(children, depth + 1)
        self._comments_before(depth + 1, close)
        self.force_blank = False
        self.out.append(f"{INDENT * depth}}}")
        self.at_block_start = False
        self.last_end = end
        self._trailing(end)
        if node.data in _BIG_BLOCKS:
            self.force_blank = True

    def items(self, nodes: Iterable[Any], depth: int) -> None:
        for node in nodes:
            self.stmt(node, depth, force=node.data in _BIG_BLOCKS)

    def stmt(self, node: Any, depth: int, force: bool = False) -> None:  # noqa: C901 - one case per statement
        k = node.data
        ch = node.children
        if k == "workflow":
            self.block(node, depth, f"workflow {_tok(ch[0])}", ch[0].end_pos, ch[1:], force)
        elif k in ("action_decl", "stop_decl", "rollback_decl"):
            kw = {"action_decl": "action", "stop_decl": "stop", "rollback_decl": "rollback"}[k]
            self.block(node, depth, f"{kw} {_tok(ch[0])}", ch[0].end_pos, ch[1:], force)
        elif k == "owners_decl":
            self.block(node, depth, "owners", node.meta.start_pos + len("owners"), ch, force)
        elif k == "resume_decl":
            self.block(node, depth, "resume when", node.meta.start_pos + len("resume"), ch, force)
        elif k == "after_window_decl":
            self.block(node, depth, "after window", node.meta.start_pos + len("after"), ch, force)
        elif k in ("fields_decl", "evidence_decl"):
            kw = "fields" if k == "fields_decl" else "evidence"
            self.block(node, depth, kw, node.meta.start_pos + len(kw), [c for c in ch if c is not None], force)
        elif k == "field_decl" and ch[2].data == "type_object":
            obj = ch[2]
            head = f"{_tok(ch[0])}{'?' if ch[1] is not None else ''}:"
            if obj.children[0] is not None:
                head += f" {_tok(obj.children[0])}"
            self.block(node, depth, head, obj.meta.start_pos, [c for c in obj.children[1:] if c is not None], force)
        else:
            self.leaf(node, depth, self.leaf_lines(node, depth), force)

    def leaf_lines(self, node: Any, depth: int) -> list[str]:  # noqa: C901 - one case per statement
        k = node.data
        ch = node.children
        simple = {
            "version_decl": "version",
            "default_decl": "default",
            "system_decl": "system",
            "verify_decl": "verify",
            "description_decl": "description",
            "severity_decl": "severity",
            "owner_decl": "owner",
            "stop_rollback_decl": "rollback",
            "route_decl": "route",
        }
        lists = {
            "roles_decl": "roles",
            "side_effects_decl": "side_effects",
            "receipt_decl": "receipt",
            "affects_decl": "affects",
            "notify_decl": "notify",
        }
        if k in simple:
            return [f"{simple[k]} {_tok(ch[0])}"]
        if k in lists:
            return _join_list(_names(ch[0]), lists[k] + " ", depth)
        if k == "owner":
            return [f"{_tok(ch[0])} {_tok(ch[1])}"]
        if k == "const_decl":
            return _value_lines(ch[1], f"const {_tok(ch[0])} = ", depth)
        if k == "reversible_decl":
            klass, via, within = ch
            parts = ["irreversible" if klass.type == "IRREVERSIBLE" else f"reversible {_tok(klass)}"]
            if via is not None:
                parts.append(f"via {_tok(via.children[0])}")
            if within is not None:
                parts.append(f"within {_tok(within.children[0])}")
            return [" ".join(parts)]
        if k == "prerequisite_decl":
            name, cel = ch
            return [" ".join(["prerequisite"] + ([_tok(name)] if name is not None else []) + [_tok(cel)])]
        if k == "gate_rule":
            effect, name, appr, cel = ch
            parts = [_tok(effect)]
            if name is not None:
                parts.append(_tok(name))
            if appr is not None:
                if appr.data == "approvers_one":
                    parts.append(f"by {_tok(appr.children[0])} {_tok(appr.children[1])}")
                else:
                    parts.append(f"by {_tok(appr.children[0])} of [{', '.join(_names(appr.children[1]))}]")
            parts += ["when", _tok(cel)]
            return [" ".join(parts)]
        if k == "stop_when":
            return [f"when {_tok(ch[0])}"]
        if k == "criterion":
            name, cel, desc = ch
            return [f"{_tok(name)}: {_tok(cel)}" + (f" {_tok(desc)}" if desc is not None else "")]
        if k == "authorize_decl":
            slots = [c for c in ch if c is not None and c.data != "distinct"]
            distinct = [c for c in ch if c is not None and c.data == "distinct"]
            line = "authorize " + " and ".join(_slot(s) for s in slots)
            if distinct:
                refs = [".".join(str(t) for t in r.children) for r in distinct[0].children]
                line += " distinct from " + ", ".join(refs)
            return [line]
        if k == "compensate_decl":
            items = [c for c in ch if c is not None]
            when = items.pop() if items and _is_tree(items[-1]) else None
            return _with_when(_join_list([_tok(c) for c in items], "compensate ", depth), when)
        if k == "duty_notify_decl":
            return _with_when(_join_list(_names(ch[0]), "notify ", depth), ch[1])
        if k == "field_decl":
            return [f"{_tok(ch[0])}{'?' if ch[1] is not None else ''}: {_type_text(ch[2])}"]
        if k == "cost_decl":
            return [f"cost {_tok(ch[0])} {_tok(ch[1])}"]
        if k == "fields_from":
            return [f"fields from {_tok(ch[0])}"]
        if k == "cascade_decl":
            return [f"cascade depth {_tok(ch[0])}"]
        if k == "while_stopped_decl":
            return ["runs_while_stopped"]
        raise FormatError(f"unexpected statement `{k}`")  # pragma: no cover

    def file(self, tree: Any) -> str:
        self._keep_attached(tree)
        top = list(tree.children)
        for node in top:
            self.stmt(node, 0, force=node.data in _BIG_BLOCKS)
        self._comments_before(0, len(self.text) + 1)
        return "\n".join(self.out) + "\n" if self.out else ""


# ------------------------------------------------------------------ entry points
def _lower_ok(src: SourceFile):
    """(PolicyFile or None, diagnostics) for one file: parse and lower, no name checks."""
    from .lower import lower
    from .parser import parse

    pr = parse(src)
    if pr.tree is None:
        return None, None, list(pr.diagnostics)
    try:
        pf, diags = lower(src, pr.tree)
    except RecursionError:
        return None, None, [Diagnostic("E005", "error", "policy file nests too deeply", src.span(0, 0))]
    # a `fields from` file that cannot be imported (E119) changes nothing of the layout
    errors = [d for d in diags if d.severity == "error" and d.code != "E119"]
    return (pf if not errors else None), pr.tree, errors


def _render(src: SourceFile, tree: Any) -> str:
    return _Printer(src).file(tree)


def _comment_texts(src: SourceFile) -> list[str]:
    from .parser import comments_of

    return [t.rstrip() for _, _, t in comments_of(src)]


def format_source(src: SourceFile) -> FormatResult:
    """Format one file. Returns its diagnostics instead when it has errors.

    Raises `FormatError` when the output would not round-trip (a formatter bug).
    """
    pf, tree, diags = _lower_ok(src)
    if pf is None:
        return FormatResult(src.path, src.text, None, diags, src)
    out = _render(src, tree)
    out_src = SourceFile(src.path, out)
    pf2, tree2, diags2 = _lower_ok(out_src)
    if pf2 is None:
        raise FormatError(f"{src.path}: formatted output does not parse back ({diags2[0].message if diags2 else '?'})")
    if pf2 != pf:
        raise FormatError(f"{src.path}: formatted output would change the policy's meaning")
    if _comment_texts(out_src) != _comment_texts(src):
        raise FormatError(f"{src.path}: formatted output would lose or reorder comments")
    if _render(out_src, tree2) != out:
        raise FormatError(f"{src.path}: formatting is not stable on this file")
    return FormatResult(src.path, src.text, out, [], src)


def format_text(text: str, path: str = "<string>") -> str:
    """Format policy text held in memory. Raises `PolicyError` if it has errors."""
    from ..diagnostics import PolicyError
    from .loader import decode_source

    src, err = decode_source(text.encode("utf-8", errors="surrogatepass"), path)
    if err is not None:
        raise PolicyError([err], {path: SourceFile(path, text)})
    assert src is not None  # read_source/decode_source return a source whenever they return no error
    res = format_source(src)
    if res.formatted is None:
        raise PolicyError(res.diagnostics, {path: src})
    return res.formatted


def format_path(path: Path, display: str | None = None) -> FormatResult:
    """Read and format one file (the original text is returned as read, CRLF and all)."""
    from .loader import display_source, read_source

    display = display or str(path)
    src, err = read_source(path, display)
    if err is not None:
        if src is None and err.code in ("E002", "E004") and not err.message.startswith("cannot read"):
            src = display_source(path, display)  # only to show the caret, as `check` does
        return FormatResult(display, "", None, [err], src)
    assert src is not None  # read_source returns a source whenever it returns no error
    raw = path.read_bytes().decode("utf-8", errors="replace")
    res = format_source(src)
    res.original = raw
    return res


def unified_diff(result: FormatResult) -> str:
    import difflib

    if result.formatted is None:
        return ""
    return "".join(
        difflib.unified_diff(
            result.original.splitlines(keepends=True),
            result.formatted.splitlines(keepends=True),
            fromfile=f"{result.path} (original)",
            tofile=f"{result.path} (formatted)",
        )
    )
