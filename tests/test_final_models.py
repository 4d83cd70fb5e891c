"""``final``'s networks in MLflow: logged per rerun, the best registered, reloading to the same outputs.

One tiny sweep (an EarlyBird and a WORM trial), then a ``final`` rerun of both its configs for each
kind of pruning: a structured-pruned network has narrower layers, which the logged model must keep.
The networks are logged as ``torch.export`` graphs with a dynamic batch, and nothing warns.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow.artifacts
import mlflow.models
import mlflow.pytorch
import pytest
import ray
import torch
from mlflow.tracking import MlflowClient

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
    tiny_sweep: dict[str, Any], kind: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    uri, name = tiny_sweep["uri"], f"tiny-final-{kind}"
    # Both settings of the sweep; WORM's EarlyBird partner is the sweep's EarlyBird setting, run once.
    argv = ["tiny", "--top-k", "2", "--seeds", "3,4", "--retrain-epochs", "1", "--set", f"prune.kind={kind}"]
    assert final.main([*argv, "--name", name, *tiny_sweep["args"]]) == 0
    out, err = capfd.readouterr()  # the file descriptors: what MLflow's and torch's loggers write too
    # No warning reaches the terminal: no MLflow pickle warning, no Python warning.
    assert not [line for line in err.splitlines() if re.search("pickle|warning", line, re.IGNORECASE)], err
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, filter_string=f"tags.`{TAG_SWEEP}` = '{name}'")
    (parent,) = [r for r in runs if r.data.tags[TAG_KIND] == "final"]
    children = {r.info.run_id: r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id}
    assert sorted((r.data.tags["method"], r.data.tags["seed"]) for r in children.values()) == [
        (m, s) for m in ("earlybird", "worm") for s in ("3", "4")
    ]
    # The sweep pinned delta (its EarlyBird trials carry it too): no field varies, so names show none.
    assert {r.info.run_name for r in children.values()} == {f"{m} s{s}" for m in ("earlybird", "worm") for s in (3, 4)}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # for MLflow's fluent calls below
    monkeypatch.chdir(tiny_sweep["root"])  # where the store's artifact locations resolve, as for `mlflow ui`

    # The confirmation: WORM minus EarlyBird on final_acc, paired by seed; 2 pairs are too few to test.
    of = {(r.data.tags["method"], int(r.data.tags["seed"])): results_of(r) for r in children.values()}
    values = ", ".join(
        f"s{s} {100 * (of['worm', s]['final_acc'] - of['earlybird', s]['final_acc']):+.2f} pp" for s in (3, 4)
    )
    nonzero = sum(of["worm", s]["final_acc"] != of["earlybird", s]["final_acc"] for s in (3, 4))
    factor = TrialConfig().worm.factor
    verdict = (
        f"confirmation on 2 fresh seeds (one pre-stated test): WORM δ=0.03 r={factor:g} minus EarlyBird, "
        f"final_acc per seed: {values}: too few pairs to test ({nonzero} non-zero < 6)"
    )
    assert verdict in out.splitlines() and "secondary: WORM δ=0.03" in out
    parent = client.get_run(parent.info.run_id)
    assert parent.data.tags["confirmation"] == verdict
    assert verdict in mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/{final.CONFIRMATION_FILE}")

    # Each rerun's run has its network as a logged model, with a signature and an input example,
    # and the run's summary metrics (logged at its last epoch).
    for run in children.values():
        (output,) = run.outputs.model_outputs
        logged = client.get_logged_model(output.model_id)
        assert logged.name == MODEL_NAME and logged.source_run_id == run.info.run_id
        assert metrics.logged_name("final_acc") in {m.key for m in logged.metrics}
        info = mlflow.models.get_model_info(f"models:/{output.model_id}")
        assert info.signature is not None and info.saved_input_example_info is not None
        data = {Path(f.path).name for f in client.list_logged_model_artifacts(output.model_id, "data")}
        assert data == {"model.pt2"}  # torch.export's archive: no pickled module beside it

    # The best seed of the best setting (by mean final_acc, the default objective) is a new version of
    # the space's model.
    by_setting: dict[str, list[Any]] = {}
    for run in children.values():
        by_setting.setdefault(run.data.tags["group_hash"], []).append(run)
    best_setting = max(by_setting.values(), key=lambda rs: sum(results_of(r)["final_acc"] for r in rs) / len(rs))
    (version,) = [v for v in client.search_model_versions("name = 'resnet18'") if v.run_id in children]
    best = children[version.run_id]
    assert best in best_setting
    assert results_of(best)["final_acc"] == max(results_of(r)["final_acc"] for r in best_setting)
    for tag in ("source_runs", "source_group", "final_rank"):
        assert version.tags[tag] == best.data.tags[tag]
    assert f"models:/resnet18/{version.version}" in out

    # The registered network and load_model's, from the trial's model.pt, give the same outputs on a
    # batch of 4 (the input example is a batch of 2: the batch dimension is dynamic).
    trial = best.data.tags[TAG_TRIAL]
    (path,) = (tiny_sweep["root"] / "ray" / name).glob(f"*/*-{trial}/{MODEL_FILE}")
    expected, example = load_network(path)
    registered = mlflow.pytorch.load_model(f"models:/resnet18/{version.version}")
    assert not isinstance(registered, type(expected))  # a torch.export graph, not the pickled module
    batch = torch.randn(4, *example.shape[1:], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(registered(batch), expected.eval()(batch))

    # Structured pruning narrowed the layers, and the registered network kept them so.
    cfg = TrialConfig.from_dict(best.data.params)
    dense = build_model(cfg.model, 10, tuple(example.shape[1:]), 0)
    widths = [[p.shape[0] for p in net.parameters() if p.dim() == 4] for net in (registered, dense)]
    assert len(widths[0]) == len(widths[1]) and (widths[0] != widths[1]) == (kind == "structured")
