"""MLflow logging for sweeps, from the Ray driver only, through a buffer that outlasts the store.

Every write goes through the driver (:class:`MlflowCallback` is a Tune callback), never through
the trials: one writer means no SQLite locking however many trials run at once, and trials on
other nodes need no access to the tracking store.

The Tune hooks never call MLflow: they copy what they need of the trial into an event and hand it
to a :class:`~worm_tune.tune.spool.Spool` (its ticket too: the footprint callback deletes the
trial's checkpoint right after), whose thread writes the events in order. A tracking server that
goes away delays the writes, not the trials, and a driver killed meanwhile leaves its unwritten
events for ``--resume``. Each event is idempotent (an epoch already logged is skipped, a summary
already logged is not logged again, tags and artifacts are overwritten with the same), so writing
one twice after a crash changes nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, RunTag
from mlflow.exceptions import MlflowException
from ray import tune

from worm_tune import metrics
from worm_tune.config import RUNTIME_FIELDS, TrialConfig
from worm_tune.engine import SEARCH
from worm_tune.ticket.methods import METHODS
from worm_tune.tickets import TICKET_FILE
from worm_tune.tune.plan import GROUP_KEY, MEMBERS, config_overrides, trial_label, trial_reports
from worm_tune.tune.spool import Spool
from worm_tune.tune.store import (
    PARENT_TAG,
    TAG_GROUPS,
    TAG_KIND,
    TAG_SWEEP,
    TAG_TRIAL,
    _as_metric,
    client,
    log_params,
    sqlite_path,
    trial_status,
)

#: MLflow's own HTTP retries and timeout for this process while a writer runs against a server (unless
#: set already): a few seconds per try, not the minutes of its defaults; the writer retries for as long
#: as the server is away.
HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
#: How long the end of a sweep waits for the writes of its last events (s).
FLUSH_S = 60.0
#: Error codes of MLflow for a request that is wrong in itself: trying it again would not help.
REFUSED = {
    "BAD_REQUEST",
    "MALFORMED_REQUEST",
    "INVALID_PARAMETER_VALUE",
    "INVALID_STATE",
    "RESOURCE_DOES_NOT_EXIST",
    "RESOURCE_ALREADY_EXISTS",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "ENDPOINT_NOT_FOUND",
}


class MlflowCallback(tune.Callback):
    """Logs each trial to a child run of the sweep's parent run, from the driver only.

    Picklable (it is saved with the Tuner and restored on ``--resume``): it holds URIs and ids,
    and looks child runs up by tag, so a resumed sweep continues the same runs without logging
    an epoch twice. Its writer thread, queue and caches are not pickled; they start on first use.

    ``folder``: the sweep's folder, where the spool is kept (None: events wait in memory only, and
    a killed driver loses what was not written). A hook waits only while :data:`BUFFER` events wait
    to be written (a store away for that long); otherwise it returns at once. :meth:`flush` waits
    for the writes.
    """

    def __init__(
        self,
        uri: str,
        exp_id: str,
        parent_run_id: str,
        sweep: str,
        base: Mapping[str, Any],
        extra_tags: Mapping[str, Mapping[str, str]] | None = None,
        columns: Sequence[str] | None = None,
        groups: str | None = None,
        folder: str | None = None,
    ) -> None:
        self.uri, self.exp_id, self.parent_run_id, self.sweep = uri, exp_id, parent_run_id, sweep
        self.base = dict(base)
        #: What run names show (:func:`~worm_tune.tune.plan.label_columns`; None: every field a trial sets).
        self.columns = None if columns is None else tuple(columns)
        #: Tags for the runs of particular config groups (``final`` links reruns to their sources).
        self.extra_tags = {k: dict(v) for k, v in (extra_tags or {}).items()}
        #: A shared sweep's folder of group files (:mod:`worm_tune.tune.sharing`); None: unshared.
        self.groups = groups
        #: The sweep's folder, where the spool of events not yet written is kept.
        self.folder = folder
        self._fresh()

    def _fresh(self) -> None:
        """The state of one process: the writer and the runs it has looked up (never pickled)."""
        self._runs: dict[str, str] = {}
        self._last_epoch: dict[str, int] = {}
        self._joined: set[tuple[str, str]] = set()
        self._writer: Spool | None = None
        self._writer_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A callback pickled before shared sweeps has no groups, before the spool no folder; one pickled
        # before the writer holds its (empty) caches, which _fresh replaces.
        public = {k: v for k, v in state.items() if not k.startswith("_")}
        self.__dict__ = {"groups": None, "folder": None, **public}
        self._fresh()

    # -- Tune hooks ----------------------------------------------------------------------------
    # A trial reports for itself, or (a shared sweep's group trial) for each member under
    # MEMBERS: each reported trial has its own run, keyed by its Ray trial id or config hash.
    # Each hook copies what it needs of the trial now: the writer must not touch it later.

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if GROUP_KEY not in trial.config:  # a group's members are known from its first report
            self._submit({"op": "start", "key": trial.trial_id, "point": dict(trial.config), "name": str(trial)})

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if MEMBERS not in result:
            point, name = dict(trial.config), str(trial)
            self._submit({"op": "result", "key": trial.trial_id, "point": point, "name": name, "result": _slim(result)})
            return
        common = {
            "timestamp": result.get("timestamp", 0),
            "node_id": result.get("node_id"),
            "gpu_ids": result.get("gpu_ids"),
        }
        join = {"trial": trial.trial_id, "from_epoch": trial.config.get("from_epoch", 0)}
        for member in result[MEMBERS]:
            event = {"op": "result", "key": member["config_hash"], "point": member["point"], "name": None}
            event |= {"result": _slim(member | common), "notice": result.get("notice"), "join": join}
            self._submit(event)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial, error=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial, error=True)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for key, point, _ in self._reported(trial):
            self._submit({"op": "recover", "key": key, "point": point, "failures": str(trial.num_failures)})

    def _ended(self, trial: Any, error: bool) -> None:
        """A trial's end: its ticket is kept now, before the footprint callback deletes its checkpoint."""
        events = [
            {"op": "finish", "key": key, "point": point, "last": _slim(last), "error": error}
            for key, point, last in self._reported(trial)
        ]
        self._submit(*events, ticket=ticket_file(trial))

    # -- the writer ----------------------------------------------------------------------------

    @property
    def writer(self) -> Spool:
        """The spool and thread that make this callback's writes, started on first use: first what a
        killed driver left in the spool of :attr:`folder`, then the new events."""
        with self._writer_lock:
            if self._writer is None:
                if self.uri.startswith(("http://", "https://")):
                    for key, value in HTTP_SETTINGS.items():
                        os.environ.setdefault(key, value)
                self._writer = Spool(self.folder, self._apply, _refused)
            return self._writer

    def flush(self, timeout_s: float | None = None) -> int:
        """Wait until every event so far is written (at most ``timeout_s`` seconds); how many are not."""
        return self.writer.flush(timeout_s)

    def close(self, timeout_s: float | None = None) -> int:
        """:meth:`flush`, then stop the writer (what is unwritten stays in the spool); how many are not written."""
        return self.writer.close(timeout_s)

    @property
    def spool(self) -> Path | None:
        """The file that keeps the events not yet written (None: kept in memory only)."""
        return self.writer.path

    @property
    def unreachable(self) -> str | None:
        """Why the store could not be written the last time it could not (one line), while it cannot."""
        return None if self._writer is None else self._writer.unreachable

    def _submit(self, *events: dict[str, Any], ticket: Path | None = None) -> None:
        self.writer.submit(*events, ticket=ticket)

    # -- the writes (in the writer thread) -----------------------------------------------------

    def _apply(self, event: dict[str, Any]) -> None:
        """One event's writes; each is harmless to repeat (after a failed try, or a killed driver)."""
        key, point, op = event["key"], event["point"], event["op"]
        if op == "start":
            self._run_id(key, point, event["name"])
        elif op == "result":
            join = event.get("join")
            if join is not None and (join["trial"], key) not in self._joined:
                self._join(join["trial"], join["from_epoch"], key, point)
            self._log(key, point, event["name"], event["result"], notice=event.get("notice"))
        elif op == "finish":
            ticket = self.writer.ticket(event["ticket"])
            self._finish(self._run_id(key, point), event["last"], error=event["error"], ticket=ticket)
        elif op == "recover":
            client(self.uri).set_tag(self._run_id(key, point), "failures", event["failures"])

    # -- runs ----------------------------------------------------------------------------------

    def _reported(self, trial: Any) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        """The runs a trial reported to at its end, each with its key, Ray config and last report
        (:func:`~worm_tune.tune.plan.trial_reports`)."""
        reports = trial_reports(trial.config, trial.last_result or {}, self.groups)
        if GROUP_KEY not in trial.config:
            return [(trial.trial_id, dict(point), dict(last)) for point, last in reports]
        return [(self._config(point).hash(), dict(point), dict(last)) for point, last in reports]

    def _join(self, trial_id: str, from_epoch: int, key: str, point: dict[str, Any]) -> None:
        """Tag a member's run with the group trial it now trains in (and the epoch it joined after)."""
        run_id = self._run_id(key, point)
        mlflow_client = client(self.uri)
        joined = mlflow_client.get_run(run_id).data.tags.get(TAG_GROUPS, "").split()
        entry = f"{trial_id}@{from_epoch}"
        if entry not in joined:
            mlflow_client.set_tag(run_id, TAG_GROUPS, " ".join([*joined, entry]))
        self._joined.add((trial_id, key))

    def _log(self, key: str, point: dict[str, Any], name: str | None, result: dict, notice: str | None = None) -> None:
        run_id = self._run_id(key, point, name)
        epoch = int(result["training_iteration"])
        notice = notice or result.get("notice")
        if notice:  # e.g. a damaged checkpoint: the trial restarted from scratch
            client(self.uri).set_tag(run_id, "notice", str(notice))
        if epoch <= self._last_epoch.get(key, 0):
            return  # already logged before a restart
        tags = []
        if epoch == 1:
            tags += [
                RunTag("node_id", str(result.get("node_id"))),
                RunTag("gpu_ids", str(result.get("gpu_ids") or "")),  # the GPUs Ray gave it: "" for none
                RunTag("init_weights", result["summary"]["init_weights"]),
                RunTag("threads", str(result["summary"].get("threads"))),
                RunTag("unit", result["summary"]["unit"]),  # what truncated_units counts
            ]
            if result["summary"].get("data_digest"):
                client(self.uri).log_inputs(run_id, [dataset_input(self._config(point), result["summary"])])
        client(self.uri).log_batch(run_id, metrics=epoch_batch(result), tags=tags)
        self._last_epoch[key] = epoch  # once logged: a failed try is tried again

    def _run_id(self, key: str, point: dict[str, Any], name: str | None = None) -> str:
        """The run of the trial ``key`` (Ray config ``point``; Ray's ``name`` for it, if it has one),
        found by its tag or created."""
        if key in self._runs:
            return self._runs[key]
        mlflow_client = client(self.uri)
        found = mlflow_client.search_runs(
            [self.exp_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_run_id}' and tags.`{TAG_TRIAL}` = '{key}'",
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
            if not found[0].data.params:  # created by a try that failed before its params were logged
                self._log_params(run_id, point)
            self._last_epoch[key] = int(found[0].data.metrics.get("epoch", 0))
            if found[0].info.status != "RUNNING":
                mlflow_client.update_run(run_id, status="RUNNING")
        else:
            run_id = self._create(key, point, name)
        self._runs[key] = run_id
        return run_id

    def _config(self, point: dict[str, Any]) -> TrialConfig:
        return TrialConfig.from_dict(self.base).replace(config_overrides(point))

    def _create(self, key: str, point: dict[str, Any], name: str | None) -> str:
        cfg = self._config(point)
        group = cfg.replace({"seed": 0}).hash()
        columns = getattr(self, "columns", None)  # a callback pickled before names had columns has none
        tags = {
            PARENT_TAG: self.parent_run_id,
            TAG_KIND: "trial",
            TAG_SWEEP: self.sweep,
            TAG_TRIAL: key,
            "method": cfg.method,
            "seed": str(cfg.seed),
            "config_hash": cfg.hash(),
            "group_hash": group,
            "trial_name": name or trial_label(point, columns),
            **({"trial": str(point["trial"])} if "trial" in point else {}),  # its --dry-run number
            **self.extra_tags.get(group, {}),
            **runtime_tags(cfg),
        }
        run = client(self.uri).create_run(self.exp_id, run_name=trial_label(point, columns), tags=tags)
        self._log_params(run.info.run_id, point)
        return run.info.run_id

    def _log_params(self, run_id: str, point: dict[str, Any]) -> None:
        flat = self._config(point).to_flat()
        log_params(self.uri, run_id, {k: v for k, v in flat.items() if k not in RUNTIME_FIELDS})

    def _finish(self, run_id: str, last: dict[str, Any], error: bool, ticket: bytes | None = None) -> None:
        mlflow_client = client(self.uri)
        summary = last.get("summary") or {}
        epoch = int(last.get("training_iteration", 0))
        batch = summary_batch(summary, epoch)
        if batch and not _logged_at(self.uri, run_id, batch[0].key, epoch):  # not by a try before a crash
            mlflow_client.log_batch(run_id, metrics=batch)
        # Tags say how the trial ended (its metrics say how it went).
        mlflow_client.set_tag(run_id, "status", trial_status(summary, error))
        method = METHODS.get(summary.get("method", ""))
        if method is not None and method.searches:  # dense trials have no search to converge
            mlflow_client.set_tag(run_id, "converged", str(bool(summary["converged"])).lower())
        if summary.get("trigger_epoch") is not None:
            mlflow_client.set_tag(run_id, "trigger_epoch", str(summary["trigger_epoch"]))
        if summary:
            files = {
                "summary.json": json.dumps(summary, indent=2, default=str).encode(),  # as MlflowClient.log_dict
                "mask_distance.csv": self._trajectory(run_id).encode(),
            }
            if ticket is not None:
                files[TICKET_FILE] = ticket
            log_files(self.uri, run_id, files)
        mlflow_client.set_terminated(run_id, "FAILED" if error else "FINISHED")

    def _trajectory(self, run_id: str) -> str:
        """The mask-distance trajectory (one row per search epoch, one column per curve) from the logged metrics."""
        mlflow_client = client(self.uri)
        history = {
            name: {m.step: m.value for m in mlflow_client.get_metric_history(run_id, metrics.logged_name(name, SEARCH))}
            for name in metrics.CURVES
        }
        lines = ["epoch," + ",".join(metrics.CURVES)]
        for epoch in sorted(set().union(*history.values())):
            lines.append(",".join([str(epoch), *(_csv(history[name].get(epoch)) for name in metrics.CURVES)]))
        return "\n".join(lines) + "\n"


#: What the writer needs of a Ray result (:meth:`MlflowCallback._log`, :func:`epoch_batch`, ``_finish``).
RESULT_KEYS = {"training_iteration", "timestamp", "node_id", "gpu_ids", "notice", "phase", "summary"}


def _slim(result: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a result (or a last report) the writer reads: the spool stays small."""
    return {k: v for k, v in result.items() if k in RESULT_KEYS or k in metrics.BY_NAME}


def _refused(exc: BaseException) -> bool:
    """Whether the store refused a write as wrong in itself (trying it again would not help), as opposed
    to being away, busy or failing (unreachable server, timeout, 5xx, a locked or full SQLite file)."""
    if isinstance(exc, MlflowException):
        return exc.error_code in REFUSED
    return not isinstance(exc, OSError) and type(exc).__module__.split(".")[0] not in (
        "sqlalchemy",
        "requests",
        "urllib3",
    )


def _logged_at(uri: str, run_id: str, key: str, step: int) -> bool:
    """Whether the run has metric ``key`` at ``step``."""
    return any(m.step == step for m in client(uri).get_metric_history(run_id, key))


def log_files(uri: str, run_id: str, files: Mapping[str, bytes]) -> None:
    """Log files (name: bytes) as artifacts of a run, from any thread.

    A SQLite store records artifact locations relative to its folder (:func:`~worm_tune.tune.store.at_store`
    changes the working directory to reach them: not for a thread); here the location is made absolute.
    """
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name, data in files.items():
            path = Path(tmp) / name
            path.write_bytes(data)
            paths.append(str(path))
        db = sqlite_path(uri)
        if db is None:
            for path in paths:
                client(uri).log_artifact(run_id, path)
            return
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        location = client(uri).get_run(run_id).info.artifact_uri
        if "://" not in location and not Path(location).is_absolute():
            location = str(db.parent / location)
        repo = get_artifact_repository(location)
        for path in paths:
            repo.log_artifact(path)


def ticket_file(trial: Any) -> Path | None:
    """The ticket in a trial's last checkpoint (:data:`~worm_tune.tickets.TICKET_FILE`), if it pruned:
    one file for every trial a group trial reports, since members that prune differently part first."""
    checkpoint = trial.checkpoint
    path = Path(checkpoint.path) / TICKET_FILE if checkpoint is not None else None
    return path if path is not None and path.is_file() else None


def runtime_tags(cfg: TrialConfig) -> dict[str, str]:
    """Where a trial ran, as tags: the config's runtime fields are not params, which say what a run
    computes (its hash's fields), and hold machine paths that would not survive moving the store."""
    flat = cfg.to_flat()
    return {key: str(flat[key]) for key in sorted(RUNTIME_FIELDS) if key != "threads"}  # threads: as it ran


def dataset_input(cfg: TrialConfig, summary: Mapping[str, Any]) -> DatasetInput:
    """The trial's training data as an MLflow dataset: its name, the size of the subset, and a digest of
    its examples (not where it was read from)."""
    subset = cfg.data.train_subset or "all"
    source = {"tags": {"dataset": cfg.data.dataset, "train_subset": str(subset)}}
    dataset = Dataset(
        name=cfg.data.dataset if subset == "all" else f"{cfg.data.dataset}[{subset}]",
        digest=summary["data_digest"],
        source_type="code",
        source=json.dumps(source),
    )
    return DatasetInput(dataset, [InputTag("mlflow.data.context", "train")])


def epoch_batch(result: Mapping[str, Any]) -> list[Metric]:
    """An epoch's result as MLflow metrics, step = the trial's epoch: every per-epoch metric it reports
    (a trainable reports its family's) in the section of the epoch's phase, less those the epoch did
    not measure; and ``epoch``, which tells a resumed sweep how far the run was logged."""
    epoch = int(result["training_iteration"])
    stamp = int(result.get("timestamp", 0) * 1000)
    values = {metrics.logged_name(name, result["phase"]): _as_metric(result.get(name)) for name in metrics.EPOCH}
    values["epoch"] = epoch
    return [Metric(key, value, stamp, epoch) for key, value in values.items() if value is not None]


def summary_batch(summary: Mapping[str, Any], epoch: int) -> list[Metric]:
    """A trial's summary as MLflow metrics, logged at its last epoch (booleans as 0/1, unknowns left out)."""
    values = {metrics.logged_name(name): _as_metric(summary.get(name)) for name in metrics.SUMMARY}
    return [Metric(key, value, 0, epoch) for key, value in values.items() if value is not None]


def _csv(value: float | None) -> str:
    return "" if value is None else repr(value)
