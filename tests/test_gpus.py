"""GPUs, packed and tested without one: Ray declares two GPUs this machine does not have.

Fractional ``--gpus-per-trial`` packs several group trials on one GPU; each trial's MLflow run says
which GPU Ray gave it; a trial given a GPU that torch cannot see fails with one line saying so,
unless its config asks for the CPU (how these tests train).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import ray
import torch
from mlflow.tracking import MlflowClient

from worm_tune.cli import sweep
from worm_tune.tune.plan import EXPERIMENT
from worm_tune.tune.store import PARENT_TAG, TAG_KIND, TAG_SWEEP

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("keep_torch_threads")]

#: Ten seeds of EarlyBird: ten group trials (a seed is a training field), two epochs each.
SPACE = """
description = "ten one-trial groups"
methods = ["earlybird"]

[base]
"model.arch" = "resnet18"
"model.pretrained" = false
"data.dataset" = "digits"
"data.train_subset" = 128
"data.batch_size" = 64
"search.window" = 2
"search.max_epochs" = 2
"retrain.max_epochs" = 1
threads = 1

[axes]
seed = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
"""


@pytest.fixture(scope="module")
def declared_gpus() -> Any:
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def where(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("gpus")
    (root / "space.toml").write_text(SPACE)
    args = ["--storage", str(root / "ray"), "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}", "--no-analysis"]
    return {"root": root, "space": str(root / "space.toml"), "args": args, "uri": f"sqlite:///{root / 'mlflow.db'}"}


def run(where: dict[str, Any], name: str, *flags: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = sweep.main([where["space"], "--name", name, *flags, *where["args"]])
    return code, out.getvalue()


def trial_runs(uri: str, name: str) -> list[Any]:
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], f"tags.`{TAG_SWEEP}` = '{name}'")
    (parent,) = [r for r in runs if r.data.tags[TAG_KIND] == "sweep"]
    return [r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]


def test_a_quarter_gpu_each_packs_eight_trials_on_two_gpus(declared_gpus: Any, where: dict[str, Any]) -> None:
    flags = ["--gpus-per-trial", "0.25", "--cpus-per-trial", "0.25", "--set", "device=cpu"]
    code, out = run(where, "packed", *flags)
    assert code == 0, out
    # An actor runs one trial at a time (and is reused for the next): eight actors at once, no more.
    folder = Path(where["root"]) / "ray" / "packed" / EXPERIMENT
    firsts = [json.loads(p.read_text().splitlines()[0]) for p in folder.glob("*/result.json")]
    assert len(firsts) == 10
    assert len({r["pid"] for r in firsts}) == 8
    runs = trial_runs(where["uri"], "packed")
    assert len(runs) == 10
    assert {r.data.tags["gpu_ids"] for r in runs} == {"0", "1"}  # each run names its GPU; both GPUs used


@pytest.mark.skipif(torch.cuda.is_available(), reason="torch sees a GPU here: Ray's GPU is a real one")
def test_a_trial_given_a_gpu_torch_cannot_see_says_so_in_one_line(declared_gpus: Any, where: dict[str, Any]) -> None:
    code, out = run(where, "blind", "--gpus-per-trial", "0.5", "--max-failures", "0", "--set", "seed=0")
    assert code == 1
    (line,) = [line for line in out.splitlines() if line.startswith("[1/1] ")]
    assert re.search(
        r"error: RuntimeError: Ray gave this trial GPU (\d) \(CUDA_VISIBLE_DEVICES=\1\) but torch sees no CUDA device; "
        r"run where the GPU is visible, or --set device=cpu to train on the CPU$",
        line,
    ), line
    assert "Traceback" not in out
    assert "| earlybird | 0.5 " in out  # the summary names the failed trial's method
