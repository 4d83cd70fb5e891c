"""A trained network as a file: what rebuilds its architecture, and its weights.

A model file holds the trial's config, the shape, dtype and vocabulary of the input its data
gave, the structured mask it was cut by (None if it kept its shape) and its weights, all loadable
with ``torch.load(weights_only=True)``. The engine writes it for a finished trial (or from its last
checkpoint, wherever it ran); :func:`worm_tune.engine.load_network` rebuilds the network from it,
cutting the dense architecture by the mask (pruning is a layer above this one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from worm_tune import legacy
from worm_tune.config import TrialConfig
from worm_tune.data import DataBundle
from worm_tune.models import build_model


@dataclass(frozen=True)
class ModelFile:
    config: dict[str, Any]  # the trial's config, as TrialConfig.to_dict gives it
    num_classes: int
    input_shape: tuple[int, ...]  # one example's, without the batch dimension
    input_dtype: torch.dtype
    vocab_size: int  # of a text model's token ids (0 for images)
    prune_keep: torch.Tensor | None  # the structured mask the network was cut by
    weights: dict[str, torch.Tensor]

    @classmethod
    def of(cls, state: dict[str, Any], data: DataBundle) -> ModelFile:
        """The network of an engine state (a finished trial's, or its last checkpoint's), fed by ``data``."""
        shape, keep = tuple(data.input_shape), state["prune_keep"]
        return cls(state["config"], data.num_classes, shape, data.input_dtype, data.vocab_size, keep, state["model"])

    def save(self, path: str | Path) -> None:
        torch.save(
            {
                "config": self.config,
                "num_classes": self.num_classes,
                "input_shape": list(self.input_shape),
                "input_dtype": str(self.input_dtype).removeprefix("torch."),
                "vocab_size": self.vocab_size,
                "prune_keep": self.prune_keep,
                "model": self.weights,
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path) -> ModelFile:
        saved = legacy.model_file_fields(torch.load(path, map_location="cpu", weights_only=True))
        keep = saved["prune_keep"]
        return cls(
            saved["config"],
            saved["num_classes"],
            tuple(saved["input_shape"]),
            getattr(torch, saved["input_dtype"]),
            saved["vocab_size"],
            None if keep is None else keep.to(torch.bool),
            saved["model"],
        )

    def trial_config(self) -> TrialConfig:
        return TrialConfig.from_dict(self.config)

    def dense_model(self) -> nn.Module:
        """The architecture before any cut, with fresh weights."""
        return build_model(self.trial_config().model, self.num_classes, self.input_shape, self.vocab_size)

    def example(self) -> torch.Tensor:
        """A batch of one zero input: what traces the architecture for a cut, and what an MLflow
        signature is inferred from."""
        return torch.zeros(1, *self.input_shape, dtype=self.input_dtype)
