"""The search's gradient edits: WORM's truncation by ``r``, and the L1 on BatchNorm gammas.

A method's schedule (:mod:`worm_tune.ticket.schedules`) sets the factor ``r``;
:class:`GradientTruncator` applies it to the units (channels, attention weights or heads) the
current mask would prune, with fused ``_foreach`` ops per optimizer step: to their gradients
(``worm.apply = grad``, the paper) or to their parameter change (``update``), which keeps r's
meaning under weight decay and Adam(W) (docs/method.md, "How r interacts with the optimizer").
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from worm_tune.config import APPLY_MODES
from worm_tune.ticket.sites import MaskSites


class GradientTruncator:
    """Scales the to-be-pruned units' gradients (``grad``) or parameter change (``update``) by ``r``.

    Which parameters a unit's truncation touches is the :class:`~worm_tune.ticket.sites.MaskSites`'
    business (BN gamma/beta, optionally the producing conv; attention query/key weights or a
    head's rows). The scale tensors are built once per mask/factor change, so a step costs one
    fused multiply (``grad``) or a fused copy and lerp (``update``) over a few dozen tensors.
    Call :meth:`apply` after backward and :meth:`after_step` after the optimizer step; the
    snapshot ``update`` takes between them lives within one step, so it is no state to save.
    """

    def __init__(self, sites: MaskSites, mode: str = "grad") -> None:
        if mode not in APPLY_MODES:
            raise ValueError(f"mode={mode!r} is invalid: expected one of {', '.join(APPLY_MODES)}")
        self.sites = sites
        self.mode = mode
        self.keep: torch.Tensor | None = None
        self.factor = 1.0
        self.num_truncated = 0
        self._params: list[nn.Parameter] = []
        self._scales: list[torch.Tensor] = []
        self._before: list[torch.Tensor] = []

    def set(self, keep: torch.Tensor | None, factor: float) -> None:
        """Truncate the units ``keep`` marks False by ``factor`` from now on (1 or None: off)."""
        self.keep, self.factor = keep, factor
        self._params, self._scales, self._before = [], [], []
        if keep is None or factor == 1.0:
            self.num_truncated = 0
            return
        self.num_truncated = int((~keep).sum())
        for param, scale in self.sites.scales(keep, factor):
            self._params.append(param)
            self._scales.append(scale)
        if self.mode == "update":  # buffers for the pre-step weights, allocated once per mask
            self._before = [torch.empty_like(p, memory_format=torch.preserve_format) for p in self._params]

    def state_dict(self) -> dict[str, Any]:
        return {"keep": self.keep, "factor": self.factor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.set(state["keep"], float(state["factor"]))

    @torch.no_grad()
    def apply(self) -> None:
        """Before the step: multiply the gradients in place (``grad``) or remember the weights
        (``update``); a no-op while truncation is off."""
        if not self._params:
            return
        if self.mode == "update":
            torch._foreach_copy_(self._before, self._params)
            return
        grads = [p.grad for p in self._params]
        if any(g is None for g in grads):
            raise RuntimeError("a truncated parameter has no gradient: call apply() after backward()")
        torch._foreach_mul_(grads, self._scales)

    @torch.no_grad()
    def after_step(self) -> None:
        """After the step (``update`` only): ``p = before + scale * (p - before)``, weight decay included.

        ``lerp`` returns ``p`` itself, bit for bit, where the scale is 1, so kept units move
        exactly as without truncation."""
        if not self._before:
            return
        torch._foreach_lerp_(self._before, self._params, self._scales)
        torch._foreach_copy_(self._params, self._before)


def add_l1_on_gamma(layers: list[nn.BatchNorm2d], strength: float) -> None:
    """Network-slimming sparsity: ``grad(gamma) += strength * sign(gamma)`` (EB code's ``--sr``)."""
    gammas = [bn.weight for bn in layers]
    signs = torch._foreach_sign([g.detach() for g in gammas])
    torch._foreach_add_([g.grad for g in gammas], signs, alpha=strength)
