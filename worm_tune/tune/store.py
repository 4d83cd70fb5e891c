"""The MLflow store, without Ray: the URI, the experiment, parent and trial runs, their states.

One experiment per search space, one parent run per sweep, one child run per trial. The default
store is ``mlflow.db`` in the working directory, as an absolute ``sqlite:///`` URI, with artifacts
beside it in ``mlartifacts/``, recorded relative to that folder: ``mlflow ui`` started there with no
flags shows the sweep, artifacts included, even after the folder is copied or moved. The writes
during a sweep are made by :class:`~worm_tune.tune.callback.MlflowCallback`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import logging
import os
import shlex
import sqlite3
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from worm_tune import locks
from worm_tune.config import RUNTIME_FIELDS
from worm_tune.paths import storage_flag
from worm_tune.ticket.methods import METHODS

DEFAULT_DB = "mlflow.db"


ARTIFACTS_DIR = "mlartifacts"


#: Tags on every run this package writes; the analysis and ``final`` find runs by them.
TAG_KIND, TAG_SWEEP, TAG_TRIAL = "worm_tune.kind", "worm_tune.sweep", "worm_tune.trial_id"
#: A shared sweep's trial run: the group trials it trained in, as ``<Ray trial id>@<epoch it joined after>``.
TAG_GROUPS = "worm_tune.groups"
#: The experiment tag MLflow 3's UI reads to open an experiment on its model-training view (runs,
#: charts) rather than the GenAI one (traces, evaluations), which a new experiment gets by default.
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
#: Provenance on a parent run: the command line that started it and the package version.
TAG_COMMAND, TAG_VERSION = "worm_tune.command", "worm_tune.version"
PARENT_TAG = "mlflow.parentRunId"
#: Settings of a sweep that are paths on the machine that ran it: a parent run records them as tags
#: (``worm_tune.<setting>``), not params, so the params of a store copied elsewhere name no stale path.
LOCAL_SETTINGS = ("storage", "tracking_uri", "space")


class TrackingError(ValueError):
    """The tracking URI is unusable; the message is one line."""


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``.

    SQLite paths are made absolute so trials (which run in their own folders) and ``mlflow ui``
    agree on one file. The deprecated file store (``./mlruns``, ``file:``) is refused.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_DB}"
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        return f"sqlite:///{path.resolve()}"
    if uri.startswith(("http://", "https://", "postgresql", "mysql", "mssql", "databricks")):
        return uri
    raise TrackingError(
        f"tracking URI {uri!r} is not supported: use sqlite:///path/to/mlflow.db, an http(s):// MLflow server "
        "or a database URI (the ./mlruns file store is deprecated)"
    )


def sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


@contextlib.contextmanager
def _no_http_retries() -> Iterator[None]:
    """A reachability probe should fail in seconds, not after MLflow's minutes of retries."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@functools.cache
def client(uri: str) -> Any:
    """One MLflow client per URI and process."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def check_tracking(uri: str, create: bool = True) -> bool:
    """Open the store once (creating a SQLite file if needed); raise :class:`TrackingError` if unusable.

    ``create=False`` is the check of a command that may yet be refused, which must leave no empty
    ``mlflow.db`` (nor its lock file) behind: a SQLite file not there yet only has its folder checked,
    and an existing one is opened under its lock only if the lock file is there already. Returns
    whether the store exists (False: a new SQLite store, which a later ``create=True`` call makes).
    """
    # Creating a new SQLite store logs its schema migration at INFO: noise for a sweep's user.
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)
    path = sqlite_path(uri)
    if path is not None and not path.parent.is_dir():
        raise TrackingError(f"tracking URI {uri!r} is unusable: folder {str(path.parent)!r} does not exist")
    if path is not None and not create and not path.exists():
        return False
    try:
        # MLflow creates a new SQLite store's schema on first use; two processes doing it at once
        # collide ("table runs already exists"), so the first use is serialised by a file lock.
        with _store_lock(uri, create), _no_http_retries():
            client(uri).search_experiments(max_results=1)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrackingError(f"tracking URI {uri!r} is unreachable: {reason[:200]}") from None
    return True


@contextlib.contextmanager
def _store_lock(uri: str, create: bool = True) -> Iterator[None]:
    """For a SQLite store: an exclusive lock on ``<db>.lock`` beside it; other stores need none.

    ``create=False``: no lock if the lock file is missing. A store made here gets its lock file before
    its database, so a database without one was not made here and is not being migrated by a start of
    ours; creating the lock file would leave a new file beside a store that a refused command touched.
    """
    path = sqlite_path(uri)
    lock = None if path is None else path.with_name(path.name + ".lock")
    if lock is None or not (create or lock.exists()):
        yield
        return
    with locks.exclusive(lock):
        yield


def artifact_root(uri: str, experiment: str) -> Path | None:
    """Where a new experiment of a SQLite store keeps its artifacts (``mlartifacts/<name>``)."""
    path = sqlite_path(uri)
    return None if path is None else path.parent / ARTIFACTS_DIR / experiment


def _relative_artifacts(path: Path, exp_id: str, root: Path) -> None:
    """Record an experiment's artifact location relative to its SQLite file's folder.

    MLflow makes every local location absolute when it creates an experiment, so a store copied
    elsewhere (results rsynced off a cluster) would point back at the old folder. MLflow reads a
    relative location against the working directory: ``mlflow ui`` opened in the store's folder,
    and this package's own artifact I/O (:func:`at_store`), find the artifacts wherever the folder
    is. Its runs and logged models inherit the relative location when they are created.
    """
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
            (root.relative_to(path.parent).as_posix(), int(exp_id)),
        )


@contextlib.contextmanager
def at_store(uri: str) -> Iterator[None]:
    """Artifact reads and writes of a SQLite store, made from its folder, where its relative
    artifact locations resolve (a no-op when that is the working directory already, or for a server)."""
    path = sqlite_path(uri)
    if path is None or Path.cwd() == path.parent:
        yield
        return
    with contextlib.chdir(path.parent):
        yield


def experiment_id(uri: str, name: str) -> str:
    """Get or create the experiment (under the store lock: two sweeps may create it at once)."""
    mlflow_client = client(uri)
    with _store_lock(uri):
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        root = artifact_root(uri, name)
        exp_id = mlflow_client.create_experiment(
            name, artifact_location=root.as_uri() if root else None, tags={EXPERIMENT_KIND: MODEL_TRAINING}
        )
        path = sqlite_path(uri)
        if path is not None and root is not None:
            _relative_artifacts(path, exp_id, root)
        return exp_id


def start_parent_run(
    uri: str, exp_id: str, sweep: str, kind: str, tags: Mapping[str, str], params: Mapping[str, Any]
) -> str:
    """The run that groups a sweep's (or a final rerun's) trials; machine paths among ``params`` become
    tags (:data:`LOCAL_SETTINGS` and ``--set`` runtime fields; a space is a param by its name)."""
    local_keys = {*LOCAL_SETTINGS, *(f"set.{k}" for k in RUNTIME_FIELDS)}
    local = {f"worm_tune.{k}": str(v) for k, v in params.items() if k in local_keys}
    params = {k: v for k, v in params.items() if k not in local_keys}
    if "worm_tune.space" in local:
        params["space"] = Path(local["worm_tune.space"]).stem
    tags = {TAG_KIND: kind, TAG_SWEEP: sweep, **local, **tags}
    run = client(uri).create_run(exp_id, run_name=sweep, tags=tags)
    log_params(uri, run.info.run_id, params)
    return run.info.run_id


def provenance(prog: str, argv: Sequence[str]) -> dict[str, str]:
    """MLflow's source tags and ours for a parent run: the command, the package version and, where the
    package is a git checkout, its commit (``mlflow ui`` shows it on the run page)."""
    tags = {
        "mlflow.source.name": prog,
        "mlflow.source.type": "LOCAL",
        TAG_COMMAND: shlex.join([*prog.split(), *argv]),
        TAG_VERSION: _version(),
    }
    commit = _git_commit(Path(__file__).resolve().parents[2])
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def _version() -> str:
    try:
        return importlib.metadata.version("worm_tune")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _git_commit(folder: Path) -> str:
    """HEAD of the git checkout ``folder`` is in, or "" (not a checkout, no git, or git too slow)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def find_parent_run(uri: str, sweep: str, kind: str = "sweep") -> Any | None:
    """The newest parent run of the named sweep in any experiment, or None."""
    mlflow_client = client(uri)
    experiments = [e.experiment_id for e in mlflow_client.search_experiments()]
    if not experiments:
        return None
    runs = mlflow_client.search_runs(
        experiments,
        filter_string=f"tags.`{TAG_SWEEP}` = '{sweep}' and tags.`{TAG_KIND}` = '{kind}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def driver_state(parent: Any) -> str:
    """What became of a RUNNING parent run: its driver still holds the sweep's lock, or is gone.

    Read from the lock file in the sweep's folder (its ``worm_tune.storage`` tag and ``name`` param);
    a kill -9 of the driver releases the lock, so "gone" is what a dead driver looks like.
    """
    params, tags = parent.data.params, parent.data.tags
    storage = tags.get("worm_tune.storage", params.get("storage"))  # a param in runs logged before it was a tag
    name = params.get("name") or tags.get(TAG_SWEEP)
    if not storage or not name:
        return "is running or was stopped (no sweep folder is recorded to tell which)"
    holder = locks.holder(Path(storage) / name)
    if holder is not None:
        return f"is being run by {holder}; wait for it to finish"
    where = storage_flag(storage)
    if parent.data.tags.get(TAG_KIND) == "final":
        command = f"python -m worm_tune.final {params.get('source_sweep', '?')} --resume --name {name}{where}"
    else:
        space = tags.get("worm_tune.space", params.get("space", "?"))
        command = f"python -m worm_tune.sweep {space} --resume --name {name}{where}"
    return f"did not finish and its driver is gone; `{command}` continues it"


def child_runs(uri: str, parent: Any) -> list[Any]:
    """Every trial run under a parent run."""
    return list(
        client(uri).search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'",
            max_results=50000,
        )
    )


def mark_interrupted(uri: str, parent_run_id: str, trial_ids: set[str]) -> None:
    """Reopen-able state for the runs of trials an interrupt cut short (by Ray trial id, or a shared
    sweep's config hash): KILLED, tagged ``interrupted`` (Tune closed them as if stopped);
    ``--resume`` sets them running again."""
    parent = client(uri).get_run(parent_run_id)
    for run in child_runs(uri, parent):
        if run.data.tags.get(TAG_TRIAL) in trial_ids:
            client(uri).set_tag(run.info.run_id, "status", "interrupted")
            client(uri).set_terminated(run.info.run_id, "KILLED")


def log_metrics(uri: str, run_id: str, values: Mapping[str, float]) -> None:
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    client(uri).log_batch(run_id, metrics=[Metric(k, float(v), stamp, 0) for k, v in values.items()])


def log_params(uri: str, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)) for k, v in params.items()]
    for start in range(0, len(items), 100):
        client(uri).log_batch(run_id, params=items[start : start + 100])


def end_run(uri: str, run_id: str, status: str) -> None:
    client(uri).set_terminated(run_id, status)


def trial_status(summary: Mapping[str, Any], error: bool) -> str:
    """One word for how a trial ended: converged, not_converged, diverged, stopped_early or error."""
    if error:
        return "error"
    if summary.get("diverged"):
        return "diverged"
    if not summary.get("done"):
        return "stopped_early"
    if not METHODS[summary["method"]].searches:
        return "dense"
    return "converged" if summary.get("converged") else "not_converged"


def _as_metric(value: Any) -> float | None:
    if value is None or isinstance(value, str):
        return None
    value = float(value)
    return None if value != value else value  # NaN means "not known yet": not logged
