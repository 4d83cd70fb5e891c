"""What a trial's MLflow run records, built from its reports: metric batches, tags, its dataset.

Pure builders (no MLflow calls): :class:`~worm_tune.tune.trial_runs.TrialRuns` writes what they build.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric

from worm_tune import metrics
from worm_tune.config import RUNTIME_FIELDS, TrialConfig
from worm_tune.tune.store import _as_metric


def epoch_batch(result: Mapping[str, Any]) -> list[Metric]:
    """An epoch's result as MLflow metrics, step = the trial's epoch: every per-epoch metric it reports
    (a trial reports its method's) in the section of the epoch's phase, less those the epoch did not
    measure; and ``epoch``, which tells a resumed sweep how far the run was logged."""
    epoch = int(result["training_iteration"])
    stamp = int(result.get("timestamp", 0) * 1000)
    values = {metrics.logged_name(name, result["phase"]): _as_metric(result.get(name)) for name in metrics.EPOCH}
    values["epoch"] = epoch
    return [Metric(key, value, stamp, epoch) for key, value in values.items() if value is not None]


def summary_batch(summary: Mapping[str, Any], epoch: int) -> list[Metric]:
    """A trial's summary as MLflow metrics, logged at its last epoch (booleans as 0/1, unknowns left out)."""
    values = {metrics.logged_name(name): _as_metric(summary.get(name)) for name in metrics.SUMMARY}
    return [Metric(key, value, 0, epoch) for key, value in values.items() if value is not None]


def runtime_tags(cfg: TrialConfig) -> dict[str, str]:
    """Where a trial ran, as tags: the config's runtime fields are not params, which say what a run
    computes (its hash's fields), and hold machine paths that would not survive moving the store."""
    flat = cfg.to_flat()
    return {key: str(flat[key]) for key in sorted(RUNTIME_FIELDS) if key != "threads"}  # threads: as it ran


def dataset_input(cfg: TrialConfig, summary: Mapping[str, Any]) -> DatasetInput:
    """The trial's training data as an MLflow dataset: its name, the size of the subset, and a digest of
    its examples (not where it was read from)."""
    subset = cfg.data.train_subset or "all"
    source = {"tags": {"dataset": cfg.data.dataset, "train_subset": str(subset)}}
    dataset = Dataset(
        name=cfg.data.dataset if subset == "all" else f"{cfg.data.dataset}[{subset}]",
        digest=summary["data_digest"],
        source_type="code",
        source=json.dumps(source),
    )
    return DatasetInput(dataset, [InputTag("mlflow.data.context", "train")])


def trajectory_csv(history: Mapping[str, Mapping[int, float]]) -> str:
    """The mask-distance trajectory as CSV, one row per search epoch, one column per curve of
    :data:`worm_tune.metrics.CURVES` (``history``: each curve's value by epoch)."""
    lines = ["epoch," + ",".join(metrics.CURVES)]
    for epoch in sorted(set().union(*history.values())):
        lines.append(",".join([str(epoch), *(_csv(history[name].get(epoch)) for name in metrics.CURVES)]))
    return "\n".join(lines) + "\n"


def _csv(value: float | None) -> str:
    return "" if value is None else repr(value)
