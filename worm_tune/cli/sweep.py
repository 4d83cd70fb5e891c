"""``python -m worm_tune.sweep <space>``: a search space as Ray Tune trials, logged to MLflow.

The flow: read the space and the flags, check everything a trial needs (configs, datasets,
weights, the tracking store, the cluster's resources) before any trial starts, then run one
Ray experiment, each EarlyBird trial beside its WORM partners, under one MLflow parent run, and
print a summary table. The sweep's settings are saved beside its Ray experiment
(``<storage>/<name>/sweep.json``) so ``--resume`` continues it exactly. Everything up to the
checks of data and weights imports no torch, Ray or MLflow (see :func:`start`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path

from worm_tune.cli.common import add_run_flags, check_name, check_not_driven, check_run_flags
from worm_tune.config import parse_assignments
from worm_tune.paths import DEFAULT_STORAGE
from worm_tune.tune.errors import USAGE_ERRORS
from worm_tune.tune.plan import SETTINGS_FILE, Plan, SweepSettings, make_plan, trial_table
from worm_tune.tune.spaces import Objective, available_spaces
from worm_tune.tune.store import resolve_tracking_uri
from worm_tune.tune.until import DEFAULT_BATCH, Until
from worm_tune.usage import Parser, UsageError, check_range, run_command

PROG = "python -m worm_tune.sweep"


def build_parser() -> argparse.ArgumentParser:
    spaces = ", ".join(available_spaces()) or "none found"
    parser = Parser(
        prog=PROG,
        description=f"Run a search space as Ray Tune trials logged to MLflow. Spaces: {spaces}.",
    )
    parser.add_argument("space", help="a search space name or a path to a .toml file")
    parser.add_argument("--quick", action="store_true", help="the space's quick profile (digits, minutes on a CPU)")
    parser.add_argument(
        "--profile",
        default=None,
        help="one of the space's profiles (the CIFAR spaces' `paper`: the paper's protocol alone); --quick is "
        "--profile quick",
    )
    parser.add_argument("--set", action="append", default=None, metavar="KEY=VALUE", help="pin any config field")
    parser.add_argument("--search", choices=("grid", "optuna"), default=None, help="grid (default) or optuna (TPE)")
    parser.add_argument(
        "--num-samples", type=int, default=None, help="Optuna candidates, each on paired seeds (default: the space's)"
    )
    parser.add_argument(
        "--seeds-per-trial",
        type=int,
        default=None,
        metavar="K",
        help="paired seeds each Optuna candidate runs on, beside an EarlyBird baseline per seed (default: the "
        "space's [optuna] seeds)",
    )
    parser.add_argument(
        "--objective",
        action="append",
        default=None,
        metavar="METRIC[:MODE]",
        help="Optuna objective(s), the candidate's mean paired difference to EarlyBird in a metric, e.g. "
        "final_acc:max; two give a multi-objective study (default: the space's)",
    )
    parser.add_argument("--sampler-seed", type=int, default=None, help="seed of Optuna's TPE sampler (default 0)")
    parser.add_argument(
        "--until",
        default=None,
        metavar="RULE",
        help="add paired seeds a batch at a time until the rule holds on every variant's anytime-valid 95%% "
        "interval on its search-epoch difference to EarlyBird: width=W (narrower than W epochs) or "
        "decided[:MARGIN] (excludes 0, or lies within ±MARGIN epochs); the space's seeds are the first batch",
    )
    parser.add_argument(
        "--max-seeds",
        type=int,
        default=None,
        metavar="N",
        help="--until's cap on paired seeds (default: twice the space's)",
    )
    parser.add_argument(
        "--seed-batch",
        type=int,
        default=None,
        metavar="B",
        help=f"--until's seeds added per batch (default {DEFAULT_BATCH})",
    )
    parser.add_argument(
        "--scheduler", choices=("fifo", "asha"), default=None, help="asha stops trials early on test_acc"
    )
    add_run_flags(parser)
    parser.add_argument(
        "--no-share",
        action="store_true",
        help="train every trial on its own (a grid sweep without --scheduler trains each shared trajectory once)",
    )
    parser.add_argument("--name", default=None, help="sweep name (default <space>[-<profile>]-<time>)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted sweep (the latest, or --name)")
    parser.add_argument("--dry-run", action="store_true", help="check the data and weights, print the trials, exit")
    return parser


_RESUME_FIXED = (
    "quick",
    "profile",
    "set",
    "search",
    "num_samples",
    "seeds_per_trial",
    "objective",
    "sampler_seed",
    "scheduler",
    "cpus_per_trial",
    "gpus_per_trial",
    "max_concurrent",
    "max_failures",
    "tracking_uri",
    "no_share",
    "keep_checkpoints",
    "until",
    "max_seeds",
    "seed_batch",
)


def settings_from_args(args: argparse.Namespace) -> SweepSettings:
    """New settings from flags, or the saved ones for ``--resume``."""
    storage = (args.storage or Path(DEFAULT_STORAGE)).resolve()
    if args.resume:
        given = [f"--{k.replace('_', '-')}" for k in _RESUME_FIXED if getattr(args, k) not in (None, False)]
        if given:
            raise UsageError(f"--resume continues a sweep with its saved settings; drop {', '.join(given)}")
        folder = _find_sweep(storage, args.space, args.name)
        return SweepSettings.load(folder)
    if args.quick and args.profile not in (None, "quick"):
        raise UsageError(f"--quick is --profile quick; drop one of --quick and --profile {args.profile}")
    profile = "quick" if args.quick else args.profile or "default"
    suffix = "" if profile == "default" else f"-{profile}"
    name = args.name or f"{Path(args.space).stem}{suffix}-{time.strftime('%Y%m%d-%H%M%S')}"
    check_name(name)
    if (storage / name / SETTINGS_FILE).exists():
        raise UsageError(f"sweep {name!r} already exists in {storage}; pass --resume to continue it or another --name")
    sets = parse_assignments(args.set or [])
    search = args.search or "grid"
    optuna_only = (args.num_samples, args.seeds_per_trial, args.objective or None, args.sampler_seed)
    if search == "grid" and any(value is not None for value in optuna_only):
        raise UsageError(
            "--num-samples, --seeds-per-trial, --objective and --sampler-seed apply to --search optuna only"
        )
    if search == "optuna" and (args.scheduler == "asha" or args.no_share):
        flag = "--scheduler asha" if args.scheduler == "asha" else "--no-share"
        raise UsageError(
            f"{flag} does not apply to --search optuna: a candidate runs on paired seeds to their ends, "
            "each starting from its EarlyBird baseline's state"
        )
    if args.until is None and (args.max_seeds, args.seed_batch) != (None, None):
        raise UsageError("--max-seeds and --seed-batch apply to --until only")
    if args.until is not None:
        Until.parse(args.until)
        if search != "grid" or args.scheduler == "asha":
            flag = "--search optuna" if search != "grid" else "--scheduler asha"
            raise UsageError(f"--until adds paired seeds to a grid sweep whose trials run to their ends; drop {flag}")
    check_range("--max-seeds", args.max_seeds, 1, integer=True)
    check_range("--seed-batch", args.seed_batch, 1, integer=True)
    check_range("--num-samples", args.num_samples, 1, integer=True)
    check_range("--seeds-per-trial", args.seeds_per_trial, 1, integer=True)
    check_run_flags(args)
    for text in args.objective or []:
        Objective.parse(text)
    scheduler = args.scheduler or "fifo"
    return SweepSettings(
        space=str(Path(args.space).resolve()) if args.space.endswith(".toml") else args.space,
        name=name,
        storage=str(storage),
        tracking_uri=resolve_tracking_uri(args.tracking_uri),
        profile=profile,
        sets=sets,
        search=search,
        num_samples=args.num_samples,
        seeds_per_trial=args.seeds_per_trial,
        objectives=list(args.objective or []),
        sampler_seed=args.sampler_seed or 0,
        scheduler=scheduler,
        cpus_per_trial=args.cpus_per_trial if args.cpus_per_trial is not None else 1.0,
        gpus_per_trial=args.gpus_per_trial or 0.0,
        max_concurrent=args.max_concurrent,
        max_failures=args.max_failures if args.max_failures is not None else 2,
        share=search == "optuna" or (scheduler == "fifo" and not args.no_share),
        keep_checkpoints=args.keep_checkpoints or "none",
        until=args.until,
        max_seeds=args.max_seeds,
        seed_batch=args.seed_batch,
    )


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


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(PROG, lambda: _main(argv), USAGE_ERRORS)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    return start(args, settings, make_plan(settings))


def start(args: argparse.Namespace, settings: SweepSettings, plan: Plan) -> int:
    """Run the sweep, or (``--dry-run``) make the checks of data and weights a run makes before its
    first trial, then list the trials.

    The machinery (:mod:`worm_tune.cli.launch`: Ray, torch, MLflow) is imported here, not at the
    top: it takes seconds that ``--help`` and bad usage should not wait for.
    """
    if not args.dry_run:
        check_not_driven(settings.folder, settings.name)  # before the machinery's seconds of imports
    from worm_tune.cli import launch

    if args.dry_run:
        launch.check(plan)
        print(f"sweep {settings.name}: {plan.trial_count} ({settings.space}, {settings.profile} profile)")
        print(trial_table(plan))
        return 0
    params = {
        k: v for k, v in dataclasses.asdict(settings).items() if k not in ("sets", "experiment_id", "parent_run_id")
    }
    params.update({f"set.{k}": v for k, v in settings.sets.items()})
    if plan.optuna is not None:  # the objectives the study runs on, the space's when no --objective names them
        params["objectives"] = [str(o) for o in plan.objectives]
    tags = {"space": Path(settings.space).stem, "profile": settings.profile, "search": settings.search}
    return launch.launch(PROG, args, settings, plan, Path(settings.space).stem, params, tags=tags)
