"""Image datasets: CIFAR-10/100 from disk (torchvision) and scikit-learn's bundled digits."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple
from urllib.error import URLError

import numpy as np
import torch
import torch.nn.functional as F
from sklearn import datasets as sklearn_datasets
from sklearn.model_selection import train_test_split
from torchvision import datasets, transforms

from worm_tune.config import DataConfig
from worm_tune.data.bundle import _FIXED_SEED, DataBundle, DataError, TensorImageDataset
from worm_tune.data.device import Augment
from worm_tune.usage import one_line


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


def load_cifar(cfg: DataConfig) -> DataBundle:
    spec = _CIFAR[cfg.dataset]
    root = Path(cfg.data_dir).expanduser().resolve()
    folder = root / spec.folder
    if not cfg.download and not folder.is_dir():
        raise DataError(
            f"{cfg.dataset} not found in {root} (expected {folder}); "
            "fetch it with --set data.download=true, or name a folder that holds a copy with --set data.data_dir=DIR"
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
            f"could not download {cfg.dataset} into {root} ({one_line(exc)}); "
            f"check the network or place an extracted copy at {folder}"
        ) from exc
    except (RuntimeError, OSError) as exc:
        raise DataError(
            f"{cfg.dataset} in {folder} is unreadable or corrupt ({one_line(exc)}); "
            "delete that folder and rerun with --set data.download=true"
        ) from exc
    fill = tuple(-m / s for m, s in zip(spec.mean, spec.std, strict=True))  # black, normalised
    return DataBundle(train, test, spec.num_classes, _INPUT_SHAPE, Augment(4, True, fill))


def load_digits(cfg: DataConfig) -> DataBundle:
    """scikit-learn's 8x8 digits, upsampled to CIFAR's input shape so every model runs unchanged."""
    digits = sklearn_datasets.load_digits()
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
