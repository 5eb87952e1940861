"""Parse tree -> IR. Structural problems found while lowering become Diagnostics.

No names are resolved here (that is check.py's job); this only builds the model.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from lark import Token, Tree

from ..diagnostics import Diagnostic
from ..limits import (
    INT64_MAX,
    INT64_MIN,
    MAX_APPROVERS,
    MAX_CASCADE_DEPTH,
    MAX_EXPRESSION_LENGTH,
    MAX_RULES_PER_FILE,
    MAX_WINDOW_SECONDS,
)
from ..source import SourceFile, Span
from ..timestamps import parse_window
from . import ir

# `Span(path, start, end, line, col, end_line, end_col)` for every located node: the frozen
# dataclass's `__init__` sets each field through `object.__setattr__`; filling the new
# instance's `__dict__` in field order makes the same object in a third of the time. Only
# while Span is exactly those fields and nothing runs after them (else its constructor).
_new = object.__new__
_SPAN_FIELDS = ("path", "start", "end", "line", "col", "end_line", "end_col")
# the escapes of a JSON string besides `\uXXXX`
_ESCAPES = frozenset('"\\/bfnrt')
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_MAX_ESCAPE_ERRORS = 5  # reported for one string at most
# a quoted string's value (`Lowerer.string`): `json.loads(text, strict=False)` builds a
# decoder and its scanner for each call (every string of a policy: 1,154 in the 1,000-rule
# benchmark text); one, made once, decodes the same (a STRING token starts with `"`, so
# loads' refusal of a leading BOM never applies)
_STRING_DECODER = json.JSONDecoder(strict=False)
_DIRECT_SPANS = (tuple(getattr(Span, "__dataclass_fields__", ())) == _SPAN_FIELDS
                 and not hasattr(Span, "__post_init__") and not hasattr(Span, "__slots__"))


def _span(path: str, start: int, end: int, line: int, col: int, end_line: int, end_col: int) -> Span:
    if not _DIRECT_SPANS:  # pragma: no cover - Span changed: its own constructor
        return Span(path, start, end, line, col, end_line, end_col)
    sp = _new(Span)
    d = sp.__dict__
    d["path"] = path
    d["start"] = start
    d["end"] = end
    d["line"] = line
    d["col"] = col
    d["end_line"] = end_line
    d["end_col"] = end_col
    return sp


# Words authors write for a cost's unit, for "did you mean" help.
COST_UNIT_SYNONYMS = {
    "hour": "hours", "hrs": "hours", "hr": "hours", "h": "hours", "person_hours": "hours", "man_hours": "hours",
    "dollars": "USD", "dollar": "USD", "usd": "USD", "euros": "EUR", "euro": "EUR", "eur": "EUR",
    "pounds": "GBP", "pound": "GBP", "gbp": "GBP", "yen": "JPY",
}

# A child of a lark tree (lark types children as either). The grammar puts a Token where the
# helpers below read one; they only take its text and position.
Child = Token | Tree


class Lowerer:
    def __init__(self, src: SourceFile) -> None:
        self.src = src
        self.path = src.path
        self.diags: list[Diagnostic] = []
        self.rule_count = 0
        self.imports: list[str] = []  # `fields from` files

    # -------------------------------------------------------------- helpers
    def loc(self, node: Any) -> ir.Loc:
        if isinstance(node, Token):
            start = node.start_pos or 0
            end = node.end_pos if node.end_pos is not None else start
            line, col, end_line, end_col = node.line, node.column, node.end_line, node.end_column
            if (line is not None and col is not None and end_line is not None and end_col is not None
                    and start == node.start_pos):
                # the lexer's lines and columns are `src.span`'s (1-based, `\n` ends a line)
                return ir.Loc(_span(self.path, start, end, line, col, end_line, end_col))
            return ir.Loc(self.src.span(start, end))
        meta = getattr(node, "meta", None)
        if meta is not None and not getattr(meta, "empty", True):
            return ir.Loc(_span(self.path, meta.start_pos, meta.end_pos, meta.line, meta.column, meta.end_line,
                                meta.end_column))
        return ir.Loc(self.src.span(0, 0))

    def err(self, code: str, message: str, node: Any, label: str | None = None, help: str | None = None,
            severity: Literal["error", "warning"] = "error", notes: tuple[str, ...] = ()) -> None:
        loc = node if isinstance(node, ir.Loc) else self.loc(node)
        span = loc.span if loc.span is not None else self.src.span(0, 0)  # every node has a span; never unlocated
        self.diags.append(Diagnostic(code, severity, message, span, label=label, help=help, notes=notes))

    def string(self, tok: Child) -> str:
        r"""A quoted string's value: JSON escapes decoded (a tab typed in it kept as it is). An
        escape JSON does not have (`\q`, `\x41`, a `\.` copied from a regular expression) is an
        error at the escape (E002): taken as written, `"evil\.com"` would silently be another
        value than the one meant, and a rule comparing with it would never match. So is a
        `\ud800` escape, half of a surrogate pair without its other half: it decodes to no
        character, and no input holds it (the pair `\ud83d\ude00` is one character)."""
        text = str(tok)
        try:
            value = _STRING_DECODER.decode(text)
        except ValueError:
            self._bad_escapes(tok, text)
            return text[1:-1]
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: E002 at each such escape
            self._lone_surrogates(tok, text)
            return text[1:-1]
        return value

    def _lone_surrogates(self, tok: Child, text: str) -> None:
        r"""E002 at each `\uXXXX` escape of `text` (a STRING token JSON reads) that is half of a
        surrogate pair without its other half next to it."""
        start = tok.start_pos if isinstance(tok, Token) and tok.start_pos is not None else None
        found = 0
        i = 1
        while i < len(text) - 1 and found < _MAX_ESCAPE_ERRORS:
            if text[i] != "\\":
                i += 1
                continue
            if text[i + 1] != "u":
                i += 2
                continue
            cp = int(text[i + 2:i + 6], 16)
            if 0xD800 <= cp <= 0xDBFF and text[i + 6:i + 8] == "\\u" and _HEX4.fullmatch(text, i + 8, i + 12) \
                    and 0xDC00 <= int(text[i + 8:i + 12], 16) <= 0xDFFF:
                i += 12  # a pair: one character
                continue
            if not 0xD800 <= cp <= 0xDFFF:
                i += 6
                continue
            shown = text[i:i + 6]
            half = "high (first)" if cp <= 0xDBFF else "low (second)"
            message = f"lone surrogate escape `{shown}` in a string"
            label = f"the {half} half of a surrogate pair, alone: no character"
            help_ = ("a character above U+FFFF is written as a pair of escapes, high half first "
                     "(`\\ud83d\\ude00` for U+1F600), or typed as it is; remove a lone half")
            found += 1
            if start is None:
                self.err("E002", message, tok, label=label, help=help_)
            else:
                self.diags.append(Diagnostic("E002", "error", message, self.src.span(start + i, start + i + 6),
                                             label=label, help=help_))
            i += 6
        if not found:  # (not expected) still never a silent value
            self.err("E002", "this string cannot be read", tok, label="not a JSON string",
                     help="strings are written as in JSON")

    def _bad_escapes(self, tok: Child, text: str) -> None:
        """E002 at each escape of `text` (a STRING token, quotes included) that JSON refuses."""
        start = tok.start_pos if isinstance(tok, Token) and tok.start_pos is not None else None
        found = 0
        i = 1
        while i < len(text) - 1 and found < _MAX_ESCAPE_ERRORS:
            if text[i] != "\\":
                i += 1
                continue
            nxt = text[i + 1]
            if nxt in _ESCAPES:
                i += 2
                continue
            if nxt == "u" and _HEX4.fullmatch(text, i + 2, i + 6):
                i += 6
                continue
            end = i + 2
            if nxt == "u":  # `\u` and the hex digits there are (fewer than four)
                while end < len(text) - 1 and end < i + 6 and text[end] in _HEX_DIGITS:
                    end += 1
            shown = text[i:end]
            help_ = ("strings take JSON escapes: `\\\"`, `\\\\`, `\\/`, `\\b`, `\\f`, `\\n`, `\\r`, `\\t`, "
                     "`\\u00e9`; for a backslash write `\\\\` (\"evil\\\\.com\")")
            message = f"invalid escape `{shown}` in a string"
            found += 1
            if start is None:
                self.err("E002", message, tok, label="not an escape", help=help_)
            else:
                self.diags.append(Diagnostic("E002", "error", message, self.src.span(start + i, start + end),
                                             label="not an escape", help=help_))
            i = end
        if not found:  # (not expected: JSON reads every other string) still never a silent value
            self.err("E002", "this string cannot be read", tok, label="not a JSON string",
                     help="strings are written as in JSON")

    def name(self, tok: Child) -> ir.Name:
        return ir.Name(name=str(tok), loc=self.loc(tok))

    def names(self, tree: Tree | None) -> tuple[ir.Name, ...]:
        if tree is None:
            return ()
        return tuple(self.name(t) for t in tree.children if isinstance(t, Token))

    def condition(self, tok: Child) -> ir.Condition:
        text = str(tok)[1:-1]
        if len(text) > MAX_EXPRESSION_LENGTH:
            self.err(
                "E005",
                f"condition is {len(text)} characters long; the limit is {MAX_EXPRESSION_LENGTH}",
                tok,
                label="too long",
                help="split the condition into several rules or move lists into `const` declarations",
            )
        return ir.Condition(source=text, loc=self.loc(tok))

    def once(self, seen: dict, key: str, node: Any, keep: str = "keep one") -> bool:
        """Report a statement given twice in one block. Returns True the first time."""
        if key in seen:
            first = seen[key]
            self.err(
                "E121",
                f"`{key}` is given twice",
                node,
                label="second declaration",
                help=f"the first is at {first}; {keep}",
            )
            return False
        seen[key] = self.loc(node).span
        return True

    def integer(self, tok: Child, what: str, minimum: int = 0, maximum: int = 1_000_000) -> int:
        text = str(tok).lstrip("0") or "0"
        value = int(text) if len(text) <= 19 else 10**19  # int() refuses > 4300 digits
        if value < minimum or value > maximum:
            self.err(
                "E108",
                f"{what} must be between {minimum} and {maximum}, not {text if len(text) <= 19 else text[:16] + '...'}",
                tok,
            )
            return max(minimum, min(value, maximum))
        return value

    # -------------------------------------------------------------- file
    def file(self, tree: Tree) -> ir.PolicyFile:
        roles: list[ir.Name] = []
        consts: list[ir.Const] = []
        workflows: list[ir.Workflow] = []
        for child in tree.children:
            if child.data == "workflow":
                workflows.append(self.workflow(child))
            elif child.data == "roles_decl":
                roles.extend(self.names(child.children[0]))
            elif child.data == "const_decl":
                consts.append(self.const(child))
        return ir.PolicyFile(
            path=self.src.path,
            roles=tuple(roles),
            constants=tuple(consts),
            workflows=tuple(workflows),
            imports=tuple(dict.fromkeys(self.imports)),
            loc=self.loc(tree),
        )

    def const(self, tree: Tree) -> ir.Const:
        name_tok, value = tree.children
        return ir.Const(name=str(name_tok), value=self.value(value), loc=self.loc(name_tok))

    def value(self, node: Any) -> Any:
        # iterative-safe: nesting is bounded by parser.check_nesting
        if isinstance(node, Tree):
            kind = node.data
            if kind == "v_string":
                return self.string(node.children[0])
            if kind == "v_number":
                text = str(node.children[0])
                if any(c in text for c in ".eE"):
                    v = float(text)
                    if v != v or v in (float("inf"), float("-inf")):
                        self.err("E108", f"number `{text}` is out of range", node)
                        return 0.0
                    return v
                v = int(text) if len(text) <= 40 else INT64_MAX + 1  # int() refuses > 4300 digits
                if not INT64_MIN <= v <= INT64_MAX:
                    self.err("E108", f"number `{text}` does not fit in a 64-bit integer", node)
                    return 0
                return v
            if kind == "v_true":
                return True
            if kind == "v_false":
                return False
            if kind == "v_null":
                return None
            if kind == "v_list":
                return tuple(self.value(c) for c in node.children if c is not None)
            if kind == "v_map":
                out: dict[str, Any] = {}
                for pair in node.children:
                    if pair is None:
                        continue
                    kn, vn = pair.children
                    key = self.string(kn)
                    if key in out:
                        self.err("E120", f"duplicate key `{key}` in map", kn)
                    out[key] = self.value(vn)
                return out
        raise AssertionError(f"unexpected value node {node!r}")  # pragma: no cover

    # -------------------------------------------------------------- workflow
    def workflow(self, tree: Tree) -> ir.Workflow:
        name_tok, *items = tree.children
        seen: dict = {}
        fields: dict[str, Any] = {"name": self.string(name_tok), "loc": self.loc(name_tok)}
        roles: list[ir.Name] = []
        consts: list[ir.Const] = []
        actions: list[ir.ActionType] = []
        stops: list[ir.StopTrigger] = []
        scenarios: list[ir.Scenario] = []
        wf = fields["name"]
        for item in items:
            kind = item.data
            if kind == "version_decl":
                if self.once(seen, "version", item):
                    fields["version"] = self.string(item.children[0])
            elif kind == "owners_decl":
                owners = tuple(
                    ir.Owner(kind=str(o.children[0]), name=self.string(o.children[1]), loc=self.loc(o.children[0]))
                    for o in item.children
                )
                if self.once(seen, "owners", item, keep="put every owner in one block"):
                    fields["owners"] = owners
                else:  # (E121) the kinds only the second block gives are no missing owner (E134) too
                    given = {o.kind for o in fields.get("owners", ())}
                    fields["owners"] = fields.get("owners", ()) + tuple(o for o in owners if o.kind not in given)
            elif kind == "default_decl":
                if self.once(seen, "default", item):
                    tok = item.children[0]
                    fields["default_effect"] = str(tok)
                    fields["default_loc"] = self.loc(tok)
            elif kind == "roles_decl":
                roles.extend(self.names(item.children[0]))
            elif kind == "const_decl":
                consts.append(self.const(item))
            elif kind == "action_decl":
                actions.append(self.action(item, wf))
            elif kind == "stop_decl":
                stops.append(self.stop(item, wf))
            elif kind == "rollback_decl":
                scenarios.append(self.scenario(item, wf))
        return ir.Workflow(
            roles=tuple(roles),
            constants=tuple(consts),
            actions=tuple(actions),
            stops=tuple(stops),
            scenarios=tuple(scenarios),
            **fields,
        )

    # -------------------------------------------------------------- actions
    def action(self, tree: Tree, wf: str) -> ir.ActionType:
        name_tok, *items = tree.children
        seen: dict = {}
        fields: dict[str, Any] = {}
        prereqs: list[ir.Prerequisite] = []
        side: list[ir.Name] = []
        receipt: list[ir.Name] = []
        rules: list[ir.Rule] = []
        for item in items:
            kind = item.data
            if kind == "system_decl":
                if self.once(seen, "system", item):
                    fields["system"] = self.string(item.children[0])
            elif kind == "description_decl":
                if self.once(seen, "description", item):
                    fields["description"] = self.string(item.children[0])
            elif kind == "verify_decl":
                if self.once(seen, "verify", item):
                    fields["verify"] = self.string(item.children[0])
            elif kind == "while_stopped_decl":
                if self.once(seen, "runs_while_stopped", item):
                    fields["runs_while_stopped"] = True
            elif kind == "reversible_decl":
                if self.once(seen, "reversible", item):
                    fields["reversibility"] = self.reversibility(item)
            elif kind == "prerequisite_decl":
                name_t, cel = item.children
                cond = self.condition(cel)
                pname = str(name_t) if name_t is not None else cond.source.strip()
                prereqs.append(
                    ir.Prerequisite(
                        name=pname,
                        named=name_t is not None,
                        condition=cond,
                        loc=self.loc(name_t if name_t is not None else cel),
                    )
                )
            elif kind == "side_effects_decl":
                side.extend(self.names(item.children[0]))
            elif kind == "receipt_decl":
                receipt.extend(self.names(item.children[0]))
            elif kind == "gate_rule":
                rules.append(self.rule(item))
            elif kind == "fields_decl":
                if self.once(seen, "fields", item):
                    fields["fields"] = self.field_decls(item.children)
                    fields["fields_loc"] = self.loc(item)
            elif kind == "cost_decl":
                if self.once(seen, "cost", item):
                    fields["cost"] = self.cost(item)
            elif kind == "fields_from":
                if self.once(seen, "fields", item):
                    fields["fields"] = self.fields_from(item.children[0], str(name_tok), wf)
                    fields["fields_loc"] = self.loc(item)
        return ir.ActionType(
            name=str(name_tok),
            workflow=wf,
            prerequisites=tuple(prereqs),
            side_effects=tuple(side),
            receipt=tuple(receipt),
            rules=tuple(rules),
            loc=self.loc(name_tok),
            **fields,
        )

    def fields_from(self, tok: Child, action: str, wf: str) -> tuple[ir.FieldDecl, ...] | None:
        """`fields from "file.json"`: the declarations of a JSON Schema file (E119 if it is
        unreadable or says more than a declaration can)."""
        from .schema_import import ImportProblem, import_fields, resolve

        self.imports.append(str(resolve(self.src.path, self.string(tok))))  # watched even when missing
        try:
            return import_fields(self.src.path, self.string(tok), self.loc(tok), action, wf)
        except ImportProblem as e:
            self.err("E119", e.message, tok, label="imported from here", help=e.help,
                     notes=(f"at {e.where}",) if e.where else ())
            return None

    def field_decls(self, children: list) -> tuple[ir.FieldDecl, ...]:
        out = []
        for fd in children:
            if fd is None:
                continue
            name_tok, qmark, ftype = fd.children
            out.append(
                ir.FieldDecl(
                    name=str(name_tok), optional=qmark is not None, type=self.field_type(ftype), loc=self.loc(name_tok)
                )
            )
        return tuple(out)

    def field_type(self, tree: Tree) -> ir.FieldTypeRef:
        if tree.data == "type_object":
            name_tok, *decls = tree.children
            body = ir.FieldTypeRef(fields=self.field_decls(decls), loc=self.loc(tree))
            if name_tok is None:
                return body
            return ir.FieldTypeRef(name=str(name_tok), name_loc=self.loc(name_tok), args=(body,), loc=self.loc(tree))
        name_tok, args = tree.children  # type_ref, type_arg
        targs = tuple(self.field_type(a) for a in args.children) if args is not None else ()
        return ir.FieldTypeRef(name=str(name_tok), name_loc=self.loc(name_tok), args=targs, loc=self.loc(tree))

    def cost(self, tree: Tree) -> ir.Cost | None:
        """`cost 40 USD`, `cost 2.5 hours`: a finite amount, not negative (E108), and a unit,
        a three-letter currency code or `hours` (E118)."""
        num, unit_tok = tree.children
        text, unit = str(num), str(unit_tok)
        amount = float(text)
        ok = True
        if amount != amount or amount in (float("inf"), float("-inf")):
            self.err("E108", f"cost `{text}` is out of range", num, label="not a finite number",
                     help="write the amount as a plain number: `cost 40 USD`")
            ok = False
        elif amount < 0:
            self.err("E108", f"a cost cannot be negative, not `{text}`", num, label="negative",
                     help=f"a cost is what undoing spends: write `cost {text.lstrip('+-')} {unit}`")
            ok = False
        if unit not in ir.COST_TIME_UNITS and not (len(unit) == 3 and unit.isascii() and unit.isupper()
                                                   and unit.isalpha()):
            low = unit.lower()
            guess = COST_UNIT_SYNONYMS.get(low) or (unit.upper() if len(unit) == 3 and unit.isalpha() else None)
            self.err("E118", f"unknown cost unit `{unit}`", unit_tok,
                     label="expected a currency code (`USD`, `EUR`) or `hours`",
                     help=f"did you mean `{guess}`?" if guess else
                     "write an ISO 4217 currency code in capitals (`USD`, `EUR`, `GBP`) or `hours`")
            ok = False
        if not ok:
            return None
        return ir.Cost(amount=amount, unit=unit, unit_loc=self.loc(unit_tok), loc=self.loc(tree))

    def reversibility(self, tree: Tree) -> ir.Reversibility:
        klass_tok, via, within = tree.children
        fields: dict[str, Any] = {"klass": str(klass_tok), "klass_loc": self.loc(klass_tok)}
        if via is not None:
            fields["method"] = self.string(via.children[0])
        if within is not None:
            tok = within.children[0]
            text = str(tok)
            seconds = parse_window(text)
            if seconds <= 0 or seconds > MAX_WINDOW_SECONDS:
                zero = seconds <= 0
                self.err(
                    "E108",
                    f"reversal window `{text}` must be more than zero and at most "
                    f"{MAX_WINDOW_SECONDS // (365 * 86400)} years",
                    tok,
                    label="a window of no time" if zero else "longer than the limit",
                    help=("the window is how long after it runs the action can still be reversed: give it a "
                          "length (`within 60s`, `within 30d`), leave `within` out when there is no time limit, "
                          "or write `irreversible` when it cannot be reversed at all") if zero else
                    (f"at most `{MAX_WINDOW_SECONDS // 86400}d`; leave `within` out when there is no time limit"),
                )
                seconds = max(1, min(seconds, MAX_WINDOW_SECONDS))
            fields.update(window_seconds=seconds, window_text=text, window_loc=self.loc(tok))
        return ir.Reversibility(loc=self.loc(tree), **fields)

    def rule(self, tree: Tree) -> ir.Rule:
        effect_tok, name_tok, approvers, cel = tree.children
        self.rule_count += 1
        if self.rule_count == MAX_RULES_PER_FILE + 1:
            self.err(
                "E005",
                f"more than {MAX_RULES_PER_FILE} rules in one file",
                effect_tok,
                help="split the policy into several files",
            )
        cond = self.condition(cel)
        effect = str(effect_tok)
        appr = None
        if approvers is not None:
            count_tok = approvers.children[0]
            count = self.integer(count_tok, "the number of approvers", 1, MAX_APPROVERS)
            if approvers.data == "approvers_one":
                roles: tuple[ir.Name, ...] = (self.name(approvers.children[1]),)
                any_of = False
            else:
                roles = self.names(approvers.children[1])
                any_of = True
            appr = ir.Approvers(count=count, roles=roles, any_of=any_of, loc=self.loc(approvers))
        if name_tok is not None:
            name, named = str(name_tok), True
        else:
            digest = hashlib.sha256(f"{effect}\x00{cond.source}".encode()).hexdigest()[:6]
            name, named = f"{effect}_{digest}", False
        return ir.Rule(
            name=name,
            named=named,
            effect=effect,
            effect_loc=self.loc(effect_tok),
            condition=cond,
            approvers=appr,
            loc=self.loc(name_tok if name_tok is not None else effect_tok),
        )

    # -------------------------------------------------------------- stop triggers
    def stop(self, tree: Tree, wf: str) -> ir.StopTrigger:
        name_tok, *items = tree.children
        seen: dict = {}
        fields: dict[str, Any] = {}
        lists: dict[str, list] = {"affects": [], "receipt": [], "notify": [], "criteria": []}
        for item in items:
            kind = item.data
            if kind == "stop_when":
                if self.once(seen, "when", item):
                    fields["condition"] = self.condition(item.children[0])
            elif kind == "severity_decl":
                if self.once(seen, "severity", item):
                    fields["severity"] = str(item.children[0])
                    fields["severity_loc"] = self.loc(item.children[0])
            elif kind == "owner_decl":
                if self.once(seen, "owner", item):
                    fields["owner"] = self.string(item.children[0])
            elif kind == "description_decl":
                if self.once(seen, "description", item):
                    fields["description"] = self.string(item.children[0])
            elif kind == "stop_rollback_decl":
                if self.once(seen, "rollback", item):
                    fields["rollback"] = self.string(item.children[0])
            elif kind == "affects_decl":
                lists["affects"].extend(self.names(item.children[0]))
            elif kind == "receipt_decl":
                lists["receipt"].extend(self.names(item.children[0]))
            elif kind == "notify_decl":
                lists["notify"].extend(self.names(item.children[0]))
            elif kind == "evidence_decl":
                if self.once(seen, "evidence", item):
                    fields["evidence"] = self.field_decls(item.children)
            elif kind == "resume_decl":
                fields["has_resume_block"] = True
                # a second block is E121 like any repeated statement (its criteria were merged
                # with the first's, in silence)
                if not self.once(seen, "resume when", item, keep="put every criterion in one block"):
                    continue
                for crit in item.children:
                    cname, cel, desc = crit.children
                    lists["criteria"].append(
                        ir.Criterion(
                            name=str(cname),
                            condition=self.condition(cel),
                            description=self.string(desc) if desc is not None else None,
                            loc=self.loc(cname),
                        )
                    )
        as_tuples: dict[str, Any] = {k: tuple(v) for k, v in lists.items()}
        return ir.StopTrigger(name=str(name_tok), workflow=wf, loc=self.loc(name_tok), **as_tuples, **fields)

    # -------------------------------------------------------------- rollback scenarios
    def _rollback_items(self, items: list, seen: dict, fields: dict, notify: list, comp: list) -> list:
        """Statements shared by a scenario and its `after window` block; returns the others."""
        rest = []
        for item in items:
            kind = item.data
            if kind == "route_decl":
                if self.once(seen, "route", item):
                    fields["route"] = self.name(item.children[0])
            elif kind == "authorize_decl":
                if self.once(seen, "authorize", item):
                    fields["authorization"] = self.authorization(item)
            elif kind == "duty_notify_decl":
                names = self.names(item.children[0])
                when = item.children[1]
                if when is not None:
                    cond = self.condition(when.children[0])
                    names = tuple(n.model_copy(update={"when": cond}) for n in names)
                notify.extend(names)
            elif kind == "compensate_decl":
                comp.extend(self.compensations(item))
            else:
                rest.append(item)
        return rest

    def scenario(self, tree: Tree, wf: str) -> ir.Scenario:
        name_tok, *items = tree.children
        seen: dict = {}
        fields: dict[str, Any] = {}
        notify: list[ir.Name] = []
        comp: list[ir.CompItem] = []
        for item in self._rollback_items(items, seen, fields, notify, comp):
            kind = item.data
            if kind == "cascade_decl":
                if self.once(seen, "cascade depth", item):
                    fields["cascade_depth"] = self.integer(item.children[0], "the cascade depth", 0, MAX_CASCADE_DEPTH)
            elif kind == "description_decl":
                if self.once(seen, "description", item):
                    fields["description"] = self.string(item.children[0])
            elif kind == "after_window_decl":
                if self.once(seen, "after window", item):
                    fields["escalation"] = self.escalation(item)
            elif kind == "cost_decl":
                if self.once(seen, "cost", item):
                    fields["cost"] = self.cost(item)
        return ir.Scenario(
            name=str(name_tok),
            workflow=wf,
            notify=tuple(notify),
            compensate=tuple(comp),
            loc=self.loc(name_tok),
            **fields,
        )

    def escalation(self, tree: Tree) -> ir.Escalation:
        fields: dict[str, Any] = {}
        notify: list[ir.Name] = []
        comp: list[ir.CompItem] = []
        self._rollback_items(tree.children, {}, fields, notify, comp)  # the grammar allows nothing else
        return ir.Escalation(notify=tuple(notify), compensate=tuple(comp), loc=self.loc(tree), **fields)

    def compensations(self, tree: Tree) -> list[ir.CompItem]:
        out = []
        items: list[Any] = [c for c in tree.children if c is not None]
        when = None
        if items and isinstance(items[-1], Tree):  # duty_when
            when = self.condition(items.pop().children[0])
        for c in items:
            if c.type == "STRING":
                out.append(ir.CompItem(name=self.string(c), is_action=False, when=when, loc=self.loc(c)))
            else:
                out.append(ir.CompItem(name=str(c), is_action=True, when=when, loc=self.loc(c)))
        return out

    def authorization(self, tree: Tree) -> ir.Authorization:
        slots: list[ir.Slot] = []
        refs: list[ir.Ref] = []
        for child in tree.children:
            if child is None:
                continue
            if child.data == "slot_role":
                count = self.integer(child.children[0], "the number of approvers", 1, MAX_APPROVERS)
                slots.append(ir.Slot(count=count, roles=(self.name(child.children[1]),), loc=self.loc(child)))
            elif child.data == "slot_any":
                count = self.integer(child.children[0], "the number of approvers", 1, MAX_APPROVERS)
                slots.append(
                    ir.Slot(count=count, roles=self.names(child.children[1]), any_of=True, loc=self.loc(child))
                )
            elif child.data == "distinct":
                for ref in child.children:
                    refs.append(ir.Ref(path=tuple(str(t) for t in ref.children), loc=self.loc(ref)))
        return ir.Authorization(slots=tuple(slots), distinct_from=tuple(refs), loc=self.loc(tree))


def lower(src: SourceFile, tree: Tree) -> tuple[ir.PolicyFile, list[Diagnostic]]:
    lw = Lowerer(src)
    pf = lw.file(tree)
    return pf, lw.diags
