"""``python -m worm_tune.final <sweep>``: confirm a finished sweep's pick on fresh seeds.

Trials of a sweep are pooled by setting (their configuration but the seed); settings are ranked
by the mean of a summary metric over their seeds, so one lucky seed does not pick a config.
The top ``k`` are rerun on seeds the sweep never ran (by default the ``[final] seeds`` after its
largest, 6 without the table: enough pairs for a Wilcoxon test), each truncating config beside its
EarlyBird partner on the same seeds, with the final-training budget (the space's
``[final] retrain_epochs``, ``--retrain-epochs``, else the sweep's). A rerun that would repeat a
sweep trial bit for bit (the same config hash) is not run: the sweep's result is reused. The reruns
are a new Ray experiment under a new MLflow parent run in the same experiment; each rerun's run
carries the ids of the sweep runs it came from (tags and a note with links).

When the reruns end, one pre-stated comparison is the confirmation (:func:`~analysis.confirm.confirmation`): the
top-ranked truncating config minus its EarlyBird partner, paired by seed, on the ranking metric.
Each rerun's network is logged to its run as an MLflow model, and the best pick is registered in the
Model Registry under the space's name (see :func:`log_models`). Everything up to the checks of data
and weights imports no torch or Ray (see :func:`start`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.compare import variant_label
from analysis.confirm import comparison_lines, confirmation
from analysis.stats import MIN_PAIRS
from worm_tune import metrics
from worm_tune.cli.common import add_run_flags, check_name, check_not_driven, check_run_flags
from worm_tune.config import RUNTIME_FIELDS, TRUNCATION_FIELDS, TrialConfig, parse_assignments
from worm_tune.paths import DEFAULT_STORAGE
from worm_tune.ticket.methods import BASELINE, METHODS, applies
from worm_tune.tune import store
from worm_tune.tune.errors import USAGE_ERRORS
from worm_tune.tune.plan import (
    CHOSEN_FILE,
    SETTINGS_FILE,
    Plan,
    SweepSettings,
    cell,
    grid_plan,
    pair_key,
    setting_hash,
    sweep_columns,
    trial_table,
)
from worm_tune.tune.spaces import OBJECTIVES, FinalSpec, Objective, SpaceError, load_space
from worm_tune.usage import Parser, UsageError, check_range, format_table, run_command

PROG = "python -m worm_tune.final"
#: Settings rerun without ``--top-k`` or a space's ``[final] top_k``.
DEFAULT_TOP_K = 3
#: Fresh seeds without ``--seeds``, ``--num-seeds`` or a space's ``[final] seeds``: the fewest pairs a
#: Wilcoxon test is given for.
DEFAULT_SEEDS = MIN_PAIRS
#: The confirmation's text, an artifact of the rerun's parent run (and its ``confirmation`` tag).
CONFIRMATION_FILE = "confirmation.md"
#: Parent-run tags that pre-state the confirmation: each truncating pick and its EarlyBird partner, in
#: rank order, as ``pick:partner`` setting hashes (:func:`~worm_tune.tune.plan.setting_hash`; the first
#: is the confirmation, the others exploratory), the sweep's seeds, and the sweep runs reused as reruns.
TAG_PAIRS, TAG_SWEEP_SEEDS, TAG_REUSED = "final_pairs", "sweep_seeds", "reused_runs"


@dataclass(frozen=True)
class Candidate:
    """One setting of the sweep (:func:`~worm_tune.tune.plan.setting_hash`): its runs, and its mean score over seeds."""

    setting: str
    config: TrialConfig
    run_ids: tuple[str, ...]
    score: float


@dataclass(frozen=True)
class Reruns:
    """What a ``final`` runs: each setting (by :func:`~worm_tune.tune.plan.setting_hash`) on each seed.
    ``picks``: the chosen settings with their rank in the sweep;
    ``pairs``: each truncating pick's EarlyBird partner, in rank order; ``reused``: the planned reruns
    that repeat a sweep trial, which are not run (config hash -> the sweep's run); ``sources``: the
    sweep's setting each rerun setting came from, where the sweep ran it."""

    configs: list[TrialConfig]
    picks: dict[str, int]
    pairs: dict[str, str]
    reused: dict[str, Any]
    sources: dict[str, Candidate]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Confirm the best configurations of a finished sweep on fresh seeds, each truncating one beside "
        "its EarlyBird partner, and test the top one against its partner. Each rerun's network is logged to its "
        "MLflow run; the best one is registered as a new version of the model named after the sweep's space.",
    )
    parser.add_argument("sweep", help="the sweep's name (as given to or printed by worm_tune.sweep)")
    parser.add_argument("--metric", default=None, help=f"rank by this summary metric: {', '.join(OBJECTIVES)}")
    parser.add_argument(
        "--mode", choices=("min", "max"), default=None, help="better is min or max (default: the metric's)"
    )
    parser.add_argument(
        "--top-k",
        type=int,
        default=None,
        help=f"how many configurations to rerun (default: the space's [final] top_k, else {DEFAULT_TOP_K})",
    )
    parser.add_argument(
        "--seeds", default=None, help="comma-separated seeds for each rerun (default: fresh seeds, see --num-seeds)"
    )
    parser.add_argument(
        "--num-seeds",
        type=int,
        default=None,
        help=f"rerun on this many fresh seeds, those after the sweep's largest (default: the space's [final] seeds, "
        f"else {DEFAULT_SEEDS})",
    )
    parser.add_argument(
        "--retrain-epochs",
        type=int,
        default=None,
        help="retraining budget of the reruns (default: the space's [final] retrain_epochs, else the sweep's)",
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


def partner(cfg: TrialConfig, earlybirds: Sequence[TrialConfig] = ()) -> TrialConfig:
    """The EarlyBird trial a config is compared with (EarlyBird is its own): the same setting and seed
    with r = 1. The one of ``earlybirds`` (the sweep's EarlyBird settings) paired with it
    (:func:`~worm_tune.tune.plan.pair_key`), else EarlyBird with WORM's knobs at their defaults
    (which EarlyBird ignores)."""
    if not METHODS[cfg.method].truncates:
        return cfg
    for earlybird in earlybirds:
        found = earlybird.replace({"seed": cfg.seed})
        if found.method == BASELINE and pair_key(found) == pair_key(cfg):
            return found
    return _without_worm_knobs(cfg).replace({"method": BASELINE}).validate()


def plan_reruns(
    candidates: Sequence[Candidate],
    top_k: int,
    seeds: Sequence[int],
    retrain_epochs: int | None,
    sets: dict[str, str],
    sweep_runs: Sequence[Any] = (),
) -> Reruns:
    """The top ``k`` of ``candidates`` (the sweep's ranking), and each truncating one's EarlyBird partner
    (the sweep's EarlyBird setting of its pair, once however many share it), on each seed; their own
    retraining budget unless ``retrain_epochs`` is given. A rerun with the hash of one of ``sweep_runs``
    (the sweep's finished trials) is listed in ``reused``, not in ``configs``."""
    budget = {} if retrain_epochs is None else {"retrain.max_epochs": retrain_epochs}
    # A rerun never inherits the sweep's fault injection (``--set crash_at_epoch=K`` still works).
    rerun = {c.setting: c.config.replace({**budget, "crash_at_epoch": 0, **sets}).validate() for c in candidates}
    sources = {setting_hash(rerun[c.setting]): c for c in candidates}
    earlybirds = [cfg for cfg in rerun.values() if cfg.method == BASELINE]
    settings: dict[str, TrialConfig] = {}
    picks: dict[str, int] = {}
    pairs: dict[str, str] = {}
    for i, c in enumerate(candidates[:top_k], 1):
        cfg = rerun[c.setting]
        settings[setting_hash(cfg)], picks[setting_hash(cfg)] = cfg, i
        if METHODS[cfg.method].truncates:
            base = partner(cfg, earlybirds)
            settings.setdefault(setting_hash(base), base)
            pairs[setting_hash(cfg)] = setting_hash(base)
    done = {source_config(r).hash(): r for r in sweep_runs if r.info.status == "FINISHED"}
    configs = [cfg.replace({"seed": seed}).validate() for cfg in settings.values() for seed in seeds]
    reused = {c.hash(): done[c.hash()] for c in configs if c.hash() in done}
    sources = {k: v for k, v in sources.items() if k in settings}
    return Reruns([c for c in configs if c.hash() not in reused], picks, pairs, reused, sources)


def rerun_plan(configs: Sequence[TrialConfig]) -> Plan:
    """The reruns' plan. Its base is an EarlyBird rerun's config where there is one (else the first with
    WORM's knobs at their defaults): a field set on top of the base is shown in a trial's table row
    and run name, and so an EarlyBird rerun shows none of WORM's knobs."""
    base = next((c for c in configs if c.method == BASELINE), None)
    return grid_plan(configs, base or _without_worm_knobs(configs[0]))


def _without_worm_knobs(cfg: TrialConfig) -> TrialConfig:
    """``cfg`` with WORM's knobs at their defaults: what EarlyBird, which ignores them, is run with."""
    defaults = TrialConfig().to_flat()
    return cfg.replace({k: defaults[k] for k in TRUNCATION_FIELDS})


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
        plan = rerun_plan([TrialConfig.from_dict(c) for c in saved["configs"]])
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
    options["on_end"] = lambda ended: _on_end(ended, objective, experiment, tags)
    return launch.launch(PROG, args, settings, plan, experiment, params, tags=tags, **options)


def _on_end(settings: SweepSettings, objective: Objective, name: str, tags: Mapping[str, str]) -> None:
    """The confirmation first (it reads only the runs' metrics), then the networks."""
    confirm(settings, objective, tags)
    log_models(settings, objective, name)


def log_models(settings: SweepSettings, objective: Objective, name: str) -> None:
    """Log each finished rerun's network to its run (:mod:`worm_tune.tune.model_logging`) and register the
    best pick (not a partner outside the top k) as a new version of the model ``name``.

    The best: the configuration with the best mean over the rerun's seeds (the sweep's rule, on new
    seeds, so the sweep's rank 1 can lose it), and of its seeds the one with the best score, whose
    network is the one to use.
    """
    from worm_tune.tune import model_logging

    uri = settings.tracking_uri
    runs = store.child_runs(uri, store.client(uri).get_run(settings.parent_run_id))
    bundles: dict[Any, Any] = {}
    logged = {r.info.run_id: model_logging.log_network(uri, settings.folder, r, bundles) for r in runs}
    candidates = rank([r for r in runs if logged[r.info.run_id] and "final_rank" in r.data.tags], objective)
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


def confirm(settings: SweepSettings, objective: Objective, tags: Mapping[str, str]) -> None:
    """Print the confirmation (:func:`confirmation`) from the reruns' runs and the sweep runs they reused,
    and log it to the parent run: its ``confirmation`` tag (the verdict line) and :data:`CONFIRMATION_FILE`."""
    pairs = [pair.split(":") for pair in tags.get(TAG_PAIRS, "").split(",") if pair]
    if not pairs:
        print("confirmation: no truncating configuration among the reruns, so no comparison with EarlyBird")
        return
    uri = settings.tracking_uri
    client = store.client(uri)
    runs = store.child_runs(uri, client.get_run(settings.parent_run_id))
    runs += [client.get_run(i) for i in tags.get(TAG_REUSED, "").split(",") if i]
    per_seed: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
    labels: dict[str, str] = {}
    for run in runs:
        if run.info.status == "FINISHED":
            setting = run.data.tags["group_hash"]
            per_seed[setting][int(run.data.params["seed"])] = metrics.logged_summary(run.data.metrics)
            labels[setting] = variant_label(source_config(run).to_flat())
    (pick, base), others = pairs[0], pairs[1:]
    sweep_seeds = {int(s) for s in tags.get(TAG_SWEEP_SEEDS, "").split(",") if s}
    lines = confirmation(labels.get(pick, pick), per_seed[pick], per_seed[base], objective, sweep_seeds)
    if others:
        lines += ["", "exploratory (not part of the test), the other picks against their EarlyBird partners:"]
        for other, partner_setting in others:
            lines += comparison_lines(
                labels.get(other, other), per_seed[other], per_seed[partner_setting], objective.metric
            )
    text = "\n".join(lines)
    print("\n" + text, flush=True)
    client.set_tag(settings.parent_run_id, "confirmation", lines[0])
    with store.at_store(uri):
        client.log_text(settings.parent_run_id, text + "\n", CONFIRMATION_FILE)


def _final_table(parent: Any) -> FinalSpec:
    """The sweep's space's ``[final]`` table (its space and profile are the parent run's params); the
    defaults, said in one line, when the space cannot be read any more."""
    space, profile = parent.data.params.get("space"), parent.data.params.get("profile", "default")
    if space is None:
        print("the sweep's space is not recorded: final's defaults apply", flush=True)
        return FinalSpec()
    try:
        return load_space(space, profile).final
    except SpaceError as exc:
        print(f"the sweep's space cannot be read ({exc}): final's defaults apply", flush=True)
        return FinalSpec()


def _new_rerun(args: argparse.Namespace, storage: Path) -> tuple[SweepSettings, Plan, dict, dict, dict]:
    objective = Objective.parse(f"{args.metric or 'final_acc'}{':' + args.mode if args.mode else ''}")
    check_range("--top-k", args.top_k, 1, integer=True)
    check_range("--num-seeds", args.num_seeds, 1, integer=True)
    check_range("--retrain-epochs", args.retrain_epochs, 1, integer=True)
    if args.seeds is not None and args.num_seeds is not None:
        raise UsageError("--seeds and --num-seeds both given: name the seeds or say how many fresh ones, not both")
    check_run_flags(args)
    explicit = _seeds(args.seeds) if args.seeds is not None else None
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
    sweep_runs = store.child_runs(uri, parent)
    candidates = rank(sweep_runs, objective)
    if not candidates:
        raise UsageError(f"sweep {args.sweep!r} has no finished trial with a {objective.metric} to rank by")
    table = _final_table(parent)
    top_k = args.top_k or table.top_k or DEFAULT_TOP_K
    sweep_seeds = sorted({int(r.data.params["seed"]) for r in sweep_runs if "seed" in r.data.params})
    if explicit is None:
        count = args.num_seeds or table.seeds or DEFAULT_SEEDS
        start_at = sweep_seeds[-1] + 1 if sweep_seeds else 0
        seeds = list(range(start_at, start_at + count))
        notes = [f"seeds: {', '.join(map(str, seeds))} (the {count} after the sweep's largest, {start_at - 1})"]
    else:
        seeds, notes = explicit, [f"seeds: {', '.join(map(str, explicit))} (--seeds)"]
    retrain = args.retrain_epochs or table.retrain_epochs
    if args.retrain_epochs is not None:
        notes.append(f"retraining budget: {retrain} epochs (--retrain-epochs)")
    elif retrain is not None:
        notes.append(f"retraining budget: {retrain} epochs (the space's [final] retrain_epochs)")
    else:
        notes.append(
            "retraining budget: the sweep's (each config's retrain.max_epochs); set the space's [final] "
            "retrain_epochs or --retrain-epochs for a final-training one"
        )
    print(ranking(candidates, objective, top_k) + "\n", flush=True)
    reruns = plan_reruns(candidates, top_k, seeds, retrain, sets, sweep_runs)
    notes += [f"reused from the sweep: {r.info.run_name} ({h})" for h, r in reruns.reused.items()]
    print("\n".join(notes) + "\n", flush=True)
    if not reruns.configs:
        raise UsageError("every planned rerun repeats a trial of the sweep (listed above); pick fresh --seeds")
    plan = rerun_plan(reruns.configs)

    experiment = store.client(uri).get_experiment(parent.info.experiment_id).name
    extra_tags = _rerun_tags(args.sweep, parent, objective, reruns)
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
    configs = [*reruns.configs, *(source_config(r) for r in reruns.reused.values())]
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
    tags[TAG_SWEEP_SEEDS] = ",".join(map(str, sweep_seeds))
    if reruns.reused:
        tags[TAG_REUSED] = ",".join(r.info.run_id for r in reruns.reused.values())
    if reruns.pairs:
        tags[TAG_PAIRS] = ",".join(f"{pick}:{base}" for pick, base in reruns.pairs.items())
    return settings, plan, extra_tags, params, tags


def _rerun_tags(sweep: str, parent: Any, objective: Objective, reruns: Reruns) -> dict[str, dict[str, str]]:
    """Each rerun setting's run tags: where it came from in the sweep (its source runs, with links in
    the run's note), its rank for a pick, the ranks it partners for an EarlyBird partner."""
    exp = parent.info.experiment_id
    tags: dict[str, dict[str, str]] = {}
    for setting, source in reruns.sources.items():
        links = "\n".join(f"- [{r}](#/experiments/{exp}/runs/{r})" for r in source.run_ids)
        rank = reruns.picks.get(setting)
        what = (
            f"Rerun of sweep {sweep}, rank {rank} by {objective}" if rank else f"EarlyBird partner from sweep {sweep}"
        )
        tags[setting] = {
            "source_sweep": sweep,
            "source_parent_run": parent.info.run_id,
            "source_runs": ",".join(source.run_ids),
            "source_group": source.setting,
            "source_score": f"{objective.metric}={source.score:.6g}",
            **({"final_rank": str(rank)} if rank else {}),
            "mlflow.note.content": f"{what}. Source runs:\n{links}",
        }
    for setting, ranks in _partnered(reruns).items():
        found = tags.setdefault(setting, {"source_sweep": sweep, "source_parent_run": parent.info.run_id})
        found["partner_of"] = ",".join(map(str, ranks))
        found.setdefault("mlflow.note.content", f"EarlyBird partner of ranks {found['partner_of']} of sweep {sweep}.")
    return tags


def _partnered(reruns: Reruns) -> dict[str, list[int]]:
    """Each EarlyBird partner's setting, with the ranks of the picks it is the partner of."""
    ranks: dict[str, list[int]] = defaultdict(list)
    for pick, setting in reruns.pairs.items():
        ranks[setting].append(reruns.picks[pick])
    return dict(ranks)
