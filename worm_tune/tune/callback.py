"""MLflow logging for sweeps, from the Ray driver only.

Every write goes through the driver (:class:`MlflowCallback` is a Tune callback), never through
the trials: one writer means no SQLite locking however many trials run at once, and trials on
other nodes need no access to the tracking store.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, RunTag
from ray import tune

from worm_tune import metrics
from worm_tune.config import RUNTIME_FIELDS, TrialConfig
from worm_tune.engine import SEARCH
from worm_tune.ticket.methods import METHODS
from worm_tune.tickets import TICKET_FILE
from worm_tune.tune.plan import GROUP_KEY, MEMBERS, config_overrides, trial_label, trial_reports
from worm_tune.tune.store import (
    PARENT_TAG,
    TAG_GROUPS,
    TAG_KIND,
    TAG_SWEEP,
    TAG_TRIAL,
    _as_metric,
    at_store,
    client,
    log_params,
    trial_status,
)


class MlflowCallback(tune.Callback):
    """Logs each trial to a child run of the sweep's parent run, from the driver only.

    Picklable (it is saved with the Tuner and restored on ``--resume``): it holds URIs and ids,
    and looks child runs up by tag, so a resumed sweep continues the same runs without logging
    an epoch twice.
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
    ) -> None:
        self.uri, self.exp_id, self.parent_run_id, self.sweep = uri, exp_id, parent_run_id, sweep
        self.base = dict(base)
        #: What run names show (:func:`~worm_tune.tune.plan.label_columns`; None: every field a trial sets).
        self.columns = None if columns is None else tuple(columns)
        #: Tags for the runs of particular config groups (``final`` links reruns to their sources).
        self.extra_tags = {k: dict(v) for k, v in (extra_tags or {}).items()}
        #: A shared sweep's folder of group files (:mod:`worm_tune.tune.sharing`); None: unshared.
        self.groups = groups
        self._runs: dict[str, str] = {}
        self._last_epoch: dict[str, int] = {}
        self._joined: set[tuple[str, str]] = set()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_runs"], state["_last_epoch"], state["_joined"] = {}, {}, set()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__ = {"groups": None, **state}  # a callback pickled before shared sweeps has no groups
        self._joined = set()

    # -- Tune hooks ----------------------------------------------------------------------------
    # A trial reports for itself, or (a shared sweep's group trial) for each member under
    # MEMBERS: each reported trial has its own run, keyed by its Ray trial id or config hash.

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if GROUP_KEY not in trial.config:  # a group's members are known from its first report
            self._run_id(trial.trial_id, trial.config, str(trial))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if MEMBERS not in result:
            self._log(trial.trial_id, trial.config, str(trial), result)
            return
        common = {
            "timestamp": result.get("timestamp", 0),
            "node_id": result.get("node_id"),
            "gpu_ids": result.get("gpu_ids"),
        }
        for member in result[MEMBERS]:
            key = member["config_hash"]
            if (trial.trial_id, key) not in self._joined:
                self._join(trial, key, member["point"])
            self._log(key, member["point"], None, member | common, notice=result.get("notice"))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        ticket = ticket_file(trial)
        for key, point, last in self._reported(trial):
            self._finish(self._run_id(key, point), last, error=False, ticket=ticket)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        ticket = ticket_file(trial)
        for key, point, last in self._reported(trial):
            self._finish(self._run_id(key, point), last, error=True, ticket=ticket)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for key, point, _ in self._reported(trial):
            client(self.uri).set_tag(self._run_id(key, point), "failures", str(trial.num_failures))

    # -- runs ----------------------------------------------------------------------------------

    def _reported(self, trial: Any) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        """The runs a trial reported to at its end, each with its key, Ray config and last report
        (:func:`~worm_tune.tune.plan.trial_reports`)."""
        reports = trial_reports(trial.config, trial.last_result or {}, self.groups)
        if GROUP_KEY not in trial.config:
            return [(trial.trial_id, dict(point), dict(last)) for point, last in reports]
        return [(self._config(point).hash(), dict(point), dict(last)) for point, last in reports]

    def _join(self, trial: Any, key: str, point: dict[str, Any]) -> None:
        """Tag a member's run with the group trial it now trains in (and the epoch it joined after)."""
        self._joined.add((trial.trial_id, key))
        run_id = self._run_id(key, point)
        mlflow_client = client(self.uri)
        joined = mlflow_client.get_run(run_id).data.tags.get(TAG_GROUPS, "").split()
        entry = f"{trial.trial_id}@{trial.config.get('from_epoch', 0)}"
        if entry not in joined:
            mlflow_client.set_tag(run_id, TAG_GROUPS, " ".join([*joined, entry]))

    def _log(self, key: str, point: dict[str, Any], name: str | None, result: dict, notice: str | None = None) -> None:
        run_id = self._run_id(key, point, name)
        epoch = int(result["training_iteration"])
        notice = notice or result.get("notice")
        if notice:  # e.g. a damaged checkpoint: the trial restarted from scratch
            client(self.uri).set_tag(run_id, "notice", str(notice))
        if epoch <= self._last_epoch.get(key, 0):
            return  # already logged before a restart
        self._last_epoch[key] = epoch
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
        log_params(self.uri, run.info.run_id, {k: v for k, v in cfg.to_flat().items() if k not in RUNTIME_FIELDS})
        return run.info.run_id

    def _finish(self, run_id: str, last: dict[str, Any], error: bool, ticket: Path | None = None) -> None:
        mlflow_client = client(self.uri)
        summary = last.get("summary") or {}
        mlflow_client.log_batch(run_id, metrics=summary_batch(summary, int(last.get("training_iteration", 0))))
        # Tags say how the trial ended (its metrics say how it went).
        mlflow_client.set_tag(run_id, "status", trial_status(summary, error))
        method = METHODS.get(summary.get("method", ""))
        if method is not None and method.searches:  # dense trials have no search to converge
            mlflow_client.set_tag(run_id, "converged", str(bool(summary["converged"])).lower())
        if summary.get("trigger_epoch") is not None:
            mlflow_client.set_tag(run_id, "trigger_epoch", str(summary["trigger_epoch"]))
        if summary:
            with at_store(self.uri):
                mlflow_client.log_dict(run_id, summary, "summary.json")
                mlflow_client.log_text(run_id, self._trajectory(run_id), "mask_distance.csv")
                if ticket is not None:
                    mlflow_client.log_artifact(run_id, str(ticket))
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
