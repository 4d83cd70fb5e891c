"""A sweep's disk footprint: bounded by what runs, not by what has finished.

Ray keeps a checkpoint per trial (a ResNet-18's is about 90 MB: weights and momentum) and a
shared sweep writes a state file per split; kept, they grew a 100-trial study to 16 GB. What a
finished trial needs afterwards is small: its numbers are in MLflow and the trial states file,
its ticket is an MLflow artifact (:mod:`worm_tune.tickets`), and ``--resume`` does not restart
it. So, by default (``--keep-checkpoints none``):

- a trial's checkpoints are deleted when it finishes (after the MLflow callback, which comes
  first in the callback list, has logged it and its ticket);
- a split's file in ``groups/`` is deleted once the trial started from it has a checkpoint of its
  own; its ``.json`` (the members' Ray configs) stays.

Nothing deleted is needed for exact numbers: a trial whose checkpoint or part file is missing
restarts from its group's start, recomputing the same state (:func:`~worm_tune.group.replay`).
``last`` keeps each finished trial's last checkpoint (Ray's own default), ``all`` every epoch's.
:class:`Footprint` also measures the sweep folder while it runs: the peak and the end size go
to the terminal and to the parent run (``storage/bytes_peak``, ``storage/bytes_final``).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

from ray import tune

from worm_tune.checkpoints import CheckpointError, filesystem, is_out_of_space, size_text, write_atomic
from worm_tune.tune.plan import GROUP_KEY, TRIAL_STATES_FILE, group_file
from worm_tune.tune.reports import last_error

#: The parent run's metrics section for the sweep folder's size.
SECTION = "storage"
#: Seconds between two measurements on results (a checkpoint is always measured: the peak is then).
EVERY_S = 2.0
#: Free space kept beyond the running trials' next checkpoints: Ray's experiment state and results.
HEADROOM = 10_000_000
#: Seconds between two copies of Ray's experiment state (see :func:`back_up_experiment_state`).
BACKUP_EVERY_S = 10.0
#: The suffix of a good copy of one of Ray's experiment-state files.
GOOD = ".good"


def _state_files(folder: Path) -> list[Path]:
    """Ray's experiment-state files in a sweep's experiment folders: what ``--resume`` reads first."""
    return [p for pattern in ("*/experiment_state-*.json", "*/searcher-state-*.pkl") for p in folder.glob(pattern)]


def _readable(path: Path) -> bool:
    try:
        if path.suffix == ".json":
            json.loads(path.read_text())
        else:
            pickle.loads(path.read_bytes())
    except Exception:  # truncated or garbled: whatever the parser trips on
        return False
    return True


def back_up_experiment_state(folder: Path) -> None:
    """Keep a good copy beside each of Ray's experiment-state files. Ray overwrites them in place (a
    copy from its staging folder), so a disk that fills during the copy leaves a truncated one, which
    ``--resume`` would fail on; :func:`repair_experiment_state` puts the good copy back."""
    for path in _state_files(folder):
        good = path.with_name(path.name + GOOD)
        if _readable(path):
            with contextlib.suppress(CheckpointError):  # no room for the copy: the last one stays
                write_atomic(good, lambda tmp, src=path: shutil.copyfile(src, tmp), need=path.stat().st_size)


def repair_experiment_state(folder: Path) -> list[Path]:
    """Before ``--resume``: each of Ray's experiment-state files that cannot be read is replaced by its
    last good copy (the trials' checkpoints it names may be gone since: they restart from the start of
    their group, with the same numbers). The files replaced."""
    repaired = []
    for path in _state_files(folder):
        good = path.with_name(path.name + GOOD)
        if not _readable(path) and good.exists():
            os.replace(good, path)
            repaired.append(path)
    return repaired


def folder_bytes(folder: str | Path) -> int:
    """The bytes of the files under ``folder`` (files that vanish while it is walked count as 0)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def num_to_keep(keep: str) -> int | None:
    """Ray's ``CheckpointConfig.num_to_keep`` while a trial runs: its last checkpoint (``all``: every one)."""
    return None if keep == "all" else 1


def remove_checkpoints(trial_dir: str | Path) -> None:
    """Delete a trial's Ray checkpoints (its ``checkpoint_*`` folders); its results stay."""
    for checkpoint in Path(trial_dir).glob("checkpoint_*"):
        shutil.rmtree(checkpoint, ignore_errors=True)


def remove_part(groups: str | Path, gid: str) -> None:
    """Delete a group's state file; its ``.json`` (members' Ray configs) is what a replay starts from."""
    group_file(groups, gid).unlink(missing_ok=True)


def reclaim(experiment: Path, groups: Path | None, keep: str) -> None:
    """At the end of a sweep that ran to its end: the checkpoints of every finished trial (``keep``
    ``none``), read from the trial states file, every group's state file, and the good copies of
    Ray's experiment state (:func:`back_up_experiment_state`)."""
    if keep == "none" and (experiment / TRIAL_STATES_FILE).exists():
        states = json.loads((experiment / TRIAL_STATES_FILE).read_text())
        for trial_id, status in states.items():
            if status == "TERMINATED":
                for trial_dir in experiment.glob(f"*-{trial_id}"):
                    remove_checkpoints(trial_dir)
    if groups is not None:
        for state in groups.glob("g*.pt"):
            state.unlink(missing_ok=True)
    for good in experiment.glob(f"*{GOOD}"):  # a sweep that ended is not resumed from a full disk
        good.unlink(missing_ok=True)


class Footprint(tune.Callback):
    """Deletes what finished trials no longer need, as the sweep goes, measures the sweep folder,
    and stops the sweep before its storage is full.

    ``until_end``: keep the last checkpoints until :func:`reclaim` (``final`` builds each network
    from its trial's last checkpoint after the sweep).

    A full storage stops the sweep as Ctrl-C does (Ray Tune's own stop signal: it saves the
    experiment and every trial stays resumable), and :attr:`full` says why, in one line: before
    each result's checkpoint, when the storage has less free than each running trial's next
    checkpoint; or when a trial failed on a full disk (a write the check could not foresee).
    """

    def __init__(self, folder: str, groups: str | None, keep: str, until_end: bool = False) -> None:
        self.folder, self.groups, self.keep, self.until_end = folder, groups, keep, until_end
        self.peak = 0
        self.checkpoint_size = 0  # the largest checkpoint seen: what the next one needs
        self.full: str | None = None
        self._measured: float | None = None
        self._backed_up: float | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_measured": None, "_backed_up": None, "full": None}

    def measure(self, force: bool = False) -> int | None:
        """The sweep folder's size now (at most every :data:`EVERY_S` unless ``force``), kept as the peak."""
        now = time.monotonic()
        if not force and self._measured is not None and now - self._measured < EVERY_S:
            return None
        self._measured = now
        size = folder_bytes(self.folder)
        self.peak = max(self.peak, size)
        return size

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.measure()
        running = sum(t.status == "RUNNING" for t in trials)
        need = self.checkpoint_size * max(running, 1) + HEADROOM
        free = shutil.disk_usage(self.folder).free
        if self.checkpoint_size and free < need:
            self._stop(
                f"no space left on {filesystem(Path(self.folder))} for the next checkpoints of the {running} "
                f"running trial(s): need about {size_text(need)}, {size_text(free)} free"
            )

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        # Measured first: Ray deletes the trial's previous checkpoint only after this hook.
        self.measure(force=True)
        self.checkpoint_size = max(self.checkpoint_size, folder_bytes(checkpoint.path))
        if self.groups is not None and GROUP_KEY in (trial.config or {}):
            remove_part(self.groups, trial.config[GROUP_KEY])

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._failed(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._failed(trial)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if self._backed_up is None or now - self._backed_up >= BACKUP_EVERY_S:
            self._backed_up = now
            back_up_experiment_state(Path(self.folder))

    def _failed(self, trial: Any) -> None:
        """A trial that failed on a full disk stops the sweep: its retries would fail the same way."""
        error = last_error(trial)  # "worm_tune.checkpoints.CheckpointError: no space left on ..."
        exc_type, _, message = error.partition(": ")
        if is_out_of_space(error):
            self._stop(message if exc_type.endswith(("Error", "Exception")) else error)

    def _stop(self, why: str) -> None:
        if self.full is None:
            self.full = why
            # Ray Tune's stop signal (as Ctrl-C), which it handles while it runs in the main thread.
            handled = hasattr(signal, "SIGUSR1") and signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, None)
            if threading.current_thread() is threading.main_thread() and handled:
                os.kill(os.getpid(), signal.SIGUSR1)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # A trial an interrupt stopped also completes; only one that ran to its end is finished.
        finished = bool((trial.last_result or {}).get("done"))
        if self.keep == "none" and finished and not self.until_end and trial.path:
            remove_checkpoints(trial.path)
