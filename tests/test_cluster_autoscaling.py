"""Autoscaling and preemption for real on one machine (slow: a multi-node cluster of processes).

Ray's AutoscalingCluster (fake multi-node provider) runs a 1-CPU head and a worker type of 0..2 one-CPU
nodes. The job asks for two one-CPU actors (actors_min = 2): one fits on the head, the other waits for the
node the autoscaler adds for it, so the pool grows as the node arrives; the job completes. (Ray Data grows
a pool beyond actors_min only onto resources the cluster already has: measured, with actors_min 1 and
actors_max 2 it stayed at one actor while the autoscaler added a node for the CPU tasks.)
Then a worker node is killed mid-run (its raylet and every process under it, as when a spot instance goes
away): the job completes with output identical to the uninterrupted run.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import free_port, kill_cluster, own_ports, write_job_config
from ray.cluster_utils import AutoscalingCluster

pytestmark = pytest.mark.slow

PY = sys.executable
N_GENES, N_SAMPLES = 6, 12

# Ray's fake_multi_node/example.yaml, which the ray wheel does not ship (AutoscalingCluster reads it).
FAKE_BASE = {
    "cluster_name": "fake_multinode", "max_workers": 8,
    "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                 "disable_launch_config_check": True},
    "available_node_types": {}, "head_node_type": "ray.head.default", "auth": {}, "upscaling_speed": 1.0,
    "idle_timeout_minutes": 0.1, "docker": {}, "initialization_commands": [], "setup_commands": [],
    "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
    "worker_start_ray_commands": [], "file_mounts": {}, "cluster_synced_files": [],
    "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
}

PROBE = """
import json, ray
ray.init(address="{gcs}", log_to_driver=False)
nodes = [dict(id=n["NodeID"], alive=n["Alive"], head="node:__internal_head__" in n["Resources"],
              socket=n["RayletSocketName"]) for n in ray.nodes()]
actors = [dict(cls=a["ActorClassName"], node=a["Address"]["NodeID"])
          for a in ray._private.state.actors().values() if "EmbedWindows" in a["ActorClassName"]]
print(json.dumps(dict(nodes=nodes, actors=actors)))
"""


class IsolatedAutoscalingCluster(AutoscalingCluster):
    """AutoscalingCluster on its own ports and temp dir. Its own start() runs `ray stop --force` (every Ray on
    the machine, the test session's included) and reads the unshipped example.yaml; this one does neither."""

    def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False, **config_kwargs):
        config = copy.deepcopy(FAKE_BASE)
        config["available_node_types"] = {
            **worker_node_types,
            "ray.head.default": {"resources": head_resources, "node_config": {}, "max_workers": 0},
        }
        config.update(config_kwargs)
        return config

    def start(self, _system_config=None, override_env=None):
        self.port = free_port()
        self.temp = tempfile.mkdtemp(prefix="nc_as_", dir="/tmp")
        self._config["provider"]["gcs_address"] = f"127.0.0.1:{self.port}"  # workers join this head
        conf = Path(self.temp) / "autoscaling.json"
        conf.write_text(json.dumps(self._config))
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self.env.update(AUTOSCALER_UPDATE_INTERVAL_S="1", RAY_FAKE_CLUSTER="1", RAY_AUTH_MODE="disabled",
                        RAY_USAGE_STATS_ENABLED="0")
        cmd = [str(Path(PY).parent / "ray"), "start", "--head", f"--autoscaling-config={conf}",
               "--port", str(self.port), "--node-ip-address", "127.0.0.1", "--temp-dir", self.temp,
               "--num-cpus", str(self._head_resources["CPU"]), "--object-store-memory", str(200 * 2**20),
               "--dashboard-port", str(free_port()), "--disable-usage-stats", *own_ports()]
        subprocess.run(cmd, check=True, env=self.env, capture_output=True, timeout=180)
        self.gcs = f"127.0.0.1:{self.port}"

    def shutdown(self):
        kill_cluster(self.temp)

    def probe(self) -> dict:
        res = subprocess.run([PY, "-c", PROBE.format(gcs=self.gcs)], env=self.env, capture_output=True,
                             text=True, timeout=180, check=True)
        # the probe prints one JSON line; Ray may print warnings (e.g. lagging heartbeats) around it
        return json.loads(next(ln for ln in reversed(res.stdout.splitlines()) if ln.startswith("{")))


@pytest.fixture(scope="module")
def cluster():
    worker = {"resources": {"CPU": 1, "object_store_memory": 100 * 2**20}, "node_config": {},
              "min_workers": 0, "max_workers": 2}
    c = IsolatedAutoscalingCluster(head_resources={"CPU": 1}, worker_node_types={"cpu_worker": worker},
                                   max_workers=2, idle_timeout_minutes=0.5)
    c.start()
    try:
        yield c
    finally:
        c.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from neuro_caduceus.synthetic import make_cohort

    d = tmp_path_factory.mktemp("autoscale")
    make_cohort(d, n_samples=N_SAMPLES, n_genes=N_GENES, seed=11)
    subprocess.run([PY, "-m", "neuro_caduceus.cli", "make-checkpoint", "--preset", "tiny-ps", "--seed", "0",
                    "--out", str(d / "ckpt")], check=True, capture_output=True)
    return d


def _config(d: Path, out: str) -> Path:
    return write_job_config(d, out, {"vcf": str(d / "cohort.vcf.gz"), "reference_fasta": str(d / "genome.fa"),
                                     "gtf": str(d / "genes.gtf.gz"), "gene_set": str(d / "geneset.yaml")},
                            actors=2)


def _job(cluster, cfg: Path) -> list[str]:
    return [PY, "-m", "neuro_caduceus", "embed-cohort", "--config", str(cfg)]


def _table(out: Path):
    return pq.read_table(out / "shards").sort_by([("gene_id", "ascending"), ("subject_id", "ascending")])


@pytest.fixture(scope="module")
def grown(cluster, data):
    env = {**cluster.env, "RAY_ADDRESS": cluster.gcs}
    res = subprocess.run(_job(cluster, _config(data, "grown")), env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return data / "grown", cluster.probe()


def test_actor_pool_grows_onto_added_nodes(grown):
    out, state = grown
    workers = [n for n in state["nodes"] if not n["head"]]
    assert workers, "the autoscaler added no worker node"
    assert len(state["actors"]) >= 2, state["actors"]
    assert {a["node"] for a in state["actors"]} & {n["id"] for n in workers}  # actors ran on added nodes
    assert _table(out).num_rows == N_SAMPLES * N_GENES


def test_worker_node_lost_mid_run_same_output(grown, cluster, data):
    out = data / "preempted"
    env = {**cluster.env, "RAY_ADDRESS": cluster.gcs}
    proc = subprocess.Popen(_job(cluster, _config(data, "preempted")), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    victim = None
    try:
        while proc.poll() is None and victim is None:
            if list((out / "shards").glob("*.parquet")):
                state = cluster.probe()
                actor_nodes = {a["node"] for a in state["actors"]}
                alive = [n for n in state["nodes"] if n["alive"] and not n["head"]]
                victim = next((n for n in alive if n["id"] in actor_nodes), alive[0] if alive else None)
            time.sleep(0.5)
        done = len(list((out / "shards").glob("*.parquet")))
        assert victim is not None and done < N_GENES, f"the job ended ({done} genes) before a node was lost"
        kill_cluster(victim["socket"])  # the node's raylet and every process under it
        log, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log[-3000:]
    deadline = time.time() + 120  # the GCS declares a node dead after missed health checks, not at once
    def alive() -> set[str]:
        return {n["id"] for n in cluster.probe()["nodes"] if n["alive"]}

    while victim["id"] in alive() and time.time() < deadline:
        time.sleep(2)
    assert victim["id"] not in alive()
    a, b = _table(grown[0]), _table(out)
    assert a.select(["subject_id", "gene_id"]).equals(b.select(["subject_id", "gene_id"]))
    np.testing.assert_array_equal(np.stack(a["embedding"].to_numpy(zero_copy_only=False)),
                                  np.stack(b["embedding"].to_numpy(zero_copy_only=False)))
