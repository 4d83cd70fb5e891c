"""Where a trial runs: its device, torch's threads and the loaders that feed it its data."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from worm_tune.config import ConfigError, DataConfig
from worm_tune.data import DataBundle, make_loaders, split_tensors
from worm_tune.data.device import DeviceLoader
from worm_tune.speed import Speed

#: What a loader yields: batches of (inputs, labels).
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is a config error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' is invalid here: no CUDA device is available; use auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def use_threads(threads: int) -> int:
    """Set torch's thread count (0: leave torch's own) and return the count in use: a CPU trial's
    numbers depend on it, so its summary says it."""
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def loaders(
    data: DataBundle, cfg: DataConfig, speed: Speed, device: torch.device, order: torch.Generator
) -> tuple[Batches, Batches]:
    """The training and test loaders: held on the device when ``speed`` says so, else PyTorch's.
    ``order`` draws the training data's order (and augmentation, on the device)."""
    if not speed.device_loader:
        return make_loaders(data, cfg, order)
    augment = data.augment if cfg.augment else None
    train = DeviceLoader(*split_tensors(data.train), cfg.batch_size, device, order, augment)
    return train, DeviceLoader(*split_tensors(data.test), cfg.test_batch_size, device)
