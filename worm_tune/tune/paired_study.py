"""An Optuna study of paired effects: each Optuna trial is a candidate run on k paired seeds.

What a researcher tuning WORM's knobs wants is not one seed's search length, whose seed-to-seed
spread is several times the effect being tuned, but the *paired effect*: how many search epochs a
candidate saves against EarlyBird on the same seeds, at one setting, and what it costs in accuracy.
So a candidate's objective is the mean over its seeds of (candidate - EarlyBird), per objective
metric, and EarlyBird runs once per seed for the whole study (its baseline).

:class:`PairedStudy` is the Ray searcher that runs it. It starts the baselines first; once they
have ended it asks Optuna for a candidate (enqueued points first), starts one Ray trial per seed,
and tells Optuna the paired means when the candidate's last seed ends, with the per-seed values as
the trial's user attributes. Each Ray trial is a group trial of one member
(:class:`~worm_tune.tune.group_trainable.GroupTrainable`): a baseline keeps its states where
candidates fork, and a candidate's trial starts from its baseline's state at its fork epoch
(:mod:`~worm_tune.tune.prefix`), so it trains only the epochs in which it differs.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from ray.tune.search import Searcher

from worm_tune.checkpoints import write_atomic
from worm_tune.config import TrialConfig
from worm_tune.tune import prefix, store
from worm_tune.tune.plan import CANDIDATE, GROUP_KEY, IMPORTANCE, MEMBERS, SYMBOLS, Plan, SweepSettings, staying
from worm_tune.tune.sharing import group_id, ray_config, write_group
from worm_tune.tune.spaces import Objective, OptunaSpec

#: The study's file in the sweep's folder (``optuna-dashboard sqlite:///<folder>/optuna.db``).
STUDY_FILE = "optuna.db"


def study_storage(folder: str | Path) -> str:
    return f"sqlite:///{Path(folder) / STUDY_FILE}"


def distributions(spec: OptunaSpec) -> dict[str, optuna.distributions.BaseDistribution]:
    """Optuna's distribution of each tuned key."""
    return {
        p.key: optuna.distributions.IntDistribution(int(p.low), int(p.high), log=p.log)
        if p.integer
        else optuna.distributions.FloatDistribution(p.low, p.high, log=p.log)
        for p in spec.params
    }


def open_study(settings: SweepSettings, plan: Plan, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """The sweep's study in ``storage``: created (with its enqueued candidates) or loaded."""
    assert plan.optuna is not None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per study created or trial told
    study = optuna.create_study(
        storage=storage,
        study_name=settings.name,
        directions=["minimize" if o.mode == "min" else "maximize" for o in plan.objectives],
        sampler=optuna.samplers.TPESampler(seed=settings.sampler_seed),
        load_if_exists=True,
    )
    if not study.trials:
        for point in plan.optuna.enqueue:
            study.enqueue_trial(dict(point))
    return study


def paired_means(
    candidate: Mapping[int, Mapping[str, Any]],
    baselines: Mapping[int, Mapping[str, Any]],
    objectives: Sequence[Objective],
) -> tuple[list[float], dict[str, dict[str, float]]]:
    """The objective values of a candidate, the mean over its seeds of (candidate - baseline) per
    objective metric, and the per-seed differences. Every seed counts: a search that hit its budget
    counts its budget (its summary's ``search_epochs``). A metric unknown on a seed (a diverged
    trial) makes its mean NaN, and Optuna is told the candidate failed."""
    per_seed = {
        str(seed): {
            o.metric: _number(summary.get(o.metric)) - _number(baselines[seed].get(o.metric)) for o in objectives
        }
        for seed, summary in sorted(candidate.items())
    }
    means = [math.fsum(d[o.metric] for d in per_seed.values()) / len(per_seed) for o in objectives]
    return means, per_seed


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


class PairedStudy(Searcher):
    """Ray's searcher of a paired Optuna study (see the module's docstring). Picklable: the Optuna
    study is opened on first use in the driver, and its state saved with the experiment."""

    def __init__(self, settings: SweepSettings, plan: Plan, groups: str) -> None:
        super().__init__()
        assert plan.optuna is not None
        self.settings, self.plan, self.groups = settings, plan, groups
        self.queue: list[dict[str, Any]] = []
        self.trial_gid: dict[str, str] = {}  # Ray trial id -> its group
        self.owner: dict[str, tuple[int | None, int]] = {}  # group -> (candidate number, or None: baseline; seed)
        self.baselines: dict[int, dict[str, Any] | None] = {}  # seed -> summary (None: failed)
        self.candidates: dict[int, dict[int, dict[str, Any] | None]] = {}  # number -> seed -> summary
        self.asked = 0
        self.started = False
        self._study: optuna.Study | None = None
        self._storage: optuna.storages.RDBStorage | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_study", "_storage")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__ = state | {"_study": None, "_storage": None}

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            self._storage = optuna.storages.RDBStorage(study_storage(self.settings.folder))
            self._study = open_study(self.settings, self.plan, self._storage)
        return self._study

    def _set_attrs(self, number: int, attrs: Mapping[str, Any]) -> None:
        """User attributes of a candidate's Optuna trial, through the storage (the trial is known by number)."""
        study, storage = self.study, self._storage
        assert storage is not None
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(study.study_name), number
        )
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial_id, key, value)

    @property
    def spec(self) -> OptunaSpec:
        assert self.plan.optuna is not None
        return self.plan.optuna

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # its objectives are the study's own

    # -- trials --------------------------------------------------------------------------------

    def _config(self, method: str, seed: int, params: Mapping[str, Any]) -> TrialConfig:
        return self.plan.base.replace({"method": method, "seed": seed, **params}).validate()

    def _start(self, number: int | None, seed: int, cfg: TrialConfig, point: dict[str, Any]) -> None:
        """Write the group file of one Ray trial and queue it: a baseline, or a candidate on one seed."""
        chash = cfg.hash()
        gid = group_id([chash, f"{CANDIDATE} {number}"], 0)
        write_group(Path(self.groups), gid, {"points": {chash: point}})
        self.owner[gid] = (number, seed)
        self.queue.append(ray_config(gid, 1, 0))

    def _start_baselines(self) -> None:
        Path(self.groups).mkdir(parents=True, exist_ok=True)
        for seed in self.plan.seeds():
            cfg = self._config("earlybird", seed, {})
            self._start(None, seed, cfg, {"method": "earlybird", "seed": seed})
        self.started = True

    def _ask(self) -> None:
        """The next candidate: one trial per seed whose baseline ended. A trial Optuna holds running that
        this searcher does not know (asked by a driver killed before the experiment saved its searcher)
        is the next candidate, not an orphan beside a new one."""
        running = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        orphans = [t for t in running if t.number not in self.candidates]
        trial = orphans[0] if orphans else self.study.ask(distributions(self.spec))
        self.asked += 1
        number, params = trial.number, dict(trial.params)
        self.candidates[number] = {}
        for seed in (seed for seed, summary in sorted(self.baselines.items()) if summary is not None):
            point = {"method": self.spec.method, "seed": seed, **params, CANDIDATE: number}
            self._start(number, seed, self._config(self.spec.method, seed, params), point)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if not self.started:
            self._start_baselines()
        ready = len(self.baselines) == self.spec.seeds and any(s is not None for s in self.baselines.values())
        if not self.queue and ready and self.asked < self.spec.num_samples:
            self._ask()
        if self.queue:
            config = self.queue.pop(0)
            self.trial_gid[trial_id] = config[GROUP_KEY]
            return config
        return None if self.trial_gid else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        gid = self.trial_gid.pop(trial_id, None)
        if gid is None:
            return
        number, seed = self.owner[gid]
        members = staying(result or {}) if MEMBERS in (result or {}) else []
        summary = None if error or not members else dict(members[0]["summary"])
        if number is None:
            self.baselines[seed] = summary
            return
        self._record(number, seed, summary)

    def _record(self, number: int, seed: int, summary: dict[str, Any] | None) -> None:
        """One seed of a candidate has ended; once all have, tell Optuna its paired means."""
        results = self.candidates[number]
        results[seed] = summary
        seeds = [s for s, b in self.baselines.items() if b is not None]
        if len(results) < len(seeds):
            return
        failed = sorted(s for s, r in results.items() if r is None)
        if failed:
            self._set_attrs(number, {"failed_seeds": failed})
            self.study.tell(number, state=optuna.trial.TrialState.FAIL)
            return
        done = {s: r for s, r in results.items() if r is not None}
        objectives = self.plan.objectives
        means, per_seed = paired_means(done, {s: self.baselines[s] or {} for s in done}, objectives)
        attrs: dict[str, Any] = {"seeds": sorted(done), "per_seed": per_seed}
        for name, rows in (("earlybird", {s: self.baselines[s] for s in done}), (self.spec.method, done)):
            attrs[name] = {
                str(s): {o.metric: (r or {}).get(o.metric) for o in self.plan.objectives} for s, r in rows.items()
            }
        self._set_attrs(number, attrs)
        if any(math.isnan(m) for m in means):
            self.study.tell(number, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(number, means)

    # -- saved with the experiment ----------------------------------------------------------------

    _SAVED = ("queue", "trial_gid", "owner", "baselines", "candidates", "asked", "started")

    def save(self, checkpoint_path: str) -> None:
        state = {key: getattr(self, key) for key in self._SAVED}
        write_atomic(Path(checkpoint_path), lambda tmp: tmp.write_bytes(pickle.dumps(state)))

    def restore(self, checkpoint_path: str) -> None:
        for key, value in pickle.loads(Path(checkpoint_path).read_bytes()).items():
            setattr(self, key, value)


def conclude(settings: SweepSettings, plan: Plan) -> str:
    """A study's end: Optuna's parameter importances per objective logged to the parent run
    (:data:`IMPORTANCE`), the baselines' states reclaimed; lines for the terminal: the best
    candidates and the importances."""
    assert plan.optuna is not None
    prefix.reclaim(settings.folder / prefix.STATES_DIR)
    storage = optuna.storages.RDBStorage(study_storage(settings.folder))
    study = optuna.load_study(study_name=settings.name, storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    names = [f"{o.metric} ({plan.optuna.method} - earlybird)" for o in plan.objectives]
    lines = [
        f"Optuna study: {len(done)} of {len(study.trials)} candidates complete on {plan.optuna.seeds} paired seeds"
    ]
    best = study.best_trials if done else []
    for trial in best:
        params = ", ".join(f"{SYMBOLS.get(k, k)}={v:.4g}" for k, v in trial.params.items())
        values = ", ".join(f"{name} {v:+.3g}" for name, v in zip(names, trial.values, strict=True))
        lines.append(f"  best (Pareto) candidate {trial.number}: {params}: mean {values}")
    if len(done) < 2 or len(plan.optuna.params) < 2:
        return "\n".join(lines)
    logged = {}
    for i, objective in enumerate(plan.objectives):
        try:
            ranked = optuna.importance.get_param_importances(
                study, target=lambda t, i=i: t.values[i], evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
            )
        except RuntimeError:  # fANOVA's "zero total variance": every candidate scored the same
            lines.append(f"  importance for {objective.metric}: none (every candidate has the same mean)")
            continue
        logged |= {f"{IMPORTANCE}/{objective.metric}/{key}": float(v) for key, v in ranked.items()}
        shown = ", ".join(f"{SYMBOLS.get(k, k)} {v:.2f}" for k, v in ranked.items())
        lines.append(f"  importance for {objective.metric}: {shown}")
    store.log_metrics(settings.tracking_uri, settings.parent_run_id, logged)
    return "\n".join(lines)
