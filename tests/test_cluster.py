"""A sweep on a two-node Ray cluster (``ray.cluster_utils.Cluster``, both nodes on this machine)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import ray
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

from tests.helpers import ONE_DELTA, SWEEP_TINY
from worm_tune.cli import sweep
from worm_tune.tune.store import TAG_KIND, TAG_SWEEP

#: A two-node Ray cluster: the slow tier.
pytestmark = pytest.mark.slow


def two_node_sweep(tmp_path: Path, name: str, *flags: str) -> tuple[set[str], list[Any]]:
    """Run the quick profile at one delta (tiny budgets) on a fresh two-node cluster of one CPU per
    node; the nodes' ids and the sweep's trial runs."""
    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        argv = ["resnet18", "--quick", *SWEEP_TINY, *ONE_DELTA, *flags]
        argv += ["--address", cluster.address, "--storage", str(tmp_path / "ray"), "--tracking-uri", uri]
        assert sweep.main([*argv, "--name", name, "--no-analysis"]) == 0
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert len(nodes) == 2
    finally:
        ray.shutdown()
        cluster.shutdown()
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"tags.`{TAG_SWEEP}` = '{name}' and tags.`{TAG_KIND}` = 'trial'")
    assert all(r.info.status == "FINISHED" for r in runs)
    return nodes, runs


def test_a_sweep_spreads_its_trials_over_both_nodes(tmp_path: Path) -> None:
    nodes, runs = two_node_sweep(tmp_path, "two-nodes", "--set", "seed=0", "--no-share")
    assert len(runs) == 2
    # The pair's two one-CPU trials ran at once: one on each node.
    assert {r.data.tags["node_id"] for r in runs} == nodes


def test_a_shared_sweep_spreads_its_groups_over_both_nodes(tmp_path: Path) -> None:
    """Six seeds start as six group trials (with these budgets a seed's pair never parts), and
    two of them run at once, one on each node."""
    nodes, runs = two_node_sweep(tmp_path, "shared")
    assert len(runs) == 12
    assert {r.data.tags["node_id"] for r in runs} == nodes
    pairs: dict[str, set[str]] = {}
    for run in runs:
        pairs.setdefault(run.data.tags["seed"], set()).add(run.data.tags["node_id"])
    assert all(len(node) == 1 for node in pairs.values())  # a pair's first epoch ran once, on one node
