"""The rules no single field states: combinations of valid values that cannot run, refused before
anything loads (a text dataset on a CNN, a checkpoint for an architecture that takes none, ...)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worm_tune.config.names import IMAGE_DATASETS, TEXT_DATASETS, TRANSFORMERS
from worm_tune.config.specs import ConfigError


def check_combinations(config: Mapping[str, Any], cnn_only: Mapping[str, Any]) -> None:
    """Raise :class:`~.specs.ConfigError` on the first combination that cannot run.

    ``config``: every dotted key and its (valid) value; ``cnn_only``: the fields only CNNs use,
    with the defaults a transformer must leave them at."""
    arch, dataset = config["model.arch"], config["data.dataset"]
    checkpoint, pretrained = config["model.checkpoint"], config["model.pretrained"]
    text = dataset in TEXT_DATASETS
    if (arch == "bert") != text:
        wanted = f"one of {', '.join(TEXT_DATASETS)}" if arch == "bert" else f"one of {', '.join(IMAGE_DATASETS)}"
        raise ConfigError(f"data.dataset={dataset!r} does not fit model.arch={arch!r}: use {wanted}")
    if checkpoint and arch != "bert":
        raise ConfigError(f"model.checkpoint={checkpoint!r} applies to model.arch='bert' only")
    if arch == "bert" and pretrained and not checkpoint:
        raise ConfigError("model.pretrained=true with model.arch='bert' needs model.checkpoint (bert-base-uncased)")
    if arch == "vit" and pretrained:
        raise ConfigError("model.pretrained=true is invalid for model.arch='vit': a 32x32 ViT trains from scratch")
    if text and config["data.augment"]:
        raise ConfigError(f"data.augment=true is invalid for {dataset!r}: augmentation is for images")
    if text and config["speed.channels_last"] == "on":
        raise ConfigError(f"speed.channels_last='on' is invalid for {dataset!r}: it is for image batches")
    if arch in TRANSFORMERS:
        for key, default in cnn_only.items():
            if config[key] != default:
                raise ConfigError(
                    f"{key}={config[key]!r} is for CNNs, not model.arch={arch!r}; leave it at {default!r}"
                )
