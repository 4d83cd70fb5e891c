"""The dataset held on the training device, with on-device augmentation.

A ResNet-18 step on CIFAR-sized images takes well under a millisecond of GPU time at batch 32,
so a CPU DataLoader (decode, crop, flip, collate, copy, per image) is what a GPU trial waits for.
Datasets that fit (CIFAR-10/100 is 600 MB as float32, digits far less) are therefore kept whole
on the device as one normalised tensor; each epoch's order and augmentation (random crop with
padding, horizontal flip: torchvision's ``RandomCrop(32, padding=4)`` and
``RandomHorizontalFlip()``) are drawn at once and applied to each batch by indexing on the device.

The random numbers come from the engine's data generator (a CPU ``torch.Generator`` that the
engine checkpoints), so a resumed trial sees the same batches, crops and flips. They are not
the plain path's numbers: the fast path is statistically, not bitwise, the same as the plain one
(``benchmarks/`` checks the accuracy), and the plain path stays for exact reproduction.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Augment:
    """Training augmentation as data: what :class:`DeviceLoader` applies on the device."""

    padding: int  # random crop of the original size out of the image padded by this much
    flip: bool  # random horizontal flip, p = 0.5
    fill: tuple[float, ...]  # per-channel value of the padding (normalised black)


class DeviceLoader:
    """Batches of ``(images, targets)`` out of tensors already on the device.

    ``generator`` shuffles and augments (None: fixed order, no augmentation, for evaluation).
    Same batch sizes as a ``DataLoader`` with ``drop_last=False``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        batch_size: int,
        device: torch.device,
        generator: torch.Generator | None = None,
        augment: Augment | None = None,
    ) -> None:
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.batch_size, self.device, self.generator, self.augment = batch_size, device, generator, augment
        self.size = tuple(images.shape[-2:])
        if augment is not None and augment.padding:
            images = _pad(images, augment.padding, augment.fill)
        # Channels-last storage makes a batch gather contiguous per pixel; a batch comes out
        # channels-last, which a channels-last model takes as is and a plain one copies once.
        self.images = images.to(device).contiguous(memory_format=torch.channels_last)
        self.targets = targets.to(device)

    def __len__(self) -> int:
        return math.ceil(len(self.targets) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, aug, gen = len(self.targets), self.augment, self.generator
        order = torch.arange(n) if gen is None else torch.randperm(n, generator=gen)
        order = order.to(self.device)
        offsets = flips = None
        if gen is not None and aug is not None:
            # One draw per epoch, in a fixed order: permutation, crop offsets, flips.
            offsets = torch.randint(0, 2 * aug.padding + 1, (n, 2), generator=gen).to(self.device)
            flips = (torch.rand(n, generator=gen) < 0.5).to(self.device) if aug.flip else None
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            x = self.images[idx]
            if offsets is not None:
                x = _crop(x, offsets[start : start + len(idx)], self.size)
            elif aug is not None and aug.padding:  # evaluation on padded storage: the centre
                p = aug.padding
                x = x[:, :, p : p + self.size[0], p : p + self.size[1]]
            if flips is not None:
                x = torch.where(flips[start : start + len(idx), None, None, None], x.flip(3), x)
            yield x, self.targets[idx]


def _pad(images: torch.Tensor, padding: int, fill: tuple[float, ...]) -> torch.Tensor:
    n, c, h, w = images.shape
    out = images.new_empty(n, c, h + 2 * padding, w + 2 * padding)
    out[:] = torch.tensor(fill, dtype=images.dtype).view(1, -1, 1, 1)
    out[:, :, padding : padding + h, padding : padding + w] = images
    return out


def _crop(padded: torch.Tensor, offsets: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Per-image crops of ``size`` at ``offsets`` (row, col), by one gather on the device."""
    h, w = size
    rows = offsets[:, :1] + torch.arange(h, device=padded.device)  # [B, h]
    cols = offsets[:, 1:] + torch.arange(w, device=padded.device)  # [B, w]
    batch = torch.arange(len(padded), device=padded.device)[:, None, None]
    # Index a [B, H, W, C] view: the result is [B, h, w, C]; permuted back it is channels-last NCHW.
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
