"""``final``'s networks in MLflow: logged per rerun, the best registered, reloading to the same outputs.

One tiny sweep (an EarlyBird and a WORM trial), then a ``final`` rerun of its best config for each
kind of pruning: a structured-pruned network has narrower layers, which the logged model must keep.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import mlflow.models
import mlflow.pytorch
import pytest
import ray
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from tests.helpers import QUICK_PAIR, results_of
from worm_tune import metrics
from worm_tune.cli import final, sweep
from worm_tune.config import TrialConfig
from worm_tune.engine import load_network
from worm_tune.models import build_model
from worm_tune.tune.model_logging import MODEL_FILE, MODEL_NAME
from worm_tune.tune.store import PARENT_TAG, TAG_KIND, TAG_SWEEP, TAG_TRIAL

#: A real sweep and reruns through Ray and MLflow: the slow tier.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A local Ray, a SQLite store, and a finished sweep named "tiny" of the resnet18 space."""
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    root = tmp_path_factory.mktemp("final-models")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    args = ["--storage", str(root / "ray"), "--tracking-uri", uri, "--no-analysis"]
    assert sweep.main([*QUICK_PAIR, "--name", "tiny", *args]) == 0
    yield {"root": root, "uri": uri, "args": args}
    ray.shutdown()


@pytest.mark.parametrize("kind", ["unstructured", "structured"])
def test_final_logs_each_network_and_registers_the_best(
    tiny_sweep: dict[str, Any], kind: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    uri, name = tiny_sweep["uri"], f"tiny-final-{kind}"
    argv = ["tiny", "--top-k", "1", "--seeds", "3,4", "--retrain-epochs", "1", "--set", f"prune.kind={kind}"]
    assert final.main([*argv, "--name", name, *tiny_sweep["args"]]) == 0
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, filter_string=f"tags.`{TAG_SWEEP}` = '{name}'")
    (parent,) = [r for r in runs if r.data.tags[TAG_KIND] == "final"]
    children = {r.info.run_id: r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id}
    assert len(children) == 2
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # for MLflow's fluent calls below
    monkeypatch.chdir(tiny_sweep["root"])  # where the store's artifact locations resolve, as for `mlflow ui`

    # Each rerun's run has its network as a logged model, with a signature and an input example,
    # and the run's summary metrics (logged at its last epoch).
    for run in children.values():
        (output,) = run.outputs.model_outputs
        logged = client.get_logged_model(output.model_id)
        assert logged.name == MODEL_NAME and logged.source_run_id == run.info.run_id
        assert metrics.logged_name("final_acc") in {m.key for m in logged.metrics}
        info = mlflow.models.get_model_info(f"models:/{output.model_id}")
        assert info.signature is not None and info.saved_input_example_info is not None

    # The best seed (by final_acc, the default objective) is a new version of the space's model.
    (version,) = [v for v in client.search_model_versions("name = 'resnet18'") if v.run_id in children]
    best = children[version.run_id]
    assert results_of(best)["final_acc"] == max(results_of(r)["final_acc"] for r in children.values())
    assert version.tags["final_rank"] == "1"
    for tag in ("source_runs", "source_group", "final_rank"):
        assert version.tags[tag] == best.data.tags[tag]
    assert f"models:/resnet18/{version.version}" in capsys.readouterr().out

    # The registered network and load_model's, from the trial's model.pt, give the same outputs.
    trial = best.data.tags[TAG_TRIAL]
    (path,) = (tiny_sweep["root"] / "ray" / name).glob(f"*/*-{trial}/{MODEL_FILE}")
    expected, example = load_network(path)
    registered = mlflow.pytorch.load_model(f"models:/resnet18/{version.version}")
    assert type(registered) is type(expected)  # the module itself, pickled: not a torch.export graph
    batch = torch.randn(4, *example.shape[1:], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(registered.eval()(batch), expected.eval()(batch))

    # Structured pruning narrowed the layers, and the registered network kept them so.
    cfg = TrialConfig.from_dict(best.data.params)
    dense = build_model(cfg.model, 10, tuple(example.shape[1:]), 0)
    widths = [[m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)] for net in (registered, dense)]
    assert (widths[0] != widths[1]) == (kind == "structured")
