"""torchvision CNNs for 32x32 inputs, and the BatchNorm layers the Early-Bird mask is drawn from.

``stem="imagenet"`` keeps torchvision's layout unchanged (what the paper ran). ``stem="cifar"``
adapts it to 32x32 inputs: for ResNet a 3x3 stride-1 ``conv1`` and no max-pool; for VGG, which
has no stem to change, the CIFAR head (global average pool + one ``Linear(512, classes)``),
which shrinks VGG from ~129M / ~134M to ~9M / ~15M parameters (vgg11_bn / vgg16_bn).

Nothing here seeds: the caller seeds the global torch RNG, and the same seed gives the same weights.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models import VGG, ResNet, ResNet18_Weights, VGG11_BN_Weights, VGG16_BN_Weights, WeightsEnum

from worm_tune.config import ModelConfig

_WEIGHTS: dict[str, WeightsEnum] = {
    "resnet18": ResNet18_Weights.IMAGENET1K_V1,
    "vgg11_bn": VGG11_BN_Weights.IMAGENET1K_V1,
    "vgg16_bn": VGG16_BN_Weights.IMAGENET1K_V1,
}


class ModelError(RuntimeError):
    """A model cannot be built or does not have the layout the search needs; one-line message."""


def build_model(
    cfg: ModelConfig, num_classes: int, input_shape: tuple[int, ...] = (3, 32, 32), vocab_size: int = 0
) -> nn.Module:
    """torchvision ``cfg.arch`` with a ``num_classes`` classifier, adapted to ``cfg.stem``.

    With ``pretrained`` the ImageNet weights load first; the layers replaced afterwards (the
    classifier, and for a CIFAR-stem ResNet also ``conv1``) start fresh. ``vit`` is
    :func:`worm_tune.attention.vit_32`; ``bert`` is :func:`worm_tune.text.build_bert`, sized by the
    text data (``vocab_size``, and the sequence length in ``input_shape``).
    """
    if cfg.arch == "vit":
        from worm_tune.attention import vit_32

        return vit_32(num_classes)
    if cfg.arch == "bert":
        from worm_tune.text import build_bert

        return build_bert(cfg.checkpoint, cfg.pretrained, num_classes, vocab_size, input_shape[-1])
    builder = getattr(torchvision.models, cfg.arch)
    model = _pretrained(builder, cfg.arch) if cfg.pretrained else builder(weights=None)
    if isinstance(model, ResNet):
        _adapt_resnet(model, cfg.stem, num_classes)
    else:
        _adapt_vgg(model, cfg.stem, num_classes)
    return model


def _pretrained(builder: Callable[..., nn.Module], arch: str) -> nn.Module:
    """Build with ImageNet weights, turning a failed download or an unreadable cached file into a one-line fix."""
    weights = _WEIGHTS[arch]
    try:
        return builder(weights=weights)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:  # URLError is an OSError
        cached = Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        if cached.is_file():
            raise ModelError(
                f"pretrained {arch} weights at {cached} are unreadable ({reason}); "
                f"delete the file to download it again, or replace it with a copy of {weights.url}"
            ) from exc
        raise ModelError(
            f"could not fetch pretrained {arch} weights from {weights.url} ({reason}); "
            f"place the file at {cached} to use them offline"
        ) from exc


def bn_layers(model: nn.Module) -> list[tuple[str, nn.BatchNorm2d]]:
    """Every BatchNorm2d in ``named_modules`` order: the representative layers of the mask."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, nn.BatchNorm2d)]


def producing_convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    """BN name -> the Conv2d whose output channels it normalises (the last Conv2d before it).

    Channel-level WORM and structured pruning act on these filters, so a BN with no matching
    producer is a layout error, not something to skip.
    """
    pairs: dict[str, nn.Conv2d] = {}
    last: tuple[str, nn.Conv2d] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            last = (name, module)
        elif isinstance(module, nn.BatchNorm2d):
            if last is None:
                raise ModelError(f"BatchNorm2d {name!r} has no Conv2d before it")
            conv_name, conv = last
            if conv.out_channels != module.num_features:
                raise ModelError(
                    f"BatchNorm2d {name!r} has {module.num_features} channels but the Conv2d before it, "
                    f"{conv_name!r}, produces {conv.out_channels}"
                )
            pairs[name] = conv
    return pairs


def _adapt_resnet(model: ResNet, stem: str, num_classes: int) -> None:
    if stem == "cifar":
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        # torchvision's own conv init, so a CIFAR-stem model is initialised like the rest of the network.
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
    model.fc = nn.Linear(model.fc.in_features, num_classes)


def _adapt_vgg(model: VGG, stem: str, num_classes: int) -> None:
    if stem == "cifar":
        model.avgpool = nn.AdaptiveAvgPool2d(1)
        model.classifier = nn.Linear(512, num_classes)
        head = model.classifier
    else:
        model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, num_classes)
        head = model.classifier[-1]
    # torchvision's VGG init for Linear layers, so the new head matches the layers it replaced.
    nn.init.normal_(head.weight, 0.0, 0.01)
    nn.init.zeros_(head.bias)
