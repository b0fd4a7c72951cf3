"""The cluster guide's commands, verbatim, against a fresh token-authenticated local head (slow: real head,
real `ray job submit`). The guide (docs/cluster.md) is the single source: the test reads its local block.

The submitted config uses relative paths into an ignored folder (`demo_out/`, not uploaded by
--working-dir), so the job must take them, and the output folder, from the submitting folder rather than
Ray's temporary package folder.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from helpers import HEAD_START_COMMAND, HEAD_TOKEN_COMMAND

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "cluster.md"
PY = sys.executable
pytestmark = pytest.mark.slow  # a real head and three `ray job submit` runs


def guide_block(title: str) -> list[str]:
    """Command lines of the guide's ```bash block whose first line is the comment `# <title>`."""
    for block in re.findall(r"```bash\n(.*?)```", GUIDE.read_text(), flags=re.S):
        lines = block.strip().splitlines()
        if lines and lines[0].strip() == f"# {title}":
            return [ln for ln in lines[1:] if ln.strip() and not ln.lstrip().startswith("#")]
    raise AssertionError(f"{GUIDE}: no bash block starting with '# {title}'")


def _command(line: str) -> str:
    return line.split("  #", 1)[0].strip()


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """What a user has: the repository's package, scripts and .gitignore, data in the ignored demo_out/."""
    from neuro_caduceus.synthetic import make_cohort

    repo = tmp_path_factory.mktemp("checkout")
    for part in ("scripts", "neuro_caduceus"):
        shutil.copytree(ROOT / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    make_cohort(repo / "demo_out" / "cohort", n_samples=12, n_genes=2, seed=3)
    subprocess.run([PY, "-m", "neuro_caduceus.cli", "make-checkpoint", "--preset", "tiny-ps", "--seed", "0",
                    "--out", str(repo / "demo_out" / "checkpoint")], check=True, capture_output=True)
    body = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    body["inputs"].pop("matrix_table")
    body["inputs"]["vcf"] = "demo_out/cohort/cohort.vcf.gz"  # the pysam path: no JVM in this test
    body["qc"] = {}  # the VCF path applies no variant QC (the config refuses qc keys it would ignore)
    body["model"]["window"] = 512
    body["compute"]["cpus_per_task"] = 0.5
    (repo / "configs").mkdir()
    (repo / "configs" / "my_cohort.yaml").write_text(yaml.safe_dump(body))
    return repo


def test_guide_head_commands_are_the_fixtures():
    lines = [_command(ln) for ln in guide_block("Local head")]
    assert HEAD_TOKEN_COMMAND in lines and HEAD_START_COMMAND in lines
    assert "export RAY_AUTH_MODE=token" in lines and "source .venv/bin/activate" in lines


def test_submit_script_verbatim(ray_head, checkout):
    env = {k: v for k, v in ray_head.env.items() if k != "RAY_AUTH_MODE"}  # submit.sh finds the token
    env["RAY_ADDRESS"] = ray_head.dashboard
    submits = [_command(ln) for ln in guide_block("Local head") if ln.startswith("scripts/submit.sh")]
    assert [s.split()[-1] for s in submits] == ["--dry-run", "configs/my_cohort.yaml"]
    dry = subprocess.run(["bash", "-c", submits[0]], cwd=checkout, env=env, capture_output=True, text=True,
                         timeout=400)
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    assert "dry run: OK" in dry.stdout and "genes 2, subjects 12" in dry.stdout
    assert not (checkout / "demo_out" / "embeddings").exists()  # a dry run writes nothing
    run = subprocess.run(["bash", "-c", submits[1]], cwd=checkout, env=env, capture_output=True, text=True,
                         timeout=400)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "tokens embedded" in run.stdout
    out = checkout / "demo_out" / "embeddings"  # the submitting folder, not Ray's package folder
    table = pq.read_table(out / "shards")
    assert table.num_rows == 12 * 2 and len(list((out / "shards").glob("*.parquet"))) == 2
    assert json.loads((out / "manifest.json").read_text())["rows"] == 24
    assert sorted(set(table["subject_id"].to_pylist())) == [f"S{i:04d}" for i in range(1, 13)]
    assert not list(Path(ray_head.temp).rglob("_ray_pkg_*/demo_out/embeddings"))


def test_plain_submit_of_unuploaded_paths_is_refused(ray_head, checkout):
    """The old README command (no --client-dir): a clear error before any work, nothing written."""
    cmd = ["ray", "job", "submit", "--address", ray_head.dashboard, "--working-dir", ".", "--",
           "python", "-m", "neuro_caduceus", "embed-cohort", "--config", "configs/my_cohort.yaml"]
    res = subprocess.run(cmd, cwd=checkout, env=ray_head.env, capture_output=True, text=True, timeout=400)
    assert res.returncode != 0
    text = res.stdout + res.stderr
    assert "was not uploaded with --working-dir" in text and "use a URL" in text, text[-3000:]
    assert "Traceback" not in text


def test_client_without_token_is_refused(ray_head, tmp_path):
    env = {k: v for k, v in ray_head.env.items() if k != "RAY_AUTH_MODE"}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token
    res = subprocess.run(["ray", "job", "list", "--address", ray_head.dashboard], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "Authentication required" in res.stdout + res.stderr
