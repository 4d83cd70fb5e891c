"""Structured pruning of transformers: attention heads cut out of the model.

A ViT layer that loses heads becomes a :class:`~worm_tune.models.vit.PrunedSelfAttention`; BERT's
Linears are sliced in place. A layer whose heads were all masked keeps its best head.
"""

from __future__ import annotations

import torch
from torch import nn

from worm_tune.models.vit import PrunedSelfAttention, _param
from worm_tune.ticket.attention import (
    AttentionLayer,
    _check_size,
    _projections,
    attention_layers,
    heads_per_layer,
)


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
