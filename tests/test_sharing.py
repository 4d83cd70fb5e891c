"""Shared sweeps through real Ray and MLflow (issue 16): a grid run with group trials gives every
trial exactly the runs, curves, summaries and tags that ``--no-share`` gives it, also after an
injected crash and after Ctrl-C + ``--resume`` in the middle of a split; the parent run says
what sharing saved.

The grid: 2 seeds x 2 ratios x 2 thresholds, EarlyBird and WORM at 2 deltas (24 trials), on 128
digits images with searches of up to 5 epochs: long enough for triggers and stops to part trials.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import ray
from mlflow.tracking import MlflowClient

from analysis import load
from tests.helpers import default_sigint, results_of
from worm_tune import metrics
from worm_tune.cli import sweep
from worm_tune.group import ComputeSaved
from worm_tune.tune.plan import GROUPS_DIR
from worm_tune.tune.store import PARENT_TAG, TAG_GROUPS, TAG_KIND, TAG_SWEEP, TAG_TRIAL, at_store

pytestmark = pytest.mark.slow

GRID = """
description = "the sharing tests' grid"
methods = ["earlybird", "worm"]

[base]
"model.arch" = "resnet18"
"model.pretrained" = false
"data.dataset" = "digits"
"data.train_subset" = 128
"data.batch_size" = 32
"search.window" = 2
"search.max_epochs" = 5
"retrain.max_epochs" = 1

[axes]
seed = [0, 1]
"search.ratio" = [0.3, 0.5]
"search.threshold" = [0.05, 0.15]

[method_axes.worm]
"worm.delta" = [0.05, 0.3]
"worm.factor" = [0.003]
"""
TRIALS = 24
#: Tags that say how a trial ended or what it is: equal shared and alone. (Not ``crash_at_epoch``,
#: a runtime tag, nor ``failures``, ``node_id``, ``threads`` or the Ray trial's ids.)
ENDING_TAGS = ("status", "converged", "trigger_epoch", "method", "seed", "config_hash", "group_hash", "trial")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("sharing")
    space = root / "grid.toml"
    space.write_text(GRID)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    args = ["--storage", str(root / "ray"), "--tracking-uri", uri, "--reports", str(root / "reports")]
    return {"root": root, "uri": uri, "space": str(space), "args": args}


def run(store: dict[str, Any], name: str, *flags: str) -> str:
    """Run the grid as sweep ``name``; its terminal output."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = sweep.main([store["space"], "--name", name, *flags, *store["args"]])
    assert code == 0, out.getvalue()
    return out.getvalue()


def runs_of(uri: str, name: str, trials: int = TRIALS) -> tuple[Any, dict[str, Any]]:
    """A sweep's parent run and its ``trials`` trial runs by config hash."""
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"tags.`{TAG_SWEEP}` = '{name}'", max_results=1000)
    (parent,) = [r for r in runs if r.data.tags[TAG_KIND] == "sweep"]
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
    by_hash = {r.data.tags["config_hash"]: r for r in children}
    assert len(by_hash) == len(children) == trials
    return parent, by_hash


def numbers(uri: str, run: Any) -> dict[str, list[tuple[int, float]]]:
    """Every metric a trial run logged, as (step, value) over the run, less wall times."""
    client = MlflowClient(uri)
    return {
        key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        for key in run.data.metrics
        if metrics.parse_logged(key)[1] not in metrics.TIMING
    }


def assert_same_trials(uri: str, name: str, reference: str) -> dict[str, Any]:
    """Sweep ``name`` logged, trial for trial, what sweep ``reference`` logged: names, params,
    every metric at every step (timings aside), the tags that say how each ended, the dataset."""
    _, runs = runs_of(uri, name)
    _, expected = runs_of(uri, reference)
    assert sorted(runs) == sorted(expected)
    for key, run in runs.items():
        other = expected[key]
        assert run.info.run_name == other.info.run_name
        assert run.info.status == other.info.status == "FINISHED"
        assert run.data.params == other.data.params
        assert numbers(uri, run) == numbers(uri, other), run.info.run_name
        for tag in ENDING_TAGS:
            assert run.data.tags.get(tag) == other.data.tags.get(tag), (run.info.run_name, tag)
        assert [i.dataset.digest for i in run.inputs.dataset_inputs] == [
            i.dataset.digest for i in other.inputs.dataset_inputs
        ]
        assert metrics.untimed(summary_of(uri, run)) == metrics.untimed(summary_of(uri, other)), run.info.run_name
    return runs


def summary_of(uri: str, run: Any) -> dict[str, Any]:
    """A trial run's ``summary.json``."""
    with at_store(uri):
        return json.loads(Path(MlflowClient(uri).download_artifacts(run.info.run_id, "summary.json")).read_text())


@pytest.fixture(scope="module")
def alone(local_ray: Any, store: dict[str, Any]) -> str:
    """The grid with every trial on its own: the reference."""
    run(store, "alone", "--no-share", "--no-analysis")
    return "alone"


@pytest.fixture(scope="module")
def shared(local_ray: Any, store: dict[str, Any]) -> dict[str, Any]:
    """The grid shared (the default for a grid), with its report."""
    out = run(store, "shared")
    return {"name": "shared", "out": out}


def test_a_shared_sweep_gives_every_trial_exactly_its_own_numbers(
    store: dict[str, Any], alone: str, shared: dict[str, Any]
) -> None:
    runs = assert_same_trials(store["uri"], shared["name"], alone)
    # Each run says which group trials it trained in; decisions parted trials mid-way.
    joined = {key: run.data.tags[TAG_GROUPS].split() for key, run in runs.items()}
    assert all(len(j) >= 1 for j in joined.values())
    assert any(len(j) > 1 for j in joined.values())
    assert all(run.data.tags[TAG_TRIAL] == key for key, run in runs.items())  # runs keyed by config hash
    # The terminal: a line per trial, then the saving.
    out = shared["out"]
    assert sum(f"/{TRIALS}] #" in line for line in out.splitlines()) == TRIALS
    assert "sharing: trained " in out


def test_the_parent_run_logs_what_sharing_saved(store: dict[str, Any], alone: str, shared: dict[str, Any]) -> None:
    parent, _ = runs_of(store["uri"], shared["name"])
    saving = ComputeSaved.from_metrics(parent.data.metrics)
    # The sums over trials are what running each alone trained: the --no-share sweep's epochs.
    _, reference = runs_of(store["uri"], alone)
    epochs = [results_of(r)["epochs"] for r in reference.values()]
    search = [len(numbers(store["uri"], r)["search/test_acc"]) for r in reference.values()]
    assert saving.epochs_of_trials == sum(epochs)
    assert saving.search_epochs_of_trials == sum(search)
    assert saving.flops_of_trials == pytest.approx(sum(results_of(r)["train_flops"] for r in reference.values()))
    assert 2 * saving.epochs_trained <= saving.epochs_of_trials  # the aim, on this grid
    assert saving.search_epochs_trained < saving.search_epochs_of_trials
    assert saving.flops_trained < saving.flops_of_trials
    assert saving.line() in shared["out"]


def test_the_ray_folder_reads_as_the_unshared_one(store: dict[str, Any], alone: str, shared: dict[str, Any]) -> None:
    """``python -m analysis`` without MLflow: a member's curves come from the group trials it rode."""
    ray_root = store["root"] / "ray"
    got, want = load.from_ray(ray_root / shared["name"]), load.from_ray(ray_root / alone)
    drop = ["trial_id", "run_id", "node_id", *(c for c in got.trials.columns if c in metrics.TIMING)]
    trials = got.trials.drop(columns=drop).set_index("config_hash").sort_index()
    assert trials.equals(want.trials.drop(columns=drop).set_index("config_hash").sort_index())
    assert len(got.curves) == len(want.curves)
    assert (ray_root / shared["name"] / GROUPS_DIR).is_dir()


def test_a_crash_in_a_shared_group_changes_no_number(local_ray: Any, store: dict[str, Any], alone: str) -> None:
    """Every group trial that reaches epoch 3 crashes once there and retries from its checkpoint."""
    run(store, "crashed", "--set", "crash_at_epoch=3", "--no-analysis")
    runs = assert_same_trials(store["uri"], "crashed", alone)
    assert any("failures" in r.data.tags for r in runs.values())


def interruptible(store: dict[str, Any], name: str) -> subprocess.Popen:
    """The grid as sweep ``name`` in a child process on this module's Ray, one trial at a time, that
    Ctrl-C can stop (see :func:`interrupt`)."""
    argv = [store["space"], "--name", name, "--max-concurrent", "1", "--no-analysis", *store["args"]]
    return subprocess.Popen(
        [sys.executable, "-m", "worm_tune.sweep", *argv, "--address", ray.get_runtime_context().gcs_address],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=default_sigint,
    )


def interrupt(proc: subprocess.Popen) -> None:
    """Ctrl-C: the sweep stops with exit 130 and its own one line, no traceback or hint of Ray's."""
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Stop signal received" not in err, err


def resume_to_the_same_numbers(store: dict[str, Any], name: str, alone: str) -> dict[str, Any]:
    """``--resume`` sweep ``name``: it ends with every trial's numbers as ``--no-share`` gives them,
    each epoch logged once; its trial runs by config hash."""
    resume = [store["space"], "--resume", "--name", name, *store["args"][:2], "--no-analysis"]
    done = subprocess.run(
        [sys.executable, "-m", "worm_tune.sweep", *resume, "--address", ray.get_runtime_context().gcs_address],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    runs = assert_same_trials(store["uri"], name, alone)
    for run in runs.values():
        steps = [s for s, _ in numbers(store["uri"], run)["epoch"]]
        assert steps == list(range(1, int(results_of(run)["epochs"]) + 1))
    return runs


def test_an_interrupt_in_the_middle_of_a_split_resumes_to_the_same_numbers(
    local_ray: Any, store: dict[str, Any], alone: str
) -> None:
    """Ctrl-C once a group has parted and its parts are still to run; ``--resume`` ends the sweep
    with every trial's numbers as ``--no-share`` gives them, each epoch logged once."""
    proc = interruptible(store, "resumed")
    groups = store["root"] / "ray" / "resumed" / GROUPS_DIR
    deadline = time.monotonic() + 300
    split = False
    while not split and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        split = any(not p.name.startswith("g000-") for p in groups.glob("g*.pt"))  # a group parted after an epoch
    assert split, proc.stderr.read() if proc.poll() is not None else "no group parted"
    interrupt(proc)
    client = MlflowClient(store["uri"])
    experiments = [e.experiment_id for e in client.search_experiments()]
    before = client.search_runs(experiments, f"tags.`{TAG_SWEEP}` = 'resumed' and tags.`{TAG_KIND}` = 'trial'")
    assert any(r.data.tags.get("status") == "interrupted" for r in before)

    resume_to_the_same_numbers(store, "resumed", alone)


def _written(params: Path) -> dict[str, Any]:
    """A trial's ``params.json`` as far as Ray has written it: empty while Ray is still writing it."""
    try:
        return json.loads(params.read_text())
    except json.JSONDecodeError:
        return {}


def test_lost_and_damaged_files_are_replayed_to_the_same_numbers(
    local_ray: Any, store: dict[str, Any], alone: str
) -> None:
    """Ctrl-C once groups have parted; then every file a trial would restart from is gone or damaged:
    the pending parts' files (half deleted, half truncated) and the running group trials' checkpoints
    (deleted). ``--resume`` replays each from its members' configs and ends with every trial's
    numbers as ``--no-share`` gives them, each epoch logged once."""
    proc = interruptible(store, "replayed")
    folder = store["root"] / "ray" / "replayed"
    deadline = time.monotonic() + 300
    started = False
    while not started and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        # A part's trial has a checkpoint (so its file is gone: it is replayed if that checkpoint is
        # lost), and parts wait (their parent has ended, one trial at a time: nothing writes them again).
        waiting = [p for p in (folder / GROUPS_DIR).glob("g*.pt") if not p.name.startswith("g000-")]
        started = bool(waiting) and any(
            _written(params).get("from_epoch", 0) > 0 and any(params.parent.glob("checkpoint_*"))
            for params in folder.glob("trials/*/params.json")
        )
    assert started, proc.stderr.read() if proc.poll() is not None else "no part started while others waited"
    interrupt(proc)
    parts = [p for p in (folder / GROUPS_DIR).glob("g*.pt") if not p.name.startswith("g000-")]
    checkpoints = list(folder.glob("trials/*/checkpoint_*"))
    assert parts and checkpoints  # what the resume would have restarted from
    for i, part in enumerate(parts):
        if i % 2:
            part.write_bytes(part.read_bytes()[:1000])
        else:
            part.unlink()
    for checkpoint in checkpoints:
        shutil.rmtree(checkpoint)

    runs = resume_to_the_same_numbers(store, "replayed", alone)
    notices = [r.data.tags.get("notice", "") for r in runs.values()]
    assert any("replayed its" in n for n in notices), notices  # a replayed part says so on its runs
    assert not list(folder.rglob("*.pt")) and not list(folder.rglob("checkpoint_*"))
