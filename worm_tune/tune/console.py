"""What Ray prints on the console, set in one place: by default a sweep speaks through its own printer.

Ray Tune's console output (an experiment header, a status table every few seconds, a result box
per finished trial, a line per checkpoint, a failed trial's traceback) is for debugging a sweep:
``--verbose`` brings it back. Otherwise :class:`~worm_tune.tune.progress.ProgressPrinter` speaks,
and a failed trial's traceback stays in its folder (``error.txt``): the printer's line for it ends
with the error.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

#: The environment switch between Ray Tune's two console output engines.
RAY_NEW_OUTPUT = "RAY_AIR_NEW_OUTPUT"
#: Where Ray Tune logs a failed trial: its traceback, "Trials did not complete", and the missing results
#: of a trial that failed before its first. The summary and the trial's line say it instead.
RAY_FAILURE_LOGGERS = ("ray.tune.execution.tune_controller", "ray.tune.tune", "ray.tune.analysis.experiment_analysis")
#: The logger Ray Tune reports every saved checkpoint on, at INFO.
RAY_STORAGE_LOGGER = "ray.train._internal.storage"
#: Ray Tune's warning (after this many seconds) that experiment snapshots are frequent.
RAY_SNAPSHOT_WARNING = "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"


def no_snapshot_warning() -> None:
    """In the driver: one checkpoint kept per trial forces an experiment snapshot per checkpoint,
    which is wanted, not a warning."""
    os.environ.setdefault(RAY_SNAPSHOT_WARNING, "0")


def no_checkpoint_lines() -> None:
    """In a trial's process: no "Checkpoint successfully created" line per epoch from Ray's storage layer."""
    logging.getLogger(RAY_STORAGE_LOGGER).setLevel(logging.WARNING)


@contextlib.contextmanager
def ray_console(verbose: bool) -> Iterator[None]:
    """Ray Tune's console output while a Tuner runs, or none: even at ``verbose=0`` its default output
    engine prints an experiment header and a TensorBoard hint into a temporary session folder; its
    older engine, at ``verbose=0``, prints nothing."""
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
