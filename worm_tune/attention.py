"""Transformer self-attention as the Early-Bird mask's representative layers, and head removal.

The paper masks BERT's attention query and key weights element-wise by magnitude
(:class:`ElementSites`); :class:`HeadSites` draws the same global mask over whole heads, which
:func:`remove_heads` can then cut out of the model (structured pruning). Two model families are
recognised: torchvision's ``nn.MultiheadAttention`` (packed ``in_proj_weight``, as in the
VisionTransformer) and Hugging Face BERT's ``BertAttention`` (``self.query/key/value`` plus
``output.dense``), found by structure, so ``transformers`` is never imported here.

Sites and :class:`AttentionLayer` hold references to the modules and parameters as they were
when built: after :func:`remove_heads` re-create them from ``attention_layers(model)`` (and the
optimizer, whose parameters were replaced). Nothing here seeds or draws from the RNG.
"""

from __future__ import annotations

from dataclasses import dataclass
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
        return sum(w.numel() for layer in self.layers for w in layer.qk_weights())

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
        return sum(heads_per_layer(self.layers))

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


def _keep_rows(lin: nn.Linear, rows: torch.Tensor) -> None:
    lin.weight = _param(lin.weight, rows)
    if lin.bias is not None:
        lin.bias = _param(lin.bias, rows)
    lin.out_features = rows.numel()


def _keep_columns(lin: nn.Linear, cols: torch.Tensor) -> None:
    lin.weight = _param(lin.weight, (slice(None), cols))
    lin.in_features = cols.numel()


def remove_heads(model: nn.Module, keep: torch.Tensor) -> None:
    """Cut the heads ``keep`` marks False out of ``model``, in place (structured pruning).

    A head's query, key and value rows and its ``out_proj`` columns go; the kept heads compute
    exactly what they did. An ``nn.MultiheadAttention`` that loses heads becomes a
    :class:`PrunedSelfAttention`; a BERT block keeps its modules with sliced Linears and updated
    ``num_attention_heads``/``all_head_size`` (its shared config is left alone). Parameters are new
    objects: rebuild the optimizer and the sites afterwards.
    """
    layers = attention_layers(model)
    heads = heads_per_layer(layers)
    _check_size(keep, sum(heads), "head")
    keep_per_layer = keep.detach().cpu().bool().split(heads)
    # Check every layer and build the replacements (which can fail) before changing any: errors leave the model whole.
    todo: list[tuple[AttentionLayer, torch.Tensor, nn.Module]] = []
    for layer, keep_l in zip(layers, keep_per_layer, strict=True):
        if not keep_l.any():
            raise ValueError(f"keep removes every head of {layer.name}; see keep_one_head_per_layer")
        if keep_l.all():
            continue
        if layer.packed and not layer.name:
            raise ValueError("cannot replace the model itself: wrap the nn.MultiheadAttention in a module")
        todo.append((layer, keep_l, PrunedSelfAttention.from_multihead(layer.module) if layer.packed else layer.module))
    for layer, keep_l, module in todo:
        if module is not layer.module:
            parent, _, attr = layer.name.rpartition(".")
            setattr(model.get_submodule(parent), attr, module)
        q, k, v, out = _projections(module)
        rows = torch.arange(layer.num_heads * layer.head_dim).view(layer.num_heads, layer.head_dim)[keep_l].flatten()
        rows = rows.to(q.weight.device)
        for lin in (q, k, v):
            _keep_rows(lin, rows)
        _keep_columns(out, rows)
        num_heads = int(keep_l.sum())
        if isinstance(module, PrunedSelfAttention):
            module.num_heads = num_heads
        else:
            module.self.num_attention_heads = num_heads
            module.self.all_head_size = num_heads * layer.head_dim
