"""Datasets and loaders: CIFAR-10/100 from disk (torchvision) and scikit-learn's bundled digits.

Every split and subset here is fixed (``random_state=0``), independent of the trial seed, so
trials that differ only in their seed see the same data; the seed only moves the shuffling
(the loader's generator) and the augmentation (the global torch RNG, managed by the engine).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.error import URLError

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets, transforms

from worm_tune.config import TEXT_DATASETS, DataConfig
from worm_tune.fastpath import Augment

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


class _Cifar(NamedTuple):
    dataset: type[datasets.CIFAR10]
    folder: str  # what torchvision extracts into data_dir
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_classes: int


_CIFAR = {
    "cifar10": _Cifar(datasets.CIFAR10, "cifar-10-batches-py", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 10),
    "cifar100": _Cifar(datasets.CIFAR100, "cifar-100-python", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 100),
}

_INPUT_SHAPE = (3, 32, 32)


def load_data(cfg: DataConfig, tokenizer: str = "") -> DataBundle:
    """Load ``cfg.dataset`` (raising :class:`DataError` with a one-line fix when it cannot). Text
    is tokenised with the Hugging Face ``tokenizer`` named (a BERT checkpoint's), or, without one,
    a word vocabulary of the training split (:mod:`worm_tune.text`)."""
    if cfg.dataset in TEXT_DATASETS:
        from worm_tune.text import load_text

        bundle = load_text(cfg, tokenizer)
    elif cfg.dataset == "digits":
        bundle = _load_digits(cfg)
    else:
        bundle = _load_cifar(cfg)
    if cfg.train_subset:
        bundle = dataclasses.replace(
            bundle, train=_stratified_subset(bundle.train, cfg.train_subset, bundle.num_classes)
        )
    return bundle


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


def _load_cifar(cfg: DataConfig) -> DataBundle:
    spec = _CIFAR[cfg.dataset]
    root = Path(cfg.data_dir).expanduser().resolve()
    folder = root / spec.folder
    if not cfg.download and not folder.is_dir():
        raise DataError(
            f"{cfg.dataset} not found in {root} (expected {folder}); "
            "set data.download=true (--download) or point data.data_dir (--data-dir) at a copy"
        )
    to_tensor = [transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)]
    augment = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if cfg.augment else []
    try:
        train = spec.dataset(
            str(root), train=True, download=cfg.download, transform=transforms.Compose(augment + to_tensor)
        )
        test = spec.dataset(str(root), train=False, download=cfg.download, transform=transforms.Compose(to_tensor))
    except URLError as exc:
        raise DataError(
            f"could not download {cfg.dataset} into {root} ({_one_line(exc)}); "
            f"check the network or place an extracted copy at {folder}"
        ) from exc
    except (RuntimeError, OSError) as exc:
        raise DataError(
            f"{cfg.dataset} in {folder} is unreadable or corrupt ({_one_line(exc)}); "
            "delete that folder and rerun with data.download=true (--download)"
        ) from exc
    fill = tuple(-m / s for m, s in zip(spec.mean, spec.std, strict=True))  # black, normalised
    return DataBundle(train, test, spec.num_classes, _INPUT_SHAPE, Augment(4, True, fill))


def _load_digits(cfg: DataConfig) -> DataBundle:
    """scikit-learn's 8x8 digits, upsampled to CIFAR's input shape so every model runs unchanged."""
    digits = load_digits()
    images = torch.from_numpy(digits.images).float().div_(16.0).unsqueeze(1)  # values 0..16 -> [0, 1]
    images = F.interpolate(images, size=_INPUT_SHAPE[1:], mode="bilinear", align_corners=False)
    targets = torch.from_numpy(digits.target).long()
    train_idx, test_idx = train_test_split(
        np.arange(len(targets)), test_size=0.2, stratify=digits.target, random_state=_FIXED_SEED
    )
    train_idx, test_idx = torch.from_numpy(np.sort(train_idx)), torch.from_numpy(np.sort(test_idx))
    # Grayscale repeated to 3 channels: one mean/std serves all channels.
    mean, std = images[train_idx].mean(), images[train_idx].std()
    images = ((images - mean) / std).repeat(1, _INPUT_SHAPE[0], 1, 1)
    # Padding fills with the normalised value of a blank (0) pixel, as padding before normalising would.
    # No flip: digits are not mirror-invariant.
    augment = transforms.RandomCrop(32, padding=4, fill=float(-mean / std)) if cfg.augment else None
    train = TensorImageDataset(images[train_idx], targets[train_idx], augment)
    test = TensorImageDataset(images[test_idx], targets[test_idx], None)
    return DataBundle(train, test, 10, _INPUT_SHAPE, Augment(4, False, (float(-mean / std),) * _INPUT_SHAPE[0]))


def _stratified_subset(train: Dataset, size: int, num_classes: int) -> Subset:
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


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
