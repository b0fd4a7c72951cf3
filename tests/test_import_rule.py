"""The import rule of docs/development.md, checked: first-party imports sit at the top of a module.

The one exception is an import that would make a light module heavy: a module that does not load torch,
ray or hail at import time may import, inside the function that needs it, a project module that does
(so `neuro-caduceus --help` and the pure cores stay fast).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "neuro_caduceus"
HEAVY = {"torch", "ray", "hail"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    """Module names an import statement loads (for `from pkg import mod`, the submodule when it is one)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level or node.module is None:
        return []
    subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES]
    return [node.module, *subs]


def _top_level_imports(name: str) -> list[str]:
    tree = ast.parse(MODULES[name].read_text())
    found = []
    for node in tree.body:
        if isinstance(node, ast.If | ast.Try):  # e.g. `if TYPE_CHECKING:` stays light; try-imports count
            if isinstance(node, ast.If):
                continue
            nodes = node.body
        else:
            nodes = [node]
        for n in nodes:
            if isinstance(n, ast.Import | ast.ImportFrom):
                found += _imported(n)
    return found


@cache
def _heavy(name: str, seen: frozenset = frozenset()) -> bool:
    """Whether importing the module loads torch, ray or hail (directly, through project modules, or through
    the `__init__` of a package it lies in, which Python imports first)."""
    parents = [p for p in (name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)) if p in MODULES]
    for target in [*parents, *_top_level_imports(name)]:
        if target.split(".")[0] in HEAVY:
            return True
        if target in MODULES and target not in seen and target != name and _heavy(target, seen | {name}):
            return True
    return False


def _function_imports(tree: ast.Module):
    for func in ast.walk(tree):
        if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(func):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    yield node


def test_first_party_imports_are_at_module_top():
    offenders = []
    for name, path in sorted(MODULES.items()):
        light = not _heavy(name)
        for node in _function_imports(ast.parse(path.read_text())):
            for target in _imported(node):
                if target.split(".")[0] != "neuro_caduceus" or target not in MODULES:
                    continue
                if light and _heavy(target):
                    continue
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} imports {target}")
    assert not offenders, "move these imports to the module top:\n" + "\n".join(sorted(set(offenders)))


def test_the_rule_sees_a_light_module_and_a_heavy_one():
    assert _heavy("neuro_caduceus.model.scan")  # imports torch at the top
    assert not _heavy("neuro_caduceus.io")
