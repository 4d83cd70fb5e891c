"""A sequential sweep (``--until``) through real Ray and MLflow: the rule met after the second batch stops it
there, an interrupt in the middle of a batch resumes to the same batches and numbers, and the store holds
exactly the trials that ran.

The space: EarlyBird and WORM at r = 1, which truncates nothing, on 128 digits images with searches of up
to 3 epochs. WORM's differences to EarlyBird are then exactly 0 on every seed, so the anytime-valid
interval's width after n pairs is known before the sweep runs, and a ``width=`` rule between its widths
after 2 and after 4 pairs is met at the second look, whatever the searches' lengths.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import ray
from mlflow.tracking import MlflowClient

from tests.helpers import default_sigint, results_of
from tests.test_sharing import interrupt, run, runs_of
from worm_tune.tune.plan import GROUPS_DIR
from worm_tune.tune.until import LOOKS_TAG, SEEDS_TAG, STOP_TAG, Record, Until, epoch_bounds, look

pytestmark = pytest.mark.slow

SPACE = """
description = "the sequential tests' pair: WORM at r = 1 beside EarlyBird"
methods = ["earlybird", "worm"]

[base]
"model.arch" = "resnet18"
"model.pretrained" = false
"data.dataset" = "digits"
"data.train_subset" = 128
"data.batch_size" = 32
"search.window" = 2
"search.max_epochs" = 3
"retrain.max_epochs" = 1
"worm.delta" = 0.3
"worm.factor" = 1.0

[axes]
seed = [0, 1]
"""


def width_after(pairs: int) -> float:
    """The interval's width after ``pairs`` zero differences, for this space's search lengths."""
    low, high = epoch_bounds(2, 3, "algorithm")
    interval = look({"worm": [0.0] * pairs}, {"worm": float(high - low)}, Until.parse("decided"), pairs).intervals
    return interval["worm"].high - interval["worm"].low


RULE = f"width={(width_after(2) + width_after(4)) / 2:.6f}"
FLAGS = ["--until", RULE, "--seed-batch", "2", "--max-seeds", "6"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("sequential")
    space = root / "pair.toml"
    space.write_text(SPACE)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    args = ["--storage", str(root / "ray"), "--tracking-uri", uri, "--reports", str(root / "reports")]
    return {"root": root, "uri": uri, "space": str(space), "args": args}


def test_the_rule_between_two_widths_is_met_at_the_second_look() -> None:
    assert width_after(4) < width_after(2)  # else no rule tells the two looks apart


@pytest.fixture(scope="module")
def stopped(local_ray: Any, store: dict[str, Any]) -> str:
    """The sequential sweep run to its stop; its terminal output."""
    return run(store, "stopped", *FLAGS)


def test_the_rule_met_after_the_second_batch_stops_the_sweep(store: dict[str, Any], stopped: str) -> None:
    folder = store["root"] / "ray" / "stopped"
    record = Record.load(folder)
    assert record is not None and record.batches == [[0, 1], [2, 3], [4, 5]]
    assert record.started == 2 and [one.seeds for one in record.looks] == [2, 4]
    assert not record.looks[0].met and record.looks[1].met
    assert record.stop is not None and record.stop.startswith("rule met at n = 4 paired seeds")
    assert f"sequential: {record.stop}" in stopped
    assert "sequential: after 2 paired seeds the rule does not hold yet (worm" in stopped
    assert "batch 2 of 3 starts (seeds 2, 3)" in stopped
    assert "up to 12 trials" in stopped and "[8/≤12]" in stopped  # the count is a cap, and says so
    # The third batch never started: no group of its seeds, no run of them.
    started = {p["seed"] for f in (folder / GROUPS_DIR).glob("*.json") for p in _points(f).values()}
    assert started == {0, 1, 2, 3}
    parent, runs = runs_of(store["uri"], "stopped", trials=8)
    assert sorted(int(r.data.params["seed"]) for r in runs.values()) == [0, 0, 1, 1, 2, 2, 3, 3]
    tags = parent.data.tags
    assert (tags[STOP_TAG], tags[LOOKS_TAG], tags[SEEDS_TAG]) == (record.stop, "2,4", "0,1,2,3")
    by_seed: dict[int, dict[str, float]] = {}
    for r in runs.values():
        by_seed.setdefault(int(r.data.params["seed"]), {})[r.data.params["method"]] = results_of(r)["search_epochs"]
    assert all(pair["worm"] == pair["earlybird"] for pair in by_seed.values())  # r = 1 truncates nothing


def test_the_report_shows_the_intervals_the_sweep_stopped_on(store: dict[str, Any], stopped: str) -> None:
    record = Record.load(store["root"] / "ray" / "stopped")
    assert record is not None
    text = (store["root"] / "reports" / "stopped" / "report.md").read_text()
    assert "## Sequential stop: anytime-valid intervals" in text
    assert record.stop is not None and record.stop in text
    (interval,) = record.looks[-1].intervals.values()
    assert f"[{interval.low:+.2f}, {interval.high:+.2f}]" in text
    figure = store["root"] / "reports" / "stopped" / "sequential.png"
    assert "](sequential.png)" in text and figure.stat().st_size > 10_000


def _points(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def test_an_interrupt_in_the_second_batch_resumes_to_the_same_batches_and_numbers(
    local_ray: Any, store: dict[str, Any], stopped: str
) -> None:
    argv = [store["space"], "--name", "resumed", "--max-concurrent", "1", "--no-analysis", *FLAGS, *store["args"]]
    proc = subprocess.Popen(
        [sys.executable, "-m", "worm_tune.sweep", *argv, "--address", ray.get_runtime_context().gcs_address],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=default_sigint,
    )
    folder = store["root"] / "ray" / "resumed"
    deadline = time.monotonic() + 300
    record = None
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        record = Record.load(folder) if (folder / "sequential.json").exists() else None
        if record is not None and record.started == 2:
            break
    assert record is not None and record.started == 2, proc.stderr.read() if proc.poll() is not None else "no batch 2"
    interrupt(proc)
    cut = Record.load(folder)
    assert cut is not None and cut.stop is None and [one.seeds for one in cut.looks] == [2]

    resume = [store["space"], "--resume", "--name", "resumed", *store["args"][:2], "--no-analysis"]
    done = subprocess.run(
        [sys.executable, "-m", "worm_tune.sweep", *resume, "--address", ray.get_runtime_context().gcs_address],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    resumed, reference = Record.load(folder), Record.load(store["root"] / "ray" / "stopped")
    assert resumed is not None and reference is not None
    assert (resumed.started, resumed.looks, resumed.stop) == (reference.started, reference.looks, reference.stop)
    _, runs = runs_of(store["uri"], "resumed", trials=8)
    _, alone = runs_of(store["uri"], "stopped", trials=8)
    assert {h: results_of(r) for h, r in runs.items()}.keys() == alone.keys()
    for chash, r in runs.items():
        mine, theirs = results_of(r), results_of(alone[chash])
        assert {k: mine[k] for k in ("search_epochs", "final_acc")} == {
            k: theirs[k] for k in ("search_epochs", "final_acc")
        }
    client = MlflowClient(store["uri"])
    assert all(client.get_run(r.info.run_id).info.status == "FINISHED" for r in runs.values())
