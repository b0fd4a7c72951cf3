"""Preflight: every shipped config dry-runs on synthetic stand-ins for its data, compute settings the cluster
cannot run are refused with their arithmetic, and paths are moved out of Ray's package folder or refused.

Runs in the session's local Ray (2 CPUs, no GPU). The MatrixTable configs read subjects with Hail in a Ray
worker, as the job does (a JVM start: the slow part).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pysam
import pytest
import yaml
from typer.testing import CliRunner

from neuro_caduceus.cohort import cluster, preflight, resources, submit
from neuro_caduceus.cohort.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
N_SAMPLES, N_GENES = 12, 2
pytestmark = pytest.mark.slow  # Hail: a MatrixTable import, and a JVM in a Ray worker for its subjects


@pytest.fixture(scope="module")
def synth(tmp_path_factory, hail_session) -> SimpleNamespace:
    from neuro_caduceus.synthetic import make_cohort
    from neuro_caduceus.variants.importer import import_vcf

    d = tmp_path_factory.mktemp("preflight")
    make_cohort(d, n_samples=N_SAMPLES, n_genes=N_GENES, seed=5)
    import_vcf([str(d / "cohort.vcf.gz")], str(d / "cohort.mt"), str(d / "genome.json"), min_partitions=2)
    subprocess.run([sys.executable, "-m", "neuro_caduceus.cli", "make-checkpoint", "--preset", "tiny-ps",
                    "--seed", "0", "--out", str(d / "ckpt")], check=True, capture_output=True)
    return SimpleNamespace(dir=d, paths={
        ("inputs", "matrix_table"): d / "cohort.mt", ("inputs", "vcf"): d / "cohort.vcf.gz",
        ("inputs", "reference_fasta"): d / "genome.fa", ("inputs", "gtf"): d / "genes.gtf.gz",
        ("inputs", "gene_set"): d / "geneset.yaml", ("model", "checkpoint"): d / "ckpt",
        ("output", "dir"): d / "out"})


def stand_in(config: Path, synth: SimpleNamespace, tmp_path: Path, **compute) -> Path:
    """The shipped config with every data path (URL or demo folder) pointed at the synthetic cohort."""
    body = yaml.safe_load(config.read_text())
    for (section, key), path in synth.paths.items():
        if key in body.get(section, {}):
            body[section][key] = str(path)
    body.setdefault("compute", {}).update(compute)
    out = tmp_path / config.name
    out.write_text(yaml.safe_dump(body))
    return out


def gene_bases(synth: SimpleNamespace) -> int:
    from neuro_caduceus.genome.annotation import read_genes

    genes = read_genes(str(synth.dir / "genes.gtf.gz"))
    return int((genes["end"] - genes["start"]).sum())


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_shipped_config_dry_runs(config, synth, ray_session, tmp_path):
    cfg = load_config(stand_in(config, synth, tmp_path))
    report = preflight.dry_run(cfg)
    text = preflight.format_report(report)
    with pysam.VariantFile(str(synth.dir / "cohort.vcf.gz")) as vcf:
        samples = len(vcf.header.samples)
    assert report["genes"] == N_GENES and report["subjects"] == samples == N_SAMPLES, text
    assert report["checkpoint"]["parameters"] > 0 and report["checkpoint"]["d_model"] > 0
    if cfg.regions.flank == 0 and cfg.regions.mode == "gene_body":
        assert report["reference_tokens"] == gene_bases(synth)
    haps = 2 if cfg.haplotype_strategy in ("diploid", "additive") else 1  # additive reads both haplotypes
    assert report["naive_tokens"] == report["reference_tokens"] * N_SAMPLES * haps
    if cfg.model.dtype == "float32":
        assert report["errors"] == [] and "dry run: OK" in text
    else:  # ukb_wes: bfloat16 on GPU actors; this cluster has no GPU, so it is refused, with the numbers
        assert len(report["errors"]) == 1, text
        assert "gpus_per_actor = 1 but the largest node has 0 GPU(s)" in report["errors"][0]
    assert not (synth.dir / "out").exists()  # a dry run writes nothing


def test_cli_dry_run(synth, ray_session, tmp_path):
    from neuro_caduceus.cli import app

    cfg = stand_in(ROOT / "configs" / "pilot_demo.yaml", synth, tmp_path)
    res = CliRunner().invoke(app, ["embed-cohort", "--config", str(cfg), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert f"genes {N_GENES}, subjects {N_SAMPLES}" in res.output and "dry run: OK" in res.output
    bad = stand_in(ROOT / "configs" / "pilot_demo.yaml", synth, tmp_path, actors_min=2, actors_max=2,
                   cpus_per_actor=1)
    res = CliRunner().invoke(app, ["embed-cohort", "--config", str(bad), "--dry-run"])
    assert res.exit_code == 2 and "nothing was run" in res.output


@pytest.mark.parametrize(("compute", "model", "expected"), [
    ({"actors_min": 2, "actors_max": 2, "cpus_per_actor": 1},
     {}, "actors_min 2 x cpus_per_actor 1 = 2 CPU + cpus_per_task 1 = 3 > 2 CPU in the cluster"),
    ({"cpus_per_actor": 4}, {}, "compute.cpus_per_actor = 4 but the largest node has 2 CPU(s)"),
    ({"gpus_per_actor": 2}, {"device": "cuda"},
     "compute.gpus_per_actor = 2 but the largest node has 0 GPU(s)"),
    ({}, {"dtype": "bfloat16"}, "model.dtype bfloat16 needs CUDA GPUs but the actors would run on CPU"),
    ({}, {"device": "cuda"}, "model.device is cuda but the actors get no GPU"),
])
def test_infeasible_compute_is_refused_with_arithmetic(ray_session, synth, tmp_path, compute, model,
                                                       expected):
    cfg = load_config(stand_in(ROOT / "configs" / "pilot_demo.yaml", synth, tmp_path, **compute))
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update=model)})
    with pytest.raises(cluster.PreflightError, match="cannot run on this cluster") as err:
        resources.check_resources(cfg)
    assert expected in str(err.value)


def test_feasible_compute_passes(ray_session, synth, tmp_path):
    cfg = load_config(stand_in(ROOT / "configs" / "pilot_demo.yaml", synth, tmp_path, cpus_per_task=1))
    assert resources.resource_problems(cfg, cluster.cluster_shape(), 0.0) == []
    resources.check_resources(cfg)  # 1 actor x 1 CPU + 1 CPU for the CPU stages = 2 CPUs: fits


def test_paths_in_ray_package_folder(synth, tmp_path):
    package = tmp_path / "runtime_resources" / "_ray_pkg_0123abcd"
    (package / "configs").mkdir(parents=True)
    (package / "configs" / "genes.yaml").write_text("uploaded")
    cfg = load_config(stand_in(ROOT / "configs" / "pilot_demo.yaml", synth, tmp_path))
    cfg = cfg.model_copy(update={
        "inputs": cfg.inputs.model_copy(update={"gene_set": str(package / "configs" / "genes.yaml"),
                                                 "vcf": str(package / "demo_out" / "cohort.vcf.gz")}),
        "output": cfg.output.model_copy(update={"dir": str(package / "demo_out" / "embeddings")})})
    assert submit.ray_package_dir(package / "configs") == package
    with pytest.raises(cluster.PreflightError, match="inputs.vcf: demo_out/cohort.vcf.gz was not uploaded"):
        submit.relocate_for_cluster(cfg, package, None)
    moved = submit.relocate_for_cluster(cfg, package, "/client/repo")
    assert moved.inputs.gene_set == str(package / "configs" / "genes.yaml")  # uploaded: stays
    assert moved.inputs.vcf == "/client/repo/demo_out/cohort.vcf.gz"
    assert moved.output.dir == "/client/repo/demo_out/embeddings"
    no_inputs = cfg.model_copy(update={"inputs": cfg.inputs.model_copy(update={"vcf": str(synth.dir / "x")})})
    with pytest.raises(cluster.PreflightError, match="temporary package folder and lost"):
        submit.relocate_for_cluster(no_inputs, package, None)


def test_paths_checked_on_every_node(ray_session, synth, tmp_path):
    cfg = load_config(stand_in(ROOT / "configs" / "pilot_demo.yaml", synth, tmp_path))
    cluster.check_paths_on_nodes(cfg)
    gone = cfg.model_copy(update={"inputs": cfg.inputs.model_copy(update={"gtf": "/nowhere/genes.gtf"})})
    with pytest.raises(cluster.PreflightError,
                       match=r"(?s)inputs.gtf: /nowhere/genes.gtf does not exist here \(node .*use a URL"):
        cluster.check_paths_on_nodes(gone)
