"""What a trial tells the driver: its report each epoch, and the error it failed with.

A report holds the method's per-epoch metrics and every summary metric as a number (NaN while
unknown), so Ray's schedulers and Optuna can read it; the full summary rides along under
``summary``. The MLflow callback, the progress lines and the summary table read nothing else.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from worm_tune import metrics
from worm_tune.ticket.methods import METHODS


def reported(method: str) -> tuple[str, ...]:
    """The per-epoch metrics a method reports: the truncation ones only if it truncates."""
    return metrics.epoch_metrics(truncating=METHODS[method].truncates)


def epoch_result(record: dict[str, Any], summary: dict[str, Any], epoch_metrics: tuple[str, ...]) -> dict[str, Any]:
    """One report: where the trial is, the method's per-epoch metrics, and every summary metric as a number
    (NaN while unknown) so schedulers and Optuna can read it; the full summary rides along under "summary"."""
    return {
        "phase": record["phase"],
        "epoch": record["epoch"],
        **{name: record[name] for name in epoch_metrics},
        **{name: _number(summary[name]) for name in metrics.SUMMARY},
        "summary": summary,
    }


def last_error(trial: Any) -> str:
    """The last line of a failed trial's traceback (the exception and its message), from Ray's error file."""
    if getattr(trial, "storage", None) is None:  # a trial never started has no folder
        return ""
    try:
        lines = Path(trial.error_file).read_text().strip().splitlines() if trial.error_file else []
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)
