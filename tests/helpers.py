"""Helpers shared by several test modules (data writers and independent oracles); no tests here."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from neuro_caduceus.io import RECIPE_KEY

DOCS = Path(__file__).parents[1] / "docs"
GENES = ["ENSG3", "ENSG1", "ENSG2"]  # write_shards: gene-set order, deliberately not sorted
NAMES = {"ENSG1": "APOE", "ENSG2": "TREM2", "ENSG3": "SORL1"}
DIM = 4


def write_matrix(path, ids, X, recipe: dict | None, stages: list | None = None) -> None:
    feats = pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1).astype(np.float32)), X.shape[1])
    table = pa.table({"subject_id": ids, "features": feats})
    meta = {}
    if recipe is not None:
        meta["neuro_caduceus.recipe"] = json.dumps(recipe)
    if stages is not None:
        meta["neuro_caduceus.stages"] = json.dumps(stages)
    pq.write_table(table.replace_schema_metadata(meta or None), path)


def spectrum_data(n: int, d: int, seed: int = 0, offset: float = 50.0) -> np.ndarray:
    """Rows with a distinct, decaying spectrum (well separated eigenvalues) and a large mean."""
    rng = np.random.default_rng(seed)
    rot = np.linalg.qr(rng.normal(size=(d, d)))[0]
    return (rng.normal(size=(n, d)) * np.geomspace(10, 0.2, d)) @ rot + offset


def covariates(n: int, seed: int = 0, batches=("b0", "b1", "b2")) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    data = {"subject_id": [f"S{i:05d}" for i in range(n)], "age": rng.integers(40, 70, n).astype(float),
            "sex": rng.integers(0, 2, n)}
    data |= {f"PC{i}": rng.normal(scale=0.1, size=n) for i in range(1, 11)}
    data["batch"] = [batches[i % len(batches)] for i in rng.permutation(n)]
    return pl.DataFrame(data)


def oracle_design(cov: pl.DataFrame, ref: str = "b0") -> np.ndarray:
    """Intercept, age, sex, PC1..PC10, one-hot batch without the reference level: built independently."""
    cols = [np.ones(cov.height), cov["age"].to_numpy(), cov["sex"].to_numpy().astype(float)]
    cols += [cov[f"PC{i}"].to_numpy() for i in range(1, 11)]
    cols += [(cov["batch"] == lv).to_numpy().astype(float) for lv in sorted(set(cov["batch"])) if lv != ref]
    return np.column_stack(cols)


def bash_commands(page: str) -> list[list[str]]:
    """`neuro-caduceus` lines of the page's ```bash blocks, continuations joined, program word dropped."""
    text = (DOCS / page).read_text()
    out = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["neuro-caduceus"]:
                out.append(words[1:])
    return out


def write_shards(folder, subjects: list[str], skip: dict[str, set[str]] | None = None,
                 dup: tuple[str, str] | None = None,
                 n_missing: dict[tuple[str, str], int] | None = None) -> dict[tuple[str, str], np.ndarray]:
    """One shard per gene in the embedding job's layout; returns the (subject, gene) -> vector oracle.

    `n_missing`: add the job's n_missing column (these subject-genes' counts, 0 elsewhere)."""
    recipe = {"recipe_id": "genetics_gene_fm_pca512_v1", "gene_list": GENES}
    meta = {RECIPE_KEY: json.dumps(recipe, sort_keys=True).encode()}
    rng = np.random.default_rng(0)
    truth = {}
    (folder / "shards").mkdir(parents=True)
    for gene in sorted(GENES):
        subs = [s for s in subjects if s not in (skip or {}).get(gene, set())]
        if dup and dup[1] == gene:
            subs.append(dup[0])
        emb = rng.normal(size=(len(subs), DIM)).astype(np.float32)
        truth |= {(s, gene): e for s, e in zip(subs, emb, strict=True)}
        n = len(subs)
        table = pa.table({"subject_id": subs, "gene_id": [gene] * n, "gene_name": [NAMES[gene]] * n,
                          "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), DIM)})
        if n_missing is not None:
            table = table.append_column("n_missing", pa.array([n_missing.get((s, gene), 0) for s in subs],
                                                              pa.int32()))
        pq.write_table(table.replace_schema_metadata(meta), folder / "shards" / f"{gene}.parquet")
    return truth


def write_job_config(d: Path, out: str, inputs: dict, actors: int, **sections: dict) -> Path:
    """A small CPU cohort-job config in `d` (checkpoint d/ckpt, window 512, `actors` one-CPU actors, output
    d/out); `sections` adds config sections (e.g. regions). Returns the YAML's path."""
    body = {
        "inputs": inputs, **sections,
        "model": {"checkpoint": str(d / "ckpt"), "device": "cpu", "window": 512},
        "compute": {"actors_min": actors, "actors_max": actors, "cpus_per_actor": 1, "cpus_per_task": 0.5},
        "output": {"dir": str(d / out)},
    }
    path = d / f"{out}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


AGENT_PORT_FLAGS = ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--metrics-export-port",
                    "--runtime-env-agent-port", "--ray-client-server-port")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def own_ports() -> list[str]:
    """Free ports for a node's agents: the session's local Ray (other tests) holds the defaults."""
    return [arg for flag in AGENT_PORT_FLAGS for arg in (flag, str(free_port()))]


def processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) from /proc."""
    procs = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            procs[int(entry.name)] = (ppid, cmd)
    return procs


def kill_cluster(temp: str) -> None:
    """SIGKILL the processes of one cluster (their command lines name its temp dir) and their descendants.

    Not `ray stop`: that stops every Ray on the machine, the in-process `ray_session` included.
    """
    procs = processes()
    mine = {pid for pid, (_, cmd) in procs.items() if temp in cmd} - {os.getpid()}
    grew = True
    while grew:
        more = {pid for pid, (ppid, _) in procs.items() if ppid in mine} - mine
        mine |= more
        grew = bool(more)
    for pid in mine:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


HEAD_TOKEN_COMMAND = "ray get-auth-token --generate > /dev/null"
HEAD_START_COMMAND = "ray start --head --dashboard-host 127.0.0.1"
