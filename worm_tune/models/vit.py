"""A VisionTransformer for 32x32 images, and the attention layer that head removal leaves behind."""

from __future__ import annotations

from typing import Any, Final

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import VisionTransformer

#: A ViT sized for 32x32 inputs: 64 patches of 4x4, 4 encoder blocks of 4 heads of width 32 (~0.53M
#: parameters plus the classifier), small enough to train on CIFAR in minutes.
VIT_32_DIMS: Final[dict[str, int]] = {
    "image_size": 32,
    "patch_size": 4,
    "num_layers": 4,
    "num_heads": 4,
    "hidden_dim": 128,
    "mlp_dim": 256,
}


def vit_32(num_classes: int) -> VisionTransformer:
    """torchvision's own VisionTransformer with :data:`VIT_32_DIMS` and no dropout (the caller seeds)."""
    return VisionTransformer(**VIT_32_DIMS, dropout=0.0, attention_dropout=0.0, num_classes=num_classes)


class PrunedSelfAttention(nn.Module):
    """What :func:`remove_heads` puts in place of an ``nn.MultiheadAttention``: separate ``q``, ``k``,
    ``v`` projections (the packed weight cannot lose rows per head) and ``out_proj``, called like
    the original (``out, _ = attn(x, x, x, need_weights=False)``); masks and weights are unsupported."""

    def __init__(
        self,
        q: nn.Linear,
        k: nn.Linear,
        v: nn.Linear,
        out_proj: nn.Linear,
        num_heads: int,
        head_dim: int,
        dropout: float,
        batch_first: bool,
    ) -> None:
        super().__init__()
        self.q, self.k, self.v, self.out_proj = q, k, v, out_proj
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.dropout = dropout
        self.batch_first = batch_first

    @classmethod
    def from_multihead(cls, mha: nn.MultiheadAttention) -> PrunedSelfAttention:
        """A copy of ``mha`` with all its heads, ready to lose some."""
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("cannot remove heads from nn.MultiheadAttention with add_bias_kv or add_zero_attn")
        e, w, b = mha.embed_dim, mha.in_proj_weight, mha.in_proj_bias
        q, k, v = (
            _linear(_param(w, slice(i * e, (i + 1) * e)), None if b is None else _param(b, slice(i * e, (i + 1) * e)))
            for i in range(3)
        )
        ob = mha.out_proj.bias
        out = _linear(_param(mha.out_proj.weight, ...), None if ob is None else _param(ob, ...))
        return cls(q, k, v, out, mha.num_heads, mha.head_dim, mha.dropout, mha.batch_first)

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, need_weights: bool = False, **kwargs: Any
    ) -> tuple[torch.Tensor, None]:
        masked = any(kwargs.get(name) is not None for name in ("attn_mask", "key_padding_mask"))
        if need_weights or masked or kwargs.get("is_causal"):
            raise NotImplementedError("PrunedSelfAttention supports neither attention masks nor returning weights")
        seq_first = not self.batch_first and query.dim() == 3
        if seq_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        q, k, v = (
            proj(x).unflatten(-1, (self.num_heads, self.head_dim)).transpose(-3, -2)
            for proj, x in ((self.q, query), (self.k, key), (self.v, value))
        )
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        out = self.out_proj(x.transpose(-3, -2).flatten(-2))
        return (out.transpose(0, 1) if seq_first else out), None


def _param(source: torch.Tensor, index: Any) -> nn.Parameter:
    """A new parameter holding a copy of ``source[index]``, trainable iff ``source`` is."""
    return nn.Parameter(source.detach()[index].clone(), requires_grad=source.requires_grad)


def _linear(weight: nn.Parameter, bias: nn.Parameter | None) -> nn.Linear:
    """A Linear holding ``weight`` and ``bias``, built on ``meta`` so that no RNG draw is made."""
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    lin.weight = weight
    if bias is not None:
        lin.bias = bias
    return lin
