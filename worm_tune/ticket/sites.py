"""What the Early-Bird mask is drawn over: the *units* of a model's representative layers.

A CNN's units are the channels of its BatchNorm layers, scored by ``|gamma|`` (the paper). A
transformer's are the entries of its attention query and key weights, scored by magnitude (the
paper), or its attention heads (structured; see :mod:`worm_tune.ticket.attention`). The search sees only
this interface: one score per unit for the global mask, and for a mask and a factor ``r`` the
gradient scale of every parameter WORM truncates.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from worm_tune.config import TRANSFORMERS, TrialConfig
from worm_tune.models import bn_layers, producing_convs
from worm_tune.ticket.attention import ElementSites, HeadSites, attention_layers


class MaskSites(Protocol):
    """The representative layers of one model, as the search and WORM use them."""

    #: What a unit is, for messages and docs ("channel", "weight", "head").
    unit: str

    @property
    def num_units(self) -> int: ...

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Units per representative layer, in score order (they sum to ``num_units``)."""
        ...

    def scores(self) -> torch.Tensor:
        """One float32 score per unit, detached, in a fixed order (larger = more important)."""
        ...

    def scales(self, keep: torch.Tensor, factor: float) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """For every parameter WORM truncates under ``keep`` (True = kept): the tensor its gradient
        is multiplied by, broadcastable to it (1 for kept units, ``factor`` for the others)."""
        ...


class ChannelSites:
    """BatchNorm channels (docs/method.md): scores ``|gamma|``; WORM scales the masked channels'
    ``gamma`` and ``beta`` (``scope="bn"``, the reference code), and with ``convs`` also the
    filters (and bias) producing those channels (``scope="channel"``)."""

    unit = "channel"

    def __init__(self, layers: list[nn.BatchNorm2d], convs: list[nn.Conv2d] | None = None) -> None:
        if convs is not None and len(convs) != len(layers):
            raise ValueError("need one producing conv per representative layer for scope='channel'")
        self.layers = layers
        self.convs = convs

    @property
    def num_units(self) -> int:
        return sum(self.layer_sizes)

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return tuple(bn.num_features for bn in self.layers)

    def scores(self) -> torch.Tensor:
        return torch.cat([bn.weight.detach().abs().flatten().float() for bn in self.layers])

    def scales(self, keep: torch.Tensor, factor: float) -> list[tuple[nn.Parameter, torch.Tensor]]:
        if keep.numel() != self.num_units:
            raise ValueError(f"mask has {keep.numel()} channels, the layers have {self.num_units}")
        out: list[tuple[nn.Parameter, torch.Tensor]] = []
        offset = 0
        for i, bn in enumerate(self.layers):
            keep_i = keep[offset : offset + bn.num_features].to(bn.weight.device)
            offset += bn.num_features
            scale = torch.where(keep_i, 1.0, factor).to(bn.weight.dtype)
            targets = [bn.weight, bn.bias]
            if self.convs is not None:
                conv = self.convs[i]
                targets += [conv.weight] + ([conv.bias] if conv.bias is not None else [])
            out += [(p, scale.view(-1, *([1] * (p.dim() - 1)))) for p in targets]
        return out


def mask_units(cfg: TrialConfig) -> str:
    """The units a trial's mask is drawn over: BN channels for a CNN; for a transformer the
    attention query/key weights (unstructured pruning, the paper) or its heads (structured)."""
    if cfg.model.arch in TRANSFORMERS:
        return HeadSites.unit if cfg.prune.kind == "structured" else ElementSites.unit
    return ChannelSites.unit


def representative_sites(model: nn.Module, cfg: TrialConfig) -> MaskSites:
    """The sites of the trial's :func:`mask_units`."""
    units = mask_units(cfg)
    if units != ChannelSites.unit:
        layers = attention_layers(model)
        return HeadSites(layers) if units == HeadSites.unit else ElementSites(layers)
    named = bn_layers(model)
    convs = producing_convs(model) if cfg.worm.scope == "channel" else None
    return ChannelSites([bn for _, bn in named], [convs[name] for name, _ in named] if convs else None)
