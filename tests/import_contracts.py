"""A custom import-linter contract: a package never imports another package's private names.

Why: a leading underscore marks what a package may change without notice; a module of `analysis/` that
imports `cohort.job._something` breaks silently when `cohort/` changes. import-linter's own contracts
see modules, not names, so this one reads the import statements (ast) of every module of the graph.
Registered in pyproject.toml ([tool.importlinter] contract_types); run by `lint-imports`.
"""

from __future__ import annotations

import ast
import importlib.util

import grimp
from importlinter import Contract, ContractCheck, fields, output
from importlinter.application import contract_utils


def _package_of(module: str, depth: int) -> str:
    """The part of a dotted module name that counts as its package (root + `depth` levels)."""
    return ".".join(module.split(".")[: depth + 1])


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


class PrivateNamesContract(Contract):
    """Modules under `source_modules` import no private name (`_x`) of a module in another package.

    Options: source_modules (packages checked), depth (1: neuro_caduceus.X is a package), ignore_imports
    (import-linter import expressions, e.g. "pkg.a.b -> pkg.c.d", each one a known exception).
    """

    type_name = "private_names"

    source_modules = fields.ListField(subfield=fields.ModuleExpressionField())
    depth = fields.IntegerField(minimum=1, default=1)
    ignore_imports = fields.SetField(subfield=fields.ImportExpressionField(), required=False)

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        warnings = contract_utils.remove_ignored_imports(
            graph=graph,
            ignore_imports=self.ignore_imports,  # type: ignore[arg-type]
            unmatched_alerting=contract_utils.AlertLevel.ERROR,
        )
        violations = []
        for expression in self.source_modules:  # type: ignore[attr-defined]
            root = expression.expression
            for importer in sorted({root} | graph.find_descendants(root)):
                violations += self._violations(graph, importer)
        return ContractCheck(kept=not violations, warnings=warnings, metadata={"violations": violations})

    def _violations(self, graph: grimp.ImportGraph, importer: str) -> list[str]:
        spec = importlib.util.find_spec(importer)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            return []
        with open(spec.origin) as f:
            tree = ast.parse(f.read(), spec.origin)
        found = []
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            imported = node.module
            if imported not in graph.modules:
                continue
            if _package_of(imported, self.depth) == _package_of(importer, self.depth):  # type: ignore[arg-type]
                continue
            if not graph.direct_import_exists(importer=importer, imported=imported):
                continue  # removed by ignore_imports
            names = [a.name for a in node.names if _private(a.name)]
            if any(_private(part) for part in imported.split(".")):
                names.append(f"(private module {imported})")
            found += [f"{importer} (l.{node.lineno}) imports {imported}.{n}" for n in names]
        return found

    def render_broken_contract(self, check: ContractCheck) -> None:
        for line in check.metadata["violations"]:
            output.print_error(f"- {line}", bold=False)
        output.new_line()
