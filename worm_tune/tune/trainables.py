"""Ray Tune Trainables: a thin layer over :class:`~worm_tune.engine.TrialEngine`.

One ``step()`` is one epoch and one report; checkpoints are the engine's state dict, so a
retried or resumed trial continues bit-exactly; a damaged checkpoint restarts the trial from
scratch (same numbers: the engine is deterministic) and its next result says so under
``notice``. :class:`TicketTrainable` runs every method, so a sweep's pairs share one Ray
experiment; :class:`EarlyBirdTrainable` and :class:`WormTrainable` are the per-family forms
that sweeps saved before then ran, kept so those resume. The trial's config holds overrides on
top of the sweep's base config: a trial's Ray config is flat (``{"method": "worm",
"search.ratio": 0.3}``), so Ray's table shows exactly what the sweep varies.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, ClassVar

import ray
import torch
from ray import tune

from worm_tune import metrics
from worm_tune.checkpoints import CheckpointError, load_state, require_space, save_state, write_atomic
from worm_tune.config import TrialConfig
from worm_tune.engine import TrialEngine
from worm_tune.faults import maybe_crash
from worm_tune.ticket.methods import METHODS, methods_of
from worm_tune.tickets import TICKET_FILE, Ticket
from worm_tune.tune.plan import EXPERIMENT, config_overrides

CHECKPOINT_FILE = "engine.pt"
#: The logger Ray Tune reports every saved checkpoint on, at INFO.
RAY_STORAGE_LOGGER = "ray.train._internal.storage"

logger = logging.getLogger(__name__)


def reported(method: str) -> tuple[str, ...]:
    """The per-epoch metrics a method reports: the truncation ones only if it truncates."""
    return metrics.epoch_metrics(truncating=METHODS[method].truncates)


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


def epoch_result(record: dict[str, Any], summary: dict[str, Any], epoch_metrics: tuple[str, ...]) -> dict[str, Any]:
    """One report: where the trial is, the method's per-epoch metrics, and every summary metric as a number
    (NaN while unknown) so schedulers and Optuna can read it; the full summary rides along under "summary"."""
    return {
        "phase": record["phase"],
        "epoch": record["epoch"],
        **{name: record[name] for name in epoch_metrics},
        **{name: _number(summary[name]) for name in metrics.SUMMARY},
        "summary": summary,
    }


class RestartsWhenLost(tune.Trainable):
    """A trainable whose checkpoint folder may be gone (deleted once its trial finished, see
    :mod:`worm_tune.tune.footprint`, and the trial then resumed by a driver killed before Ray saved
    its end): that is a damaged checkpoint (its ``load_checkpoint`` restarts the trial from its
    start, with the same numbers), not Ray's ``ValueError`` failing every retry."""

    def restore(self, checkpoint_path: Any) -> None:
        checkpoint = getattr(checkpoint_path, "checkpoint", checkpoint_path)
        path, filesystem = getattr(checkpoint, "path", None), getattr(checkpoint, "filesystem", None)
        if path is not None and getattr(filesystem, "type_name", "local") == "local" and not Path(path).exists():
            self._iteration = getattr(checkpoint_path, "metrics", {}).get("training_iteration", 0)
            self.load_checkpoint(path)
            return
        super().restore(checkpoint_path)


def storage_folder(trainable: tune.Trainable) -> str | None:
    """The trial's folder in the sweep's storage, where Ray copies its checkpoints (None outside Tune)."""
    storage = getattr(trainable, "_storage", None)
    return None if storage is None else storage.trial_fs_path


def last_error(trial: Any) -> str:
    """The last line of a failed trial's traceback (the exception and its message), from Ray's error file."""
    if getattr(trial, "storage", None) is None:  # a trial never started has no folder
        return ""
    try:
        lines = Path(trial.error_file).read_text().strip().splitlines() if trial.error_file else []
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


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


class TicketTrainable(RestartsWhenLost):
    """Wraps one engine, of any method."""

    METHODS: ClassVar[tuple[str, ...]] = tuple(METHODS)

    #: Set when a damaged checkpoint restarted the trial; the next result carries it as "notice".
    _notice: str | None = None
    #: Size of the last checkpoint written: the free space the next one needs.
    _checkpoint_size: int | None = None

    def setup(self, config: dict[str, Any], base: dict[str, Any] | None = None, quiet: bool = False) -> None:
        """``quiet``: no "Checkpoint successfully created" line per epoch from Ray's storage layer."""
        if quiet:
            logging.getLogger(RAY_STORAGE_LOGGER).setLevel(logging.WARNING)
        self.base = base or {}
        self._build(config)

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Run the next trial in this process (Ray's ``reuse_actors``): no new worker to start."""
        self._build(new_config)
        return True

    def _build(self, config: dict[str, Any]) -> None:
        cfg = TrialConfig.from_dict(self.base).replace(config_overrides(config)).validate()
        if cfg.method not in self.METHODS:
            raise ValueError(f"{type(self).__name__} runs {', '.join(self.METHODS)}, not {cfg.method!r}")
        if not cfg.threads:
            # As many threads as the CPUs Ray gave the trial, so concurrent trials share the cores.
            cpus = self.trial_resources.required_resources.get("CPU", 1) if self.trial_resources else 1
            cfg = cfg.replace({"threads": max(1, math.floor(cpus))})
        check_gpus(cfg.device)
        self.cfg = cfg
        self.engine = TrialEngine(cfg)
        self.node_id = ray.get_runtime_context().get_node_id()

    def step(self) -> dict[str, Any]:
        record = self.engine.step()
        maybe_crash(self.cfg.crash_at_epoch, self.engine.global_epoch, self.logdir)
        result = epoch_result(record, self.engine.summary(), reported(self.cfg.method))
        result.update(
            method=self.cfg.method,
            seed=self.cfg.seed,
            config_hash=self.cfg.hash(),
            node_id=self.node_id,
            gpu_ids=gpu_ids(),
            pid=os.getpid(),
            done=self.engine.done,
        )
        if self._notice is not None:
            result["notice"], self._notice = self._notice, None
        return result

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        # Each Ray checkpoint is a new folder, so the space check needs the last size passed in.
        state, ticket = self.engine.state_dict(), self.engine.ticket()
        size, storage = self._checkpoint_size, storage_folder(self)
        self._checkpoint_size = save_checkpoint_files(checkpoint_dir, state, ticket, size, storage)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        """Resume from ``engine.pt``; a damaged one restarts the trial rather than failing every retry."""
        try:
            state = load_state(Path(checkpoint_dir) / CHECKPOINT_FILE)
        except CheckpointError as exc:
            # Trainable.restore has set Ray's counters from the checkpoint's result: the epoch lost.
            epoch = f" of epoch {self._iteration}" if self._iteration else ""
            self._notice = f"checkpoint {CHECKPOINT_FILE}{epoch} was damaged ({exc.reason}); restarted from scratch"
            logger.warning("%s: %s", self.trial_name, self._notice)
            self.engine = TrialEngine(self.cfg)
            self._iteration, self._time_total = 0, 0.0
            self._timesteps_total = self._episodes_total = None
            return
        self.engine.load_state_dict(state)


class EarlyBirdTrainable(TicketTrainable):
    """EarlyBird ticket search (r = 1), and the dense baseline without a search."""

    METHODS = methods_of("earlybird")


class WormTrainable(TicketTrainable):
    """WORM and its ablations."""

    METHODS = methods_of("worm")


#: The Trainable class of each Ray experiment: the sweep's one, and the per-family ones of older
#: sweeps (``Method.family`` in :data:`worm_tune.ticket.methods.METHODS`).
TRAINABLES: dict[str, type[TicketTrainable]] = {
    EXPERIMENT: TicketTrainable,
    "earlybird": EarlyBirdTrainable,
    "worm": WormTrainable,
}


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)
