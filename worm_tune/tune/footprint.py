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
import shutil
import time
from pathlib import Path
from typing import Any

from ray import tune

from worm_tune.tune.plan import GROUP_KEY, TRIAL_STATES_FILE, group_file

#: The parent run's metrics section for the sweep folder's size.
SECTION = "storage"
#: Seconds between two measurements on results (a checkpoint is always measured: the peak is then).
EVERY_S = 2.0


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
    ``none``), read from the trial states file, and every group's state file."""
    if keep == "none" and (experiment / TRIAL_STATES_FILE).exists():
        states = json.loads((experiment / TRIAL_STATES_FILE).read_text())
        for trial_id, status in states.items():
            if status == "TERMINATED":
                for trial_dir in experiment.glob(f"*-{trial_id}"):
                    remove_checkpoints(trial_dir)
    if groups is not None:
        for state in groups.glob("g*.pt"):
            state.unlink(missing_ok=True)


class Footprint(tune.Callback):
    """Deletes what finished trials no longer need, as the sweep goes, and measures the sweep folder.

    ``until_end``: keep the last checkpoints until :func:`reclaim` (``final`` builds each network
    from its trial's last checkpoint after the sweep).
    """

    def __init__(self, folder: str, groups: str | None, keep: str, until_end: bool = False) -> None:
        self.folder, self.groups, self.keep, self.until_end = folder, groups, keep, until_end
        self.peak = 0
        self._measured: float | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_measured": None}

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

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        # Measured first: Ray deletes the trial's previous checkpoint only after this hook.
        self.measure(force=True)
        if self.groups is not None and GROUP_KEY in (trial.config or {}):
            remove_part(self.groups, trial.config[GROUP_KEY])

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # A trial an interrupt stopped also completes; only one that ran to its end is finished.
        finished = bool((trial.last_result or {}).get("done"))
        if self.keep == "none" and finished and not self.until_end and trial.path:
            remove_checkpoints(trial.path)
