"""One analysis run's folder, laid out the same for every analysis (LOGO, CCA).

`<name>_<table>.{parquet,csv}` per table (the recipe in the Parquet metadata), `<name>_<plot>.png`,
`<name>_summary.json` and `<name>_report.md`, each written atomically. Why one writer: the analyses
differ in their tables, summary and report, not in how a run's files are named and committed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from neuro_caduceus.analysis.outputs import write_frame
from neuro_caduceus.io import write_text
from neuro_caduceus.provenance import report_lines


def write_result_files(out: str | Path, name: str, result: Any, tables: dict[str, Any],
                       plot: tuple[str, Callable[[Any, Path], Path]], summarize: Callable[[Any], dict],
                       report: Callable[[Any, dict], str]) -> list[Path]:
    """Write the tables (polars DataFrames, in order), the plot (`(suffix, draw(result, path))`), the
    summary (`summarize(result)`) and the report (`report(result, summary)`) into `out` (created), with
    `result.extra["recipe"]`; returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = result.extra.get("recipe")
    paths = []
    for table, df in tables.items():
        paths += write_frame(df, out / f"{name}_{table}", recipe)
    suffix, draw = plot
    paths.append(draw(result, out / f"{name}_{suffix}.png"))
    summary = summarize(result)
    paths.append(write_text(out / f"{name}_summary.json", json.dumps(summary, indent=1, default=str)))
    paths.append(write_text(out / f"{name}_report.md", report(result, summary)))
    return paths


def report_header(heading: str, summary: dict, inputs: str, subjects: str) -> list[str]:
    """The lines every analysis report opens with: provenance, inputs, subjects, relatedness, covariates."""
    s = summary
    return [
        f"# {heading}", "", *report_lines(s.get("recipe")),
        f"- recipe: `{s['recipe_id']}` ({inputs})",
        f"- n = {subjects}; join: {s['join']}",
        f"- restriction: {_restriction(s.get('restriction'))}",
        f"- relatedness: {s['relatedness'] or 'no kinship file (subjects treated as unrelated)'}",
        f"- covariates: {', '.join(s['covariates'] or []) or 'none'} "
        f"(categorical: {', '.join(s['categorical'] or []) or 'none'}; "
        f"integer codes declared numeric: {', '.join(s.get('numeric') or []) or 'none'})",
    ]


def _restriction(r: dict | None) -> str:
    if not r:
        return "none (every matched subject)"
    return f"{r['restriction']}: kept {r['after']} of {r['before']} matched subjects ({r['removed']} removed)"
