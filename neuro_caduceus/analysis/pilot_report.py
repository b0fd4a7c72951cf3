"""The pilot's files: Parquet tables with the recipe, three plots and a Markdown report; atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

from neuro_caduceus.analysis.outputs import new_figure, save_figure
from neuro_caduceus.io import write_parquet, write_text
from neuro_caduceus.provenance import report_lines, title


def plot_distance_vs_frequency(variants, path: Path, recipe: dict | None = None) -> Path:
    fig, ax = new_figure(6, 4)
    for cls in sorted(set(variants["consequence"].to_list())):
        part = variants.filter(variants["consequence"] == cls)
        ax.scatter(part["allele_frequency"].to_numpy(), part["cos_distance"].to_numpy(), s=12, label=cls,
                   alpha=0.7)
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.set_xlabel("allele frequency in the cohort")
    ax.set_ylabel("cosine distance to the reference (gene)")
    ax.set_title(title("Single-variant effect vs allele frequency", recipe))
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_per_gene(subjects, path: Path, recipe: dict | None = None) -> Path:
    genes = list(dict.fromkeys(subjects["gene_name"].to_list()))
    fig, ax = new_figure(max(5, 0.8 * len(genes) + 2), 4)
    data = [subjects.filter(subjects["gene_name"] == g)["cos_distance"].to_numpy() for g in genes]
    ax.boxplot(data, showfliers=True)
    ax.set_xticks(range(1, len(genes) + 1), genes, rotation=45, ha="right")
    ax.set_ylabel("subject cosine distance to the reference")
    ax.set_title(title("Per-gene distribution over subjects", recipe))
    return save_figure(fig, path)


def plot_along_gene(variants, path: Path, recipe: dict | None = None) -> Path:
    fig, ax = new_figure(7, 4)
    for gene in dict.fromkeys(variants["gene_name"].to_list()):
        part = variants.filter(variants["gene_name"] == gene)
        ax.plot(part["relative_position"].to_numpy(), part["local_cos_distance"].to_numpy(), "o", ms=3,
                label=gene, alpha=0.7)
    ax.set_xlabel("position along the gene (0 = gene start, 1 = gene end, reference coordinates)")
    ax.set_ylabel("local cosine distance (+-flank)")
    ax.set_title(title("Local variant effect along the gene", recipe))
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path)


def write_outputs(out: Path, variants, subjects, summary: dict, recipe: dict) -> list[Path]:
    """variants.parquet, subjects.parquet, *.png, report.md, pilot_summary.json (temp name, then rename)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [write_parquet(variants.to_arrow(), out / "variants.parquet", recipe),
             write_parquet(subjects.to_arrow(), out / "subjects.parquet", recipe)]
    plots = [plot_distance_vs_frequency(variants, out / "distance_vs_frequency.png", recipe),
             plot_per_gene(subjects, out / "distance_per_gene.png", recipe),
             plot_along_gene(variants, out / "distance_along_gene.png", recipe)]
    paths += plots
    paths.append(write_text(out / "pilot_summary.json", json.dumps({**summary, "recipe": recipe}, indent=1,
                                                                   default=str)))
    paths.append(write_text(out / "report.md", report_markdown(variants, subjects, summary, recipe, plots)))
    return paths


def report_markdown(variants, subjects, summary: dict, recipe: dict, plots: list[Path]) -> str:
    strand = summary["strand_check"]
    top = variants.sort("cos_distance", descending=True).head(10)
    lines = [
        "# Variant-vs-reference pilot", "", *report_lines(recipe),
        f"{summary['genes']} genes, {summary['subjects']} subjects, {summary['variants']} variants "
        f"({summary['seconds']} s). Local effect: +-{summary['local_flank']} bp around each variant.", "",
        f"- variants by status: {summary['variants_by_status']}",
        f"- variants by consequence: {summary['variants_by_consequence']}",
        f"- windows embedded: {summary['windows_embedded']:,} ({summary['tokens_embedded']:,} tokens)",
        "- strand check: " + (
            f"minus-strand genes {strand['genes']} with orient {strand['orientations'][0]} vs "
            f"{strand['orientations'][1]}: max |difference| of distances {strand['max_abs_difference']:.2e} "
            f"over {strand['variants_compared']} variants ({'PASSED' if strand['passed'] else 'FAILED'})"
            if strand.get("run") else f"not run ({strand['reason']})"),
        "",
        *[f"![{p.stem}]({p.name})" for p in plots], "",
        "## Largest single-variant effects", "",
        "| gene | position | ref | alt | AF | consequence | cos distance | L2 | local cos distance | LLR |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *[f"| {r['gene_name']} | {r['chrom']}:{r['pos']} | {r['ref']} | {r['alt']} | "
          f"{r['allele_frequency']:.4f} | {r['consequence']} | {r['cos_distance']:.3e} | "
          f"{r['l2_distance']:.3e} | {r['local_cos_distance']:.3e} | {r.get('llr', float('nan')):.3f} |"
          for r in top.iter_rows(named=True)],
        "", *llr_lines(summary.get("llr_noise_floor"), summary.get("llr_absent")),
        "## Subjects per gene", "",
        "| gene | subjects | with variants | median cos distance | max cos distance |",
        "|---|---|---|---|---|",
    ]
    for gene in dict.fromkeys(subjects["gene_name"].to_list()):
        part = subjects.filter(subjects["gene_name"] == gene)
        lines.append(f"| {gene} | {part.height} | {int((part['n_variants'] > 0).sum())} | "
                     f"{part['cos_distance'].median():.3e} | {part['cos_distance'].max():.3e} |")
    lines += ["", "## Recipe", "", "```json", json.dumps(recipe, indent=1, sort_keys=True), "```", ""]
    return "\n".join(lines)


def llr_lines(floor: dict | None, absent: str | None = None) -> list[str]:
    """The masked-LM LLR section: how the scores were made and their noise floor (or why there are none)."""
    if absent:
        return ["## Masked-LM log-likelihood ratio (zero-shot)", "", f"Absent for this encoder: {absent}.",
                ""]
    if not floor:
        return []
    lines = ["## Masked-LM log-likelihood ratio (zero-shot)", "",
             "LLR = log P(alt) - log P(ref) at the masked variant position in its reference context "
             f"(+-{floor['flank']} bp), averaged over both strands; methods: {floor.get('methods')}.",
             f"Strand disagreement (numerical noise): max |LLR forward - LLR reverse| = "
             f"{floor['strand_max_abs_difference']:.2e}.", "",
             f"Noise floor: |LLR| of {floor['n_per_class']} random substitutions per consequence class "
             f"(seed {floor['seed']}):", "",
             "| class | n | median abs LLR | p95 abs LLR |", "|---|---|---|---|"]
    for cls, c in floor["random_same_class"].items():
        med, p95 = c["median_abs_llr"], c["p95_abs_llr"]
        lines.append(f"| {cls} | {c['n']} | {'-' if med is None else f'{med:.3f}'} | "
                     f"{'-' if p95 is None else f'{p95:.3f}'} |")
    return [*lines, ""]
