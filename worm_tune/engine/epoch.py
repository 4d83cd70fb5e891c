"""One epoch's loop: a training pass with its hooks, and the test pass.

A training step is forward, loss, backward, the gradient hooks, the optimizer's step, the weight
hooks. The hooks are what makes a trial more than plain training (:func:`pass_hooks`): during the
search the L1 on BatchNorm gammas and WORM's truncation, after unstructured pruning the masks that
keep pruned weights at zero.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from worm_tune.engine.setup import Batches
from worm_tune.speed import Speed
from worm_tune.ticket.pruning import SparsityEnforcer
from worm_tune.ticket.truncation import GradientTruncator, add_l1_on_gamma


@dataclass(frozen=True)
class Hooks:
    """Run in this order in every training step: ``on_grads`` after backward, ``on_weights`` after the
    optimizer's step."""

    on_grads: tuple[Callable[[], None], ...] = ()
    on_weights: tuple[Callable[[], None], ...] = ()


def pass_hooks(
    searching: bool,
    truncator: GradientTruncator,
    l1: tuple[list[nn.BatchNorm2d], float],
    enforcer: SparsityEnforcer | None,
) -> Hooks:
    """A training pass's hooks: in a search epoch the ``l1`` on the layers' gammas (if its strength is
    not 0) and WORM's truncation (a no-op while r = 1); once unstructured pruning left masks, those."""
    on_grads: list[Callable[[], None]] = []
    on_weights: list[Callable[[], None]] = []
    if searching:
        layers, strength = l1
        if strength:
            on_grads.append(functools.partial(add_l1_on_gamma, layers, strength))
        on_grads.append(truncator.apply)  # grad: scale masked gradients; update: remember the weights
        on_weights.append(truncator.after_step)  # update: scale masked units' change by r
    if enforcer is not None:
        on_grads.append(enforcer.mask_grads)
    return Hooks(tuple(on_grads), tuple(on_weights))


@dataclass(frozen=True)
class Pass:
    """What a training pass measured."""

    loss: float  # mean over the examples seen (not finite once training diverged)
    accuracy: float
    seen: int  # examples


class EpochLoop:
    """Passes over a trial's data with its model, laid out (and compiled) for its speed settings."""

    def __init__(self, model: nn.Module, speed: Speed, device: torch.device, train: Batches, test: Batches) -> None:
        self.model, self.speed, self.device = model, speed, device
        self.train_batches, self.test_batches = train, test
        self.prepare()

    def prepare(self) -> None:
        """Lay out (and compile) the model again: at the start, and when pruning changed its layers or weights."""
        self.forward = self.speed.prepare(self.model)

    def _batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.speed.memory_format)
        return x, y.to(self.device, non_blocking=True)

    def train(
        self, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler, hooks: Hooks
    ) -> Pass:
        """One pass over the training data, then the scheduler's step."""
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen = 0
        for batch in self.train_batches:
            x, y = self._batch(*batch)
            with self.speed.autocast_context(self.device):
                out = self.forward(x)
                loss = F.cross_entropy(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for hook in hooks.on_grads:
                hook()
            optimizer.step()  # masked gradients keep pruned weights at zero under SGD and AdamW
            for hook in hooks.on_weights:
                hook()
            loss_sum += loss.detach() * y.numel()
            correct += (out.detach().argmax(1) == y).sum()
            seen += y.numel()
        scheduler.step()
        return Pass(loss_sum.item() / seen, correct.item() / seen, seen)

    @torch.no_grad()
    def evaluate(self) -> float:
        """Accuracy on the held-out test split."""
        self.model.eval()
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        total = 0
        for batch in self.test_batches:
            x, y = self._batch(*batch)
            with self.speed.autocast_context(self.device):
                correct += (self.forward(x).argmax(1) == y).sum()
            total += y.numel()
        return correct.item() / total
