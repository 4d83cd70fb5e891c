"""Optuna on paired seeds (issue 25): a candidate's trials start from its EarlyBird baseline's state
at their fork epoch and give exactly the numbers of the same configs run alone; the study's
objective is the paired mean difference a grid sweep of the same configs reports, also after a
crash and after Ctrl-C + ``--resume``.

The unit tests fork on one tiny digits network; the sweeps (slow) run a study whose two candidates
are enqueued at the two WORM variants of a grid on the same two seeds.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import ray

from analysis import compare, load
from tests.helpers import ENGINE_TINY, default_sigint
from tests.test_sharing import numbers, runs_of, summary_of
from tests.test_sharing import run as sweep_main
from worm_tune import metrics
from worm_tune.config import TrialConfig
from worm_tune.data import DataBundle, load_data
from worm_tune.engine import TrialEngine
from worm_tune.group import fork_epoch
from worm_tune.tune.paired_study import STUDY_FILE, paired_means
from worm_tune.tune.plan import GROUPS_DIR, SweepSettings, make_plan
from worm_tune.tune.prefix import STATES_DIR, BaselineStates, stride
from worm_tune.tune.spaces import Objective
from worm_tune.usage import UsageError

pytestmark = pytest.mark.usefixtures("keep_torch_threads")

#: Searches long enough for WORM's trigger to fall inside them (window 2, up to 6 epochs).
TINY = {**ENGINE_TINY, "data.batch_size": 32, "search.max_epochs": 6, "search.threshold": 0.1}
BASE = TrialConfig().replace(TINY)
DELTAS = (0.02, 0.3)


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_data(BASE.data)


@pytest.fixture(scope="module")
def baseline(digits: DataBundle, tmp_path_factory: pytest.TempPathFactory) -> BaselineStates:
    """Seed 0's EarlyBird baseline, every search epoch from the first full window kept."""
    cfg = BASE.replace({"method": "earlybird"})
    states = BaselineStates(tmp_path_factory.mktemp("states"), cfg, limit=100)
    engine = TrialEngine(cfg, digits)
    while not engine.done:
        engine.step()
        states.keep(engine)
    states.finish(engine)
    return states


def worm(delta: float, **extra: Any) -> TrialConfig:
    return BASE.replace({"method": "worm", "worm.delta": delta, "worm.factor": 0.003, **extra}).validate()


def assert_as_alone(states: BaselineStates, cfg: TrialConfig, data: DataBundle) -> int:
    """The trial of ``cfg`` started from ``states`` ends with every record and summary of the trial run
    alone, timings aside; how many baseline epochs the start trained again."""
    engine, replayed, _ = states.start(cfg, data)
    while not engine.done:
        engine.step()
    alone = TrialEngine(cfg, data)
    summary = alone.run()
    assert metrics.untimed(engine.history) == metrics.untimed(alone.history), cfg.worm.delta
    assert metrics.untimed(engine.summary()) == metrics.untimed(summary), cfg.worm.delta
    return replayed


def test_the_stride_keeps_at_most_the_limit_spread_evenly() -> None:
    assert [stride(2, last, 3) for last in (2, 4, 5, 6, 9, 10, 14)] == [1, 1, 2, 2, 4, 4, 8]
    for last in range(2, 40):
        step = stride(2, last, 3)
        assert len(range(2, last + 1, step)) <= 3 < len(range(2, last + 1, max(1, step // 2))) or step == 1


def test_the_fork_epoch_is_the_trigger_read_off_the_baselines_d_avg(baseline: BaselineStates) -> None:
    history = baseline.ended()["history"]  # type: ignore[index]
    search = [r for r in history if r["phase"] == "search"]
    for delta in DELTAS:
        level = BASE.search.threshold + delta
        triggers = [r["epoch"] for r in search if r["d_avg"] is not None and r["d_avg"] < level]
        assert fork_epoch(worm(delta), baseline.baseline, history) == (triggers[0] if triggers else search[-1]["epoch"])
    forks = {fork_epoch(worm(delta), baseline.baseline, history) for delta in DELTAS}
    assert len(forks) == 2, "the two deltas must fork at different epochs for the tests below to mean anything"
    # Trials that part from EarlyBird before any epoch share nothing: they start from scratch.
    assert fork_epoch(worm(0.02, **{"optim.lr": 0.05}), baseline.baseline, history) == 0
    assert fork_epoch(worm(0.02, **{"search.ratio": 0.3}), baseline.baseline, history) == 0
    assert fork_epoch(BASE.replace({"method": "gradclip"}), baseline.baseline, history) == 0


def test_a_candidate_started_from_its_baselines_state_gives_its_own_numbers(
    baseline: BaselineStates, digits: DataBundle
) -> None:
    for delta in DELTAS:
        assert assert_as_alone(baseline, worm(delta), digits) == 0  # every state kept: nothing trained again


@pytest.mark.parametrize(
    "kind",
    [
        {"prune.kind": "structured"},  # channels removed after the search
        {"model.arch": "vit", "prune.kind": "structured", "optim.optimizer": "adamw", "optim.lr": 0.001},  # heads
        {"model.arch": "vit", "optim.optimizer": "adamw", "optim.lr": 0.001, "worm.apply": "update"},  # weights
    ],
    ids=["resnet18-channels", "vit-heads", "vit-weights-update"],
)
def test_the_fork_is_exact_for_every_kind_of_mask(kind: dict[str, Any], digits: DataBundle, tmp_path: Path) -> None:
    base = BASE.replace({k: v for k, v in kind.items() if not k.startswith("worm.")})
    states = BaselineStates(tmp_path, base.replace({"method": "earlybird"}), limit=100)
    engine = TrialEngine(states.baseline, digits)
    while not engine.done:
        engine.step()
        states.keep(engine)
    states.finish(engine)
    cfg = base.replace({"method": "worm", "worm.delta": 0.9, "worm.factor": 0.003, **kind}).validate()
    assert fork_epoch(cfg, states.baseline, engine.history) == BASE.search.window  # d_avg < s + 0.9 at once
    assert assert_as_alone(states, cfg, digits) == 0


def test_thinned_lost_and_damaged_states_are_replayed_to_the_same_numbers(
    baseline: BaselineStates, digits: DataBundle, tmp_path: Path
) -> None:
    thin = BaselineStates(tmp_path, baseline.baseline, limit=1)
    thin.path.mkdir(parents=True)
    for name in ("baseline.json", f"e{BASE.search.window:03d}.pt"):  # only the first full window's state
        (thin.path / name).write_bytes((baseline.path / name).read_bytes())
    history = baseline.ended()["history"]  # type: ignore[index]
    late = max(DELTAS, key=lambda d: fork_epoch(worm(d), baseline.baseline, history))
    assert assert_as_alone(thin, worm(late), digits) > 0
    (thin.path / f"e{BASE.search.window:03d}.pt").write_bytes(b"not a state")  # damaged: from the start
    assert assert_as_alone(thin, worm(late), digits) == fork_epoch(worm(late), baseline.baseline, history)


def test_a_baseline_keeps_at_most_its_limit_of_states(digits: DataBundle, tmp_path: Path) -> None:
    cfg = BASE.replace({"method": "earlybird"})
    states = BaselineStates(tmp_path, cfg, limit=2)
    engine = TrialEngine(cfg, digits)
    while not engine.done:
        engine.step()
        states.keep(engine)
        assert len(states.epochs()) <= 2
    searched = engine.results["search_epochs"]
    step = stride(cfg.search.window, searched, 2)
    assert states.epochs() == list(range(cfg.search.window, searched + 1, step))


def test_the_objective_is_the_mean_paired_difference_over_every_seed() -> None:
    objectives = (Objective("search_epochs", "min"), Objective("final_acc", "max"))
    baselines = {0: {"search_epochs": 16, "final_acc": 0.5}, 1: {"search_epochs": 10, "final_acc": 0.25}}
    candidate = {0: {"search_epochs": 11, "final_acc": 0.75}, 1: {"search_epochs": 10, "final_acc": 0.125}}
    means, per_seed = paired_means(candidate, baselines, objectives)
    assert means == [(-5 + 0) / 2, (0.25 - 0.125) / 2]
    assert per_seed == {"0": {"search_epochs": -5, "final_acc": 0.25}, "1": {"search_epochs": 0, "final_acc": -0.125}}
    diverged = {0: candidate[0], 1: {"search_epochs": 3, "final_acc": None}}
    assert math.isnan(paired_means(diverged, baselines, objectives)[0][1])


# -- the study's setting ---------------------------------------------------------------------


def settings(**extra: Any) -> SweepSettings:
    return SweepSettings(
        space="resnet18", name="n", storage="s", tracking_uri="u", search="optuna", share=True, **extra
    )


def test_a_study_refuses_axes_it_does_not_tune_unless_pinned() -> None:
    with pytest.raises(UsageError, match=r"search.ratio has 3 values \(0.3, 0.5, 0.7\): pin one with --set"):
        make_plan(settings())
    plan = make_plan(settings(sets={"search.ratio": "0.5", "search.threshold": "0.05"}))
    assert (plan.base.search.ratio, plan.base.search.threshold) == (0.5, 0.05)
    quick = make_plan(settings(profile="quick", seeds_per_trial=3, num_samples=4))
    assert quick.base.search.threshold == 0.04  # the profile's one value of an axis applies
    assert quick.seeds() == [0, 1, 2] and quick.num_trials == (4 + 1) * 3


# -- through Ray and MLflow ------------------------------------------------------------------

SPACE = """
description = "the paired study tests: a grid of two WORM variants, and a study enqueued at them"
methods = ["earlybird", "worm"]

[base]
"model.arch" = "resnet18"
"model.pretrained" = false
"data.dataset" = "digits"
"data.train_subset" = 128
"data.batch_size" = 32
"search.window" = 2
"search.max_epochs" = 6
"search.threshold" = 0.1
"retrain.max_epochs" = 1

[axes]
seed = [0, 1]

[method_axes.worm]
"worm.delta" = [0.02, 0.3]
"worm.factor" = [0.003]

[optuna]
seeds = 2
num_samples = 2
cached_states = 2
enqueue = [{ "worm.delta" = 0.02, "worm.factor" = 0.003 }, { "worm.delta" = 0.3, "worm.factor" = 0.003 }]

[optuna.params]
"worm.delta" = { low = 0.005, high = 0.3, log = true }
"worm.factor" = { low = 0.0003, high = 0.3, log = true }
"""
TRIALS = 6  # 2 EarlyBird and 2 x 2 WORM


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("paired")
    space = root / "paired.toml"
    space.write_text(SPACE)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    args = ["--storage", str(root / "ray"), "--tracking-uri", uri, "--no-analysis"]
    return {"root": root, "uri": uri, "space": str(space), "args": args}


def runs_by_hash(uri: str, name: str) -> dict[str, Any]:
    return runs_of(uri, name, TRIALS)[1]


def study_of(store: dict[str, Any], name: str) -> optuna.Study:
    path = store["root"] / "ray" / name / STUDY_FILE
    return optuna.load_study(study_name=name, storage=f"sqlite:///{path}")


@pytest.fixture(scope="module")
def grid(local_ray: Any, store: dict[str, Any]) -> dict[str, Any]:
    """The grid, every trial on its own: the reference numbers, and the paired differences its report gives."""
    sweep_main(store, "grid", "--no-share")
    sweep = load.from_mlflow(store["uri"], load.find_parent(store["uri"], "grid")[0])
    comparisons = compare.compare(compare.label(sweep.trials), n_boot=200)
    return {"runs": runs_by_hash(store["uri"], "grid"), "comparisons": comparisons}


def assert_as_the_grid(store: dict[str, Any], name: str, grid: dict[str, Any]) -> None:
    """Study ``name`` logged, trial for trial, what the grid logged alone: params, every metric at every
    step (timings aside, each epoch once), how each ended, its summary; and its candidates' objectives
    are the paired mean differences the grid's comparisons report."""
    runs = runs_by_hash(store["uri"], name)
    assert sorted(runs) == sorted(grid["runs"])
    for key, run in runs.items():
        other = grid["runs"][key]
        assert run.info.status == other.info.status == "FINISHED"
        assert run.data.params == other.data.params
        assert numbers(store["uri"], run) == numbers(store["uri"], other), run.info.run_name
        for tag in ("status", "converged", "trigger_epoch", "method", "seed"):
            assert run.data.tags.get(tag) == other.data.tags.get(tag), (run.info.run_name, tag)
        assert metrics.untimed(summary_of(store["uri"], run)) == metrics.untimed(summary_of(store["uri"], other))
    study = study_of(store, name)
    assert len(study.trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    rows = grid["comparisons"]
    for trial in study.trials:
        mine = rows[rows["variant"] == compare.variant_label({"method": "worm", **trial.params})]
        by_metric = {m: mine[mine["metric"] == m].iloc[0] for m in ("search_epochs", "final_acc")}
        # Every pair counts (the report's search epochs count converged pairs only: here all are).
        assert [row["n_pairs"] for row in by_metric.values()] == [2, 2]
        assert trial.values == pytest.approx([row["diff_mean"] for row in by_metric.values()], abs=1e-12)
        assert sorted(trial.user_attrs["per_seed"]) == ["0", "1"]
        candidates = {r.data.tags.get("candidate") for r in runs.values() if r.data.tags["method"] == "worm"}
        assert candidates == {"0", "1"}


@pytest.mark.slow
def test_an_enqueued_candidates_objective_is_the_paired_difference_the_grid_reports(
    local_ray: Any, store: dict[str, Any], grid: dict[str, Any]
) -> None:
    out = sweep_main(store, "study", "--search", "optuna")
    assert_as_the_grid(store, "study", grid)
    assert "sharing: trained" in out and "Optuna study: 2 of 2 candidates complete on 2 paired seeds" in out
    folder = store["root"] / "ray" / "study"
    assert not (folder / STATES_DIR).exists()  # the baselines' states go with the study's end
    triggers = {r.data.tags.get("trigger_epoch") for r in runs_by_hash(store["uri"], "study").values()}
    assert len(triggers - {None}) >= 2  # the two candidates fork at different epochs


@pytest.mark.slow
def test_a_crash_in_a_study_changes_no_number(local_ray: Any, store: dict[str, Any], grid: dict[str, Any]) -> None:
    """Every trial that reaches epoch 3 crashes once there and retries: a baseline in the middle of its
    search, from a checkpoint (its group file is gone by then: it still keeps its states and ends its
    record), and a candidate that forked at epoch 2, before its first checkpoint."""
    sweep_main(store, "crashed", "--search", "optuna", "--set", "crash_at_epoch=3")
    assert_as_the_grid(store, "crashed", grid)
    assert any("failures" in r.data.tags for r in runs_by_hash(store["uri"], "crashed").values())


@pytest.mark.slow
def test_an_interrupted_study_resumes_to_the_same_numbers(
    local_ray: Any, store: dict[str, Any], grid: dict[str, Any]
) -> None:
    """Ctrl-C once the first candidate's trials are written; ``--resume`` ends the study with the grid's numbers."""
    argv = [store["space"], "--name", "resumed", "--search", "optuna", "--max-concurrent", "1", *store["args"]]
    address = ["--address", ray.get_runtime_context().gcs_address]
    proc = subprocess.Popen(
        [sys.executable, "-m", "worm_tune.sweep", *argv, *address],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=default_sigint,
    )
    groups = store["root"] / "ray" / "resumed" / GROUPS_DIR
    deadline = time.monotonic() + 300
    while len(list(groups.glob("*.json"))) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)  # two baselines, then a candidate's trials
    assert proc.poll() is None, proc.stderr.read()  # type: ignore[union-attr]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert len(study_of(store, "resumed").trials) < 2 or any(
        t.state != optuna.trial.TrialState.COMPLETE for t in study_of(store, "resumed").trials
    )
    resume = [store["space"], "--resume", "--name", "resumed", *store["args"][:2], "--no-analysis"]
    done = subprocess.run([sys.executable, "-m", "worm_tune.sweep", *resume, *address], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert_as_the_grid(store, "resumed", grid)
    for run in runs_by_hash(store["uri"], "resumed").values():
        steps = [s for s, _ in numbers(store["uri"], run)["epoch"]]
        assert steps == list(range(1, len(steps) + 1)) and not math.isnan(steps[-1])
