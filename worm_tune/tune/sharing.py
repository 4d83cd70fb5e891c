"""Shared sweeps in Ray Tune: a Ray trial per group of trials, forked when decisions part them.

:mod:`worm_tune.group` trains each distinct trajectory of a grid once. Here a group is a Ray
trial (:class:`GroupTrainable`): each ``step()`` is one epoch of the group's network and one
report, holding every member's record and summary exactly as its own trial would report them.
When members' decisions part, the trainable writes each new group's state to the sweep's
``groups/`` folder and names it in its report; :class:`SharedGrid`, the experiment's searcher,
turns each name into a new Ray trial that starts from that file. So Ray schedules, retries and
resumes groups as it does any trial (``--max-concurrent``, fractional GPUs, ``--address``
clusters: the sweep's storage is shared by its nodes, as Ray's checkpoints need), and the
searcher's queue is saved with the experiment.

Splits are named by their members and epoch, so a group retried from an earlier checkpoint
reports the same splits again and the searcher starts each once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pickle
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ray
from ray.tune.search import Searcher

from worm_tune.checkpoints import CheckpointError, load_state, save_state, write_atomic
from worm_tune.config import TrialConfig
from worm_tune.engine import SEARCH
from worm_tune.faults import maybe_crash
from worm_tune.group import Saving, TrialGroup, by_training_key, plan_groups, replay
from worm_tune.tune.plan import GROUP_KEY, MEMBERS, config_overrides, group_file, group_points, staying
from worm_tune.tune.trainables import (
    CHECKPOINT_FILE,
    RAY_STORAGE_LOGGER,
    RestartsWhenLost,
    check_gpus,
    epoch_result,
    gpu_ids,
    reported,
    save_checkpoint_files,
    storage_folder,
)

logger = logging.getLogger(__name__)


def group_id(hashes: Iterable[str], epoch: int) -> str:
    """A group's name: its members' config hashes and the epoch it starts after."""
    blob = ",".join(sorted(hashes)) + f"@{epoch}"
    return f"g{epoch:03d}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def start_groups(points: Sequence[dict[str, Any]], base: TrialConfig, folder: Path) -> list[dict[str, Any]]:
    """Write one start file per set of trials with equal training fields; their Ray configs.

    ``points`` are the trials' Ray configs as an unshared sweep has them (``trial`` and the
    overrides): each member's run is named and tagged from its point.
    """
    configs = [base.replace(config_overrides(point)) for point in points]
    point_of = {cfg.hash(): point for cfg, point in zip(configs, points, strict=True)}
    starts = []
    folder.mkdir(parents=True, exist_ok=True)
    for group in by_training_key(configs):
        members = {cfg.hash(): point_of[cfg.hash()] for cfg in group}
        gid = group_id(members, 0)
        if not group_file(folder, gid).exists():
            _write_group(folder, gid, {"points": members})
        starts.append(ray_config(gid, len(members), 0))
    return starts


def ray_config(gid: str, size: int, epoch: int) -> dict[str, Any]:
    """A group trial's Ray config: what Ray's table shows of it."""
    return {GROUP_KEY: gid, "trials": size, "from_epoch": epoch}


def _write_group(folder: Path, gid: str, state: dict[str, Any]) -> None:
    """A group's file, and its members' Ray configs alone as JSON (for readers without torch)."""
    write_atomic(group_file(folder, gid, ".json"), lambda tmp: tmp.write_text(json.dumps(state["points"])))
    save_state(state, group_file(folder, gid))


class GroupTrainable(RestartsWhenLost):
    """Trains one :class:`~worm_tune.group.TrialGroup`; reports every member; writes its splits."""

    def setup(self, config: dict[str, Any], base: dict[str, Any], groups: str, quiet: bool = False) -> None:
        if quiet:
            logging.getLogger(RAY_STORAGE_LOGGER).setLevel(logging.WARNING)
        self.base = TrialConfig.from_dict(base)
        self.folder = Path(groups)
        self.gid, self.from_epoch = config[GROUP_KEY], int(config.get("from_epoch", 0))
        check_gpus(self.base.device)
        self.node_id = ray.get_runtime_context().get_node_id()
        self._notice: str | None = None
        self._checkpoint_size: int | None = None
        self._start()

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Run the next group in this process (Ray's ``reuse_actors``): no new worker to start."""
        self.gid, self.from_epoch = new_config[GROUP_KEY], int(new_config.get("from_epoch", 0))
        self._checkpoint_size = None
        self._start()
        return True

    def _start(self) -> None:
        """The group as its file has it: a saved group, or the trials of a start file (which may
        part before their first epoch: those parts are this trial's first splits).

        A part's file is deleted once its trial has a checkpoint (see
        :class:`~worm_tune.tune.footprint.Footprint`). Where it is missing or damaged, the group
        is recomputed from its members' configs (:func:`~worm_tune.group.replay`): the same state.
        """
        cpus = self.trial_resources.required_resources.get("CPU", 1) if self.trial_resources else 1
        runtime = {} if self.base.threads else {"threads": max(1, math.floor(cpus))}
        self._pending: list[TrialGroup] = []
        self.searched, self.replayed = 0, 0  # search epochs this trial trained; epochs it trained again
        try:
            state = load_state(group_file(self.folder, self.gid))
        except CheckpointError as exc:
            state = {"points": group_points(self.folder, self.gid)}
            if self.from_epoch:
                self._notice = (
                    f"group file {self.gid}.pt: {exc.reason}; replayed its {self.from_epoch} epochs from the start"
                )
                logger.warning("%s: %s", self.trial_name, self._notice)
        self.points: dict[str, dict[str, Any]] = state["points"]
        cfgs = [self.base.replace(config_overrides(p) | runtime).validate() for p in self.points.values()]
        if "group" in state:
            self.group = TrialGroup.from_state(state["group"], runtime=runtime)
            self.flops_at_start = self.group.engine.results["train_flops"]
        elif self.from_epoch:
            self.group = replay(cfgs, self.from_epoch)
            self.replayed = self.from_epoch
            self.searched = sum(r["phase"] == SEARCH for r in self.group.engine.history)
            self.flops_at_start = 0.0  # the replayed epochs were trained (again) by this trial
        else:
            self.group, *self._pending = plan_groups(cfgs)
            self.flops_at_start = self.group.engine.results["train_flops"]

    def step(self) -> dict[str, Any]:
        """One epoch of the group's network. The report holds every member that trained in it,
        those that part from the group after it included (marked ``moved_to`` their new group)."""
        engine = self.group.engine
        searching = engine.next_step == SEARCH
        parts, pending = self.group.step()[1:], self._pending
        self._pending = []
        maybe_crash(engine.cfg.crash_at_epoch, engine.global_epoch, self.logdir)
        self.searched += searching
        members = [self._member(h, *report) for h, report in self.group.summaries().items()]
        splits = []
        for part in [*pending, *parts]:
            split = self._write(part)
            splits.append(split)
            if part in parts:  # it trained this epoch here: its members report it from here
                moved = {"moved_to": split[GROUP_KEY]}
                members += [self._member(h, *report) | moved for h, report in part.summaries().items()]
        record = engine.history[-1]
        result = {
            "phase": record["phase"],
            "epoch": record["epoch"],
            "d_max": record.get("d_max"),
            "trials": len(self.group.configs),
            # Tuples: Ray's TensorBoard logger would try (and fail, with a warning) to log lists.
            MEMBERS: tuple(members),
            "splits": tuple(splits),
            "search_epochs_trained": self.searched,
            "epochs_replayed": self.replayed,
            "flops_trained": engine.results["train_flops"] - self.flops_at_start,
            "node_id": self.node_id,
            "gpu_ids": gpu_ids(),
            "pid": os.getpid(),
            "done": self.group.done,
        }
        if self._notice is not None:
            result["notice"], self._notice = self._notice, None
        return result

    def _member(self, chash: str, history: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, Any]:
        """A member's report: what its own trial would report this epoch (its Ray config, its
        epoch as ``training_iteration``), and how many of its epochs were search epochs."""
        method = summary["method"]
        return {
            **epoch_result(history[-1], summary, reported(method)),
            "point": self.points[chash],
            "config_hash": chash,
            "method": method,
            "training_iteration": len(history),
            "search_epochs_run": sum(r["phase"] == SEARCH for r in history),
        }

    def _write(self, part: TrialGroup) -> dict[str, Any]:
        """Save a group that parted from this one, for the trial the searcher starts from it."""
        hashes, epoch = [cfg.hash() for cfg in part.configs], part.engine.global_epoch
        gid = group_id(hashes, epoch)
        _write_group(self.folder, gid, {"group": part.state_dict(), "points": {h: self.points[h] for h in hashes}})
        return ray_config(gid, len(hashes), epoch)

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        state = {
            "group": self.group.state_dict(),
            "points": {cfg.hash(): self.points[cfg.hash()] for cfg in self.group.configs},
            "searched": self.searched,
            "flops_at_start": self.flops_at_start,
            "replayed": self.replayed,
        }
        ticket = self.group.engine.ticket()  # every member's: members that prune differently part first
        size, storage = self._checkpoint_size, storage_folder(self)
        self._checkpoint_size = save_checkpoint_files(checkpoint_dir, state, ticket, size, storage)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        """Resume from ``engine.pt``; a damaged one restarts the group from its file."""
        try:
            state = load_state(Path(checkpoint_dir) / CHECKPOINT_FILE)
        except CheckpointError as exc:
            epoch = f" of epoch {self._iteration}" if self._iteration else ""
            damaged = f"checkpoint {CHECKPOINT_FILE}{epoch} was damaged ({exc.reason})"
            self._start()
            self._notice = f"{damaged}; restarted from the group's start" + (
                f" ({self._notice})" if self._notice else ""
            )
            logger.warning("%s: %s", self.trial_name, self._notice)
            self._iteration, self._time_total = 0, 0.0
            self._timesteps_total = self._episodes_total = None
            return
        runtime = {"threads": self.group.engine.cfg.threads}
        self.group = TrialGroup.from_state(state["group"], self.group.engine.data, runtime)
        self.points, self._pending = state["points"], []
        self.searched, self.flops_at_start = state["searched"], state["flops_at_start"]
        self.replayed = state.get("replayed", 0)


class SharedGrid(Searcher):
    """The searcher of a shared sweep: the start groups, each split started once, as soon as reported.

    Returns None while nothing is queued but groups still run (Ray asks again later), and
    ``FINISHED`` once every group has ended with nothing left to start.
    """

    def __init__(self, starts: Sequence[dict[str, Any]]) -> None:
        super().__init__()
        self.queue = [dict(s) for s in starts]
        self.known = {s[GROUP_KEY] for s in starts}
        self.live: set[str] = set()

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # it optimises nothing

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.queue:
            self.live.add(trial_id)
            return self.queue.pop(0)
        return None if self.live else Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self._queue(result.get("splits"))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        self._queue((result or {}).get("splits"))
        self.live.discard(trial_id)

    def _queue(self, splits: Iterable[dict[str, Any]] | None) -> None:
        """Queue a group's new parts ahead of the groups not yet started: trials that part then
        run side by side (their wall times comparable), and seeds finish one after another."""
        new = []
        for split in splits or ():
            if split[GROUP_KEY] not in self.known:
                self.known.add(split[GROUP_KEY])
                new.append(dict(split))
        self.queue[:0] = new

    def save(self, checkpoint_path: str) -> None:
        state = {"queue": self.queue, "known": self.known, "live": self.live}
        write_atomic(Path(checkpoint_path), lambda tmp: tmp.write_bytes(pickle.dumps(state)))

    def restore(self, checkpoint_path: str) -> None:
        state = pickle.loads(Path(checkpoint_path).read_bytes())
        self.queue, self.known, self.live = state["queue"], state["known"], state["live"]


def saving(last_results: Iterable[Mapping[str, Any]]) -> Saving:
    """What a shared sweep trained against the sum over its trials, from each group's last result."""
    groups = [r for r in last_results if r and MEMBERS in r]
    members = [m for r in groups for m in staying(r)]
    return Saving(
        epochs_trained=sum(int(r["training_iteration"]) + int(r.get("epochs_replayed", 0)) for r in groups),
        epochs_of_trials=sum(int(m["training_iteration"]) for m in members),
        search_epochs_trained=sum(int(r["search_epochs_trained"]) for r in groups),
        search_epochs_of_trials=sum(int(m["search_epochs_run"]) for m in members),
        flops_trained=sum(float(r["flops_trained"]) for r in groups),
        flops_of_trials=sum(float(m["summary"]["train_flops"]) for m in members),
    )
