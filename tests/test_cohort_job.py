"""The cohort job end to end: `ray job submit` on a real local head, and crash/resume equivalence.

Oracle: each subject's haplotypes are read from the VCF with pysam (alleles in written order, missing calls
keep the reference), each window of the gene is built with genome.build_sequence and pooled with the
Embedder one haplotype at a time: no dedup, no window reuse, no carrier map, no Hail, no Ray.
The head cluster is the session's `ray_head` (tests/conftest.py): its own ports, temp dir and token auth.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pysam
import pytest
import yaml
from helpers import processes

from neuro_caduceus.genome.variant_schema import Variant

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
RAY = str(Path(PY).parent / "ray")
WINDOW = 512


def _config(data: SimpleNamespace, out: Path, compute: dict | None = None, output: dict | None = None,
            **inputs) -> Path:
    body = {
        "inputs": {"reference_fasta": str(data.dir / "genome.fa"), "gtf": str(data.dir / "genes.gtf.gz"),
                   "gene_set": str(data.dir / "geneset.yaml"), "reference_version": "synthetic", **inputs},
        "regions": {"mode": "gene_body", "flank": 0, "orient": "transcript"},
        "haplotype_strategy": "diploid",
        "model": {"checkpoint": str(data.ckpt), "device": "cpu", "window": WINDOW},
        # 4 windows per batch: a gene spans several batches; actor + planning task fit in 2 CPUs
        "compute": {"actors_min": 1, "actors_max": 1, "window_batch_size": 8, "cpus_per_task": 0.5,
                    "tokens_per_batch": 4 * WINDOW, **(compute or {})},
        "output": {"dir": str(out), **(output or {})},
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
def other_ckpt(data) -> Path:
    """A checkpoint of another model (another seed)."""
    other = data.dir / "other_ckpt"
    subprocess.run([PY, "-m", "neuro_caduceus.cli", "make-checkpoint", "--preset", "tiny-ps", "--seed", "1",
                    "--out", str(other)], check=True, capture_output=True)
    return other


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
    job = [RAY, "job", "submit", "--address", head.dashboard, "--working-dir", str(ROOT),
           "--", PY, "-m", "neuro_caduceus", "embed-cohort", "--config", str(cfg)]
    res = _submit(job, head.env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "tokens embedded" in res.stdout  # the one-screen summary reached the job log
    return out


def _check_reference_and_deviation(out: Path, table, data: SimpleNamespace) -> None:
    """reference.parquet = each gene's reference windows pooled directly; deviation = numpy's norm of the
    stored embedding minus the stored reference."""
    import torch

    from neuro_caduceus.cohort.config import load_config
    from neuro_caduceus.cohort.job import build_units
    from neuro_caduceus.genome.fasta import Reference
    from neuro_caduceus.genome.haplotypes import build_sequence
    from neuro_caduceus.model import from_pretrained
    from neuro_caduceus.model.embedder import Embedder

    torch.set_num_threads(1)
    refs = pq.read_table(out / "reference.parquet")
    ref_of = dict(zip(refs["gene_id"].to_pylist(), np.stack(refs["embedding"].to_numpy(zero_copy_only=False)),
                      strict=True))
    genome = Reference(str(data.dir / "genome.fa"))
    emb = Embedder(from_pretrained(str(data.ckpt)), device="cpu", batch_size=8, window=WINDOW)
    for unit in build_units(load_config(_config(data, data.dir / "oracle_ref_cfg", vcf=data.vcf))):
        sums, counts = emb.pool_windows([build_sequence(genome, w, []).sequence for w in unit.windows])
        np.testing.assert_allclose(ref_of[unit.gene_id], sums.sum(0) / counts.sum(), atol=1e-5)
    e = np.stack(table["embedding"].to_numpy(zero_copy_only=False)).astype(np.float64)
    r = np.stack([ref_of[g] for g in table["gene_id"].to_pylist()]).astype(np.float64)
    deviation = table["deviation"].to_numpy()
    np.testing.assert_allclose(deviation, np.linalg.norm(e - r, axis=1), rtol=1e-6, atol=1e-9)
    assert (deviation > 0).any()


def test_job_submit_matches_direct_embedding(uninterrupted, data):
    table = _read_shards(uninterrupted)
    _check_against_oracle(table, data, expected_recipe_genes=3)
    _check_reference_and_deviation(uninterrupted, table, data)
    manifest = json.loads((uninterrupted / "manifest.json").read_text())
    assert manifest["rows"] == table.num_rows == 30 * 3
    assert manifest["tokens"]["embedded"] < manifest["tokens"]["naive"]
    assert manifest["windows"]["embedded"] + manifest["windows"]["reused"] == manifest["windows"]["naive"]


def test_changed_config_refuses_to_mix(uninterrupted, data):
    from neuro_caduceus.cohort.job import run_embed_cohort

    with pytest.raises(FileExistsError, match="another config"):
        run_embed_cohort(load_config_flank(data, uninterrupted, flank=10), quiet=True)


def _assert_same(a: Path, b: Path) -> None:
    ta, tb = _read_shards(a), _read_shards(b)
    assert ta.num_rows == tb.num_rows
    assert ta.select(["subject_id", "gene_id", "gene_name"]).equals(tb.select(["subject_id", "gene_id",
                                                                                "gene_name"]))
    np.testing.assert_array_equal(np.stack(ta["embedding"].to_numpy(zero_copy_only=False)),
                                  np.stack(tb["embedding"].to_numpy(zero_copy_only=False)))


def _store_keys(store: Path) -> set[str]:
    """Content keys of the committed store batches (read independently of the job's code)."""
    files = [f for f in (store / "batches").glob("*.parquet") if not f.name.startswith(".")]
    return {k for f in files for k in pq.read_table(f, columns=["key"])["key"].to_pylist()}


def _distinct_windows(out: Path) -> int:
    return json.loads((out / "manifest.json").read_text())["windows"]["embedded"]


def test_equal_to_the_gene_unit_job(uninterrupted):
    """Embeddings equal those of the gene-unit job (whole genes per actor call) kept in tests/data (1e-6)."""
    fixtures = ROOT / "tests" / "data" / "cohort_old_path"
    old = np.load(fixtures / "old_diploid.npz")
    table = _read_shards(uninterrupted)
    assert table["subject_id"].to_pylist() == list(old["subject"])
    assert table["gene_id"].to_pylist() == list(old["gene"])
    got = np.stack(table["embedding"].to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(got, old["emb"], rtol=0, atol=1e-6)
    counts = json.loads((fixtures / "old_diploid_manifest.json").read_text())
    manifest = json.loads((uninterrupted / "manifest.json").read_text())
    assert manifest["windows"] == counts["windows"] and manifest["tokens"] == counts["tokens"]


def test_killed_driver_resumes_to_identical_output(uninterrupted, data, head):
    out = data.dir / "run_driver_kill"
    cfg = _config(data, out, vcf=data.vcf)
    env = {**head.env, "RAY_ADDRESS": head.gcs}
    cmd = [PY, "-m", "neuro_caduceus", "embed-cohort", "--config", str(cfg)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if _store_keys(out / "window_store"):  # a batch is committed: the driver dies mid-embedding
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(2)  # actors already running may still commit the batch in hand
    stored = _store_keys(out / "window_store")
    total = _distinct_windows(uninterrupted)
    assert 1 <= len(stored) < total, f"{len(stored)} of {total} windows stored when the driver was killed"
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    run = json.loads((out / "manifest.json").read_text())["runs"][-1]
    assert run["store_hits"] >= len(stored) - 4  # at most a batch (4 windows) committed after the count
    assert run["windows_new"] + run["store_hits"] == total
    assert run["windows_embedded"] == run["windows_new"]
    _assert_same(uninterrupted, out)


def _embedding_actor_pids() -> list[int]:
    """Processes of this test session's Ray (descendants of this process) titled as the embedding actor."""
    procs = processes()
    mine, grew = {os.getpid()}, True
    while grew:
        more = {pid for pid, (ppid, _) in procs.items() if ppid in mine} - mine
        mine |= more
        grew = bool(more)
    return [pid for pid in mine if "EmbedWindows" in procs[pid][1] and pid != os.getpid()]


def test_killed_actor_is_replaced_and_only_uncommitted_batches_redone(uninterrupted, data, ray_session):
    """SIGKILL the embedding actor's process mid-gene: Ray Data replaces it; committed batches are kept."""
    from neuro_caduceus.cohort.job import run_embed_cohort

    out = data.dir / "run_actor_kill"
    cfg = _config(data, out, vcf=data.vcf)
    result: dict = {}

    def job() -> None:
        try:
            result["manifest"] = run_embed_cohort(cfg, quiet=True)
        except Exception as err:  # Ray may give up on the batch of the dead actor; the re-run finishes it
            result["error"] = err

    thread = threading.Thread(target=job)
    thread.start()
    killed = None
    deadline = time.time() + 240
    while killed is None and thread.is_alive() and time.time() < deadline:
        pids = _embedding_actor_pids()
        if pids and _store_keys(out / "window_store"):
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    thread.join(300)
    assert killed is not None, "the job ended before an actor could be killed"
    total = _distinct_windows(uninterrupted)
    if "error" in result:
        run_embed_cohort(cfg, quiet=True)
    runs = json.loads((out / "manifest.json").read_text())["runs"]
    actors = {a for r in runs for a in r["per_actor"]}
    assert not _alive({killed}) and any(f":{killed}:" not in a for a in actors), actors  # replaced
    embedded = sum(r["windows_embedded"] for r in runs)
    assert total <= embedded <= total + 2 * 4, (embedded, total)  # redone: at most the 2 batches in flight
    _assert_same(uninterrupted, out)


def test_shared_store_two_actors_and_one_more_gene(data, ray_session, tmp_path):
    """One gene on two actors (both embed windows of it); then a config with one more gene and the same
    store (a file:// URL) embeds only the new gene's windows; the first gene's shard is identical."""
    from neuro_caduceus.cohort.job import run_embed_cohort

    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    one.write_text(yaml.safe_dump({"name": "one", "genes": ["SYN1"]}))
    two.write_text(yaml.safe_dump({"name": "two", "genes": ["SYN1", "SYN2"]}))
    store = {"window_store": f"file://{tmp_path / 'shared_store'}"}
    pool = {"actors_min": 2, "actors_max": 2, "cpus_per_actor": 0.5, "tokens_per_batch": 2 * WINDOW}
    first = run_embed_cohort(_config(data, tmp_path / "out_one", compute=pool, output=store, vcf=data.vcf,
                                     gene_set=str(one)), quiet=True)
    per_actor = first["runs"][-1]["per_actor"]
    assert len(per_actor) == 2 and all(a["windows"] > 0 for a in per_actor.values()), per_actor
    assert sum(a["windows"] for a in per_actor.values()) == first["windows"]["embedded"]
    cfg_two = _config(data, tmp_path / "out_two", output=store, vcf=data.vcf, gene_set=str(two))
    second = run_embed_cohort(cfg_two, quiet=True)
    run = second["runs"][-1]
    syn2 = next(g for g in second["per_gene"] if g["gene_name"] == "SYN2")
    assert run["store_hits"] == first["windows"]["embedded"]
    assert run["windows_embedded"] == run["windows_new"] == syn2["windows_embedded"]
    a = pq.read_table(tmp_path / "out_one" / "shards").sort_by("subject_id")
    b = pq.read_table(tmp_path / "out_two" / "shards").filter(pc.equal(pc.field("gene_name"), "SYN1"))
    assert a["embedding"].to_pylist() == b.sort_by("subject_id")["embedding"].to_pylist()


def test_damaged_shard_and_store_batch_are_redone(uninterrupted, data, ray_session, tmp_path):
    """A truncated committed shard and a truncated store batch are detected on resume, counted, redone."""
    from neuro_caduceus.cohort.job import run_embed_cohort

    out = tmp_path / "damaged"
    shutil.copytree(uninterrupted, out)
    shard = sorted((out / "shards").glob("*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[:-100])
    batch = sorted((out / "window_store" / "batches").glob("*.parquet"))[0]
    lost = len(pq.read_table(batch))
    batch.write_bytes(batch.read_bytes()[: len(batch.read_bytes()) // 2])
    (out / "window_store" / "batches" / ".half-written.parquet.tmp").write_bytes(b"PAR1 half")
    run = run_embed_cohort(_config(data, out, vcf=data.vcf), quiet=True)["runs"][-1]
    assert run["damaged_redone"]["shards"] == 1 and run["damaged_redone"]["store_batches"] == 1
    assert run["damaged_redone"]["partial_store_batches_removed"] == 1
    assert run["genes_written"] == 1 and run["windows_embedded"] <= lost
    _assert_same(uninterrupted, out)


def test_overwrite_deletes_only_the_jobs_own_files(uninterrupted, data, other_ckpt, ray_session, tmp_path):
    """--overwrite with another checkpoint deletes the earlier job's files, its RC-check record included (a
    failing record planted there would stop the job if it were reused), and nothing it did not write."""
    from neuro_caduceus.cohort.config import load_config
    from neuro_caduceus.cohort.job import run_embed_cohort

    out = tmp_path / "mixed"
    shutil.copytree(uninterrupted, out)
    (out / "notes.txt").write_text("mine")
    (out / "shards" / "README").write_text("mine too")
    record = json.loads((out / "_rc_check.json").read_text())
    (out / "_rc_check.json").write_text(json.dumps({**record, "passed": False, "max_abs_deviation": 1.0}))
    cfg = load_config(_config(data, out, vcf=data.vcf)).model_copy(deep=True)
    cfg.model.checkpoint = str(other_ckpt)
    with pytest.raises(FileExistsError, match="model identity"):
        run_embed_cohort(cfg, quiet=True)
    manifest = run_embed_cohort(cfg, overwrite=True, quiet=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "shards" / "README").exists()
    job = json.loads((out / "_job.json").read_text())
    assert job["checkpoint_sha256"] == manifest["checkpoint_sha256"] != record.get("checkpoint_sha256")
    rc = json.loads((out / "_rc_check.json").read_text())
    assert rc["passed"] and rc == manifest["rc_check"] and rc["max_abs_deviation"] != 1.0


def load_config_flank(data: SimpleNamespace, out: Path, flank: int):
    from neuro_caduceus.cohort.config import load_config

    cfg = load_config(_config(data, out, vcf=data.vcf)).model_copy(deep=True)
    cfg.regions.flank = flank
    return cfg


def test_failed_validation_writes_nothing(data, ray_session, tmp_path):
    from neuro_caduceus.cohort.job import run_embed_cohort

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "bad", "genes": ["NO_SUCH_GENE"]}))
    out = tmp_path / "never"
    with pytest.raises((ValueError, KeyError)):
        run_embed_cohort(_config(data, out, vcf=data.vcf, gene_set=str(bad)), quiet=True)
    assert not out.exists()


def test_store_of_another_model_is_refused(uninterrupted, data, other_ckpt, ray_session, tmp_path):
    from neuro_caduceus.cohort.job import run_embed_cohort

    other = other_ckpt
    cfg = _config(data, tmp_path / "other_out", output={"window_store": str(uninterrupted / "window_store")},
                  vcf=data.vcf)
    body = yaml.safe_load(cfg.read_text())
    body["model"]["checkpoint"] = str(other)
    cfg.write_text(yaml.safe_dump(body))
    with pytest.raises(FileExistsError, match="model identity") as err:
        run_embed_cohort(cfg, quiet=True)
    assert str(err.value).count("checkpoint_sha256") == 2  # both identities named
    assert not (tmp_path / "other_out").exists()


def _descendants(root: int) -> set[int]:
    procs = processes()
    mine, grew = {root}, True
    while grew:
        more = {pid for pid, (ppid, _) in procs.items() if ppid in mine} - mine
        mine |= more
        grew = bool(more)
    return mine - {root}


def _alive(pids: set[int]) -> set[int]:
    """The pids still running (zombies count as gone)."""
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def test_ctrl_c_says_how_to_resume_and_leaves_no_ray_processes(uninterrupted, data, tmp_path):
    """The CLI starts its own local Ray; Ctrl-C mid-embedding prints what was committed and how to resume,
    and every process the job started is gone afterwards; so after the resumed run."""
    out = tmp_path / "interrupted"
    cfg = _config(data, out, vcf=data.vcf)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [PY, "-m", "neuro_caduceus.cli", "embed-cohort", "--config", str(cfg)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started: set[int] = set()
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not _store_keys(out / "window_store"):
        started |= _descendants(proc.pid)
        time.sleep(0.1)
    started |= _descendants(proc.pid)
    assert proc.poll() is None, "the job ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted:" in err and "run the same command again to resume" in err
    assert len(started) >= 3  # the local Ray's processes (GCS, raylet, workers ...) were seen
    deadline = time.time() + 60
    while _alive(started) and time.time() < deadline:
        time.sleep(0.5)
    assert not _alive(started), [processes().get(p) for p in _alive(started)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = set()
    while proc.poll() is None:
        started |= _descendants(proc.pid)
        time.sleep(0.2)
    assert proc.returncode == 0, proc.stderr.read()[-2000:]
    deadline = time.time() + 60
    while _alive(started) and time.time() < deadline:
        time.sleep(0.5)
    assert not _alive(started), [processes().get(p) for p in _alive(started)]
    _assert_same(uninterrupted, out)
