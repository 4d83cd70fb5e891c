"""Data loading: the offline digits dataset end to end, and CIFAR's error paths (no download needed)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from torch.utils.data import Subset

from worm_tune.config import DataConfig
from worm_tune.data import DataBundle, DataError, load_data, make_loaders

DIGITS = DataConfig(dataset="digits")


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_data(DIGITS)


def _labels(dataset: torch.utils.data.Dataset) -> list[int]:
    return [dataset[i][1] for i in range(len(dataset))]


def _images(dataset: torch.utils.data.Dataset) -> torch.Tensor:
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def test_digits_sizes_shapes_and_labels(digits: DataBundle) -> None:
    assert len(digits.train) + len(digits.test) == 1797
    assert len(digits.test) == 360  # 20%, rounded up by scikit-learn
    assert digits.num_classes == 10
    assert digits.input_shape == (3, 32, 32)
    image, label = digits.train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert isinstance(label, int)
    assert set(_labels(digits.train)) == set(_labels(digits.test)) == set(range(10))


def test_digits_split_is_stratified(digits: DataBundle) -> None:
    train, test = Counter(_labels(digits.train)), Counter(_labels(digits.test))
    for label in range(10):
        assert abs(test[label] - 0.2 * (train[label] + test[label])) <= 1


def test_digits_normalised_with_train_statistics(digits: DataBundle) -> None:
    train = _images(digits.train)
    assert abs(train.mean().item()) < 1e-4
    assert abs(train.std().item() - 1) < 1e-3
    assert torch.equal(train[:, 0], train[:, 2])  # grayscale repeated to 3 channels


def test_digits_split_is_fixed_and_disjoint(digits: DataBundle) -> None:
    again = load_data(DIGITS)
    assert torch.equal(_images(again.train), _images(digits.train))
    assert _labels(again.test) == _labels(digits.test)
    # The raw digits hold no duplicate images, so a shared image would mean a shared example.
    train_images = {image.numpy().tobytes() for image in _images(digits.train)}
    assert not any(image.numpy().tobytes() in train_images for image in _images(digits.test))


def test_train_subset_is_fixed_stratified_and_from_train(digits: DataBundle) -> None:
    cfg = DataConfig(dataset="digits", train_subset=100)
    bundle = load_data(cfg)
    assert isinstance(bundle.train, Subset) and len(bundle.train) == 100
    assert set(_labels(bundle.train)) == set(range(10))
    assert max(Counter(_labels(bundle.train)).values()) <= 12
    assert bundle.train.indices == load_data(cfg).train.indices
    assert torch.equal(_images(bundle.train), _images(digits.train)[bundle.train.indices])
    assert len(bundle.test) == len(digits.test)  # the test split is never subset


@pytest.mark.parametrize("size", [5, 1438])
def test_train_subset_out_of_range(size: int) -> None:
    with pytest.raises(DataError, match="train_subset"):
        load_data(DataConfig(dataset="digits", train_subset=size))


def test_train_subset_of_whole_split_keeps_everything(digits: DataBundle) -> None:
    assert len(load_data(DataConfig(dataset="digits", train_subset=len(digits.train))).train) == len(digits.train)


def test_augmentation_changes_train_images_only(digits: DataBundle) -> None:
    augmented = load_data(DataConfig(dataset="digits", augment=True))
    torch.manual_seed(0)
    crops = [augmented.train[0][0] for _ in range(8)]
    assert all(crop.shape == (3, 32, 32) for crop in crops)
    assert any(not torch.equal(crop, digits.train[0][0]) for crop in crops)
    assert torch.equal(augmented.test[0][0], digits.test[0][0])
    # Padding is a blank pixel (as padding before normalising would be), so a crop holds no new value.
    assert all(torch.isin(crop, digits.train[0][0]).all() for crop in crops)


def test_loaders_batch_sizes(digits: DataBundle) -> None:
    cfg = DataConfig(dataset="digits", batch_size=64, test_batch_size=256, train_subset=100)
    train, test = make_loaders(load_data(cfg), cfg, torch.Generator().manual_seed(0))
    assert [len(labels) for _, labels in train] == [64, 36]
    assert [len(labels) for _, labels in test] == [256, 104]
    images, labels = next(iter(train))
    assert images.shape == (64, 3, 32, 32) and labels.dtype == torch.int64


def test_loader_order_follows_generator(digits: DataBundle) -> None:
    def order(seed: int) -> list[int]:
        train, _ = make_loaders(digits, DIGITS, torch.Generator().manual_seed(seed))
        return torch.cat([labels for _, labels in train]).tolist()

    assert order(1) == order(1)
    assert order(1) != order(2)


def test_evaluation_does_not_consume_global_rng(digits: DataBundle) -> None:
    _, test = make_loaders(digits, DIGITS, torch.Generator().manual_seed(0))
    state = torch.get_rng_state()
    list(test)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(("dataset", "folder"), [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_cifar_missing(tmp_path: Path, dataset: str, folder: str) -> None:
    with pytest.raises(DataError) as info:
        load_data(DataConfig(dataset=dataset, data_dir=str(tmp_path)))
    message = str(info.value)
    assert str(tmp_path / folder) in message and "--set data.download=true" in message and "\n" not in message


def test_cifar_corrupt(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(DataError, match="corrupt") as info:
        load_data(DataConfig(dataset="cifar10", data_dir=str(tmp_path)))
    assert str(tmp_path / "cifar-10-batches-py") in str(info.value)


def test_cifar_download_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise URLError("no network")

    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", offline)
    with pytest.raises(DataError, match="could not download cifar10") as info:
        load_data(DataConfig(dataset="cifar10", data_dir=str(tmp_path), download=True))
    assert "no network" in str(info.value) and "\n" not in str(info.value)


def test_cifar_reads_torchvision_folder(fake_cifar10: Path) -> None:
    cfg = DataConfig(dataset="cifar10", data_dir=str(fake_cifar10), augment=True, train_subset=30, batch_size=8)
    bundle = load_data(cfg)
    assert (len(bundle.train), len(bundle.test), bundle.num_classes) == (30, 20, 10)
    assert set(_labels(bundle.train)) == set(range(10))
    image, label = bundle.train[0]
    assert image.shape == bundle.input_shape == (3, 32, 32) and image.dtype == torch.float32
    assert isinstance(label, int)
    # Uniform pixels normalised with CIFAR-10's statistics land around (0.5 - mean) / std.
    assert abs(_images(bundle.test).mean().item()) < 0.3
    train, _ = make_loaders(bundle, cfg, torch.Generator().manual_seed(0))
    assert [len(labels) for _, labels in train] == [8, 8, 8, 6]
