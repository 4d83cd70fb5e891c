"""How a trial's arithmetic is done: device-held data, bf16 autocast, channels-last, compile.

``auto`` turns each speed-up on with CUDA and off on the CPU, so CPU trials stay the paper's
plain path, bit for bit (see :mod:`worm_tune.data.device` for the device-held loader).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from worm_tune.config import SpeedConfig


@dataclass(frozen=True)
class Speed:
    """:class:`SpeedConfig` resolved for one device."""

    device_loader: bool
    autocast: torch.dtype | None
    channels_last: bool
    compile: str  # a torch.compile mode, or "off"

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast_context(self, device: torch.device) -> contextlib.AbstractContextManager[None]:
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Lay out ``model`` for this speed; return what to call (the model, or its compiled form)."""
        model.to(memory_format=self.memory_format)
        if self.compile == "off":
            return model
        return torch.compile(model, mode=None if self.compile == "default" else self.compile)


def resolve_speed(cfg: SpeedConfig, device: torch.device, images: bool = True) -> Speed:
    """``auto`` means on with CUDA, off on the CPU; channels-last is for image batches only."""
    cuda = device.type == "cuda"
    loader = cuda if cfg.loader == "auto" else cfg.loader == "device"
    precision = ("bf16" if cuda else "fp32") if cfg.precision == "auto" else cfg.precision
    channels_last = images and (cuda if cfg.channels_last == "auto" else cfg.channels_last == "on")
    return Speed(loader, torch.bfloat16 if precision == "bf16" else None, channels_last, cfg.compile)
