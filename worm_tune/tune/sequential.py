"""The searcher of a sequential grid sweep (``--until``): a batch of paired seeds at a time, until the rule holds.

:class:`SequentialSeeds` runs the grid's trials on the first batch of seeds (a shared sweep's as
groups, forked as they part: :class:`~worm_tune.tune.sharing.SharedGrid` does that part), and once
every trial of the batch has ended it takes a look (:func:`~worm_tune.tune.until.look`): each
variant's paired differences to EarlyBird so far, their anytime-valid intervals, and the rule. If
the rule holds, or no batch is left under ``--max-seeds``, the sweep ends; else the next batch's
trials start. Its state (the batches started, the trials' ends, the looks) is saved with the
experiment, so ``--resume`` continues the batch it was in, and written to the sweep's folder
(:data:`~worm_tune.tune.until.STATE_FILE`) for the runner and readers without Ray.
"""

from __future__ import annotations

import pickle
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from worm_tune.checkpoints import write_atomic
from worm_tune.config import TrialConfig
from worm_tune.ticket.methods import BASELINE, METHODS
from worm_tune.tune import store
from worm_tune.tune.plan import Plan, SweepSettings, config_overrides, pair_key, trial_label, trial_reports
from worm_tune.tune.sharing import SharedGrid, start_groups
from worm_tune.tune.until import (
    LOOKS_TAG,
    METRIC,
    SEEDS_TAG,
    STATE_FILE,
    STOP_TAG,
    Look,
    Record,
    epoch_bounds,
    look,
    needed_text,
    open_line,
    seeds_needed,
    stop_line,
)
from worm_tune.usage import format_table


def paired_differences(
    ended: Sequence[tuple[TrialConfig, Mapping[str, Any]]], columns: Sequence[str], order: Sequence[int]
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Each variant's differences to EarlyBird in :data:`~worm_tune.tune.until.METRIC` (in the order its
    seeds were added), and the largest difference its search lengths allow. A pair in which either trial
    has no value (it failed or diverged) is left out; a search that hit its budget counts its budget."""
    earlybird = {pair_key(cfg): summary for cfg, summary in ended if cfg.method == BASELINE}
    rank = {seed: i for i, seed in enumerate(order)}
    differences: dict[str, list[float]] = defaultdict(list)
    bounds: dict[str, float] = {}
    for cfg, summary in sorted(ended, key=lambda item: rank[item[0].seed]):
        if not METHODS[cfg.method].truncates:  # EarlyBird itself, or a method without a search
            continue
        variant = trial_label(cfg.to_flat(), columns, seed=False)
        low, high = epoch_bounds(cfg.search.window, cfg.search.max_epochs, cfg.search.rules)
        bounds[variant] = high - low
        differences[variant]  # a variant with no pair yet is still asked about
        partner = earlybird.get(pair_key(cfg), {})
        if summary.get(METRIC) is not None and partner.get(METRIC) is not None:
            differences[variant].append(float(summary[METRIC]) - float(partner[METRIC]))
    return dict(differences), bounds


class SequentialSeeds(Searcher):
    """Ray's searcher of a sequential sweep (see the module's docstring)."""

    def __init__(self, settings: SweepSettings, plan: Plan, columns: Sequence[str]) -> None:
        super().__init__()
        assert plan.until is not None
        self.settings, self.plan, self.rule, self.columns = settings, plan, plan.until, tuple(columns)
        self.grid = SharedGrid([])
        self.configs: dict[str, dict[str, Any]] = {}  # Ray trial id -> its config
        self.ended: dict[str, Mapping[str, Any]] = {}  # config hash -> the trial's summary
        self.record = Record(str(plan.until), plan.max_seeds, plan.batches)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # it optimises nothing

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        config = self.grid.suggest(trial_id)
        if config == Searcher.FINISHED and self._next_batch():
            config = self.grid.suggest(trial_id)
        if isinstance(config, dict):
            self.configs[trial_id] = config
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self.grid.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        self.grid.on_trial_complete(trial_id, result, error)
        config = self.configs.pop(trial_id, None)
        if config is None or error:
            return
        for point, report in trial_reports(config, result or {}, self.settings.groups):
            if report.get("summary"):
                self.ended[self.plan.base.replace(config_overrides(dict(point))).hash()] = report["summary"]

    def _next_batch(self) -> bool:
        """Take a look once a batch has ended; start the next batch's trials unless the rule holds or none
        is left. Whether trials were queued."""
        record = self.record
        if record.stop is not None:
            return False
        if record.started:
            record.looks.append(self._look())
            if record.looks[-1].met or record.started == len(record.batches):
                record.stop = stop_line(record.looks, self.rule, record.cap)
                print(f"sequential: {record.stop}", flush=True)
                self._write()
                return False
            batch = record.batches[record.started]
            print(
                f"sequential: {open_line(record.looks[-1], batch, record.started + 1, len(record.batches))}", flush=True
            )
        batch = set(record.batches[record.started])
        record.started += 1
        points = [p for p in self.plan.points() if p["seed"] in batch]
        if self.settings.share:
            assert self.settings.groups is not None
            starts = start_groups(points, self.plan.base, self.settings.groups)
        else:
            starts = points
        self.grid.queue.extend(starts)
        self._write()
        return bool(starts)

    def _look(self) -> Look:
        ended = [(cfg, self.ended[cfg.hash()]) for cfg in self.plan.configs() if cfg.hash() in self.ended]
        differences, bounds = paired_differences(ended, self.columns, self.record.seeds)
        return look(differences, bounds, self.rule, len(self.record.seeds))

    def _write(self) -> None:
        write_atomic(Path(self.settings.folder) / STATE_FILE, lambda tmp: tmp.write_text(self.record.to_json()))

    # -- saved with the experiment ----------------------------------------------------------------

    def save(self, checkpoint_path: str) -> None:
        state = {"grid": (self.grid.queue, self.grid.known, self.grid.live), "configs": self.configs}
        state |= {"ended": self.ended, "record": self.record}
        write_atomic(Path(checkpoint_path), lambda tmp: tmp.write_bytes(pickle.dumps(state)))

    def restore(self, checkpoint_path: str) -> None:
        state = pickle.loads(Path(checkpoint_path).read_bytes())
        self.grid.queue, self.grid.known, self.grid.live = state["grid"]
        self.configs, self.ended, self.record = state["configs"], state["ended"], state["record"]


def conclude(settings: SweepSettings) -> str:
    """A sequential sweep's end: why it stopped and the paired seeds at each look as tags of the parent run
    (:data:`~worm_tune.tune.until.STOP_TAG` and the tags beside it), which the report
    reads; lines for the terminal: the stop, and each variant's last interval and the seeds it needed."""
    record = Record.load(settings.folder)
    if record is None or not record.looks:
        return "sequential: no look taken"
    looks = ",".join(str(one.seeds) for one in record.looks)
    tags = {STOP_TAG: record.stop or "not stopped", LOOKS_TAG: looks, SEEDS_TAG: ",".join(map(str, record.seeds))}
    with store.at_store(settings.tracking_uri):
        client = store.client(settings.tracking_uri)
        for key, value in tags.items():
            client.set_tag(settings.parent_run_id, key, value)
    needed = seeds_needed(record.looks)
    rows = [
        [
            variant,
            str(i.n),
            f"{i.mean:+.2f}",
            f"[{i.low:+.2f}, {i.high:+.2f}]",
            needed_text(needed[variant], record.looks[-1].seeds),
        ]
        for variant, i in record.looks[-1].intervals.items()
    ]
    header = ["variant", "pairs", f"{METRIC} diff.", "anytime-valid 95%", "seeds needed"]
    return f"sequential: {record.stop}\n" + format_table(header, rows)
