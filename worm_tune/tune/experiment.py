"""Each Ray experiment of a sweep, described once from its plan: what the runner hands on.

A sweep runs one Ray experiment, :data:`~worm_tune.tune.plan.EXPERIMENT` (a sweep saved before it
resumes its own, one per group of methods: :mod:`~worm_tune.tune.legacy_trainables`).
:class:`ExperimentSpec` holds what everything that runs or watches it reads: its trials' Ray
configs, the columns trial names show, how many trials it runs, its Trainable and, for a new
Tuner, its param space and Tune config.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator

from worm_tune.tune.group_trainable import GroupTrainable
from worm_tune.tune.legacy_trainables import TRAINABLES, runs_in, saved_experiments
from worm_tune.tune.paired_study import PairedStudy
from worm_tune.tune.plan import EXPERIMENT, GROUP_KEY, Plan, SweepSettings, label_columns, trial_label
from worm_tune.tune.resources import slots
from worm_tune.tune.sequential import SequentialSeeds
from worm_tune.tune.sharing import SharedGrid, start_groups
from worm_tune.tune.until import Record


@dataclass(frozen=True)
class ExperimentSpec:
    """One Ray experiment of a sweep (``settings``, ``plan``): built by :func:`describe`."""

    name: str
    settings: SweepSettings
    plan: Plan
    #: The grid's trials it runs, as flat Ray configs in run order (:meth:`~worm_tune.tune.plan.Plan.points`);
    #: none for an Optuna search.
    points: tuple[dict[str, Any], ...]
    #: The fields trial names show (:func:`~worm_tune.tune.plan.label_columns`).
    columns: tuple[str, ...]
    #: How many trials it runs: its grid trials, or the Optuna search's samples. (A shared sweep's Ray
    #: trials are groups, at most as many: each trial leads at most one.)
    num_trials: int

    @property
    def folder(self) -> Path:
        """Ray's folder of the experiment."""
        return self.settings.folder / self.name

    @property
    def trial_hashes(self) -> set[str] | None:
        """A shared grid's trials' config hashes, which key their runs (a sequential sweep's: those of the
        batches it has started; None: unshared, keyed by Ray's ids, or an Optuna study, whose trials are
        drawn as it goes)."""
        if not self.settings.share or self.plan.optuna is not None:
            return None
        configs = self.plan.configs()
        if self.plan.until is not None:
            started = set(self.record.seeds) if self.record is not None else set()
            configs = [cfg for cfg in configs if cfg.seed in started]
        return {cfg.hash() for cfg in configs}

    @property
    def record(self) -> Record | None:
        """A sequential sweep's record of its batches and looks, as its searcher last wrote it."""
        return Record.load(self.settings.folder) if self.plan.until is not None else None

    def trainable(self, verbose: bool) -> Any:
        """The Trainable with the sweep's base config and the resources each trial asks for."""
        settings, base, quiet = self.settings, self.plan.base.to_flat(), not verbose
        if settings.share:
            cached = self.plan.optuna.cached_states if self.plan.optuna is not None else None
            with_params = tune.with_parameters(
                GroupTrainable, base=base, groups=str(settings.groups), quiet=quiet, cached_states=cached
            )
        else:
            with_params = tune.with_parameters(TRAINABLES[self.name], base=base, quiet=quiet)
        resources = {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}
        return tune.with_resources(with_params, resources)

    def param_space(self) -> dict[str, Any]:
        """A flat Ray config: one domain per column of the trials' points. A shared sweep's come from its
        searcher (:class:`~worm_tune.tune.sharing.SharedGrid`, :class:`~worm_tune.tune.paired_study.PairedStudy`)."""
        if self.settings.share or self.plan.until is not None:
            return {}
        keys = list(dict.fromkeys(k for point in self.points for k in point))
        # The domains only name Ray's table columns: every trial's values come from its point (None where
        # the field does not apply to the trial's method).
        return {k: tune.choice(sorted({p[k] for p in self.points}, key=str)) for k in keys}

    def tune_config(self) -> tune.TuneConfig:
        """The Tune config of a new Tuner: its searcher (a shared sweep's writes its start groups' files),
        scheduler, limits and trial names."""
        settings, plan = self.settings, self.plan
        search_alg: Any = None
        scheduler: Any = None
        sequential = plan.until is not None
        if sequential:
            search_alg = SequentialSeeds(settings, plan, self.columns)
        elif settings.share and plan.optuna is not None:
            assert settings.groups is not None
            search_alg = PairedStudy(settings, plan, str(settings.groups))
        elif settings.share:
            assert settings.groups is not None
            search_alg = SharedGrid(start_groups(self.points, plan.base, settings.groups))
        else:
            search_alg = BasicVariantGenerator(
                points_to_evaluate=[dict(p) for p in self.points], max_concurrent=settings.max_concurrent or 0
            )
        if settings.scheduler == "asha":
            cfg = plan.configs()[0]
            scheduler = ASHAScheduler(
                time_attr="training_iteration",
                metric="test_acc",
                mode="max",
                max_t=cfg.search.max_epochs + cfg.retrain.max_epochs,
                grace_period=cfg.search.window,
            )
        max_concurrent = settings.max_concurrent
        if (settings.share or sequential) and max_concurrent is None:
            # Tune keeps one trial pending at a time for a searcher of its own unless a limit is set
            # (a two-node cluster then ran one group at a time). With a limit, it takes suggestions
            # until that many are running or pending: as many as the cluster runs, no more, or Tune
            # would hold start groups in its own queue ahead of the parts the searcher starts first.
            max_concurrent = slots(settings)
        return tune.TuneConfig(
            num_samples=self.num_trials,
            search_alg=search_alg,
            scheduler=scheduler,
            # The grid's generator enforces the limit itself (Tune ignores this for it, with a warning).
            max_concurrent_trials=max_concurrent if settings.share or sequential else None,
            trial_dirname_creator=trial_dirname,
            trial_name_creator=functools.partial(trial_name, columns=self.columns),
            reuse_actors=True,
        )


def describe(settings: SweepSettings, plan: Plan) -> list[ExperimentSpec]:
    """The Ray experiments of a sweep, in the order they run."""
    columns = label_columns(plan)
    points = plan.points() if plan.optuna is None else []
    specs = []
    for name in saved_experiments(settings.folder, plan) or [EXPERIMENT]:
        if plan.optuna is not None:
            specs.append(ExperimentSpec(name, settings, plan, (), columns, plan.num_trials))
            continue
        mine = tuple(p for p, cfg in zip(points, plan.configs(), strict=True) if runs_in(name, cfg.method))
        specs.append(ExperimentSpec(name, settings, plan, mine, columns, len(mine)))
    return specs


def trial_name(trial: Any, columns: tuple[str, ...]) -> str:
    """Ray's name for a trial: the MLflow run's (see :func:`~worm_tune.tune.plan.trial_label`), or a group's."""
    if GROUP_KEY in trial.config:
        return f"{trial.config[GROUP_KEY]} ({trial.config['trials']} trials)"
    return trial_label(trial.config, columns)


def trial_dirname(trial: Any) -> str:
    """The folder of a trial in its experiment's: its method (or "group") and Ray's trial id."""
    return f"{trial.config.get('method', GROUP_KEY)}-{trial.trial_id}"
