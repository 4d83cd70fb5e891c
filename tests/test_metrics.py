"""The metric schema: every list of metric names is what real trials record, report and log.

A tiny digits trial runs in the engine; its records and summaries go through the trainables'
result builder and the MLflow callback into a real SQLite store, which the analysis reads back.
"""

from __future__ import annotations

import math
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from analysis import load
from tests.helpers import ENGINE_TINY
from worm_tune import metrics
from worm_tune.config import TrialConfig
from worm_tune.data import DataBundle, load_data
from worm_tune.engine import TrialEngine
from worm_tune.tune import spaces, store
from worm_tune.tune.callback import MlflowCallback
from worm_tune.tune.reports import epoch_result, reported

#: The trials pin torch to one thread: later test modules get back what they had.
pytestmark = pytest.mark.usefixtures("keep_torch_threads")

TINY = ENGINE_TINY
#: What an engine record holds besides metrics: where the trial is.
WHERE = {"phase", "epoch", "global_epoch"}
#: What a summary holds besides metrics: which trial it is and how it ran.
IDENTITY = {"method", "seed", "config_hash", "unit", "done", "init_weights", "data_digest", "threads"}


@dataclass
class Trial:
    """A finished engine run: its config, per-epoch records and summary."""

    cfg: TrialConfig
    records: list[dict[str, Any]]
    summary: dict[str, Any]


@dataclass
class FakeTune:
    """What the MLflow callback reads of a Tune trial."""

    trial_id: str
    config: dict[str, Any] = field(default_factory=dict)
    last_result: dict[str, Any] | None = None
    checkpoint: Any = None  # its last Ray checkpoint (where its ticket is)


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_data(TrialConfig().replace(TINY).data)


def run(method: str, data: DataBundle) -> Trial:
    cfg = TrialConfig().replace({**TINY, "method": method}).validate()
    engine = TrialEngine(cfg, data)
    summary = engine.run()
    return Trial(cfg, engine.history, summary)


@pytest.fixture(scope="module")
def trials(digits: DataBundle) -> dict[str, Trial]:
    """An EarlyBird trial, the same again, and a WORM trial."""
    return {"earlybird": run("earlybird", digits), "again": run("earlybird", digits), "worm": run("worm", digits)}


def results(trial: Trial) -> list[dict[str, Any]]:
    """The Ray results a trainable would report for the trial's epochs (the summary is the final one)."""
    return [
        epoch_result(record, trial.summary, reported(trial.cfg.method))
        | {"training_iteration": i, "timestamp": time.time()}
        for i, record in enumerate(trial.records, 1)
    ]


# -- the schema ------------------------------------------------------------------------------


def test_the_schema_names_each_metric_once_and_its_lists_agree() -> None:
    assert len(metrics.BY_NAME) == len(metrics.SPECS)
    assert not set(metrics.EPOCH) & set(metrics.SUMMARY)
    assert set(metrics.TOTALS) <= set(metrics.SUMMARY) and set(metrics.CURVES) <= set(metrics.EPOCH)
    assert all(m.cadence in ("epoch", "summary", "total") and m.applies in ("all", "truncating") for m in metrics.SPECS)
    assert all(m.source in ("decision", "run", "state") for m in metrics.SPECS)
    # A value read off the trial's state has no start value; the decided ones are recorded ones.
    assert all(m.start is None for m in metrics.SPECS if m.source == "state" or m.cadence == "epoch")
    assert set(metrics.DECIDED) <= set(metrics.RECORDED) <= set(metrics.SUMMARY)
    assert list(load.trials_frame([]).columns)[-len(metrics.SUMMARY) :] == list(metrics.SUMMARY)
    # converged still names a metric: the summary's
    assert {"truncated_channels", "mask_dist_max", "mask_dist_avg"} == metrics.RETIRED


@pytest.mark.slow
def test_every_objective_of_the_spaces_is_a_schema_metric_with_a_direction_and_reaches_optuna(
    trials: dict[str, Trial],
) -> None:
    named = set()
    for name in spaces.available_spaces():
        profiles = tomllib.loads(spaces.resolve_space_path(name).read_text()).get("profiles", {})
        for profile in ("default", *profiles):
            optuna = spaces.load_space(name, profile).optuna
            named |= {o.metric for o in optuna.objectives} if optuna else set()
    assert named and all(metrics.BY_NAME[m].direction in ("min", "max") for m in named)
    assert all(metrics.BY_NAME[m].direction == d for m, d in metrics.OBJECTIVES.items())
    for method in ("earlybird", "worm"):  # Optuna reads an objective off the top level of the last result
        last = results(trials[method])[-1]
        assert all(isinstance(last[m], float) for m in metrics.OBJECTIVES), method  # NaN while unknown


# -- the engine and the trainables -----------------------------------------------------------


@pytest.mark.parametrize("method", ["earlybird", "worm"])
def test_an_engine_records_the_per_epoch_metrics_and_summarizes_the_summary_ones(
    trials: dict[str, Trial], method: str
) -> None:
    trial = trials[method]
    pruned = [r for r in trial.records if "post_prune_acc" in r]
    assert [r["global_epoch"] for r in pruned] == [3]  # only the epoch that pruned carries it
    assert pruned[0]["post_prune_acc"] == trial.summary["post_prune_acc"]
    for record in trial.records:
        assert set(record) - {"post_prune_acc"} == WHERE | set(metrics.EPOCH) | set(metrics.TOTALS)
    assert set(trial.summary) == IDENTITY | set(metrics.SUMMARY)
    assert trial.summary["unit"] == "channel"  # resnet18: BN channels


@pytest.mark.parametrize(("arch", "kind", "unit"), [("vit", "unstructured", "weight"), ("vit", "structured", "head")])
def test_the_summary_names_the_unit_truncated_units_counts(digits: DataBundle, arch: str, kind: str, unit: str) -> None:
    cfg = TrialConfig().replace({**TINY, "model.arch": arch, "prune.kind": kind}).validate()
    assert TrialEngine(cfg, digits).summary()["unit"] == unit


@pytest.mark.parametrize("method", ["earlybird", "worm"])
def test_a_trainable_reports_its_methods_per_epoch_metrics_and_every_summary_metric(
    trials: dict[str, Trial], method: str
) -> None:
    truncating = method == "worm"
    assert metrics.epoch_metrics(truncating) == reported(method)
    assert ("truncated_units" in metrics.epoch_metrics(truncating)) == truncating
    for result in results(trials[method]):
        keys = set(result) - {"phase", "epoch", "summary", "training_iteration", "timestamp"}
        assert keys == set(metrics.epoch_metrics(truncating)) | set(metrics.SUMMARY)


def test_timing_is_exactly_what_differs_between_two_identical_runs(trials: dict[str, Trial]) -> None:
    first, second = trials["earlybird"], trials["again"]
    differ = {k for k in first.summary if first.summary[k] != second.summary[k]}
    for a, b in zip(first.records, second.records, strict=True):
        differ |= {k for k in a if a[k] != b[k]}
    assert differ == metrics.TIMING


# -- MLflow ----------------------------------------------------------------------------------


def test_the_callback_logs_the_schema_and_the_analysis_reads_it_back(trials: dict[str, Trial], tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = store.experiment_id(uri, "metrics")
    parent = store.start_parent_run(uri, exp, "schema", "sweep", {}, {})
    for method in ("earlybird", "worm"):
        trial = trials[method]
        callback = MlflowCallback(uri, exp, parent, "schema", trial.cfg.to_dict())
        tune_trial = FakeTune(method)
        for result in results(trial):
            callback.on_trial_result(0, [], tune_trial, result | {"node_id": "here"})
            tune_trial.last_result = result
        callback.on_trial_complete(0, [], tune_trial)
        assert callback.flush(60) == 0  # the writes are made by the callback's writer thread

    client = MlflowClient(uri)
    sweep = load.from_mlflow(uri, store.find_parent_run(uri, "schema"))
    for run in store.child_runs(uri, client.get_run(parent)):
        method, last = run.data.tags["method"], len(trials[run.data.tags["method"]].records)
        records = trials[method].records
        for phase in ("search", "retrain"):  # each curve in its phase's section, at that phase's epochs
            steps = [i for i, r in enumerate(records, 1) if r["phase"] == phase]
            for name in metrics.epoch_metrics(truncating=method == "worm"):
                logged = client.get_metric_history(run.info.run_id, metrics.logged_name(name, phase))
                expected = [(i, float(records[i - 1][name])) for i in steps if records[i - 1][name] is not None]
                assert [h.step for h in logged] == [i for i, _ in expected], (phase, name)
                assert [h.value for h in logged] == pytest.approx([v for _, v in expected]), (phase, name)
        sections = {metrics.parse_logged(key)[0] for key in run.data.metrics if key != "epoch"}
        assert sections == {"search", "retrain", metrics.SUMMARY_SECTION}  # no bare names but the bookkeeping epoch
        known = {k for k in metrics.SUMMARY if trials[method].summary[k] is not None}
        assert known == set(metrics.logged_summary(run.data.metrics)) and run.data.tags["unit"] == "channel"
        history = client.get_metric_history(run.info.run_id, metrics.logged_name("post_prune_acc"))
        assert [(h.step, h.value) for h in history] == [(last, trials[method].summary["post_prune_acc"])]
        curves = sweep.curves[sweep.curves["trial_id"] == method]
        expected = [r["truncated_units"] if method == "worm" else math.nan for r in trials[method].records]
        assert curves["truncated_units"].tolist() == pytest.approx(expected, nan_ok=True)
        assert curves["phase"].tolist() == [r["phase"] for r in trials[method].records]


def test_runs_logged_before_the_rename_are_read_under_the_new_name(tmp_path: Path) -> None:
    """Runs of the old code log ``truncated_channels`` per epoch and ``post_prune_acc`` at the prune
    epoch and again at the end; the analysis reads them as runs of today's code."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("old", artifact_location=(tmp_path / "mlartifacts").as_uri())
    parent = client.create_run(exp, tags={store.TAG_KIND: "sweep", store.TAG_SWEEP: "old"}).info.run_id
    for trial_id, counted in (("before", "truncated_channels"), ("after", "truncated_units")):
        tags = {store.PARENT_TAG: parent, store.TAG_KIND: "trial", store.TAG_SWEEP: "old", store.TAG_TRIAL: trial_id}
        run = client.create_run(exp, tags={**tags, "method": "worm", "status": "converged"}).info.run_id
        client.log_param(run, "method", "worm")
        for epoch in (1, 2):
            client.log_metric(run, "mask_converged", float(epoch == 2), step=epoch)
            client.log_metric(run, counted, 10.0 * epoch, step=epoch)
        for epoch in (3, 4):
            client.log_metric(run, counted, 0.0, step=epoch)  # retraining truncates nothing
        if trial_id == "before":
            client.log_metric(run, "post_prune_acc", 0.4, step=3)  # the epoch that pruned
        client.log_metric(run, "post_prune_acc", 0.4, step=4)  # the summary
        client.set_terminated(run, "FINISHED")

    sweep = load.from_mlflow(uri, load.find_parent(uri, "old")[0])
    for trial_id in ("before", "after"):
        curves = sweep.curves[sweep.curves["trial_id"] == trial_id]
        assert curves["truncated_units"].tolist() == [10.0, 20.0, 0.0, 0.0]
        assert curves["phase"].tolist() == ["search", "search", "retrain", "retrain"]
        assert curves["mask_converged"].tolist() == pytest.approx([0.0, 1.0, math.nan, math.nan], nan_ok=True)
        assert sweep.trials.set_index("trial_id").loc[trial_id, "post_prune_acc"] == 0.4


def test_a_record_saved_before_the_rename_reads_under_todays_names() -> None:
    """A checkpoint's history, or a Ray result line, of the old code: the per-epoch flag was ``converged``."""
    old = {"phase": "search", "test_acc": 0.5, "truncated_channels": 4, "converged": True, "diverged": False}
    assert metrics.current(old) == {
        "phase": "search",
        "test_acc": 0.5,
        "truncated_units": 4,
        "mask_converged": True,
        "diverged": False,
    }
    new = {"mask_converged": False, "truncated_units": 4, "converged": 1.0}  # a result: the summary's converged too
    assert metrics.current(new) == new
