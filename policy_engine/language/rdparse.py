"""A hand-written parser for policy files, giving exactly the tree Lark builds from
``grammar/stopline.lark`` with the options of ``parser.get_parser`` (LALR, contextual
lexer, ``propagate_positions``, ``maybe_placeholders``): the same rule names, children,
``None`` placeholders, token types, texts and positions, and the same ``Meta`` on every
node. Lark's LALR loop and tree builder were the largest part of loading a policy set.

It is an accelerator in front of Lark, not a second meaning: ``parse_file(text)`` returns
the tree, or raises ``Unsupported`` at anything it is not sure of, and Lark then parses
(and reports every syntax error) as before. It gives up on: any syntax error; a keyword
where a name is expected (the contextual lexer would read some of them as names, in some
states only); a word glued to a keyword or a number (``workflowx``, ``1legal``); any
character the grammar does not know. ``tests/test_policy_rdparse.py`` compares trees,
token types and positions and every node's ``Meta`` with Lark's over every policy file in
the repository, generated policy sets and mutations of them.
"""

from __future__ import annotations

import re

from lark import Token, Tree
from lark.tree import Meta

from ..limits import MAX_NESTING

__all__ = ["KEYWORDS", "Unsupported", "parse_file"]


class Unsupported(Exception):
    """Outside what this parser is sure of, or not a valid policy file: Lark decides."""


# the grammar's keywords (identifier-like string terminals): tests compare with Lark's
KEYWORDS = frozenset({
    "action", "affects", "after", "and", "authorize", "by", "cascade", "compensate", "const", "cost", "default",
    "depth", "description", "distinct", "evidence", "false", "fields", "from", "irreversible", "notify", "null",
    "of", "owner", "owners", "prerequisite", "receipt", "resume", "reversible", "roles", "rollback", "route",
    "runs_while_stopped", "severity", "side_effects", "stop", "system", "true", "verify", "version", "via", "when",
    "window", "within", "workflow"})

# whitespace (common.WS) and comments, ignored by the grammar
_SKIP = re.compile(r"(?:[ \t\f\r\n]+|#[^\n]*)+")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STRING = re.compile(r'"([^"\\\n]|\\.)*"')
_CEL = re.compile(r"`[^`]*`")
_INT = re.compile(r"[0-9]+")
_DURATION = re.compile(r"[0-9]+(s|m|h|d)(?![A-Za-z0-9_])")
_SIGNED_NUMBER = re.compile(r"[+-]?([0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)([eE][+-]?[0-9]+)?")
_WORD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_NUMBER_START = frozenset("0123456789+-.")
_new_token = Token._future_new  # Token(type, value, start_pos, line, column, end_line, end_column, end_pos)


def _meta(sp: int, sl: int, sc: int, ep: int, el: int, ec: int) -> Meta:
    m = Meta()
    m.__dict__ = {"empty": False, "line": sl, "column": sc, "start_pos": sp, "container_line": sl,
                  "container_column": sc, "container_start_pos": sp, "end_line": el, "end_column": ec,
                  "end_pos": ep, "container_end_line": el, "container_end_column": ec, "container_end_pos": ep}
    return m


class _Parser:
    __slots__ = ("text", "n", "pos", "line", "ls", "ep", "el", "ec", "depth", "max_depth", "angle")

    def __init__(self, text: str) -> None:
        self.text = text
        self.n = len(text)
        self.pos = 0
        self.line = 1
        self.ls = 0  # offset where the current line starts
        self.ep = self.el = self.ec = 0  # end of the last token taken (pos, line, column)
        self.depth = self.max_depth = 0  # `{`/`[` open now, and at most
        self.angle = 0  # a field type's `<` open now
        self._skip()

    # ------------------------------------------------------------------ lexing
    def _skip(self) -> None:
        m = _SKIP.match(self.text, self.pos)
        if m is not None:
            a, b = m.span()
            k = self.text.count("\n", a, b)
            if k:
                self.line += k
                self.ls = self.text.rfind("\n", a, b) + 1
            self.pos = b

    def _take(self, typ: str, end: int) -> Token:
        """The token from the current position to `end`, without a newline inside."""
        pos, line = self.pos, self.line
        col = pos - self.ls + 1
        ec = end - self.ls + 1
        tok = _new_token(typ, self.text[pos:end], pos, line, col, line, ec, end)
        self.ep, self.el, self.ec = end, line, ec
        self.pos = end
        self._skip()
        return tok

    def start(self) -> tuple[int, int, int]:
        return self.pos, self.line, self.pos - self.ls + 1

    def tree(self, data: str, children: list, s: tuple[int, int, int]) -> Tree:
        return Tree(data, children, _meta(s[0], s[1], s[2], self.ep, self.el, self.ec))

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < self.n else ""

    def word(self) -> str | None:
        """The word at the current position (not taken), or None."""
        m = _WORD.match(self.text, self.pos)
        return m.group() if m is not None else None

    def punct(self, ch: str) -> None:
        if self.pos >= self.n or self.text[self.pos] != ch:
            raise Unsupported
        if ch in "{[":
            self.depth += 1
            if self.depth > self.max_depth:
                self.max_depth = self.depth
        elif ch in "}]":
            self.depth -= 1
        elif ch == "<":  # a field type's `list<T>` nests too (`parser.check_nesting`): past the limit, Lark
            self.angle += 1  # decides, and check_nesting reports E005 at the bracket
            if self.depth + self.angle > MAX_NESTING:
                raise Unsupported
        elif ch == ">":
            self.angle -= 1
        self.ep, self.el, self.ec = self.pos + 1, self.line, self.pos - self.ls + 2
        self.pos += 1
        self._skip()

    def keyword(self, kw: str) -> None:
        end = self.pos + len(kw)
        if not self.text.startswith(kw, self.pos) or (end < self.n and self.text[end] in _WORD_CHARS):
            raise Unsupported
        self.ep, self.el, self.ec = end, self.line, end - self.ls + 1
        self.pos = end
        self._skip()

    def name(self) -> Token:
        m = _WORD.match(self.text, self.pos)
        if m is None or m.group() in KEYWORDS:
            raise Unsupported
        return self._take("NAME", m.end())

    def string(self) -> Token:
        m = _STRING.match(self.text, self.pos)
        if m is None:
            raise Unsupported
        return self._take("STRING", m.end())

    def number(self, typ: str, pattern: re.Pattern) -> Token:
        m = pattern.match(self.text, self.pos)
        if m is None:
            raise Unsupported
        end = m.end()
        if end < self.n and self.text[end] in _WORD_CHARS:
            raise Unsupported  # `1legal`: Lark would go on with a name; not worth following
        return self._take(typ, end)

    def cel(self) -> Token:
        m = _CEL.match(self.text, self.pos)
        if m is None:
            raise Unsupported
        pos, line, end = self.pos, self.line, m.end()
        col = pos - self.ls + 1
        k = self.text.count("\n", pos, end)
        if k:  # a condition over several lines
            line2 = line + k
            ls = self.text.rfind("\n", pos, end) + 1
            self.line, self.ls = line2, ls
        else:
            line2, ls = line, self.ls
        ec = end - ls + 1
        tok = _new_token("CEL", m.group(), pos, line, col, line2, ec, end)
        self.ep, self.el, self.ec = end, line2, ec
        self.pos = end
        self._skip()
        return tok

    # ------------------------------------------------------------------ shared
    def name_list(self) -> Tree:
        s = self.start()
        self.punct("[")
        items: list = []
        if self.peek() == "]":
            items.append(None)
        else:
            items.append(self.name())
            while self.peek() == ",":
                self.punct(",")
                if self.peek() == "]":
                    break
                items.append(self.name())
        self.punct("]")
        return self.tree("name_list", items, s)

    def value(self) -> Tree:
        s = self.start()
        ch = self.peek()
        if ch == '"':
            return self.tree("v_string", [self.string()], s)
        if ch in _NUMBER_START and ch:
            return self.tree("v_number", [self.number("SIGNED_NUMBER", _SIGNED_NUMBER)], s)
        if ch == "[":
            self.punct("[")
            items: list = []
            if self.peek() == "]":
                items.append(None)
            else:
                items.append(self.value())
                while self.peek() == ",":
                    self.punct(",")
                    if self.peek() == "]":
                        break
                    items.append(self.value())
            self.punct("]")
            return self.tree("v_list", items, s)
        if ch == "{":
            self.punct("{")
            pairs: list = []
            if self.peek() == "}":
                pairs.append(None)
            else:
                pairs.append(self.pair())
                while self.peek() == ",":
                    self.punct(",")
                    if self.peek() == "}":
                        break
                    pairs.append(self.pair())
            self.punct("}")
            return self.tree("v_map", pairs, s)
        w = self.word()
        if w in ("true", "false", "null"):
            self.keyword(w)
            return self.tree("v_" + w, [], s)
        raise Unsupported

    def pair(self) -> Tree:
        s = self.start()
        key = self.string()
        self.punct(":")
        return self.tree("pair", [key, self.value()], s)

    def const_decl(self) -> Tree:
        s = self.start()
        self.keyword("const")
        name = self.name()
        self.punct("=")
        return self.tree("const_decl", [name, self.value()], s)

    def roles_decl(self) -> Tree:
        s = self.start()
        self.keyword("roles")
        return self.tree("roles_decl", [self.name_list()], s)

    def one(self, data: str, kw: str, arg) -> Tree:
        """`kw` and one argument (`arg` a bound method)."""
        s = self.start()
        self.keyword(kw)
        return self.tree(data, [arg()], s)

    def bare(self, data: str, kw: str) -> Tree:
        s = self.start()
        self.keyword(kw)
        return self.tree(data, [], s)

    def cost_decl(self) -> Tree:
        s = self.start()
        self.keyword("cost")
        amount = self.number("SIGNED_NUMBER", _SIGNED_NUMBER)
        return self.tree("cost_decl", [amount, self.name()], s)

    def field_block(self) -> list:
        """`{` field_decl* `}`: the fields."""
        self.punct("{")
        out = []
        while self.peek() != "}":
            out.append(self.field_decl())
        self.punct("}")
        return out

    def field_decl(self) -> Tree:
        s = self.start()
        name = self.name()
        q = None
        if self.peek() == "?":
            q = self._take("QMARK", self.pos + 1)
        self.punct(":")
        ts = self.start()
        if self.peek() == "{":
            ftype = self.tree("type_object", [None, *self.field_block()], ts)
        else:
            tname = self.name()
            if self.peek() == "{":
                ftype = self.tree("type_object", [tname, *self.field_block()], ts)
            else:
                ftype = self.tree("type_ref", [tname, self.type_args() if self.peek() == "<" else None], ts)
        return self.tree("field_decl", [name, q, ftype], s)

    def type_args(self) -> Tree:
        s = self.start()
        self.punct("<")
        args = [self.type_arg()]
        while self.peek() == ",":
            self.punct(",")
            args.append(self.type_arg())
        self.punct(">")
        return self.tree("type_args", args, s)

    def type_arg(self) -> Tree:
        s = self.start()
        name = self.name()
        return self.tree("type_arg", [name, self.type_args() if self.peek() == "<" else None], s)

    # ------------------------------------------------------------------ file
    def file(self) -> Tree:
        s = self.start()
        items = []
        while self.pos < self.n:
            w = self.word()
            if w == "workflow":
                items.append(self.workflow())
            elif w == "roles":
                items.append(self.roles_decl())
            elif w == "const":
                items.append(self.const_decl())
            else:
                raise Unsupported
        if not items:
            return Tree("start", [], Meta())
        return self.tree("start", items, s)

    def workflow(self) -> Tree:
        s = self.start()
        self.keyword("workflow")
        items: list = [self.string()]
        self.punct("{")
        while self.peek() != "}":
            w = self.word()
            if w == "action":
                items.append(self.action_decl())
            elif w == "stop":
                items.append(self.stop_decl())
            elif w == "rollback":
                items.append(self.rollback_decl())
            elif w == "const":
                items.append(self.const_decl())
            elif w == "roles":
                items.append(self.roles_decl())
            elif w == "version":
                items.append(self.one("version_decl", "version", self.string))
            elif w == "default":
                items.append(self.one("default_decl", "default", self.name))
            elif w == "owners":
                items.append(self.owners_decl())
            else:
                raise Unsupported
        self.punct("}")
        return self.tree("workflow", items, s)

    def owners_decl(self) -> Tree:
        s = self.start()
        self.keyword("owners")
        self.punct("{")
        owners = []
        while self.peek() != "}":
            os_ = self.start()
            name = self.name()
            owners.append(self.tree("owner", [name, self.string()], os_))
        self.punct("}")
        return self.tree("owners_decl", owners, s)

    # ------------------------------------------------------------------ actions
    def action_decl(self) -> Tree:
        s = self.start()
        self.keyword("action")
        items: list = [self.name()]
        self.punct("{")
        while self.peek() != "}":
            w = self.word()
            if w is None:
                raise Unsupported
            if w not in KEYWORDS:
                items.append(self.gate_rule())
            elif w == "description":
                items.append(self.one("description_decl", w, self.string))
            elif w == "system":
                items.append(self.one("system_decl", w, self.string))
            elif w == "verify":
                items.append(self.one("verify_decl", w, self.string))
            elif w == "side_effects":
                items.append(self.one("side_effects_decl", w, self.name_list))
            elif w == "receipt":
                items.append(self.one("receipt_decl", w, self.name_list))
            elif w == "reversible" or w == "irreversible":
                items.append(self.reversible_decl(w))
            elif w == "prerequisite":
                items.append(self.prerequisite_decl())
            elif w == "fields":
                items.append(self.fields_decl())
            elif w == "runs_while_stopped":
                items.append(self.bare("while_stopped_decl", w))
            elif w == "cost":
                items.append(self.cost_decl())
            else:
                raise Unsupported
        self.punct("}")
        return self.tree("action_decl", items, s)

    def gate_rule(self) -> Tree:
        s = self.start()
        effect = self.name()
        w = self.word()
        rule = None
        if w is not None and w not in KEYWORDS:
            rule = self.name()
            w = self.word()
        approvers = None
        if w == "by":
            approvers = self.approvers()
        self.keyword("when")
        return self.tree("gate_rule", [effect, rule, approvers, self.cel()], s)

    def approvers(self) -> Tree:
        s = self.start()
        self.keyword("by")
        n = self.number("INT", _INT)
        if self.word() == "of":
            self.keyword("of")
            return self.tree("approvers_any", [n, self.name_list()], s)
        return self.tree("approvers_one", [n, self.name()], s)

    def reversible_decl(self, w: str) -> Tree:
        s = self.start()
        if w == "irreversible":
            m = _WORD.match(self.text, self.pos)
            assert m is not None
            kind = self._take("IRREVERSIBLE", m.end())
        else:
            self.keyword("reversible")
            kind = self.name()
        via = within = None
        if self.word() == "via":
            via = self.one("via", "via", self.string)
        if self.word() == "within":
            within = self.one("within", "within", self._duration)
        return self.tree("reversible_decl", [kind, via, within], s)

    def _duration(self) -> Token:
        return self.number("DURATION", _DURATION)

    def prerequisite_decl(self) -> Tree:
        s = self.start()
        self.keyword("prerequisite")
        name = self.name() if self.peek() != "`" else None
        return self.tree("prerequisite_decl", [name, self.cel()], s)

    def fields_decl(self) -> Tree:
        s = self.start()
        self.keyword("fields")
        if self.word() == "from":
            self.keyword("from")
            return self.tree("fields_from", [self.string()], s)
        return self.tree("fields_decl", self.field_block(), s)

    # ------------------------------------------------------------------ stop triggers
    def stop_decl(self) -> Tree:
        s = self.start()
        self.keyword("stop")
        items: list = [self.name()]
        self.punct("{")
        while self.peek() != "}":
            w = self.word()
            if w == "when":
                items.append(self.one("stop_when", w, self.cel))
            elif w == "severity":
                items.append(self.one("severity_decl", w, self.name))
            elif w == "owner":
                items.append(self.one("owner_decl", w, self.string))
            elif w == "affects":
                items.append(self.one("affects_decl", w, self.name_list))
            elif w == "receipt":
                items.append(self.one("receipt_decl", w, self.name_list))
            elif w == "rollback":
                items.append(self.one("stop_rollback_decl", w, self.string))
            elif w == "notify":
                items.append(self.one("notify_decl", w, self.name_list))
            elif w == "description":
                items.append(self.one("description_decl", w, self.string))
            elif w == "resume":
                items.append(self.resume_decl())
            elif w == "evidence":
                es = self.start()
                self.keyword("evidence")
                items.append(self.tree("evidence_decl", self.field_block(), es))
            else:
                raise Unsupported
        self.punct("}")
        return self.tree("stop_decl", items, s)

    def resume_decl(self) -> Tree:
        s = self.start()
        self.keyword("resume")
        self.keyword("when")
        self.punct("{")
        criteria = []
        while self.peek() != "}":
            cs = self.start()
            name = self.name()
            self.punct(":")
            cond = self.cel()
            note = self.string() if self.peek() == '"' else None
            criteria.append(self.tree("criterion", [name, cond, note], cs))
        self.punct("}")
        return self.tree("resume_decl", criteria, s)

    # ------------------------------------------------------------------ rollback scenarios
    def rollback_decl(self) -> Tree:
        s = self.start()
        self.keyword("rollback")
        items: list = [self.name()]
        self.punct("{")
        while self.peek() != "}":
            w = self.word()
            if w == "description":
                items.append(self.one("description_decl", w, self.string))
            elif w == "cost":
                items.append(self.cost_decl())
            elif w == "cascade":
                cs = self.start()
                self.keyword("cascade")
                self.keyword("depth")
                items.append(self.tree("cascade_decl", [self.number("INT", _INT)], cs))
            elif w == "after":
                items.append(self.after_window())
            else:
                items.append(self.escalation_item(w))
        self.punct("}")
        return self.tree("rollback_decl", items, s)

    def after_window(self) -> Tree:
        s = self.start()
        self.keyword("after")
        self.keyword("window")
        self.punct("{")
        items = []
        while self.peek() != "}":
            items.append(self.escalation_item(self.word()))
        self.punct("}")
        return self.tree("after_window_decl", items, s)

    def escalation_item(self, w: str | None) -> Tree:
        if w == "route":
            return self.one("route_decl", w, self.name)
        if w == "authorize":
            return self.authorize_decl()
        if w == "notify":
            s = self.start()
            self.keyword("notify")
            names = self.name_list()
            return self.tree("duty_notify_decl", [names, self.duty_when()], s)
        if w == "compensate":
            return self.compensate_decl()
        raise Unsupported

    def duty_when(self) -> Tree | None:
        if self.word() != "when":
            return None
        return self.one("duty_when", "when", self.cel)

    def compensate_decl(self) -> Tree:
        s = self.start()
        self.keyword("compensate")
        self.punct("[")
        items: list = []
        if self.peek() == "]":
            items.append(None)
        else:
            items.append(self.comp_item())
            while self.peek() == ",":
                self.punct(",")
                if self.peek() == "]":
                    break
                items.append(self.comp_item())
        self.punct("]")
        items.append(self.duty_when())
        return self.tree("compensate_decl", items, s)

    def comp_item(self) -> Token:
        return self.string() if self.peek() == '"' else self.name()

    def authorize_decl(self) -> Tree:
        s = self.start()
        self.keyword("authorize")
        slots: list = [self.slot()]
        while self.word() == "and":
            self.keyword("and")
            slots.append(self.slot())
        distinct = None
        if self.word() == "distinct":
            ds = self.start()
            self.keyword("distinct")
            self.keyword("from")
            refs = [self.ref()]
            while self.peek() == ",":
                self.punct(",")
                refs.append(self.ref())
            distinct = self.tree("distinct", refs, ds)
        slots.append(distinct)
        return self.tree("authorize_decl", slots, s)

    def slot(self) -> Tree:
        s = self.start()
        n = self.number("INT", _INT)
        if self.word() == "of":
            self.keyword("of")
            return self.tree("slot_any", [n, self.name_list()], s)
        return self.tree("slot_role", [n, self.name()], s)

    def ref(self) -> Tree:
        s = self.start()
        names = [self.name()]
        self.punct(".")
        names.append(self.name())
        while self.peek() == ".":
            self.punct(".")
            names.append(self.name())
        return self.tree("ref", names, s)


def parse_file(text: str) -> tuple[Tree, int]:
    """The tree Lark's parser gives for `text` and the deepest nesting of its `{`/`[`
    (outside strings, conditions and comments: `parser.check_nesting`'s count for a valid
    file), or `Unsupported`."""
    try:
        p = _Parser(text)
        return p.file(), p.max_depth
    except Unsupported:
        raise
    except Exception as e:  # anything unforeseen: Lark decides
        raise Unsupported from e
