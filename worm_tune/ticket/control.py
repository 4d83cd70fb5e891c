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
from worm_tune.ticket.truncation import TruncationSchedule


@dataclass(frozen=True)
class SearchStep:
    """What a trial decided after one search epoch."""

    keep: torch.Tensor  # its newest mask (True = kept)
    obs: Observation
    factor: float  # its truncation factor from the next epoch on (1: none)
    ends: bool  # its search ends with this epoch: converged, or out of budget


class SearchControl:
    """A trial's mask window and truncation schedule, fed the network's unit scores."""

    def __init__(self, cfg: TrialConfig, initial_scores: torch.Tensor) -> None:
        self.cfg = cfg
        self.method = METHODS[cfg.method]
        self.detector = EarlyBirdDetector(cfg.search.window, cfg.search.threshold, cfg.search.rules)
        self.schedule = TruncationSchedule(cfg)
        if self.method.searches and cfg.search.rules == "reference":
            # The reference code's window starts with the initial weights' mask (not a search epoch).
            self.detector.push(self.mask(initial_scores))

    def mask(self, scores: torch.Tensor) -> torch.Tensor:
        return global_mask(scores, self.cfg.search.ratio, self.cfg.search.rules).cpu()

    def observe(self, epoch: int, scores: torch.Tensor) -> SearchStep:
        """Algorithm 1 after training search epoch ``epoch``: draw the mask, measure, decide."""
        keep = self.mask(scores)
        obs = self.detector.push(keep)
        factor = self.schedule.observe(epoch, obs)
        return SearchStep(keep, obs, factor, obs.converged or epoch >= self.cfg.search.max_epochs)

    def state_dict(self) -> dict[str, Any]:
        return {"detector": self.detector.state_dict(), "schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.detector.load_state_dict(state["detector"])
        self.schedule.load_state_dict(state["schedule"])


def next_training(cfg: TrialConfig, step: str, keep: torch.Tensor | None = None, factor: float = 1.0) -> Hashable:
    """What a trial's next epoch trains with, besides its training fields: two trials that agree on
    those fields, and on this after every epoch so far, hold the same network, bit for bit.

    ``step`` is what the next epoch is: ``search`` (truncating the units ``keep`` marks False by
    ``factor``; no truncation at 1, whatever the mask), ``prune`` (the search has ended: pruning by
    the trial's ratio and rules, then retraining by its after-search fields), ``train`` (a dense
    trial, which trains by its after-search fields from the start), ``retrain`` (after a shared
    prune nothing is decided any more) or ``done``.
    """
    after = tuple(cfg.get(key) for key in AFTER_SEARCH_FIELDS)
    if step == "prune":
        return (step, cfg.search.ratio, cfg.search.rules, *after)
    if step == "train":
        return (step, *after)
    if step != "search" or factor == 1.0 or keep is None:
        return (step,)
    return (step, factor, cfg.worm.scope, cfg.worm.apply, keep.numpy().tobytes())
