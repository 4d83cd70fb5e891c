"""MLflow logging for sweeps, from the Ray driver only, through a buffer that outlasts the store.

Every write goes through the driver (:class:`MlflowCallback` is a Tune callback), never through
the trials: one writer means no SQLite locking however many trials run at once, and trials on
other nodes need no access to the tracking store.

The Tune hooks never call MLflow: they copy what they need of the trial into an event and hand it
to a :class:`~worm_tune.tune.spool.Spool` (its ticket too: the footprint callback deletes the
trial's checkpoint right after), whose thread writes the events in order
(:class:`~worm_tune.tune.trial_runs.TrialRuns`). A tracking server that goes away delays the
writes, not the trials, and a driver killed meanwhile leaves its unwritten events for ``--resume``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ray import tune

from worm_tune import metrics
from worm_tune.config import TrialConfig
from worm_tune.tickets import TICKET_FILE
from worm_tune.tune.plan import GROUP_KEY, MEMBERS, config_overrides, trial_reports
from worm_tune.tune.spool import Spool
from worm_tune.tune.trial_runs import TrialRuns, refused

#: MLflow's own HTTP retries and timeout for this process while a writer runs against a server (unless
#: set already): a few seconds per try, not the minutes of its defaults; the writer retries for as long
#: as the server is away.
HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
#: How long the end of a sweep waits for the writes of its last events (s).
FLUSH_S = 60.0


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
        #: Tags for the runs of particular settings, by setting hash (``final`` links reruns to their sources).
        self.extra_tags = {k: dict(v) for k, v in (extra_tags or {}).items()}
        #: A shared sweep's folder of group files (:mod:`worm_tune.tune.sharing`); None: unshared.
        self.groups = groups
        #: The sweep's folder, where the spool of events not yet written is kept.
        self.folder = folder
        self._fresh()

    def _fresh(self) -> None:
        """The state of one process: the writer, which knows the runs it has looked up (never pickled)."""
        self._writer: Spool | None = None
        self._writer_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A callback pickled before run names had columns has none, before shared sweeps no groups, before
        # the spool no folder; one pickled before the writer holds its (empty) caches, which are dropped.
        public = {k: v for k, v in state.items() if not k.startswith("_")}
        self.__dict__ = {"columns": None, "groups": None, "folder": None, **public}
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
            # A paired study's candidate reports the epochs it shares with its baseline once, first.
            for earlier in member.get("earlier", ()):
                self._submit(event | {"result": _slim(earlier | common)})
            event |= {"result": _slim(member | common), "notice": result.get("notice"), "join": join}
            self._submit(event)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial, error=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial, error=True)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for key, point, _ in self._reported(trial):
            self._submit({"op": "recover", "key": key, "point": point, "failures": str(trial.num_failures)})

    def _reported(self, trial: Any) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        """The runs a trial reported to at its end, each with its key, Ray config and last report
        (:func:`~worm_tune.tune.plan.trial_reports`)."""
        reports = trial_reports(trial.config, trial.last_result or {}, self.groups)
        if GROUP_KEY not in trial.config:
            return [(trial.trial_id, dict(point), dict(last)) for point, last in reports]
        base = TrialConfig.from_dict(self.base)
        return [(base.replace(config_overrides(point)).hash(), dict(point), dict(last)) for point, last in reports]

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
                base = TrialConfig.from_dict(self.base)
                runs = TrialRuns(
                    self.uri, self.exp_id, self.parent_run_id, self.sweep, base, self.columns, self.extra_tags
                )
                self._writer = Spool(self.folder, runs.write, refused)
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


#: What the writer needs of a Ray result (:class:`~worm_tune.tune.trial_runs.TrialRuns`).
RESULT_KEYS = {"training_iteration", "timestamp", "node_id", "gpu_ids", "notice", "phase", "summary"}


def _slim(result: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a result (or a last report) the writer reads: the spool stays small."""
    return {k: v for k, v in result.items() if k in RESULT_KEYS or k in metrics.BY_NAME}


def ticket_file(trial: Any) -> Path | None:
    """The ticket in a trial's last checkpoint (:data:`~worm_tune.tickets.TICKET_FILE`), if it pruned:
    one file for every trial a group trial reports, since members that prune differently part first."""
    checkpoint = trial.checkpoint
    path = Path(checkpoint.path) / TICKET_FILE if checkpoint is not None else None
    return path if path is not None and path.is_file() else None
