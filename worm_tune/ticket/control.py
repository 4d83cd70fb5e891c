"""One trial's search decisions, kept apart from the network it watches.

After each search epoch a trial draws its mask (ratio ``p``) from the network's unit scores,
pushes it into its window, updates its truncation factor and decides whether its search ends.
These are *decisions*: functions of the scores and of the trial's decision fields
(:data:`~worm_tune.config.SEARCH_DECISION_FIELDS`). Kept apart from the engine, several trials can
watch one network (:mod:`worm_tune.group`) and tell when their decisions part: :func:`next_training`
says what the next epoch's training depends on besides the training fields.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import torch

from worm_tune.config import AFTER_SEARCH_FIELDS, TrialConfig
from worm_tune.ticket.detector import EarlyBirdDetector, Observation
from worm_tune.ticket.masks import global_mask
from worm_tune.ticket.methods import METHODS
from worm_tune.ticket.phases import Phase

#: What a trial's truncator holds: the mask of the units it truncates (True = kept; None: none)
#: and the factor r it scales them by (1: no truncation, whatever the mask).
Truncation = tuple[torch.Tensor | None, float]


@dataclass(frozen=True)
class SearchStep:
    """What a trial decided after one search epoch."""

    obs: Observation
    truncation: Truncation | None  # its truncation from the next epoch on (None: it never truncates)
    ends: bool  # its search ends with this epoch: converged, or out of budget


class SearchControl:
    """A trial's mask window and truncation schedule, fed the network's unit scores."""

    def __init__(self, cfg: TrialConfig, initial_scores: torch.Tensor) -> None:
        self.cfg = cfg
        self.method = METHODS[cfg.method]
        self.detector = EarlyBirdDetector(cfg.search.window, cfg.search.threshold, cfg.search.rules)
        self.schedule = self.method.schedule(cfg)
        if self.method.searches and cfg.search.rules == "reference":
            # The reference code's window starts with the initial weights' mask (not a search epoch).
            self.detector.push(self.mask(initial_scores))

    def mask(self, scores: torch.Tensor) -> torch.Tensor:
        return global_mask(scores, self.cfg.search.ratio, self.cfg.search.rules).cpu()

    def first_truncation(self, initial_scores: torch.Tensor) -> Truncation:
        """The truncation of the first epoch: with the initial weights' mask for a schedule that
        truncates from the start, none for the others."""
        keep = self.mask(initial_scores) if self.schedule.from_start else None
        return keep, self.schedule.factor

    def observe(self, epoch: int, scores: torch.Tensor) -> SearchStep:
        """Algorithm 1 after training search epoch ``epoch``: draw the mask, measure, decide."""
        keep = self.mask(scores)
        obs = self.detector.push(keep)
        factor = self.schedule.observe(epoch, obs.d_avg)
        truncation = (keep, factor) if self.method.truncates else None  # the newest mask, refreshed every epoch
        return SearchStep(obs, truncation, obs.converged or epoch >= self.cfg.search.max_epochs)

    def conclude(self, step: SearchStep, epoch: int, test_acc: float, diverged: bool, results: dict[str, Any]) -> Phase:
        """Record what search epoch ``epoch`` (which ``step`` observed) decided in ``results``: the trigger
        epoch and, if the search ends, its epochs, convergence and accuracy. Returns the next phase."""
        results["trigger_epoch"] = self.schedule.trigger_epoch
        if diverged:
            return Phase.DONE
        if step.ends:
            results.update(search_epochs=epoch, converged=step.obs.converged, pre_prune_acc=test_acc)
            return Phase.PRUNE
        return Phase.SEARCH

    def state_dict(self) -> dict[str, Any]:
        return {"detector": self.detector.state_dict(), "schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.detector.load_state_dict(state["detector"])
        self.schedule.load_state_dict(state["schedule"])


def next_training(cfg: TrialConfig, phase: Phase, truncation: Truncation = (None, 1.0)) -> Hashable:
    """What a trial's next epoch trains with, besides its training fields: two trials that agree on
    those fields, and on this after every epoch so far, hold the same network, bit for bit.

    ``phase`` is what the next step is: a search epoch (truncating by ``truncation``), the prune
    (pruning by the trial's ratio and rules, then retraining by its after-search fields), a dense
    trial's training epoch (by its after-search fields from the start), a retraining epoch (after a
    shared prune nothing is decided any more) or none.
    """
    after = tuple(cfg.get(key) for key in AFTER_SEARCH_FIELDS)
    if phase == Phase.PRUNE:
        return (phase.value, cfg.search.ratio, cfg.search.rules, *after)
    if phase == Phase.TRAIN:
        return (phase.value, *after)
    keep, factor = truncation
    if phase != Phase.SEARCH or factor == 1.0 or keep is None:
        return (phase.value,)
    return (phase.value, factor, cfg.worm.scope, cfg.worm.apply, keep.numpy().tobytes())
