"""The Ray Tune Trainable every sweep trial runs on, and what its checkpoints hold.

One ``step()`` is one epoch and one report. A checkpoint is the state the subclass names (an
engine's, or a group's), so a retried or resumed trial continues bit-exactly. A damaged checkpoint,
or one whose folder is gone, restarts the trial from its start instead of failing every retry: the
numbers are the same (training is deterministic), and the next result says so under ``notice``.
:class:`~worm_tune.tune.trial_trainable.TicketTrainable` trains one trial,
:class:`~worm_tune.tune.group_trainable.GroupTrainable` a group of trials that share training.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from worm_tune.checkpoints import CheckpointError, load_state, require_space, save_state, write_atomic
from worm_tune.tickets import TICKET_FILE, Ticket

CHECKPOINT_FILE = "engine.pt"

logger = logging.getLogger(__name__)


class SweepTrainable(tune.Trainable):
    """The checkpoints and restarts of a sweep's Trainables. A subclass says what its state is
    (:meth:`state`, :meth:`ticket`), how it continues from one (:meth:`load`) and how it starts again
    (:meth:`restart`)."""

    #: Set when a damaged checkpoint restarted the trial; the next result carries it as "notice".
    _notice: str | None = None
    #: Size of the last checkpoint written: the free space the next one needs.
    _checkpoint_size: int | None = None

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds."""
        raise NotImplementedError

    def ticket(self) -> Ticket | None:
        """The ticket a checkpoint carries beside its state, once the trial has pruned."""
        raise NotImplementedError

    def load(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's state."""
        raise NotImplementedError

    def restart(self) -> str:
        """Start again from the start (a checkpoint was damaged); how, for the notice."""
        raise NotImplementedError

    def cpu_threads(self) -> int:
        """As many threads as the CPUs Ray gave the trial, so concurrent trials share the cores."""
        cpus = self.trial_resources.required_resources.get("CPU", 1) if self.trial_resources else 1
        return max(1, math.floor(cpus))

    def whereabouts(self) -> dict[str, Any]:
        """Where the trial runs, for its report: the node, the GPUs Ray gave it, the process."""
        return {"node_id": self.node_id, "gpu_ids": gpu_ids(), "pid": os.getpid()}

    def with_notice(self, result: dict[str, Any]) -> dict[str, Any]:
        """The result, carrying the restart's notice if one is pending (once)."""
        if self._notice is not None:
            result["notice"], self._notice = self._notice, None
        return result

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        # Each Ray checkpoint is a new folder, so the space check needs the last size passed in.
        size, storage = self._checkpoint_size, storage_folder(self)
        self._checkpoint_size = save_checkpoint_files(checkpoint_dir, self.state(), self.ticket(), size, storage)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        """Resume from ``engine.pt``; a damaged one restarts the trial rather than failing every retry."""
        try:
            state = load_state(Path(checkpoint_dir) / CHECKPOINT_FILE)
        except CheckpointError as exc:
            # Trainable.restore has set Ray's counters from the checkpoint's result: the epoch lost.
            epoch = f" of epoch {self._iteration}" if self._iteration else ""
            damaged = f"checkpoint {CHECKPOINT_FILE}{epoch} was damaged ({exc.reason})"
            self._notice = f"{damaged}; {self.restart()}"
            logger.warning("%s: %s", self.trial_name, self._notice)
            # Ray's counters back to the start: they are Trainable's private attributes (Ray has no
            # public way to rewind them), which its next result is numbered from.
            self._iteration, self._time_total = 0, 0.0
            self._timesteps_total = self._episodes_total = None
            return
        self.load(state)

    def restore(self, checkpoint_path: Any) -> None:
        """A checkpoint whose folder is gone (deleted once its trial finished, see
        :mod:`worm_tune.tune.footprint`, and the trial then resumed by a driver killed before Ray saved
        its end) is a damaged checkpoint, not Ray's ``ValueError`` failing every retry."""
        checkpoint = getattr(checkpoint_path, "checkpoint", checkpoint_path)
        path, filesystem = getattr(checkpoint, "path", None), getattr(checkpoint, "filesystem", None)
        if path is not None and getattr(filesystem, "type_name", "local") == "local" and not Path(path).exists():
            self._iteration = getattr(checkpoint_path, "metrics", {}).get("training_iteration", 0)
            self.load_checkpoint(path)
            return
        super().restore(checkpoint_path)


def save_checkpoint_files(
    folder: str, state: dict[str, Any], ticket: Ticket | None, need: int | None, storage: str | None = None
) -> int:
    """A Ray checkpoint's files: the state (``engine.pt``) and, once the trial has pruned, its ticket
    (``ticket.npz``, a few kB, which the driver logs to MLflow without loading the state); the
    state's size, the free space the next checkpoint needs. Ray writes them in a temporary folder and
    copies them to the trial's folder in the sweep's storage (``storage``, when on this machine): the
    space is checked on both, so a full storage is one line before the copy can leave a truncated file."""
    if need and storage is not None and Path(storage).is_absolute():
        require_space(Path(storage) / CHECKPOINT_FILE, need)
    size = save_state(state, Path(folder) / CHECKPOINT_FILE, need=need)
    if ticket is not None:
        blob = ticket.to_bytes()
        write_atomic(Path(folder) / TICKET_FILE, lambda tmp: tmp.write_bytes(blob), need=len(blob))
    return size


def storage_folder(trainable: tune.Trainable) -> str | None:
    """The trial's folder in the sweep's storage, where Ray copies its checkpoints (None outside Tune)."""
    storage = getattr(trainable, "_storage", None)
    return None if storage is None else storage.trial_fs_path


def gpu_ids() -> str:
    """The GPUs Ray gave this trial, as a tag ("" for none): fractional trials share one id."""
    return ",".join(str(i) for i in ray.get_gpu_ids())


def check_gpus(device: str) -> None:
    """A trial Ray gave GPUs to must see one, unless its config asks for the CPU: else one line
    (the engine's ``auto`` would train on the CPU without a word, at a fraction of the speed)."""
    given = gpu_ids()
    if given and device != "cpu" and not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
        raise RuntimeError(
            f"Ray gave this trial GPU {given} (CUDA_VISIBLE_DEVICES={visible}) but torch sees no CUDA device; "
            "run where the GPU is visible, or --set device=cpu to train on the CPU"
        )
