"""The cohort job end to end: `ray job submit` on a real local head, and crash/resume equivalence.

Oracle: each subject's haplotypes are read from the VCF with pysam (alleles in written order, missing calls
keep the reference), each window of the gene is built with genome.build_sequence and pooled with the
Embedder one haplotype at a time: no dedup, no window reuse, no carrier map, no Hail, no Ray.
The head cluster gets its own ports and temp dir and is torn down by the ids of its own processes (not
`ray stop`, which would stop every Ray on the machine, the in-process `ray_session` included).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pysam
import pytest
import yaml

pytest.importorskip("neuro_caduceus.genome.haplotypes")

from neuro_caduceus.genome.variant_schema import Variant  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
RAY = str(Path(PY).parent / "ray")
WINDOW = 512


def _config(data: SimpleNamespace, out: Path, **inputs) -> Path:
    body = {
        "inputs": {"reference_fasta": str(data.dir / "genome.fa"), "gtf": str(data.dir / "genes.gtf.gz"),
                   "gene_set": str(data.dir / "geneset.yaml"), "reference_version": "synthetic", **inputs},
        "regions": {"mode": "gene_body", "flank": 0, "orient": "transcript"},
        "haplotype_strategy": "diploid",
        "model": {"checkpoint": str(data.ckpt), "device": "cpu", "window": WINDOW},
        "compute": {"actors_min": 1, "actors_max": 1, "window_batch_size": 8, "cpus_per_task": 0.5},
        "output": {"dir": str(out)},
    }
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> SimpleNamespace:
    from neuro_caduceus.synthetic import make_cohort

    d = tmp_path_factory.mktemp("cohort_job")
    make_cohort(d, n_samples=30, n_genes=3, seed=7)
    ckpt = d / "ckpt"
    subprocess.run([PY, "-m", "neuro_caduceus.cli", "make-checkpoint", "--preset", "tiny-ps", "--seed", "0",
                    "--out", str(ckpt)], check=True, capture_output=True)
    return SimpleNamespace(dir=d, ckpt=ckpt, vcf=str(d / "cohort.vcf.gz"))


@pytest.fixture(scope="module")
def head(ray_head):
    """The session's `ray start --head` cluster (tests/conftest.py)."""
    return ray_head


def _read_shards(out: Path):
    table = pq.read_table(out / "shards").sort_by([("gene_id", "ascending"), ("subject_id", "ascending")])
    return table


def _subject_haplotypes(vcf: str, region) -> dict[str, tuple[list[Variant], list[Variant]]]:
    """Per subject, the variants of hap1 and hap2 in the region (alleles in written order)."""
    haps: dict[str, tuple[list, list]] = {}
    with pysam.VariantFile(vcf) as f:
        for s in f.header.samples:
            haps[s] = ([], [])
        lo, hi = min(a for a, _ in region.segments), max(b for _, b in region.segments)
        for rec in f.fetch(region.chrom, lo, hi):
            for s, call in rec.samples.items():
                for k, allele in enumerate((call["GT"] or ())[:2]):
                    if allele is not None and allele > 0:
                        haps[s][k].append(Variant(rec.chrom, rec.pos, rec.ref, rec.alts[allele - 1]))
    return haps


def _direct_embeddings(data: SimpleNamespace) -> dict[tuple[str, str], np.ndarray]:
    """The oracle: every subject haplotype's windows built and pooled on their own."""
    import torch

    from neuro_caduceus.cohort.config import load_config
    from neuro_caduceus.cohort.job import build_units
    from neuro_caduceus.genome.fasta import Reference
    from neuro_caduceus.genome.haplotypes import build_sequence, variants_in
    from neuro_caduceus.model import from_pretrained
    from neuro_caduceus.model.embedder import Embedder

    torch.set_num_threads(1)
    cfg = load_config(_config(data, data.dir / "oracle_cfg", vcf=data.vcf))
    ref = Reference(str(data.dir / "genome.fa"))
    emb = Embedder(from_pretrained(str(data.ckpt)), device="cpu", batch_size=8, window=WINDOW)
    memo: dict[str, np.ndarray] = {}  # same full haplotype sequence -> same embedding (a pure function)
    out = {}
    for unit in build_units(cfg):
        whole_ref = build_sequence(ref, unit.region, []).sequence
        for subject, pair in _subject_haplotypes(data.vcf, unit.region).items():
            vecs = []
            for variants in pair:
                seqs = [build_sequence(ref, w, variants_in(w, variants)).sequence for w in unit.windows]
                key = "|".join(seqs)
                if key not in memo:
                    sums, counts = emb.pool_windows(seqs)
                    memo[key] = sums.sum(0) / counts.sum()
                vecs.append(memo[key])
            out[(subject, unit.gene_id)] = (vecs[0] + vecs[1]) / 2
        # the reference haplotype embedded whole (Embedder tiles it with the same window) agrees too
        sums, counts = emb.pool_windows([build_sequence(ref, w, []).sequence for w in unit.windows])
        np.testing.assert_allclose(emb.embed(whole_ref), sums.sum(0) / counts.sum(), atol=1e-5)
    return out


def _check_against_oracle(table, data: SimpleNamespace, expected_recipe_genes: int) -> None:
    oracle = _direct_embeddings(data)
    got = {(s, g): np.asarray(e) for s, g, e in zip(
        table["subject_id"].to_pylist(), table["gene_id"].to_pylist(), table["embedding"].to_pylist(),
        strict=True)}
    assert len(got) == table.num_rows  # one row per (subject, gene), no duplicates
    assert set(got) == set(oracle)
    worst = max(float(np.abs(got[k] - oracle[k]).max()) for k in oracle)
    assert worst < 1e-5, worst
    recipe = json.loads(table.schema.metadata[b"neuro_caduceus.recipe"])
    assert len(recipe["gene_list"]) == expected_recipe_genes
    assert recipe["window"] == WINDOW and recipe["haplotype_strategy"] == "diploid"
    assert len(recipe["checkpoint_sha256"]) == 64 and recipe["recipe_id"]


def _submit(job: list[str], env: dict) -> subprocess.CompletedProcess:
    """`ray job submit`, retried while the new head's job agent is still starting (a loaded machine)."""
    deadline = time.monotonic() + 120
    while True:
        res = subprocess.run(job, env=env, capture_output=True, text=True, timeout=300)
        busy = "No available agent" in res.stdout + res.stderr
        if res.returncode == 0 or not busy or time.monotonic() > deadline:
            return res
        time.sleep(3)


@pytest.fixture(scope="module")
def uninterrupted(data, head):
    """A clean run of the VCF-path config, submitted with `ray job submit` to the head cluster."""
    out = data.dir / "run_clean"
    cfg = _config(data, out, vcf=data.vcf)
    job = [RAY, "job", "submit", "--address", head.dashboard, "--working-dir", str(ROOT / "ray_jobs"),
           "--", PY, "embed_cohort.py", "--config", str(cfg)]
    res = _submit(job, head.env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "tokens embedded" in res.stdout  # the one-screen summary reached the job log
    return out


def test_job_submit_matches_direct_embedding(uninterrupted, data):
    table = _read_shards(uninterrupted)
    _check_against_oracle(table, data, expected_recipe_genes=3)
    manifest = json.loads((uninterrupted / "manifest.json").read_text())
    assert manifest["rows"] == table.num_rows == 30 * 3
    assert manifest["tokens"]["embedded"] < manifest["tokens"]["naive"]
    assert manifest["windows"]["embedded"] + manifest["windows"]["reused"] == manifest["windows"]["naive"]


def test_changed_config_refuses_to_mix(uninterrupted, data):
    from neuro_caduceus.cohort.config import load_config
    from neuro_caduceus.cohort.job import run_embed_cohort

    cfg = load_config(_config(data, uninterrupted, vcf=data.vcf)).model_copy(deep=True)
    cfg.regions.flank = 10
    with pytest.raises(FileExistsError, match="another config"):
        run_embed_cohort(cfg, quiet=True)


def _assert_same(a: Path, b: Path) -> None:
    ta, tb = _read_shards(a), _read_shards(b)
    assert ta.num_rows == tb.num_rows
    assert ta.select(["subject_id", "gene_id", "gene_name"]).equals(tb.select(["subject_id", "gene_id",
                                                                                "gene_name"]))
    np.testing.assert_array_equal(np.stack(ta["embedding"].to_numpy(zero_copy_only=False)),
                                  np.stack(tb["embedding"].to_numpy(zero_copy_only=False)))


def test_killed_driver_resumes_to_identical_output(uninterrupted, data, head):
    out = data.dir / "run_driver_kill"
    cfg = _config(data, out, vcf=data.vcf)
    env = {**head.env, "RAY_ADDRESS": head.gcs}
    cmd = [PY, str(ROOT / "ray_jobs" / "embed_cohort.py"), "--config", str(cfg)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if list((out / "shards").glob("*.parquet")):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((out / "shards").glob("*.parquet")))
    assert 1 <= done < 3, f"{done} units committed when the driver was killed (want some, not all)"
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["units"]["done_before"] == done and manifest["units"]["done_now"] == 3 - done
    _assert_same(uninterrupted, out)


def test_killed_actor_is_replaced_and_output_identical(
    uninterrupted, data, ray_session, monkeypatch, tmp_path
):
    from neuro_caduceus.cohort.job import run_embed_cohort

    marker = tmp_path / "actor_killed"
    monkeypatch.setenv("NEURO_CADUCEUS_DEBUG_KILL_ACTOR_AFTER", "1")
    monkeypatch.setenv("NEURO_CADUCEUS_DEBUG_KILL_MARKER", str(marker))
    out = data.dir / "run_actor_kill"
    cfg = _config(data, out, vcf=data.vcf)
    try:
        run_embed_cohort(cfg, quiet=True)
    except Exception:  # Ray may give up on the dead actor's task; the re-run then finishes the rest
        run_embed_cohort(cfg, quiet=True)
    assert marker.exists()  # the actor really died mid-run
    _assert_same(uninterrupted, out)
