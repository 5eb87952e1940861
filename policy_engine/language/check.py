"""Name resolution, scopes and lints over the IR. Collects every problem.

The checker compiles every CEL condition once (through cel.py) and hands the
compiled expressions on, so the compiler never compiles twice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Literal

from .. import cel  # (its `compile_cel` looked up at each call, as an import there did)
from ..cel.analysis import unknown_names  # E109: a name the engine cannot evaluate
from ..cel.typecheck import ActionVar
from ..diagnostics import Diagnostic, did_you_mean, one_of
from ..limits import MAX_EXPRESSION_LENGTH
from ..source import SourceFile, Span
from . import invisible, ir, lints

# Variables in scope for each kind of condition.
SCOPE_GATE = ("action", "workflow", "now", "policy")
SCOPE_STOP = ("action", "workflow", "now", "policy")
SCOPE_PREREQ = ("original", "request", "now", "policy")
SCOPE_RESUME = ("evidence", "workflow", "stop", "now", "policy")

DISTINCT_ROOTS = ("original", "request")

# Words other engines use for our effects, for "did you mean" help.
EFFECT_SYNONYMS = {
    "permit": "allow", "accept": "allow", "grant": "allow",
    "forbid": "deny", "block": "deny", "reject": "deny", "refuse": "deny",
    "approve": "require_approval", "review": "require_approval", "require_review": "require_approval",
    "requires_approval": "require_approval", "approval": "require_approval", "ask": "require_approval",
}

# W206's help: a workflow that checks clean as written (names and owners to fill in)
NO_WORKFLOW_HELP = ('declare one: `workflow "NAME" { version "1.0.0" owners { business "TEAM" '
                    'technical "TEAM" } }`, then its `action` types and their rules')


def cond_key(cond: ir.Condition) -> tuple[str, int]:
    sp = cond.loc.span
    return (sp.path, sp.start) if sp else ("", id(cond))


class Checker:
    def __init__(self, pset_files: Iterable[ir.PolicyFile], sources: dict[str, SourceFile],
                 cel_cache: dict | None = None, accelerate: bool = True) -> None:
        self.files = list(pset_files)
        self.accelerate = accelerate  # False: CEL compiled without generated fast paths (the reference)
        self.sources = sources
        self.diags: list[Diagnostic] = []
        self.cel_cache: dict = {} if cel_cache is None else cel_cache
        self.compiled: dict[tuple[str, int], object] = {}

    # ------------------------------------------------------------ helpers
    def add(self, code: str, message: str, loc: ir.Loc | Span | None, *, label: str | None = None,
            help: str | None = None, severity: Literal["error", "warning"] = "error",
            notes: tuple[str, ...] = ()) -> None:
        span = loc.span if isinstance(loc, ir.Loc) else loc
        if span is None:
            span = Span.nowhere("<unknown>")
        self.diags.append(Diagnostic(code, severity, message, span, label=label, help=help, notes=notes))

    def dup_check(self, items: Iterable, kind: str, where: str = "") -> dict:
        seen: dict = {}
        for it in items:
            name = it.name
            if name in seen and not (
                getattr(it, "named", True) is False and getattr(seen[name], "named", True) is False
            ):
                first = seen[name].loc
                self.add(
                    "E120",
                    f"duplicate {kind} `{name}`{where}",
                    it.loc,
                    label="declared again here",
                    help=f"the first declaration is at {first}; rename or remove one",
                )
            else:
                seen[name] = it
        return seen

    # ------------------------------------------------------------ entry
    def run(self) -> list[Diagnostic]:
        workflows = [w for f in self.files for w in f.workflows]
        if self.files and not workflows:
            self.no_workflow()
        self.dup_check(workflows, "workflow")
        # roles: set-wide; duplicates only within one declaration scope
        all_roles: set[str] = set()
        for f in self.files:
            self.dup_check(f.roles, "role")
            all_roles.update(r.name for r in f.roles)
            for w in f.workflows:
                all_roles.update(r.name for r in w.roles)
        self.roles = all_roles
        global_consts = [c for f in self.files for c in f.constants]
        self.global_consts = self.dup_check(global_consts, "constant")  # the first of each name
        # action types: unique across the set
        actions = [a for w in workflows for a in w.actions]
        self.actions = self.dup_check(actions, "action type", " (action type names are unique across a policy set)")
        for w in workflows:
            self.workflow(w)
        self.side_effect_cycles(actions)
        invisible.invisible_characters(self)  # W217: a character typed into a string that no one sees
        return self.diags

    def no_workflow(self) -> None:
        """W206, about the set as a whole: no position (it was put at 1:1 of the first file,
        under a comment or a `roles` line that is not wrong; a workflow may go in any file),
        the first file named, the others listed. Not reported when a file did not parse (or
        nested too deeply): the workflow may be in it, and its error says what to fix."""
        read = [f.path for f in self.files]
        if any(path not in read for path in self.sources):
            return
        notes = ["every action evaluated against it is denied"]
        if len(read) > 1:
            shown = ", ".join(read[:5]) + (f" and {len(read) - 5} more" if len(read) > 5 else "")
            notes.append(f"none of the {len(read)} files of the set declares one: {shown}")
        self.add(
            "W206",
            "the policy set declares no workflow",
            Span.nowhere(read[0]),
            severity="warning",
            notes=tuple(notes),
            help=NO_WORKFLOW_HELP,
        )

    def workflow(self, w: ir.Workflow) -> None:
        self.dup_check(w.roles, "role", f" in workflow `{w.name}`")
        self.dup_check(w.constants, "constant", f" in workflow `{w.name}`")
        consts = dict(self.global_consts)
        for c in w.constants:
            if c.name in self.global_consts:
                self.add(
                    "E120",
                    f"constant `{c.name}` is already declared for the whole policy set",
                    c.loc,
                    label="declared again here",
                    help=f"the first declaration is at {self.global_consts[c.name].loc}",
                )
            consts.setdefault(c.name, c)
        self.consts = consts
        # compile-time values of `policy.NAME`, folded into the compiled conditions
        self.const_env = {"policy": {name: c.value for name, c in consts.items()}}
        self.const_key = tuple(sorted((name, repr(c.value)) for name, c in consts.items()))
        # required declarations
        if w.version is None:
            self.add(
                "E134",
                f"workflow `{w.name}` has no `version`",
                w.loc,
                label="declared here",
                help='add `version "1.0.0"` so every decision names the policy version',
            )
        kinds = {o.kind for o in w.owners}
        for o in w.owners:
            if o.kind not in ir.OWNER_KINDS:
                self.add(
                    "E105",
                    f"unknown owner kind `{o.kind}`",
                    o.loc,
                    label=f"expected {one_of(ir.OWNER_KINDS)}",
                    help=did_you_mean(o.kind, ir.OWNER_KINDS),
                )
        dup_owner: dict = {}
        for o in w.owners:
            if o.kind in dup_owner:
                self.add("E121", f"`{o.kind}` owner is given twice", o.loc, label="second declaration")
            dup_owner[o.kind] = o
        for kind in ir.OWNER_KINDS:
            if kind not in kinds:
                self.add(
                    "E134",
                    f"workflow `{w.name}` has no {kind} owner",
                    w.loc,
                    label="declared here",
                    help='add `owners { business "..." technical "..." }`',
                )
        if w.default_effect == "allow":
            self.add(
                "E107",
                "default effect `allow` is refused",
                w.default_loc,
                label="an action no rule decides would run unchecked",
                help="use `default require_approval` or `default deny`, and write explicit `allow` rules",
            )
        elif w.default_effect not in ir.DEFAULT_EFFECTS:
            help_ = did_you_mean(w.default_effect, ir.DEFAULT_EFFECTS + ("allow",))
            if help_ == "did you mean `allow`?":  # the nearest is refused (E107): never suggest it
                help_ = ("`default allow` is refused (an action no rule decides would run unchecked): use "
                         "`default require_approval` or `default deny`, and write explicit `allow` rules")
            self.add(
                "E106",
                f"unknown default effect `{w.default_effect}`",
                w.default_loc,
                label=f"expected {one_of(ir.DEFAULT_EFFECTS)}",
                help=help_,
            )
        # declared fields (`fields { ... }`), checked once: name -> object type, or None
        self.wf_types = {a.name: self.declared(a.fields, f"`{a.name}`") for a in w.actions}
        for a in w.actions:
            self.action(w, a)
        self.dup_check(w.stops, "stop trigger", f" in workflow `{w.name}`")
        for s in w.stops:
            self.stop(w, s)
        self.dup_check(w.scenarios, "rollback scenario", f" in workflow `{w.name}`")
        declared = {sc.name for sc in w.scenarios}
        missing = [s for s in ir.STANDARD_SCENARIOS if s not in declared]
        if missing and declared:
            self.add(
                "W205",
                f"workflow `{w.name}` declares no {one_of(missing)} rollback scenario"
                + ("s" if len(missing) > 1 else ""),
                w.loc,
                severity="warning",
                label="declared here",
                help="a rollback filed under a missing scenario cannot be authorized; declare "
                f"`rollback {missing[0]} {{ route ... authorize ... }}`",
            )
        for sc in w.scenarios:
            self.scenario(w, sc)
        lints.workflow(self, w)  # W209-W211: never-matching, shadowed, unfillable

    # ------------------------------------------------------------ declared fields
    def declared(self, decls: tuple[ir.FieldDecl, ...] | None, owner: str):
        """The object type of a `fields`/`evidence` block (None when there is none);
        unknown type names and malformed types are reported (E117), duplicates (E120)."""
        from ..fieldtypes import FType

        if decls is None:
            return None
        return FType("object", fields=self.field_list(decls, owner))

    def field_list(self, decls, owner: str):
        from ..fieldtypes import FField

        self.dup_check(decls, "field", f" of {owner}")
        return tuple(FField(d.name, self.field_type(d.type), d.optional) for d in decls)

    def field_type(self, t: ir.FieldTypeRef):
        from ..fieldtypes import ANY, CONTAINERS, SCALARS, TYPE_NAMES, TYPE_SYNONYMS, FType

        if t.name is None:
            return FType("object", fields=self.field_list(t.fields or (), "an object"))
        args = [self.field_type(a) for a in t.args]
        if t.name in SCALARS:
            if args:
                self.add(
                    "E117",
                    f"`{t.name}` takes no type arguments",
                    t.name_loc,
                    label="remove `<...>`",
                    help=f"write `{t.name}`",
                )
            return FType(t.name)
        if t.name in CONTAINERS:
            want = 1 if t.name == "list" else 2
            body = bool(t.args) and t.args[-1].name is None
            if body and len(args) == 1:  # `list { ... }`, `map { ... }`
                return FType(t.name, args[0])
            if len(args) != want:
                self.add(
                    "E117",
                    f"`{t.name}` takes {want} type argument{'s' if want > 1 else ''}, not {len(args)}",
                    t.name_loc,
                    label="here",
                    help="write `list<string>`"
                    if t.name == "list"
                    else "write `map<string, int>` (map keys are strings)",
                )
                return FType(t.name, ANY)
            if t.name == "map" and args[0].kind != "string":
                self.add(
                    "E117",
                    f"map keys are strings, not `{args[0].describe()}`",
                    t.args[0].name_loc,
                    label="expected `string`",
                    help="write `map<string, T>`",
                )
            return FType(t.name, args[-1])
        help_ = did_you_mean(t.name, TYPE_NAMES)
        if t.name.lower() in TYPE_SYNONYMS:
            help_ = f"did you mean `{TYPE_SYNONYMS[t.name.lower()]}`?"
        self.add(
            "E117", f"unknown field type `{t.name}`", t.name_loc, label=f"expected {one_of(TYPE_NAMES)}", help=help_
        )
        return ANY

    def typecheck(self, cond: ir.Condition, env: dict, what: str, effect: str | None = None) -> None:
        """Check a compiled condition against declared fields (nothing without declarations)."""
        from ..cel.typecheck import ActionVar, typecheck

        act = env.get("action")
        if not any(v is not None for k, v in env.items() if k != "action") and not (
            isinstance(act, ActionVar) and any(t is not None for t in act.types.values())
        ):
            return
        env = {k: v for k, v in env.items() if v is not None}
        span = cond.loc.span
        for f in typecheck(cond.source, env):
            at = self.cel_span(span, f.start, f.end)
            if f.kind == "unknown_field":
                notes: tuple[str, ...] = ()
                if effect == "allow":
                    notes = (
                        "reading an undeclared field is an error, and an `allow` rule whose condition errors "
                        "never matches",
                    )
                elif effect == "stop":
                    notes = (
                        "reading an undeclared field is an error, and a stop trigger whose condition errors "
                        "stops the whole workflow",
                    )
                self.add(
                    "E115",
                    f.message,
                    at,
                    label=f.label,
                    notes=notes,
                    help=did_you_mean(f.data["field"], [c for c in f.data["candidates"]])
                    or (
                        f"declared: {', '.join(f'`{c}`' for c in f.data['candidates'])}"
                        if f.data["candidates"]
                        else "declare it in the `fields { ... }` block"
                    ),
                )
            elif f.kind == "mismatch":
                self.add("E116", f.message, at, label=f.label, help=f.help)
            elif f.kind == "unguarded" or (f.kind == "optional" and effect == "stop"):
                lacking, optional = f.data["lacking"], f.data["optional"]
                why = []
                if lacking:
                    why.append(
                        "action type"
                        + ("s " if len(lacking) > 1 else " ")
                        + ", ".join(f"`{n}`" for n in lacking)
                        + " do"
                        + ("" if len(lacking) > 1 else "es")
                        + " not declare it"
                    )
                if optional and optional != ["*"]:
                    why.append(
                        ", ".join(f"`{n}`" for n in optional)
                        + " declare"
                        + ("" if len(optional) > 1 else "s")
                        + " it optional"
                    )
                elif optional:
                    why.append("it is optional")
                guard = (
                    f'`action.type == "{sorted(set(act.types) - set(lacking))[0]}" && ...`'
                    if lacking and isinstance(act, ActionVar) and set(act.types) - set(lacking)
                    else ""
                )
                self.add(
                    "W207",
                    f"stop trigger reads `{f.data['path']}` unguarded: " + "; ".join(why),
                    at,
                    severity="warning",
                    label="errors when the field is absent",
                    help="guard the read: " + (guard + " or " if guard else "") + f"`has({f.data['path']}) && ...`",
                    notes=("a stop trigger whose condition errors stops the whole workflow",),
                )
            elif f.kind == "optional" and effect == "allow":
                self.add(
                    "W208",
                    f"`allow` rule reads optional `{f.data['path']}` without `has(...)`",
                    at,
                    severity="warning",
                    label="errors when the field is absent",
                    help=f"guard the read: `has({f.data['path']}) && ...`",
                    notes=(
                        "when the field is absent the read errors, and an `allow` rule whose condition "
                        "errors never matches",
                    ),
                )

    # ------------------------------------------------------------ conditions
    def condition(
        self, cond: ir.Condition, scope: tuple[str, ...], what: str, env: dict | None = None, effect: str | None = None
    ) -> None:
        span = cond.loc.span
        src = cond.source
        if len(src) > MAX_EXPRESSION_LENGTH:
            return  # lowering already reported E005 for it; do not report it twice
        key = (src, self.const_key) if "policy" in src else src
        compiled = self.cel_cache.get(key)
        if compiled is None:
            try:
                compiled = cel.compile_cel(src, constants=self.const_env, accelerate=self.accelerate)
            except cel.CelCompileError as e:
                compiled = e
            except RecursionError:
                compiled = cel.CelCompileError("condition nests too deeply", 0, 0, None)
            except Exception as e:  # noqa: BLE001 - a compiler bug must not become a traceback
                compiled = cel.CelCompileError(
                    f"internal error while compiling this condition ({type(e).__name__}: {e})",
                    0,
                    len(src),
                    "this is a bug in Stopline; please report it with the condition",
                )
            self.cel_cache[key] = compiled
        if isinstance(compiled, Exception):
            bad: Exception = compiled
            off = getattr(bad, "offset", 0) or 0
            end = getattr(bad, "end", off + 1) or off + 1
            cel_span = self.cel_span(span, off, max(end, off + 1))
            code = (
                "E005"
                if "limit" in str(getattr(bad, "message", bad)) or "deep" in str(getattr(bad, "message", bad))
                else "E101"
            )
            self.add(
                code,
                f"{getattr(bad, 'message', str(bad))}",
                cel_span,
                label="in this condition",
                help=getattr(bad, "hint", None),
            )
            return
        self.compiled[cond_key(cond)] = compiled
        n_before = len(self.diags)
        slips = unknown_names(src)
        for u in slips:
            at = self.cel_span(span, u.start, u.end)
            self.add("E109", u.message, at, label=u.label, help=u.help, notes=u.notes(effect))
        for ref in compiled.references:
            root = ref.path[0]
            if any(u.start == ref.offset for u in slips):
                continue  # `True`, `math.greatst(..)`: reported as E109, not as a variable
            if root not in scope:
                rspan = self.cel_span(span, ref.offset, ref.offset + len(root))
                help_ = did_you_mean(root, scope)
                if root in ("action", "workflow", "original", "request", "evidence", "stop", "now", "policy"):
                    help_ = f"{what} can use {one_of(scope)}"
                elif help_ is None:
                    help_ = f"{what} can use {one_of(scope)}; constants are written `policy.NAME`"
                self.add("E113", f"`{root}` is not in scope in {what}", rspan, label="not available here", help=help_)
            elif root == "policy" and len(ref.path) >= 2:
                name = ref.path[1]
                if name not in self.consts:
                    start = ref.offset + len("policy.")
                    rspan = self.cel_span(span, start, start + len(name))
                    self.add(
                        "E114",
                        f"unknown constant `{name}`",
                        rspan,
                        label="not declared",
                        help=did_you_mean(name, self.consts) or "declare it with `const NAME = value`",
                    )
        if env and len(self.diags) == n_before:  # names resolved: check the declared fields' types
            self.typecheck(cond, env, what, effect)

    def cel_span(self, span: Span | None, off: int, end: int) -> Span | None:
        """Map an offset inside a condition's CEL text to the policy file."""
        if span is None:
            return None
        src = self.sources.get(span.path)
        base = span.start + 1  # skip the opening backtick
        if src is None:
            return span
        limit = max(base, span.end - 1)
        return src.span(min(base + off, limit), min(base + end, limit) if end > off else min(base + off, limit))

    # ------------------------------------------------------------ actions
    def role_refs(self, names: Iterable[ir.Name]) -> None:
        for r in names:
            if r.name not in self.roles:
                self.add(
                    "E110",
                    f"unknown role `{r.name}`",
                    r.loc,
                    label="not declared",
                    help=did_you_mean(r.name, self.roles) or "declare it with `roles [..]`",
                )

    def action(self, w: ir.Workflow, a: ir.ActionType) -> None:
        if a.system is None:
            self.add(
                "W204",
                f"action type `{a.name}` does not name its destination system",
                a.loc,
                severity="warning",
                label="declared here",
                help='add `system "helpdesk"`',
            )
        rv = a.reversibility
        if rv is not None:
            if rv.klass not in ir.REVERSIBILITY_CLASSES:
                self.add(
                    "E103",
                    f"unknown reversibility class `{rv.klass}`",
                    rv.klass_loc,
                    label=f"expected {one_of(ir.REVERSIBILITY_CLASSES)}",
                    help=did_you_mean(rv.klass, ir.REVERSIBILITY_CLASSES),
                )
            elif rv.klass == "irreversible":
                if rv.window_seconds is not None:
                    self.add(
                        "E133",
                        f"irreversible action `{a.name}` cannot have a reversal window",
                        rv.window_loc,
                        label="remove this window",
                        help="an irreversible action has no window; "
                        "use `reversible partial ... within` if it can be undone for a while",
                    )
            elif rv.method is None:
                self.add(
                    "E136",
                    f"reversible action `{a.name}` does not say how to reverse it",
                    rv.loc,
                    label="no `via`",
                    help='add the reversal method: `reversible full via "crm.restore_field"`',
                )
        self.dup_check(a.prerequisites, "prerequisite", f" of `{a.name}`")
        for p in a.prerequisites:
            self.condition(p.condition, SCOPE_PREREQ, "a prerequisite")
        for t in a.side_effects:
            if t.name not in self.actions:
                self.add(
                    "E111",
                    f"unknown action type `{t.name}` in side effects",
                    t.loc,
                    label="not declared",
                    help=did_you_mean(t.name, self.actions) or "side effects name the downstream action types",
                )
        self.dup_check(a.rules, "rule", f" of `{a.name}`")
        seen_rules: dict = {}
        for r in a.rules:
            self.rule(w, a, r)
            key = (
                r.effect,
                " ".join(r.condition.source.split()),
                (r.approvers.count, tuple(x.name for x in r.approvers.roles), r.approvers.any_of)
                if r.approvers
                else None,
            )
            if key in seen_rules:
                self.add(
                    "W203",
                    f"rule `{r.name}` repeats rule `{seen_rules[key].name}`",
                    r.loc,
                    severity="warning",
                    label="identical rule",
                    help=f"the same rule is at {seen_rules[key].loc}; remove one",
                )
            else:
                seen_rules[key] = r
        if rv is not None and rv.klass == "irreversible":
            for r in a.rules:
                if r.effect == "allow":
                    self.add(
                        "W202",
                        f"irreversible action `{a.name}` is allowed without approval",
                        r.effect_loc,
                        severity="warning",
                        label="this rule lets it run unreviewed",
                        help="irreversible actions usually need `require_approval by N role`",
                    )

    def rule(self, w: ir.Workflow, a: ir.ActionType, r: ir.Rule) -> None:
        if r.effect not in ir.EFFECTS:
            help_ = did_you_mean(r.effect, ir.EFFECTS)
            if help_ is None and r.effect.lower() in EFFECT_SYNONYMS:
                help_ = f"did you mean `{EFFECT_SYNONYMS[r.effect.lower()]}`?"
            if r.effect == "stop":
                help_ = "stop triggers are declared on the workflow: `stop NAME { when `...` ... }`"
            self.add(
                "E102", f"unknown effect `{r.effect}`", r.effect_loc, label=f"expected {one_of(ir.EFFECTS)}", help=help_
            )
        if r.effect == "require_approval":
            if r.approvers is None:
                self.add(
                    "E137",
                    "`require_approval` needs to say who approves",
                    r.effect_loc,
                    label="no approvers",
                    help="write `require_approval by 1 reviewer when ...`",
                )
        elif r.approvers is not None and r.effect in ir.EFFECTS:
            self.add(
                "E138",
                f"`{r.effect}` rules take no approvers",
                r.approvers.loc,
                label="remove this",
                help="only `require_approval` rules name approvers",
            )
        if r.approvers is not None:
            self.role_refs(r.approvers.roles)
        self.condition(r.condition, SCOPE_GATE, "a gate rule", self.gate_env([a.name]), r.effect)

    def gate_env(self, types: list[str]) -> dict:
        if not any(self.wf_types.get(t) is not None for t in types):
            return {}
        return {"action": ActionVar({t: self.wf_types.get(t) for t in types}), "policy": self.policy_type()}

    def policy_type(self):
        from ..fieldtypes import FField, FType, value_type

        return FType("object", fields=tuple(FField(n, value_type(c.value)) for n, c in sorted(self.consts.items())))

    # ------------------------------------------------------------ stop triggers
    def stop(self, w: ir.Workflow, s: ir.StopTrigger) -> None:
        if s.condition is None:
            self.add(
                "E132",
                f"stop trigger `{s.name}` has no condition",
                s.loc,
                label="declared here",
                help="add `when `<CEL condition>``",
            )
        else:
            self.condition(s.condition, SCOPE_STOP, "a stop trigger", self.gate_env(list(self.wf_types)), "stop")
        if s.owner is None:
            self.add(
                "E130",
                f"stop trigger `{s.name}` has no owner",
                s.loc,
                label="who pauses and repairs this?",
                help='add `owner "Support operations lead"`',
            )
        if not s.criteria:
            self.add(
                "E131",
                f"stop trigger `{s.name}` has no re-enable criteria",
                s.loc,
                label="a stopped workflow could never resume",
                help="add `resume when { name: `evidence....` }`",
            )
        if s.severity is None:
            self.add(
                "E134",
                f"stop trigger `{s.name}` has no severity",
                s.loc,
                label="declared here",
                help=f"add `severity` with one of {one_of(ir.SEVERITIES)}",
            )
        elif s.severity not in ir.SEVERITIES:
            self.add(
                "E104",
                f"unknown severity `{s.severity}`",
                s.severity_loc,
                label=f"expected {one_of(ir.SEVERITIES)}",
                help=did_you_mean(s.severity, ir.SEVERITIES),
            )
        self.dup_check(s.criteria, "re-enable criterion", f" of `{s.name}`")
        evidence = self.declared(s.evidence, f"the evidence of `{s.name}`")
        for c in s.criteria:
            self.condition(c.condition, SCOPE_RESUME, "a re-enable criterion", {"evidence": evidence})

    # ------------------------------------------------------------ scenarios
    def authorization(self, auth: ir.Authorization) -> None:
        for slot in auth.slots:
            self.role_refs(slot.roles)
            if slot.any_of and slot.count > len(slot.roles) and len(slot.roles) == 1:
                pass
        for ref in auth.distinct_from:
            if ref.path[0] not in DISTINCT_ROOTS:
                self.add(
                    "E112",
                    f"`distinct from {ref.dotted}` does not name a principal of the rollback",
                    ref.loc,
                    label=f"expected a field of {one_of(DISTINCT_ROOTS)}",
                    help=did_you_mean(ref.path[0], DISTINCT_ROOTS)
                    or "e.g. `original.reviewer` or `request.requested_by`",
                )

    def comp_refs(self, w: ir.Workflow, items: Iterable[ir.CompItem]) -> None:
        for c in items:
            if c.is_action and c.name not in self.actions:
                self.add(
                    "E111",
                    f"unknown action type `{c.name}` in compensations",
                    c.loc,
                    label="not declared",
                    help=did_you_mean(c.name, self.actions)
                    or 'name a declared action type, or write free text in quotes: "call the customer"',
                )

    def scenario(self, w: ir.Workflow, sc: ir.Scenario) -> None:
        if sc.authorization is None:
            self.add(
                "E135",
                f"rollback scenario `{sc.name}` does not say who authorizes it",
                sc.loc,
                label="anyone could reverse this",
                help="add `authorize 1 ROLE [distinct from original.reviewer]`",
            )
        else:
            self.authorization(sc.authorization)
        self.comp_refs(w, sc.compensate)
        self.duty_conditions(sc.notify, sc.compensate)
        if sc.escalation is not None:
            if sc.escalation.authorization is not None:
                self.authorization(sc.escalation.authorization)
            self.comp_refs(w, sc.escalation.compensate)
            self.duty_conditions(sc.escalation.notify, sc.escalation.compensate)

    def duty_conditions(self, notify: Iterable[ir.Name], comp: Iterable[ir.CompItem]) -> None:
        """A duty's `when` (one per statement, shared by its items): checked once."""
        seen: set = set()
        duties: list[ir.Name | ir.CompItem] = [*notify, *comp]
        for d in duties:
            if d.when is not None and cond_key(d.when) not in seen:
                seen.add(cond_key(d.when))
                self.condition(d.when, SCOPE_PREREQ, "a duty's condition")

    # ------------------------------------------------------------ side-effect graph
    def side_effect_cycles(self, actions: list[ir.ActionType]) -> None:
        """W201 for each cycle of the side-effect graph, found by a depth-first walk (roots in
        name order, edges in declaration order). The cycle is spelled from where the walk
        entered it, so that its last edge is the one that closed it: the back edge the walk
        met, which the label points at (the `side_effects` item that leads back)."""
        graph: dict[str, list[ir.Name]] = defaultdict(list)
        by_name: dict[str, ir.ActionType] = {}
        for a in actions:
            by_name.setdefault(a.name, a)
            graph[a.name].extend(a.side_effects)
        color: dict[str, int] = {}
        reported: set[tuple[str, ...]] = set()
        for root in sorted(by_name):
            if color.get(root):
                continue
            stack = [(root, iter(graph.get(root, ())))]
            path = [root]
            color[root] = 1
            while stack:
                node, it = stack[-1]
                edge = next(it, None)
                if edge is None:
                    stack.pop()
                    path.pop()
                    color[node] = 2
                    continue
                nxt = edge.name
                if nxt not in by_name:
                    continue
                c = color.get(nxt, 0)
                if c == 0:
                    color[nxt] = 1
                    path.append(nxt)
                    stack.append((nxt, iter(graph.get(nxt, ()))))
                elif c == 1:  # a back edge: node -> nxt closes the cycle nxt -> ... -> node -> nxt
                    cyc = path[path.index(nxt) :]
                    i = cyc.index(min(cyc))
                    canon = tuple(cyc[i:] + cyc[:i])
                    if canon in reported:
                        continue
                    reported.add(canon)
                    spelled = " -> ".join([*cyc, cyc[0]])
                    self.add(
                        "W201",
                        f"side effects form a cycle: {spelled}",
                        edge.loc,
                        severity="warning",
                        label="this edge closes the cycle",
                        help="a rollback cascade over this cycle stops at the loop and is marked partial; "
                        "break the cycle if the actions are not really circular",
                        notes=tuple(f"`{n}` is declared at {by_name[n].loc}" for n in cyc),
                    )


def check(
    files: Iterable[ir.PolicyFile],
    sources: dict[str, SourceFile],
    cel_cache: dict | None = None,
    accelerate: bool = True,
) -> Checker:
    c = Checker(files, sources, cel_cache, accelerate)
    c.run()
    return c
