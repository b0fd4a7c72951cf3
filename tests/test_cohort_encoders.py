"""The cohort job with either encoder: DNABERT-2 and Caduceus over the same windows, separate stores.

Oracle: with the `reference` haplotype strategy every subject's gene vector is the reference gene's
strand-invariant mean, computed here with the encoder alone (`load_encoder(...).embed` over the gene's
sequence in transcript orientation, same window): no Ray, no planner, no store.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pysam
import pytest
import yaml

from neuro_caduceus.cohort.config import load_config
from neuro_caduceus.genome.annotation import read_genes
from neuro_caduceus.model import load_encoder
from neuro_caduceus.model.rc import reverse_complement
from neuro_caduceus.provenance import read_recipe

WINDOW = 400


def _config(d: Path, ckpt: Path, out: str, **model) -> Path:
    body = {
        "inputs": {"vcf": str(d / "cohort.vcf.gz"), "reference_fasta": str(d / "genome.fa"),
                   "gtf": str(d / "genes.gtf.gz"), "gene_set": str(d / "geneset.yaml"),
                   "reference_version": "synthetic"},
        "haplotype_strategy": "reference",
        "model": {"checkpoint": str(ckpt), "device": "cpu", "window": WINDOW, **model},
        "compute": {"actors_min": 1, "actors_max": 1, "cpus_per_actor": 1, "cpus_per_task": 0.5,
                    "tokens_per_batch": 4 * WINDOW},
        "output": {"dir": str(d / out)},
    }
    path = d / f"{out}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from neuro_caduceus.model.config import preset_config
    from neuro_caduceus.model.dnabert2_config import tiny_dnabert2_config
    from neuro_caduceus.model.dnabert2_random import random_dnabert2, save_dnabert2
    from neuro_caduceus.model.random_init import random_model
    from neuro_caduceus.synthetic import make_cohort

    d = tmp_path_factory.mktemp("encoders")
    make_cohort(d, n_samples=10, n_genes=2, seed=3)
    save_dnabert2(random_dnabert2(tiny_dnabert2_config(), seed=0), d / "bert")
    random_model(preset_config("tiny-ps"), seed=0).save_pretrained(d / "cad")
    return d


def _reference_gene_vectors(d: Path, ckpt: Path) -> dict[str, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        enc = load_encoder(ckpt, device="cpu", window=WINDOW)
    fasta = pysam.FastaFile(str(d / "genome.fa"))
    wanted = set(yaml.safe_load((d / "geneset.yaml").read_text())["genes"])
    out = {}
    for g in read_genes(str(d / "genes.gtf.gz")).iter_rows(named=True):
        if g["gene_id"] in wanted or g["gene_name"] in wanted:
            seq = fasta.fetch(g["chrom"], g["start"], g["end"]).upper()
            out[g["gene_id"]] = enc.embed(reverse_complement(seq) if g["strand"] == "-" else seq)
    return out


@pytest.mark.filterwarnings("ignore:.*RANDOM weights")
def test_both_encoders_run_the_same_job_into_separate_stores(cohort: Path, ray_session) -> None:
    from neuro_caduceus.cohort.job import run_embed_cohort

    with pytest.raises(ValueError, match=r"model.window = 20000 bases is longer than dnabert2 allows"):
        run_embed_cohort(load_config(_config(cohort, cohort / "bert", "too_long", window=20_000)), quiet=True)
    assert not (cohort / "too_long").exists()

    results = {}
    for name in ("bert", "cad"):
        manifest = run_embed_cohort(load_config(_config(cohort, cohort / name, f"out_{name}")), quiet=True)
        shards = pq.read_table(cohort / f"out_{name}" / "shards")
        recipe = read_recipe(cohort / f"out_{name}" / "shards")
        results[name] = (manifest, shards, recipe)
        oracle = _reference_gene_vectors(cohort, cohort / name)
        for gene, emb in zip(shards["gene_id"].to_pylist(), shards["embedding"].to_pylist(), strict=True):
            np.testing.assert_allclose(emb, oracle[gene], rtol=0, atol=1e-5, err_msg=f"{name} {gene}")

    (bert_manifest, _, bert_recipe), (cad_manifest, _, cad_recipe) = results["bert"], results["cad"]
    enc = bert_recipe["encoder"]
    assert (enc["family"], enc["tokenizer"], enc["kmer_size"], enc["window"]) == \
        ("dnabert2", "dnabert2-bpe", "bpe", WINDOW)
    assert len(enc["tokenizer_sha256"]) == 64 and enc["strand"] == "averaged"
    assert cad_recipe["encoder"]["family"] == "caduceus" and cad_recipe["encoder"]["window"] == WINDOW
    assert bert_recipe["gene_list"] == cad_recipe["gene_list"]
    tokens = bert_manifest["model_tokens"]
    assert 0 < tokens["embedded"] < tokens["bases_embedded"]  # BPE: several bases per token
    assert cad_manifest["model_tokens"]["tokens_per_base"] == 1.0
    assert bert_manifest["window_store"]["url"] != cad_manifest["window_store"]["url"]

    # a store refuses the other model, before anything runs
    other = _config(cohort, cohort / "bert", "mixed")
    body = yaml.safe_load(other.read_text())
    body["output"]["window_store"] = cad_manifest["window_store"]["url"]
    other.write_text(yaml.safe_dump(body))
    with pytest.raises(FileExistsError, match="holds windows of model identity"):
        run_embed_cohort(load_config(other), quiet=True)
