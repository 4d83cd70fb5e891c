"""``python -m worm_tune.final <sweep>``: rerun a finished sweep's best configurations for real.

Trials of a sweep are pooled by setting (their configuration but the seed); settings are ranked
by the mean of a summary metric over their seeds, so one lucky seed does not pick a config.
The top ``k`` are rerun with several seeds and the sweep's retraining budget (or
``--retrain-epochs``), as a new Ray experiment under a new MLflow parent run in the same
experiment. Each rerun's run carries the ids of the sweep runs it came from (tags and a note
with links), and the parent names the sweep. Each rerun's final network is logged to its run as an
MLflow model, and the best is registered in the Model Registry under the space's name (see
:func:`log_models`). Everything up to the checks of data and weights imports no torch or Ray (see
:func:`start`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worm_tune import metrics
from worm_tune.cli.common import add_run_flags, check_name, check_not_driven, check_run_flags
from worm_tune.config import RUNTIME_FIELDS, TrialConfig, parse_assignments
from worm_tune.paths import DEFAULT_STORAGE
from worm_tune.ticket.methods import applies
from worm_tune.tune import store
from worm_tune.tune.errors import USAGE_ERRORS
from worm_tune.tune.plan import (
    CHOSEN_FILE,
    SETTINGS_FILE,
    Plan,
    SweepSettings,
    cell,
    grid_plan,
    setting_hash,
    sweep_columns,
    trial_table,
)
from worm_tune.tune.spaces import OBJECTIVES, Objective
from worm_tune.usage import Parser, UsageError, check_range, format_table, run_command

PROG = "python -m worm_tune.final"


@dataclass(frozen=True)
class Candidate:
    """One setting of the sweep (:func:`~worm_tune.tune.plan.setting_hash`): its runs, and its mean score over seeds."""

    setting: str
    config: TrialConfig
    run_ids: tuple[str, ...]
    score: float


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Rerun the best configurations of a finished sweep with several seeds. Each rerun's network "
        "is logged to its MLflow run; the best one is registered as a new version of the model named after the "
        "sweep's space.",
    )
    parser.add_argument("sweep", help="the sweep's name (as given to or printed by worm_tune.sweep)")
    parser.add_argument("--metric", default=None, help=f"rank by this summary metric: {', '.join(OBJECTIVES)}")
    parser.add_argument(
        "--mode", choices=("min", "max"), default=None, help="better is min or max (default: the metric's)"
    )
    parser.add_argument("--top-k", type=int, default=None, help="how many configurations to rerun (default 3)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds for each rerun (default 0,1,2)")
    parser.add_argument(
        "--retrain-epochs",
        type=int,
        default=None,
        help="retraining budget of the reruns (default: the sweep's, each config's retrain.max_epochs)",
    )
    parser.add_argument(
        "--set", action="append", default=None, metavar="KEY=VALUE", help="override a field of every rerun"
    )
    add_run_flags(parser)
    parser.add_argument("--name", default=None, help="name of the rerun (default <sweep>-final-<time>)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted rerun (needs --name)")
    parser.add_argument(
        "--dry-run", action="store_true", help="check the data and weights, print the ranking and the reruns, exit"
    )
    return parser


def rank(runs: Sequence[Any], objective: Objective) -> list[Candidate]:
    """Pool finished trial runs by setting (their config but the seed) and rank the settings by their mean score."""
    runs_of: dict[str, list[Any]] = defaultdict(list)
    for run in runs:
        value = metrics.logged_summary(run.data.metrics).get(objective.metric)
        if run.info.status == "FINISHED" and value is not None and math.isfinite(value):
            runs_of[run.data.tags["group_hash"]].append(run)  # the setting hash's tag
    candidates = []
    for setting, members in runs_of.items():
        cfg = source_config(members[0])
        score = sum(metrics.logged_summary(r.data.metrics)[objective.metric] for r in members) / len(members)
        candidates.append(Candidate(setting, cfg, tuple(r.info.run_id for r in members), score))
    return sorted(candidates, key=lambda c: c.score, reverse=objective.mode == "max")


def source_config(run: Any) -> TrialConfig:
    """A trial run's config: its params, and where it ran (the data folder, the device) from its tags."""
    runtime = {k: v for k, v in run.data.tags.items() if k in RUNTIME_FIELDS}
    return TrialConfig.from_dict({**run.data.params, **runtime})


def ranking(candidates: Sequence[Candidate], objective: Objective, top_k: int) -> str:
    """The ranking as a table: the fields the sweep varied (as its dry run lists them, but the seed,
    which a setting pools), the setting's hash last (headed "group", as users know it); ``*`` marks the
    configurations rerun."""
    columns = [k for k in sweep_columns([c.config for c in candidates]) if k != "seed"]
    rows = [
        [
            "*" if i <= top_k else "",
            str(i),
            f"{c.score:.4g}",
            str(len(c.run_ids)),
            *(cell(c.config.get(k) if applies(k, c.config.method) else None) for k in columns),
            c.setting,
        ]
        for i, c in enumerate(candidates, 1)
    ]
    return format_table(["", "#", f"{objective} (mean)", "seeds", *columns, "group"], rows)


def plan_reruns(
    chosen: Sequence[Candidate], seeds: Sequence[int], retrain_epochs: int | None, sets: dict[str, str]
) -> tuple[Plan, list[TrialConfig]]:
    """Each chosen config with each seed; its own retraining budget unless ``retrain_epochs`` is given."""
    budget = {} if retrain_epochs is None else {"retrain.max_epochs": retrain_epochs}
    configs = [
        # A rerun never inherits the sweep's fault injection (``--set crash_at_epoch=K`` still works).
        c.config.replace({"seed": seed, **budget, "crash_at_epoch": 0, **sets}).validate()
        for c in chosen
        for seed in seeds
    ]
    return grid_plan(configs, configs[0]), configs


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0:
        raise UsageError(f"--seeds {text!r} is invalid: expected comma-separated non-negative integers, e.g. 0,1,2")
    return list(dict.fromkeys(seeds))


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(PROG, lambda: _main(argv), USAGE_ERRORS)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    storage = (args.storage or Path(DEFAULT_STORAGE)).resolve()
    if args.resume:
        if not args.name or not (storage / args.name / CHOSEN_FILE).exists():
            raise UsageError(f"--resume needs --name of a rerun in {storage}")
        settings = SweepSettings.load(storage / args.name)
        saved = json.loads((settings.folder / CHOSEN_FILE).read_text())
        configs = [TrialConfig.from_dict(c) for c in saved["configs"]]
        plan = grid_plan(configs, configs[0])
        extra_tags, params, tags = saved["extra_tags"], saved["params"], saved["tags"]
        files = None
    else:
        settings, plan, extra_tags, params, tags = _new_rerun(args, storage)
        chosen = {"configs": [c.to_flat() for c in plan.configs()], "extra_tags": extra_tags}
        files = {CHOSEN_FILE: json.dumps({**chosen, "params": params, "tags": tags}, indent=2)}
    return start(args, settings, plan, params, tags, extra_tags=extra_tags, extra_files=files)


def start(
    args: argparse.Namespace,
    settings: SweepSettings,
    plan: Plan,
    params: dict[str, Any],
    tags: dict[str, str],
    **options: Any,
) -> int:
    """Run the reruns, or (``--dry-run``) make the checks of data and weights a run makes before its
    first trial, then list the reruns. ``options`` go to ``run_sweep``.

    The machinery (:mod:`worm_tune.cli.launch`: Ray, torch) is imported here, not at the top: it
    takes seconds that ``--help`` and bad usage should not wait for.
    """
    if not args.dry_run:
        check_not_driven(settings.folder, settings.name)  # before the machinery's seconds of imports
    from worm_tune.cli import launch

    if args.dry_run:
        launch.check(plan)
        print(trial_table(plan))
        return 0
    # Once the reruns end (an interrupted rerun logs its networks once resumed), before their last
    # checkpoints, which the networks are built from, are reclaimed. A sweep's experiment is named after its space.
    objective, experiment = Objective.parse(params["objective"]), tags["experiment"]
    options["on_end"] = lambda ended: log_models(ended, objective, experiment)
    return launch.launch(PROG, args, settings, plan, experiment, params, tags=tags, **options)


def log_models(settings: SweepSettings, objective: Objective, name: str) -> None:
    """Log each finished rerun's network to its run (:mod:`worm_tune.tune.model_logging`) and register the
    best one as a new version of the model ``name``.

    The best: the configuration with the best mean over the rerun's seeds (the sweep's rule, on new
    seeds, so the sweep's rank 1 can lose it), and of its seeds the one with the best score, whose
    network is the one to use.
    """
    from worm_tune.tune import model_logging

    uri = settings.tracking_uri
    runs = store.child_runs(uri, store.client(uri).get_run(settings.parent_run_id))
    bundles: dict[Any, Any] = {}
    logged = {r.info.run_id: model_logging.log_network(uri, settings.folder, r, bundles) for r in runs}
    candidates = rank([r for r in runs if logged[r.info.run_id]], objective)
    if not candidates:
        print(f"{PROG}: warning: no rerun left a network and a {objective.metric}; none registered", file=sys.stderr)
        return
    by_id = {r.info.run_id: r for r in runs}
    scores = {i: metrics.logged_summary(by_id[i].data.metrics)[objective.metric] for i in candidates[0].run_ids}
    run = by_id[(max if objective.mode == "max" else min)(scores, key=scores.__getitem__)]
    version = model_logging.register(uri, name, logged[run.info.run_id], run)
    print(
        f"model: {name} version {version.version}, rank {run.data.tags['final_rank']} seed {run.data.tags['seed']} "
        f"({objective.metric} {scores[run.info.run_id]:.4g}): models:/{name}/{version.version}",
        flush=True,
    )


def _new_rerun(args: argparse.Namespace, storage: Path) -> tuple[SweepSettings, Plan, dict, dict, dict]:
    objective = Objective.parse(f"{args.metric or 'final_acc'}{':' + args.mode if args.mode else ''}")
    top_k = args.top_k if args.top_k is not None else 3
    check_range("--top-k", top_k, 1, integer=True)
    check_range("--retrain-epochs", args.retrain_epochs, 1, integer=True)
    check_run_flags(args)
    seeds = _seeds(args.seeds if args.seeds is not None else "0,1,2")
    sets = parse_assignments(args.set or [])
    name = args.name or f"{args.sweep}-final-{time.strftime('%Y%m%d-%H%M%S')}"
    check_name(name)
    if (storage / name / SETTINGS_FILE).exists():
        raise UsageError(f"{name!r} already exists in {storage}; pass --resume to continue it or another --name")

    uri = store.resolve_tracking_uri(args.tracking_uri)
    # A SQLite store not there yet holds no sweep: refused without creating it (a refused command
    # leaves no new file behind).
    parent = store.find_parent_run(uri, args.sweep) if store.check_tracking(uri, create=False) else None
    if parent is None:
        raise UsageError(f"no sweep named {args.sweep!r} in {uri}")
    if parent.info.status == "RUNNING":
        raise UsageError(f"sweep {args.sweep} {store.driver_state(parent)}")
    candidates = rank(store.child_runs(uri, parent), objective)
    if not candidates:
        raise UsageError(f"sweep {args.sweep!r} has no finished trial with a {objective.metric} to rank by")
    chosen = candidates[:top_k]
    print(ranking(candidates, objective, top_k) + "\n", flush=True)
    plan, configs = plan_reruns(chosen, seeds, args.retrain_epochs, sets)

    experiment = store.client(uri).get_experiment(parent.info.experiment_id).name
    extra_tags = {}
    for i, (candidate, cfg) in enumerate(zip(chosen, configs[:: len(seeds)], strict=True), 1):
        links = "\n".join(f"- [{r}](#/experiments/{parent.info.experiment_id}/runs/{r})" for r in candidate.run_ids)
        extra_tags[setting_hash(cfg)] = {
            "source_sweep": args.sweep,
            "source_parent_run": parent.info.run_id,
            "source_runs": ",".join(candidate.run_ids),
            "source_group": candidate.setting,
            "source_score": f"{objective.metric}={candidate.score:.6g}",
            "final_rank": str(i),
            "mlflow.note.content": f"Rerun of sweep {args.sweep}, rank {i} by {objective}. Source runs:\n{links}",
        }
    settings = SweepSettings(
        space=args.sweep,
        name=name,
        storage=str(storage),
        tracking_uri=uri,
        kind="final",
        cpus_per_trial=args.cpus_per_trial if args.cpus_per_trial is not None else 1.0,
        gpus_per_trial=args.gpus_per_trial or 0.0,
        max_concurrent=args.max_concurrent,
        max_failures=args.max_failures if args.max_failures is not None else 2,
        keep_checkpoints=args.keep_checkpoints or "none",
    )
    params = {
        "name": name,
        "storage": str(storage),
        "source_sweep": args.sweep,
        "objective": str(objective),
        "top_k": top_k,
        "seeds": ",".join(map(str, seeds)),
        "retrain_epochs": ",".join(dict.fromkeys(str(cfg.get("retrain.max_epochs")) for cfg in configs)),
        **{f"set.{k}": v for k, v in sets.items()},
    }
    tags = {"experiment": experiment, "source_sweep": args.sweep, "source_parent_run": parent.info.run_id}
    return settings, plan, extra_tags, params, tags
