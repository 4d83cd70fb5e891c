"""What a sweep prints while it runs: a line per finished trial and, now and then, a table of the running ones.

Ray Tune's own console output (a status table every few seconds, a result box per finished trial,
a line per checkpoint) is for debugging a sweep, and ``--verbose`` brings it back. By default a
sweep prints this instead: each trial by its ``--dry-run`` number and the fields the sweep varies,
where its search stands (phase, epoch, ``d_max``), and how it ended.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from ray import tune

from worm_tune.tune.plan import GROUP_KEY, trial_label, trial_reports
from worm_tune.tune.reports import last_error
from worm_tune.tune.store import trial_status
from worm_tune.usage import format_table

#: Seconds between two tables of the running trials.
EVERY_S = 60.0


class ProgressPrinter(tune.Callback):
    """Prints to stdout from the driver; picklable, so a resumed sweep prints the same way."""

    def __init__(
        self, total: int | str, columns: Sequence[str] = (), every_s: float = EVERY_S, groups: str | None = None
    ) -> None:
        self.total = total  # a sequential sweep's is a cap: "≤200"
        self.groups = groups  # a shared sweep's folder of group files
        self.columns = tuple(columns)  # what trial names show (:func:`~worm_tune.tune.plan.label_columns`)
        self.every_s = every_s
        self._last: float | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_last": None}

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finished(trials, trial, error=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finished(trials, trial, error=True)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if self._last is None:  # the first table after a while, not at the start
            self._last = now
        running = [t for t in trials if t.status == "RUNNING"]
        if not running or now - self._last < self.every_s:
            return
        self._last = now
        rows = [self._row(t) for t in running]
        counts = {s: sum(t.status == s for t in trials) for s in ("RUNNING", "PENDING", "TERMINATED", "ERROR")}
        header = ["#", "trial", "phase", "epoch", "d_max"]
        done = sum(len(self._reports(t)) for t in trials if t.status in ("TERMINATED", "ERROR"))
        what = " groups" if getattr(self, "groups", None) else ""  # a shared sweep runs groups of trials
        running, waiting = counts["RUNNING"], counts["PENDING"]
        print(f"\n{done}/{self.total} done, {running}{what} running, {waiting} waiting", flush=True)
        print(format_table(header, rows), flush=True)

    def _finished(self, trials: list, trial: Any, error: bool) -> None:
        """A line per trial that ended: the trial's own, or each of a group trial's members."""
        ended = [t for t in trials if t.status in ("TERMINATED", "ERROR") and t is not trial]
        done = sum(len(self._reports(t)) for t in ended)
        for point, report in self._reports(trial):
            done += 1
            summary = report.get("summary") or {}
            number, name = self._name(point)
            why = f": {last_error(trial)}" if error and last_error(trial) else ""
            print(
                f"[{done}/{self.total}] #{number} {name}: {_outcome(trial_status(summary, error), summary)}{why}",
                flush=True,
            )

    def _reports(self, trial: Any) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
        return trial_reports(trial.config or {}, trial.last_result or {}, getattr(self, "groups", None))

    def _name(self, config: Mapping[str, Any]) -> tuple[str, str]:
        """A trial's dry-run number (Optuna trials have none) and its name, from its Ray config."""
        return str(config.get("trial", "-")), trial_label(config, self.columns)

    def _row(self, trial: Any) -> list[str]:
        config: Mapping[str, Any] = trial.config or {}
        if GROUP_KEY in config:  # a shared sweep's group of trials
            return ["-", f"{config[GROUP_KEY]}: {config['trials']} trials", *_where(trial.last_result or {})]
        return [*self._name(config), *_where(trial.last_result or {})]


def _where(result: Mapping[str, Any]) -> list[str]:
    """Phase, epoch within it and the latest ``d_max`` of a running trial ("-" before its first epoch)."""
    if "phase" not in result:  # no epoch reported yet
        return ["starting", "-", "-"]
    d_max = result.get("d_max")
    return [str(result.get("phase")), str(result.get("epoch")), "-" if d_max is None else f"{d_max:.3f}"]


def _outcome(status: str, summary: Mapping[str, Any]) -> str:
    """How a trial ended, in the words of its MLflow ``status`` tag, with its headline numbers."""
    parts = [status.replace("_", " ")]
    if summary.get("search_epochs") is not None:
        parts.append(f"{summary['search_epochs']} search epochs")
    if summary.get("final_acc") is not None:
        parts.append(f"final acc {summary['final_acc']:.2%}")
    if summary.get("total_time") is not None:
        parts.append(f"{summary['total_time']:.0f} s")
    return ", ".join(parts)
