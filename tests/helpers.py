"""Helpers shared by test modules: tiny budgets, MLflow readers, checkpoint round trips, subprocess signals.

(Fixtures live in ``conftest.py``; plain constants and functions are imported from here.)
"""

from __future__ import annotations

import contextlib
import io
import shutil
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from worm_tune import metrics

#: ``--set`` flags for a tiny sweep: 128 digits images, 3 search epochs, a window of 2, 1 retraining epoch.
SWEEP_TINY = ["--set", "data.train_subset=128", "--set", "search.max_epochs=3", "--set", "search.window=2"]
SWEEP_TINY += ["--set", "retrain.max_epochs=1"]
#: One WORM trial per EarlyBird trial: the quick profile's larger delta (its other one triggers later).
ONE_DELTA = ["--set", "worm.delta=0.03"]
#: The quick resnet18 profile cut to one pair (EarlyBird and WORM) at seed 0, p = 0.5, tiny budgets.
QUICK_PAIR = ["resnet18", "--quick", *SWEEP_TINY, *ONE_DELTA, "--set", "seed=0"]
#: A trial in the engine in about a second: 128 digits images, a window of 2, 2 search epochs, 1 retraining epoch,
#: on one thread (fixed, so two runs in one process agree to the bit).
ENGINE_TINY = {
    "data.dataset": "digits",
    "data.train_subset": 128,
    "data.batch_size": 64,
    "search.window": 2,
    "search.max_epochs": 2,
    "retrain.max_epochs": 1,
    "device": "cpu",
    "threads": 1,
}
#: The summary metrics every finished trial has, compared between runs that must agree.
SUMMARY = ("search_epochs", "pre_prune_acc", "post_prune_acc", "acc_after_1_retrain_epoch", "final_acc", "sparsity")


def round_trip(state: dict[str, Any]) -> dict[str, Any]:
    """An engine state as a checkpoint gives it back: saved, then loaded with ``weights_only=True``."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def default_sigint() -> None:
    """Let a child process see Ctrl-C even when the tests run in the background (where SIGINT is ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def results_of(run: Any) -> dict[str, float]:
    """An MLflow trial run's summary metrics (logged as ``trial/<name>``) by name."""
    return {
        key.removeprefix(f"{metrics.SUMMARY_SECTION}/"): value
        for key, value in run.data.metrics.items()
        if key.startswith(f"{metrics.SUMMARY_SECTION}/")
    }


def curve_of(client: Any, run: Any, name: str) -> list[tuple[int, float]]:
    """A per-epoch metric over a whole MLflow trial run as (step, value): every phase's section together
    (and the bare name, which a run logged before sections holds)."""
    keys = [key for key in run.data.metrics if key.rpartition("/")[2] == name]
    points = [(m.step, m.value) for key in keys for m in client.get_metric_history(run.info.run_id, key)]
    return sorted(points)


def free_port() -> int:
    """A TCP port nothing listens on now (for a server a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(url: str) -> bool:
    """Whether the MLflow server at ``url`` answers its health check."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def mounted_tmpfs(mount: Path, size: int | str) -> Iterator[Path]:
    """A real file system of ``size`` bytes (or ``"16m"``) that fills up: a tmpfs mounted at ``mount``
    for the test, which skips, saying why, where none can be mounted (it needs root)."""
    mount.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command to mount a tmpfs with")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)
