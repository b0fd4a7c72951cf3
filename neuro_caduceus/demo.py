"""`make demo`: the whole pipeline end to end on the embedded default (local Ray, local Hail, CPU).

synthetic cohort -> RANDOM tiny checkpoint -> Hail MatrixTable -> cohort embedding job on Ray -> subject
matrix -> exact PCA -> residuals on covariates -> leave-one-gene-out ΔAUC with permutations, the per-gene
test and gene-brain CCA; then the same cohort job with a second RANDOM tiny encoder and the comparison of the
two (compare-encoders).

Why a module and not a shell script: one Ray session and one Hail session serve every stage (each costs
seconds to start), and every step is skipped when its output is already complete, so a re-run after an
interruption resumes. The settings of the embedding job come from `configs/demo.yaml`; only its
`demo_out/` paths are moved under `--out`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from neuro_caduceus.cohort.config import CohortConfig
from neuro_caduceus.cohort.layout import JobFolder
from neuro_caduceus.errors import INTERRUPTED, debug_requested, report
from neuro_caduceus.io import discard
from neuro_caduceus.model.commands import make_checkpoint
from neuro_caduceus.model.config import preset_config
from neuro_caduceus.stats.jobs import run_pca, run_residualize
from neuro_caduceus.stats.subject_matrix import build_subject_matrix
from neuro_caduceus.synthetic import make_cohort
from neuro_caduceus.variants.importer import import_vcf

DEMO_PREFIX = "demo_out/"
SECOND_PRESET = "tiny-dnabert2"  # the second encoder: same config except model.checkpoint
SECOND_NAME = "dnabert2"
RANDOM_BANNER = (
    "NOTE: the demo embeds with a RANDOM tiny-ps checkpoint (neuro-caduceus make-checkpoint --preset "
    f"tiny-ps), and with a RANDOM {SECOND_PRESET} one for the encoder comparison: the numbers exercise the "
    "pipeline, they carry no biology. Point model.checkpoint at a real checkpoint for science."
)


OUTPUTS = {
    "cohort/": "the synthetic inputs: genome FASTA, GTF, VCF, covariates, phenotype (mdd), brain features",
    "checkpoint/": "the RANDOM tiny-ps Caduceus weights (Hugging Face layout)",
    "cohort.mt/": "the VCF as a Hail MatrixTable (multi-allelics split)",
    "embeddings/": "one strand-invariant embedding per subject x gene (shards/*.parquet) + manifest.json "
                   "(counts, token savings of haplotype dedup and window reuse)",
    "stats/": "subject matrix: each subject's gene embeddings concatenated in gene-set order",
    "pca/": "exact PCA model and scores (the genetic modality before covariates), scree plot",
    "residuals/": "scores residualized on age, sex, PC1-10 and batch: the modality to fuse with imaging",
    "logo/": "leave-one-gene-out ΔAUC for mdd with family-wise permutation p: which genes carry the signal",
    "gene_test/": "per-gene score test against mdd given the covariates (Holm and BH across genes)",
    "cca/": "held-out gene-brain canonical correlations with permutation p-values (report.md, plot)",
    f"checkpoint_{SECOND_NAME}/": f"the RANDOM {SECOND_PRESET} weights of the second encoder",
    f"embeddings_{SECOND_NAME}/": "the same cohort job with the second encoder (its own window store)",
    "compare/": "the two encoders compared on the same genes and subjects: CKA, spread, carrier shift, cost, "
                "LOGO and CCA side by side (compare_report.md, plot)",
}
STEPS = 13


def _step(title: str, done: bool, run: Callable[[], Any]) -> Any:
    """Run one stage with a header and its wall time, or say it is already complete."""
    print(f"\n== {title}", flush=True)
    if done:
        print("   already complete, skipped (delete the folder or use --fresh to redo it)", flush=True)
        return None
    t0 = time.time()
    result = run()
    print(f"   done in {time.time() - t0:.1f} s", flush=True)
    return result


def demo_config(config_path: Path, out: Path) -> Any:
    """The demo cohort job config with its `demo_out/` paths moved under `out` (absolute)."""
    raw = yaml.safe_load(config_path.read_text())

    def move(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(DEMO_PREFIX):
            return str((out / value[len(DEMO_PREFIX):]).resolve())
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        return value

    return CohortConfig.model_validate(move(raw))


def run_demo(out: Path, config_path: Path, samples: int, genes: int, seed: int, perms: int = 39) -> dict:
    """Every stage in order; returns the paths and headline numbers printed at the end."""
    from neuro_caduceus.analysis.cca import CCAConfig, cca_from_files
    from neuro_caduceus.analysis.gene_test import gene_test_from_files
    from neuro_caduceus.analysis.logo import LogoConfig, logo_from_files
    from neuro_caduceus.cohort.job import run_embed_cohort
    from neuro_caduceus.model.random_init import random_model
    from neuro_caduceus.ray_session import ensure_ray

    cfg = demo_config(config_path, out)
    cohort = out / "cohort"
    checkpoint = Path(cfg.model.checkpoint)
    stats, pca, resid = out / "stats", out / "pca", out / "residuals"
    print(RANDOM_BANNER, flush=True)

    _step(f"1/{STEPS} synthetic cohort ({samples} subjects, {genes} genes, seed {seed}) -> {cohort}",
          (cohort / "synth_manifest.json").exists(),
          lambda: make_cohort(cohort, n_samples=samples, n_genes=genes, seed=seed))
    _step(f"2/{STEPS} RANDOM tiny-ps checkpoint -> {checkpoint}", (checkpoint / "config.json").exists(),
          lambda: random_model(preset_config("tiny-ps"), seed=0).save_pretrained(checkpoint))
    _step(f"3/{STEPS} Hail import (split_multi_hts) -> {cfg.inputs.matrix_table}",
          Path(cfg.inputs.matrix_table).is_dir(),  # committed by rename: present = complete
          lambda: import_vcf([str(cohort / "cohort.vcf.gz")], cfg.inputs.matrix_table,
                             str(cohort / "genome.json")))
    ensure_ray()
    manifest = _step(f"4/{STEPS} cohort embedding job on Ray -> {cfg.output.dir}", False,
                     lambda: run_embed_cohort(cfg))
    _step(f"5/{STEPS} subject matrix -> {stats}", False,
          lambda: build_subject_matrix(cfg.output.dir, str(stats)))
    pca_summary = _step(f"6/{STEPS} exact PCA (512-D, capped at the data) -> {pca}", False,
                        lambda: run_pca(str(stats), str(pca), n_components=512))
    _step(f"7/{STEPS} residualize on age, sex, PC1-10, batch -> {resid}", False,
          lambda: run_residualize(str(pca), str(cohort / "covariates.tsv"), str(resid)))
    shards = JobFolder(cfg.output.dir).shards_dir
    pheno, covs = cohort / "phenotype.tsv", cohort / "covariates.tsv"
    logo = _step(f"8/{STEPS} leave-one-gene-out ΔAUC (nested CV, {perms} permutations) -> {out / 'logo'}",
                 False,
                 lambda: logo_from_files(shards, pheno, covs, out / "logo",
                                         config=LogoConfig(n_repeats=2, n_perm=perms), categorical=["batch"],
                                         numeric=["age"]))
    tested = _step(f"9/{STEPS} per-gene score test -> {out / 'gene_test'}", False,
                   lambda: gene_test_from_files(shards, pheno, covs, out / "gene_test", categorical=["batch"],
                                                numeric=["age"]))
    cca = _step(f"10/{STEPS} gene-brain CCA (held-out, permutation test) -> {out / 'cca'}", False,
                lambda: cca_from_files(resid, cohort / "brain.parquet", out / "cca",
                                       config=CCAConfig(n_perm=50, reduce_dims=10, n_components=3),
                                       gene_matrix=stats / "matrix"))
    compare = _second_encoder(cfg, out, cohort)
    planted = json.loads((cohort / "synth_manifest.json").read_text())["planted_gene"]["gene_name"]
    top = logo.table.sort("rank").row(0, named=True)
    overall = compare.similarity.filter(compare.similarity["gene"] == "all genes").row(0, named=True)
    first = tested.table.row(0, named=True)
    return {
        "embeddings": cfg.output.dir,
        "subjects": (manifest or {}).get("subjects"),
        "pca_components": (pca_summary or {}).get("n_components"),
        "logo_auc_all_genes": round(float(logo.auc_all), 3),
        "logo_top_gene": f"{top['gene']} (ΔAUC {top['delta_auc']:+.3f}, p (FWER) {top['p_fwer']:.3f}); "
                         f"features: {logo.extra['feature_kind']}",
        "gene_test_top_gene": f"{first['gene']} (p {first['p_value']:.3g}, Holm {first['p_holm']:.3g})",
        "planted_gene_found": _found(planted, top, first),
        "cca_heldout_r1": round(float(cca.table["heldout_r"][0]), 3),
        "cca_p1": float(cca.table["p_value"][0]),
        "compare_cka_all_genes": f"{overall['encoder_a']} vs {overall['encoder_b']}: {overall['cka']:.3f} "
                                 f"(permutation 95%: {overall['null_q95']:.3f})",
        "outputs": str(out.resolve()),
    }


def _second_encoder(cfg: CohortConfig, out: Path, cohort: Path) -> Any:
    """Steps 11-13: the second RANDOM encoder, the same cohort job with it, and the comparison of the two."""
    from neuro_caduceus.analysis.cca import CCAConfig
    from neuro_caduceus.analysis.compare_encoders import CompareConfig, Downstream, run_compare_encoders
    from neuro_caduceus.analysis.logo import LogoConfig
    from neuro_caduceus.cohort.job import run_embed_cohort

    checkpoint = (out / f"checkpoint_{SECOND_NAME}").resolve()
    body = cfg.model_dump(mode="json")
    body["model"]["checkpoint"] = str(checkpoint)
    body["output"]["dir"] = str((out / f"embeddings_{SECOND_NAME}").resolve())
    second = CohortConfig.model_validate(body)
    _step(f"11/{STEPS} RANDOM {SECOND_PRESET} checkpoint (the second encoder) -> {checkpoint}",
          (checkpoint / "config.json").exists(), lambda: make_checkpoint(SECOND_PRESET, 0, checkpoint))
    _step(f"12/{STEPS} the same cohort job with the second encoder -> {second.output.dir}", False,
          lambda: run_embed_cohort(second))
    downstream = Downstream(cohort / "phenotype.tsv", cohort / "brain.parquet", cohort / "covariates.tsv",
                            categorical=["batch"], numeric=["age"], logo=LogoConfig(n_repeats=1, n_perm=0),
                            cca=CCAConfig(n_perm=20, reduce_dims=10, n_components=3, categorical=("batch",),
                                          numeric=("age",)))
    return _step(f"13/{STEPS} compare the two encoders (CKA, spread, carrier shift, cost, LOGO, CCA) -> "
                 f"{out / 'compare'}", False,
                 lambda: run_compare_encoders([cfg.output.dir, second.output.dir], out / "compare",
                                              CompareConfig(n_perm=50), downstream))


def _found(planted: str, logo_top: dict, test_top: dict) -> str:
    """The closing verdict: is the planted gene ranked first with p < 0.05 by each analysis?"""
    verdicts = []
    for name, top, p in (("LOGO", logo_top, logo_top["p_fwer"]),
                         ("per-gene test", test_top, test_top["p_holm"])):
        hit = top["gene"] == planted and p < 0.05
        verdicts.append(f"{name}: {'yes' if hit else 'no'} (first {top['gene']}, corrected p {p:.3g})")
    return f"{planted} ranked first with corrected p < 0.05? " + "; ".join(verdicts)


def demo_entries(out: Path) -> list[Path]:
    """What the demo wrote in `out` (its OUTPUTS folders); anything else there is refused, never deleted.

    Why: `--fresh` deletes the demo's own outputs only; an `--out` that also holds other files (a thesis,
    a results table) is someone else's folder.
    """
    if not out.exists():
        return []
    if not out.is_dir():
        raise ValueError(f"--out {out} is a file; choose a folder")
    ours = {name.rstrip("/") for name in OUTPUTS}
    foreign = sorted(p.name for p in out.iterdir() if p.name not in ours)
    if foreign:
        raise ValueError(f"--out {out} holds {len(foreign)} entries the demo did not write "
                         f"({', '.join(foreign[:5])}); choose another --out (the demo never deletes them)")
    return sorted(p for p in out.iterdir())


def positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m neuro_caduceus.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"), help="cohort job config")
    parser.add_argument("--samples", type=positive, default=200)
    parser.add_argument("--genes", type=positive, default=6)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--perms", type=positive, default=39,
                        help="LOGO permutations (smallest family-wise p = 1 / (1 + perms); default 39)")
    parser.add_argument("--fresh", action="store_true",
                        help="delete the demo's own outputs in --out first and redo every stage")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    args = parser.parse_args(argv)
    if not args.config.is_file():
        parser.error(f"{args.config} not found: run from the repository root or pass --config")
    try:
        return run(args)
    except KeyboardInterrupt:
        if args.debug or debug_requested():
            raise
        print("\ninterrupted: rerun the same command to resume (complete stages are skipped)",
              file=sys.stderr)
        return INTERRUPTED
    except Exception as err:
        if args.debug or debug_requested():
            raise
        return report(err)


def run(args: argparse.Namespace) -> int:
    """The demo with its checked arguments; errors go to `main`."""
    entries = demo_entries(args.out)  # refuses a folder holding anything else, with or without --fresh
    if args.fresh:
        for entry in entries:
            discard(entry)
    t0 = time.time()
    summary = run_demo(args.out, args.config, args.samples, args.genes, args.seed, args.perms)
    print(f"\n== demo finished in {time.time() - t0:.0f} s", flush=True)
    for key, value in summary.items():
        print(f"   {key}: {value}")
    print("\nWhat is where (under --out):")
    for folder, meaning in OUTPUTS.items():
        print(f"   {folder:<12} {meaning}")
    print(RANDOM_BANNER)
    return 0


if __name__ == "__main__":
    sys.exit(main())
