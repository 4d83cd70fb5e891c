"""A sweep on a two-node Ray cluster (``ray.cluster_utils.Cluster``, both nodes on this machine)."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

from tests.helpers import ONE_DELTA, SWEEP_TINY
from worm_tune.cli import sweep
from worm_tune.tune.store import TAG_KIND, TAG_SWEEP

#: A two-node Ray cluster: the slow tier.
pytestmark = pytest.mark.slow


def test_a_sweep_spreads_its_trials_over_both_nodes(tmp_path: Path) -> None:
    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        argv = ["resnet18", "--quick", *SWEEP_TINY, *ONE_DELTA, "--set", "seed=0"]
        argv += ["--address", cluster.address, "--storage", str(tmp_path / "ray"), "--tracking-uri", uri]
        assert sweep.main([*argv, "--name", "two-nodes"]) == 0
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert len(nodes) == 2
    finally:
        ray.shutdown()
        cluster.shutdown()
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"tags.`{TAG_SWEEP}` = 'two-nodes' and tags.`{TAG_KIND}` = 'trial'")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    # The pair's two one-CPU trials ran at once: one on each node.
    assert {r.data.tags["node_id"] for r in runs} == nodes
