"""Real sweeps: a local Ray instance, a real MLflow SQLite store, real Optuna, real models.

The budgets are tiny (128 digits images, 3 search epochs, 1 retraining epoch) so the whole
module runs in a few minutes on 2 CPU cores; the numbers are still real training.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
import ray
import torch
from mlflow.tracking import MlflowClient

from analysis.stats import wilcoxon_p
from tests.helpers import (
    ONE_DELTA,
    QUICK_PAIR,
    SUMMARY,
    SWEEP_TINY,
    curve_of,
    default_sigint,
    free_port,
    healthy,
    results_of,
)
from worm_tune.cli import final, sweep
from worm_tune.config import TrialConfig
from worm_tune.engine import TrialEngine
from worm_tune.metrics import TIMING
from worm_tune.tickets import TICKET_FILE
from worm_tune.tune.spaces import load_space
from worm_tune.tune.store import PARENT_TAG, TAG_KIND, TAG_SWEEP, TAG_TRIAL, at_store

#: Real sweeps through Ray and MLflow: the slow tier.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("sweeps")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    reports = root / "reports"
    args = ["--storage", str(root / "ray"), "--tracking-uri", uri, "--reports", str(reports)]
    return {"root": root, "uri": uri, "reports": reports, "args": args}


def runs_of(uri: str, sweep_name: str) -> tuple[Any, list[Any]]:
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, filter_string=f"tags.`{TAG_SWEEP}` = '{sweep_name}'", max_results=1000)
    parents = [r for r in runs if r.data.tags[TAG_KIND] in ("sweep", "final")]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parents[0].info.run_id]
    return parents[0], children


def report_of(store: dict[str, Any], name: str) -> str:
    """The report the sweep wrote at its end."""
    return (store["reports"] / name / "report.md").read_text()


def history(uri: str, run: Any, name: str) -> list[tuple[int, float]]:
    return curve_of(MlflowClient(uri), run, name)


def artifact(uri: str, run: Any, path: str) -> str:
    with at_store(uri):
        return Path(MlflowClient(uri).download_artifacts(run.info.run_id, path)).resolve().read_text()


#: The quick profile's paired seeds.
SEEDS = 6


@pytest.fixture(scope="module")
def quick_sweep(local_ray: Any, store: dict[str, Any]) -> dict[str, Any]:
    """The quick profile (6 paired seeds, EarlyBird and WORM) at one delta, tiny budgets, a Ray trial
    per config (``--no-share``: this module tests that path; ``tests/test_sharing.py`` the shared one)."""
    argv = ["resnet18", "--quick", *SWEEP_TINY, *ONE_DELTA, "--no-share", "--name", "quick", *store["args"]]
    code = sweep.main(argv)
    assert code == 0
    parent, children = runs_of(store["uri"], "quick")
    return {"parent": parent, "children": children, **store}


def test_the_quick_sweep_gives_the_pinned_names_hashes_and_numbers(quick_sweep: dict[str, Any]) -> None:
    """The sweep of :func:`quick_sweep` as it ran at bbd8eda (``tests/data/pinned/quick-sweep.json``):
    every trial's name, config hash and setting hash, and every number it logged at every step but the
    timings, to the bit. A refactor that changes what a trial computes or how it is named fails here."""
    pinned = json.loads((Path(__file__).parent / "data" / "pinned" / "quick-sweep.json").read_text())
    client = MlflowClient(quick_sweep["uri"])
    logged = {}
    for run in quick_sweep["children"]:
        curves = {
            key: [
                [m.step, m.value]
                for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: (m.step, m.timestamp))
            ]
            for key in run.data.metrics
            if key.rpartition("/")[2] not in TIMING
        }
        logged[run.info.run_name] = [run.data.tags["config_hash"], run.data.tags["group_hash"], curves]
    assert logged == {t["name"]: [t["config_hash"], t["group_hash"], t["metrics"]] for t in pinned["trials"]}


def test_quick_sweep_logs_one_child_run_per_trial(quick_sweep: dict[str, Any]) -> None:
    uri, parent, children = quick_sweep["uri"], quick_sweep["parent"], quick_sweep["children"]
    assert parent.info.status == "FINISHED" and parent.data.tags["space"] == "resnet18"
    experiment = MlflowClient(uri).get_experiment(parent.info.experiment_id)
    # Named after the space; opens on MLflow 3's model-training view, not its GenAI one.
    assert experiment.name == "resnet18" and experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert sorted((r.data.tags["method"], r.data.tags["seed"]) for r in children) == [
        (m, str(s)) for m in ("earlybird", "worm") for s in range(SEEDS)
    ]
    for run in children:
        assert run.info.status == "FINISHED"
        tags, params, metrics = run.data.tags, run.data.params, results_of(run)
        # Named as Ray names the trial; tagged with its --dry-run number and how it ended.
        assert run.info.run_name == tags["trial_name"] == f"{tags['method']} s{tags['seed']}"
        assert 1 <= int(tags["trial"]) <= 2 * SEEDS and "phase" not in tags
        assert tags["converged"] == str(tags["status"] == "converged").lower()
        assert tags.get("trigger_epoch") == (str(int(metrics["trigger_epoch"])) if "trigger_epoch" in metrics else None)
        assert tags["status"] in ("converged", "not_converged") and len(tags["config_hash"]) == 12
        assert tags["threads"] == "1"  # one CPU per trial: one torch thread, so two trials share two cores
        assert params["search.ratio"] == "0.5" and params["model.arch"] == "resnet18" and params["seed"] == tags["seed"]
        assert params["data.dataset"] == "digits" and params["data.train_subset"] == "128"
        epochs = int(metrics["epochs"])
        assert [s for s, _ in history(uri, run, "test_acc")] == list(range(1, epochs + 1))
        assert epochs == metrics["search_epochs"] + 1
        for key in SUMMARY:
            assert key in metrics, key
        assert metrics["final_acc"] == history(uri, run, "test_acc")[-1][1]
        assert metrics["sparsity"] == pytest.approx(0.5, abs=1e-3)
        # The mask-distance trajectory artifact agrees with the logged metrics.
        rows = list(csv.DictReader(io.StringIO(artifact(uri, run, "mask_distance.csv"))))
        assert [int(r["epoch"]) for r in rows] == list(range(1, int(metrics["search_epochs"]) + 1))
        logged = dict(history(uri, run, "d_max"))
        assert {int(r["epoch"]): float(r["d_max"]) for r in rows if r["d_max"]} == pytest.approx(logged)
        summary = json.loads(artifact(uri, run, "summary.json"))
        assert summary["config_hash"] == tags["config_hash"] and summary["final_acc"] == metrics["final_acc"]
        if tags["method"] == "worm":
            assert history(uri, run, "r") and history(uri, run, "truncated_units")
        # Per-epoch curves sit in their phase's section (MLflow's run page groups charts by it).
        assert {k.split("/")[0] for k in run.data.metrics if "/" in k} == {"search", "retrain", "trial"}
    assert "| earlybird | 0.5" in artifact(uri, parent, "summary.md")


def test_params_and_inputs_name_no_machine_path(quick_sweep: dict[str, Any]) -> None:
    """Runtime fields (the data folder, the device) are tags; the data is an MLflow dataset input."""
    root = str(quick_sweep["root"])
    for run in [quick_sweep["parent"], *quick_sweep["children"]]:
        assert not [k for k, v in run.data.params.items() if root in v or v.startswith("/")], run.info.run_name
    for run in quick_sweep["children"]:
        assert "data.data_dir" not in run.data.params and "threads" not in run.data.params
        assert Path(run.data.tags["data.data_dir"]).name == "data"  # the folder it ran with, resolved
        (used,) = run.inputs.dataset_inputs
        assert used.dataset.name == "digits[128]" and len(used.dataset.digest) == 12
    digests = {run.inputs.dataset_inputs[0].dataset.digest for run in quick_sweep["children"]}
    assert len(digests) == 1  # every trial trained on the same examples


def test_a_store_copied_elsewhere_keeps_its_artifacts(
    quick_sweep: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Results rsynced off a cluster: the store and its artifacts, copied, read back from the copy alone."""
    copy = tmp_path / "moved"
    shutil.copytree(quick_sweep["root"], copy, ignore=shutil.ignore_patterns("ray", "reports"))
    original = quick_sweep["root"] / "mlartifacts"
    hidden = original.rename(original.with_name("mlartifacts-hidden"))  # so nothing can be read from there
    try:
        monkeypatch.chdir(copy)  # as `mlflow ui` is opened in the copied folder
        client = MlflowClient(f"sqlite:///{copy / 'mlflow.db'}")
        parent = client.get_run(quick_sweep["parent"].info.run_id)
        assert not parent.info.artifact_uri.startswith(("/", "file:"))
        assert "report.html" in {Path(f.path).name for f in client.list_artifacts(parent.info.run_id, "report")}
        html = Path(client.download_artifacts(parent.info.run_id, "report/report.html")).read_text()
        assert "data:image/png;base64," in html
        for run in quick_sweep["children"]:
            summary = json.loads(Path(client.download_artifacts(run.info.run_id, "summary.json")).read_text())
            assert summary["config_hash"] == run.data.tags["config_hash"]
    finally:
        hidden.rename(original)


def test_paired_trials_start_from_the_same_weights(quick_sweep: dict[str, Any]) -> None:
    by_seed: dict[str, dict[str, str]] = defaultdict(dict)
    for run in quick_sweep["children"]:
        by_seed[run.data.tags["seed"]][run.data.tags["method"]] = run.data.tags["init_weights"]
    assert all(pair["earlybird"] == pair["worm"] for pair in by_seed.values())
    assert len({pair["worm"] for pair in by_seed.values()}) == SEEDS  # and different seeds differ


def test_paired_trials_run_side_by_side_in_one_experiment(quick_sweep: dict[str, Any]) -> None:
    """Every trial is in the sweep's one Ray experiment, queued in pairs (each EarlyBird trial right
    before its WORM partner), so with two trials at a time a pair starts together and its wall times
    are measured under the same load. Later pairs drift apart as trials end at different times:
    the report compares wall times only for pairs that did overlap."""
    folder = quick_sweep["root"] / "ray" / "quick"
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["trials"]
    assert {p.name.split("-")[0] for p in (folder / "trials").iterdir() if p.is_dir()} == {"earlybird", "worm"}
    by_seed: dict[str, dict[str, Any]] = defaultdict(dict)
    for run in quick_sweep["children"]:
        by_seed[run.data.tags["seed"]][run.data.tags["method"]] = run
    for pair in by_seed.values():
        eb, worm = pair["earlybird"].data, pair["worm"].data
        assert int(worm.tags["trial"]) == int(eb.tags["trial"]) + 1  # queued one after the other
        assert eb.tags["node_id"] == worm.tags["node_id"]
        for run in pair.values():
            assert results_of(run)["started_at"] < results_of(run)["ended_at"]
    # The first pair started together: some instant lies inside both trials' runs.
    first = [results_of(run) for run in by_seed["0"].values()]
    assert max(r["started_at"] for r in first) < min(r["ended_at"] for r in first)


def test_the_terminal_says_how_each_trial_ended_and_what_to_run_next(local_ray: Any, store: dict[str, Any]) -> None:
    """A sweep as a person runs it: its whole stdout and stderr, read line by line. Ray Tune's own
    output (a status box every few seconds, a line per checkpoint, a TensorBoard hint into a
    temporary session folder) stays out; each trial gets one line; the end says what to run next,
    with the flags that find this sweep. The parent run records what ran it."""
    address = ray.get_runtime_context().gcs_address
    argv = [*QUICK_PAIR, "--name", "terminal", *store["args"], "--address", address]
    done = subprocess.run(
        [sys.executable, "-m", "worm_tune.sweep", *argv], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr
    out, err = done.stdout.splitlines(), done.stderr
    assert "Checkpoint successfully created" not in err + done.stdout and "/tmp/ray/session" not in done.stdout
    assert "Configuration for experiment" not in done.stdout and "Trial status" not in done.stdout
    finished = [line for line in out if line.startswith("[")]
    assert [line.split(" ")[0] for line in finished] == ["[1/2]", "[2/2]"]  # in the order they finished
    assert sorted(line.split(":")[0].split(" ", 1)[1] for line in finished) == ["#1 earlybird s0", "#2 worm s0"]
    uri, storage = store["uri"], store["root"] / "ray"
    assert out[out.index("next:") + 2 :][:2] == [
        f"  python -m analysis terminal --tracking-uri {uri}   # the report again, e.g. once more trials are in",
        f"  python -m worm_tune.final terminal --tracking-uri {uri} --storage {storage}   "
        "# confirm the pick on fresh seeds, beside EarlyBird",
    ]
    assert f"  tensorboard --logdir {storage / 'terminal'}" in out
    assert len(out) + len(err.splitlines()) <= 25, done.stdout + err

    parent, _ = runs_of(uri, "terminal")
    tags = parent.data.tags
    assert "/#/experiments/" + parent.info.experiment_id + "/runs" in out[out.index("next:") + 1]
    assert tags["mlflow.source.name"] == "python -m worm_tune.sweep" and tags["worm_tune.version"] == "0.1.0"
    assert tags["worm_tune.command"].startswith("python -m worm_tune.sweep resnet18 --quick --set")
    assert tags["mlflow.note.content"] == load_space("resnet18", "quick").description
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    if head.returncode == 0:  # a git checkout: the commit the code came from
        assert tags["mlflow.source.git.commit"] == head.stdout.strip()

    # --verbose: Ray Tune's own console output, as a debugging aid.
    argv = [*QUICK_PAIR, "--name", "terminal-verbose", *store["args"], "--address", address, "--verbose"]
    done = subprocess.run(
        [sys.executable, "-m", "worm_tune.sweep", *argv], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "Trial status" in done.stdout and not any(line.startswith("[1/2]") for line in done.stdout.splitlines())


def test_a_trial_reruns_outside_ray_to_the_same_numbers(quick_sweep: dict[str, Any]) -> None:
    """What a researcher does with a sweep's best trial: rebuild its config from the MLflow run and
    rerun it on the thread count it ran with (its ``threads`` tag); the numbers come back exactly."""
    run = next(r for r in quick_sweep["children"] if r.data.tags["method"] == "worm")
    cfg = TrialConfig().replace({**run.data.params, "threads": run.data.tags["threads"]}).validate()
    before = torch.get_num_threads()
    try:
        rerun = TrialEngine(cfg).run()
    finally:
        torch.set_num_threads(before)
    logged = json.loads(artifact(quick_sweep["uri"], run, "summary.json"))
    assert rerun["config_hash"] == run.data.tags["config_hash"]
    assert {k: v for k, v in rerun.items() if k not in TIMING} == {k: v for k, v in logged.items() if k not in TIMING}


def test_the_sweep_folder_can_be_read_without_mlflow(quick_sweep: dict[str, Any]) -> None:
    folder = quick_sweep["root"] / "ray" / "quick"
    settings = json.loads((folder / "sweep.json").read_text())
    assert settings["parent_run_id"] == quick_sweep["parent"].info.run_id
    results = [json.loads(p.read_text().splitlines()[-1]) for p in folder.glob("*/*/result.json")]
    assert len(results) == 2 * SEEDS and all(r["done"] and r["summary"]["done"] for r in results)


REPORT_FILES = ("report.md", "report.html", "trials.csv", "methods.csv", "comparisons.csv", "versus.csv")
REPORT_FILES += ("mask_distance.png",)
REPORT_FILES += ("search_epochs_vs_ratio.png", "search_epochs_vs_delta.png", "recovery.png", "pareto.png")


def test_the_sweep_ends_with_its_report_logged_to_the_parent_run(quick_sweep: dict[str, Any]) -> None:
    folder = quick_sweep["reports"] / "quick"
    for name in REPORT_FILES:
        assert (folder / name).stat().st_size > 0, name
    with at_store(quick_sweep["uri"]):  # where the store's relative artifact locations resolve
        listed = MlflowClient(quick_sweep["uri"]).list_artifacts(quick_sweep["parent"].info.run_id, "report")
    assert {a.path for a in listed} == {f"report/{name}" for name in REPORT_FILES}


def test_python_m_analysis_matches_the_runs_in_mlflow(quick_sweep: dict[str, Any], tmp_path: Path) -> None:
    uri, children = quick_sweep["uri"], quick_sweep["children"]
    command = [sys.executable, "-m", "analysis", "quick", "--tracking-uri", uri, "--reports", str(tmp_path)]
    done = subprocess.run([*command, "--no-log", "--bootstrap", "1000"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "quick"
    assert done.stdout.strip() == f"report: {folder / 'report.md'}"
    for name in REPORT_FILES:
        assert (folder / name).stat().st_size > 0, name
    # Every trial, as MLflow has it.
    trials = pd.read_csv(folder / "trials.csv").set_index("run_id")
    assert sorted(trials.index) == sorted(r.info.run_id for r in children)
    for run in children:
        row = trials.loc[run.info.run_id]
        assert row["status"] == run.data.tags["status"] and row["seed"] == int(run.data.tags["seed"])
        for key in ("search_epochs", "final_acc", "pre_prune_acc", "acc_after_1_retrain_epoch", "search_flops"):
            assert row[key] == results_of(run)[key], key
    # The paired comparison, recomputed from the runs.
    by_seed: dict[str, dict[str, Any]] = defaultdict(dict)
    for run in children:
        by_seed[run.data.tags["seed"]][run.data.tags["method"]] = results_of(run)
    comparisons = pd.read_csv(folder / "comparisons.csv").set_index("metric")
    final_acc = comparisons.loc["final_acc"]
    eb = [m["earlybird"]["final_acc"] for m in by_seed.values()]
    diffs = [m["worm"]["final_acc"] - m["earlybird"]["final_acc"] for m in by_seed.values()]
    assert final_acc["n_pairs"] == SEEDS and final_acc["eb_mean"] == pytest.approx(sum(eb) / SEEDS)
    assert final_acc["diff_mean"] == pytest.approx(sum(diffs) / SEEDS)
    assert final_acc["p"] == pytest.approx(wilcoxon_p(diffs), nan_ok=True)
    text = (folder / "report.md").read_text()
    assert f"{sum(eb) / SEEDS:.2%} [" in text and f"{100 * sum(diffs) / SEEDS:+.2f} pp [" in text
    assert "| resnet18 · digits · p=0.5 · s=0.04 | WORM δ=0.03 r=0.003 | 6 " in text


def test_analysis_reads_the_ray_folder_when_mlflow_is_unavailable(quick_sweep: dict[str, Any], tmp_path: Path) -> None:
    from analysis import cli

    missing = f"sqlite:///{tmp_path / 'gone.db'}"
    argv = ["quick", "--tracking-uri", missing, "--storage", str(quick_sweep["root"] / "ray"), "--bootstrap", "200"]
    assert cli.main([*argv, "--reports", str(tmp_path / "a")]) == 0
    text = (tmp_path / "a" / "quick" / "report.md").read_text()
    assert "Read from the Ray folder: no MLflow store at" in text
    from_ray = pd.read_csv(tmp_path / "a" / "quick" / "trials.csv").set_index("trial_id").sort_index()
    from_mlflow = pd.read_csv(quick_sweep["reports"] / "quick" / "trials.csv").set_index("trial_id").sort_index()
    columns = ["method", "seed", "status", "config_hash", "search_epochs", "final_acc", "search_flops", "total_time"]
    pd.testing.assert_frame_equal(from_ray[columns], from_mlflow[columns])
    # The folder itself names the sweep too.
    assert (
        cli.main([str(quick_sweep["root"] / "ray" / "quick"), "--reports", str(tmp_path / "b"), "--bootstrap", "200"])
        == 0
    )
    assert (tmp_path / "b" / "quick" / "report.md").is_file()


def test_a_ray_folder_being_written_reads_as_far_as_it_goes(quick_sweep: dict[str, Any], tmp_path: Path) -> None:
    from analysis import load

    source = quick_sweep["root"] / "ray" / "quick"
    for path in [source / "sweep.json", *source.glob("*/*/result.json"), *source.glob("*/*/params.json")]:
        (tmp_path / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path.relative_to(source)).write_bytes(path.read_bytes())
    one = next(tmp_path.glob("trials/worm-*/result.json"))
    lines = one.read_text().splitlines()
    one.write_text("\n".join(lines[:2]) + "\n" + lines[2][: len(lines[2]) // 2])  # a line half written
    sweep = load.from_ray(tmp_path)
    assert (
        len(sweep.trials) == 2 * SEEDS and not sweep.running
    )  # no Ray experiment state copied: trials are what they wrote
    cut = sweep.trials.set_index("trial_id").loc[one.parent.name.split("-", 1)[1]]
    assert cut["status"] == "stopped_early" and sweep.curves["trial_id"].value_counts()[cut.name] == 2


def test_a_crashed_trial_retries_from_its_checkpoint_with_the_same_numbers(
    quick_sweep: dict[str, Any], store: dict[str, Any]
) -> None:
    argv = ["resnet18", "--quick", *SWEEP_TINY, *ONE_DELTA, "--set", "seed=1", "--set", "method=worm"]
    argv += ["--set", "crash_at_epoch=2", "--max-failures", "1", "--no-analysis"]
    assert sweep.main([*argv, "--name", "crash", *store["args"]]) == 0
    assert not (store["reports"] / "crash").exists()
    _, (run,) = runs_of(store["uri"], "crash")
    assert run.data.tags["failures"] == "1"
    (reference,) = [r for r in quick_sweep["children"] if r.data.tags["config_hash"] == run.data.tags["config_hash"]]
    for key in SUMMARY:
        assert results_of(run)[key] == results_of(reference)[key], key
    for name in ("d_max", "r", "train_loss", "test_acc"):  # every epoch's, the retried ones included
        assert history(store["uri"], run, name) == history(store["uri"], reference, name), name
    assert [s for s, _ in history(store["uri"], run, "test_acc")] == [1, 2, 3, 4]


def test_a_trial_that_keeps_crashing_is_recorded_as_an_error(local_ray: Any, store: dict[str, Any]) -> None:
    argv = ["resnet18", "--quick", *SWEEP_TINY, *ONE_DELTA, "--set", "seed=0", "--set", "method=worm"]
    argv += ["--set", "search.ratio=0.3"]
    # crash_at_epoch=1 fires before the first checkpoint; with no retries the trial fails for good.
    code = sweep.main([*argv, "--set", "crash_at_epoch=1", "--max-failures", "0", "--name", "broken", *store["args"]])
    assert code == 1
    parent, (run,) = runs_of(store["uri"], "broken")
    assert run.info.status == "FAILED" and run.data.tags["status"] == "error"
    assert parent.info.status == "FAILED"
    assert "| WORM δ=0.03 r=0.003 | 1      | 0         | 0             | 1 " in report_of(store, "broken")


def test_a_diverged_trial_is_recorded_and_the_sweep_goes_on(local_ray: Any, store: dict[str, Any]) -> None:
    argv = [*QUICK_PAIR, "--set", "optim.lr=1e12"]
    assert sweep.main([*argv, "--name", "diverge", *store["args"]]) == 0
    parent, children = runs_of(store["uri"], "diverge")
    assert len(children) == 2 and parent.info.status == "FINISHED"
    for run in children:
        assert run.info.status == "FINISHED" and run.data.tags["status"] == "diverged"
        assert results_of(run)["diverged"] == 1.0 and "final_acc" not in results_of(run)
    assert "**Partial report.** 0 of 2 trials have finished" in report_of(store, "diverge")


def test_eight_concurrent_trials_share_one_sqlite_store(local_ray: Any, store: dict[str, Any]) -> None:
    space = store["root"] / "eight.toml"
    space.write_text(
        'methods = ["worm"]\n[base]\n"data.dataset" = "digits"\n"model.pretrained" = false\n'
        "[axes]\nseed = [0, 1, 2, 3, 4, 5, 6, 7]\n"
    )
    argv = [
        str(space),
        *SWEEP_TINY,
        "--set",
        "search.max_epochs=2",
        "--cpus-per-trial",
        "0.25",
        "--max-concurrent",
        "8",
    ]
    assert sweep.main([*argv, "--name", "eight", *store["args"]]) == 0
    _, children = runs_of(store["uri"], "eight")
    assert len(children) == 8
    assert all(r.info.status == "FINISHED" and int(results_of(r)["epochs"]) == 3 for r in children)
    assert all(len(history(store["uri"], r, "test_acc")) == 3 for r in children)
    # All eight ran at once: some instant lies inside every run's [start, end].
    assert max(r.info.start_time for r in children) < min(r.info.end_time for r in children)


def test_an_interrupted_sweep_resumes_without_rerunning_finished_trials(
    local_ray: Any, store: dict[str, Any], quick_sweep: dict[str, Any]
) -> None:
    """Ctrl-C, a damaged checkpoint of the trial it cut short, then two ``--resume`` at once: one
    driver runs the sweep, the other is refused, and every number matches an uninterrupted run."""
    address = ray.get_runtime_context().gcs_address
    argv = [
        "resnet18",
        "--quick",
        *SWEEP_TINY,
        *ONE_DELTA,
        "--set",
        "seed=0",
        "--max-concurrent",
        "1",
        "--no-share",
        "--name",
        "resume",
        *store["args"],
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "worm_tune.sweep", *argv, "--address", address],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=default_sigint,
    )
    client = MlflowClient(store["uri"])
    first_done = running = None
    deadline = time.monotonic() + 300
    # One pair, run one trial at a time: EarlyBird, then WORM.
    # Interrupt once one trial has finished and the next has logged epoch 2 of 4, so the interrupt
    # both leaves a finished trial alone and cuts a running one short. At epoch 2, Ray has registered
    # the epoch-1 checkpoint (a result follows the previous save), so --resume restores from a
    # checkpoint, the one this test damages.
    while running is None and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        experiments = [e.experiment_id for e in client.search_experiments()]
        trials = client.search_runs(
            experiments, f"tags.`{TAG_SWEEP}` = 'resume' and tags.`{TAG_KIND}` = 'trial'", order_by=["start_time"]
        )
        done = [r for r in trials if r.info.status == "FINISHED"]
        first_done = done[0] if done else None
        in_search = [r for r in trials if r.info.status == "RUNNING" and r.data.metrics.get("epoch", 0) == 2]
        running = in_search[0] if first_done is not None and in_search else None
    assert running is not None, proc.stderr.read() if proc.poll() is not None else "no trial finished"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted; resume with: python -m worm_tune.sweep resnet18 --resume --name resume" in err
    parent, before = runs_of(store["uri"], "resume")
    assert parent.info.status == "KILLED" and len(before) == 2
    cut_short = [r for r in before if r.info.run_id != first_done.info.run_id]
    assert running.info.run_id in {r.info.run_id for r in cut_short}
    assert all(r.info.status == "KILLED" and r.data.tags["status"] == "interrupted" for r in cut_short)

    # Damage every checkpoint Ray kept of the trial the interrupt cut short (as a crash mid-write would).
    folder = store["root"] / "ray" / "resume"
    damaged = list(folder.glob(f"*/*{running.data.tags[TAG_TRIAL]}/checkpoint_*/engine.pt"))
    assert damaged
    for path in damaged:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    resume = ["resnet18", "--resume", "--name", "resume", *store["args"][:2], "--reports", str(store["reports"])]
    drivers = [
        subprocess.Popen(
            [sys.executable, "-m", "worm_tune.sweep", *resume, "--address", address],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        for _ in range(2)
    ]
    errors = [d.communicate(timeout=600)[1] for d in drivers]
    codes = [d.returncode for d in drivers]
    assert sorted(codes) == [0, 2], errors
    winner, loser = (drivers[0], drivers[1]) if codes[0] == 0 else (drivers[1], drivers[0])
    assert errors[drivers.index(loser)] == (
        f"python -m worm_tune.sweep: error: sweep resume is being run by process {winner.pid} on "
        f"{socket.gethostname()}; wait for it, or stop it first\n"
    )
    parent, after = runs_of(store["uri"], "resume")
    assert parent.info.status == "FINISHED"
    assert len(after) == 2 and all(r.info.status == "FINISHED" for r in after)
    assert all(r.data.tags["status"] in ("converged", "not_converged") for r in after)
    assert len({r.data.tags["config_hash"] for r in after}) == 2
    for run in after:
        steps = [s for s, _ in history(store["uri"], run, "test_acc")]
        assert steps == list(range(1, int(results_of(run)["epochs"]) + 1))  # every epoch logged once
    (kept,) = [r for r in after if r.info.run_id == first_done.info.run_id]
    assert kept.info.end_time == first_done.info.end_time  # the finished trial was not run again
    results = {p.parent.name.split("-", 1)[1]: p for p in (store["root"] / "ray" / "resume").glob("*/*/result.json")}
    assert len(results) == 2
    epochs = {r.data.tags[TAG_TRIAL]: int(results_of(r)["epochs"]) for r in after}
    for trial_id, path in results.items():
        iterations = [json.loads(line)["training_iteration"] for line in path.read_text().splitlines()]
        # Ray's own log: an epoch whose checkpoint the interrupt beat is run again (to the same numbers).
        assert sorted(set(iterations)) == list(range(1, epochs[trial_id] + 1))
    kept_iterations = results[first_done.data.tags[TAG_TRIAL]].read_text().splitlines()
    assert len(kept_iterations) == epochs[first_done.data.tags[TAG_TRIAL]]
    # The trial whose checkpoint was damaged restarted from scratch, and its run says so.
    (restarted,) = [r for r in after if r.info.run_id == running.info.run_id]
    assert "was damaged" in restarted.data.tags["notice"] and "restarted from scratch" in restarted.data.tags["notice"]
    assert all("notice" not in r.data.tags for r in after if r.info.run_id != running.info.run_id)
    # Every trial's numbers are those of the same config in the uninterrupted quick sweep.
    uninterrupted = {r.data.tags["config_hash"]: r for r in quick_sweep["children"]}
    compared = [r for r in after if r.data.tags["config_hash"] in uninterrupted]
    assert restarted in compared and len(compared) == 2
    for run in compared:
        reference = uninterrupted[run.data.tags["config_hash"]]
        for key in ("epochs", *SUMMARY):
            assert results_of(run)[key] == results_of(reference)[key], key
        assert history(store["uri"], run, "test_acc") == history(store["uri"], reference, "test_acc")


def test_optuna_persists_a_seeded_multi_objective_study_of_paired_effects(
    local_ray: Any, store: dict[str, Any]
) -> None:
    argv = ["resnet18", "--quick", *SWEEP_TINY, "--search", "optuna", "--num-samples", "3", "--sampler-seed", "7"]
    assert sweep.main([*argv, "--seeds-per-trial", "2", "--name", "tpe", *store["args"]]) == 0
    study = optuna.load_study(study_name="tpe", storage=f"sqlite:///{store['root'] / 'ray' / 'tpe' / 'optuna.db'}")
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE"]
    assert len(study.trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    # The space enqueues the paper's point first; TPE's seeded random samples follow: the same seed, the same point.
    assert study.trials[0].params == {"worm.delta": 0.05, "worm.factor": 0.003}
    replay = optuna.create_study(directions=["minimize", "maximize"], sampler=optuna.samplers.TPESampler(seed=7))
    assert replay.ask(study.trials[1].distributions).params == study.trials[1].params
    _, children = runs_of(store["uri"], "tpe")
    baselines = {int(r.data.tags["seed"]): results_of(r) for r in children if r.data.tags["method"] == "earlybird"}
    assert sorted(baselines) == [0, 1] and len(children) == 2 + 3 * 2
    for trial in study.trials:
        mine = [r for r in children if r.data.tags.get("candidate") == str(trial.number)]
        assert sorted(int(r.data.tags["seed"]) for r in mine) == [0, 1]
        for run in mine:
            assert float(run.data.params["worm.delta"]) == pytest.approx(trial.params["worm.delta"])
        diffs = [
            [results_of(r)[m] - baselines[int(r.data.tags["seed"])][m] for r in mine]
            for m in ("search_epochs", "final_acc")
        ]
        assert trial.values == pytest.approx([sum(d) / 2 for d in diffs], abs=1e-12)
    text = report_of(store, "tpe")
    assert "## The Optuna study: candidates on paired seeds" in text
    assert text.count("WORM δ=") >= 3  # each candidate compared with EarlyBird


def test_asha_stops_trials_and_they_have_no_convergence_epoch(
    local_ray: Any, store: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["resnet18", "--quick", *SWEEP_TINY, "--set", "method=earlybird", "--set", "search.ratio=0.5"]
    argv += ["--scheduler", "asha", "--max-concurrent", "1", "--name", "asha", *store["args"]]
    assert sweep.main(argv) == 0
    _, children = runs_of(store["uri"], "asha")
    stopped = [r for r in children if r.data.tags["status"] == "stopped_early"]
    assert len(children) == SEEDS and 0 < len(stopped) < SEEDS
    for run in stopped:  # stopped at ASHA's first rung (epoch 2), inside the search
        assert "search_epochs" not in results_of(run) and results_of(run)["epochs"] == 2
    out = capsys.readouterr().out
    assert "grid search, asha scheduler: every trial trains on its own" in out
    row = next(line for line in out.splitlines() if line.startswith("| earlybird"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # The rest ran to the end of their search, converged or not.
    assert cells[2] == str(SEEDS) and int(cells[3]) + int(cells[4]) == SEEDS - len(stopped)
    assert cells[5] == str(len(stopped))
    assert f"{SEEDS - len(stopped)} of {SEEDS} trials have finished" in report_of(store, "asha")


def test_gpus_beyond_the_cluster_are_refused_before_any_trial(
    local_ray: Any, store: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["resnet18", "--quick", *SWEEP_TINY, "--gpus-per-trial", "0.5", "--name", "gpu", *store["args"]]
    assert sweep.main(argv) == 2
    err = capsys.readouterr().err
    assert "--gpus-per-trial 0.5 is more than the cluster has (0 GPU)" in err and err.count("\n") == 1
    assert not (store["root"] / "ray" / "gpu").exists()


def test_final_reruns_the_best_config_and_links_back(quick_sweep: dict[str, Any], store: dict[str, Any]) -> None:
    sweep_runs = quick_sweep["children"]
    runs_of_setting: dict[str, list[Any]] = defaultdict(list)
    for run in sweep_runs:
        runs_of_setting[run.data.tags["group_hash"]].append(run)  # the setting hash's tag
    best = max(
        runs_of_setting,
        key=lambda s: sum(results_of(r)["final_acc"] for r in runs_of_setting[s]) / len(runs_of_setting[s]),
    )
    argv = ["quick", "--top-k", "1", "--seeds", "6,7", "--retrain-epochs", "2", "--name", "quick-final"]
    assert final.main([*argv, *store["args"]]) == 0
    parent, children = runs_of(store["uri"], "quick-final")
    assert parent.data.tags[TAG_KIND] == "final" and parent.data.tags["source_sweep"] == "quick"
    assert parent.info.experiment_id == quick_sweep["parent"].info.experiment_id
    picks = [r for r in children if "final_rank" in r.data.tags]
    assert sorted(r.data.tags["seed"] for r in picks) == ["6", "7"]
    # A WORM pick runs beside its EarlyBird partner on the same seeds; EarlyBird is its own partner.
    partners = [r for r in children if "partner_of" in r.data.tags]
    method = runs_of_setting[best][0].data.tags["method"]
    assert sorted((r.data.tags["method"], r.data.tags["seed"]) for r in partners) == (
        [("earlybird", "6"), ("earlybird", "7")] if method == "worm" else []
    )
    assert len(children) == len(picks) + len(partners)
    sweep_hashes = {r.data.tags["config_hash"] for r in sweep_runs}
    assert not {r.data.tags["config_hash"] for r in children} & sweep_hashes  # no rerun repeats a sweep trial
    source_ids = {r.info.run_id for r in runs_of_setting[best]}
    for run in children:
        assert run.data.params["retrain.max_epochs"] == "2" and results_of(run)["retrain_epochs"] == 2
        assert len(run.outputs.model_outputs) == 1  # its network, logged as an MLflow model
    for run in picks:
        assert set(run.data.tags["source_runs"].split(",")) == source_ids
        assert run.data.tags["source_group"] == best and run.data.tags["final_rank"] == "1"
        assert all(source in run.data.tags["mlflow.note.content"] for source in source_ids)
        # The rerun is the source config but for the seed and the retraining budget.
        source = runs_of_setting[best][0].data.params
        differ = {k for k, v in run.data.params.items() if source[k] != v}
        assert differ == {"seed", "retrain.max_epochs"}
    assert parent.data.tags.get("confirmation", "").startswith(
        "confirmation on 2 fresh seeds (one pre-stated test): "
    ) == (method == "worm")


def test_an_mlflow_server_given_by_environment_variable(
    local_ray: Any, store: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    backend, artifacts = f"sqlite:///{store['root'] / 'server.db'}", str(store["root"] / "server-artifacts")
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend]
    command += ["--artifacts-destination", artifacts, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    server = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the server and its workers, stopped together below
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not healthy(uri) and time.monotonic() < deadline:
            time.sleep(1)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        argv = [*QUICK_PAIR, "--set", "method=worm"]
        assert (
            sweep.main([*argv, "--name", "served", "--storage", store["args"][1], "--reports", str(store["reports"])])
            == 0
        )
        parent, (run,) = runs_of(uri, "served")
        assert parent.info.status == "FINISHED" and run.data.tags["status"] in ("converged", "not_converged")
        artifacts = {a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id)}
        assert artifacts == {"mask_distance.csv", "summary.json", TICKET_FILE}
        logged = {a.path for a in MlflowClient(uri).list_artifacts(parent.info.run_id, "report")}
        assert "report/report.md" in logged and "report/trials.csv" in logged
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def test_a_quick_vit_sweep_runs_through_ray_mlflow_and_the_report(local_ray: Any, store: dict[str, Any]) -> None:
    """Transformers need nothing new from the sweep, MLflow or the analysis: the ViT quick profile
    (one seed, both cases - weights and heads -, WORM truncating updates) runs as is, and the report
    compares EB and WORM per kind."""
    argv = ["vit", "--quick", *SWEEP_TINY, "--set", "seed=0", "--set", "search.threshold=1e-6", "--name", "vit"]
    argv += ["--set", "worm.apply=update", "--set", "worm.delta=0.005"]  # one WORM trial per case
    assert sweep.main([*argv, *store["args"]]) == 0
    parent, children = runs_of(store["uri"], "vit")
    assert parent.info.status == "FINISHED" and len(children) == 4
    kinds = sorted((r.data.params["prune.kind"], r.data.tags["method"]) for r in children)
    assert kinds == [(k, m) for k in ("structured", "unstructured") for m in ("earlybird", "worm")]
    for run in children:
        assert run.data.tags["status"] in ("converged", "not_converged") and run.data.params["model.arch"] == "vit"
        assert results_of(run)["params_pruned"] < results_of(run)["params_dense"]
    comparisons = pd.read_csv(store["reports"] / "vit" / "comparisons.csv")
    final = comparisons[comparisons["metric"] == "final_acc"].sort_values("setting")
    assert [s.split(" · ")[-1] for s in final["setting"]] == ["prune.kind=structured", "prune.kind=unstructured"]
    assert (final["n_pairs"] == 1).all() and final["verdict"].str.startswith("too few pairs (n=1 < 6)").all()
    assert "prune.kind=structured" in report_of(store, "vit")
