"""Two or more encoders over the same haplotypes, windows and subjects: how their gene embeddings differ.

Why: a group choosing between DNA language models (Caduceus, DNABERT-2, ...) needs the comparison on its
own cohort and genes, like for like. Each encoder's cohort job is run on the same config except the
checkpoint; this reads the job folders, refuses unless they agree on genes, reference, regions, haplotype
strategy and subjects, and reports per gene and over all genes: linear CKA between every pair of encoders
(with a row-permutation baseline), each encoder's total variance and participation ratio, how far carriers
of the gene's variants move from non-carriers, and what each encoder costs (manifest). Given a phenotype
and/or brain features, LOGO ΔAUC and gene-brain CCA run once per encoder with the same folds, seeds and
covariates (the analyses' own functions, each writing its usual folder) and are set side by side.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from neuro_caduceus.analysis.cca import CCAConfig, cca_from_files
from neuro_caduceus.analysis.encoder_jobs import (
    EncoderJob,
    carriers,
    check_comparable,
    check_same_carriers,
    cost,
    label_encoders,
    load_features,
    read_encoder_job,
)
from neuro_caduceus.analysis.logo import LogoConfig, logo_from_files
from neuro_caduceus.analysis.outputs import new_figure, save_figure
from neuro_caduceus.analysis.representation import (
    carrier_shift,
    cka_permutation_test,
    participation_ratio,
    total_variance,
)
from neuro_caduceus.analysis.result_files import write_result_files
from neuro_caduceus.provenance import report_lines, stamp, title

ALL_GENES = "all genes"
DEFINITIONS = {
    "cka": "linear CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), X and Y the two encoders' "
           "subjects x features blocks, columns centred; 1 = the same geometry up to rotation and scale",
    "cka_null": "CKA with the second encoder's rows permuted (subjects' pairing broken): null mean and 95% "
                "quantile; p = (1 + #{null >= observed}) / (1 + n_perm)",
    "total_variance": "trace of the block's sample covariance across subjects (in the encoder's own units)",
    "effective_dim": "participation ratio (sum of covariance eigenvalues)^2 / sum of their squares",
    "carriers": "subjects with at least one non-reference haplotype in the gene: a haplotype listed in the "
                "job's plan for the gene, i.e. carrying at least one variant that passed QC in its region",
    "relative_shift": "mean over carriers of ||e_s - mean_0|| / ||mean_0||, mean_0 the non-carriers' mean "
                      "vector (the reference embedding when they carry no variant): how far carriers move, "
                      "in units of the embedding's length, so encoders of any scale compare",
    "eta_squared": "n_c n_0 / n ||mean_c - mean_0||^2 / sum_s ||e_s - mean||^2: the share of the block's "
                   "spread between carriers and non-carriers (1: every carrier moves the same way)",
}


@dataclass(frozen=True)
class CompareConfig:
    """CKA permutations and their seed (the seed also goes to LOGO and CCA through their configs)."""

    n_perm: int = 100
    seed: int = 0


@dataclass
class CompareResult:
    similarity: pl.DataFrame  # gene, encoder_a, encoder_b, cka, null_mean, null_q95, p_value
    per_encoder: pl.DataFrame  # gene, encoder, dim, total_variance, effective_dim, carriers, shift, eta^2
    cost: pl.DataFrame  # encoder: tokens, model/GPU/CPU/wall seconds, tokens/s
    logo: pl.DataFrame | None
    cca: pl.DataFrame | None
    jobs: list[EncoderJob]
    n: int
    config: CompareConfig
    extra: dict = field(default_factory=dict)


def read_comparable_jobs(folders: list[str | Path]) -> tuple[list[EncoderJob], list[dict[str, set[str]]]]:
    """The job folders read, checked like for like (genes, reference, regions, strategy, subjects, carriers,
    different encoders) and labelled; with each job's carriers per gene."""
    jobs = [read_encoder_job(f) for f in folders]
    check_comparable(jobs)
    load_features(jobs)
    per_job = [carriers(j) for j in jobs]
    check_same_carriers(jobs, per_job)
    label_encoders(jobs)
    return jobs, per_job


def compare_jobs(jobs: list[EncoderJob], gene_carriers: dict[str, set[str]],
                 config: CompareConfig | None = None) -> CompareResult:
    """The representation and cost tables of comparable, labelled jobs (same subject rows in each)."""
    config = config or CompareConfig()
    genes = list(jobs[0].features.blocks)
    subjects = jobs[0].features.subject_ids
    sim_rows = []
    for gi, gene in enumerate([*genes, ALL_GENES]):
        for (a, ja), (b, jb) in itertools.combinations(enumerate(jobs), 2):
            t = cka_permutation_test(_block(ja, gene), _block(jb, gene), config.n_perm,
                                     np.random.default_rng([config.seed, gi, a, b]))
            sim_rows.append({"gene": gene, "encoder_a": ja.label, "encoder_b": jb.label, "cka": t.cka,
                             "null_mean": t.null_mean, "null_q95": t.null_q95, "p_value": t.p_value,
                             "n_perm": t.n_perm})
    enc_rows = []
    for job in jobs:
        rows = []
        for gene in genes:
            X = _block(job, gene)
            shift = carrier_shift(X, np.array([s in gene_carriers[gene] for s in subjects]))
            rows.append({"gene": gene, "encoder": job.label, "dim": X.shape[1],
                         "total_variance": total_variance(X), "effective_dim": participation_ratio(X),
                         "n_carriers": shift.n_carriers, "n_noncarriers": shift.n_noncarriers,
                         "relative_shift": shift.relative_shift, "eta_squared": shift.eta_squared})
        X = job.features.X
        enc_rows += [*rows, {"gene": ALL_GENES, "encoder": job.label, "dim": X.shape[1],
                             "total_variance": total_variance(X), "effective_dim": participation_ratio(X),
                             "n_carriers": None, "n_noncarriers": None,
                             "relative_shift": _nanmean([r["relative_shift"] for r in rows]),
                             "eta_squared": _nanmean([r["eta_squared"] for r in rows])}]
    costs = pl.DataFrame([cost(j) for j in jobs])
    return CompareResult(pl.DataFrame(sim_rows), pl.DataFrame(enc_rows), costs, None, None, jobs,
                         len(subjects), config)


def _nanmean(values: list[float]) -> float:
    """Mean over the genes where the value is defined (NaN if none)."""
    kept = [v for v in values if not np.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")


def _block(job: EncoderJob, gene: str) -> np.ndarray:
    fm = job.features
    return fm.X if gene == ALL_GENES else fm.X[:, fm.blocks[gene]]


@dataclass(frozen=True)
class Downstream:
    """The optional per-encoder analyses: inputs and their settings (None: that analysis is not run)."""

    phenotype: str | Path | None = None
    brain: str | Path | None = None
    covariates: str | Path | None = None
    phenotype_column: str = "mdd"
    covariate_columns: list[str] | None = None
    categorical: list[str] | None = None
    numeric: list[str] | None = None
    logo: LogoConfig = field(default_factory=LogoConfig)
    cca: CCAConfig = field(default_factory=CCAConfig)


def run_compare_encoders(folders: list[str | Path], out: str | Path, config: CompareConfig | None = None,
                     downstream: Downstream | None = None) -> CompareResult:
    """Read and check the jobs, compare them, run LOGO/CCA per encoder if asked, write everything to `out`."""
    config = config or CompareConfig()
    d = downstream or Downstream()
    out = Path(out)
    jobs, per_job = read_comparable_jobs(folders)
    result = compare_jobs(jobs, per_job[0], config)
    if d.phenotype is not None:
        result.logo, result.extra["logo"] = _logo_side_by_side(jobs, out, d)
    if d.brain is not None:
        result.cca, result.extra["cca"] = _cca_side_by_side(jobs, out, d)
    identities = [{"label": j.label, "folder": j.folder, **j.identity} for j in jobs]
    base = {**jobs[0].recipe, "random_init": any(j.identity["random_init"] for j in jobs),
            "encoders": identities}
    result.extra["recipe"] = stamp(base, "compare_encoders",
                                   [*(j.shards for j in jobs), d.phenotype, d.brain, d.covariates])
    write_compare_outputs(result, out)
    return result


def _logo_side_by_side(jobs: list[EncoderJob], out: Path, d: Downstream) -> tuple[pl.DataFrame, dict]:
    """LOGO per encoder into `logo_<label>/` (same folds: same subjects, phenotype, seed); one long table."""
    results = {j.label: logo_from_files(j.shards, d.phenotype, d.covariates, out / f"logo_{j.label}",
                                        d.phenotype_column, d.covariate_columns, d.logo, d.categorical,
                                        numeric=d.numeric)
               for j in jobs}
    first = next(iter(results.values()))
    same = all(np.array_equal(r.fold_of, first.fold_of) for r in results.values())
    if not same:
        raise RuntimeError("LOGO folds differ between encoders although subjects and phenotype agree")
    table = pl.concat([r.table.select("gene", "delta_auc", "ci_low", "ci_high", "auc_without", "p_value",
                                      "p_holm").with_columns(pl.lit(label).alias("encoder"),
                                                             pl.lit(r.auc_all).alias("auc_all"))
                       for label, r in results.items()]).select("encoder", pl.exclude("encoder"))
    info = {"folders": {label: f"logo_{label}" for label in results}, "same_folds": same,
            "auc_all": {label: r.auc_all for label, r in results.items()}, "n": first.n,
            "n_cases": first.n_cases, "repeats": d.logo.n_repeats, "folds": d.logo.n_folds,
            "n_perm": d.logo.n_perm, "seed": d.logo.seed, "covariates": first.extra.get("covariates")}
    return table, info


def _cca_side_by_side(jobs: list[EncoderJob], out: Path, d: Downstream) -> tuple[pl.DataFrame, dict]:
    """Gene-brain CCA per encoder into `cca_<label>/` (same folds: same subjects and seed); one long table."""
    results = {j.label: cca_from_files(j.shards, d.brain, out / f"cca_{j.label}", d.cca, d.covariates,
                                       d.covariate_columns) for j in jobs}
    table = pl.concat([r.table.select("component", "heldout_r", "train_r", "null_q95", "p_value", "p_fwer")
                       .with_columns(pl.lit(label).alias("encoder")) for label, r in results.items()])
    first = next(iter(results.values()))
    info = {"folders": {label: f"cca_{label}" for label in results}, "n": first.n, "folds": d.cca.n_folds,
            "n_perm": d.cca.n_perm, "reduce_dims": d.cca.reduce_dims, "seed": d.cca.seed,
            "covariates": first.extra.get("covariates")}
    return table.select("encoder", pl.exclude("encoder")), info


# ------------------------------------------------------------------------------------------------ outputs


def write_compare_outputs(result: CompareResult, out: str | Path) -> list[Path]:
    """compare_{similarity,encoders,cost[,logo,cca]}.{parquet,csv}, compare_cka.png, summary, report."""
    tables = {"similarity": result.similarity, "encoders": result.per_encoder, "cost": result.cost}
    if result.logo is not None:
        tables["logo"] = result.logo
    if result.cca is not None:
        tables["cca"] = result.cca
    return write_result_files(out, "compare", result, tables, ("cka", plot_comparison), _summary, _report)


def _summary(result: CompareResult) -> dict:
    first = result.jobs[0].recipe
    return {
        "analysis": "encoder comparison", "n": result.n,
        "genes": list(result.jobs[0].features.blocks),
        "agreed": {"reference_version": first.get("reference_version"), "regions": first.get("regions"),
                   "haplotype_strategy": first.get("haplotype_strategy"), "subjects": result.n},
        "encoders": [{"label": j.label, "folder": j.folder, **j.identity} for j in result.jobs],
        "cka_permutations": result.config.n_perm, "seed": result.config.seed, "definitions": DEFINITIONS,
        "similarity": result.similarity.to_dicts(), "per_encoder": result.per_encoder.to_dicts(),
        "cost": result.cost.to_dicts(), "logo": result.extra.get("logo"), "cca": result.extra.get("cca"),
        "recipe": result.extra.get("recipe"),
    }


def _num(value, fmt: str = ".3f") -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, fmt)


def _table(header: list[str], rows: list[list]) -> list[str]:
    """Markdown table lines."""
    return [f"| {' | '.join(header)} |", "|" + "---|" * len(header),
            *(f"| {' | '.join(str(c) for c in row)} |" for row in rows)]


def _joined(values) -> str:
    return ", ".join(values or []) or "none"


def _report(result: CompareResult, s: dict) -> str:
    a = s["agreed"]
    lines = [
        "# Encoder comparison", "", *report_lines(s["recipe"]),
        f"- {len(s['encoders'])} encoders over the same {len(s['genes'])} genes, reference "
        f"`{a['reference_version']}`, regions `{json.dumps(a['regions'], sort_keys=True)}`, haplotype "
        f"strategy `{a['haplotype_strategy']}` and {s['n']} subjects (checked before anything was computed)",
        "",
        *_table(["encoder", "family", "checkpoint sha256", "tokenizer", "window", "stride", "pooling",
                 "random weights", "job"],
                [[e["label"], e["family"], f"`{str(e['checkpoint_sha256'])[:16]}`", e["tokenizer"],
                  e["window"], e["stride"], e["pooling"], "yes" if e["random_init"] else "no",
                  f"`{e['folder']}`"]
                 for e in s["encoders"]]),
        "", "## Similarity of the gene embeddings across subjects (linear CKA)", "",
        f"- {DEFINITIONS['cka']}",
        f"- baseline: {DEFINITIONS['cka_null']}; {s['cka_permutations']} permutations, seed {s['seed']}", "",
        *_table(["gene", "encoder A", "encoder B", "CKA", "null mean", "null 95%", "p"],
                [[r["gene"], r["encoder_a"], r["encoder_b"], _num(r["cka"]), _num(r["null_mean"]),
                  _num(r["null_q95"]), _num(r["p_value"], ".4f")] for r in s["similarity"]]),
        "", "## Spread and carrier shift per encoder", "",
        f"- total variance: {DEFINITIONS['total_variance']}",
        f"- effective dimension: {DEFINITIONS['effective_dim']}",
        f"- carriers: {DEFINITIONS['carriers']}; on the `{ALL_GENES}` row, relative shift and η² are means "
        "over the genes where they are defined",
        f"- relative shift: {DEFINITIONS['relative_shift']}", f"- η²: {DEFINITIONS['eta_squared']}", "",
        *_table(["gene", "encoder", "dim", "total variance", "effective dim", "carriers", "non-carriers",
                 "relative shift", "η²"],
                [[r["gene"], r["encoder"], r["dim"], _num(r["total_variance"], ".4g"),
                  _num(r["effective_dim"], ".2f"), _num(r["n_carriers"], "d"), _num(r["n_noncarriers"], "d"),
                  _num(r["relative_shift"], ".4g"), _num(r["eta_squared"])] for r in s["per_encoder"]]),
        "", "## Cost (from each job's manifest, every run)", "",
        "- model seconds: time the embedding actors spent in the model, summed over actors; GPU-seconds = "
        "model seconds x GPUs per actor (CUDA actors), CPU-seconds = model seconds x CPUs per actor", "",
        *_table(["encoder", "device", "model tokens", "model s", "GPU s", "CPU s", "wall s",
                 "tokens / model s", "tokens / wall s"],
                [[c["encoder"], c["device"], c["tokens_embedded"], _num(c["model_seconds"], ".2f"),
                  _num(c["gpu_seconds"], ".2f"), _num(c["cpu_seconds"], ".2f"),
                  _num(c["wall_seconds"], ".1f"),
                  _num(c["tokens_per_model_second"], ",.0f"), _num(c["tokens_per_wall_second"], ",.0f")]
                 for c in s["cost"]]),
        *_logo_lines(result, s), *_cca_lines(result, s),
        "", "![CKA per gene and effective dimension per encoder](compare_cka.png)", "",
    ]
    return "\n".join(lines)


def _logo_lines(result: CompareResult, s: dict) -> list[str]:
    info = s.get("logo")
    if result.logo is None or not info:
        return []
    labels = list(info["auc_all"])
    by = {(r["encoder"], r["gene"]): r for r in result.logo.to_dicts()}
    rows = [[gene, *(c for k in labels for c in (_num(by[(k, gene)]["delta_auc"], "+.4f"),
                                                 _num(by[(k, gene)]["p_value"], ".4f")))]
            for gene in result.jobs[0].features.blocks]
    return [
        "", "## Leave-one-gene-out ΔAUC per encoder (same folds, seeds and covariates)", "",
        f"- n = {info['n']} ({info['n_cases']} cases); {info['repeats']} x {info['folds']}-fold, seed "
        f"{info['seed']}, {info['n_perm']} permutations; covariates: {_joined(info['covariates'])}; folds "
        f"identical across encoders: {info['same_folds']}",
        "- AUC with all genes: " + ", ".join(f"{k} {v:.3f}" for k, v in info["auc_all"].items()),
        "- each encoder's full LOGO output: " + ", ".join(f"`{f}/`" for f in info["folders"].values()), "",
        *_table(["gene", *(c for k in labels for c in (f"ΔAUC {k}", f"p {k}"))], rows),
    ]


def _cca_lines(result: CompareResult, s: dict) -> list[str]:
    info = s.get("cca")
    if result.cca is None or not info:
        return []
    labels = list(info["folders"])
    by = {(r["encoder"], r["component"]): r for r in result.cca.to_dicts()}
    rows = [[comp, *(c for k in labels for c in ((_num(by[(k, comp)]["heldout_r"], "+.3f"),
                                                 _num(by[(k, comp)]["p_value"], ".4f"))
                                                if (k, comp) in by else ("n/a", "n/a")))]
            for comp in sorted({c for _, c in by})]
    return [
        "", "## Gene-brain CCA per encoder (same folds, seeds and covariates)", "",
        f"- n = {info['n']}; {info['folds']}-fold, seed {info['seed']}, {info['n_perm']} permutations, PCA "
        f"to {info['reduce_dims']} dims per side; covariates: {_joined(info['covariates'])}",
        "- each encoder's full CCA output: " + ", ".join(f"`{f}/`" for f in info["folders"].values()), "",
        *_table(["component", *(c for k in labels for c in (f"held-out r {k}", f"p {k}"))], rows),
    ]


def plot_comparison(result: CompareResult, path: Path) -> Path:
    """Left: CKA per gene and pair with the permutation 95% quantile; right: effective dimension."""
    genes = [*result.jobs[0].features.blocks, ALL_GENES]
    fig, ax = new_figure(max(8.0, 1.1 * len(genes) + 4), 3.8)
    fig.clf()
    left, right = fig.subplots(1, 2)
    x = np.arange(len(genes))
    sim = result.similarity
    pairs = sim.select("encoder_a", "encoder_b").unique(maintain_order=True).rows()
    for k, (a, b) in enumerate(pairs):
        rows = sim.filter((pl.col("encoder_a") == a) & (pl.col("encoder_b") == b))
        shift = (k - (len(pairs) - 1) / 2) * 0.15
        left.plot(x + shift, rows["cka"].to_numpy(), "o", label=f"{a} vs {b}")
        left.plot(x + shift, rows["null_q95"].to_numpy(), "_", color="grey", markersize=12)
    left.set_xticks(x, genes, rotation=45, ha="right")
    left.set_ylim(0, 1.05)
    left.set_ylabel("linear CKA (grey: permutation 95%)")
    left.legend(fontsize=7, loc="lower left")
    width = 0.8 / len(result.jobs)
    for k, job in enumerate(result.jobs):
        rows = result.per_encoder.filter(pl.col("encoder") == job.label)
        offset = (k - (len(result.jobs) - 1) / 2) * width
        right.bar(x + offset, np.nan_to_num(rows["effective_dim"].to_numpy()), width, label=job.label)
    right.set_xticks(x, genes, rotation=45, ha="right")
    right.set_ylabel("effective dimension (participation ratio)")
    right.legend(fontsize=7)
    fig.suptitle(title(f"Encoder comparison (n={result.n})", result.extra.get("recipe")))
    return save_figure(fig, path)
