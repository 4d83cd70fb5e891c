"""The MLflow runs of a sweep's trials, as the MLflow callback's writer thread writes them.

Each event of :class:`~worm_tune.tune.callback.MlflowCallback` (a trial's start, an epoch's result,
its end, a retry) is applied to the run of its trial: a child run of the sweep's parent run, found
by its trial tag or created. Each write is harmless to repeat (an epoch already logged is skipped, a
summary already logged is not logged again, tags and artifacts are overwritten with the same), so
an event written twice after a crash changes nothing.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException

from worm_tune import metrics
from worm_tune.config import RUNTIME_FIELDS, TrialConfig
from worm_tune.ticket.methods import METHODS
from worm_tune.ticket.phases import Phase
from worm_tune.tickets import TICKET_FILE
from worm_tune.tune.plan import CANDIDATE, config_overrides, setting_hash, trial_label
from worm_tune.tune.run_records import dataset_input, epoch_batch, runtime_tags, summary_batch, trajectory_csv
from worm_tune.tune.store import (
    PARENT_TAG,
    TAG_GROUPS,
    TAG_KIND,
    TAG_SWEEP,
    TAG_TRIAL,
    client,
    log_params,
    sqlite_path,
    trial_status,
)

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


@dataclass
class TrialRuns:
    """Writes the events of one sweep's trials to their runs, from one thread; remembers the runs it
    has found, and how far each is logged."""

    uri: str
    exp_id: str
    parent_run_id: str
    sweep: str
    #: The sweep's base config: a trial's is the base with the fields of its Ray config.
    base: TrialConfig
    #: What run names show (:func:`~worm_tune.tune.plan.label_columns`; None: every field a trial sets).
    columns: Sequence[str] | None
    #: Tags for the runs of particular settings, by setting hash (``final`` links reruns to their sources).
    extra_tags: Mapping[str, Mapping[str, str]]
    _runs: dict[str, str] = field(default_factory=dict, init=False)
    _last_epoch: dict[str, int] = field(default_factory=dict, init=False)
    _joined: set[tuple[str, str]] = field(default_factory=set, init=False)

    def write(self, event: dict[str, Any], ticket: bytes | None) -> None:
        """One event's writes (``ticket``: the bytes of the ticket a trial's end logs)."""
        key, point, op = event["key"], event["point"], event["op"]
        if op == "start":
            self._run_id(key, point, event["name"])
        elif op == "result":
            join = event.get("join")
            if join is not None and (join["trial"], key) not in self._joined:
                self._join(join["trial"], join["from_epoch"], key, point)
            self._log(key, point, event["name"], event["result"], notice=event.get("notice"))
        elif op == "finish":
            self._finish(self._run_id(key, point), event["last"], error=event["error"], ticket=ticket)
        elif op == "recover":
            client(self.uri).set_tag(self._run_id(key, point), "failures", event["failures"])

    def _config(self, point: dict[str, Any]) -> TrialConfig:
        return self.base.replace(config_overrides(point))

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

    def _create(self, key: str, point: dict[str, Any], name: str | None) -> str:
        cfg = self._config(point)
        setting = setting_hash(cfg)
        tags = {
            PARENT_TAG: self.parent_run_id,
            TAG_KIND: "trial",
            TAG_SWEEP: self.sweep,
            TAG_TRIAL: key,
            "method": cfg.method,
            "seed": str(cfg.seed),
            "config_hash": cfg.hash(),
            "group_hash": setting,
            "trial_name": name or trial_label(point, self.columns),
            **({"trial": str(point["trial"])} if "trial" in point else {}),  # its --dry-run number
            **({CANDIDATE: str(point[CANDIDATE])} if CANDIDATE in point else {}),  # an Optuna study's trial number
            **self.extra_tags.get(setting, {}),
            **runtime_tags(cfg),
        }
        run = client(self.uri).create_run(self.exp_id, run_name=trial_label(point, self.columns), tags=tags)
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
        """The mask-distance trajectory (:func:`~worm_tune.tune.run_records.trajectory_csv`) from the logged metrics."""
        mlflow_client = client(self.uri)
        history = {
            name: {
                m.step: m.value
                for m in mlflow_client.get_metric_history(run_id, metrics.logged_name(name, Phase.SEARCH))
            }
            for name in metrics.CURVES
        }
        return trajectory_csv(history)


def refused(exc: BaseException) -> bool:
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
