"""The metrics a trial reports: one spec per metric, and every list of metric names derived from them.

A metric's ``name`` is its key everywhere: in the engine's per-epoch records and summary, in Ray
results, in the terminal and the report, and (in a section, see :func:`logged_name`) in MLflow.
The engine, the trainables, the MLflow callback, the search spaces and the analysis read their
lists from here, so a metric is added, renamed or retired in one place. This module imports
nothing from the project: every layer may read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from worm_tune.legacy import RENAMED_METRICS

#: When a metric is reported. ``epoch``: one value per epoch, logged with step = epoch. ``summary``:
#: one value per trial, logged when the trial ends. ``total``: a summary value that every epoch's
#: record also carries as it stands so far (logged when the trial ends, like any summary value).
Cadence = Literal["epoch", "summary", "total"]
#: Which trials report a metric: every trial, or only those of truncating (WORM-like) methods.
Applies = Literal["all", "truncating"]
#: Where a summary value comes from. ``decision``: the trial's own search decisions (trials that
#: share one network differ in these, see :mod:`worm_tune.group`). ``run``: recorded as the network
#: trains. ``state``: read off the trial's state whenever a summary is taken.
Source = Literal["decision", "run", "state"]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    cadence: Cadence
    help: str
    unit: str  # what one value counts: "fraction", "epochs", "seconds", ... (the reference pages show it)
    direction: Literal["min", "max"] | None = None  # better this way, so an objective may name it
    timing: bool = False  # wall time: differs between identical runs, left out of determinism checks
    applies: Applies = "all"
    source: Source = "run"
    start: Any = None  # a recorded summary value before the trial sets it


SPECS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "train_loss",
        "epoch",
        "mean training loss of the epoch (None once it is not finite)",
        unit="nats (cross-entropy)",
    ),
    MetricSpec("train_acc", "epoch", "training accuracy of the epoch", unit="fraction"),
    MetricSpec("test_acc", "epoch", "accuracy on the held-out split after the epoch", direction="max", unit="fraction"),
    MetricSpec("d_max", "epoch", "largest mask distance in the window (None until full)", unit="fraction of units"),
    MetricSpec("d_avg", "epoch", "mean mask distance in the window (None until full)", unit="fraction of units"),
    MetricSpec(
        "r", "epoch", "the truncation factor the epoch's gradients were scaled by", applies="truncating", unit="factor"
    ),
    MetricSpec("truncated_units", "epoch", "units truncated (see unit)", applies="truncating", unit="units"),
    MetricSpec("mask_converged", "epoch", "the mask stopped moving (None after the search)", unit="boolean"),
    MetricSpec("epoch_time", "epoch", "wall seconds of the epoch", timing=True, unit="seconds"),
    MetricSpec("search_epochs", "summary", "epochs the search ran", direction="min", source="decision", unit="epochs"),
    MetricSpec(
        "converged",
        "summary",
        "the search found its ticket before its budget ran out",
        source="decision",
        start=False,
        unit="boolean",
    ),
    MetricSpec(
        "trigger_epoch", "summary", "the search epoch at which WORM began truncating", source="decision", unit="epoch"
    ),
    MetricSpec(
        "pre_prune_acc",
        "summary",
        "test accuracy at the end of the search",
        direction="max",
        source="decision",
        unit="fraction",
    ),
    MetricSpec(
        "post_prune_acc",
        "summary",
        "test accuracy right after pruning (and in that epoch)",
        direction="max",
        unit="fraction",
    ),
    MetricSpec(
        "acc_after_1_retrain_epoch",
        "summary",
        "test accuracy after one retraining epoch",
        direction="max",
        unit="fraction",
    ),
    MetricSpec(
        "epochs_to_target", "summary", "retraining epochs to reach the target accuracy", direction="min", unit="epochs"
    ),
    MetricSpec(
        "retrain_epochs", "summary", "epochs of retraining (or of dense training)", source="state", unit="epochs"
    ),
    MetricSpec(
        "final_acc", "summary", "test accuracy after the last epoch", direction="max", source="state", unit="fraction"
    ),
    MetricSpec(
        "best_acc",
        "summary",
        "best test accuracy over the retraining",
        direction="max",
        source="state",
        unit="fraction",
    ),
    MetricSpec(
        "sparsity", "summary", "fraction of zero weights after unstructured pruning", source="state", unit="fraction"
    ),
    MetricSpec("params_dense", "summary", "parameters of the dense network", source="state", unit="parameters"),
    MetricSpec(
        "params_pruned", "summary", "parameters (nonzero ones if unstructured) after pruning", unit="parameters"
    ),
    MetricSpec(
        "flops_dense", "summary", "forward FLOPs per image of the dense network", source="state", unit="FLOPs per image"
    ),
    MetricSpec("flops_pruned", "summary", "forward FLOPs per image after pruning", unit="FLOPs per image"),
    MetricSpec(
        "search_time", "summary", "wall seconds of the search", direction="min", timing=True, start=0.0, unit="seconds"
    ),
    MetricSpec(
        "total_time",
        "summary",
        "wall seconds of the whole trial",
        direction="min",
        timing=True,
        start=0.0,
        unit="seconds",
    ),
    MetricSpec("search_flops", "summary", "training FLOPs spent on the search", direction="min", start=0, unit="FLOPs"),
    MetricSpec(
        "train_flops", "total", "training FLOPs so far (3x forward FLOPs per image seen)", start=0, unit="FLOPs"
    ),
    MetricSpec(
        "diverged", "total", "the loss became NaN or infinite, which ends the trial", start=False, unit="boolean"
    ),
    MetricSpec("epochs", "summary", "epochs the trial ran", source="state", unit="epochs"),
    # When the trial ran (Unix seconds; a resumed trial spans its interruption): tells which pairs ran side by side.
    MetricSpec(
        "started_at", "summary", "wall-clock time the trial's first epoch began", timing=True, unit="Unix seconds"
    ),
    MetricSpec("ended_at", "total", "wall-clock time the trial's latest epoch ended", timing=True, unit="Unix seconds"),
)

BY_NAME: dict[str, MetricSpec] = {m.name: m for m in SPECS}
#: Per-epoch metrics, in the order records list them.
EPOCH: tuple[str, ...] = tuple(m.name for m in SPECS if m.cadence == "epoch")
#: Per-trial metrics (running totals included), in the order summaries list them.
SUMMARY: tuple[str, ...] = tuple(m.name for m in SPECS if m.cadence != "epoch")
#: Summary values every epoch's record carries as they stand.
TOTALS: tuple[str, ...] = tuple(m.name for m in SPECS if m.cadence == "total")
#: Summary values a trial records as it runs (its decided ones included), each at its start value.
RECORDED: Mapping[str, Any] = MappingProxyType(
    {m.name: m.start for m in SPECS if m.cadence != "epoch" and m.source != "state"}
)
#: Summary values a trial's own search decisions set.
DECIDED: tuple[str, ...] = tuple(m.name for m in SPECS if m.source == "decision")
#: Wall-time metrics; everything else is a deterministic function of config, seed and thread count.
TIMING: frozenset[str] = frozenset(m.name for m in SPECS if m.timing)
#: The per-epoch curves the analysis and the trajectory artifact read: the deterministic per-epoch metrics.
CURVES: tuple[str, ...] = tuple(name for name in EPOCH if name not in TIMING)
#: Metrics an objective may name, with the direction that is better.
OBJECTIVES: dict[str, str] = {m.name: m.direction for m in SPECS if m.direction is not None}
#: Current name -> the name engine records and Ray results used before a rename (:mod:`worm_tune.legacy`).
FORMER: dict[str, str] = {new: old for old, new in RENAMED_METRICS.items()}
#: Former names no metric holds now. Only these are fallbacks in MLflow, where a name's absence is no
#: sign of an old run (a dense run logs no ``mask_converged``) and ``converged`` was always the summary's.
RETIRED: frozenset[str] = frozenset(old for old in FORMER.values() if old not in BY_NAME)


#: MLflow's run page groups charts into sections by the text before the first "/", in name order. A
#: per-epoch metric is logged in its phase's section (``search/d_max``, ``retrain/test_acc``,
#: ``train/...`` for dense training), a summary metric in this one, which sorts after every phase so
#: that the curves come first ("result" would sort before "retrain").
SUMMARY_SECTION = "trial"


def logged_name(name: str, phase: str | None = None) -> str:
    """A metric's MLflow key: ``<phase>/<name>`` for a per-epoch metric, ``trial/<name>`` for a summary one."""
    if BY_NAME[name].cadence != "epoch":
        return f"{SUMMARY_SECTION}/{name}"
    if not phase:
        raise ValueError(f"per-epoch metric {name!r} needs the phase of its epoch")
    return f"{phase}/{name}"


def parse_logged(key: str) -> tuple[str, str]:
    """An MLflow key as (section, name); a key logged before sections has the section ""."""
    section, _, name = key.rpartition("/")
    return section, name


def logged_summary(logged: Mapping[str, float]) -> dict[str, float]:
    """A run's summary values by name, from its MLflow metrics: ``trial/<name>``, or, in a run logged
    before sections, the bare name."""
    values = {name: logged.get(logged_name(name), logged.get(name)) for name in SUMMARY}
    return {name: value for name, value in values.items() if value is not None}


def epoch_metrics(truncating: bool) -> tuple[str, ...]:
    """The per-epoch metrics a trial reports: the truncation ones only for truncating methods."""
    return tuple(name for name in EPOCH if truncating or BY_NAME[name].applies == "all")


def current(record: Mapping[str, Any]) -> dict[str, Any]:
    """A per-epoch record under today's names: one saved before a rename holds a former name and lacks
    the current one (today's records always hold every per-epoch name, if only as None)."""
    renamed = {old: new for new, old in FORMER.items() if new not in record and old in record}
    return {renamed.get(key, key): value for key, value in record.items()}


def untimed(value: Any) -> Any:
    """``value`` without wall-time keys (:data:`TIMING`), at any depth: what two runs of one config
    share exactly (same seed, same thread count), and so what sharing must reproduce."""
    if isinstance(value, Mapping):
        return {k: untimed(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list | tuple):
        return type(value)(untimed(v) for v in value)
    return value
