"""Transformer self-attention as the Early-Bird mask's representative layers.

The paper masks BERT's attention query and key weights element-wise by magnitude
(:class:`ElementSites`); :class:`HeadSites` draws the same global mask over whole heads, which
:func:`worm_tune.ticket.heads.remove_heads` can then cut out of the model (structured pruning).
Two model families are recognised: torchvision's ``nn.MultiheadAttention`` (packed
``in_proj_weight``, as in the VisionTransformer) and Hugging Face BERT's ``BertAttention``
(``self.query/key/value`` plus ``output.dense``), found by structure, so ``transformers`` is never
imported here.

Sites and :class:`AttentionLayer` hold references to the modules and parameters as they were
when built: after head removal re-create them from ``attention_layers(model)`` (and the
optimizer, whose parameters were replaced). Nothing here seeds or draws from the RNG.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from worm_tune.models.vit import PrunedSelfAttention


@dataclass(frozen=True)
class AttentionLayer:
    """One self-attention layer: ``module`` is an ``nn.MultiheadAttention``, a
    :class:`PrunedSelfAttention` or a BERT-style attention block (children ``self`` and ``output``)."""

    name: str
    module: nn.Module
    num_heads: int
    head_dim: int

    @property
    def packed(self) -> bool:
        """Query, key and value share one ``in_proj_weight`` (torchvision's ``nn.MultiheadAttention``)."""
        return isinstance(self.module, nn.MultiheadAttention)

    def projections(self) -> tuple[nn.Linear, nn.Linear, nn.Linear, nn.Linear]:
        """Query, key, value and output Linears of an unpacked layer."""
        if self.packed:
            raise TypeError(f"{self.name} packs its projections into in_proj_weight")
        return _projections(self.module)

    def qk_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Query and key weights, ``[heads * head_dim, embed]`` each (views into a packed weight)."""
        if self.packed:
            w, width = self.module.in_proj_weight, self.num_heads * self.head_dim
            return w[:width], w[width : 2 * width]
        q, k, _, _ = self.projections()
        return q.weight, k.weight

    def qk_scales(
        self, q_scale: torch.Tensor, k_scale: torch.Tensor, biases: bool
    ) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """Gradient scales for the query and key weights (``[rows, embed]`` or per row ``[rows, 1]``)
        and, with ``biases``, their biases (per row); value rows are scaled by 1."""
        if self.packed:
            m = self.module
            ones = torch.ones_like(q_scale)
            out = [(m.in_proj_weight, torch.cat([q_scale, k_scale, ones]))]
            if biases and m.in_proj_bias is not None:
                out.append((m.in_proj_bias, torch.cat([q_scale, k_scale, ones]).flatten()))
            return out
        q, k, _, _ = self.projections()
        out = [(q.weight, q_scale), (k.weight, k_scale)]
        if biases:
            out += [(lin.bias, s.flatten()) for lin, s in ((q, q_scale), (k, k_scale)) if lin.bias is not None]
        return out


def _projections(m: nn.Module) -> tuple[nn.Linear, nn.Linear, nn.Linear, nn.Linear]:
    """Query, key, value and output Linears of a :class:`PrunedSelfAttention` or BERT attention block."""
    if isinstance(m, PrunedSelfAttention):
        return m.q, m.k, m.v, m.out_proj
    return m.self.query, m.self.key, m.self.value, m.output.dense


def _bert_like(module: nn.Module) -> bool:
    """A Hugging Face BERT-style attention block, told by structure so transformers need not be imported."""
    inner, output = getattr(module, "self", None), getattr(module, "output", None)
    return (
        isinstance(inner, nn.Module)
        and all(isinstance(getattr(inner, name, None), nn.Linear) for name in ("query", "key", "value"))
        and all(hasattr(inner, name) for name in ("num_attention_heads", "attention_head_size", "all_head_size"))
        and isinstance(getattr(output, "dense", None), nn.Linear)
    )


def attention_layers(model: nn.Module) -> list[AttentionLayer]:
    """Every attention layer of ``model`` in ``named_modules`` order: the representative layers."""
    layers: list[AttentionLayer] = []
    for name, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention):
            if not m._qkv_same_embed_dim:
                raise ValueError(f"{name}: nn.MultiheadAttention with kdim/vdim != embed_dim is not supported")
            layers.append(AttentionLayer(name, m, m.num_heads, m.head_dim))
        elif isinstance(m, PrunedSelfAttention):
            layers.append(AttentionLayer(name, m, m.num_heads, m.head_dim))
        elif _bert_like(m):
            layers.append(AttentionLayer(name, m, m.self.num_attention_heads, m.self.attention_head_size))
    if not layers:
        raise ValueError(f"{type(model).__name__} has no attention layers (nn.MultiheadAttention or BERT attention)")
    return layers


def _check_size(keep: torch.Tensor, num_units: int, unit: str) -> None:
    if keep.numel() != num_units:
        raise ValueError(f"mask has {keep.numel()} entries, the attention layers have {num_units} {unit}s")


class ElementSites:
    """Query and key weight entries (the paper): scores ``|w|``, query entries then key entries per
    layer, row-major; WORM scales the masked entries' gradients (biases are not units)."""

    unit = "weight"

    def __init__(self, layers: list[AttentionLayer]) -> None:
        self.layers = layers

    @property
    def num_units(self) -> int:
        return sum(self.layer_sizes)

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return tuple(sum(w.numel() for w in layer.qk_weights()) for layer in self.layers)

    def scores(self) -> torch.Tensor:
        return torch.cat([w.detach().abs().flatten().float() for layer in self.layers for w in layer.qk_weights()])

    def scales(self, keep: torch.Tensor, factor: float) -> list[tuple[nn.Parameter, torch.Tensor]]:
        _check_size(keep, self.num_units, self.unit)
        out: list[tuple[nn.Parameter, torch.Tensor]] = []
        offset = 0
        for layer in self.layers:
            scales = []
            for w in layer.qk_weights():
                keep_w = keep[offset : offset + w.numel()].to(w.device).view(w.shape)
                offset += w.numel()
                scales.append(torch.where(keep_w, 1.0, factor).to(w.dtype))
            q_scale, k_scale = scales
            out += layer.qk_scales(q_scale, k_scale, biases=False)
        return out


class HeadSites:
    """Attention heads (structured): a head's score is the Frobenius norm of its query and key
    weight rows together; WORM scales the masked heads' query and key rows and biases."""

    unit = "head"

    def __init__(self, layers: list[AttentionLayer]) -> None:
        self.layers = layers

    @property
    def num_units(self) -> int:
        return sum(self.layer_sizes)

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return tuple(heads_per_layer(self.layers))

    def scores(self) -> torch.Tensor:
        per_layer = []
        for layer in self.layers:
            rows = [w.detach().float().reshape(layer.num_heads, -1) for w in layer.qk_weights()]
            per_layer.append(torch.linalg.vector_norm(torch.cat(rows, dim=1), dim=1))
        return torch.cat(per_layer)

    def scales(self, keep: torch.Tensor, factor: float) -> list[tuple[nn.Parameter, torch.Tensor]]:
        _check_size(keep, self.num_units, self.unit)
        out: list[tuple[nn.Parameter, torch.Tensor]] = []
        for layer, keep_l in zip(self.layers, keep.split(heads_per_layer(self.layers)), strict=True):
            q, _ = layer.qk_weights()
            per_head = torch.where(keep_l.to(q.device), 1.0, factor).to(q.dtype)
            scale = per_head.repeat_interleave(layer.head_dim).unsqueeze(1)
            out += layer.qk_scales(scale, scale, biases=True)
        return out


def heads_per_layer(layers: list[AttentionLayer]) -> list[int]:
    """The number of heads of each layer, in order (how a head mask splits into layers)."""
    return [layer.num_heads for layer in layers]


def count_heads(model: nn.Module) -> int:
    """All attention heads of ``model``."""
    return sum(heads_per_layer(attention_layers(model)))


def keep_one_head_per_layer(keep: torch.Tensor, scores: torch.Tensor, heads: list[int]) -> torch.Tensor:
    """A copy of the head mask ``keep`` in which every layer keeps at least its best head (ties: the
    lower index), so a global mask never removes a whole attention layer."""
    if keep.numel() != sum(heads) or scores.numel() != sum(heads):
        raise ValueError(f"keep has {keep.numel()} and scores {scores.numel()} entries for {sum(heads)} heads")
    keep = keep.clone()
    for keep_l, scores_l in zip(keep.split(heads), scores.split(heads), strict=True):
        if not keep_l.any():
            keep_l[torch.argmax(scores_l)] = True  # argmax returns the first maximum
    return keep
