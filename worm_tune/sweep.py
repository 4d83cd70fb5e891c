"""``python -m worm_tune.sweep <space>``: a search space as Ray Tune trials, logged to MLflow.

The flow: read the space and the flags, check everything a trial needs (configs, datasets,
weights, the tracking store, the cluster's resources) before any trial starts, then run one
Ray experiment per trainable family (EarlyBird, then WORM and its variants) under one MLflow
parent run, and print a summary table. The sweep's settings are saved beside its Ray
experiments (``<storage>/<name>/sweep.json``) so ``--resume`` continues it exactly.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from worm_tune.cluster import ClusterError
from worm_tune.config import ConfigError, TrialConfig, parse_assignments
from worm_tune.data import DataBundle, DataError, load_data
from worm_tune.locks import DriverLock, LockHeld
from worm_tune.models import ModelError, build_model
from worm_tune.paths import PathError, check_writable
from worm_tune.spaces import Objective, OptunaSpec, SearchSpace, SpaceError, available_spaces, load_space
from worm_tune.tracking import TrackingError, check_tracking, mark_interrupted, resolve_tracking_uri

PROG = "python -m worm_tune.sweep"
SETTINGS_FILE = "sweep.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: Longest ``--name``: it names a folder, an MLflow run and Ray's experiment paths.
NAME_MAX = 100
USAGE_ERRORS = (ClusterError, ConfigError, DataError, ModelError, PathError, SpaceError, TrackingError)


class UsageError(Exception):
    """Bad input, reported as one line with exit code 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


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
    objectives: list[str] = field(default_factory=list)
    sampler_seed: int = 0
    scheduler: str = "fifo"
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    max_failures: int = 2
    kind: str = "sweep"
    experiment_id: str | None = None
    parent_run_id: str | None = None

    @property
    def folder(self) -> Path:
        return Path(self.storage) / self.name

    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / SETTINGS_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def load(cls, folder: Path) -> SweepSettings:
        return cls(**json.loads((folder / SETTINGS_FILE).read_text()))


@dataclass
class Plan:
    """What a sweep runs: per trainable family, either explicit trials or an Optuna search."""

    base: TrialConfig
    grid: dict[str, list[TrialConfig]] = field(default_factory=dict)
    optuna: OptunaSpec | None = None
    objectives: tuple[Objective, ...] = ()

    @property
    def families(self) -> list[str]:
        from worm_tune.trainables import family_of

        if self.optuna is not None:
            return [family_of(self.optuna.method)]
        return list(self.grid)

    def configs(self) -> list[TrialConfig]:
        """Every config a trial may run (for Optuna: the base with the tuned method)."""
        if self.optuna is not None:
            return [self.base.replace({"method": self.optuna.method})]
        return [cfg for configs in self.grid.values() for cfg in configs]


# -- command line ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    spaces = ", ".join(available_spaces()) or "none found"
    parser = Parser(
        prog=PROG,
        description=f"Run a search space as Ray Tune trials logged to MLflow. Spaces: {spaces}.",
    )
    parser.add_argument("space", help="a search space name or a path to a .toml file")
    parser.add_argument("--quick", action="store_true", help="the space's quick profile (digits, minutes on a CPU)")
    parser.add_argument("--set", action="append", default=None, metavar="KEY=VALUE", help="pin any config field")
    parser.add_argument("--search", choices=("grid", "optuna"), default=None, help="grid (default) or optuna (TPE)")
    parser.add_argument("--num-samples", type=int, default=None, help="Optuna trials (default: the space's)")
    parser.add_argument(
        "--objective",
        action="append",
        default=None,
        metavar="METRIC[:MODE]",
        help="Optuna objective(s), e.g. final_acc:max; two give a multi-objective study (default: the space's)",
    )
    parser.add_argument("--sampler-seed", type=int, default=None, help="seed of Optuna's TPE sampler (default 0)")
    parser.add_argument(
        "--scheduler", choices=("fifo", "asha"), default=None, help="asha stops trials early on test_acc"
    )
    add_run_flags(parser)
    parser.add_argument("--name", default=None, help="sweep name (default <space>[-quick]-<time>)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted sweep (the latest, or --name)")
    parser.add_argument("--dry-run", action="store_true", help="print the trials and exit")
    return parser


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """Where and how trials run: the flags ``sweep`` and ``final`` share."""
    parser.add_argument("--cpus-per-trial", type=float, default=None, help="CPUs per trial (default 1)")
    parser.add_argument("--gpus-per-trial", type=float, default=None, help="GPUs per trial; fractions share a GPU")
    parser.add_argument("--max-concurrent", type=int, default=None, help="at most this many trials at once")
    parser.add_argument("--max-failures", type=int, default=None, help="retries of a crashed trial (default 2)")
    parser.add_argument("--address", default=None, help="an existing Ray cluster, e.g. 10.0.0.1:6379 or auto")
    parser.add_argument("--storage", type=Path, default=None, help="where Ray keeps trials (default ./ray_results)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite:///<cwd>/mlflow.db)")
    parser.add_argument(
        "--reports", type=Path, default=None, help="where the report goes (default ./reports): <reports>/<name>/"
    )
    parser.add_argument("--no-analysis", action="store_true", help="do not write the report at the end")


_RESUME_FIXED = (
    "quick",
    "set",
    "search",
    "num_samples",
    "objective",
    "sampler_seed",
    "scheduler",
    "cpus_per_trial",
    "gpus_per_trial",
    "max_concurrent",
    "max_failures",
    "tracking_uri",
)


def settings_from_args(args: argparse.Namespace) -> SweepSettings:
    """New settings from flags, or the saved ones for ``--resume``."""
    storage = (args.storage or Path("ray_results")).resolve()
    if args.resume:
        given = [f"--{k.replace('_', '-')}" for k in _RESUME_FIXED if getattr(args, k) not in (None, False)]
        if given:
            raise UsageError(f"--resume continues a sweep with its saved settings; drop {', '.join(given)}")
        folder = _find_sweep(storage, args.space, args.name)
        return SweepSettings.load(folder)
    name = args.name or f"{Path(args.space).stem}{'-quick' if args.quick else ''}-{time.strftime('%Y%m%d-%H%M%S')}"
    check_name(name)
    if (storage / name / SETTINGS_FILE).exists():
        raise UsageError(f"sweep {name!r} already exists in {storage}; pass --resume to continue it or another --name")
    sets = parse_assignments(args.set or [])
    search = args.search or "grid"
    if search == "grid" and (args.num_samples is not None or args.objective or args.sampler_seed is not None):
        raise UsageError("--num-samples, --objective and --sampler-seed apply to --search optuna only")
    check_range("--num-samples", args.num_samples, 1, integer=True)
    check_range("--cpus-per-trial", args.cpus_per_trial, 0, open_low=True)
    check_range("--gpus-per-trial", args.gpus_per_trial, 0)
    check_range("--max-concurrent", args.max_concurrent, 1, integer=True)
    check_range("--max-failures", args.max_failures, 0, integer=True)
    for text in args.objective or []:
        Objective.parse(text)
    return SweepSettings(
        space=str(Path(args.space).resolve()) if args.space.endswith(".toml") else args.space,
        name=name,
        storage=str(storage),
        tracking_uri=resolve_tracking_uri(args.tracking_uri),
        profile="quick" if args.quick else "default",
        sets=sets,
        search=search,
        num_samples=args.num_samples,
        objectives=list(args.objective or []),
        sampler_seed=args.sampler_seed or 0,
        scheduler=args.scheduler or "fifo",
        cpus_per_trial=args.cpus_per_trial if args.cpus_per_trial is not None else 1.0,
        gpus_per_trial=args.gpus_per_trial or 0.0,
        max_concurrent=args.max_concurrent,
        max_failures=args.max_failures if args.max_failures is not None else 2,
    )


def check_name(name: str) -> None:
    if not NAME_PATTERN.match(name) or len(name) > NAME_MAX:
        shown = name if len(name) <= 40 else f"{name[:37]}..."
        raise UsageError(
            f"--name {shown!r} is invalid: use up to {NAME_MAX} letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit)"
        )


def check_range(flag: str, value: float | None, low: float, integer: bool = False, open_low: bool = False) -> None:
    if value is None:
        return
    if (value <= low if open_low else value < low) or not math.isfinite(value):
        bound = f"> {low}" if open_low else f">= {low}"
        raise UsageError(f"{flag} {value} is invalid: must be {'an integer ' if integer else ''}{bound}")


def _find_sweep(storage: Path, space: str, name: str | None) -> Path:
    if name is not None:
        folder = storage / name
        if not (folder / SETTINGS_FILE).exists():
            raise UsageError(f"no sweep named {name!r} in {storage}; nothing to resume")
        return folder
    candidates = [p.parent for p in storage.glob(f"*/{SETTINGS_FILE}")]
    mine = [
        f for f in candidates if Path(json.loads((f / SETTINGS_FILE).read_text())["space"]).stem == Path(space).stem
    ]
    if not mine:
        raise UsageError(f"no sweep of space {space!r} in {storage}; nothing to resume")
    return max(mine, key=lambda f: (f / SETTINGS_FILE).stat().st_mtime)


# -- planning --------------------------------------------------------------------------------


def make_plan(settings: SweepSettings) -> Plan:
    """Read the space, apply ``--set``, and expand it into trials; every config is validated."""

    space: SearchSpace = load_space(settings.space, settings.profile).pin(settings.sets)
    # Trials run in their own folders: make the data folder absolute (it is not part of the hash).
    base = space.base.replace({"data.data_dir": str(Path(space.base.data.data_dir).resolve())})
    space = dataclasses.replace(space, base=base)
    if settings.search == "optuna":
        if space.optuna is None:
            raise UsageError(f"search space {space.name!r} has no [optuna] table; use --search grid")
        optuna = space.optuna
        if settings.num_samples is not None:
            optuna = dataclasses.replace(optuna, num_samples=settings.num_samples)
        objectives = tuple(Objective.parse(o) for o in settings.objectives) or optuna.objectives
        base.replace({"method": optuna.method}).validate()
        return Plan(base=base, optuna=optuna, objectives=objectives)
    return grid_plan(space.grid(), base)


def grid_plan(configs: Sequence[TrialConfig], base: TrialConfig) -> Plan:
    """Explicit trials, grouped by the trainable family that runs them."""
    from worm_tune.trainables import family_of

    grid: dict[str, list[TrialConfig]] = defaultdict(list)
    for cfg in configs:
        grid[family_of(cfg.method)].append(cfg)
    return Plan(base=base, grid=dict(grid))


def preflight(plan: Plan) -> None:
    """Load each dataset and build each model once, so a missing one fails before any trial."""
    bundles: dict[Any, DataBundle] = {}
    models = set()
    for cfg in plan.configs():
        data_key = (cfg.data, cfg.model.checkpoint)  # text is tokenised by the checkpoint's tokenizer
        if data_key not in bundles:
            bundles[data_key] = load_data(cfg.data, cfg.model.checkpoint)
        bundle = bundles[data_key]
        if (cfg.model, data_key) not in models:
            models.add((cfg.model, data_key))
            build_model(cfg.model, bundle.num_classes, bundle.input_shape, bundle.vocab_size)


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
    shown = {k: flat[k] for k in columns if _applies(k, cfg.method)}
    return shown | {k: v for k, v in flat.items() if v != base_flat[k]}


def _applies(key: str, method: str) -> bool:
    """WORM's knobs mean nothing to EarlyBird and dense trials: leave them out of their rows."""
    return not key.startswith("worm.") or method in ("worm", "gradclip", "greedy")


def trial_table(plan: Plan) -> str:
    """The dry-run listing: one row per trial, the varying fields as columns."""
    if plan.optuna is not None:
        o = plan.optuna
        ranges = ", ".join(f"{p.key} in [{p.low:g}, {p.high:g}]{' (log)' if p.log else ''}" for p in o.params)
        objectives = ", ".join(map(str, plan.objectives))
        what = f"{o.num_samples} Optuna (TPE) trials of {o.method}, seed {plan.base.seed}"
        return f"{what}: {ranges}; objective {objectives}"
    configs = plan.configs()
    columns = sweep_columns(configs)
    rows = [
        [str(i), *(_cell(overrides(cfg, plan.base, columns).get(c)) for c in columns), cfg.hash()]
        for i, cfg in enumerate(configs, 1)
    ]
    return format_table(["#", *columns, "hash"], rows)


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table with aligned columns (readable in a terminal and in MLflow)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# -- running ---------------------------------------------------------------------------------


def connect_ray(address: str | None, target: str | None) -> None:
    from worm_tune import cluster

    # One checkpoint kept per trial forces an experiment snapshot per checkpoint: wanted, not a warning.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    cluster.connect(address, target)


def check_resources(settings: SweepSettings) -> None:
    import ray

    have = ray.cluster_resources()
    for key, per_trial, flag in (
        ("CPU", settings.cpus_per_trial, "--cpus-per-trial"),
        ("GPU", settings.gpus_per_trial, "--gpus-per-trial"),
    ):
        if per_trial > 0 and have.get(key, 0) < per_trial:
            raise UsageError(f"{flag} {per_trial:g} is more than the cluster has ({have.get(key, 0):g} {key})")


def execute(
    settings: SweepSettings, plan: Plan, resume: bool, extra_tags: dict[str, dict[str, str]] | None = None
) -> list[Any]:
    """Run (or resume) every family's Ray experiment; return the ``ray.tune.Result`` of each trial.

    Stops after a family that was interrupted, so ``--resume`` picks up from there.
    """
    from ray import tune

    from worm_tune.tracking import MlflowCallback
    from worm_tune.trainables import FAMILIES

    assert settings.experiment_id is not None and settings.parent_run_id is not None
    base_flat = plan.base.to_flat()
    resources = {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}
    results: list[Any] = []
    for family in plan.families:
        trainable = tune.with_resources(tune.with_parameters(FAMILIES[family], base=base_flat), resources)
        path = settings.folder / family
        if resume and tune.Tuner.can_restore(str(path)):
            tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
        else:
            callback = MlflowCallback(
                settings.tracking_uri,
                settings.experiment_id,
                settings.parent_run_id,
                settings.name,
                base_flat,
                extra_tags,
            )
            tuner = tune.Tuner(
                trainable,
                param_space=_param_space(plan, family),
                tune_config=_tune_config(settings, plan, family),
                run_config=tune.RunConfig(
                    name=family,
                    storage_path=str(settings.folder),
                    callbacks=[callback],
                    failure_config=tune.FailureConfig(max_failures=settings.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_frequency=1),
                    verbose=1,
                ),
            )
        grid = tuner.fit()
        results.extend(grid)
        cut_short = _cut_short(path, _num_samples(plan, family))
        if cut_short is not None:
            mark_interrupted(settings.tracking_uri, settings.parent_run_id, cut_short)
            raise KeyboardInterrupt
    return results


def _num_samples(plan: Plan, family: str) -> int:
    return plan.optuna.num_samples if plan.optuna is not None else len(_points(plan, family))


def _cut_short(path: Path, num_samples: int) -> set[str] | None:
    """The ids of the trials an interrupt cut short, or None if the family ran to its end.

    Ray Tune catches Ctrl-C, saves the experiment state, then stops every trial (calling
    ``on_trial_complete``, as for a trial the scheduler stopped) and returns normally. Only the
    saved state tells the two apart: there, cut-short trials are still running or pending, and a
    searcher that was stopped early has made fewer trials than asked for.
    """
    from ray.tune import ExperimentAnalysis

    trials = ExperimentAnalysis(str(path)).trials
    cut = {t.trial_id for t in trials if t.status not in ("TERMINATED", "ERROR")}
    return cut if cut or len(trials) < num_samples else None


def _param_space(plan: Plan, family: str) -> dict[str, Any]:
    """A flat Ray config. Grid: one domain per column of the trials' points (see :func:`_points`).
    Optuna: the method, the seed and the ranges to tune."""
    from ray import tune

    if plan.optuna is not None:
        space: dict[str, Any] = {"method": plan.optuna.method, "seed": plan.base.seed}
        for p in plan.optuna.params:
            if p.integer:
                low, high = int(p.low), int(p.high) + 1
                space[p.key] = tune.lograndint(low, high) if p.log else tune.randint(low, high)
            else:
                space[p.key] = tune.loguniform(p.low, p.high) if p.log else tune.uniform(p.low, p.high)
        return space
    points = _points(plan, family)
    keys = list(dict.fromkeys(k for point in points for k in point))
    # The domains only name Ray's table columns: every trial's values come from its point.
    return {k: tune.choice(sorted({p[k] for p in points if p[k] is not None}, key=str) or [None]) for k in keys}


def _points(plan: Plan, family: str) -> list[dict[str, Any]]:
    """The family's grid trials as flat Ray configs: ``trial`` (its ``--dry-run`` number), then
    the sweep's columns (None where a field does not apply to the method) and other set fields."""
    configs = plan.configs()
    columns = sweep_columns(configs)
    rows = [{"trial": i, **overrides(cfg, plan.base, columns)} for i, cfg in enumerate(configs, 1)]
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return [{k: row.get(k) for k in keys} for row, cfg in zip(rows, configs, strict=True) if cfg in plan.grid[family]]


def _tune_config(settings: SweepSettings, plan: Plan, family: str) -> Any:
    from ray import tune

    search_alg: Any = None
    scheduler: Any = None
    if plan.optuna is None:
        from ray.tune.search import BasicVariantGenerator

        search_alg = BasicVariantGenerator(
            points_to_evaluate=_points(plan, family), max_concurrent=settings.max_concurrent or 0
        )
    else:
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        metrics = [o.metric for o in plan.objectives]
        modes = [o.mode for o in plan.objectives]
        search_alg = OptunaSearch(
            metric=metrics if len(metrics) > 1 else metrics[0],
            mode=modes if len(modes) > 1 else modes[0],
            sampler=optuna.samplers.TPESampler(seed=settings.sampler_seed),
            storage=optuna.storages.RDBStorage(f"sqlite:///{settings.folder / 'optuna.db'}"),
            study_name=settings.name,
        )
    if settings.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        cfg = plan.configs()[0]
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            metric="test_acc",
            mode="max",
            max_t=cfg.search.max_epochs + cfg.retrain.max_epochs,
            grace_period=cfg.search.window,
        )
    return tune.TuneConfig(
        num_samples=_num_samples(plan, family),
        search_alg=search_alg,
        scheduler=scheduler,
        # The grid's generator enforces the limit itself (Tune ignores this for it, with a warning).
        max_concurrent_trials=settings.max_concurrent if plan.optuna is not None else None,
        trial_dirname_creator=trial_dirname,
        reuse_actors=True,
    )


def trial_dirname(trial: Any) -> str:
    return f"{trial.trainable_name.removesuffix('Trainable').lower()}-{trial.trial_id}"


# -- the end -------------------------------------------------------------------------------


def summary_table(results: list[Any], base: TrialConfig) -> str:
    """Per method and pruning ratio: how trials ended, mean search epochs, accuracies and time."""
    from worm_tune.tracking import trial_status
    from worm_tune.trainables import config_overrides

    groups: dict[tuple[str, float], list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for result in results:
        metrics = result.metrics or {}
        summary = metrics.get("summary") or {}
        ratio = base.replace(config_overrides(result.config or {})).search.ratio
        status = trial_status(summary, result.error is not None)
        groups[(summary.get("method") or metrics.get("method") or "?", ratio)].append((status, summary))
    header = ["method", "ratio", "trials", "converged", "not conv.", "stopped", "diverged", "errors"]
    header += ["search epochs", "acc pre-prune", "acc final", "time (s)"]
    rows = []
    for (method, ratio), items in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        count = defaultdict(int)
        for status, _ in items:
            count[status] += 1
        converged = [s for status, s in items if status == "converged"]
        rows.append(
            [
                method,
                _cell(ratio),
                str(len(items)),
                str(count["converged"]),
                str(count["not_converged"]),
                str(count["stopped_early"]),
                str(count["diverged"]),
                str(count["error"]),
                _mean([s["search_epochs"] for s in converged], ".2f"),
                _mean([s.get("pre_prune_acc") for _, s in items], ".2%"),
                _mean(
                    [s.get("final_acc") for status, s in items if status in ("converged", "not_converged", "dense")],
                    ".2%",
                ),
                _mean([s.get("total_time") for _, s in items], ".0f"),
            ]
        )
    note = "search epochs: mean over converged trials; a stopped or diverged trial has no convergence epoch."
    return format_table(header, rows) + "\n\n" + note


def _mean(values: list[float | None], fmt: str) -> str:
    known = [v for v in values if v is not None and v == v]
    return "-" if not known else f"{format(sum(known) / len(known), fmt)} (n={len(known)})"


def run_sweep(
    settings: SweepSettings,
    plan: Plan,
    resume: bool,
    address: str | None,
    experiment: str,
    params: dict[str, Any],
    tags: dict[str, str] | None = None,
    extra_tags: dict[str, dict[str, str]] | None = None,
    prog: str = PROG,
    reports: Path | None = None,
    extra_files: dict[str, str] | None = None,
) -> int:
    """Check, lock, connect, open (or reopen) the parent run, execute, summarise, and write the
    report into ``reports`` (unless None); the exit code.

    Everything that can fail on bad input fails before the parent run exists; anything that fails
    after it leaves it FAILED (or KILLED on Ctrl-C), never RUNNING.
    """
    from worm_tune import cluster, tracking

    check_paths(settings, experiment, reports)
    target = cluster.check(address)  # in seconds, before the slower checks
    with driving(settings, resume, extra_files) as started:
        preflight(plan)
        check_tracking(settings.tracking_uri)
        connect_ray(address, target)
        check_resources(settings)
        if settings.parent_run_id is None:
            settings.experiment_id = tracking.experiment_id(settings.tracking_uri, experiment)
            settings.parent_run_id = tracking.start_parent_run(
                settings.tracking_uri, settings.experiment_id, settings.name, settings.kind, tags or {}, params
            )
        else:
            tracking.client(settings.tracking_uri).update_run(settings.parent_run_id, status="RUNNING")
        started()  # from here on the folder names a parent run: it stays, and the run ends FAILED on errors
        try:
            settings.save()
            count = len(plan.configs()) if plan.optuna is None else plan.optuna.num_samples
            print(
                f"sweep {settings.name}: {count} trials, Ray storage {settings.folder}, "
                f"MLflow {settings.tracking_uri} (run {settings.parent_run_id})",
                flush=True,
            )
            results = execute(settings, plan, resume, extra_tags)
        except KeyboardInterrupt:
            tracking.end_run(settings.tracking_uri, settings.parent_run_id, "KILLED")
            where = f" --storage {settings.storage}" if Path(settings.storage) != Path("ray_results").resolve() else ""
            print(
                f"{prog}: interrupted; resume with: {prog} {settings.space} --resume --name {settings.name}{where}",
                file=sys.stderr,
            )
            return 130
        except BaseException:
            tracking.end_run(settings.tracking_uri, settings.parent_run_id, "FAILED")
            raise
        table = summary_table(results, plan.base)
        print("\n" + table, flush=True)
        mlflow_client = tracking.client(settings.tracking_uri)
        mlflow_client.log_text(settings.parent_run_id, table + "\n", "summary.md")
        errors = sum(r.error is not None for r in results)
        tracking.end_run(settings.tracking_uri, settings.parent_run_id, "FAILED" if errors else "FINISHED")
        if reports is not None:
            analyse(settings, reports, prog)
    if errors:
        print(
            f"{prog}: {errors} trial(s) failed after {settings.max_failures} retries; see {settings.folder}",
            file=sys.stderr,
        )
        return 1
    return 0


def check_paths(settings: SweepSettings, experiment: str, reports: Path | None) -> None:
    """Every folder the sweep will write, checked before anything starts: one line naming the flag."""
    from worm_tune import tracking

    check_writable(Path(settings.storage), "--storage")
    if reports is not None:
        check_writable(reports, "--reports")
    db = tracking.sqlite_path(settings.tracking_uri)
    if db is not None and db.parent.is_dir():
        check_writable(db.parent, "--tracking-uri (the SQLite file's folder)")
        root = tracking.artifact_root(settings.tracking_uri, experiment)
        if root is not None:
            check_writable(root, "--tracking-uri (its artifact folder)")


@contextlib.contextmanager
def driving(settings: SweepSettings, resume: bool, extra_files: dict[str, str] | None) -> Iterator[Callable[[], None]]:
    """Hold the sweep's driver lock for the whole run; write ``sweep.json`` (and ``extra_files``).

    A second driver of the same sweep is refused at once. A new sweep whose start fails before
    its first trial (call the yielded function once trials begin) leaves no folder behind, so the
    same command can simply be run again.
    """
    folder = settings.folder
    created = [p for p in (folder.parent, folder) if not p.exists()]
    lock = DriverLock(folder)
    try:
        lock.acquire()
    except LockHeld as held:
        raise UsageError(
            f"sweep {settings.name} is being run by {held.holder}; wait for it, or stop it first"
        ) from None
    began = False

    def started() -> None:
        nonlocal began
        began = True

    try:
        if not resume and (folder / SETTINGS_FILE).exists():
            raise UsageError(
                f"sweep {settings.name!r} already exists in {settings.storage}; pass --resume or another --name"
            )
        settings.save()
        for name, text in (extra_files or {}).items():
            (folder / name).write_text(text)
        yield started
    except BaseException:
        if folder in created and not began:  # remove what this start created: its folder, an empty storage
            shutil.rmtree(folder, ignore_errors=True)
            if folder.parent in created:
                with contextlib.suppress(OSError):
                    folder.parent.rmdir()
        raise
    finally:
        lock.release()


def analyse(settings: SweepSettings, reports: Path, prog: str) -> None:
    """The sweep's report (``python -m analysis``). A sweep's results stand without it: a report
    that fails is a warning with the command to retry, not a failed sweep."""
    from analysis.cli import run

    try:
        written = run(settings.name, settings.tracking_uri, Path(settings.storage), reports)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(
            f"{prog}: warning: the report failed ({type(exc).__name__}: {reason}); "
            f"retry with: python -m analysis {settings.name} --tracking-uri {settings.tracking_uri}",
            file=sys.stderr,
        )
        return
    print(f"report: {written.path}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        settings = settings_from_args(args)
        plan = make_plan(settings)
        if args.dry_run:
            count = len(plan.configs()) if plan.optuna is None else plan.optuna.num_samples
            print(f"sweep {settings.name}: {count} trials ({settings.space}, {settings.profile} profile)")
            print(trial_table(plan))
            return 0
        params = {
            k: v for k, v in dataclasses.asdict(settings).items() if k not in ("sets", "experiment_id", "parent_run_id")
        }
        params.update({f"set.{k}": v for k, v in settings.sets.items()})
        tags = {"space": Path(settings.space).stem, "profile": settings.profile, "search": settings.search}
        reports = None if args.no_analysis else (args.reports or Path("reports")).resolve()
        return run_sweep(
            settings, plan, args.resume, args.address, Path(settings.space).stem, params, tags=tags, reports=reports
        )
    except (UsageError, *USAGE_ERRORS) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside Ray Tune's own Ctrl-C handling (preflight, summary)
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
