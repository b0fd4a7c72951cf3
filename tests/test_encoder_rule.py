"""No family switch outside the encoder package: the pipeline sees models only through the contract.

lint-imports (pyproject.toml) keeps cohort/, analysis/ and stats/ from importing a family's modules; this
test reads every module outside model/ for the other ways to switch on a family: comparing with a family
name, `isinstance` on a model class, or reading Caduceus's `rcps` flag.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "neuro_caduceus"
FAMILY_NAMES = {"caduceus", "dnabert2", "dnabert-2"}
MODEL_CLASSES = {"CaduceusForMaskedLM", "DnaBert2ForMaskedLM", "Embedder", "DnaBert2Encoder"}


def _switches(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                if isinstance(side, ast.Constant) and str(side.value).lower() in FAMILY_NAMES:
                    found.append(f"line {node.lineno}: compares with the family name {side.value!r}")
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
            names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)} if len(node.args) > 1 \
                else set()
            if names & MODEL_CLASSES:
                found.append(f"line {node.lineno}: isinstance on {sorted(names & MODEL_CLASSES)}")
        if isinstance(node, ast.Attribute) and node.attr == "rcps":
            found.append(f"line {node.lineno}: reads .rcps")
    return found


def test_no_family_switch_outside_the_model_package():
    offenders = [f"{path.relative_to(PACKAGE.parent)} {hit}"
                 for path in sorted(PACKAGE.rglob("*.py")) if "model" not in path.relative_to(PACKAGE).parts
                 for hit in _switches(ast.parse(path.read_text()))]
    assert not offenders, "family switches outside neuro_caduceus/model:\n" + "\n".join(offenders)


def test_the_rule_catches_a_switch():
    src = "if kind == 'dnabert2':\n    pass\nisinstance(m, CaduceusForMaskedLM)\nx = enc.rcps\n"
    assert len(_switches(ast.parse(src))) == 3
