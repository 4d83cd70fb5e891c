"""The fast path on the CPU: device-held data, on-device augmentation, bf16 and channels-last.

The GPU speed is measured in ``benchmarks/``; here the same code is checked for correctness.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision.transforms.functional as TF

from tests.helpers import round_trip
from worm_tune.config import ConfigError, DataConfig, SpeedConfig, TrialConfig
from worm_tune.data import DataBundle, TensorImageDataset, load_data, make_loaders, split_tensors
from worm_tune.data.device import Augment, DeviceLoader, _crop, _pad
from worm_tune.engine import TrialEngine
from worm_tune.metrics import untimed
from worm_tune.speed import resolve_speed

FAST = {"speed.loader": "device", "speed.precision": "bf16", "speed.channels_last": "on"}
BASE = {
    "data.dataset": "digits",
    "data.train_subset": "192",
    "data.batch_size": "64",
    "data.augment": "true",
    "search.window": "2",
    "search.max_epochs": "3",
    "retrain.max_epochs": "2",
    "device": "cpu",
}


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_data(DataConfig(dataset="digits", train_subset=192, augment=True))


def test_auto_is_plain_on_cpu_and_fast_on_cuda() -> None:
    plain = resolve_speed(SpeedConfig(), torch.device("cpu"))
    assert (plain.device_loader, plain.autocast, plain.channels_last, plain.compile) == (False, None, False, "off")
    fast = resolve_speed(SpeedConfig(), torch.device("cuda"))
    assert (fast.device_loader, fast.autocast, fast.channels_last) == (True, torch.bfloat16, True)
    forced = resolve_speed(SpeedConfig(loader="plain", precision="fp32", channels_last="off"), torch.device("cuda"))
    assert (forced.device_loader, forced.autocast, forced.channels_last) == (False, None, False)
    assert resolve_speed(SpeedConfig(loader="device", precision="bf16"), torch.device("cpu")).device_loader


@pytest.mark.parametrize(
    ("key", "value"), [("speed.loader", "gpu"), ("speed.precision", "fp16"), ("speed.compile", "true")]
)
def test_bad_speed_values_are_refused(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{key}='{value}' is invalid: must be one of"):
        TrialConfig().replace({key: value}).validate()


def test_speed_is_part_of_the_hash() -> None:
    assert TrialConfig().replace({"speed.precision": "bf16"}).hash() != TrialConfig().hash()


def test_crop_and_flip_match_torchvision() -> None:
    images = torch.randn(6, 3, 32, 32)
    fill = (-1.0, -2.0, -3.0)
    padded = _pad(images, 4, fill)
    assert padded.shape == (6, 3, 40, 40)
    assert torch.equal(padded[:, :, 4:36, 4:36], images)
    assert torch.equal(padded[:, :, 0, 0], torch.tensor(fill).expand(6, 3))
    offsets = torch.tensor([[0, 0], [8, 8], [3, 5], [7, 1], [0, 8], [4, 4]])
    crops = _crop(padded, offsets, (32, 32))
    for img, (i, j), crop in zip(padded, offsets.tolist(), crops, strict=True):
        assert torch.equal(crop, TF.crop(img, i, j, 32, 32))  # what RandomCrop takes at offset (i, j)
    assert torch.equal(crops[5], images[5])  # the centre crop is the image


def test_device_loader_without_generator_gives_the_plain_test_batches(digits: DataBundle) -> None:
    cfg = DataConfig(dataset="digits", test_batch_size=100)
    _, plain = make_loaders(digits, cfg, torch.Generator())
    fast = DeviceLoader(*split_tensors(digits.test), 100, torch.device("cpu"))
    pairs = list(zip(plain, fast, strict=True))
    assert len(pairs) == len(fast) == 4  # 360 images: 100, 100, 100, 60
    for (x0, y0), (x1, y1) in pairs:
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


def test_device_loader_shuffles_and_augments_from_its_generator(digits: DataBundle) -> None:
    images, targets = split_tensors(digits.train)
    augment = Augment(4, True, (0.0, 0.0, 0.0))

    def epoch(seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(seed)
        return list(DeviceLoader(images, targets, 50, torch.device("cpu"), gen, augment))

    first, again, other = epoch(1), epoch(1), epoch(2)
    assert [len(y) for _, y in first] == [50, 50, 50, 42]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0][0], other[0][0])
    labels = torch.cat([y for _, y in first])
    assert sorted(labels.tolist()) == sorted(targets.tolist())  # a permutation: each image once
    assert not torch.equal(labels, targets)
    # Each output is a 32x32 crop, possibly flipped, of the padded image it came from.
    x = torch.cat([b for b, _ in first])
    assert x.shape == (192, 3, 32, 32) and x.is_contiguous(memory_format=torch.channels_last)
    flipped = 0
    padded = _pad(images, 4, augment.fill)
    order = torch.randperm(192, generator=torch.Generator().manual_seed(1))
    for out, src in zip(x, order.tolist(), strict=True):
        windows = padded[src].unfold(1, 32, 1).unfold(2, 32, 1)  # [3, 9, 9, 32, 32]: every crop
        hit = (windows == out[:, None, None]).flatten(3).all(3).all(0)
        hit_flip = (windows == out.flip(2)[:, None, None]).flatten(3).all(3).all(0)
        assert hit.any() or hit_flip.any()
        flipped += int(bool(hit_flip.any() and not hit.any()))
    assert 60 < flipped < 132  # p = 0.5 of 192


def test_split_tensors_of_cifar_equal_its_items(fake_cifar10: Path) -> None:
    bundle = load_data(DataConfig(dataset="cifar10", data_dir=str(fake_cifar10), train_subset=30))
    images, targets = split_tensors(bundle.train)
    assert images.shape == (30, 3, 32, 32) and targets.tolist() == [bundle.train[i][1] for i in range(30)]
    assert torch.allclose(images, torch.stack([bundle.train[i][0] for i in range(30)]), atol=1e-6)
    assert bundle.augment is not None and bundle.augment.flip  # CIFAR flips; digits do not


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["structured", "unstructured"])
def test_fast_trial_learns_and_resumes_bit_identically(digits: DataBundle, kind: str) -> None:
    """Device-held data and channels-last through pruning (the model is re-laid out)."""
    cfg = TrialConfig().replace({**BASE, **FAST, "speed.precision": "fp32", "prune.kind": kind}).validate()
    full = TrialEngine(cfg, digits)
    summary = full.run()
    assert summary["done"] and summary["params_pruned"] < summary["params_dense"]
    convs = [p for p in full.model.parameters() if p.dim() == 4]
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)  # the pruned layers too
    losses = [m["train_loss"] for m in full.history]
    assert losses[2] < 0.7 * losses[0]  # it learns (accuracy on 192 images after 3 epochs is too noisy)
    engine = TrialEngine(cfg, digits)
    engine.step()
    resumed = TrialEngine(cfg, digits)
    resumed.load_state_dict(round_trip(engine.state_dict()))
    resumed.run()
    assert [untimed(m) for m in resumed.history] == [untimed(m) for m in full.history]
    plain = TrialEngine(TrialConfig().replace({**BASE, "prune.kind": kind}).validate(), digits)
    plain.run()
    assert plain.results["init_weights"] == full.results["init_weights"]  # same start, other path
    assert [m["train_loss"] for m in plain.history] != [m["train_loss"] for m in full.history]


def test_bf16_trial_runs_in_bf16_and_repeats(digits: DataBundle) -> None:
    """bf16 autocast (slow on this CPU, so on 32 images): bf16 logits, finite losses, same seed same numbers."""
    images, targets = split_tensors(digits.train)
    tiny = DataBundle(
        TensorImageDataset(images[:32], targets[:32], None),
        TensorImageDataset(images[32:64], targets[32:64], None),
        digits.num_classes,
        digits.input_shape,
        digits.augment,
    )
    cfg = TrialConfig().replace({**BASE, **FAST, "data.batch_size": "16", "retrain.max_epochs": "1"}).validate()
    engine = TrialEngine(cfg, tiny)
    first = [untimed(m) for m in (engine.step(), engine.step())]
    assert all(m["train_loss"] is not None for m in first)
    again = TrialEngine(cfg, tiny)
    assert [untimed(again.step()), untimed(again.step())] == first
    engine.model.eval()
    with torch.no_grad(), engine.loop.speed.autocast_context(engine.device):
        assert engine.loop.forward(images[:2]).dtype == torch.bfloat16
