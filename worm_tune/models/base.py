"""What every model module shares: the error type, and the BatchNorm layers the mask is drawn from."""

from __future__ import annotations

from torch import nn


class ModelError(RuntimeError):
    """A model cannot be built or does not have the layout the search needs; one-line message."""


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
