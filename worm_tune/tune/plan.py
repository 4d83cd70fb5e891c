"""What a sweep runs, without Ray: its saved settings, and its trials as configs.

A sweep's folder (``<storage>/<name>/``) holds ``sweep.json`` (:class:`SweepSettings`, reloaded
by ``--resume``) and, for a ``final`` rerun, ``final.json`` (the chosen configs). A :class:`Plan`
expands a search space into trial configs in the order they run: each EarlyBird trial followed by
the trials paired with it, so a pair's two trials run side by side (or back to back) under the same
machine load. A trial's Ray config is flat and holds only what it sets on top of the sweep's base
config.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worm_tune.config import PAIR_FREE_FIELDS, TrialConfig, field_types
from worm_tune.ticket.methods import applies
from worm_tune.tune.spaces import Objective, OptunaSpec, SweepSpace, load_space
from worm_tune.tune.until import DEFAULT_BATCH, METRIC, Until, seed_batches
from worm_tune.usage import UsageError, format_table

SETTINGS_FILE = "sweep.json"


CHOSEN_FILE = "final.json"
#: In each Ray experiment's folder once it ends: every trial's final Ray state, by trial id.
TRIAL_STATES_FILE = "trial_states.json"
#: The one Ray experiment (and folder) that holds every trial of a sweep. Sweeps saved before it ran one
#: experiment per group of methods (:mod:`worm_tune.tune.legacy_trainables`).
EXPERIMENT = "trials"
#: ``--keep-checkpoints``: what stays of a finished trial's Ray checkpoints (:mod:`worm_tune.tune.footprint`).
KEEP_CHOICES = ("none", "last", "all")
#: A shared sweep's folder (in the sweep's) of the files its group trials start from (:mod:`worm_tune.tune.sharing`).
GROUPS_DIR = "groups"
#: The key of a group trial's Ray config that names its group, and so its file.
GROUP_KEY = "group"


#: The tag and Ray-config key that group a paired Optuna study's runs by candidate: its Optuna trial number.
CANDIDATE = "candidate"
#: The parent run's metrics of an Optuna study's parameter importances: ``importance/<objective>/<param>``.
IMPORTANCE = "importance"
#: A group trial's report: one per member that trained in the epoch, under this key (its own trial's report).
MEMBERS = "members"


def staying(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The members a group trial's result reports as still its own: not those that left at this epoch
    for a group of their own (``moved_to``), whose later epochs and end another group trial reports."""
    return [m for m in result.get(MEMBERS, ()) if not m.get("moved_to")]


def group_file(folder: str | Path, gid: str, suffix: str = ".pt") -> Path:
    """Where group ``gid`` of a shared sweep starts from: its members' Ray configs (``points``, by config
    hash) and, for a group that parted from another, its state; ``.json``: the points alone."""
    return Path(folder) / f"{gid}{suffix}"


def group_points(folder: str | Path, gid: str) -> dict[str, dict[str, Any]]:
    """The members of group ``gid`` as it started: config hash -> Ray config."""
    return json.loads(group_file(folder, gid, ".json").read_text())


def trial_reports(
    config: Mapping[str, Any], last: Mapping[str, Any], groups: str | Path | None
) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """The trials a Ray trial reported on at its end, each as (Ray config, last report): the trial
    itself; or a group trial's members that stayed in it to the end; or, for a group trial that
    ended (failed) before its first report, every member it started with (``groups``: the sweep's
    folder of group files), with no report."""
    if GROUP_KEY not in config:
        return [(config, last)]
    if MEMBERS in last:
        return [(m["point"], m) for m in staying(last)]
    return [] if groups is None else [(point, {}) for point in group_points(groups, config[GROUP_KEY]).values()]


@dataclass
class SweepSettings:
    """Everything that defines a sweep; saved as ``sweep.json`` and reloaded by ``--resume``."""

    space: str
    name: str
    storage: str
    tracking_uri: str
    profile: str = "default"
    sets: dict[str, str] = field(default_factory=dict)
    search: str = "grid"
    num_samples: int | None = None
    #: An Optuna study's paired seeds per candidate (None: the space's ``[optuna] seeds``).
    seeds_per_trial: int | None = None
    objectives: list[str] = field(default_factory=list)
    sampler_seed: int = 0
    scheduler: str = "fifo"
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    max_failures: int = 2
    #: Train each distinct trajectory once (:mod:`worm_tune.tune.sharing`); False for sweeps saved before.
    share: bool = False
    #: What stays of a finished trial's checkpoints (:mod:`worm_tune.tune.footprint`): none, last or all.
    keep_checkpoints: str = "none"
    #: A sequential grid sweep's stopping rule (:class:`~worm_tune.tune.until.Until`; None: the grid as given),
    #: its cap on paired seeds and the seeds added per batch.
    until: str | None = None
    max_seeds: int | None = None
    seed_batch: int | None = None
    kind: str = "sweep"
    experiment_id: str | None = None
    parent_run_id: str | None = None

    @property
    def folder(self) -> Path:
        return Path(self.storage) / self.name

    @property
    def groups(self) -> Path | None:
        """A shared sweep's folder of group files (:mod:`worm_tune.tune.sharing`); None: unshared."""
        return self.folder / GROUPS_DIR if self.share else None

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / SETTINGS_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def load(cls, folder: Path) -> SweepSettings:
        return cls(**json.loads((folder / SETTINGS_FILE).read_text()))


@dataclass
class Plan:
    """What a sweep runs: explicit trials in the order they run, or an Optuna search."""

    base: TrialConfig
    trials: list[TrialConfig] = field(default_factory=list)
    optuna: OptunaSpec | None = None
    objectives: tuple[Objective, ...] = ()
    #: A sequential sweep's rule and its batches of seeds, the first the space's own (:mod:`~worm_tune.tune.until`);
    #: its trials are those of every batch, of which it runs the batches it needs.
    until: Until | None = None
    batches: list[list[int]] = field(default_factory=list)

    @property
    def num_trials(self) -> int:
        """How many trials the sweep runs: its grid's (a sequential one's: at most, every batch run), or an
        Optuna study's (each candidate on its seeds, and an EarlyBird baseline per seed)."""
        if self.optuna is not None:
            return (self.optuna.num_samples + 1) * self.optuna.seeds
        return len(self.trials)

    @property
    def trial_count(self) -> str:
        """``num_trials`` as a person reads it: a sequential sweep's is a cap."""
        return f"{'up to ' if self.until else ''}{self.num_trials} trials"

    def seeds(self) -> list[int]:
        """An Optuna study's paired seeds."""
        return list(range(self.optuna.seeds)) if self.optuna is not None else []

    @property
    def max_seeds(self) -> int:
        """A sequential sweep's cap: the paired seeds of all its batches."""
        return sum(len(b) for b in self.batches)

    def configs(self) -> list[TrialConfig]:
        """Every config a trial may run (for Optuna: the base with the tuned method)."""
        if self.optuna is not None:
            return [self.base.replace({"method": self.optuna.method})]
        return list(self.trials)

    def points(self) -> list[dict[str, Any]]:
        """The grid's trials as flat Ray configs, in run order: ``trial`` (its ``--dry-run`` number),
        then the sweep's columns (None where a field does not apply to the method) and other set fields."""
        configs = self.configs()
        columns = sweep_columns(configs)
        rows = [{"trial": i, **overrides(cfg, self.base, columns)} for i, cfg in enumerate(configs, 1)]
        keys = list(dict.fromkeys(k for row in rows for k in row))
        return [{k: row.get(k) for k in keys} for row in rows]


def make_plan(settings: SweepSettings) -> Plan:
    """Read the space, apply ``--set``, and expand it into trials; every config is validated."""

    space: SweepSpace = load_space(settings.space, settings.profile).pin(settings.sets)
    # Trials run in their own folders: make the data folder absolute (it is not part of the hash).
    base = space.base.replace({"data.data_dir": str(Path(space.base.data.data_dir).resolve())})
    space = dataclasses.replace(space, base=base)
    if settings.search == "optuna":
        if space.optuna is None:
            raise UsageError(f"search space {space.name!r} has no [optuna] table; use --search grid")
        optuna = space.optuna
        if settings.num_samples is not None:
            optuna = dataclasses.replace(optuna, num_samples=settings.num_samples)
        if settings.seeds_per_trial is not None:
            optuna = dataclasses.replace(optuna, seeds=settings.seeds_per_trial)
        objectives = tuple(Objective.parse(o) for o in settings.objectives) or optuna.objectives
        if settings.share:  # (an Optuna sweep saved before paired studies, unshared, tuned its base one seed a trial)
            base = study_setting(space, optuna)
        base.replace({"method": optuna.method}).validate()
        return Plan(base=base, optuna=optuna, objectives=objectives)
    if settings.until is None:
        return grid_plan(space.grid(), base)
    until = Until.parse(settings.until)
    first = list(space.axes.get("seed", [base.seed]))
    cap = settings.max_seeds or 2 * len(first)
    if cap < len(first):
        raise UsageError(f"--max-seeds {cap} is below the space's own {len(first)} seeds, its first batch")
    if "earlybird" not in space.methods or len(space.methods) < 2:
        raise UsageError(
            "--until compares variants with EarlyBird on paired seeds: the space must run earlybird and another method"
        )
    batches = seed_batches(first, cap, settings.seed_batch or DEFAULT_BATCH)
    space = dataclasses.replace(space, axes={**space.axes, "seed": [s for b in batches for s in b]})
    return dataclasses.replace(grid_plan(space.grid(), base), until=until, batches=batches)


def study_setting(space: SweepSpace, optuna: OptunaSpec) -> TrialConfig:
    """The one setting an Optuna study tunes at: the base with every axis it does not tune (the seeds
    aside: the study pairs its own) at its one value. An axis with several values is refused: the
    paired effect is a difference at one setting, and a study that drew the setting too would mix
    settings into it."""
    if len(space.cases) > 1:
        names = ", ".join(case.name for case in space.cases)
        raise UsageError(
            f"--search optuna tunes at one setting, but profile {space.profile!r} of {space.name!r} has "
            f"{len(space.cases)} cases ({names}) with settings of their own: "
            "use --search grid, or a profile without cases"
        )
    if space.cases:
        (case,) = space.cases
        space = dataclasses.replace(
            space,
            base=space.base.replace(case.base),
            axes={k: v for k, v in space.axes.items() if k not in case.base} | case.axes,
            method_axes={m: a | case.method_axes.get(m, {}) for m, a in space.method_axes.items()},
            cases=(),
        )
    tuned = {p.key for p in optuna.params} | {"seed"}
    axes = {**space.axes, **space.method_axes.get(optuna.method, {}), **space.method_axes.get("earlybird", {})}
    fixed = {}
    for key, values in axes.items():
        if key in tuned:
            continue
        if len(values) > 1:
            shown = ", ".join(cell(v) for v in values)
            raise UsageError(
                f"--search optuna tunes {', '.join(sorted(tuned - {'seed'}))} at one setting on paired seeds, but "
                f"{key} has {len(values)} values ({shown}): pin one with --set {key}=VALUE"
            )
        fixed[key] = values[0]
    return space.base.replace(fixed)


def grid_plan(configs: Sequence[TrialConfig], base: TrialConfig) -> Plan:
    """Explicit trials, in pairs: see :func:`paired_order`."""
    return Plan(base=base, trials=paired_order(configs))


def pair_key(cfg: TrialConfig) -> str:
    """What a trial shares with its EarlyBird partner: every field but :data:`PAIR_FREE_FIELDS`."""
    return json.dumps({k: v for k, v in cfg.to_flat().items() if k not in PAIR_FREE_FIELDS}, sort_keys=True)


def paired_order(configs: Sequence[TrialConfig]) -> list[TrialConfig]:
    """The configs grouped by :func:`pair_key`, groups in order of first appearance, file order within.

    A space lists EarlyBird first, so each EarlyBird trial is followed by its WORM partners: with two
    trials at a time, a pair starts together, and wall times compare under the same load.
    """
    groups: dict[str, list[TrialConfig]] = defaultdict(list)
    for cfg in configs:
        groups[pair_key(cfg)].append(cfg)
    return [cfg for group in groups.values() for cfg in group]


def sweep_columns(configs: Sequence[TrialConfig]) -> list[str]:
    """Method, seed and every field that takes more than one value across the sweep."""
    values: dict[str, set[str]] = defaultdict(set)
    for cfg in configs:
        for key, value in cfg.to_flat().items():
            values[key].add(repr(value))
    return ["method", "seed", *(k for k, v in values.items() if len(v) > 1 and k not in ("method", "seed"))]


def overrides(cfg: TrialConfig, base: TrialConfig, columns: Sequence[str] = ()) -> dict[str, Any]:
    """What a trial sets on top of the base: the sweep's columns that apply to its method, and any
    other field that differs. These are the trial's config in Ray (and the columns of its table)."""
    flat, base_flat = cfg.to_flat(), base.to_flat()
    shown = {k: flat[k] for k in columns if applies(k, cfg.method)}
    return shown | {k: v for k, v in flat.items() if v != base_flat[k]}


def trial_table(plan: Plan) -> str:
    """The dry-run listing: one row per trial, the varying fields as columns."""
    if plan.optuna is not None:
        o = plan.optuna
        ranges = ", ".join(f"{p.key} in [{p.low:g}, {p.high:g}]{' (log)' if p.log else ''}" for p in o.params)
        objectives = ", ".join(f"{ob.metric} ({o.method} - earlybird, {ob.mode})" for ob in plan.objectives)
        setting = " ".join(
            f"{SYMBOLS[k]}={cell(plan.base.get(k))}" for k in SYMBOLS if k not in {p.key for p in o.params}
        )
        lines = [
            f"{o.num_samples} Optuna (TPE) candidates of {o.method} at {setting}, each on seeds 0-{o.seeds - 1} "
            f"beside one EarlyBird baseline per seed: {ranges}",
            f"objective: the paired mean difference in {objectives}",
        ]
        lines += [f"first: {', '.join(f'{SYMBOLS.get(k, k)}={v:g}' for k, v in p.items())}" for p in o.enqueue]
        return "\n".join(lines)
    configs = plan.configs()
    columns = sweep_columns(configs)
    rows = [
        [str(i), *(cell(overrides(cfg, plan.base, columns).get(c)) for c in columns), cfg.hash()]
        for i, cfg in enumerate(configs, 1)
    ]
    table = format_table(["#", *columns, "hash"], rows)
    if plan.until is None:
        return table
    first, *rest = plan.batches
    return (
        f"sequential: seeds {cell_list(first)} first, then {cell_list([s for b in rest for s in b])} in batches of "
        f"{len(rest[0]) if rest else 0}, until {plan.until.describe()} (anytime-valid 95% intervals on the paired "
        f"difference in {METRIC}); at most these {len(configs)} trials\n{table}"
    )


def cell_list(seeds: Sequence[int]) -> str:
    """Seeds as runs of consecutive numbers: ``0-19, 25``."""
    runs: list[list[int]] = []
    for s in seeds:
        if runs and s == runs[-1][-1] + 1:
            runs[-1].append(s)
        else:
            runs.append([s])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs) or "none"


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


#: How a trial's name writes the fields docs/method.md names by a symbol; other fields go by their key.
SYMBOLS = {"search.ratio": "p", "search.threshold": "s", "worm.delta": "δ", "worm.factor": "r"}


def trial_label(config: Mapping[str, Any], columns: Sequence[str] | None = None, seed: bool = True) -> str:
    """A trial's name from its Ray config, ``worm p=0.3 δ=0.05 s0``: the method, the ``columns`` it
    sets (:func:`label_columns`; None: every field it sets) and the seed (``seed=False``: a variant's
    name, for its trials on every seed). Ray's trial name, the MLflow run's and the progress lines'."""
    fields = field_types()
    keys = [k for k in (config if columns is None else columns) if k in fields and k not in ("method", "seed")]
    shown = [f"{SYMBOLS.get(k, k)}={cell(config[k])}" for k in keys if config.get(k) is not None]
    return " ".join([str(config.get("method")), *shown, *([f"s{config.get('seed', '-')}"] if seed else [])])


def label_columns(plan: Plan) -> tuple[str, ...]:
    """The fields trial names show: those the sweep varies (an Optuna search: those it tunes)."""
    if plan.optuna is not None:
        return tuple(p.key for p in plan.optuna.params)
    return tuple(c for c in sweep_columns(plan.configs()) if c not in ("method", "seed"))


def setting_hash(cfg: TrialConfig) -> str:
    """A trial's setting, hashed: its config but the seed, which ``final`` ranks by (its runs' ``group_hash``
    tag, named so before "setting" was the word for it)."""
    return cfg.replace({"seed": 0}).hash()


def config_overrides(config: dict[str, Any]) -> dict[str, Any]:
    """The config fields in a trial's Ray config (None marks a field that does not apply)."""
    keys = field_types()
    return {k: v for k, v in config.items() if k in keys and v is not None}
