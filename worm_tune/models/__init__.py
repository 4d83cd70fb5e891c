"""The models a trial can train, by ``model.arch``: torchvision CNNs, a 32x32 ViT, and BERT.

:func:`build_model` looks the architecture up in :data:`BUILDERS`, keyed by the names
:data:`worm_tune.config.ARCHS` lists; nothing here seeds: the caller seeds the global torch RNG,
and the same seed gives the same weights. A trained network as a file: :mod:`.files`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from worm_tune.config import CNNS, ModelConfig
from worm_tune.models.base import ModelError, bn_layers, producing_convs
from worm_tune.models.bert import build_bert
from worm_tune.models.cnn import build_cnn
from worm_tune.models.vit import vit_32

__all__ = ["BUILDERS", "ModelError", "bn_layers", "build_model", "producing_convs"]

#: ``(cfg, num_classes, input_shape, vocab_size) -> model`` for each ``model.arch``.
BUILDERS: dict[str, Callable[[ModelConfig, int, tuple[int, ...], int], nn.Module]] = {
    **{arch: lambda cfg, classes, shape, vocab: build_cnn(cfg, classes) for arch in CNNS},
    "vit": lambda cfg, classes, shape, vocab: vit_32(classes),
    # BERT is sized by the text data: its vocabulary and, in the input shape, the sequence length.
    "bert": lambda cfg, classes, shape, vocab: build_bert(cfg.checkpoint, cfg.pretrained, classes, vocab, shape[-1]),
}


def build_model(
    cfg: ModelConfig, num_classes: int, input_shape: tuple[int, ...] = (3, 32, 32), vocab_size: int = 0
) -> nn.Module:
    """``cfg.arch`` with a ``num_classes`` classifier (see :data:`BUILDERS`)."""
    return BUILDERS[cfg.arch](cfg, num_classes, input_shape, vocab_size)
