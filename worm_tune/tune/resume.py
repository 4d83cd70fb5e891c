"""``--resume``: a saved Ray experiment's Tuner restored, and pointed at what has changed since.

Ray restores a Tuner as it was pickled: its callbacks (the tracking store's URI included) and the
names of the classes and functions it holds. The sweep's folder (with its SQLite store) may have
moved since (copied off a cluster, or restored from a backup), and the classes may have moved in
the package: both are mended here. Ray's Tuner has no public way to re-specify callbacks on
restore, so this module alone reaches into its private run config (:func:`_run_config`).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from collections.abc import Iterator
from typing import Any

from ray import tune

from worm_tune.legacy import PICKLED_NAMES
from worm_tune.tune.callback import MlflowCallback
from worm_tune.tune.experiment import ExperimentSpec
from worm_tune.tune.footprint import Footprint, repair_experiment_state


def can_resume(spec: ExperimentSpec) -> bool:
    """Whether Ray saved the experiment (an experiment not started yet, e.g. a saved sweep's later one, starts new)."""
    return tune.Tuner.can_restore(str(spec.folder))


@contextlib.contextmanager
def restored(spec: ExperimentSpec, trainable: Any, footprint: Footprint) -> Iterator[tuple[tune.Tuner, MlflowCallback]]:
    """The experiment's Tuner as Ray saved it, its unfinished and errored trials to run again; and its
    MLflow callback, pointed at the sweep's store as ``sweep.json`` names it now (:func:`_retarget`).

    Run the Tuner inside: Ray reads the rest of the saved experiment (its searcher's state, which names
    the trial-name functions too) once it runs, and the names it pickled must be found until then.
    """
    for repaired in repair_experiment_state(spec.settings.folder):
        print(f"{repaired.name} was damaged (a full disk?): resuming from its last good copy", flush=True)
    with pickled_names():
        tuner = tune.Tuner.restore(str(spec.folder), trainable, resume_unfinished=True, resume_errored=True)
        yield tuner, _retarget(tuner, spec, footprint)


def _run_config(tuner: tune.Tuner) -> Any:
    """A Tuner's run config, callbacks included: Ray keeps it on its private ``_local_tuner`` (no public
    accessor, and no public way to re-specify callbacks on restore), which may change with Ray."""
    return tuner._local_tuner.get_run_config()


def _retarget(tuner: tune.Tuner, spec: ExperimentSpec, footprint: Footprint) -> MlflowCallback:
    """Point a restored Tuner's MLflow callback at the sweep's store as ``sweep.json`` names it now, and
    its footprint callback at the folder, with this run's measurements (added after the MLflow
    callback if the sweep was saved before there was one); the MLflow callback."""
    settings = spec.settings
    run_config = _run_config(tuner)
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
    return next(c for c in callbacks if isinstance(c, MlflowCallback))


@contextlib.contextmanager
def pickled_names() -> Iterator[None]:
    """While Ray unpickles a saved Tuner: each class or function it names where it was when the sweep
    was saved is found there (:data:`worm_tune.legacy.PICKLED_NAMES`), then the modules are as before."""
    added_modules: list[str] = []
    added_names: list[tuple[types.ModuleType, str]] = []
    for old, new in PICKLED_NAMES.items():
        old_module, _, old_name = old.partition(":")
        new_module, _, new_name = new.partition(":")
        module = sys.modules.get(old_module)
        if module is None:
            try:
                module = importlib.import_module(old_module)
            except ModuleNotFoundError:  # a module that is gone: stands in while Ray unpickles
                module = sys.modules[old_module] = types.ModuleType(old_module)
                added_modules.append(old_module)
        if not hasattr(module, old_name):
            setattr(module, old_name, getattr(importlib.import_module(new_module), new_name))
            added_names.append((module, old_name))
    try:
        yield
    finally:
        for module, name in added_names:
            delattr(module, name)
        for name in added_modules:
            sys.modules.pop(name, None)
