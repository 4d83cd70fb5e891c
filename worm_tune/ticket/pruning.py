"""Pruning after the Early-Bird search, and the counts that report what it saved.

Two kinds, as in `[`docs/method.md`](docs/method.md)` ("After the search"):

* **Unstructured** (the paper's protocol): L1 magnitude masks per layer from PyTorch's own
  ``torch.nn.utils.prune``. The paper let pruned weights grow back during retraining; we keep
  them at zero with :class:`SparsityEnforcer`.
* **Structured** (the original Early-Bird): the BN channel mask found by the search is applied
  by physically removing channels with torch-pruning's ``DependencyGraph``, which also shrinks
  every layer that consumes them (next convs, the linear head behind ``flatten``).

Both replace or rewrite parameters, so optimizers (and a :class:`SparsityEnforcer`) must be
built after pruning, on the model's final device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.utils.prune as torch_prune
import torch_pruning as tp
from torch import nn

from worm_tune.config import SEARCH_RULES
from worm_tune.models import bn_layers
from worm_tune.ticket.accounting import eval_mode, weight_name
from worm_tune.ticket.heads import remove_heads

#: Module types whose ``weight`` the unstructured protocol prunes; for ``nn.MultiheadAttention``
#: (torchvision's ViT) the packed query/key/value projection ``in_proj_weight`` (its output
#: projection is an ``nn.Linear``).
UNSTRUCTURED_TYPES = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.MultiheadAttention)


def unstructured_masks(model: nn.Module, ratio: float, rules: str = "algorithm") -> dict[str, torch.Tensor]:
    """Zero the smallest-|w| fraction ``ratio`` of each Conv2d/Linear/BatchNorm2d weight (and
    attention input projection), per layer; with ``rules="reference"`` also of the final Linear's
    bias, as the reference code does.

    Uses ``prune.l1_unstructured`` as the paper did (``round(ratio * numel)`` entries per layer),
    then ``prune.remove`` so the model stays a plain module (no ``weight_orig``/``weight_mask``)
    whose state_dict loads into a freshly built dense model. Returns ``{param name: bool mask}``
    with True = kept; the pruned entries are already zero in the model.
    """
    if rules not in SEARCH_RULES:
        raise ValueError(f"rules={rules!r} is invalid: expected one of {', '.join(SEARCH_RULES)}")
    named = list(model.named_modules())
    targets = [(name, m, weight_name(m)) for name, m in named if isinstance(m, UNSTRUCTURED_TYPES)]
    linears = [(name, m) for name, m in named if isinstance(m, nn.Linear)]
    if rules == "reference" and linears and linears[-1][1].bias is not None:
        targets.append((*linears[-1], "bias"))
    return {f"{name}.{param}": _l1_prune(module, param, ratio) for name, module, param in targets}


def _l1_prune(module: nn.Module, param: str, ratio: float) -> torch.Tensor:
    """Zero the smallest-|x| fraction ``ratio`` of ``module.<param>`` in place; returns its keep mask."""
    order = list(module._parameters)
    # Scores as a contiguous copy: torch's pruning flattens them with view(), which a
    # channels-last weight refuses; the kept entries are the same either way.
    scores = getattr(module, param).detach().contiguous()
    torch_prune.l1_unstructured(module, param, amount=ratio, importance_scores=scores)
    mask = getattr(module, f"{param}_mask").detach().bool().clone()
    torch_prune.remove(module, param)
    # remove() re-registers the parameter last; restore the order so parameters() (and with it
    # optimizer state_dicts, which are positional) match a freshly built model.
    for key in order:
        module._parameters[key] = module._parameters.pop(key)
    return mask


class SparsityEnforcer:
    """Keeps pruned weights at exactly zero during retraining (the reference let them grow back).

    Masking the gradients is enough for SGD (momentum, weight decay) and Adam(W), since a zero
    weight with zero gradient gets a zero update; :meth:`mask_weights` guards against anything
    else (e.g. a loaded checkpoint). Parameters are resolved once, so build it after the model
    reached its device and after any pruning.
    """

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
        named = dict(model.named_parameters())
        missing = sorted(set(masks) - set(named))
        if missing:
            raise KeyError(f"masks name parameters the model lacks: {missing[:5]}")
        self._params = [named[name] for name in masks]
        self._masks = [m.to(device=p.device, dtype=p.dtype) for m, p in zip(masks.values(), self._params, strict=True)]

    def mask_grads(self) -> None:
        """Zero the gradients of pruned entries; call after backward, before ``optimizer.step``."""
        pairs = [(p.grad, m) for p, m in zip(self._params, self._masks, strict=True) if p.grad is not None]
        if pairs:
            grads, masks = zip(*pairs, strict=True)
            torch._foreach_mul_(list(grads), list(masks))

    @torch.no_grad()
    def mask_weights(self) -> None:
        """Zero the pruned weights; call once right after pruning (and after any re-initialisation)."""
        torch._foreach_mul_(self._params, self._masks)


def sparsity(model: nn.Module, masks: dict[str, torch.Tensor]) -> float:
    """Fraction of exactly-zero entries over the masked parameters, read from the weights themselves."""
    named = dict(model.named_parameters())
    zeros = sum(int((named[name] == 0).sum()) for name in masks)
    total = sum(named[name].numel() for name in masks)
    return zeros / total if total else 0.0


@dataclass(frozen=True)
class StructuredResult:
    """Channels per BatchNorm2d (by module name) before and after :func:`structured_prune`."""

    channels_before: dict[str, int]
    channels_after: dict[str, int]


@dataclass(frozen=True)
class _CoupledBNs:
    """BNs that must share channels (residual additions), and the channels they keep."""

    names: tuple[str, ...]
    keep: torch.Tensor


def _build_graph(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    with eval_mode(model):
        return tp.DependencyGraph().build_dependency(model, example_inputs=example_input, verbose=False)


def _plan(model: nn.Module, keep: torch.Tensor, graph: tp.DependencyGraph) -> list[_CoupledBNs]:
    """Split ``keep`` per BN, merge coupled BNs (union), and apply the at-least-one-channel rule."""
    bns = dict(bn_layers(model))
    sizes = [bn.num_features for bn in bns.values()]
    keep = keep.detach().to("cpu", torch.bool).flatten()
    if keep.numel() != sum(sizes):
        raise ValueError(f"keep has {keep.numel()} entries, the model's BatchNorm2d layers {sum(sizes)} channels")
    own = dict(zip(bns, keep.split(sizes), strict=True))

    names = {module: name for name, module in bns.items()}
    coupled: list[_CoupledBNs] = []
    seen: set[str] = set()
    for name, bn in bns.items():
        if name in seen:
            continue
        full = list(range(bn.num_features))
        dependents = graph.get_pruning_group(bn, tp.prune_batchnorm_out_channels, idxs=full).items
        sharing = {names[dep.target.module] for dep, _ in dependents if dep.target.module in names}
        for dep, idxs in dependents:
            if dep.target.module in names and [int(i) for i in idxs] != full:
                raise NotImplementedError(f"{names[dep.target.module]} is coupled to {name} with remapped channels")
        ordered = tuple(n for n in bns if n in sharing)
        union = torch.stack([own[n] for n in ordered]).any(dim=0)
        if not union.any():
            gamma = torch.stack([bns[n].weight.detach().abs().cpu() for n in ordered]).sum(dim=0)
            union[int(gamma.argmax())] = True
        coupled.append(_CoupledBNs(ordered, union))
        seen.update(ordered)
    return coupled


def expected_channels(model: nn.Module, keep: torch.Tensor, example_input: torch.Tensor) -> dict[str, int]:
    """Channels each BN will have after :func:`structured_prune` with the same ``keep``; changes nothing."""
    coupled = _plan(model, keep, _build_graph(model, example_input))
    return {name: int(c.keep.sum()) for c in coupled for name in c.names}


def structured_prune(model: nn.Module, keep: torch.Tensor, example_input: torch.Tensor) -> StructuredResult:
    """Physically remove the channels ``keep`` marks False, in place, with torch-pruning's DependencyGraph.

    ``keep`` is the Early-Bird mask: one bool per channel of every BatchNorm2d, concatenated in
    ``named_modules`` order. Rules (ours):

    * BNs coupled through residual additions (a ResNet stage's stem/``bn2``/downsample BNs) share
      their channels; a coupled channel is removed only if EVERY coupled BN marks it pruned,
      i.e. coupled BNs keep the union of their keeps.
    * Every BN keeps at least one channel, so the network stays connected: coupled BNs (or a lone
      BN) whose union is empty keep the one channel with the largest |gamma| (summed over them).

    Channel counts therefore depend only on the architecture and ``keep``, never on the weights:
    re-running this on a freshly built dense model rebuilds the shapes a pruned state_dict needs
    (which channel the rule above keeps may differ, but the loaded weights replace it).
    Pruning is deterministic: the same model and ``keep`` give the same architecture and weights.
    Parameters are replaced: build optimizers afterwards.
    """
    bns = dict(bn_layers(model))
    before = {name: bn.num_features for name, bn in bns.items()}
    graph = _build_graph(model, example_input)
    coupled = _plan(model, keep, graph)
    for c in coupled:
        pruned = (~c.keep).nonzero().flatten().tolist()
        if pruned:
            # Re-fetched now: earlier prunes shrank other layers' inputs, not these BNs' channels.
            graph.get_pruning_group(bns[c.names[0]], tp.prune_batchnorm_out_channels, idxs=pruned).prune()
    after = {name: bn.num_features for name, bn in bns.items()}
    expected = {name: int(c.keep.sum()) for c in coupled for name in c.names}
    if after != expected:
        raise RuntimeError(f"torch-pruning left channels {after}, the plan asked for {expected}")
    return StructuredResult(channels_before=before, channels_after=after)


def remove_structure(model: nn.Module, keep: torch.Tensor, example_input: torch.Tensor, transformer: bool) -> None:
    """Structured pruning by the search's mask: a transformer loses the attention heads ``keep``
    masks (:func:`worm_tune.ticket.heads.remove_heads`), a CNN its BN channels (:func:`structured_prune`)."""
    if transformer:
        remove_heads(model, keep)
    else:
        structured_prune(model, keep, example_input)
