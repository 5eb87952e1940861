"""The CEL package's layering: the reference compiler never reaches the fast path, each module
imports only the ones below it, only policy_engine/cel/ imports celpy and re2, and every module
stays small enough to read in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).parents[1] / "policy_engine"
CEL = PKG / "cel"

# bottom to top: a module may import only modules earlier in this list
ORDER = ["errors", "limits", "values", "optional", "datetimes", "regex", "conversions", "strings", "mathext", "format",
         "builtins", "rdparse", "parse", "typecheck", "nodes", "operators", "macros", "compile", "analysis", "emit",
         "codegen",
         "fuse", "api", "__init__"]
REFERENCE = {"errors", "limits", "values", "optional", "datetimes", "regex", "conversions", "strings", "mathext",
             "format", "builtins", "rdparse", "parse", "typecheck", "nodes", "operators", "macros", "compile",
             "analysis"}
ACCELERATORS = {"emit", "codegen", "fuse"}


def _imports(path: Path) -> set[str]:
    """Every module a file imports (relative ones resolved inside policy_engine), lazy ones included."""
    out: set[str] = set()
    pkg = ".".join(path.relative_to(PKG.parent).with_suffix("").parts[:-1])
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(n) for b in ast.walk(tree) if isinstance(b, ast.If) and ast.unparse(b.test) == "TYPE_CHECKING"
                   for n in ast.walk(b)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue  # annotations only
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                out.add(mod)
                if not node.module:
                    out.update(f"{mod}.{a.name}" for a in node.names)
            else:
                out.add(node.module or "")
    return out


def test_cel_modules_are_known_and_ordered() -> None:
    present = {p.stem for p in CEL.glob("*.py")}
    assert present <= set(ORDER), f"place {sorted(present - set(ORDER))} in ORDER"
    for name in (n for n in ORDER if n in present):
        for imp in _imports(CEL / f"{name}.py"):
            if imp.startswith("policy_engine.cel."):
                dep = imp.split(".")[2]
                assert ORDER.index(dep) < ORDER.index(name), f"cel/{name}.py imports cel/{dep}.py (upward)"
            elif imp.startswith("policy_engine.") and imp != "policy_engine.cel":
                # only the leaves of the package (limits, timestamps, lark_cache, fieldtypes)
                assert imp in ("policy_engine.limits", "policy_engine.timestamps", "policy_engine.lark_cache",
                               "policy_engine.fieldtypes"), (
                    f"cel/{name}.py imports {imp}")


def test_the_reference_compiler_does_not_reach_the_fast_path() -> None:
    for name in REFERENCE & {p.stem for p in CEL.glob("*.py")}:
        deps = {i.split(".")[2] for i in _imports(CEL / f"{name}.py") if i.startswith("policy_engine.cel.")}
        assert not deps & ACCELERATORS, f"cel/{name}.py imports {deps & ACCELERATORS}"


def test_only_the_cel_package_imports_celpy_and_re2() -> None:
    offenders = []
    for path in PKG.rglob("*.py"):
        if CEL in path.parents:
            continue
        hits = {i for i in _imports(path) if i.split(".")[0] in ("celpy", "re2")}
        if hits:
            offenders.append((str(path.relative_to(PKG.parent)), sorted(hits)))
    assert not offenders


def test_cel_modules_stay_small() -> None:
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in CEL.glob("*.py")}
    assert max(sizes.values()) <= 800, sizes
