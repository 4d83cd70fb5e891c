"""Work saved by older code still resumes and reports.

Each ``tests/data/legacy*/root`` was written by an older commit (``tests/data/legacy/make.sh`` says
how): 5418119, before the package was split into layers (a Ray experiment per method family), and
1099602, before the engine, runner and config were split into rooms (Ray's saved state names
classes and functions by their old modules). Each holds a ``worm_tune.run`` trial that crashed
after epoch 3, and a one-trial sweep interrupted with Ctrl-C after two epochs, with its Ray folder,
its MLflow store and its space file; both train a tiny BERT on a made-up TSV folder, so every
checkpoint stays under 1 MB. Both are finished here by today's code, and must end with the numbers
an uninterrupted run of today's code gives.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import ray
from mlflow.tracking import MlflowClient

from tests.helpers import SUMMARY, curve_of, results_of
from worm_tune.cli import run, sweep
from worm_tune.config import TrialConfig
from worm_tune.metrics import untimed
from worm_tune.tune.plan import SETTINGS_FILE
from worm_tune.tune.store import PARENT_TAG, TAG_SWEEP

#: The saved work of each older commit.
SAVED = sorted((Path(__file__).parent / "data").glob("legacy*/root"))
#: The trial both saved runs ran (as in make.sh), but for where its data lives.
TRIAL = {
    "model.arch": "bert",
    "data.dataset": "text",
    "data.batch_size": 32,
    "search.window": 2,
    "search.threshold": 1e-6,
    "search.max_epochs": 6,
    "retrain.max_epochs": 2,
    "threads": 1,
    "device": "cpu",
}


def flags(root: Path) -> list[str]:
    trial = {**TRIAL, "data.data_dir": str(root / "text")}
    return [arg for key, value in trial.items() for arg in ("--set", f"{key}={value}")]


@pytest.fixture(params=SAVED, ids=lambda saved: saved.parent.name)
def legacy(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The saved work, copied and moved: every absolute path it recorded now points at the copy."""
    saved: Path = request.param
    old, root = (saved.parent / "ROOT").read_text().strip(), tmp_path / "root"
    shutil.copytree(saved, root)
    for text in (root / "ray" / "legacy" / SETTINGS_FILE, root / "space.toml"):
        text.write_text(text.read_text().replace(old, str(root)))
    with sqlite3.connect(root / "mlflow.db") as db:
        db.execute("UPDATE experiments SET artifact_location = replace(artifact_location, ?, ?)", (old, str(root)))
        db.execute("UPDATE runs SET artifact_uri = replace(artifact_uri, ?, ?)", (old, str(root)))
    return root


def test_a_run_saved_before_the_move_resumes_to_the_same_numbers(legacy: Path, tmp_path: Path) -> None:
    saved = json.loads((legacy / "run" / "config.json").read_text())
    assert saved["config_hash"] == TrialConfig().replace(TRIAL).hash()  # config names did not move
    assert len(json.loads((legacy / "run" / "metrics.json").read_text())["epochs"]) == 2
    assert run.main([*flags(legacy), "--set", "crash_at_epoch=3", "--quiet", "--out", str(legacy / "run")]) == 0
    assert run.main([*flags(legacy), "--quiet", "--out", str(tmp_path / "fresh")]) == 0
    resumed = json.loads((legacy / "run" / "metrics.json").read_text())
    fresh = json.loads((tmp_path / "fresh" / "metrics.json").read_text())
    assert untimed(resumed) == untimed(fresh)


@pytest.mark.slow
def test_a_sweep_saved_before_the_move_resumes_and_reports(legacy: Path, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        space = str(legacy / "space.toml")
        argv = [space, "--resume", "--name", "legacy", "--storage", str(legacy / "ray"), "--reports", str(reports)]
        assert sweep.main(argv) == 0
    finally:
        ray.shutdown()
    uri = f"sqlite:///{legacy / 'mlflow.db'}"
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], f"tags.`{TAG_SWEEP}` = 'legacy'")
    (parent,) = [r for r in runs if PARENT_TAG not in r.data.tags]
    (trial,) = [r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
    assert parent.info.status == "FINISHED" and trial.info.status == "FINISHED"
    steps = [step for step, _ in curve_of(client, trial, "test_acc")]
    assert steps == list(range(1, int(results_of(trial)["epochs"]) + 1))  # every epoch logged once
    # The same trial run whole by today's code, on the thread count it ran with.
    cfg = TrialConfig.from_dict({k: v for k, v in trial.data.params.items()})
    assert cfg.hash() == trial.data.tags["config_hash"]
    out = tmp_path / "fresh"
    argv = ["--config", str(_config_file(cfg, tmp_path)), "--set", "threads=1", "--quiet", "--out", str(out)]
    assert run.main([*argv, "--set", f"data.data_dir={legacy / 'text'}"]) == 0  # data_dir is where it lives now
    fresh: dict[str, Any] = json.loads((out / "metrics.json").read_text())["summary"]
    for key in ("epochs", *SUMMARY):
        assert results_of(trial)[key] == pytest.approx(fresh[key], abs=0), key
    assert "Partial report" not in (reports / "legacy" / "report.md").read_text()


def _config_file(cfg: TrialConfig, folder: Path) -> Path:
    path = folder / "trial.json"
    path.write_text(json.dumps(cfg.to_flat()))
    return path
