"""Exact computation sharing: trials that would train the same network train it once.

An EarlyBird trial's training does not read its pruning ratio or its stop threshold: they only
decide what its detector sees and when its search ends. A WORM trial trains as EarlyBird does
until its trigger. So a grid's trials, grouped by their training fields (every field but
:data:`~worm_tune.config.SEARCH_DECISION_FIELDS` and :data:`~worm_tune.config.AFTER_SEARCH_FIELDS`),
follow one trajectory per group until a decision parts them.

A :class:`TrialGroup` trains one :class:`~worm_tune.engine.TrialEngine` (its leader's) and keeps,
for every other member, that member's own search control, records and decided results
(:data:`~worm_tune.metrics.DECIDED`). After
each epoch every member says what its next epoch trains with
(:func:`~worm_tune.ticket.control.next_training`); members that differ from the leader leave, each
set of them forked from the leader's state into a group of its own. A member's records and
summary are, timings aside, exactly what an independent trial of its config produces: the
engine's state is a deterministic function of the training fields and the decisions taken.
(Hippo, VLDB 2022, merges hyper-parameter prefixes known before training; here the branch points
are only known at run time.)
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from worm_tune.config import SEARCH_DECISION_FIELDS, TRAINING_FIELDS, TRUNCATION_FIELDS, TrialConfig
from worm_tune.data import DataBundle
from worm_tune.engine import TrialEngine
from worm_tune.engine.state import forked_state
from worm_tune.metrics import DECIDED
from worm_tune.ticket.control import SearchControl, Truncation, next_training
from worm_tune.ticket.methods import METHODS
from worm_tune.ticket.phases import Phase
from worm_tune.ticket.sites import mask_units


def training_key(cfg: TrialConfig) -> Hashable:
    """The fields a trial's training reads directly, and what its masks are drawn over (a
    transformer's heads or weights, by its ``prune.kind``): trials with equal keys start in one group."""
    fields = tuple(sorted((k, v) for k, v in cfg.to_flat().items() if k in TRAINING_FIELDS))
    return (*fields, ("mask units", mask_units(cfg)))


@dataclass
class Member:
    """A trial riding on its group's network: what it decided, and what it recorded."""

    cfg: TrialConfig
    control: SearchControl
    truncation: Truncation  # as its own truncator would hold it
    phase: Phase  # what its next step is
    results: dict[str, Any]  # its DECIDED results
    history: list[dict[str, Any]] = field(default_factory=list)

    def next_training(self) -> Hashable:
        return next_training(self.cfg, self.phase, self.truncation)

    def state_dict(self) -> dict[str, Any]:
        keep, factor = self.truncation
        return {
            "config": self.cfg.to_dict(),
            "control": self.control.state_dict(),
            "keep": keep,
            "factor": factor,
            "next_step": self.phase.value,
            "results": dict(self.results),
            "history": [dict(m) for m in self.history],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], scores: torch.Tensor, runtime: dict[str, Any]) -> Member:
        """The member ``state`` saved, on a network whose unit scores are ``scores`` now, with the
        ``runtime`` fields of the process it continues in."""
        cfg = TrialConfig.from_dict(state["config"]).replace(runtime)
        control = SearchControl(cfg, scores)
        control.load_state_dict(state["control"])
        truncation, phase = (state["keep"], state["factor"]), Phase(state["next_step"])
        return cls(cfg, control, truncation, phase, dict(state["results"]), [dict(m) for m in state["history"]])

    def observe(self, record: dict[str, Any], scores: torch.Tensor, diverged: bool) -> None:
        """Its decisions after its group's search epoch ``record``, from the network's unit ``scores``."""
        epoch = record["epoch"]
        step = self.control.observe(epoch, scores)
        if step.truncation is not None:
            self.truncation = step.truncation
        obs = step.obs
        self.history.append(record | {"d_max": obs.d_max, "d_avg": obs.d_avg, "mask_converged": obs.converged})
        self.phase = self.control.conclude(step, epoch, record["test_acc"], diverged, self.results)


class TrialGroup:
    """One engine training for several trials: the engine's own (its leader) and its members'."""

    def __init__(self, engine: TrialEngine, members: Iterable[Member] = ()) -> None:
        self.engine = engine
        self.members = list(members)

    @property
    def configs(self) -> list[TrialConfig]:
        return [self.engine.cfg, *(m.cfg for m in self.members)]

    @property
    def done(self) -> bool:
        return self.engine.done

    def state_dict(self) -> dict[str, Any]:
        """The group as a checkpoint: its engine's state and every member's."""
        return {"engine": self.engine.state_dict(), "members": [m.state_dict() for m in self.members]}

    @classmethod
    def from_state(
        cls, state: dict[str, Any], data: DataBundle | None = None, runtime: dict[str, Any] | None = None
    ) -> TrialGroup:
        """The group ``state`` saved; ``runtime``: fields of the process it continues in (threads)."""
        runtime = runtime or {}
        engine = TrialEngine(TrialConfig.from_dict(state["engine"]["config"]).replace(runtime), data)
        engine.load_state_dict(state["engine"])
        scores = engine.sites.scores()
        return cls(engine, [Member.from_state(m, scores, runtime) for m in state["members"]])

    def step(self) -> list[TrialGroup]:
        """One epoch for every trial of the group. Returns the groups that continue: this one and,
        for each set of members whose next training differs from the leader's, a group forked
        from the leader's state (members whose trial ended leave with the leader)."""
        engine = self.engine
        record = engine.step()
        if record["phase"] == Phase.SEARCH:
            scores = engine.sites.scores()
            for member in self.members:
                member.observe(record, scores, engine.results["diverged"])
        else:
            for member in self.members:
                member.history.append(dict(record))
                member.phase = engine.phase
        return [self, *self._split()]

    def summaries(self) -> dict[str, tuple[list[dict[str, Any]], dict[str, Any]]]:
        """Each trial's records and summary by config hash, as an independent trial would give them."""
        out = {self.engine.cfg.hash(): (self.engine.history, self.engine.summary())}
        for member in self.members:
            summary = self.engine.summary() | {"method": member.cfg.method, "config_hash": member.cfg.hash()}
            out[member.cfg.hash()] = (member.history, summary | member.results)
        return out

    def _split(self) -> list[TrialGroup]:
        leader = self.engine.next_training()
        parts: dict[Hashable, list[Member]] = defaultdict(list)
        for member in self.members:
            parts[member.next_training()].append(member)
        self.members = parts.pop(leader, [])
        groups = []
        for first, *rest in parts.values():
            groups.append(TrialGroup(self._fork(first), rest))
        return groups

    def _fork(self, member: Member) -> TrialEngine:
        """An engine for ``member`` that trained what the leader's trained so far, with the member's own
        decisions. Exact since the member agrees with the leader on every training field, and so far on
        every decision (:func:`~worm_tune.engine.state.forked_state`)."""
        m = member
        state = forked_state(self.engine.state_dict(), m.cfg, m.control, m.truncation, m.phase, m.history, m.results)
        twin = TrialEngine(m.cfg, self.engine.data)
        twin.load_state_dict(state)
        return twin


def by_training_key(configs: Iterable[TrialConfig]) -> list[list[TrialConfig]]:
    """The configs in sets of equal :func:`training_key`, in order of first appearance."""
    by_key: dict[Hashable, list[TrialConfig]] = defaultdict(list)
    for cfg in configs:
        by_key[training_key(cfg)].append(cfg)
    return list(by_key.values())


def plan_groups(configs: Iterable[TrialConfig], data: DataBundle | None = None) -> list[TrialGroup]:
    """The groups a set of trials starts in: one per training key and first decision (a trial that
    truncates from its first step, or a dense one, parts from the others before any epoch).
    ``data``: the trials' data, loaded by each set's first engine if not given."""
    groups = []
    for cfgs in by_training_key(configs):
        first = TrialEngine(cfgs[0], data)
        scores, fresh = first.sites.scores(), {k: first.results[k] for k in DECIDED}
        parts: dict[Hashable, list[Member]] = defaultdict(list)
        for member in (_member(cfg, scores, fresh) for cfg in cfgs):
            parts[member.next_training()].append(member)
        for members in parts.values():
            leader = first if members[0].cfg is cfgs[0] else TrialEngine(members[0].cfg, first.data)
            groups.append(TrialGroup(leader, members[1:]))
    return groups


def replay(configs: Iterable[TrialConfig], epoch: int, data: DataBundle | None = None) -> TrialGroup:
    """The group ``configs`` formed after ``epoch`` epochs, recomputed from their start.

    Trials that share a group at some epoch shared one all the way there (groups only split), and
    training is deterministic, so this is the state a shared run forked off at that epoch: what a
    group trial restarts from when the file of that state is lost or damaged. The leader is the
    first config, as in the fork.
    """
    (group, *others) = plan_groups(configs, data)
    while not others and group.engine.global_epoch < epoch and not group.done:
        others = group.step()[1:]
    if others or group.engine.global_epoch != epoch:
        where = f"at epoch {group.engine.global_epoch}"
        raise RuntimeError(
            f"replaying {len(group.configs) + sum(len(o.configs) for o in others)} trials to epoch "
            f"{epoch}: they parted {where}, so they never shared a group there"
        )
    return group


def fork_epoch(cfg: TrialConfig, baseline: TrialConfig, history: Iterable[dict[str, Any]]) -> int:
    """After how many epochs a trial of ``cfg`` parts from the EarlyBird ``baseline`` trial whose
    records are ``history``: the first search epoch after which its truncation factor leaves 1 (its
    schedule replayed on the baseline's ``d_avg``), else the baseline's last search epoch (the two
    trials then train alike to there). 0 where they part before the first epoch: other training
    fields, other search rules, or a schedule that truncates from the start."""
    method = METHODS[cfg.method]
    rules = [k for k in SEARCH_DECISION_FIELDS if k not in TRUNCATION_FIELDS and k != "method"]
    if (
        baseline.method != "earlybird"
        or training_key(cfg) != training_key(baseline)
        or any(cfg.get(k) != baseline.get(k) for k in rules)
        or not method.searches
        or method.schedule(cfg).from_start
    ):
        return 0
    schedule, last = method.schedule(cfg), 0
    for record in history:
        if record["phase"] != Phase.SEARCH:
            break
        last = record["epoch"]
        if schedule.observe(last, record["d_avg"]) != 1.0:
            break
    return last


def fork_from(engine: TrialEngine, cfg: TrialConfig) -> TrialEngine:
    """The engine of a trial of ``cfg`` after the epochs the EarlyBird ``engine`` trained, which the
    trial would have trained alike (up to its :func:`fork_epoch`): the network is the baseline's,
    the decisions the trial's own, as a group member riding on the baseline would hold them. Its
    window is the baseline's (the same ratio, window and rules draw the same masks); its schedule
    is replayed on the baseline's ``d_avg``; its truncation is the newest mask with the factor now."""
    control = SearchControl(cfg, engine.sites.scores())
    control.detector.load_state_dict(engine.control.detector.state_dict())
    for record in engine.history:
        if record["phase"] == Phase.SEARCH:
            control.schedule.observe(record["epoch"], record["d_avg"])
    truncation = (control.mask(engine.sites.scores()), control.schedule.factor) if control.method.truncates else None
    results = {k: engine.results[k] for k in DECIDED} | {"trigger_epoch": control.schedule.trigger_epoch}
    member = Member(cfg, control, truncation or (None, 1.0), engine.phase, results, [dict(r) for r in engine.history])
    return TrialGroup(engine)._fork(member)


def _member(cfg: TrialConfig, scores: torch.Tensor, results: dict[str, Any]) -> Member:
    """A trial before its first epoch, on a network whose initial unit scores are ``scores``."""
    control = SearchControl(cfg, scores)
    return Member(cfg, control, control.first_truncation(scores), control.method.first_phase, dict(results))


@dataclass(frozen=True)
class ComputeSaved:
    """What sharing saved: the training a sweep ran against the sum over its trials (what running
    each alone trains), in epochs, search epochs and training FLOPs."""

    epochs_trained: int
    epochs_of_trials: int
    search_epochs_trained: int
    search_epochs_of_trials: int
    flops_trained: float
    flops_of_trials: float

    #: The parent run's metrics section for these (``sharing/epochs_trained``, ...).
    SECTION: ClassVar[str] = "sharing"

    def metrics(self) -> dict[str, float]:
        return {f"{self.SECTION}/{name}": float(value) for name, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_metrics(cls, logged: dict[str, float]) -> ComputeSaved:
        """Read back from a parent run's metrics (:meth:`metrics`)."""
        return cls(**{f.name: logged[f"{cls.SECTION}/{f.name}"] for f in dataclasses.fields(cls)})

    def line(self) -> str:
        """One line for a terminal: each pair, and how many times fewer."""
        pairs = [
            ("epochs", self.epochs_trained, self.epochs_of_trials),
            ("search epochs", self.search_epochs_trained, self.search_epochs_of_trials),
            ("training FLOPs", self.flops_trained, self.flops_of_trials),
        ]
        parts = [
            f"{_count(done)} {what} for the trials' {_count(summed)} ({_times(summed, done)})"
            for what, done, summed in pairs
        ]
        return "sharing: trained " + "; ".join(parts)


def _count(value: float) -> str:
    return f"{value:.3g}" if value >= 1e6 else f"{value:g}"


def _times(summed: float, done: float) -> str:
    return f"{summed / done:.2f}x fewer" if done else "none trained"


@dataclass
class SharedRun:
    """What a shared run produced: each trial's records and summary, and the training it ran."""

    trials: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]]
    saved: ComputeSaved
    groups_at_start: int
    groups_at_end: int  # more than at the start where decisions parted trials mid-way


def run_shared(configs: Iterable[TrialConfig], data: DataBundle) -> SharedRun:
    """Run every trial to its end, sharing what can be shared (depth first: few engines alive)."""
    active = plan_groups(configs, data)
    at_start, at_end = len(active), 0
    trials: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {}
    trained = searched = 0
    flops = 0.0
    while active:
        group = active.pop()
        if group.done:
            trials |= group.summaries()
            at_end += 1
            continue
        before = group.engine.results["train_flops"]
        trained += 1
        searched += group.engine.phase == Phase.SEARCH
        active += group.step()
        flops += group.engine.results["train_flops"] - before
    saved = ComputeSaved(
        epochs_trained=trained,
        epochs_of_trials=sum(len(history) for history, _ in trials.values()),
        search_epochs_trained=searched,
        search_epochs_of_trials=sum(r["phase"] == Phase.SEARCH for history, _ in trials.values() for r in history),
        flops_trained=flops,
        flops_of_trials=sum(summary["train_flops"] for _, summary in trials.values()),
    )
    return SharedRun(trials, saved, at_start, at_end)
