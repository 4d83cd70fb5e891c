"""What every dataset loads into: a :class:`DataBundle` of two splits, and the loaders over it.

Every split and subset here is fixed (``random_state=0``), independent of the trial seed, so
trials that differ only in their seed see the same data; the seed only moves the shuffling
(the loader's generator) and the augmentation (the global torch RNG, managed by the engine).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets, transforms

from worm_tune.config import DataConfig
from worm_tune.data.device import Augment

#: Seed of what must not change with the trial seed: splits, subsets, the test loader's order.
_FIXED_SEED = 0


class DataError(RuntimeError):
    """Data cannot be loaded; the one-line message says what is missing, where it looked, how to get it."""


@dataclass(frozen=True)
class DataBundle:
    """A dataset ready for training: both splits yield ``(input tensor, int label)``: a normalised
    [3, 32, 32] float image, or for text a [2, length] long tensor of token ids and token types."""

    train: Dataset
    test: Dataset  # held out: never drawn from the training split
    num_classes: int
    input_shape: tuple[int, ...]
    #: The training augmentation ``data.augment`` turns on, as data, for the device loader.
    augment: Augment | None = None
    input_dtype: torch.dtype = torch.float32
    #: Text only: the tokenizer's vocabulary size, which the model's embedding must match.
    vocab_size: int = 0


class TensorImageDataset(Dataset):
    """Images held in memory as one preprocessed tensor; only the optional augmentation runs per item."""

    def __init__(
        self, images: torch.Tensor, targets: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor] | None
    ) -> None:
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images = images
        self.targets = targets  # named like torchvision's, so subsetting reads labels the same way
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])


def make_loaders(bundle: DataBundle, cfg: DataConfig, generator: torch.Generator) -> tuple[DataLoader, DataLoader]:
    """Train loader shuffled by ``generator``; test loader in fixed order.

    The test loader gets a private generator: every DataLoader iteration draws a worker base
    seed from its generator, or from the global RNG when it has none, so without one each
    evaluation would shift the augmentation stream and evaluating more often would change training.
    """
    # No persistent workers: each epoch's workers are seeded afresh from ``generator``, whose state
    # the engine checkpoints, so a resumed trial augments exactly as an uninterrupted one.
    workers = {"num_workers": cfg.num_workers, "persistent_workers": False, "pin_memory": False}
    train = DataLoader(
        bundle.train, batch_size=cfg.batch_size, shuffle=True, generator=generator, drop_last=False, **workers
    )
    test = DataLoader(
        bundle.test,
        batch_size=cfg.test_batch_size,
        shuffle=False,
        generator=torch.Generator().manual_seed(_FIXED_SEED),
        **workers,
    )
    return train, test


def split_tensors(split: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """A split as one tensor of normalised images [N, 3, 32, 32] and one of labels [N], without
    augmentation: what the device loader holds."""
    if isinstance(split, Subset):
        images, targets = split_tensors(split.dataset)
        index = torch.as_tensor(split.indices, dtype=torch.long)
        return images[index], targets[index]
    if isinstance(split, TensorImageDataset):
        return split.images, split.targets
    if isinstance(split, datasets.CIFAR10):  # and CIFAR100, its subclass
        normalize = next(t for t in split.transform.transforms if isinstance(t, transforms.Normalize))
        images = torch.from_numpy(split.data).permute(0, 3, 1, 2).float().div_(255)  # as ToTensor does
        return transforms.functional.normalize(images, normalize.mean, normalize.std), torch.as_tensor(split.targets)
    raise TypeError(f"no tensor form for a {type(split).__name__}")


def fingerprint(bundle: DataBundle) -> str:
    """A short hash of both splits' examples and labels, in order: names the data a trial saw without
    naming the machine path it was read from (MLflow logs it as the run's dataset digest)."""
    digest = hashlib.sha256()
    for split in (bundle.train, bundle.test):
        for array in _raw_arrays(split):
            digest.update(np.ascontiguousarray(array).view(np.uint8).reshape(-1).data)
    return digest.hexdigest()[:12]


def _raw_arrays(split: Dataset) -> list[np.ndarray]:
    """A split's data as stored (before normalisation or augmentation), then its labels, as arrays."""
    if isinstance(split, Subset):
        index = np.asarray(split.indices, dtype=np.int64)
        return [array[index] for array in _raw_arrays(split.dataset)]
    if isinstance(split, TensorImageDataset):
        return [split.images.numpy(), split.targets.numpy()]
    if isinstance(split, datasets.CIFAR10):
        return [np.asarray(split.data), np.asarray(split.targets)]
    raise TypeError(f"no fingerprint for a {type(split).__name__}")


def stratified_subset(train: Dataset, size: int, num_classes: int) -> Subset:
    """A fixed subset of ``size`` training examples with the class proportions of the whole split."""
    targets = np.asarray(train.targets)
    if size > len(targets):
        raise DataError(f"data.train_subset={size} exceeds the {len(targets)} training examples; use a smaller value")
    if size == len(targets):
        return Subset(train, list(range(size)))
    if size < num_classes:
        raise DataError(f"data.train_subset={size} cannot hold all {num_classes} classes; use at least {num_classes}")
    kept, _ = train_test_split(np.arange(len(targets)), train_size=size, stratify=targets, random_state=_FIXED_SEED)
    return Subset(train, np.sort(kept).tolist())
