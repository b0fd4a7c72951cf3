"""The UK Biobank RAP route on a local Spark (slow: Hail, Spark and Ray on Spark in one more process).

Hail exports the haplotype Parquet with `export-variants` (the guide's command as written); then
ray_jobs/embed_on_spark.py, as docs/cluster.md shows it, starts Hail on a Spark session, Ray on Spark in the
same session (`ray.util.spark.setup_ray_cluster`: the head on the Spark driver, a worker node as a Spark
task) and runs the cohort job on the export. Oracle: the same config run on the test session's plain local
Ray gives identical shards.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import write_job_config
from typer.testing import CliRunner

from neuro_caduceus.cli import app

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "cluster.md"


def guide_command(start: str) -> list[str]:
    """The guide's command line that starts with `start` (backslash continuations joined)."""
    text = GUIDE.read_text().replace("\\\n", " ")
    line = next(ln for ln in text.splitlines() if ln.strip().startswith(start))
    return shlex.split(line.split("  #", 1)[0])


@pytest.fixture(scope="module")
def export(tmp_path_factory, hail_session):
    from neuro_caduceus.synthetic import make_cohort
    from neuro_caduceus.variants.importer import import_vcf

    d = tmp_path_factory.mktemp("rap")
    make_cohort(d, n_samples=12, n_genes=2, seed=9)
    import_vcf([str(d / "cohort.vcf.gz")], str(d / "cohort.mt"), str(d / "genome.json"), min_partitions=2)
    subprocess.run([sys.executable, "-m", "neuro_caduceus.cli", "make-checkpoint", "--preset", "tiny-ps",
                    "--seed", "0", "--out", str(d / "ckpt")], check=True, capture_output=True)
    values = {"<cohort.mt>": str(d / "cohort.mt"), "<genes.gtf.gz>": str(d / "genes.gtf.gz"),
              "<geneset.yaml>": str(d / "geneset.yaml"), "<export_dir>": str(d / "export"),
              "qc.yaml": str(d / "qc.yaml")}
    (d / "qc.yaml").write_text("{}\n")
    argv = [values.get(a, a) for a in guide_command("python -m neuro_caduceus export-variants")[3:]]
    res = CliRunner().invoke(app, argv)  # in this process: Hail on the session's Spark
    assert res.exit_code == 0, res.output
    return d


def _config(d: Path, out: str) -> Path:
    inputs = {"haplotypes_parquet": str(d / "export"), "reference_fasta": str(d / "genome.fa"),
              "gtf": str(d / "genes.gtf.gz"), "gene_set": str(d / "geneset.yaml")}
    orient = {"orient": "reference"}  # the export's orientation
    return write_job_config(d, out, inputs, actors=1, regions=orient)


def test_job_on_ray_on_spark_matches_plain_ray(export, ray_session):
    from neuro_caduceus.cohort.job import run_embed_cohort

    cmd = guide_command("python ray_jobs/embed_on_spark.py")
    assert cmd[-1] == "configs/my_rap.yaml"
    cmd = [sys.executable, str(ROOT / "ray_jobs" / "embed_on_spark.py"), *cmd[2:-1],
           str(_config(export, "on_spark")), "--local-cores", "2"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert re.search(r"tokens embedded", res.stdout)
    run_embed_cohort(_config(export, "plain"), quiet=True)
    a = pq.read_table(export / "on_spark" / "shards").sort_by([("gene_id", "ascending"),
                                                                ("subject_id", "ascending")])
    b = pq.read_table(export / "plain" / "shards").sort_by([("gene_id", "ascending"),
                                                             ("subject_id", "ascending")])
    assert a.num_rows == 12 * 2
    assert a.select(["subject_id", "gene_id"]).equals(b.select(["subject_id", "gene_id"]))
    np.testing.assert_array_equal(np.stack(a["embedding"].to_numpy(zero_copy_only=False)),
                                  np.stack(b["embedding"].to_numpy(zero_copy_only=False)))
