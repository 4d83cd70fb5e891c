"""A sweep through Ray Tune: checks, the driver lock, one Tuner for every trial, the summary.

The flow: check every folder the sweep writes and the cluster, take the sweep's driver lock,
check everything a trial needs (configs, datasets, weights, the tracking store, the cluster's
resources) before any trial starts, then run one Ray experiment under one MLflow parent run, its
trials in pairs (each EarlyBird trial, then its WORM partners), and print a summary table.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import math
import os
import shutil
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune import ExperimentAnalysis
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from worm_tune.checkpoints import CheckpointError, write_atomic
from worm_tune.config import TrialConfig
from worm_tune.data import DataBundle, load_data
from worm_tune.locks import DriverLock, LockHeld
from worm_tune.models import build_model
from worm_tune.paths import check_writable
from worm_tune.tune import cluster, store
from worm_tune.tune.callback import FLUSH_S, MlflowCallback
from worm_tune.tune.footprint import SECTION as FOOTPRINT_SECTION
from worm_tune.tune.footprint import Footprint, folder_bytes, num_to_keep, reclaim, repair_experiment_state
from worm_tune.tune.plan import (
    EXPERIMENT,
    GROUP_KEY,
    GROUPS_DIR,
    SETTINGS_FILE,
    TRIAL_STATES_FILE,
    Plan,
    SweepSettings,
    _points,
    cell,
    config_overrides,
    label_columns,
    trial_label,
    trial_reports,
)
from worm_tune.tune.progress import ProgressPrinter
from worm_tune.tune.sharing import GroupTrainable, SharedGrid, saving, start_groups
from worm_tune.tune.spaces import load_space
from worm_tune.tune.store import check_tracking, mark_interrupted, trial_status
from worm_tune.tune.trainables import TRAINABLES
from worm_tune.usage import UsageError, format_table


def preflight(plan: Plan) -> None:
    """Load each dataset and build each model once, so a missing one fails before any trial."""
    bundles: dict[Any, DataBundle] = {}
    models = set()
    for cfg in plan.configs():
        data_key = (cfg.data, cfg.model.checkpoint)  # text is tokenised by the checkpoint's tokenizer
        if data_key not in bundles:
            bundles[data_key] = load_data(cfg.data, cfg.model.checkpoint)
        bundle = bundles[data_key]
        if (cfg.model, data_key) not in models:
            models.add((cfg.model, data_key))
            build_model(cfg.model, bundle.num_classes, bundle.input_shape, bundle.vocab_size)


def connect_ray(address: str | None, target: str | None, verbose: bool = False) -> None:
    # One checkpoint kept per trial forces an experiment snapshot per checkpoint: wanted, not a warning.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    cluster.connect(address, target, verbose)


def _per_trial(settings: SweepSettings) -> tuple[tuple[str, float, str], ...]:
    """Each Ray resource a trial asks for: its name, the amount and the flag that sets it."""
    return (("CPU", settings.cpus_per_trial, "--cpus-per-trial"), ("GPU", settings.gpus_per_trial, "--gpus-per-trial"))


def check_resources(settings: SweepSettings) -> None:

    have = ray.cluster_resources()
    for key, per_trial, flag in _per_trial(settings):
        if per_trial > 0 and have.get(key, 0) < per_trial:
            raise UsageError(f"{flag} {per_trial:g} is more than the cluster has ({have.get(key, 0):g} {key})")


def slots(settings: SweepSettings) -> int:
    """How many trials the cluster can run at once (as it is now: an autoscaling cluster that grows
    later needs ``--max-concurrent``)."""
    have = ray.cluster_resources()
    fits = [have.get(key, 0) / per_trial for key, per_trial, _ in _per_trial(settings) if per_trial > 0]
    return max(1, math.floor(min(fits, default=1)))


def execute(
    settings: SweepSettings,
    plan: Plan,
    resume: bool,
    footprint: Footprint,
    extra_tags: dict[str, dict[str, str]] | None = None,
    verbose: bool = False,
) -> tuple[list[Any], MlflowCallback]:
    """Run (or resume) the sweep's Ray experiment; return the ``ray.tune.Result`` of each trial, and
    the MLflow callback that writes them (its writes may still be under way: see ``flush``).

    A sweep saved before :data:`EXPERIMENT` existed resumes as it began, one experiment per family,
    and stops after one that was interrupted, so ``--resume`` picks up from there. ``verbose``: Ray
    Tune's own console output instead of :class:`ProgressPrinter`'s (a resumed sweep keeps its own).
    ``footprint`` reclaims finished trials' files and measures the folder (a resumed sweep's too).
    """

    assert settings.experiment_id is not None and settings.parent_run_id is not None
    base_flat = plan.base.to_flat()
    resources = {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}
    results: list[Any] = []
    groups = settings.folder / GROUPS_DIR
    names = experiments(settings, plan)
    for experiment in names:
        if settings.share:
            with_params = tune.with_parameters(GroupTrainable, base=base_flat, groups=str(groups), quiet=not verbose)
        else:
            with_params = tune.with_parameters(TRAINABLES[experiment], base=base_flat, quiet=not verbose)
        trainable = tune.with_resources(with_params, resources)
        path = settings.folder / experiment
        if resume and tune.Tuner.can_restore(str(path)):
            for repaired in repair_experiment_state(settings.folder):
                print(f"{repaired.name} was damaged (a full disk?): resuming from its last good copy", flush=True)
            with legacy_module_names():
                tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
            _retarget(tuner, settings, footprint)
        else:
            callback = MlflowCallback(
                settings.tracking_uri,
                settings.experiment_id,
                settings.parent_run_id,
                settings.name,
                base_flat,
                extra_tags,
                label_columns(plan),
                str(groups) if settings.share else None,
                str(settings.folder),
            )
            total = len(plan.configs()) if settings.share else _num_samples(plan, experiment)
            groups_arg = str(groups) if settings.share else None
            printer = [] if verbose else [ProgressPrinter(total, label_columns(plan), groups=groups_arg)]
            tuner = tune.Tuner(
                trainable,
                param_space={} if settings.share else _param_space(plan, experiment),  # groups: SharedGrid's
                tune_config=_tune_config(settings, plan, experiment),
                run_config=tune.RunConfig(
                    name=experiment,
                    storage_path=str(settings.folder),
                    # The footprint after MLflow: a finished trial's files go once its ticket is read for MLflow.
                    callbacks=[callback, footprint, *printer],
                    failure_config=tune.FailureConfig(max_failures=settings.max_failures),
                    checkpoint_config=tune.CheckpointConfig(
                        num_to_keep=num_to_keep(settings.keep_checkpoints), checkpoint_frequency=1
                    ),
                    verbose=1 if verbose else 0,
                ),
            )
        shared = {cfg.hash() for cfg in plan.configs()} if settings.share else None
        with _ray_console(verbose):
            grid = tuner.fit()
            try:
                cut_short = _cut_short(path, _num_samples(plan, experiment), plan.base, shared, groups)
            except (OSError, ValueError, CheckpointError):  # Ray's last snapshot, cut short by a full disk
                if footprint.full is None:
                    raise
                cut_short = set()
        results.extend(grid)
        writer = _mlflow_callback(tuner)
        if cut_short is not None:
            # Marked interrupted once the trials' ends are written (a store away: --resume writes them).
            if writer.flush(FLUSH_S) == 0 and cut_short:
                mark_interrupted(settings.tracking_uri, settings.parent_run_id, cut_short)
            raise KeyboardInterrupt
        if experiment != names[-1]:
            writer.close(FLUSH_S)  # the next experiment's callback writes what is left of the spool
    return results, writer


def _mlflow_callback(tuner: tune.Tuner) -> MlflowCallback:
    """A Tuner's MLflow callback (a restored one's too: see :func:`_retarget`)."""
    callbacks = tuner._local_tuner.get_run_config().callbacks or []
    return next(c for c in callbacks if isinstance(c, MlflowCallback))


@contextlib.contextmanager
def _ray_console(verbose: bool) -> Iterator[None]:
    """Ray Tune's console output, or none: even at ``verbose=0`` its default output engine prints an
    experiment header and a TensorBoard hint into a temporary session folder; its older engine, at
    ``verbose=0``, prints nothing, and :class:`ProgressPrinter` speaks instead. A failed trial's
    traceback stays in its folder (``error.txt``): the printer's line for it ends with the error."""
    if verbose:
        yield
        return
    saved = os.environ.get(RAY_NEW_OUTPUT)
    os.environ[RAY_NEW_OUTPUT] = "0"
    loggers = [logging.getLogger(name) for name in RAY_FAILURE_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        if saved is None:
            os.environ.pop(RAY_NEW_OUTPUT, None)
        else:
            os.environ[RAY_NEW_OUTPUT] = saved


#: The environment switch between Ray Tune's two console output engines.
RAY_NEW_OUTPUT = "RAY_AIR_NEW_OUTPUT"
#: Where Ray Tune logs a failed trial: its traceback, "Trials did not complete", and the missing results
#: of a trial that failed before its first. The summary and the trial's line say it instead.
RAY_FAILURE_LOGGERS = ("ray.tune.execution.tune_controller", "ray.tune.tune", "ray.tune.analysis.experiment_analysis")


def experiments(settings: SweepSettings, plan: Plan) -> list[str]:
    """The Ray experiments of a sweep: :data:`EXPERIMENT`, or a saved sweep's per-family ones."""
    if any((settings.folder / family).is_dir() for family in TRAINABLES if family != EXPERIMENT):
        return plan.families
    return [EXPERIMENT]


def _retarget(tuner: tune.Tuner, settings: SweepSettings, footprint: Footprint) -> None:
    """Point a restored Tuner's MLflow callback at the sweep's store as ``sweep.json`` names it now,
    and its footprint callback at the folder, with this run's measurements (added after the MLflow
    callback if the sweep was saved before there was one).

    Ray brings the callbacks back as they were pickled, store URI included, and the sweep's folder (with
    its SQLite store) may have moved since: copied off a cluster, or restored from a backup. Ray's
    Tuner has no public way to re-specify callbacks on restore, hence the reach into its run config.
    """
    run_config = tuner._local_tuner.get_run_config()
    callbacks = run_config.callbacks = list(run_config.callbacks or [])
    for i, callback in enumerate(callbacks):
        if isinstance(callback, MlflowCallback):
            callback.uri, callback.exp_id = settings.tracking_uri, settings.experiment_id
            callback.parent_run_id, callback.sweep = settings.parent_run_id, settings.name
            callback.folder = str(settings.folder)  # where its spool is (a sweep saved before had none)
        if isinstance(callback, Footprint):
            callbacks[i] = footprint
    if footprint not in callbacks:
        after = next((i + 1 for i, c in enumerate(callbacks) if isinstance(c, MlflowCallback)), 0)
        callbacks.insert(after, footprint)


#: Where the classes a Tuner pickles (the MLflow callback) lived before the package was split into
#: layers: a sweep saved then names them so, and still resumes.
LEGACY_MODULES = {"worm_tune.tracking": "worm_tune.tune.callback", "worm_tune.trainables": "worm_tune.tune.trainables"}


@contextlib.contextmanager
def legacy_module_names() -> Iterator[None]:
    """Let pickles made by an older layout find their classes, while Ray unpickles a saved Tuner."""
    added = [old for old in LEGACY_MODULES if old not in sys.modules]
    for old in added:
        sys.modules[old] = importlib.import_module(LEGACY_MODULES[old])
    try:
        yield
    finally:
        for old in added:
            sys.modules.pop(old, None)


def _num_samples(plan: Plan, experiment: str) -> int:
    return plan.optuna.num_samples if plan.optuna is not None else len(_points(plan, experiment))


def _cut_short(
    path: Path, num_samples: int, base: TrialConfig, shared: set[str] | None = None, groups: Path | None = None
) -> set[str] | None:
    """The ids of the trials an interrupt cut short, or None if the experiment ran to its end.

    Ray Tune catches Ctrl-C, saves the experiment state, then stops every trial (calling
    ``on_trial_complete``, as for a trial the scheduler stopped) and returns normally. Only the
    saved state tells the two apart: there, cut-short trials are still running or pending, and a
    searcher that was stopped early has made fewer trials than asked for. The states are also
    written to ``TRIAL_STATES_FILE`` in the experiment's folder, for readers without Ray.

    A shared sweep (``shared``: its trials' config hashes, which key their runs; ``groups``: its folder
    of group files) ran to its end when the groups that ended reported every trial's end; those they
    did not were cut short.
    """
    trials = ExperimentAnalysis(str(path)).trials
    states = {t.trial_id: t.status for t in trials}
    write_atomic(path / TRIAL_STATES_FILE, lambda tmp: tmp.write_text(json.dumps(states, indent=2)))
    cut = {t.trial_id for t in trials if t.status not in ("TERMINATED", "ERROR")}
    if shared is not None:
        reports = [trial_reports(t.config, t.last_result or {}, groups) for t in trials if t.trial_id not in cut]
        ended = {base.replace(config_overrides(point)).hash() for ended in reports for point, _ in ended}
        return set(shared) - ended or None
    return cut if cut or len(trials) < num_samples else None


def _param_space(plan: Plan, experiment: str) -> dict[str, Any]:
    """A flat Ray config. Grid: one domain per column of the trials' points (see :func:`_points`).
    Optuna: the method, the seed and the ranges to tune."""

    if plan.optuna is not None:
        space: dict[str, Any] = {"method": plan.optuna.method, "seed": plan.base.seed}
        for p in plan.optuna.params:
            if p.integer:
                low, high = int(p.low), int(p.high) + 1
                space[p.key] = tune.lograndint(low, high) if p.log else tune.randint(low, high)
            else:
                space[p.key] = tune.loguniform(p.low, p.high) if p.log else tune.uniform(p.low, p.high)
        return space
    points = _points(plan, experiment)
    keys = list(dict.fromkeys(k for point in points for k in point))
    # The domains only name Ray's table columns: every trial's values come from its point (None where
    # the field does not apply to the trial's method).
    return {k: tune.choice(sorted({p[k] for p in points}, key=str)) for k in keys}


def _tune_config(settings: SweepSettings, plan: Plan, experiment: str) -> Any:

    search_alg: Any = None
    scheduler: Any = None
    if settings.share:
        points = _points(plan, experiment)
        search_alg = SharedGrid(start_groups(points, plan.base, settings.folder / GROUPS_DIR))
    elif plan.optuna is None:
        search_alg = BasicVariantGenerator(
            points_to_evaluate=_points(plan, experiment), max_concurrent=settings.max_concurrent or 0
        )
    else:
        metrics = [o.metric for o in plan.objectives]
        modes = [o.mode for o in plan.objectives]
        search_alg = OptunaSearch(
            metric=metrics if len(metrics) > 1 else metrics[0],
            mode=modes if len(modes) > 1 else modes[0],
            sampler=optuna.samplers.TPESampler(seed=settings.sampler_seed),
            storage=optuna.storages.RDBStorage(f"sqlite:///{settings.folder / 'optuna.db'}"),
            study_name=settings.name,
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
    if settings.share and max_concurrent is None:
        # Tune keeps one trial pending at a time for a searcher of its own unless a limit is set
        # (a two-node cluster then ran one group at a time). With a limit, it takes suggestions
        # until that many are running or pending: as many as the cluster runs, no more, or Tune
        # would hold start groups in its own queue ahead of the parts the searcher starts first.
        max_concurrent = slots(settings)
    return tune.TuneConfig(
        # A shared sweep's groups are at most its trials: each trial leads at most one group.
        num_samples=_num_samples(plan, experiment),
        search_alg=search_alg,
        scheduler=scheduler,
        # The grid's generator enforces the limit itself (Tune ignores this for it, with a warning).
        max_concurrent_trials=max_concurrent if plan.optuna is not None or settings.share else None,
        trial_dirname_creator=trial_dirname,
        trial_name_creator=functools.partial(trial_name, columns=label_columns(plan)),
        reuse_actors=True,
    )


def trial_name(trial: Any, columns: tuple[str, ...]) -> str:
    """Ray's name for a trial: the MLflow run's (see :func:`~worm_tune.tune.plan.trial_label`), or a group's."""
    if GROUP_KEY in trial.config:
        return f"{trial.config[GROUP_KEY]} ({trial.config['trials']} trials)"
    return trial_label(trial.config, columns)


def trial_dirname(trial: Any) -> str:
    return f"{trial.config.get('method', GROUP_KEY)}-{trial.trial_id}"


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


def run_sweep(
    settings: SweepSettings,
    plan: Plan,
    resume: bool,
    address: str | None,
    experiment: str,
    params: dict[str, Any],
    *,
    prog: str,
    tags: dict[str, str] | None = None,
    extra_tags: dict[str, dict[str, str]] | None = None,
    reports: Path | None = None,
    analyse: Callable[[SweepSettings, Path, str], None] | None = None,
    extra_files: dict[str, str] | None = None,
    on_end: Callable[[SweepSettings], None] | None = None,
    verbose: bool = False,
) -> int:
    """Check, lock, connect, open (or reopen) the parent run, execute, summarise, write the report
    into ``reports`` (unless None), call ``on_end`` (``final`` logs its networks from the last
    checkpoints), reclaim and measure the folder, and say what to run next; the exit code.

    Everything that can fail on bad input fails before the parent run exists; anything that fails
    after it leaves it FAILED (or KILLED on Ctrl-C), never RUNNING.
    """

    check_paths(settings, experiment, reports)
    target = cluster.check(address)  # in seconds, before the slower checks
    with driving(settings, resume, extra_files) as started:
        preflight(plan)
        # A refused start leaves no new file at the tracking URI: a new SQLite store is made only
        # once nothing can refuse the start; an unusable one is still found before Ray starts.
        known = check_tracking(settings.tracking_uri, create=False)
        connect_ray(address, target, verbose)
        check_resources(settings)
        if not known:
            check_tracking(settings.tracking_uri)
        if settings.parent_run_id is None:
            settings.experiment_id = store.experiment_id(settings.tracking_uri, experiment)
            about = {**store.provenance(prog, sys.argv[1:]), **_note(settings), **(tags or {})}
            settings.parent_run_id = store.start_parent_run(
                settings.tracking_uri, settings.experiment_id, settings.name, settings.kind, about, params
            )
        else:
            store.client(settings.tracking_uri).update_run(settings.parent_run_id, status="RUNNING")
        started()  # from here on the folder names a parent run: it stays, and the run ends FAILED on errors
        groups = settings.folder / GROUPS_DIR if settings.share else None
        until_end = settings.kind == "final"  # its networks are built from the last checkpoints
        footprint = Footprint(str(settings.folder), groups and str(groups), settings.keep_checkpoints, until_end)
        try:
            settings.save()
            count = len(plan.configs()) if plan.optuna is None else plan.optuna.num_samples
            print(
                f"sweep {settings.name}: {count} trials, Ray storage {settings.folder}, "
                f"MLflow {settings.tracking_uri} (run {settings.parent_run_id})",
                flush=True,
            )
            if (
                settings.kind == "sweep"
                and not settings.share
                and (settings.search, settings.scheduler) != ("grid", "fifo")
            ):
                how = f"{settings.search} search, {settings.scheduler} scheduler"
                print(f"{how}: every trial trains on its own (sharing is for grids without a scheduler)", flush=True)
            results, writer = execute(settings, plan, resume, footprint, extra_tags, verbose)
        except KeyboardInterrupt:
            # Ctrl-C, or a storage found full (the footprint stopped the sweep: no trial is lost).
            try:
                store.end_run(settings.tracking_uri, settings.parent_run_id, "FAILED" if footprint.full else "KILLED")
            except Exception:  # the store is away too: --resume sets the run going again, and ends it
                print(f"{prog}: the MLflow run was not ended: {settings.tracking_uri} is unreachable", file=sys.stderr)
            where = f" --storage {settings.storage}" if Path(settings.storage) != Path("ray_results").resolve() else ""
            resume_hint = f"{prog} {settings.space} --resume --name {settings.name}{where}"
            if footprint.full:
                print(
                    f"{prog}: {footprint.full}; stopped: free space, then resume with: {resume_hint}", file=sys.stderr
                )
                return 1
            print(f"{prog}: interrupted; resume with: {resume_hint}", file=sys.stderr)
            return 130
        except BaseException:
            store.end_run(settings.tracking_uri, settings.parent_run_id, "FAILED")
            raise
        unwritten = writer.flush(FLUSH_S)
        if unwritten:  # the store is away: the summary still, then what --resume will do
            print(
                f"{prog}: {unwritten} MLflow updates not yet written ({settings.tracking_uri} unreachable); "
                f"they are kept in {writer.spool} and written by --resume",
                file=sys.stderr,
            )
            print("\n" + summary_table(results, plan.base, groups), flush=True)
            return 1
        table = summary_table(results, plan.base, groups)
        mlflow_client = store.client(settings.tracking_uri)
        if settings.share:
            saved = saving(r.metrics for r in results)
            store.log_metrics(settings.tracking_uri, settings.parent_run_id, saved.metrics())
            table += "\n" + saved.line()
        print("\n" + table, flush=True)
        with store.at_store(settings.tracking_uri):
            mlflow_client.log_text(settings.parent_run_id, table + "\n", "summary.md")
        errors = sum(error for _, _, error in outcomes(results, groups))
        store.end_run(settings.tracking_uri, settings.parent_run_id, "FAILED" if errors else "FINISHED")
        if reports is not None and analyse is not None:
            analyse(settings, reports, prog)
        if on_end is not None:
            on_end(settings)
        print("\n" + end_footprint(settings, plan, footprint), flush=True)
        print("\n" + next_steps(settings), flush=True)
    if errors:
        print(
            f"{prog}: {errors} trial(s) failed after {settings.max_failures} retries; see {settings.folder}",
            file=sys.stderr,
        )
        return 1
    return 0


def end_footprint(settings: SweepSettings, plan: Plan, footprint: Footprint) -> str:
    """Reclaim what the finished sweep no longer needs (:func:`~worm_tune.tune.footprint.reclaim`),
    log the folder's size at the end and its peak to the parent run; the line that says both."""
    groups = settings.folder / GROUPS_DIR if settings.share else None
    for experiment in experiments(settings, plan):
        reclaim(settings.folder / experiment, groups, settings.keep_checkpoints)
    final = folder_bytes(settings.folder)
    logged = store.client(settings.tracking_uri).get_run(settings.parent_run_id).data.metrics
    peak = max(final, footprint.peak, int(logged.get(f"{FOOTPRINT_SECTION}/bytes_peak", 0)))  # a resumed sweep's too
    sizes = {f"{FOOTPRINT_SECTION}/bytes_final": float(final), f"{FOOTPRINT_SECTION}/bytes_peak": float(peak)}
    store.log_metrics(settings.tracking_uri, settings.parent_run_id, sizes)
    kept = {"none": "no checkpoints", "last": "each trial's last checkpoint", "all": "every checkpoint"}
    return (
        f"storage: {settings.folder} holds {megabytes(final)} ({kept[settings.keep_checkpoints]} kept; "
        f"--keep-checkpoints to keep more), {megabytes(peak)} at its peak"
    )


def megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB" if size >= 1e5 else f"{size / 1e3:,.1f} kB"


def _note(settings: SweepSettings) -> dict[str, str]:
    """A sweep's parent run carries its space's description as the run's note (``mlflow ui`` shows it)."""
    if settings.kind != "sweep":
        return {}
    space = load_space(settings.space, settings.profile)
    return {"mlflow.note.content": space.description} if space.description else {}


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
    storage = "" if Path(settings.storage) == Path("ray_results").resolve() else f" --storage {settings.storage}"
    lines = [
        "next:",
        f"  {ui}",
        f"  python -m analysis {name}{where}   # the report again, e.g. once more trials are in",
    ]
    if settings.kind == "sweep":
        lines.append(f"  python -m worm_tune.final {name}{where}{storage}   # rerun the best configs with new seeds")
    if next(folder.glob(f"{EXPERIMENT}/*/events.out.tfevents.*"), None) is not None:
        lines.append(f"  tensorboard --logdir {folder}")
    return "\n".join(lines)


def check_paths(settings: SweepSettings, experiment: str, reports: Path | None) -> None:
    """Every folder the sweep will write, checked before anything starts: one line naming the flag."""

    check_writable(Path(settings.storage), "--storage")
    if reports is not None:
        check_writable(reports, "--reports")
    db = store.sqlite_path(settings.tracking_uri)
    if db is not None and db.parent.is_dir():
        check_writable(db.parent, "--tracking-uri (the SQLite file's folder)")
        root = store.artifact_root(settings.tracking_uri, experiment)
        if root is not None:
            check_writable(root, "--tracking-uri (its artifact folder)")


@contextlib.contextmanager
def driving(settings: SweepSettings, resume: bool, extra_files: dict[str, str] | None) -> Iterator[Callable[[], None]]:
    """Hold the sweep's driver lock for the whole run; write ``sweep.json`` (and ``extra_files``).

    A second driver of the same sweep is refused at once. A new sweep whose start fails before
    its first trial (call the yielded function once trials begin) leaves no folder behind, so the
    same command can simply be run again.
    """
    folder = settings.folder
    created = [p for p in (folder.parent, folder) if not p.exists()]
    lock = DriverLock(folder)
    try:
        lock.acquire()
    except LockHeld as held:
        raise UsageError(
            f"sweep {settings.name} is being run by {held.holder}; wait for it, or stop it first"
        ) from None
    began = False

    def started() -> None:
        nonlocal began
        began = True

    try:
        if not resume and (folder / SETTINGS_FILE).exists():
            raise UsageError(
                f"sweep {settings.name!r} already exists in {settings.storage}; pass --resume or another --name"
            )
        settings.save()
        for name, text in (extra_files or {}).items():
            (folder / name).write_text(text)
        yield started
    except BaseException:
        if folder in created and not began:  # remove what this start created: its folder, an empty storage
            shutil.rmtree(folder, ignore_errors=True)
            if folder.parent in created:
                with contextlib.suppress(OSError):
                    folder.parent.rmdir()
        raise
    finally:
        lock.release()
