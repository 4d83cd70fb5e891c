"""A tracking server that goes away in the middle of a sweep (issue 22): the trials train on, and
nothing is lost or logged twice, even when the driver is killed before the server is back.

Without a server first: a callback whose store cannot be reached spools its events, and one restored
from it (as ``--resume`` restores it) writes them, each once even when written twice.

Then a real ``mlflow server`` (SQLite backend, artifacts served) is stopped with SIGKILL once the first
trial has reported, and started again on the same port and backend; the sweep runs as a subprocess
on this module's Ray cluster. The grid: EarlyBird and WORM at one seed on digits, searches that never
converge: 384 images, 8 search and 2 retraining epochs (about 35 s of training on 2 cores) when the
server is away for a while; 128 images, 4 and 1 when the driver is killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from mlflow.tracking import MlflowClient

from tests.helpers import free_port, healthy, results_of
from worm_tune import metrics
from worm_tune.config import TrialConfig
from worm_tune.tickets import TICKET_FILE
from worm_tune.tune import store
from worm_tune.tune.callback import MlflowCallback
from worm_tune.tune.plan import EXPERIMENT
from worm_tune.tune.spool import DONE_FILE, SPOOL_FILE, TICKETS_DIR
from worm_tune.tune.store import PARENT_TAG, TAG_KIND, TAG_SWEEP

GRID = """
description = "the outage tests' grid"
methods = ["earlybird", "worm"]

[base]
"model.arch" = "resnet18"
"model.pretrained" = false
"data.dataset" = "digits"
"data.train_subset" = {subset}
"data.batch_size" = 32
"search.window" = 2
"search.max_epochs" = {search}
"search.threshold" = 1e-9
"retrain.max_epochs" = {retrain}
threads = 1

[axes]
seed = [0]

[method_axes.worm]
"worm.delta" = [0.05]
"""
#: The grid's sizes: long enough to train through an outage, or short.
LONG, SHORT = {"subset": 384, "search": 8, "retrain": 2}, {"subset": 128, "search": 4, "retrain": 1}
#: How long the server stays away (s): several epochs of training.
OUTAGE_S = 20
#: What each finished trial run holds besides its metrics.
ARTIFACTS = {"summary.json", "mask_distance.csv", TICKET_FILE}


class FakeTrial:
    """What the MLflow callback reads of a Tune trial."""

    def __init__(self, trial_id: str, checkpoint: Path) -> None:
        self.trial_id, self.config, self.num_failures = trial_id, {"method": "earlybird"}, 0
        self.last_result: dict[str, Any] | None = None
        self.checkpoint = type("Checkpoint", (), {"path": str(checkpoint)})()

    def __str__(self) -> str:
        return f"earlybird {self.trial_id}"


def result(epoch: int) -> dict[str, Any]:
    """A trial's report at ``epoch`` of 3 (search epochs 1 and 2, then one retraining epoch)."""
    summary = {"method": "earlybird", "unit": "channel", "init_weights": "random", "done": epoch == 3}
    summary |= {"converged": True, "search_epochs": 2, "final_acc": 0.5 if epoch == 3 else None, "epochs": epoch}
    return {
        "training_iteration": epoch,
        "timestamp": 1_700_000_000 + epoch,
        "phase": "search" if epoch < 3 else "retrain",
        "test_acc": 0.1 * epoch,
        "summary": summary,
    }


def test_a_store_away_leaves_the_updates_in_the_spool_and_a_restored_callback_writes_each_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # each try fails at once
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = store.experiment_id(uri, "spool")
    parent = store.start_parent_run(uri, exp, "spool", "sweep", {}, {})
    folder, checkpoint = tmp_path / "sweep", tmp_path / "checkpoint_000003"
    folder.mkdir()
    checkpoint.mkdir()
    (checkpoint / TICKET_FILE).write_bytes(b"a ticket")
    away = MlflowCallback(
        f"http://127.0.0.1:{free_port()}", exp, parent, "spool", TrialConfig().to_dict(), folder=str(folder)
    )
    trial = FakeTrial("t1", checkpoint)
    for epoch in (1, 2, 3):
        away.on_trial_result(0, [], trial, result(epoch))  # returns at once: nothing waits for the store
        trial.last_result = result(epoch)
    away.on_trial_complete(0, [], trial)
    shutil.rmtree(checkpoint)  # as the footprint callback does right after
    assert away.close(0.5) == 4  # the writer stopped, as a killed driver's
    assert len((folder / SPOOL_FILE).read_text().splitlines()) == 4 and len(list((folder / TICKETS_DIR).iterdir())) == 1
    spooled = (folder / SPOOL_FILE).read_bytes()

    def resume() -> None:
        restored = pickle.loads(pickle.dumps(away))  # as Ray restores it, then points it at the store
        restored.uri = uri
        assert restored.flush(60) == 0

    resume()
    assert (
        not (folder / SPOOL_FILE).exists() and not (folder / DONE_FILE).exists() and not (folder / TICKETS_DIR).exists()
    )
    # A driver killed after writing them, before it recorded so: the same events again change nothing.
    (folder / SPOOL_FILE).write_bytes(spooled)
    (folder / TICKETS_DIR).mkdir()
    kept = json.loads(spooled.splitlines()[-1])["ticket"]["file"]
    (folder / TICKETS_DIR / kept).write_bytes(b"a ticket")
    resume()

    client = MlflowClient(uri)
    (run,) = store.child_runs(uri, client.get_run(parent))
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "converged"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "epoch")] == [1, 2, 3]
    for phase, steps in (("search", [1, 2]), ("retrain", [3])):
        logged = client.get_metric_history(run.info.run_id, metrics.logged_name("test_acc", phase))
        assert sorted(m.step for m in logged) == steps
    final = client.get_metric_history(run.info.run_id, metrics.logged_name("final_acc"))
    assert [(m.step, m.value) for m in final] == [(3, 0.5)]  # the summary, once
    with store.at_store(uri):
        assert Path(client.download_artifacts(run.info.run_id, TICKET_FILE)).read_bytes() == b"a ticket"
        assert json.loads(Path(client.download_artifacts(run.info.run_id, "summary.json")).read_text())["epochs"] == 3


class Server:
    """An ``mlflow server`` on a fixed port and backend, stopped and started again by the test."""

    def __init__(self, root: Path) -> None:
        self.port, self.root = free_port(), root
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        if healthy(self.url):
            return
        command = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.root / 'server.db'}",
        ]
        command += ["--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--workers", "1"]
        with (self.root / "server.log").open("a") as log:
            # Its own session: the server and its workers are killed together.
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # no job runners: starts in seconds
            )
        wait_for(lambda: healthy(self.url), 180, "the MLflow server did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=60)
        wait_for(lambda: not healthy(self.url), 30, "the MLflow server did not stop")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    serving = Server(tmp_path_factory.mktemp("server"))
    yield serving
    serving.kill()


@pytest.fixture
def server(running: Server) -> Server:
    """The module's server, up (a test stops it, and starts it again)."""
    running.start()
    return running


def wait_for(condition: Callable[[], bool], timeout_s: float, why: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, why
        time.sleep(0.5)


def sweep(tmp_path: Path, server: Server, name: str, sizes: dict[str, int], resume: bool = False) -> subprocess.Popen:
    """Start (or resume) the grid as sweep ``name`` (its output in ``<name>.log``), on this module's Ray cluster."""
    space = tmp_path / "grid.toml"
    space.write_text(GRID.format(**sizes))
    argv = [str(space), "--storage", str(tmp_path / "ray"), "--name", name, "--no-analysis"]
    argv += ["--resume"] if resume else ["--tracking-uri", server.url, "--max-concurrent", "1"]
    argv += ["--address", ray.get_runtime_context().gcs_address]
    with (tmp_path / f"{name}.log").open("a") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "worm_tune.sweep", *argv],
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def reports(folder: Path) -> list[dict[str, Any]]:
    """Every result Ray has written for the sweep's trials so far (a line being written aside)."""
    out = []
    for path in (folder / EXPERIMENT).glob("*/result.json"):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def unwritten(folder: Path) -> list[str]:
    """The spool's events not yet written to MLflow."""
    done = folder / DONE_FILE
    last = int(done.read_text()) if done.exists() else 0
    spool = folder / SPOOL_FILE
    lines = spool.read_text().splitlines() if spool.exists() else []
    return [line for line in lines if json.loads(line)["seq"] > last]


def assert_each_epoch_logged_once(url: str, name: str, sizes: dict[str, int]) -> None:
    """Both trial runs finished with every epoch's metrics once (steps 1..epochs), their summary once,
    and their artifacts."""
    client = MlflowClient(url)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"tags.`{TAG_SWEEP}` = '{name}'", max_results=100)
    (parent,) = [r for r in runs if r.data.tags[TAG_KIND] == "sweep"]
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
    assert sorted(r.data.tags["method"] for r in children) == ["earlybird", "worm"]
    for run in children:
        assert run.info.status == "FINISHED" and run.data.tags["status"] == "not_converged", run.info.run_name
        epochs = int(results_of(run)["epochs"])
        assert epochs == sizes["search"] + sizes["retrain"]
        for key in run.data.metrics:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            if key.startswith(f"{metrics.SUMMARY_SECTION}/"):
                assert steps == [epochs], (run.info.run_name, key)  # the summary, once
            else:
                assert len(steps) == len(set(steps)) and set(steps) <= set(range(1, epochs + 1)), (
                    run.info.run_name,
                    key,
                )
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "epoch"))
        assert steps == list(range(1, epochs + 1)), run.info.run_name
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == ARTIFACTS


@pytest.mark.slow
def test_trials_train_on_while_the_server_is_away_and_nothing_is_lost(
    local_ray: Any, tmp_path: Path, server: Server
) -> None:
    folder = tmp_path / "ray" / "away"
    proc = sweep(tmp_path, server, "away", LONG)
    try:
        wait_for(lambda: bool(reports(folder)) or proc.poll() is not None, 240, "no trial reported")
        server.kill()
        down = time.time()
        time.sleep(OUTAGE_S)
        up = time.time()
        server.start()
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = (tmp_path / "away.log").read_text()
    assert code == 0, out
    # Epochs ended while the server was away: Ray's results (each stamped by its trial) say so.
    during = [r for r in reports(folder) if down + 1 <= r["timestamp"] <= up - 1]
    assert len(during) >= 3, [r["timestamp"] for r in reports(folder)]
    assert "not yet written" not in out and "refused" not in out
    assert_each_epoch_logged_once(server.url, "away", LONG)
    assert not (folder / SPOOL_FILE).exists()  # removed once all is written


@pytest.mark.slow
def test_a_driver_killed_while_the_server_is_away_leaves_its_updates_to_resume(
    local_ray: Any, tmp_path: Path, server: Server
) -> None:
    folder = tmp_path / "ray" / "killed"
    proc = sweep(tmp_path, server, "killed", SHORT)
    try:
        wait_for(lambda: bool(reports(folder)) or proc.poll() is not None, 240, "no trial reported")
        server.kill()
        seen = len(reports(folder))
        wait_for(lambda: len(reports(folder)) >= seen + 2 or proc.poll() is not None, 120, "no epoch while away")
        assert unwritten(folder), "the epochs since the server went away are spooled"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    server.start()
    resume = sweep(tmp_path, server, "killed", SHORT, resume=True)
    try:
        code = resume.wait(timeout=300)
    finally:
        if resume.poll() is None:
            resume.kill()
    out = (tmp_path / "killed.log").read_text()
    assert code == 0, out
    assert_each_epoch_logged_once(server.url, "killed", SHORT)
    assert not (folder / SPOOL_FILE).exists()
