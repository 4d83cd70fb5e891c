"""The Trainable of a shared sweep's group of trials: one network trained for every member.

Each ``step()`` is one epoch of the group's network, reported for every member exactly as its own
trial would report it; the parts that leave the group are written to the sweep's ``groups/``
folder for the trials :class:`~worm_tune.tune.sharing.SharedGrid` starts from them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import ray

from worm_tune.checkpoints import CheckpointError, load_state
from worm_tune.config import TrialConfig
from worm_tune.faults import maybe_crash
from worm_tune.group import TrialGroup, plan_groups, replay
from worm_tune.ticket.phases import Phase
from worm_tune.tickets import Ticket
from worm_tune.tune.console import no_checkpoint_lines
from worm_tune.tune.plan import CANDIDATE, GROUP_KEY, MEMBERS, config_overrides, group_file, group_points
from worm_tune.tune.prefix import STATES_DIR, BaselineStates
from worm_tune.tune.reports import epoch_result, reported
from worm_tune.tune.sharing import group_id, ray_config, write_group
from worm_tune.tune.trainable import SweepTrainable, check_gpus

logger = logging.getLogger(__name__)


class GroupTrainable(SweepTrainable):
    """Trains one :class:`~worm_tune.group.TrialGroup`; reports every member; writes its splits. (Ray
    restores a saved experiment only with a Trainable of the class name it saved: the name stays.)"""

    def setup(
        self,
        config: dict[str, Any],
        base: dict[str, Any],
        groups: str,
        quiet: bool = False,
        cached_states: int | None = None,
    ) -> None:
        """``cached_states``: in a paired Optuna study (:mod:`~worm_tune.tune.paired_study`), how many states
        each EarlyBird baseline keeps for its candidates (None: a grid)."""
        if quiet:
            no_checkpoint_lines()
        self.base = TrialConfig.from_dict(base)
        self.cached_states = cached_states
        self.folder = Path(groups)
        self.gid, self.from_epoch = config[GROUP_KEY], int(config.get("from_epoch", 0))
        check_gpus(self.base.device)
        self.node_id = ray.get_runtime_context().get_node_id()
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
        runtime = {} if self.base.threads else {"threads": self.cpu_threads()}
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
        # A paired study's baseline keeps its states (:mod:`~worm_tune.tune.prefix`); its candidates start there.
        self.states = self._baseline_states(cfgs, runtime)
        self.keeps = self.states is not None and CANDIDATE not in next(iter(self.points.values()))
        self.earlier = False  # the first report backfills the epochs a fork did not train here
        if self.states is not None and not self.keeps:
            engine, self.replayed, self.flops_at_start = self.states.start(cfgs[0])
            self.group, self.earlier = TrialGroup(engine), True
            self.searched = self.replayed
        elif "group" in state:
            self.group = TrialGroup.from_state(state["group"], runtime=runtime)
            self.flops_at_start = self.group.engine.results["train_flops"]
        elif self.from_epoch:
            self.group = replay(cfgs, self.from_epoch)
            self.replayed = self.from_epoch
            self.searched = sum(r["phase"] == Phase.SEARCH for r in self.group.engine.history)
            self.flops_at_start = 0.0  # the replayed epochs were trained (again) by this trial
        else:
            self.group, *self._pending = plan_groups(cfgs)
            self.flops_at_start = self.group.engine.results["train_flops"]

    def _baseline_states(self, cfgs: list[TrialConfig], runtime: dict[str, Any]) -> BaselineStates | None:
        """In a paired study, the states of the seed's EarlyBird baseline (a study's trial is a group of one:
        the baseline, or a candidate on that seed); None in a grid."""
        if self.cached_states is None:
            return None
        baseline = self.base.replace({"method": "earlybird", "seed": cfgs[0].seed, **runtime}).validate()
        return BaselineStates(self.folder.parent / STATES_DIR, baseline, self.cached_states)

    def step(self) -> dict[str, Any]:
        """One epoch of the group's network. The report holds every member that trained in it,
        those that part from the group after it included (marked ``moved_to`` their new group)."""
        engine = self.group.engine
        searching = engine.phase == Phase.SEARCH
        parts, pending = self.group.step()[1:], self._pending
        self._pending = []
        if self.states is not None and self.keeps:
            self.states.keep(engine)
            if engine.done:
                self.states.finish(engine)
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
        if self.earlier:  # a fork's first report: the baseline's epochs it starts after, as its own trial logs them
            self.earlier = False
            ((history, summary),) = self.group.summaries().values()
            rows = [epoch_result(r, summary, reported(summary["method"])) for r in history[:-1]]
            members[0]["earlier"] = tuple(r | {"training_iteration": i} for i, r in enumerate(rows, 1))
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
            **self.whereabouts(),
            "done": self.group.done,
        }
        return self.with_notice(result)

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
            "search_epochs_run": sum(r["phase"] == Phase.SEARCH for r in history),
        }

    def _write(self, part: TrialGroup) -> dict[str, Any]:
        """Save a group that parted from this one, for the trial the searcher starts from it."""
        hashes, epoch = [cfg.hash() for cfg in part.configs], part.engine.global_epoch
        gid = group_id(hashes, epoch)
        write_group(self.folder, gid, {"group": part.state_dict(), "points": {h: self.points[h] for h in hashes}})
        return ray_config(gid, len(hashes), epoch)

    def state(self) -> dict[str, Any]:
        return {
            "group": self.group.state_dict(),
            "points": {cfg.hash(): self.points[cfg.hash()] for cfg in self.group.configs},
            "searched": self.searched,
            "flops_at_start": self.flops_at_start,
            "replayed": self.replayed,
        }

    def ticket(self) -> Ticket | None:
        return self.group.engine.ticket()  # every member's: members that prune differently part first

    def load(self, state: dict[str, Any]) -> None:
        runtime = {"threads": self.group.engine.cfg.threads}
        self.group = TrialGroup.from_state(state["group"], self.group.engine.data, runtime)
        self.points, self._pending, self.earlier = state["points"], [], False
        self.searched, self.flops_at_start = state["searched"], state["flops_at_start"]
        self.replayed = state.get("replayed", 0)

    def restart(self) -> str:
        """From the group's file (:meth:`_start`, whose own notice, if it replayed, is kept in brackets)."""
        self._start()
        return "restarted from the group's start" + (f" ({self._notice})" if self._notice else "")
