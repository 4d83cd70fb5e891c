"""Fixtures shared by several test modules."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def local_ray() -> Iterator[object]:
    """A private Ray instance with 2 CPUs for the module's sweeps (imported here, not at the top: most
    modules never start Ray)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def fake_cifar10(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny folder in torchvision's CIFAR-10 format; the checksum check is bypassed, the reading is real."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), "labels": list(range(10)) * 2}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *args, **kwargs: True)
    return tmp_path


@pytest.fixture(scope="module")
def keep_torch_threads() -> Iterator[None]:
    """Restore torch's thread count after a module whose trials pin it (``threads`` in their config)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
