"""Shared sweeps in Ray Tune: a Ray trial per group of trials, forked when decisions part them.

:mod:`worm_tune.group` trains each distinct trajectory of a grid once. Here a group is a Ray
trial (:class:`~worm_tune.tune.group_trainable.GroupTrainable`): each ``step()`` is one epoch of
the group's network and one report, holding every member's record and summary exactly as its own
trial would report them. A group starts from a file in the sweep's ``groups/`` folder: the start
groups' files are written before the first trial (:func:`start_groups`); when members' decisions
part, the trainable writes each new group's file and names it in its report, and
:class:`SharedGrid`, the experiment's searcher, turns each name into a new Ray trial that starts
from that file. So Ray schedules, retries and resumes groups as it does any trial
(``--max-concurrent``, fractional GPUs, ``--address`` clusters: the sweep's storage is shared by
its nodes, as Ray's checkpoints need), and the searcher's queue is saved with the experiment.

Splits are named by their members and epoch, so a group retried from an earlier checkpoint
reports the same splits again and the searcher starts each once.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from worm_tune.checkpoints import save_state, write_atomic
from worm_tune.config import TrialConfig
from worm_tune.group import by_training_key
from worm_tune.tune.plan import GROUP_KEY, config_overrides, group_file


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
            write_group(folder, gid, {"points": members})
        starts.append(ray_config(gid, len(members), 0))
    return starts


def ray_config(gid: str, size: int, epoch: int) -> dict[str, Any]:
    """A group trial's Ray config: what Ray's table shows of it."""
    return {GROUP_KEY: gid, "trials": size, "from_epoch": epoch}


def write_group(folder: Path, gid: str, state: dict[str, Any]) -> None:
    """A group's file, and its members' Ray configs alone as JSON (for readers without torch)."""
    write_atomic(group_file(folder, gid, ".json"), lambda tmp: tmp.write_text(json.dumps(state["points"])))
    save_state(state, group_file(folder, gid))


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
