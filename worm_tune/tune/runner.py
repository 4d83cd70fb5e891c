"""A sweep through Ray Tune, start to end: the flow, each step in a room of its own.

Check every folder the sweep writes and the cluster (:mod:`~worm_tune.tune.preflight`), take the
sweep's driver lock (:mod:`~worm_tune.tune.driver`), check everything a trial needs (datasets,
weights, the tracking store, the cluster's resources) before any trial starts, open the MLflow
parent run (:mod:`~worm_tune.tune.parent_run`), then run each Ray experiment of the sweep
(:mod:`~worm_tune.tune.experiment`; a resumed one: :mod:`~worm_tune.tune.resume`), its trials in
pairs (each EarlyBird trial, then its WORM partners), and end with a summary
(:mod:`~worm_tune.tune.summary`).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from worm_tune.tune import cluster, paired_study, parent_run, sequential
from worm_tune.tune.callback import FLUSH_S, MlflowCallback
from worm_tune.tune.console import no_snapshot_warning, ray_console
from worm_tune.tune.driver import driving
from worm_tune.tune.experiment import ExperimentSpec, describe
from worm_tune.tune.footprint import Footprint, folder_bytes, num_to_keep, reclaim
from worm_tune.tune.interrupts import cut_short
from worm_tune.tune.plan import Plan, SweepSettings
from worm_tune.tune.preflight import check_paths, preflight
from worm_tune.tune.progress import ProgressPrinter
from worm_tune.tune.resources import check_resources
from worm_tune.tune.resume import can_resume, restored
from worm_tune.tune.store import check_tracking, mark_interrupted
from worm_tune.tune.summary import next_steps, outcomes, resume_command, saving, storage_line, summary_table


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
        no_snapshot_warning()
        cluster.connect(address, target, verbose)
        check_resources(settings)
        if not known:
            check_tracking(settings.tracking_uri)
        parent_run.open_parent_run(settings, experiment, prog, tags, params)
        started()  # from here on the folder names a parent run: it stays, and the run ends FAILED on errors
        groups = settings.groups
        until_end = settings.kind == "final"  # its networks are built from the last checkpoints
        footprint = Footprint(str(settings.folder), groups and str(groups), settings.keep_checkpoints, until_end)
        try:
            settings.save()
            print(
                f"sweep {settings.name}: {plan.trial_count}, Ray storage {settings.folder}, "
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
            specs = describe(settings, plan)
            results, writer = execute(specs, resume, footprint, extra_tags, verbose)
        except KeyboardInterrupt:
            # Ctrl-C, or a storage found full (the footprint stopped the sweep: no trial is lost).
            parent_run.end_stopped(settings, "FAILED" if footprint.full else "KILLED", prog)
            resume_hint = resume_command(prog, settings)
            if footprint.full:
                print(
                    f"{prog}: {footprint.full}; stopped: free space, then resume with: {resume_hint}", file=sys.stderr
                )
                return 1
            print(f"{prog}: interrupted; resume with: {resume_hint}", file=sys.stderr)
            return 130
        except BaseException:
            parent_run.end_failed(settings)
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
        saved = saving(r.metrics for r in results) if settings.share else None
        if saved is not None:
            table += "\n" + saved.line()
        print("\n" + table, flush=True)
        errors = sum(error for _, _, error in outcomes(results, groups))
        if plan.optuna is not None and settings.share:
            study = paired_study.conclude(settings, plan)
            print("\n" + study, flush=True)
            table += "\n\n" + study
        if plan.until is not None:
            stop = sequential.conclude(settings)
            print("\n" + stop, flush=True)
            table += "\n\n" + stop
        parent_run.finish(settings, table, saved, errors)
        if reports is not None and analyse is not None:
            analyse(settings, reports, prog)
        if on_end is not None:
            on_end(settings)
        print("\n" + end_footprint(specs, footprint), flush=True)
        print("\n" + next_steps(settings), flush=True)
    if errors:
        print(
            f"{prog}: {errors} trial(s) failed after {settings.max_failures} retries; see {settings.folder}",
            file=sys.stderr,
        )
        return 1
    return 0


def execute(
    specs: list[ExperimentSpec],
    resume: bool,
    footprint: Footprint,
    extra_tags: dict[str, dict[str, str]] | None = None,
    verbose: bool = False,
) -> tuple[list[Any], MlflowCallback]:
    """Run (or resume) the sweep's Ray experiments; return the ``ray.tune.Result`` of each trial, and
    the MLflow callback that writes them (its writes may still be under way: see ``flush``).

    A sweep saved with one experiment per group of methods resumes so, and stops after one that was
    interrupted, so ``--resume`` picks up from there. ``verbose``: Ray Tune's own console output
    instead of :class:`ProgressPrinter`'s (a resumed sweep keeps its own). ``footprint`` reclaims
    finished trials' files and measures the folder (a resumed sweep's too).
    """
    results: list[Any] = []
    for spec in specs:
        settings = spec.settings
        trainable = spec.trainable(verbose)
        with contextlib.ExitStack() as stack:
            if resume and can_resume(spec):
                tuner, writer = stack.enter_context(restored(spec, trainable, footprint))
            else:
                tuner, writer = new_tuner(spec, trainable, footprint, extra_tags, verbose)
            with ray_console(verbose):
                grid = tuner.fit()
                cut = cut_short(spec, footprint.full)
        results.extend(grid)
        if cut is not None:
            # Marked interrupted once the trials' ends are written (a store away: --resume writes them).
            if writer.flush(FLUSH_S) == 0 and cut:
                mark_interrupted(settings.tracking_uri, settings.parent_run_id, cut)
            raise KeyboardInterrupt
        if spec is not specs[-1]:
            writer.close(FLUSH_S)  # the next experiment's callback writes what is left of the spool
    return results, writer


def new_tuner(
    spec: ExperimentSpec,
    trainable: Any,
    footprint: Footprint,
    extra_tags: dict[str, dict[str, str]] | None,
    verbose: bool,
) -> tuple[tune.Tuner, MlflowCallback]:
    """A Tuner for an experiment that starts now, and its MLflow callback."""
    settings = spec.settings
    assert settings.experiment_id is not None and settings.parent_run_id is not None
    groups = settings.groups and str(settings.groups)
    callback = MlflowCallback(
        settings.tracking_uri,
        settings.experiment_id,
        settings.parent_run_id,
        settings.name,
        spec.plan.base.to_flat(),
        extra_tags,
        spec.columns,
        groups,
        str(settings.folder),
    )
    total = f"≤{spec.num_trials}" if spec.plan.until else spec.num_trials
    printer = [] if verbose else [ProgressPrinter(total, spec.columns, groups=groups)]
    tuner = tune.Tuner(
        trainable,
        param_space=spec.param_space(),
        tune_config=spec.tune_config(),
        run_config=tune.RunConfig(
            name=spec.name,
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
    return tuner, callback


def end_footprint(specs: list[ExperimentSpec], footprint: Footprint) -> str:
    """Reclaim what the finished sweep no longer needs (:func:`~worm_tune.tune.footprint.reclaim`),
    log the folder's size at the end and its peak to the parent run; the line that says both."""
    settings = specs[0].settings
    for spec in specs:
        reclaim(spec.folder, settings.groups, settings.keep_checkpoints)
    final = folder_bytes(settings.folder)
    return storage_line(settings, final, parent_run.log_storage(settings, final, footprint.peak))
