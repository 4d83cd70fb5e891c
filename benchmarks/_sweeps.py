"""Run the project's own commands as a user would, and time them from outside.

The Ray benchmarks time whole commands (``python -m worm_tune.run``, ``python -m
worm_tune.sweep``) in fresh processes, because what a user pays for includes starting Python,
Ray and MLflow, not only the epochs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from worm_tune.paths import DEFAULT_STORAGE

#: One trial of about a minute on 2 CPU cores: the quick profile's ResNet-18 on all of digits.
TRIAL = {
    "model.arch": "resnet18",
    "data.dataset": "digits",
    "data.batch_size": 64,
    "search.ratio": 0.5,
    "search.threshold": 0.1,
    "search.max_epochs": 12,
    "retrain.max_epochs": 2,
    "device": "cpu",
}


def write_space(path: Path, base: Mapping[str, Any], seeds: Sequence[int], methods: Sequence[str]) -> Path:
    """A search space file: ``base`` fixed, one trial per seed and method."""
    lines = [
        f'description = "benchmark: {len(seeds) * len(methods)} trials"',
        f"methods = {json.dumps(list(methods))}",
        "[base]",
        *(f'"{key}" = {json.dumps(value)}' for key, value in base.items()),
        "[axes]",
        f"seed = {json.dumps(list(seeds))}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def timed(command: Sequence[str], cwd: Path) -> float:
    """Wall seconds of ``command`` (run to completion; a failure stops the benchmark)."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return elapsed


def sweep_command(space: Path, name: str, root: Path, *flags: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "worm_tune.sweep",
        str(space),
        "--name",
        name,
        "--storage",
        str(root / DEFAULT_STORAGE),
        "--tracking-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--no-analysis",
        *flags,
    ]


def ray_trials(folder: Path) -> list[dict[str, Any]]:
    """Each trial of a finished sweep: its last result, its own seconds (Ray's ``time_total_s``:
    setup excluded) and when it started and ended (Unix seconds; Ray stamps whole seconds)."""
    trials = []
    for path in sorted(folder.glob("*/*/result.json")):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        first, last = lines[0], lines[-1]
        trials.append(
            {
                "trial": path.parent.name,
                "start": first["timestamp"] - first["time_this_iter_s"],
                "end": last["timestamp"],
                "seconds": last["time_total_s"],
                "summary": last["summary"],
            }
        )
    return trials
