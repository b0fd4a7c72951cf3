"""Every command and Python block of docs/haplotypes.md runs as written (in a temporary folder)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from typer.testing import CliRunner

from neuro_caduceus.cli import app

DOC = Path(__file__).resolve().parents[1] / "docs" / "haplotypes.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_haplotypes_page_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    commands = [line for block in _blocks("bash") for line in block.strip().split("\n")]
    assert commands and all(c.startswith("neuro-caduceus ") for c in commands)
    printed = []
    for command in commands:
        result = CliRunner().invoke(app, shlex.split(command)[1:])
        assert result.exit_code == 0, (command, result.output)
        printed.append(result.stdout.strip())
    genes_line = next(p for c, p in zip(commands, printed, strict=True) if " genes " in c)
    assert genes_line in " ".join(DOC.read_text().split())  # the page quotes what `genes` prints
    assert Path("synth/regions.tsv").is_file() and Path("synth/haps.summary.json").is_file()
    (python,) = _blocks("python")
    scope: dict = {}
    exec(compile(python, str(DOC), "exec"), scope)
    assert len(scope["regions"]) == 6 and scope["seq"]
