"""torchvision CNNs for 32x32 inputs.

``stem="imagenet"`` keeps torchvision's layout unchanged (what the paper ran). ``stem="cifar"``
adapts it to 32x32 inputs: for ResNet a 3x3 stride-1 ``conv1`` and no max-pool; for VGG, which
has no stem to change, the CIFAR head (global average pool + one ``Linear(512, classes)``),
which shrinks VGG from ~129M / ~134M to ~9M / ~15M parameters (vgg11_bn / vgg16_bn).
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
from worm_tune.models.base import ModelError


def build_cnn(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """torchvision ``cfg.arch`` with a ``num_classes`` classifier, adapted to ``cfg.stem``.

    With ``pretrained`` the ImageNet weights load first; the layers replaced afterwards (the
    classifier, and for a CIFAR-stem ResNet also ``conv1``) start fresh.
    """
    builder = getattr(torchvision.models, cfg.arch)
    model = _pretrained(builder, cfg.arch) if cfg.pretrained else builder(weights=None)
    if isinstance(model, ResNet):
        _adapt_resnet(model, cfg.stem, num_classes)
    else:
        _adapt_vgg(model, cfg.stem, num_classes)
    return model


_WEIGHTS: dict[str, WeightsEnum] = {
    "resnet18": ResNet18_Weights.IMAGENET1K_V1,
    "vgg11_bn": VGG11_BN_Weights.IMAGENET1K_V1,
    "vgg16_bn": VGG16_BN_Weights.IMAGENET1K_V1,
}


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
