"""The optimizer and learning-rate scheduler of a phase: built for the search, and afresh after the prune."""

from __future__ import annotations

import torch
from torch import nn

from worm_tune.config import OptimConfig


def build_optimizer(
    cfg: OptimConfig, model: nn.Module, epochs: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD or AdamW over ``model``'s parameters as they are now (pruning replaces them), with a
    rate annealed by a cosine over the phase's ``epochs``, or a constant one."""
    params = model.parameters()
    optimizer: torch.optim.Optimizer
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.scheduler == "cosine":
        return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    return optimizer, torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
