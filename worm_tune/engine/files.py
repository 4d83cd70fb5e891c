"""A finished trial's network rebuilt from its model file (:class:`~worm_tune.models.files.ModelFile`)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from worm_tune.config import TRANSFORMERS
from worm_tune.models.files import ModelFile
from worm_tune.ticket.pruning import remove_structure


def load_network(path: str | Path) -> tuple[nn.Module, torch.Tensor]:
    """The network saved at ``path`` (structured-pruned ones included) and a batch of one zero input of
    its shape and dtype: what rebuilds a structured-pruned architecture, and what an MLflow signature
    is inferred from."""
    saved = ModelFile.load(path)
    model, example = saved.dense_model(), saved.example()
    if saved.prune_keep is not None:
        transformer = saved.trial_config().model.arch in TRANSFORMERS
        remove_structure(model, saved.prune_keep, example, transformer)
    model.load_state_dict(saved.weights)
    return model, example


def load_model(path: str | Path) -> nn.Module:
    """The network saved at ``path``, as :func:`load_network` rebuilds it."""
    return load_network(path)[0]
