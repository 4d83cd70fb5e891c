"""How each method's truncation factor ``r`` evolves over the search (docs/method.md).

A schedule reads the window's mean mask distance ``d_avg`` after every search epoch and sets the
factor the next epoch truncates with; :class:`~worm_tune.ticket.truncation.GradientTruncator`
applies it. (No torch here: the plan and the analysis read the method registry.)
Each method names its schedule in :data:`~worm_tune.ticket.methods.METHODS`, so a new way for
``r`` to evolve is one subclass here and one registry line there.
"""

from __future__ import annotations

from typing import Any, ClassVar

from worm_tune.config import TrialConfig


class TruncationSchedule:
    """r = 1 throughout: the schedule of the methods that do not truncate (``earlybird``, ``dense``),
    and the base of every other. Its state is the factor and the epoch truncation triggered at."""

    #: Scales masked gradients by r at some point, so WORM's knobs (``worm.*``) apply to it.
    truncates: ClassVar[bool] = False
    #: Truncates from the first step, so it needs a mask before any epoch: the initial weights'.
    from_start: ClassVar[bool] = False

    def __init__(self, cfg: TrialConfig) -> None:
        self.cfg = cfg
        self.factor = cfg.worm.factor if self.from_start else 1.0
        self.trigger_epoch: int | None = None

    def observe(self, epoch: int, d_avg: float | None) -> float:
        """Update r after search epoch ``epoch``, whose window's mean distance is ``d_avg`` (None until the
        window is full); returns the factor for the next epoch."""
        return self.factor

    def state_dict(self) -> dict[str, Any]:
        return {"factor": self.factor, "trigger_epoch": self.trigger_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.factor = float(state["factor"])
        self.trigger_epoch = None if state["trigger_epoch"] is None else int(state["trigger_epoch"])


class OnTrigger(TruncationSchedule):
    """``worm``: r = 1 until, at the end of a search epoch, ``d_avg < s + worm.delta``; then
    r = ``worm.factor`` for every later step (never reset). ``trigger_epoch`` is that epoch."""

    truncates = True

    def observe(self, epoch: int, d_avg: float | None) -> float:
        level = self.cfg.search.threshold + self.cfg.worm.delta
        if self.trigger_epoch is None and d_avg is not None and d_avg < level:
            self.trigger_epoch = epoch
            self.factor = self.cfg.worm.factor
        return self.factor


class FromStart(TruncationSchedule):
    """``gradclip``: r = ``worm.factor`` from the first step."""

    truncates = True
    from_start = True


class FollowDAvg(TruncationSchedule):
    """``greedy``: r = ``d_avg`` of the latest search epoch once the window is full (1 before)."""

    truncates = True

    def observe(self, epoch: int, d_avg: float | None) -> float:
        if d_avg is not None:
            self.factor = d_avg
        return self.factor
