"""A sweep's trials as two pandas tables, read from MLflow or from the sweep's Ray folder.

``trials``: one row per trial. Columns: ``trial_id``, ``run_id`` ("" when read from Ray),
``method``, ``seed``, ``status`` (converged, not_converged, diverged, stopped_early, error,
dense, interrupted, running), ``config_hash``, ``node_id`` (the Ray node it ran on, "" when
unknown: runs logged before it was recorded), every config field by its dotted name
(``search.ratio``, ``worm.delta``, ... typed as in :class:`~worm_tune.config.TrialConfig`), and
every summary metric of :data:`worm_tune.metrics.SUMMARY` (NaN where unknown).

``curves``: one row per trial and epoch. Columns: ``trial_id``, ``step`` (the trial's epoch,
1-based, as logged), ``phase`` (search, retrain or train), ``phase_epoch`` (1-based within the
phase), and every curve of :data:`worm_tune.metrics.CURVES`: ``d_max`` and
``d_avg`` are NaN until the window is full, ``r`` and ``truncated_units`` are the truncating
methods' only (NaN for the others), ``mask_converged`` is the search's only.

Both sources give the same tables, so the analysis runs whether or not MLflow is reachable. Each
reader only extracts its source's raw values; one row builder and one curve builder make the
tables, and read runs logged before a rename under the metric's former name (``truncated_units``
was ``truncated_channels``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from worm_tune import locks, metrics
from worm_tune.config import TrialConfig, field_types
from worm_tune.paths import storage_flag
from worm_tune.ticket.methods import METHODS
from worm_tune.tickets import TICKET_FILE, Ticket
from worm_tune.tune import store
from worm_tune.tune.plan import (
    CHOSEN_FILE,
    GROUP_KEY,
    IMPORTANCE,
    MEMBERS,
    SETTINGS_FILE,
    TRIAL_STATES_FILE,
    SweepSettings,
    config_overrides,
    make_plan,
    staying,
)
from worm_tune.tune.spaces import Objective, SpaceError
from worm_tune.tune.until import LOOKS_TAG, SEEDS_TAG, STOP_TAG, Record

#: Statuses of trials that ran their search and retraining to the end: the ones compared.
FINISHED = ("converged", "not_converged")


class LoadError(ValueError):
    """The sweep cannot be found or read; the message is one line."""


@dataclass
class Sweep:
    """One sweep's trials, where they came from, and what is known to be missing."""

    name: str
    source: str  # "MLflow <uri>" or "Ray folder <path>"
    trials: pd.DataFrame
    curves: pd.DataFrame
    running: bool = False  # the parent run (or a trial) has not ended
    #: For a running sweep: who runs it, or that its driver is gone and how to continue it.
    driver: str = ""
    tracking_uri: str | None = None
    parent_run_id: str | None = None
    #: The search space the sweep was planned from (a name or a path); None for a ``final`` rerun.
    space: str | None = None
    notes: list[str] = field(default_factory=list)
    #: How the sweep picked its trials (``grid``, ``optuna``), as its parent run records it; None: unknown.
    search: str | None = None
    #: The objectives the sweep logged (empty: none logged, or read from Ray).
    objectives: tuple[Objective, ...] = ()
    #: The parent run's :data:`IMPORTANCE` metrics, by name: present once an Optuna study has ended.
    importances: dict[str, float] = field(default_factory=dict)
    #: A sequential sweep's rule (``--until``; None: the grid as given), the seeds in the order its batches
    #: added them, the paired seeds at each of its looks and why it stopped (None: not stopped).
    until: str | None = None
    seed_order: tuple[int, ...] = ()
    looks: tuple[int, ...] = ()
    stop: str | None = None


# -- MLflow ----------------------------------------------------------------------------------


def find_parent(uri: str, name: str) -> tuple[Any, str | None]:
    """The parent run of sweep ``name`` (or of the newest sweep of experiment ``name``), and a note
    saying which sweep an experiment name picked. None when there is neither."""
    for kind in ("sweep", "final"):
        parent = store.find_parent_run(uri, name, kind)
        if parent is not None:
            return parent, None
    client = store.client(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return None, None
    parents = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{store.TAG_KIND}` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1000,
    )
    if not parents:
        return None, None
    newest = parents[0]
    note = None
    if len(parents) > 1:
        note = (
            f"experiment {name!r} holds {len(parents)} sweeps; this report is for the newest, "
            f"{newest.data.tags[store.TAG_SWEEP]!r} (name a sweep to pick another)"
        )
    return newest, note


def sweep_names(uri: str) -> list[str]:
    """Every sweep name in the store, newest first (for "did you mean" messages)."""
    client = store.client(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    runs = client.search_runs(
        experiments,
        filter_string=f"tags.`{store.TAG_KIND}` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1000,
    )
    return list(dict.fromkeys(r.data.tags[store.TAG_SWEEP] for r in runs))


def from_mlflow(uri: str, parent: Any) -> Sweep:
    """Read every child run of ``parent``: params, summary metrics and per-epoch histories."""
    client = store.client(uri)
    rows, curves = [], []
    for run in store.child_runs(uri, parent):
        tags = run.data.tags
        status = tags.get("status") or {"RUNNING": "running", "KILLED": "interrupted"}.get(run.info.status, "error")
        trial_id = tags.get(store.TAG_TRIAL, run.info.run_id)
        config = _config(run.data.params)
        ids = (trial_id, run.info.run_id, status, tags.get("config_hash", ""), tags.get("node_id"))
        rows.append(_row(*ids, config, metrics.logged_summary(run.data.metrics)))
        after = "retrain" if METHODS[config["method"]].searches else "train"
        for step, phase, phase_epoch, values in _epochs(client, run.info.run_id, set(run.data.metrics), after):
            curves.append(_curve(trial_id, step, phase, phase_epoch, values))
    sweep_name = parent.data.tags.get(store.TAG_SWEEP, parent.info.run_name)
    return Sweep(
        name=sweep_name,
        source=f"MLflow {uri}",
        trials=trials_frame(rows),
        curves=_curves_frame(curves),
        running=parent.info.status == "RUNNING",
        driver=store.driver_state(parent) if parent.info.status == "RUNNING" else "",
        tracking_uri=uri,
        parent_run_id=parent.info.run_id,
        space=None if parent.data.tags.get(store.TAG_KIND) == "final" else _space_of(parent),
        search=parent.data.params.get("search"),
        objectives=_objectives(parent.data.params.get("objectives", "")),
        importances={k: v for k, v in parent.data.metrics.items() if k.startswith(f"{IMPORTANCE}/")},
        **_sequential(parent.data.params.get("until"), parent.data.tags),
    )


def _sequential(until: str | None, tags: Mapping[str, str]) -> dict[str, Any]:
    """A sequential sweep's fields of :class:`Sweep` from its parent run (a param logged as "None": no rule)."""
    if until in (None, "None"):
        return {}

    def numbers(tag: str) -> tuple[int, ...]:
        return tuple(int(n) for n in tags.get(tag, "").split(",") if n)

    return {"until": until, "seed_order": numbers(SEEDS_TAG), "looks": numbers(LOOKS_TAG), "stop": tags.get(STOP_TAG)}


def _objectives(logged: str) -> tuple[Objective, ...]:
    """The objectives of a parent run's ``objectives`` param, a list as ``str`` writes it
    (``['search_epochs:min', 'final_acc:max']``); one that does not parse is left out."""
    out = []
    for text in logged.strip("[]").split(","):
        with contextlib.suppress(SpaceError):
            if text := text.strip(" '\""):
                out.append(Objective.parse(text))
    return tuple(out)


def _space_of(parent: Any) -> str | None:
    """The space a sweep's parent run records: its path on the machine that ran it, else its name."""
    return parent.data.tags.get("worm_tune.space") or parent.data.params.get("space")


#: MLflow's switch for the progress bar it draws on stderr for each artifact download.
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def ticket(uri: str, run_id: str) -> Ticket:
    """A trial's ticket (:class:`~worm_tune.tickets.Ticket`: the mask it pruned with) from its MLflow
    run. ``LookupError`` if it has none: a dense trial, or one that ended before its prune. Quietly:
    a report reads every trial's, and MLflow would draw a progress bar for each."""
    client = store.client(uri)
    with store.at_store(uri), _environ(PROGRESS_BAR, "false"):
        if TICKET_FILE not in {a.path for a in client.list_artifacts(run_id)}:
            raise LookupError(f"run {run_id} logged no {TICKET_FILE}: a dense trial, or one that ended before pruning")
        with tempfile.TemporaryDirectory() as tmp:
            return Ticket.load(client.download_artifacts(run_id, TICKET_FILE, tmp))


@contextlib.contextmanager
def _environ(key: str, value: str) -> Iterator[None]:
    """Set an environment variable for the block, then restore it as it was."""
    before = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _epochs(client: Any, run_id: str, keys: set[str], after: str) -> list[tuple[int, str, int, dict[str, float]]]:
    """A run's logged epochs as (step, phase, epoch within the phase, curve values by name).

    Today's runs log each curve in its phase's section. A run logged before sections has bare names,
    and its search epochs are those that logged ``mask_converged`` (``after`` names the phase that
    follows); a sweep begun before sections and resumed after has both, each epoch under one.
    """
    wanted = set(metrics.CURVES) | metrics.RETIRED
    sectioned: dict[int, dict[str, float]] = {}
    bare: dict[int, dict[str, float]] = {}
    phases: dict[int, str] = {}
    for key in keys:
        section, name = metrics.parse_logged(key)
        if name not in wanted or section == metrics.SUMMARY_SECTION:
            continue
        for m in client.get_metric_history(run_id, key):
            (sectioned if section else bare).setdefault(m.step, {})[name] = m.value
            if section:
                phases[m.step] = section
    for step, values in bare.items():
        if step not in sectioned:
            sectioned[step] = values
            phases[step] = "search" if "mask_converged" in values else after
    searched = sum(1 for phase in phases.values() if phase == "search")
    return [
        (step, phases[step], step if phases[step] == "search" else step - searched, sectioned[step])
        for step in sorted(sectioned)
    ]


# -- Ray -------------------------------------------------------------------------------------


def is_sweep_folder(path: Path) -> bool:
    return (path / SETTINGS_FILE).is_file()


def from_ray(folder: Path) -> Sweep:
    """Read a sweep's Ray folder (``<storage>/<name>``): each trial's ``result.json`` and config.

    Needs no tracking store and no Ray: the trials' configs are the sweep's base (rebuilt from
    its saved settings) plus each trial's own overrides (Ray's ``params.json``); a trial still
    runs when its Ray experiment's recorded state says so, or, before that is written, while the
    sweep's driver holds its lock.
    """
    settings = SweepSettings.load(folder)
    base = _base_config(settings, folder)
    driven = locks.holder(folder) is not None
    rows, curves = [], []
    running = False
    for experiment in sorted(p for p in folder.iterdir() if p.is_dir()):
        states_file = experiment / TRIAL_STATES_FILE  # written when the Ray experiment ends
        states = json.loads(states_file.read_text()) if states_file.is_file() else {}
        for trial in _ray_trials(experiment, states):
            cfg = base.replace(config_overrides(trial.point))
            summary = trial.results[-1]["summary"] if trial.results else {}
            status = store.trial_status(summary, trial.error)
            in_flight = driven and not summary.get("done") and not trial.error  # its experiment has not ended yet
            if (trial.state is not None and trial.state not in ("TERMINATED", "ERROR")) or (
                trial.state is None and in_flight
            ):
                status, running = "running", True
            elif trial.state is None and not summary.get("done") and not trial.error and trial.shared:
                status = "interrupted"  # it left its group for one that had not started when the sweep stopped
            node = trial.results[0].get("node_id") if trial.results else None  # epoch 1's, as the MLflow tag
            rows.append(_row(trial.trial_id, "", status, cfg.hash(), node, cfg.to_flat(), summary))
            for result in trial.results:
                step = int(result["training_iteration"])
                curves.append(_curve(trial.trial_id, step, result.get("phase"), result.get("epoch"), result))
    return Sweep(
        name=settings.name,
        source=f"Ray folder {folder}",
        trials=trials_frame(rows),
        curves=_curves_frame(curves),
        running=running,
        driver=_ray_driver_state(folder, settings) if running else "",
        tracking_uri=settings.tracking_uri,
        parent_run_id=settings.parent_run_id,
        space=None if settings.kind == "final" else settings.space,
        **_recorded(settings, folder),
    )


def _recorded(settings: SweepSettings, folder: Path) -> dict[str, Any]:
    """A sequential sweep's fields of :class:`Sweep` from the record its searcher keeps in its folder."""
    record = Record.load(folder) if settings.until is not None else None
    if record is None:
        return {"until": settings.until}
    looks = tuple(one.seeds for one in record.looks)
    return {"until": settings.until, "seed_order": tuple(record.seeds), "looks": looks, "stop": record.stop}


@dataclass
class _RayTrial:
    """One trial as a Ray folder records it: its id, Ray config, results (one per epoch), whether it
    failed and its state as Ray last saved it (None: not recorded)."""

    trial_id: str
    point: dict[str, Any]
    results: list[dict[str, Any]]
    error: bool
    state: str | None
    shared: bool = False  # trained in a shared sweep's group trials


def _ray_trials(experiment: Path, states: Mapping[str, str]) -> list[_RayTrial]:
    """The trials of one Ray experiment folder. A shared sweep's group trial reports each member
    under :data:`MEMBERS`: a member's results are its reports across the group trials it trained in
    (by config hash, its MLflow run's trial id), its end that of the group it stayed in to the end."""
    trials, reports, ends = [], defaultdict(dict), {}
    for trial_dir in sorted(p for p in experiment.iterdir() if (p / "result.json").is_file()):
        trial_id = trial_dir.name.rsplit("-", 1)[-1]
        results = _results(trial_dir / "result.json")
        params = json.loads((trial_dir / "params.json").read_text()) if (trial_dir / "params.json").exists() else {}
        error, state = (trial_dir / "error.txt").exists(), states.get(trial_id)
        if GROUP_KEY not in params:
            trials.append(_RayTrial(trial_id, params, results, error, state))
            continue
        for result in results:
            for member in result[MEMBERS]:
                reports[member["config_hash"]][int(member["training_iteration"])] = member
        for member in staying(results[-1]) if results else ():
            ends[member["config_hash"]] = (error, state)
    for key, by_epoch in reports.items():
        results = [by_epoch[k] for k in sorted(by_epoch)]
        error, state = ends.get(key, (False, None))
        trials.append(_RayTrial(key, results[-1]["point"], results, error, state, shared=True))
    return trials


def _ray_driver_state(folder: Path, settings: SweepSettings) -> str:
    holder = locks.holder(folder)
    if holder is not None:
        return f"is being run by {holder}"
    module = "final" if settings.kind == "final" else "sweep"
    command = f"python -m worm_tune.{module} {settings.space} --resume --name {settings.name}"
    command += storage_flag(settings.storage)
    return f"did not finish and its driver is gone; `{command}` continues it"


def _base_config(settings: SweepSettings, folder: Path) -> TrialConfig:
    if (folder / CHOSEN_FILE).exists():  # a ``final`` rerun: its configs are saved, its "space" is a sweep name
        configs = json.loads((folder / CHOSEN_FILE).read_text())["configs"]
        return TrialConfig.from_dict(configs[0])
    return make_plan(settings).base


def _results(path: Path) -> list[dict[str, Any]]:
    """Ray's result lines, one per epoch: an epoch re-run after a restore keeps its last line, and
    a line a running trial is still writing is left for the next read."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        try:
            result = json.loads(line)
        except json.JSONDecodeError:
            continue
        by_epoch[int(result["training_iteration"])] = result
    return [by_epoch[k] for k in sorted(by_epoch)]


# -- tables ----------------------------------------------------------------------------------


def _row(
    trial_id: str,
    run_id: str,
    status: str,
    config_hash: str,
    node_id: str | None,
    config: dict[str, Any],
    summary: Mapping[str, Any],
) -> dict[str, Any]:
    """A ``trials`` row from one trial's config and summary values, whichever source they were read from."""
    node = "" if node_id in (None, "None") else str(node_id)  # the callback tags a missing node as "None"
    ids = {"trial_id": trial_id, "run_id": run_id, "status": status, "config_hash": config_hash, "node_id": node}
    return ids | config | {name: _number(summary.get(name)) for name in metrics.SUMMARY}


def _curve(
    trial_id: str, step: int, phase: str | None, phase_epoch: int | None, values: Mapping[str, Any]
) -> dict[str, Any]:
    """A ``curves`` row from one epoch's values, under today's names even where they were logged before a rename."""
    values = metrics.current(values)
    where = {"trial_id": trial_id, "step": step, "phase": phase, "phase_epoch": phase_epoch}
    return where | {name: _number(values.get(name)) for name in metrics.CURVES}


def _config(params: dict[str, str]) -> dict[str, Any]:
    """A run's params as typed config values (unknown keys, e.g. from a newer version, are dropped)."""
    known = {k: v for k, v in params.items() if k in field_types()}
    return TrialConfig().replace(known).to_flat()


def _number(value: Any) -> float:
    if value is None or isinstance(value, str):
        return math.nan
    return float(value)


def trials_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The ``trials`` table from one dict per trial (missing columns are NaN, a missing node ""), in a stable order."""
    columns = ["trial_id", "run_id", "method", "seed", "status", "config_hash", "node_id"]
    columns += [k for k in field_types() if k not in ("method", "seed")]
    columns += list(metrics.SUMMARY)
    frame = pd.DataFrame([{"node_id": ""} | row for row in rows], columns=columns)
    frame["seed"] = frame["seed"].astype("int64")
    return frame.sort_values(["method", "config_hash", "seed"], kind="stable").reset_index(drop=True)


def _curves_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    columns = ["trial_id", "step", "phase", "phase_epoch", *metrics.CURVES]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(["trial_id", "step"], kind="stable").reset_index(drop=True)
