"""What a network costs: parameter counts and FLOPs per image (dense, and with unstructured zeros)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """All parameter entries, zero or not (what structured pruning reduces)."""
    return sum(p.numel() for p in model.parameters())


def nonzero_params(model: nn.Module) -> int:
    """Parameter entries that are not exactly zero (what unstructured pruning reduces)."""
    return sum(int(torch.count_nonzero(p)) for p in model.parameters())


def _measure_flops(
    model: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype = torch.float32
) -> tuple[int, dict[str, int]]:
    """FlopCounterMode total for one input, plus the FLOPs of each pruned weight's product
    (Conv2d, Linear, an attention layer's input projection) from forward hooks, by weight name."""
    layer_flops: dict[str, int] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: Any) -> None:
            if isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                flops = 2 * out.numel() * (module.in_channels // module.groups * kh * kw)
            elif isinstance(module, nn.MultiheadAttention):  # query, key, value: 3 E x E products per token
                flops = 2 * inputs[0].shape[:-1].numel() * module.in_proj_weight.numel()
            else:
                flops = 2 * out.numel() * module.in_features
            layer_flops[f"{name}.{weight_name(module)}"] = flops

        return record

    handles = [
        m.register_forward_hook(hook(name))
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.MultiheadAttention))
    ]
    device = next(model.parameters()).device
    # nn.MultiheadAttention's inference fast path is one fused kernel FlopCounterMode cannot count.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with eval_mode(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_shape, dtype=dtype, device=device))
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for handle in handles:
            handle.remove()
    return int(counter.get_total_flops()), layer_flops


def flops_per_image(model: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> int:
    """Forward FLOPs for one input (FlopCounterMode: 2 per multiply-add), in eval mode on the model's device."""
    return _measure_flops(model, input_shape, dtype)[0]


def effective_flops_per_image(
    model: nn.Module, input_shape: tuple[int, ...], masks: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32
) -> int:
    """Theoretical FLOPs of an unstructured-pruned model: each pruned product scaled by its weight density.

    Masked kernels stay dense, so FlopCounterMode counts them in full; the skippable share
    ``(1 - density) * layer FLOPs`` is subtracted from its total (density from the masks).
    """
    total, layer_flops = _measure_flops(model, input_shape, dtype)
    skipped = 0.0
    for name, flops in layer_flops.items():
        mask = masks.get(name)
        if mask is not None:
            skipped += (1.0 - mask.float().mean().item()) * flops
    return round(total - skipped)


def weight_name(module: nn.Module) -> str:
    """The name of the weight unstructured pruning masks in ``module`` (packed q/k/v for attention)."""
    return "in_proj_weight" if isinstance(module, nn.MultiheadAttention) else "weight"


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for tracing/counting (no BN statistics updates), restoring every module's own flag."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode
