"""The prune event that ends the search, and what it leaves: how the trial's network is pruned.

Structured pruning cuts the units the search's newest mask drops out of the network (channels, or
attention heads, a layer keeping its best head); unstructured pruning zeroes the smallest weights
of every layer, and masks keep them at zero from then on. The engine then evaluates the pruned
network, re-initialises it if asked, and builds a new optimizer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from worm_tune.config import TrialConfig
from worm_tune.data import DataBundle
from worm_tune.ticket.accounting import count_params, effective_flops_per_image, flops_per_image, nonzero_params
from worm_tune.ticket.attention import heads_per_layer, keep_one_head_per_layer
from worm_tune.ticket.pruning import SparsityEnforcer, remove_structure, sparsity, unstructured_masks
from worm_tune.ticket.sites import MaskSites
from worm_tune.tickets import KEEP, Ticket


class Pruning:
    """Nothing before the prune event; after it, the mask of the units structured pruning kept
    (``keep``), or the weights unstructured pruning kept (``masks``) and what holds the others at zero."""

    def __init__(self, example: torch.Tensor, transformer: bool) -> None:
        self.example = example  # a batch of one input, which traces a CNN's channels for the cut
        self.transformer = transformer  # cut heads, not channels
        self.keep: torch.Tensor | None = None
        self.masks: dict[str, torch.Tensor] | None = None
        self.enforcer: SparsityEnforcer | None = None

    def prune(
        self, model: nn.Module, cfg: TrialConfig, newest: torch.Tensor | None, sites: MaskSites, data: DataBundle
    ) -> tuple[int, int]:
        """Prune ``model`` in place by ``cfg.prune.kind``: structured, by the search's ``newest`` mask over
        ``sites``; unstructured, by the smallest weights (the search's ratio and rules). Returns the pruned
        network's forward FLOPs per image and parameters (unstructured: those of its nonzero weights)."""
        if cfg.prune.kind == "structured":
            assert newest is not None, "a search epoch always pushes a mask"
            keep = newest
            if self.transformer:  # a layer keeps its best head: removing all would cut the network
                keep = keep_one_head_per_layer(keep, sites.scores().cpu(), heads_per_layer(sites.layers))
            self.keep = keep.clone()
            remove_structure(model, self.keep, self.example, self.transformer)
            return flops_per_image(model, data.input_shape, data.input_dtype), count_params(model)
        self.masks = unstructured_masks(model, cfg.search.ratio, cfg.search.rules)
        self.enforcer = SparsityEnforcer(model, self.masks)
        self.enforcer.mask_weights()
        flops = effective_flops_per_image(model, data.input_shape, self.masks, data.input_dtype)
        return flops, nonzero_params(model)

    def restore(self, model: nn.Module, state: dict[str, Any]) -> None:
        """Prune a freshly built ``model`` as an engine ``state`` says it was, so that the state's weights fit it."""
        if state["prune_keep"] is not None:
            self.keep = state["prune_keep"].to(torch.bool)
            remove_structure(model, self.keep, self.example, self.transformer)
        if state["prune_masks"] is not None:
            self.masks = {k: v.to(torch.bool) for k, v in state["prune_masks"].items()}
            self.enforcer = SparsityEnforcer(model, self.masks)

    def state_dict(self) -> dict[str, Any]:
        return {"prune_keep": self.keep, "prune_masks": self.masks}

    def sparsity(self, model: nn.Module) -> float | None:
        """The fraction of zero weights unstructured pruning left (None without it)."""
        return sparsity(model, self.masks) if self.masks is not None else None

    def ticket(self, unit: str, epoch: int | None, layers: tuple[int, ...]) -> Ticket | None:
        """The mask the trial pruned with, over its ``unit`` (``layers`` of them per layer) and drawn at
        search ``epoch`` (None before the prune)."""
        if self.keep is not None:
            return Ticket({KEEP: self.keep.cpu().numpy()}, unit, epoch, layers)
        if self.masks is not None:
            return Ticket({name: m.cpu().numpy() for name, m in self.masks.items()}, "weight", epoch)
        return None


def reinitialize(model: nn.Module) -> None:
    """Fresh weights for the (pruned) architecture, with torchvision's init scheme (EB "scratch")."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
