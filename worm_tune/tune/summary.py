"""What a sweep says at its end: the summary table, what sharing saved, the storage it holds, what to run next."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from worm_tune.config import TrialConfig
from worm_tune.group import ComputeSaved
from worm_tune.paths import storage_flag
from worm_tune.tune import store
from worm_tune.tune.plan import EXPERIMENT, MEMBERS, SweepSettings, cell, config_overrides, staying, trial_reports
from worm_tune.tune.store import trial_status
from worm_tune.usage import format_table

#: What ``--keep-checkpoints`` keeps, in words.
KEPT = {"none": "no checkpoints", "last": "each trial's last checkpoint", "all": "every checkpoint"}


def summary_table(results: list[Any], base: TrialConfig, groups: Path | None = None) -> str:
    """Per method and pruning ratio: how trials ended, mean search epochs, accuracies and time."""
    cells: dict[tuple[str, float], list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for point, report, error in outcomes(results, groups):
        summary = report.get("summary") or {}
        cfg = base.replace(config_overrides(point))  # a trial that failed before its first report has no summary
        status = trial_status(summary, error)
        cells[(cfg.method, cfg.search.ratio)].append((status, summary))
    header = ["method", "ratio", "trials", "converged", "not conv.", "stopped", "diverged", "errors"]
    header += ["search epochs", "acc pre-prune", "acc final", "time (s)"]
    rows = []
    for (method, ratio), items in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        count = defaultdict(int)
        for status, _ in items:
            count[status] += 1
        converged = [s for status, s in items if status == "converged"]
        rows.append(
            [
                method,
                cell(ratio),
                str(len(items)),
                str(count["converged"]),
                str(count["not_converged"]),
                str(count["stopped_early"]),
                str(count["diverged"]),
                str(count["error"]),
                _mean([s["search_epochs"] for s in converged], ".2f"),
                _mean([s.get("pre_prune_acc") for _, s in items], ".2%"),
                _mean(
                    [s.get("final_acc") for status, s in items if status in ("converged", "not_converged", "dense")],
                    ".2%",
                ),
                _mean([s.get("total_time") for _, s in items], ".0f"),
            ]
        )
    note = "search epochs: mean over converged trials; a stopped or diverged trial has no convergence epoch."
    return format_table(header, rows) + "\n\n" + note


def outcomes(results: list[Any], groups: Path | None = None) -> list[tuple[Mapping[str, Any], Mapping[str, Any], bool]]:
    """Each trial's Ray config, last report and whether it failed, from the Ray results
    (:func:`~worm_tune.tune.plan.trial_reports`; ``groups``: a shared sweep's folder of group files)."""
    out = []
    for result in results:
        for point, last in trial_reports(result.config or {}, result.metrics or {}, groups):
            out.append((point, last, result.error is not None))
    return out


def _mean(values: list[float | None], fmt: str) -> str:
    known = [v for v in values if v is not None and v == v]
    return "-" if not known else f"{format(sum(known) / len(known), fmt)} (n={len(known)})"


def saving(last_results: Iterable[Mapping[str, Any]]) -> ComputeSaved:
    """What a shared sweep trained against the sum over its trials, from each group's last result."""
    groups = [r for r in last_results if r and MEMBERS in r]
    members = [m for r in groups for m in staying(r)]
    return ComputeSaved(
        epochs_trained=sum(int(r["training_iteration"]) + int(r.get("epochs_replayed", 0)) for r in groups),
        epochs_of_trials=sum(int(m["training_iteration"]) for m in members),
        search_epochs_trained=sum(int(r["search_epochs_trained"]) for r in groups),
        search_epochs_of_trials=sum(int(m["search_epochs_run"]) for m in members),
        flops_trained=sum(float(r["flops_trained"]) for r in groups),
        flops_of_trials=sum(float(m["summary"]["train_flops"]) for m in members),
    )


def storage_line(settings: SweepSettings, final: int, peak: int) -> str:
    """The size of the sweep's folder at its end and at its peak, and what it kept."""
    return (
        f"storage: {settings.folder} holds {megabytes(final)} ({KEPT[settings.keep_checkpoints]} kept; "
        f"--keep-checkpoints to keep more), {megabytes(peak)} at its peak"
    )


def megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB" if size >= 1e5 else f"{size / 1e3:,.1f} kB"


def resume_command(prog: str, settings: SweepSettings) -> str:
    """The command that resumes the sweep."""
    return f"{prog} {settings.space} --resume --name {settings.name}{storage_flag(settings.storage)}"


def next_steps(settings: SweepSettings) -> str:
    """The commands a user runs after a sweep, with the flags that find this sweep."""
    uri, name, folder = settings.tracking_uri, settings.name, settings.folder
    default_uri = store.resolve_tracking_uri(None) == uri and "MLFLOW_TRACKING_URI" not in os.environ
    where = "" if default_uri else f" --tracking-uri {uri}"
    runs = f"#/experiments/{settings.experiment_id}/runs"
    if uri.startswith("http"):
        ui = f"open {uri.rstrip('/')}/{runs}"
    else:  # from the store's folder, where its artifact locations resolve (see store.at_store)
        db = store.sqlite_path(uri)
        ui = "mlflow ui" if default_uri else f"cd {db.parent} && mlflow ui --backend-store-uri sqlite:///{db.name}"
        ui += f"   # http://127.0.0.1:5000/{runs}"
    lines = [
        "next:",
        f"  {ui}",
        f"  python -m analysis {name}{where}   # the report again, e.g. once more trials are in",
    ]
    if settings.kind == "sweep":
        storage = storage_flag(settings.storage)
        lines.append(
            f"  python -m worm_tune.final {name}{where}{storage}   # confirm the pick on fresh seeds, beside EarlyBird"
        )
    if next(folder.glob(f"{EXPERIMENT}/*/events.out.tfevents.*"), None) is not None:
        lines.append(f"  tensorboard --logdir {folder}")
    return "\n".join(lines)
