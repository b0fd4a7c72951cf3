"""Cohort job pieces without Ray: config validation, exact window reassembly, carrier fan-out.

The oracles here are hand computations on small arrays (means of explicit window lists), independent of the
job's replacement arithmetic.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from neuro_caduceus.cohort.config import load_config
from neuro_caduceus.cohort.plan import GenePlan, GeneUnit
from neuro_caduceus.cohort.shards import deviations, haplotype_embeddings, subject_embeddings

BASE = {
    "inputs": {"vcf": "c.vcf.gz", "reference_fasta": "g.fa", "gtf": "g.gtf", "gene_set": "s.yaml"},
    "model": {"checkpoint": "ckpt", "window": 128},
    "output": {"dir": "out"},
}


def _write(tmp_path, body) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(body))
    return str(path)


def test_config_resolves_paths_and_hashes_only_result_settings(tmp_path):
    (tmp_path / "g.fa").write_text(">c\nA\n")
    cfg = load_config(_write(tmp_path, BASE))
    assert cfg.inputs.reference_fasta == str(tmp_path / "g.fa")  # exists beside the config
    body = {**BASE, "compute": {"actors_max": 4}}
    assert load_config(_write(tmp_path, body)).result_hash() == cfg.result_hash()
    body = {**BASE, "model": {"checkpoint": "ckpt", "window": 256}}
    assert load_config(_write(tmp_path, body)).result_hash() != cfg.result_hash()


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"modle": {}}, "modle"),
        ({"model": {"checkpoint": "c", "window": 128, "widow": 3}}, "model.widow"),
        ({"qc": {"min_gqq": 20}}, "qc.min_gqq"),
        ({"inputs": {**BASE["inputs"], "matrix_table": "x.mt"}}, "exactly one of"),
        ({"compute": {"actors_min": 3, "actors_max": 2}}, "actors_max"),
        ({"haplotype_strategy": "phased"}, "haplotype_strategy"),
        ({"qc": {"min_gq": 20}}, "min_gq.*matrix_table"),
    ],
)
def test_config_errors_name_the_key(tmp_path, patch, message):
    with pytest.raises(ValueError, match=message):
        load_config(_write(tmp_path, {**BASE, **patch}))


def _plan() -> GenePlan:
    """3 reference windows (slots 0-2); hap A replaces window 1 (slot 3, longer: an insertion); hap B
    replaces windows 0 and 2 (slots 4, 5)."""
    rng = np.random.default_rng(0)
    unit = GeneUnit("G1", "GENE1", None, [None, None, None])
    plan = GenePlan(unit, [], np.array([0, 1, 2]), ["A", "B"], [[(1, 3)], [(0, 4), (2, 5)]],
                    [[("s1", 1), ("s2", 2)], [("s2", 1), ("s3", 1)]])
    plan.sums = rng.normal(size=(6, 4))
    plan.lengths = np.array([10, 10, 7, 12, 10, 6])
    return plan


def test_haplotype_embedding_is_the_pooled_mean_of_its_windows():
    plan = _plan()
    ref, haps = haplotype_embeddings(plan)
    s, n = plan.sums, plan.lengths
    np.testing.assert_allclose(ref, s[[0, 1, 2]].sum(0) / n[[0, 1, 2]].sum())
    np.testing.assert_allclose(haps[0], s[[0, 3, 2]].sum(0) / n[[0, 3, 2]].sum())
    np.testing.assert_allclose(haps[1], s[[4, 1, 5]].sum(0) / n[[4, 1, 5]].sum())


def test_subjects_get_the_mean_of_their_two_haplotypes_and_the_reference_elsewhere():
    plan = _plan()
    ref, haps = haplotype_embeddings(plan)
    emb = subject_embeddings(plan, ["s0", "s1", "s2", "s3"], "diploid", ref, haps)
    expect = [ref, (haps[0] + ref) / 2, (haps[1] + haps[0]) / 2, (haps[1] + ref) / 2]
    np.testing.assert_allclose(emb, np.array(expect), rtol=1e-6)
    assert emb.dtype == np.float32
    # deviation from the reference: numpy's norm of the stored float32 values; exactly 0 for s0 (reference)
    dev = deviations(emb, ref)
    want = np.linalg.norm(emb.astype(np.float64) - ref.astype(np.float32).astype(np.float64), axis=1)
    assert dev.dtype == np.float32 and dev[0] == 0 and (dev[1:] > 0).all()
    np.testing.assert_allclose(dev, want, rtol=1e-6)


def test_cli_reports_a_bad_config_and_exits_2(tmp_path):
    from typer.testing import CliRunner

    from neuro_caduceus.cli import app

    res = CliRunner().invoke(app, ["embed-cohort", "--config", _write(tmp_path, {**BASE, "outptu": {}})])
    assert res.exit_code == 2
    assert "outptu" in res.output


def test_store_location_and_batch_bounds_do_not_change_results(tmp_path):
    cfg = load_config(_write(tmp_path, BASE))
    body = {**BASE, "compute": {"tokens_per_batch": 1024, "stall_warning_s": 5},
            "output": {"dir": "out", "window_store": "gs://bucket/store"}}
    other = load_config(_write(tmp_path, body))
    assert other.result_hash() == cfg.result_hash()
    assert other.window_store == "gs://bucket/store"
    assert cfg.window_store == f"{cfg.output.dir}/window_store"


def test_driver_reads_the_model_identity_of_a_cuda_only_config_on_cpu(tmp_path):
    """bfloat16 needs CUDA to run, not to name: the driver's recipe comes from a CPU fp32 copy."""
    from neuro_caduceus.cohort.embed import model_recipe
    from neuro_caduceus.cohort.store import store_identity
    from neuro_caduceus.model.config import preset_config
    from neuro_caduceus.model.random_init import random_model

    random_model(preset_config("tiny-ps"), seed=0).save_pretrained(tmp_path / "ckpt")
    body = {**BASE, "model": {"checkpoint": str(tmp_path / "ckpt"), "window": 128, "dtype": "bfloat16",
                              "device": "cuda"}}
    recipe = model_recipe(load_config(_write(tmp_path, body)))
    assert recipe["dtype"] == "bfloat16" and recipe["window"] == 128
    assert len(recipe["checkpoint_sha256"]) == 64
    identity = store_identity(recipe)
    assert set(identity) == {"checkpoint_sha256", "dtype", "window", "stride", "pooling", "model_code",
                             "family", "tokenizer", "tokenizer_sha256", "kmer_size"}
    assert identity["dtype"] == "bfloat16" and identity["family"] == "caduceus"


def test_job_folder_owns_every_file_the_job_writes(tmp_path):
    """--overwrite deletes the job's files (the RC-check record among them) and nothing else."""
    from neuro_caduceus.cohort.layout import JobFolder

    folder = JobFolder(str(tmp_path / "out"))
    folder.make()
    owned = folder.owned_files(["G1"])
    assert {f"{folder.root}/{n}" for n in ("_job.json", "_cohort.json", "_rc_check.json", "manifest.json",
                                            "reference.parquet",
                                            "shards/G1.parquet", "units/G1.json", "plans/G1.parquet",
                                            "plans/G1.counts.parquet")} == set(owned)
    for path in [*owned, folder.shard("G2"), f"{folder.shards_dir}/.G1.parquet.tmp-0a1b2c3d"]:
        folder.fs.pipe(path, b"x")
    (tmp_path / "out" / "notes.txt").write_text("mine")
    assert folder.committed() == {"G1", "G2"}
    folder.remove(["G1"])
    left = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*"))
    assert left == ["notes.txt", "shards", "shards/G2.parquet"]


def test_readers_refuse_a_newer_format_naming_file_and_versions(tmp_path, monkeypatch):
    """Plans, the window store, the manifest, shards and feature files written by a newer format (simulated by
    raising the writer's version) are refused by this version's reader, naming the file, its version and the
    supported one; files of the current format (and unstamped ones) are read."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from neuro_caduceus.cohort import manifest, plan, store
    from neuro_caduceus.cohort.layout import JobFolder
    from neuro_caduceus.io import FORMAT_KEY, STAGES_KEY
    from neuro_caduceus.stats.features_io import read_metadata
    from neuro_caduceus.stats.subject_matrix import check_recipes

    folder = JobFolder(str(tmp_path / "job"))
    folder.make()
    plan.write_plan(folder, "G1", _plan())
    assert plan.read_plan(folder, "G1").hap_keys == ["A", "B"]
    monkeypatch.setattr(plan, "PLAN_FORMAT", 2)
    plan.write_plan(folder, "G2", _plan())
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"plans/G2.parquet: format version 2, .* reads format 1"):
        plan.read_plan(folder, "G2")

    url = str(tmp_path / "store")
    store.WindowStore(url, {"checkpoint_sha256": "x"}).open()
    store.WindowStore(url, {"checkpoint_sha256": "x"}).open()  # its own format: accepted
    body = json.loads((tmp_path / "store" / "_identity.json").read_text())
    (tmp_path / "store" / "_identity.json").write_text(json.dumps({**body, "format_version": 3}))
    with pytest.raises(ValueError, match=r"store/_identity.json: format version 3, .* reads format 1"):
        store.WindowStore(url, {"checkpoint_sha256": "x"}).open()

    folder.fs.pipe(folder.manifest, json.dumps({"format_version": 1, "runs": [{"run_id": "a"}]}).encode())
    assert manifest.earlier_runs(folder) == [{"run_id": "a"}]
    folder.fs.pipe(folder.manifest, json.dumps({"format_version": "2b", "runs": []}).encode())
    with pytest.raises(ValueError, match=r"manifest.json: format version 2b, .* reads format 1"):
        manifest.earlier_runs(folder)

    table = pa.table({"subject_id": ["s1"], "features": pa.array([[1.0]], pa.list_(pa.float32(), 1))})
    for name, meta in (("shards", {FORMAT_KEY: b"2"}), ("matrix", {FORMAT_KEY: b"2", STAGES_KEY: b"[]"})):
        (tmp_path / name).mkdir()
        pq.write_table(table.replace_schema_metadata(meta), tmp_path / name / "part.parquet")
        with pytest.raises(ValueError, match=rf"{name}/part.parquet: format version 2, .* reads format 1"):
            read_metadata(str(tmp_path / name))
    with pytest.raises(ValueError, match=r"shards/part.parquet: format version 2"):
        check_recipes([str(tmp_path / "shards" / "part.parquet")])
